//! The original Go backend's data (SPEC §11) and the plan that turns it into this service's
//! configs and keys: every config row goes through the admin API's own validation (which
//! accepts what the original accepted), keys are checked like a batch import, and each row that
//! cannot be taken is named with its id and the reason. Pure: a storage adapter reads the rows
//! ([`OriginalData`]) and applies the [`ImportPlan`], reporting an [`ImportReport`].

use std::{
    collections::{HashMap, HashSet},
    fmt,
};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    command::ProxyConfigInput,
    model::{ApiKeyId, KeySecret, ProxyConfigId, ProxyConfigSpec, Slug},
};

/// A row of the original's `proxy_configs`, every column as the original may have left it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginalConfigRow {
    /// Its id, kept when free in the target.
    pub id: i64,
    /// Display name.
    pub name: Option<String>,
    /// Path name, any case, possibly with dots.
    pub slug: Option<String>,
    /// `generic` or `llm` (lower case in the original).
    pub config_type: Option<String>,
    /// `header` or `query`.
    pub api_key_location: Option<String>,
    /// Header or parameter name; empty on LLM configs made by the original's console.
    pub api_key_name: Option<String>,
    /// `NULL` reads as active (the column's default).
    pub is_active: Option<bool>,
    /// Kept when readable.
    pub created_at: Option<DateTime<Utc>>,
    /// Kept when readable.
    pub updated_at: Option<DateTime<Utc>>,
    /// GENERIC: the method.
    pub method: Option<String>,
    /// GENERIC: the target URL.
    pub target_url: Option<String>,
    /// LLM: the base URL.
    pub target_base_url: Option<String>,
    /// LLM: upstream format; `NULL` is `openai_compatible`.
    pub api_format: Option<String>,
    /// LLM: client format; `NULL` is `none`.
    pub output_format: Option<String>,
}

/// A row of the original's `api_keys`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OriginalKeyRow {
    /// Its id, kept when free in the target.
    pub id: i64,
    /// The owning config's original id.
    pub proxy_config_id: Option<i64>,
    /// The key as stored (plain text in the original).
    pub key_value: Option<String>,
    /// `NULL` reads as active (the column's default).
    pub is_active: Option<bool>,
}

impl fmt::Debug for OriginalKeyRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginalKeyRow")
            .field("id", &self.id)
            .field("proxy_config_id", &self.proxy_config_id)
            .field(
                "key_value",
                &self.key_value.as_deref().map(crate::mask_secret),
            )
            .field("is_active", &self.is_active)
            .finish()
    }
}

/// Everything read from an original database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginalData {
    /// `proxy_configs`, in id order.
    pub configs: Vec<OriginalConfigRow>,
    /// `api_keys`, in id order.
    pub keys: Vec<OriginalKeyRow>,
}

/// Where an original database keeps its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginalTables {
    /// Under the original names: a database the original backend wrote.
    InPlace,
    /// Under backup names: a database already upgraded in place.
    Backup,
}

/// The original table a refused row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginalTable {
    /// `proxy_configs`.
    ProxyConfigs,
    /// `api_keys`.
    ApiKeys,
}

impl OriginalTable {
    /// The table's name.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginalTable::ProxyConfigs => "proxy_configs",
            OriginalTable::ApiKeys => "api_keys",
        }
    }
}

/// A row the import did not take, and why (never the key value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedRow {
    /// Where it comes from.
    pub table: OriginalTable,
    /// Its id in the original.
    pub id: i64,
    /// Why, as a lowercase sentence.
    pub reason: String,
}

/// A key to import into its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedKey {
    /// The original id, kept when free.
    pub original_id: ApiKeyId,
    /// The validated value.
    pub secret: KeySecret,
    /// The admin's switch.
    pub is_active: bool,
}

/// A config to import, with its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedConfig {
    /// The original id, kept when free.
    pub original_id: ProxyConfigId,
    /// The validated config.
    pub spec: ProxyConfigSpec,
    /// The original's creation time, when readable.
    pub created_at: Option<DateTime<Utc>>,
    /// The original's last update, when readable.
    pub updated_at: Option<DateTime<Utc>>,
    /// Its valid keys, each value once, in id order.
    pub keys: Vec<PlannedKey>,
}

/// What to import, and what was refused before reaching the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportPlan {
    /// Valid configs, in id order.
    pub configs: Vec<PlannedConfig>,
    /// Rows refused by validation.
    pub refused: Vec<RefusedRow>,
}

/// The outcome of an import: counts, and every refused row. Running the same import again
/// moves everything from "imported" to "already present".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ImportReport {
    /// Configs created.
    pub configs_imported: u64,
    /// Configs whose slug the target already had (an earlier import, or the admin's own).
    pub configs_already_present: u64,
    /// Configs created under a new id because theirs was taken: `(original, new)`.
    pub configs_renumbered: Vec<(i64, i64)>,
    /// Keys created.
    pub keys_imported: u64,
    /// Keys their config already had.
    pub keys_already_present: u64,
    /// Keys created under a new id because theirs was taken.
    pub keys_renumbered: u64,
    /// Rows not imported, with the reason.
    pub refused: Vec<RefusedRow>,
}

fn refuse(table: OriginalTable, id: i64, reason: impl Into<String>) -> RefusedRow {
    RefusedRow {
        table,
        id,
        reason: reason.into(),
    }
}

/// The admin API's input for an original config row.
fn config_input(row: &OriginalConfigRow) -> ProxyConfigInput {
    ProxyConfigInput {
        name: row.name.clone(),
        slug: row.slug.clone(),
        config_type: row.config_type.clone(),
        is_active: Some(row.is_active.unwrap_or(true)),
        api_key_location: row.api_key_location.clone(),
        api_key_name: row.api_key_name.clone(),
        api_key_prefix: None,
        method: row.method.clone(),
        target_url: row.target_url.clone(),
        target_base_url: row.target_base_url.clone(),
        api_format: row.api_format.clone(),
        output_format: row.output_format.clone(),
        // The original had no failover policy: the environment's defaults apply.
        max_retries: None,
        retry_on: None,
        response_timeout_seconds: None,
    }
}

/// Validates every row of an original database into the configs and keys to import.
///
/// A config is refused when the admin API would refuse it; a key when its config was refused
/// or is missing, when its value is blank or unusable, or when the same value came earlier in
/// the same config (the original allowed duplicates; this service keeps a key once per config).
pub fn plan_import(data: &OriginalData) -> ImportPlan {
    let mut plan = ImportPlan::default();
    let mut index_by_id: HashMap<i64, usize> = HashMap::new();
    let mut refused_configs: HashSet<i64> = HashSet::new();
    let mut id_of_slug: HashMap<Slug, i64> = HashMap::new();
    for row in &data.configs {
        match config_input(row).validate() {
            // The original compared slugs byte for byte; two that differ only in case would
            // become one config here, merging their keys.
            Ok(spec) if id_of_slug.contains_key(&spec.slug) => {
                refused_configs.insert(row.id);
                let first = id_of_slug.get(&spec.slug).copied().unwrap_or_default();
                plan.refused.push(refuse(
                    OriginalTable::ProxyConfigs,
                    row.id,
                    format!("its slug differs from config {first}'s only in case"),
                ));
            }
            Ok(spec) => {
                id_of_slug.insert(spec.slug.clone(), row.id);
                index_by_id.insert(row.id, plan.configs.len());
                plan.configs.push(PlannedConfig {
                    original_id: ProxyConfigId(row.id),
                    spec,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                    keys: Vec::new(),
                });
            }
            Err(errors) => {
                refused_configs.insert(row.id);
                plan.refused.push(refuse(
                    OriginalTable::ProxyConfigs,
                    row.id,
                    errors.to_string(),
                ));
            }
        }
    }
    let mut first_of_value: HashMap<(usize, KeySecret), i64> = HashMap::new();
    for row in &data.keys {
        let refused = |reason: String| refuse(OriginalTable::ApiKeys, row.id, reason);
        let Some(config_id) = row.proxy_config_id else {
            plan.refused
                .push(refused("it belongs to no config".to_owned()));
            continue;
        };
        let Some(&index) = index_by_id.get(&config_id) else {
            let reason = if refused_configs.contains(&config_id) {
                format!("its config {config_id} was refused")
            } else {
                format!("its config {config_id} does not exist")
            };
            plan.refused.push(refused(reason));
            continue;
        };
        let value = row.key_value.as_deref().unwrap_or_default();
        if value.trim().is_empty() {
            plan.refused
                .push(refused("its key value is blank".to_owned()));
            continue;
        }
        let secret = match KeySecret::parse(value) {
            Ok(secret) => secret,
            Err(why) => {
                plan.refused.push(refused(format!("its key value {why}")));
                continue;
            }
        };
        match first_of_value.get(&(index, secret.clone())) {
            Some(first) => plan.refused.push(refused(format!(
                "it repeats key {first} of the same config"
            ))),
            None => {
                first_of_value.insert((index, secret.clone()), row.id);
                plan.configs[index].keys.push(PlannedKey {
                    original_id: ApiKeyId(row.id),
                    secret,
                    is_active: row.is_active.unwrap_or(true),
                });
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{ConfigKind, KeyLocation};

    fn llm_row(id: i64, slug: &str) -> OriginalConfigRow {
        OriginalConfigRow {
            id,
            name: Some(format!("LLM {id}")),
            slug: Some(slug.to_owned()),
            config_type: Some("llm".to_owned()),
            api_key_location: Some("header".to_owned()),
            api_key_name: Some(String::new()),
            is_active: Some(true),
            target_base_url: Some("https://api.openai.com/v1".to_owned()),
            ..Default::default()
        }
    }

    fn key(id: i64, config: i64, value: &str) -> OriginalKeyRow {
        OriginalKeyRow {
            id,
            proxy_config_id: Some(config),
            key_value: Some(value.to_owned()),
            is_active: None,
        }
    }

    fn refused_ids(plan: &ImportPlan) -> Vec<(OriginalTable, i64)> {
        plan.refused.iter().map(|r| (r.table, r.id)).collect()
    }

    #[test]
    fn original_llm_rows_import_with_null_formats_and_dotted_upper_case_slugs() {
        let data = OriginalData {
            configs: vec![llm_row(4, "My.OpenAI")],
            keys: vec![key(9, 4, "sk-one")],
        };
        let plan = plan_import(&data);
        assert!(plan.refused.is_empty(), "{:?}", plan.refused);
        let config = &plan.configs[0];
        assert_eq!(config.original_id, ProxyConfigId(4));
        assert_eq!(config.spec.slug.as_str(), "my.openai");
        let ConfigKind::Llm(target) = &config.spec.kind else {
            panic!("expected LLM")
        };
        assert_eq!(
            target.key_placement, None,
            "blank name = the format's place"
        );
        assert_eq!(config.keys[0].original_id, ApiKeyId(9));
        assert!(
            config.keys[0].is_active,
            "NULL is the column default, active"
        );
    }

    #[test]
    fn an_llm_authorization_header_gets_the_originals_bearer_prefix() {
        let mut row = llm_row(1, "openai");
        row.api_key_name = Some("Authorization".to_owned());
        let plan = plan_import(&OriginalData {
            configs: vec![row],
            keys: vec![],
        });
        let placement = plan.configs[0].spec.kind.key_placement().unwrap();
        assert_eq!(placement.location, KeyLocation::Header);
        assert_eq!(&*placement.prefix, "Bearer ");
    }

    #[test]
    fn blank_duplicate_and_orphan_keys_are_refused_by_id_with_a_reason() {
        let mut bad = llm_row(2, "bad slug!");
        bad.is_active = Some(false);
        let data = OriginalData {
            configs: vec![llm_row(1, "a"), bad],
            keys: vec![
                key(1, 1, "sk-one"),
                key(2, 1, "  "),
                key(3, 1, "sk-one"),
                key(4, 2, "sk-two"),
                key(5, 7, "sk-three"),
                key(6, 1, "has space"),
            ],
        };
        let plan = plan_import(&data);
        assert_eq!(
            refused_ids(&plan),
            [
                (OriginalTable::ProxyConfigs, 2),
                (OriginalTable::ApiKeys, 2),
                (OriginalTable::ApiKeys, 3),
                (OriginalTable::ApiKeys, 4),
                (OriginalTable::ApiKeys, 5),
                (OriginalTable::ApiKeys, 6),
            ]
        );
        assert!(plan.refused[0].reason.contains("slug"));
        assert_eq!(plan.refused[1].reason, "its key value is blank");
        assert_eq!(
            plan.refused[2].reason,
            "it repeats key 1 of the same config"
        );
        assert_eq!(plan.refused[3].reason, "its config 2 was refused");
        assert_eq!(plan.refused[4].reason, "its config 7 does not exist");
        assert!(!plan.refused[5].reason.contains("has space"));
        assert_eq!(plan.configs[0].keys.len(), 1);
    }

    #[test]
    fn slugs_that_differ_only_in_case_are_one_config_and_the_second_is_refused() {
        let data = OriginalData {
            configs: vec![llm_row(1, "My.Api"), llm_row(2, "my.api")],
            keys: vec![key(1, 2, "sk-two")],
        };
        let plan = plan_import(&data);
        assert_eq!(plan.configs.len(), 1);
        assert_eq!(
            refused_ids(&plan),
            [
                (OriginalTable::ProxyConfigs, 2),
                (OriginalTable::ApiKeys, 1)
            ]
        );
        assert_eq!(
            plan.refused[0].reason,
            "its slug differs from config 1's only in case"
        );
    }

    #[test]
    fn the_same_value_in_two_configs_is_two_keys() {
        let data = OriginalData {
            configs: vec![llm_row(1, "a"), llm_row(2, "b")],
            keys: vec![key(1, 1, "sk-same"), key(2, 2, "sk-same")],
        };
        let plan = plan_import(&data);
        assert!(plan.refused.is_empty());
        assert_eq!(plan.configs[1].keys.len(), 1);
    }

    #[test]
    fn key_rows_never_print_their_value() {
        let shown = format!("{:?}", key(1, 1, "sk-secret-0123456789abcdef"));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
