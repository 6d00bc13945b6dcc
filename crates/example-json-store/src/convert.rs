//! Every crossing between the JSON file and the domain, in one place: the records as they are
//! written, records back into validated domain types (through the domain's own validation, so a
//! hand-edited file cannot smuggle in a config the admin API would refuse), and I/O failures
//! into `domain::Error`.

use chrono::{DateTime, Utc};
use domain::{
    ApiKey, ApiKeyId, ConfigKind, Error, KeyHealth, KeySecret, KeyUsage, ProxyConfig,
    ProxyConfigId, ProxyConfigInput, ProxyConfigSpec,
};
use serde::{Deserialize, Serialize};

/// The whole file: both tables and the next ids.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Tables {
    /// Id of the next config created.
    pub next_config_id: i64,
    /// Id of the next key created.
    pub next_key_id: i64,
    /// Configs, ordered by id.
    pub configs: Vec<ConfigRecord>,
    /// Keys of every config, ordered by id.
    pub keys: Vec<KeyRecord>,
    /// Id of the next client key created (files written before client keys start at 1).
    #[serde(default)]
    pub next_client_key_id: i64,
    /// Client keys, ordered by id.
    #[serde(default)]
    pub client_keys: Vec<ClientKeyRecord>,
}

/// One config as stored: the admin API's flat field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigRecord {
    pub id: i64,
    pub name: String,
    pub slug: String,
    pub config_type: String,
    pub is_active: bool,
    pub api_key_location: Option<String>,
    pub api_key_name: Option<String>,
    /// Absent in files written before prefixes existed: the placement's default then applies.
    #[serde(default)]
    pub api_key_prefix: Option<String>,
    pub method: Option<String>,
    pub target_url: Option<String>,
    pub target_base_url: Option<String>,
    pub api_format: Option<String>,
    pub output_format: Option<String>,
    /// Failover policy (absent in files written before it existed: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_seconds: Option<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One key as stored, with its health and usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub id: i64,
    pub proxy_config_id: i64,
    pub key_value: String,
    pub is_active: bool,
    pub health: String,
    pub cooldown_until: Option<DateTime<Utc>>,
    pub last_status: Option<u16>,
    pub request_count: u64,
    pub failure_count: u64,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ConfigRecord {
    /// A record holding `spec`.
    pub fn new(id: i64, spec: &ProxyConfigSpec, at: DateTime<Utc>) -> Self {
        let mut record = ConfigRecord {
            id,
            name: String::new(),
            slug: String::new(),
            config_type: String::new(),
            is_active: true,
            api_key_location: None,
            api_key_name: None,
            api_key_prefix: None,
            method: None,
            target_url: None,
            target_base_url: None,
            api_format: None,
            output_format: None,
            max_retries: None,
            retry_on: None,
            response_timeout_seconds: None,
            created_at: at,
            updated_at: at,
        };
        record.set_spec(spec);
        record
    }

    /// Overwrites every spec field.
    pub fn set_spec(&mut self, spec: &ProxyConfigSpec) {
        let placement = spec.kind.key_placement();
        self.name = spec.name.as_str().to_owned();
        self.slug = spec.slug.as_str().to_owned();
        self.config_type = spec.kind.config_type().as_str().to_owned();
        self.is_active = spec.is_active;
        self.api_key_location = placement.map(|p| p.location.as_str().to_owned());
        self.api_key_name = placement.map(|p| p.name.to_string());
        self.api_key_prefix = placement.map(|p| p.prefix.to_string());
        let (method, target_url, base, api_format, output_format) = match &spec.kind {
            ConfigKind::Generic(g) => (
                Some(g.method.as_str().to_owned()),
                Some(g.target_url.as_str().to_owned()),
                None,
                None,
                None,
            ),
            ConfigKind::Llm(l) => (
                None,
                None,
                Some(l.target_base_url.as_str().to_owned()),
                Some(l.api_format.as_str().to_owned()),
                Some(l.output_format.as_str().to_owned()),
            ),
        };
        self.method = method;
        self.target_url = target_url;
        self.target_base_url = base;
        self.api_format = api_format;
        self.output_format = output_format;
        self.max_retries = spec.policy.max_retries;
        self.retry_on = spec.policy.retry_on.map(|set| {
            set.classes()
                .map(|class| class.as_str().to_owned())
                .collect()
        });
        self.response_timeout_seconds = spec.policy.response_timeout_seconds;
    }

    /// The domain config, validated exactly like an admin's input.
    ///
    /// # Errors
    /// `Error::Internal` when the stored fields are invalid (a corrupt or hand-edited file).
    pub fn to_domain(&self) -> Result<ProxyConfig, Error> {
        let input = ProxyConfigInput {
            name: Some(self.name.clone()),
            slug: Some(self.slug.clone()),
            config_type: Some(self.config_type.clone()),
            is_active: Some(self.is_active),
            api_key_location: self.api_key_location.clone(),
            api_key_name: self.api_key_name.clone(),
            api_key_prefix: self.api_key_prefix.clone(),
            method: self.method.clone(),
            target_url: self.target_url.clone(),
            target_base_url: self.target_base_url.clone(),
            api_format: self.api_format.clone(),
            output_format: self.output_format.clone(),
            max_retries: self.max_retries,
            retry_on: self.retry_on.clone(),
            response_timeout_seconds: self.response_timeout_seconds,
        };
        let spec = input.validate().map_err(|errors| {
            Error::Internal(format!(
                "stored proxy config {} is invalid: {errors}",
                self.id
            ))
        })?;
        Ok(ProxyConfig::from_spec(
            ProxyConfigId(self.id),
            spec,
            self.created_at,
            self.updated_at,
        ))
    }
}

impl KeyRecord {
    /// A new, healthy, unused key.
    pub fn new(
        id: i64,
        config: ProxyConfigId,
        value: &KeySecret,
        is_active: bool,
        at: DateTime<Utc>,
    ) -> Self {
        KeyRecord {
            id,
            proxy_config_id: config.0,
            key_value: value.expose().to_owned(),
            is_active,
            health: KeyHealth::Ok.as_str().to_owned(),
            cooldown_until: None,
            last_status: None,
            request_count: 0,
            failure_count: 0,
            last_used_at: None,
            created_at: at,
            updated_at: at,
        }
    }

    /// The usage totals.
    pub fn usage(&self) -> KeyUsage {
        KeyUsage {
            request_count: self.request_count,
            failure_count: self.failure_count,
            last_status: self.last_status,
            last_used_at: self.last_used_at,
        }
    }

    /// Stores usage totals.
    pub fn set_usage(&mut self, usage: KeyUsage) {
        self.request_count = usage.request_count;
        self.failure_count = usage.failure_count;
        self.last_status = usage.last_status;
        self.last_used_at = usage.last_used_at;
    }

    /// Stores a health state.
    pub fn set_health(&mut self, health: KeyHealth) {
        self.health = health.as_str().to_owned();
        self.cooldown_until = health.cooldown_until();
    }

    /// The domain key.
    ///
    /// # Errors
    /// `Error::Internal` when the stored value or health is invalid.
    pub fn to_domain(&self) -> Result<ApiKey, Error> {
        let corrupt = |field: &str, why: &str| {
            Error::Internal(format!(
                "stored api key {} has an invalid {field}: {why}",
                self.id
            ))
        };
        let key_value = KeySecret::parse(&self.key_value).map_err(|e| corrupt("key_value", e))?;
        let health = match (self.health.as_str(), self.cooldown_until) {
            ("ok", _) => KeyHealth::Ok,
            ("failed", _) => KeyHealth::Failed,
            ("cooling", Some(until)) => KeyHealth::Cooling { until },
            ("cooling", None) => return Err(corrupt("cooldown_until", "is missing")),
            _ => return Err(corrupt("health", "is not ok, cooling or failed")),
        };
        Ok(ApiKey {
            id: ApiKeyId(self.id),
            proxy_config_id: ProxyConfigId(self.proxy_config_id),
            key_value,
            is_active: self.is_active,
            health,
            usage: self.usage(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// An I/O failure of the store file, as the domain's "database unavailable"; the message names
/// the kind of failure, never a path or file contents.
pub(crate) fn io_error(action: &str, error: &std::io::Error) -> Error {
    Error::database(format!(
        "the JSON store file cannot be {action}: {}",
        error.kind()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn llm_spec() -> ProxyConfigSpec {
        ProxyConfigInput {
            name: Some(" Claude ".into()),
            slug: Some("Claude".into()),
            config_type: Some("llm".into()),
            target_base_url: Some("https://api.anthropic.com".into()),
            api_format: Some("ANTHROPIC_NATIVE".into()),
            output_format: Some("openai".into()),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn a_config_survives_the_round_trip_through_its_record() {
        let spec = llm_spec();
        let record = ConfigRecord::new(7, &spec, Utc::now());
        assert_eq!(record.slug, "claude");
        assert_eq!(record.api_format.as_deref(), Some("anthropic_native"));
        let config = record.to_domain().unwrap();
        assert_eq!(config.spec(), spec);
        assert_eq!(config.id, ProxyConfigId(7));
    }

    #[test]
    fn a_hand_edited_record_is_reported_as_corrupt() {
        let mut record = ConfigRecord::new(3, &llm_spec(), Utc::now());
        record.slug = "not a slug".into();
        assert!(matches!(record.to_domain(), Err(Error::Internal(_))));
        let mut key = KeyRecord::new(
            4,
            ProxyConfigId(3),
            &KeySecret::parse("sk-1").unwrap(),
            true,
            Utc::now(),
        );
        key.health = "cooling".into();
        assert!(matches!(key.to_domain(), Err(Error::Internal(_))));
    }

    #[test]
    fn health_is_stored_with_its_cooldown() {
        let mut key = KeyRecord::new(
            1,
            ProxyConfigId(1),
            &KeySecret::parse("sk-2").unwrap(),
            true,
            Utc::now(),
        );
        let until = Utc::now();
        key.set_health(KeyHealth::Cooling { until });
        assert_eq!(
            key.to_domain().unwrap().health,
            KeyHealth::Cooling { until }
        );
        key.set_health(KeyHealth::Failed);
        assert_eq!(key.cooldown_until, None);
    }
}

/// One client key as stored: the admin API's flat field names, the secret as its hex digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientKeyRecord {
    pub id: i64,
    pub name: String,
    pub key_prefix: String,
    pub secret_hash: String,
    pub is_active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub allowed_config_ids: Vec<i64>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub max_concurrency: Option<i64>,
    pub token_budget: Option<i64>,
    pub budget_period: Option<String>,
    pub request_count: u64,
    pub token_count: u64,
    pub budget_used: u64,
    pub budget_period_start: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ClientKeyRecord {
    /// A new record with zero usage.
    pub fn new(
        id: i64,
        spec: &domain::ClientKeySpec,
        secret: &domain::IssuedSecret,
        at: DateTime<Utc>,
    ) -> Self {
        let mut record = ClientKeyRecord {
            id,
            name: String::new(),
            key_prefix: String::new(),
            secret_hash: String::new(),
            is_active: true,
            expires_at: None,
            allowed_config_ids: Vec::new(),
            rpm: None,
            tpm: None,
            max_concurrency: None,
            token_budget: None,
            budget_period: None,
            request_count: 0,
            token_count: 0,
            budget_used: 0,
            budget_period_start: None,
            last_used_at: None,
            created_at: at,
            updated_at: at,
        };
        record.set_spec(spec);
        record.set_secret(secret);
        record
    }

    /// Replaces what the admin set.
    pub fn set_spec(&mut self, spec: &domain::ClientKeySpec) {
        let limits = &spec.limits;
        self.name = spec.name.as_str().to_owned();
        self.is_active = spec.is_active;
        self.expires_at = spec.expires_at;
        self.allowed_config_ids = spec.allowed_config_ids.iter().map(|id| id.0).collect();
        self.rpm = limits.rpm.map(i64::from);
        self.tpm = limits.tpm.and_then(|v| i64::try_from(v).ok());
        self.max_concurrency = limits.max_concurrency.map(i64::from);
        self.token_budget = limits.budget.and_then(|b| i64::try_from(b.tokens).ok());
        self.budget_period = limits.budget.map(|b| b.period.as_str().to_owned());
    }

    /// Replaces the secret.
    pub fn set_secret(&mut self, secret: &domain::IssuedSecret) {
        self.secret_hash = secret.digest.to_hex();
        self.key_prefix = secret.prefix.clone();
    }

    /// The usage totals.
    pub fn usage(&self) -> domain::ClientKeyUsage {
        domain::ClientKeyUsage {
            request_count: self.request_count,
            token_count: self.token_count,
            budget_used: self.budget_used,
            budget_period_start: self.budget_period_start,
            last_used_at: self.last_used_at,
        }
    }

    /// Writes usage totals back.
    pub fn set_usage(&mut self, usage: domain::ClientKeyUsage) {
        self.request_count = usage.request_count;
        self.token_count = usage.token_count;
        self.budget_used = usage.budget_used;
        self.budget_period_start = usage.budget_period_start;
        self.last_used_at = usage.last_used_at;
    }

    /// The record as a client key, validated by the admin API's own rules.
    pub fn to_domain(&self) -> Result<domain::ClientKey, Error> {
        let corrupt =
            |what: &str| Error::Internal(format!("client key {} has an invalid {what}", self.id));
        let spec = domain::command::ClientKeyInput {
            name: Some(self.name.clone()),
            is_active: Some(self.is_active),
            expires_at: self.expires_at.map(|at| at.to_rfc3339()),
            allowed_config_ids: Some(self.allowed_config_ids.clone()),
            rpm: self.rpm,
            tpm: self.tpm,
            max_concurrency: self.max_concurrency,
            token_budget: self.token_budget,
            budget_period: self.budget_period.clone(),
        }
        .validate()
        .map_err(|_| corrupt("field"))?;
        Ok(domain::ClientKey {
            id: domain::ClientKeyId(self.id),
            spec,
            digest: domain::SecretDigest::from_hex(&self.secret_hash)
                .ok_or_else(|| corrupt("secret_hash"))?,
            key_prefix: self.key_prefix.clone(),
            usage: self.usage(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
