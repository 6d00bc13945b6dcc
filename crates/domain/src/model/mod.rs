//! The entities of SPEC §1: proxy configs (one per upstream service), their API keys with health
//! and usage, and the small validated value types they are made of.

mod client_key;
mod config;
mod key;
mod wire_enum;

pub use client_key::{
    BudgetPeriod, ClientKey, ClientKeyId, ClientKeySpec, ClientKeyUsage, ClientLimits,
    ClientUsageDelta, IssuedSecret, SecretDigest, TokenBudget,
};
pub use config::{
    ApiFormat, ConfigKind, ConfigName, ConfigSnapshot, ConfigType, GenericTarget, HttpMethod,
    HttpUrl, KeyLocation, KeyPlacement, LlmTarget, OutputFormat, ProxyConfig, ProxyConfigId,
    ProxyConfigSpec, Slug,
};
pub use key::{ApiKey, ApiKeyId, KeyHealth, KeySecret, KeyUsage, UsageDelta, UsageEvent};
pub use wire_enum::UnknownVariant;

use serde::{Deserialize, Serialize};

/// A change to a proxy config or its keys, published to every instance so each one drops the
/// cached snapshots of the slugs involved (the old and the new slug on a rename).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The config that changed.
    pub config_id: ProxyConfigId,
    /// Every slug whose cached snapshot is now stale.
    pub slugs: Vec<Slug>,
}

impl ConfigChange {
    /// The notice of a client-key change: no config and no slug, so every instance drops its
    /// cached snapshots (as after any notice without slugs) and rebuilds its client-key
    /// directory.
    pub fn client_keys() -> Self {
        ConfigChange {
            config_id: ProxyConfigId(0),
            slugs: Vec::new(),
        }
    }
}
