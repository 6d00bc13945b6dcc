//! Upstream API keys: the secret value that never prints itself, health (ok, cooling, failed)
//! and usage counters.

use std::{fmt, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};

use super::config::ProxyConfigId;
use crate::security::mask_secret;

/// Database identifier of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKeyId(pub i64);

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Longest accepted key value, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// An upstream key value. `Debug`, `Display` and `Serialize` show it masked; only
/// [`KeySecret::expose`] gives the value, for injection into the upstream request and for the
/// store. Cloning shares one allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeySecret(Arc<str>);

impl KeySecret {
    /// Validates a key value: trimmed, non-empty, at most 4 096 bytes, printable ASCII only (it
    /// travels in a header or a query string).
    ///
    /// # Errors
    /// A short reason, phrased for the `key_value` field.
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        let value = input.trim();
        if value.is_empty() {
            return Err("must not be empty");
        }
        if value.len() > MAX_KEY_BYTES {
            return Err("must be at most 4096 bytes");
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must contain only printable ASCII characters without spaces");
        }
        Ok(KeySecret(value.into()))
    }

    /// The real value. Call only to put it on the wire or in the store.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The masked form shown to admins and in logs.
    pub fn masked(&self) -> String {
        mask_secret(&self.0)
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySecret({})", self.masked())
    }
}

impl fmt::Display for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for KeySecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

/// A key's place in rotation, as of a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyHealth {
    /// In rotation.
    #[default]
    Ok,
    /// Rate-limited: out of rotation until `until`, then back by itself.
    Cooling {
        /// When the key comes back.
        until: DateTime<Utc>,
    },
    /// Rejected by the upstream (revoked, suspended): out of rotation until a successful
    /// recovery probe or an admin re-enables it.
    Failed,
}

impl KeyHealth {
    /// The health as of `now`: a cooldown that has ended reads as `Ok`.
    pub fn at(self, now: DateTime<Utc>) -> KeyHealth {
        match self {
            KeyHealth::Cooling { until } if until <= now => KeyHealth::Ok,
            other => other,
        }
    }

    /// Whether a key in this state may be selected at `now`.
    pub fn is_usable_at(self, now: DateTime<Utc>) -> bool {
        self.at(now) == KeyHealth::Ok
    }

    /// The wire name: `ok`, `cooling` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyHealth::Ok => "ok",
            KeyHealth::Cooling { .. } => "cooling",
            KeyHealth::Failed => "failed",
        }
    }

    /// The end of the cooldown, if cooling.
    pub fn cooldown_until(self) -> Option<DateTime<Utc>> {
        match self {
            KeyHealth::Cooling { until } => Some(until),
            _ => None,
        }
    }
}

/// Per-key usage, as tracked by the service and shown in the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyUsage {
    /// Upstream requests sent with this key.
    pub request_count: u64,
    /// Of those, the ones that failed (rate limit, rejection, upstream fault).
    pub failure_count: u64,
    /// The last upstream status seen with this key (`None` before any, or after a connect error).
    pub last_status: Option<u16>,
    /// When the key was last used.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl KeyUsage {
    /// Adds a delta to these totals; the latest `last_used_at` wins, with its status.
    pub fn apply(&mut self, delta: &UsageDelta) {
        self.request_count += delta.requests;
        self.failure_count += delta.failures;
        if delta.last_used_at >= self.last_used_at {
            self.last_used_at = delta.last_used_at;
            self.last_status = delta.last_status.or(self.last_status);
        }
    }
}

/// A stored API key with its health and usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Store identifier.
    pub id: ApiKeyId,
    /// The config whose pool the key belongs to.
    pub proxy_config_id: ProxyConfigId,
    /// The secret.
    pub key_value: KeySecret,
    /// The admin's switch.
    pub is_active: bool,
    /// Health as last known.
    pub health: KeyHealth,
    /// Usage totals.
    pub usage: KeyUsage,
    /// Set by the store on insert.
    pub created_at: DateTime<Utc>,
    /// Set by the store on every write.
    pub updated_at: DateTime<Utc>,
}

/// One upstream attempt made with a key, recorded on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageEvent {
    /// The upstream status, or `None` for a connect error or timeout.
    pub status: Option<u16>,
    /// Whether the attempt counts as a failure.
    pub failed: bool,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// Usage aggregated over a flush interval for one key, written to the store in one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDelta {
    /// The key.
    pub key_id: ApiKeyId,
    /// Requests in the interval.
    pub requests: u64,
    /// Failures in the interval.
    pub failures: u64,
    /// Status of the latest request in the interval.
    pub last_status: Option<u16>,
    /// Time of the latest request in the interval.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl UsageDelta {
    /// An empty delta for `key_id`.
    pub fn new(key_id: ApiKeyId) -> Self {
        UsageDelta {
            key_id,
            requests: 0,
            failures: 0,
            last_status: None,
            last_used_at: None,
        }
    }

    /// Adds one event.
    pub fn record(&mut self, event: &UsageEvent) {
        self.requests += 1;
        self.failures += u64::from(event.failed);
        if Some(event.at) >= self.last_used_at {
            self.last_used_at = Some(event.at);
            self.last_status = event.status;
        }
    }

    /// Adds another delta for the same key.
    pub fn merge(&mut self, other: &UsageDelta) {
        self.requests += other.requests;
        self.failures += other.failures;
        if other.last_used_at >= self.last_used_at {
            self.last_used_at = other.last_used_at;
            self.last_status = other.last_status;
        }
    }

    /// `deltas` merged into one per key, in key order. Linear in the deltas: a flush of a
    /// pool whose 100 000 keys were all used carries as many.
    pub fn merged_by_key(deltas: impl IntoIterator<Item = UsageDelta>) -> Vec<UsageDelta> {
        let mut merged: std::collections::BTreeMap<ApiKeyId, UsageDelta> =
            std::collections::BTreeMap::new();
        for delta in deltas {
            merged
                .entry(delta.key_id)
                .and_modify(|total| total.merge(&delta))
                .or_insert(delta);
        }
        merged.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn deltas_merge_into_one_per_key_in_key_order() {
        let delta = |key, requests| UsageDelta {
            requests,
            ..UsageDelta::new(ApiKeyId(key))
        };
        let merged = UsageDelta::merged_by_key([delta(3, 1), delta(1, 2), delta(3, 4)]);
        let requests: Vec<(i64, u64)> = merged.iter().map(|d| (d.key_id.0, d.requests)).collect();
        assert_eq!(requests, [(1, 2), (3, 5)]);
    }

    #[test]
    fn key_secret_never_prints_itself() {
        let secret = KeySecret::parse("sk-abcdefghijklmnopqrstuvwxyz123456").unwrap();
        let shown = [
            format!("{secret:?}"),
            format!("{secret}"),
            serde_json::to_string(&secret).unwrap(),
        ];
        for text in shown {
            assert!(!text.contains("abcdefghijklmnop"), "{text}");
            assert!(text.contains("****"), "{text}");
        }
        assert_eq!(secret.expose(), "sk-abcdefghijklmnopqrstuvwxyz123456");
    }

    #[test]
    fn key_secret_rejects_blank_spaces_and_control_characters() {
        assert!(KeySecret::parse("  ").is_err());
        assert!(KeySecret::parse("two words").is_err());
        assert!(KeySecret::parse("tab\tkey").is_err());
        assert!(KeySecret::parse(&"k".repeat(4097)).is_err());
        assert_eq!(KeySecret::parse("  trimmed ").unwrap().expose(), "trimmed");
    }

    #[test]
    fn cooling_health_ends_by_itself() {
        let now = Utc::now();
        let cooling = KeyHealth::Cooling {
            until: now + TimeDelta::seconds(5),
        };
        assert!(!cooling.is_usable_at(now));
        assert!(cooling.is_usable_at(now + TimeDelta::seconds(5)));
        assert!(!KeyHealth::Failed.is_usable_at(now + TimeDelta::days(365)));
    }

    #[test]
    fn usage_delta_keeps_the_latest_status() {
        let now = Utc::now();
        let mut delta = UsageDelta::new(ApiKeyId(1));
        delta.record(&UsageEvent {
            status: Some(200),
            failed: false,
            at: now,
        });
        delta.record(&UsageEvent {
            status: Some(429),
            failed: true,
            at: now + TimeDelta::seconds(1),
        });
        assert_eq!(
            (delta.requests, delta.failures, delta.last_status),
            (2, 1, Some(429))
        );
        let mut usage = KeyUsage::default();
        usage.apply(&delta);
        assert_eq!(usage.request_count, 2);
        assert_eq!(usage.last_status, Some(429));
    }
}
