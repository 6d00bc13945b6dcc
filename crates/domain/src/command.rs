//! Admin commands as they arrive (every field optional, any case), and their validation into
//! domain types, reporting every bad field at once.

use std::{collections::HashSet, fmt};

use serde::{Deserialize, Serialize};

use crate::{
    failover::{
        ConfigPolicy, MAX_CONFIG_RETRIES, MAX_RESPONSE_TIMEOUT_SECONDS, RetryClass, RetryOn,
    },
    model::{
        ApiFormat, ConfigKind, ConfigName, ConfigType, GenericTarget, HttpMethod, HttpUrl,
        KeyLocation, KeyPlacement, KeySecret, LlmTarget, OutputFormat, ProxyConfigSpec, Slug,
    },
};

/// One invalid field and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The JSON field name.
    pub field: String,
    /// What is wrong, as a lowercase phrase (`must not be empty`).
    pub message: String,
}

/// Every invalid field of one command.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// Records one bad field.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// The bad fields, in the order they were found.
    pub fn fields(&self) -> &[FieldError] {
        &self.0
    }

    /// Whether nothing was wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every path that leaves a field unset records why, so this fallback only guards against a
    /// future bug turning into an empty error list.
    fn or_incomplete(mut self, field: &str) -> Self {
        if self.is_empty() {
            self.add(field, "is incomplete");
        }
        self
    }

    /// Parses a required field, recording why it is missing or bad.
    fn required<T, E: fmt::Display>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match raw.map(str::trim).filter(|s| !s.is_empty()) {
            None => {
                self.add(field, "is required");
                None
            }
            Some(text) => self.parsed(field, parse(text)),
        }
    }

    /// Parses an optional field: blank or missing gives `None` without an error.
    fn optional<T, E: fmt::Display>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<Option<T>> {
        match raw.map(str::trim).filter(|s| !s.is_empty()) {
            None => Some(None),
            Some(text) => self.parsed(field, parse(text)).map(Some),
        }
    }

    fn parsed<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.add(field, e.to_string())).ok()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid fields: ")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A create or replace of a proxy config, as the admin API receives it (SPEC §1 field names).
///
/// Fields that belong to the other config type are ignored when blank, so clients that send
/// every field with null or empty values keep working.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ProxyConfigInput {
    /// Unique display name.
    pub name: Option<String>,
    /// Unique URL-safe name.
    pub slug: Option<String>,
    /// `GENERIC` or `LLM`, any case.
    pub config_type: Option<String>,
    /// Defaults to `true`.
    pub is_active: Option<bool>,
    /// `header` or `query`.
    pub api_key_location: Option<String>,
    /// Header or query parameter name.
    pub api_key_name: Option<String>,
    /// Sent before the key, exactly as given (`Bearer `); when absent, `Bearer ` for an LLM
    /// config whose key header is `Authorization`, nothing otherwise.
    pub api_key_prefix: Option<String>,
    /// GENERIC: the accepted method.
    pub method: Option<String>,
    /// GENERIC: the target URL.
    pub target_url: Option<String>,
    /// LLM: the upstream base URL.
    pub target_base_url: Option<String>,
    /// LLM: the upstream format, `openai_compatible` by default.
    pub api_format: Option<String>,
    /// LLM: the client format, `none` by default.
    pub output_format: Option<String>,
    /// Retries with other keys after the first attempt; absent = `PROXY_MAX_RETRIES`.
    #[serde(deserialize_with = "whole_number")]
    pub max_retries: Option<u32>,
    /// Failure classes re-sent to another key; absent = the default for the config's type and
    /// method (SPEC §8).
    pub retry_on: Option<Vec<String>>,
    /// Seconds to wait for the response head, `0` = no limit; absent = `PROXY_TIMEOUT` (GENERIC)
    /// or `LLM_RESPONSE_TIMEOUT` (LLM).
    #[serde(deserialize_with = "whole_number")]
    pub response_timeout_seconds: Option<u32>,
}

/// A JSON integer, also when written with a zero fraction (`600.0`): JSON Schema's `integer`
/// (what the OpenAPI document promises) counts it as one. Anything else, `600.5` or a value
/// outside `T`'s range included, is refused as not a whole number.
fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    struct WholeNumber<T>(std::marker::PhantomData<T>);

    impl<T: TryFrom<i64> + TryFrom<u64>> serde::de::Visitor<'_> for WholeNumber<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a whole number in range")
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
            T::try_from(n)
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
        }

        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
            T::try_from(n)
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
        }

        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Self::Value, E> {
            // i64's range as floats: -2^63 is exact, 2^63 is the first float past it.
            #[allow(clippy::cast_precision_loss)]
            let in_range = (i64::MIN as f64..i64::MAX as f64).contains(&n);
            if n.fract() == 0.0 && in_range {
                // Whole and within i64's range: the conversion is exact.
                #[allow(clippy::cast_possible_truncation)]
                let whole = n as i64;
                return self.visit_i64(whole);
            }
            Err(E::invalid_value(serde::de::Unexpected::Float(n), &self))
        }
    }

    deserializer.deserialize_any(WholeNumber(std::marker::PhantomData))
}

impl ProxyConfigInput {
    /// Validates every field and builds the spec.
    ///
    /// # Errors
    /// Every invalid field, at once.
    pub fn validate(&self) -> Result<ProxyConfigSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = errors.required("name", self.name.as_deref(), str::parse::<ConfigName>);
        let slug = errors.required("slug", self.slug.as_deref(), str::parse::<Slug>);
        let config_type = errors.required(
            "config_type",
            self.config_type.as_deref(),
            str::parse::<ConfigType>,
        );
        let placement = self.key_placement(&mut errors, config_type);
        let kind = match config_type {
            Some(ConfigType::Generic) => self.generic_target(&mut errors, placement),
            Some(ConfigType::Llm) => self.llm_target(&mut errors, placement),
            None => None,
        };
        let policy = self.policy(&mut errors);
        match (name, slug, kind) {
            (Some(name), Some(slug), Some(kind)) if errors.is_empty() => Ok(ProxyConfigSpec {
                name,
                slug,
                is_active: self.is_active.unwrap_or(true),
                kind,
                policy,
            }),
            _ => Err(errors.or_incomplete("config")),
        }
    }

    /// The failover overrides, each bounded so one config cannot hold a request for ever.
    fn policy(&self, errors: &mut ValidationErrors) -> ConfigPolicy {
        if self.max_retries.is_some_and(|n| n > MAX_CONFIG_RETRIES) {
            errors.add(
                "max_retries",
                format!("must be at most {MAX_CONFIG_RETRIES}"),
            );
        }
        if self
            .response_timeout_seconds
            .is_some_and(|n| n > MAX_RESPONSE_TIMEOUT_SECONDS)
        {
            errors.add(
                "response_timeout_seconds",
                format!("must be at most {MAX_RESPONSE_TIMEOUT_SECONDS} (0 means no limit)"),
            );
        }
        let retry_on = self.retry_on.as_ref().map(|names| {
            let classes = names.iter().filter_map(|name| {
                errors.parsed(
                    "retry_on",
                    name.trim().to_ascii_lowercase().parse::<RetryClass>(),
                )
            });
            RetryOn::of(classes.collect::<Vec<_>>())
        });
        ConfigPolicy {
            max_retries: self.max_retries,
            retry_on,
            response_timeout_seconds: self.response_timeout_seconds,
        }
    }

    /// Location and name must come together; GENERIC configs must have both. An LLM config
    /// with a location but a blank name (what the original backend's console sent) uses its
    /// format's own place, as if neither were set.
    fn key_placement(
        &self,
        errors: &mut ValidationErrors,
        config_type: Option<ConfigType>,
    ) -> Option<Option<KeyPlacement>> {
        let required = config_type == Some(ConfigType::Generic);
        let location = errors.optional(
            "api_key_location",
            self.api_key_location.as_deref(),
            str::parse::<KeyLocation>,
        )?;
        let name = self
            .api_key_name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if let Some(prefix) = self.api_key_prefix.as_deref() {
            // Checked even where it is not used (an LLM config on its format's own placement),
            // so a bad prefix is never accepted silently.
            if let Err(reason) = KeyPlacement::check_prefix(prefix) {
                errors.add("api_key_prefix", reason);
                return None;
            }
            if location.is_none() {
                errors.add("api_key_location", "is required when api_key_prefix is set");
                return None;
            }
        }
        match (location, name) {
            (Some(location), Some(name)) => {
                let placement = errors.parsed("api_key_name", KeyPlacement::new(location, name))?;
                let prefix = match self.api_key_prefix.as_deref() {
                    Some(prefix) => prefix,
                    None => KeyPlacement::default_prefix(
                        config_type.unwrap_or(ConfigType::Generic),
                        location,
                        name,
                    ),
                };
                errors
                    .parsed("api_key_prefix", placement.with_prefix(prefix))
                    .map(Some)
            }
            (None, None) | (Some(_), None) if !required => Some(None),
            (None, None) => {
                errors.add("api_key_location", "is required for GENERIC configs");
                errors.add("api_key_name", "is required for GENERIC configs");
                None
            }
            (Some(_), None) => {
                errors.add("api_key_name", "is required when api_key_location is set");
                None
            }
            (None, Some(_)) => {
                errors.add("api_key_location", "is required when api_key_name is set");
                None
            }
        }
    }

    fn generic_target(
        &self,
        errors: &mut ValidationErrors,
        placement: Option<Option<KeyPlacement>>,
    ) -> Option<ConfigKind> {
        let method = errors.required("method", self.method.as_deref(), str::parse::<HttpMethod>);
        let target_url = errors.required(
            "target_url",
            self.target_url.as_deref(),
            str::parse::<HttpUrl>,
        );
        Some(ConfigKind::Generic(GenericTarget {
            method: method?,
            target_url: target_url?,
            key_placement: placement??,
        }))
    }

    fn llm_target(
        &self,
        errors: &mut ValidationErrors,
        placement: Option<Option<KeyPlacement>>,
    ) -> Option<ConfigKind> {
        let target_base_url = errors.required(
            "target_base_url",
            self.target_base_url.as_deref(),
            str::parse::<HttpUrl>,
        );
        let api_format = errors.optional(
            "api_format",
            self.api_format.as_deref(),
            str::parse::<ApiFormat>,
        );
        let output_format = errors.optional(
            "output_format",
            self.output_format.as_deref(),
            str::parse::<OutputFormat>,
        );
        Some(ConfigKind::Llm(LlmTarget {
            target_base_url: target_base_url?,
            api_format: api_format?.unwrap_or(ApiFormat::OpenaiCompatible),
            output_format: output_format?.unwrap_or(OutputFormat::None),
            key_placement: placement?,
        }))
    }
}

/// `POST /admin/proxy-configs/{id}/keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NewKeyInput {
    /// The key.
    pub key_value: Option<String>,
    /// Defaults to `true`.
    pub is_active: Option<bool>,
}

impl NewKeyInput {
    /// Validates the key value.
    ///
    /// # Errors
    /// The bad `key_value` field.
    pub fn validate(&self) -> Result<(KeySecret, bool), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        match errors.required("key_value", self.key_value.as_deref(), KeySecret::parse) {
            Some(secret) => Ok((secret, self.is_active.unwrap_or(true))),
            None => Err(errors.or_incomplete("key_value")),
        }
    }
}

/// `POST /admin/proxy-configs/{id}/keys/batch`: `keys` is required, so a body without it (`{}`,
/// `[]`) is refused instead of importing nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BatchKeysInput {
    /// The keys; blank entries are ignored.
    pub keys: Vec<String>,
    /// Defaults to `true`.
    #[serde(default)]
    pub is_active: Option<bool>,
}

/// A batch split into what to insert and what was rejected before reaching the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBatch {
    /// Valid keys, each once, in input order.
    pub keys: Vec<KeySecret>,
    /// Whether the inserted keys are enabled.
    pub is_active: bool,
    /// Repeats of a key earlier in the same batch.
    pub duplicates_in_batch: u64,
    /// Invalid entries, masked.
    pub failed_keys: Vec<String>,
}

impl BatchKeysInput {
    /// Trims entries, drops blanks, rejects invalid values and folds repeats.
    pub fn prepare(&self) -> PreparedBatch {
        let mut seen = HashSet::with_capacity(self.keys.len());
        let mut prepared = PreparedBatch {
            keys: Vec::with_capacity(self.keys.len()),
            is_active: self.is_active.unwrap_or(true),
            duplicates_in_batch: 0,
            failed_keys: Vec::new(),
        };
        for raw in self.keys.iter().map(|k| k.trim()).filter(|k| !k.is_empty()) {
            match KeySecret::parse(raw) {
                Ok(secret) if seen.insert(secret.clone()) => prepared.keys.push(secret),
                Ok(_) => prepared.duplicates_in_batch += 1,
                Err(_) => prepared.failed_keys.push(crate::security::mask_secret(raw)),
            }
        }
        prepared
    }
}

/// The answer to a batch import (SPEC §2 field names).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BatchImportReport {
    /// Keys inserted.
    pub success_count: u64,
    /// Invalid entries.
    pub failed_count: u64,
    /// Keys already in the config or repeated in the batch.
    pub skipped_count: u64,
    /// The invalid entries, masked.
    pub failed_keys: Vec<String>,
}

/// Largest accepted `rpm` and `max_concurrency`.
pub const MAX_CLIENT_RATE: i64 = 1_000_000;

/// A create or replace of a client key, as the admin API receives it (SPEC §7 field names;
/// `PUT` takes the create body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClientKeyInput {
    /// Unique display name.
    pub name: Option<String>,
    /// The admin's switch (default on).
    pub is_active: Option<bool>,
    /// RFC 3339 time the key stops working; `null` = never.
    pub expires_at: Option<String>,
    /// Configs the key may call; empty or missing = every config.
    pub allowed_config_ids: Option<Vec<i64>>,
    /// Requests per minute.
    #[serde(default, deserialize_with = "whole_number")]
    pub rpm: Option<i64>,
    /// LLM tokens per minute.
    #[serde(default, deserialize_with = "whole_number")]
    pub tpm: Option<i64>,
    /// Requests in flight at once.
    #[serde(default, deserialize_with = "whole_number")]
    pub max_concurrency: Option<i64>,
    /// Tokens per `budget_period`.
    #[serde(default, deserialize_with = "whole_number")]
    pub token_budget: Option<i64>,
    /// `day`, `month` or `total`.
    pub budget_period: Option<String>,
}

impl ClientKeyInput {
    /// Validates every field, reporting all bad ones at once.
    ///
    /// # Errors
    /// Every invalid field with its reason.
    pub fn validate(&self) -> Result<crate::model::ClientKeySpec, ValidationErrors> {
        use crate::model::{BudgetPeriod, ClientKeySpec, ClientLimits, ProxyConfigId, TokenBudget};
        let mut errors = ValidationErrors::default();
        let name = errors.required("name", self.name.as_deref(), str::parse::<ConfigName>);
        let expires_at = errors.optional("expires_at", self.expires_at.as_deref(), |text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|at| at.with_timezone(&chrono::Utc))
                .map_err(|_| "must be an RFC 3339 time such as 2027-01-31T00:00:00Z")
        });
        let mut positive = |field: &str, value: Option<i64>, max: i64| -> Option<Option<i64>> {
            match value {
                None => Some(None),
                Some(v) if (1..=max).contains(&v) => Some(Some(v)),
                Some(_) => {
                    errors.add(
                        field,
                        format!("must be between 1 and {max}, or null for no limit"),
                    );
                    None
                }
            }
        };
        let rpm = positive("rpm", self.rpm, MAX_CLIENT_RATE);
        let tpm = positive("tpm", self.tpm, i64::MAX);
        let max_concurrency = positive("max_concurrency", self.max_concurrency, MAX_CLIENT_RATE);
        let token_budget = positive("token_budget", self.token_budget, i64::MAX);
        let period = errors.optional(
            "budget_period",
            self.budget_period.as_deref(),
            str::parse::<BudgetPeriod>,
        );
        let budget = match (token_budget, period) {
            (Some(Some(tokens)), Some(Some(period))) => Some(Some(TokenBudget {
                tokens: tokens.unsigned_abs(),
                period,
            })),
            (Some(Some(_)), Some(None)) => {
                errors.add(
                    "budget_period",
                    "is required with token_budget (day, month or total)",
                );
                None
            }
            (Some(None), Some(Some(_))) => {
                errors.add("token_budget", "is required with budget_period");
                None
            }
            (Some(None), Some(None)) => Some(None),
            _ => None,
        };
        // An empty string is not "no value": null is (the OpenAPI document says so).
        let blank = |raw: &Option<String>| raw.as_deref().is_some_and(|t| t.trim().is_empty());
        if blank(&self.expires_at) {
            errors.add(
                "expires_at",
                "must be an RFC 3339 time such as 2027-01-31T00:00:00Z, or null for never",
            );
        }
        if blank(&self.budget_period) {
            errors.add("budget_period", "must be day, month or total, or null");
        }
        let mut ids = Vec::new();
        for id in self.allowed_config_ids.iter().flatten() {
            if *id < 1 {
                errors.add(
                    "allowed_config_ids",
                    "must hold config ids (positive integers)",
                );
                break;
            }
            ids.push(ProxyConfigId(*id));
        }
        ids.sort_unstable();
        ids.dedup();
        match (name, expires_at, rpm, tpm, max_concurrency, budget) {
            (
                Some(name),
                Some(expires_at),
                Some(rpm),
                Some(tpm),
                Some(max_concurrency),
                Some(budget),
            ) if errors.is_empty() => Ok(ClientKeySpec {
                name,
                is_active: self.is_active.unwrap_or(true),
                expires_at,
                allowed_config_ids: ids,
                limits: ClientLimits {
                    rpm: rpm.and_then(|v| u32::try_from(v).ok()),
                    tpm: tpm.map(i64::unsigned_abs),
                    max_concurrency: max_concurrency.and_then(|v| u32::try_from(v).ok()),
                    budget,
                },
            }),
            _ => Err(errors.or_incomplete("name")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fields(errors: &ValidationErrors) -> Vec<&str> {
        errors.fields().iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn validation_lists_every_bad_field_at_once() {
        let input = ProxyConfigInput {
            name: Some("  ".into()),
            slug: Some("Bad Slug!".into()),
            config_type: Some("generic".into()),
            method: Some("FETCH".into()),
            target_url: Some("not a url".into()),
            api_key_location: Some("cookie".into()),
            api_key_name: Some("X-Key".into()),
            ..Default::default()
        };
        let errors = input.validate().unwrap_err();
        assert_eq!(
            fields(&errors),
            ["name", "slug", "api_key_location", "method", "target_url"]
        );
    }

    #[test]
    fn failover_policy_fields_are_bounded_and_retry_classes_named() {
        let llm = |policy: ProxyConfigInput| ProxyConfigInput {
            name: Some("OpenAI".into()),
            slug: Some("openai".into()),
            config_type: Some("LLM".into()),
            target_base_url: Some("https://api.openai.com/v1".into()),
            ..policy
        };
        let spec = llm(ProxyConfigInput {
            max_retries: Some(0),
            retry_on: Some(vec![" Timeout ".into(), "server_error".into()]),
            response_timeout_seconds: Some(0),
            ..Default::default()
        })
        .validate()
        .unwrap();
        assert_eq!(spec.policy.max_retries, Some(0));
        assert_eq!(
            spec.policy.retry_on,
            Some(RetryOn::of([RetryClass::ServerError, RetryClass::Timeout]))
        );
        assert_eq!(spec.policy.response_timeout_seconds, Some(0));
        let unset = llm(ProxyConfigInput::default()).validate().unwrap();
        assert_eq!(unset.policy, ConfigPolicy::default(), "absent = defaults");
        let errors = llm(ProxyConfigInput {
            max_retries: Some(11),
            retry_on: Some(vec!["always".into()]),
            response_timeout_seconds: Some(86_401),
            ..Default::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(
            fields(&errors),
            ["max_retries", "response_timeout_seconds", "retry_on"]
        );
    }

    #[test]
    fn generic_config_requires_method_target_and_key_placement() {
        let input = ProxyConfigInput {
            name: Some("Weather".into()),
            slug: Some("weather".into()),
            config_type: Some("GENERIC".into()),
            ..Default::default()
        };
        let errors = input.validate().unwrap_err();
        assert_eq!(
            fields(&errors),
            ["api_key_location", "api_key_name", "method", "target_url"]
        );
    }

    #[test]
    fn missing_config_type_is_reported_with_the_other_fields() {
        let errors = ProxyConfigInput::default().validate().unwrap_err();
        assert_eq!(fields(&errors), ["name", "slug", "config_type"]);
        let bad = ProxyConfigInput {
            config_type: Some("soap".into()),
            ..Default::default()
        };
        let errors = bad.validate().unwrap_err();
        assert!(errors.fields()[2].message.contains("GENERIC, LLM"));
    }

    #[test]
    fn llm_config_defaults_formats_and_allows_no_key_override() {
        let input = ProxyConfigInput {
            name: Some("OpenAI".into()),
            slug: Some("OpenAI".into()),
            config_type: Some("llm".into()),
            target_base_url: Some("https://api.openai.com/v1".into()),
            method: Some(String::new()),
            ..Default::default()
        };
        let spec = input.validate().unwrap();
        assert_eq!(spec.slug.as_str(), "openai");
        assert!(spec.is_active);
        let ConfigKind::Llm(target) = spec.kind else {
            panic!("expected LLM")
        };
        assert_eq!(target.api_format, ApiFormat::OpenaiCompatible);
        assert_eq!(target.output_format, OutputFormat::None);
        assert_eq!(target.key_placement, None);
    }

    fn llm_input() -> ProxyConfigInput {
        ProxyConfigInput {
            name: Some("Gemini".into()),
            slug: Some("gemini".into()),
            config_type: Some("LLM".into()),
            target_base_url: Some("https://generativelanguage.googleapis.com".into()),
            ..Default::default()
        }
    }

    fn placement_of(spec: ProxyConfigSpec) -> Option<KeyPlacement> {
        spec.kind.key_placement().cloned()
    }

    #[test]
    fn key_location_and_name_must_come_together() {
        let input = ProxyConfigInput {
            api_key_name: Some("key".into()),
            ..llm_input()
        };
        assert_eq!(fields(&input.validate().unwrap_err()), ["api_key_location"]);
        let generic = ProxyConfigInput {
            config_type: Some("generic".into()),
            method: Some("GET".into()),
            target_url: Some("https://api.example.com".into()),
            api_key_location: Some("header".into()),
            api_key_name: Some(" ".into()),
            ..llm_input()
        };
        assert_eq!(fields(&generic.validate().unwrap_err()), ["api_key_name"]);
    }

    #[test]
    fn a_key_prefix_needs_a_location_and_is_checked_even_where_unused() {
        let without_location = ProxyConfigInput {
            api_key_prefix: Some("Bearer ".into()),
            ..llm_input()
        };
        assert_eq!(
            fields(&without_location.validate().unwrap_err()),
            ["api_key_location"]
        );
        let own_place = ProxyConfigInput {
            api_key_location: Some("header".into()),
            api_key_name: Some(String::new()),
            api_key_prefix: Some("x".repeat(65)),
            ..llm_input()
        };
        assert_eq!(
            fields(&own_place.validate().unwrap_err()),
            ["api_key_prefix"]
        );
        let fine = ProxyConfigInput {
            api_key_prefix: Some("token ".into()),
            ..own_place
        };
        assert_eq!(placement_of(fine.validate().unwrap()), None);
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        let parse = |json: &str| serde_json::from_str::<ProxyConfigInput>(json);
        let input = parse(r#"{"max_retries": 2.0, "response_timeout_seconds": 600}"#).unwrap();
        assert_eq!(
            (input.max_retries, input.response_timeout_seconds),
            (Some(2), Some(600))
        );
        assert_eq!(parse(r#"{"max_retries": null}"#).unwrap().max_retries, None);
        for bad in ["2.5", "-1", "4294967296", "\"2\"", "1e20"] {
            assert!(
                parse(&format!(r#"{{"max_retries": {bad}}}"#)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_key_limits_may_be_whole_floats_and_blank_strings_are_not_null() {
        let parse = |json: &str| serde_json::from_str::<ClientKeyInput>(json);
        let input = parse(r#"{"name": "team", "rpm": 60.0, "max_concurrency": 4}"#).unwrap();
        assert_eq!((input.rpm, input.max_concurrency), (Some(60), Some(4)));
        assert!(parse(r#"{"name": "team", "rpm": 60.5}"#).is_err());
        for (field, body) in [
            ("expires_at", r#"{"name": "team", "expires_at": ""}"#),
            ("budget_period", r#"{"name": "team", "budget_period": " "}"#),
        ] {
            let errors = parse(body).unwrap().validate().unwrap_err();
            assert_eq!(fields(&errors), [field]);
        }
    }

    #[test]
    fn llm_header_location_with_a_blank_name_means_the_formats_own_place() {
        // What the original backend's console sent for an LLM config.
        let input = ProxyConfigInput {
            api_key_location: Some("header".into()),
            api_key_name: Some(String::new()),
            ..llm_input()
        };
        assert_eq!(placement_of(input.validate().unwrap()), None);
    }

    #[test]
    fn llm_authorization_header_defaults_to_a_bearer_prefix() {
        let input = ProxyConfigInput {
            api_key_location: Some("header".into()),
            api_key_name: Some("Authorization".into()),
            ..llm_input()
        };
        let placement = placement_of(input.clone().validate().unwrap()).unwrap();
        assert_eq!(&*placement.prefix, "Bearer ");
        let raw = ProxyConfigInput {
            api_key_prefix: Some(String::new()),
            ..input
        };
        assert_eq!(&*placement_of(raw.validate().unwrap()).unwrap().prefix, "");
    }

    #[test]
    fn generic_configs_take_an_explicit_prefix_and_default_to_none() {
        let input = ProxyConfigInput {
            config_type: Some("GENERIC".into()),
            method: Some("GET".into()),
            target_url: Some("https://api.github.com".into()),
            api_key_location: Some("header".into()),
            api_key_name: Some("Authorization".into()),
            ..llm_input()
        };
        let placement = placement_of(input.clone().validate().unwrap()).unwrap();
        assert_eq!(&*placement.prefix, "");
        let token = ProxyConfigInput {
            api_key_prefix: Some("token ".into()),
            ..input.clone()
        };
        assert_eq!(
            &*placement_of(token.validate().unwrap()).unwrap().prefix,
            "token "
        );
        let bad = ProxyConfigInput {
            api_key_prefix: Some("Bearer\n".into()),
            ..input
        };
        assert_eq!(fields(&bad.validate().unwrap_err()), ["api_key_prefix"]);
    }

    #[test]
    fn new_key_requires_a_value() {
        let err = NewKeyInput::default().validate().unwrap_err();
        assert_eq!(fields(&err), ["key_value"]);
        let (secret, active) = NewKeyInput {
            key_value: Some(" sk-1 ".into()),
            is_active: Some(false),
        }
        .validate()
        .unwrap();
        assert_eq!((secret.expose(), active), ("sk-1", false));
    }

    #[test]
    fn batch_ignores_blanks_folds_repeats_and_masks_failures() {
        let input = BatchKeysInput {
            keys: vec![
                "sk-one".into(),
                " ".into(),
                "sk-two".into(),
                "sk-one".into(),
                "has space-in-the-middle".into(),
            ],
            is_active: None,
        };
        let batch = input.prepare();
        let values: Vec<_> = batch.keys.iter().map(KeySecret::expose).collect();
        assert_eq!(values, ["sk-one", "sk-two"]);
        assert_eq!(batch.duplicates_in_batch, 1);
        assert_eq!(batch.failed_keys.len(), 1);
        assert!(!batch.failed_keys[0].contains("in-the-middle"));
    }
}

#[cfg(test)]
mod client_key_input_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::BudgetPeriod;

    #[test]
    fn a_full_client_key_validates() {
        let input: ClientKeyInput = serde_json::from_str(
            r#"{"name":" team-a ","expires_at":"2027-01-31T00:00:00+01:00","allowed_config_ids":[3,1,3],
                "rpm":60,"tpm":1000,"max_concurrency":2,"token_budget":5000,"budget_period":"Month"}"#,
        )
        .unwrap();
        let spec = input.validate().unwrap();
        assert_eq!(spec.name.as_str(), "team-a");
        assert!(spec.is_active);
        assert_eq!(
            spec.expires_at.unwrap().to_rfc3339(),
            "2027-01-30T23:00:00+00:00"
        );
        assert_eq!(spec.allowed_config_ids.len(), 2);
        assert_eq!(spec.limits.rpm, Some(60));
        assert_eq!(spec.limits.budget.unwrap().period, BudgetPeriod::Month);
    }

    #[test]
    fn every_bad_client_key_field_is_reported() {
        let input: ClientKeyInput = serde_json::from_str(
            r#"{"name":"","expires_at":"tomorrow","rpm":0,"tpm":-1,"max_concurrency":0,
                "token_budget":10,"allowed_config_ids":[0]}"#,
        )
        .unwrap();
        let errors = input.validate().unwrap_err();
        let fields: Vec<&str> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        for field in [
            "name",
            "expires_at",
            "rpm",
            "tpm",
            "max_concurrency",
            "budget_period",
            "allowed_config_ids",
        ] {
            assert!(fields.contains(&field), "{field} missing from {fields:?}");
        }
    }
}
