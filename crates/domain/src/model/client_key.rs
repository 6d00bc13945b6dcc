//! Client keys (SPEC §7): the keys admins issue to one team, app or person, each with its own
//! scope, limits, budget and expiry, beside the unlimited `GLOBAL_PROXY_KEYS`.
//!
//! The secret itself never reaches the domain after issue: a key is known by the digest of its
//! secret ([`SecretDigest`], computed by the server: SHA-256, or HMAC keyed from
//! `ENCRYPTION_KEY`) and recognised by its [`key_prefix`](ClientKey::key_prefix).

use std::fmt;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::{ConfigName, ProxyConfigId};

/// Database identifier of a client key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientKeyId(pub i64);

impl fmt::Display for ClientKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The 32-byte digest of a client key's secret: the only form in which it is stored or looked
/// up. Printing it shows nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretDigest(pub [u8; 32]);

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

impl SecretDigest {
    /// Lower-case hex, as stored.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
        out
    }

    /// Parses 64 hex digits; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            out[i] = u8::try_from(high * 16 + low).ok()?;
        }
        Some(SecretDigest(out))
    }
}

/// How long a token budget lasts before it starts again (UTC boundaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// From 00:00 UTC to the next.
    Day,
    /// From the first of the month, 00:00 UTC.
    Month,
    /// Never starts again.
    Total,
}

impl BudgetPeriod {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
            BudgetPeriod::Total => "total",
        }
    }

    /// The start of the period `now` falls in (the Unix epoch for `total`).
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let start = match self {
            BudgetPeriod::Day => Utc
                .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
                .single(),
            BudgetPeriod::Month => Utc
                .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
                .single(),
            BudgetPeriod::Total => None,
        };
        start.unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// The end of the period `now` falls in; `None` for `total`.
    pub fn end(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = self.start(now);
        match self {
            BudgetPeriod::Day => Some(start + chrono::TimeDelta::days(1)),
            BudgetPeriod::Month => {
                let (year, month) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single()
            }
            BudgetPeriod::Total => None,
        }
    }
}

impl std::str::FromStr for BudgetPeriod {
    type Err = &'static str;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input.trim().to_ascii_lowercase().as_str() {
            "day" => Ok(BudgetPeriod::Day),
            "month" => Ok(BudgetPeriod::Month),
            "total" => Ok(BudgetPeriod::Total),
            _ => Err("must be one of day, month, total"),
        }
    }
}

/// A token budget: at most `tokens` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBudget {
    /// Tokens allowed in one period.
    pub tokens: u64,
    /// The period.
    pub period: BudgetPeriod,
}

/// A client key's limits; each one is optional (`None` = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientLimits {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// LLM tokens per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrency: Option<u32>,
    /// Tokens per budget period.
    pub budget: Option<TokenBudget>,
}

impl ClientLimits {
    /// Whether no limit is set (admission is then free).
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none()
            && self.tpm.is_none()
            && self.max_concurrency.is_none()
            && self.budget.is_none()
    }
}

/// What an admin sets on a client key (create and replace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeySpec {
    /// Unique display name.
    pub name: ConfigName,
    /// The admin's switch.
    pub is_active: bool,
    /// When the key stops working; `None` = never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Configs the key may call; empty = every config. Sorted, without duplicates.
    pub allowed_config_ids: Vec<ProxyConfigId>,
    /// Its limits.
    pub limits: ClientLimits,
}

/// A newly issued secret, as the store receives it: its digest and its recognisable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedSecret {
    /// Digest of the whole secret.
    pub digest: SecretDigest,
    /// The first characters of the secret, shown to admins to recognise it.
    pub prefix: String,
}

/// A client key's usage totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientKeyUsage {
    /// Requests made with the key.
    pub request_count: u64,
    /// Tokens the upstreams reported for them.
    pub token_count: u64,
    /// Tokens counted against the budget in the period starting at `budget_period_start`.
    pub budget_used: u64,
    /// The start of the budget period `budget_used` belongs to.
    pub budget_period_start: Option<DateTime<Utc>>,
    /// When the key was last used.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ClientKeyUsage {
    /// Adds a delta: counts add up, `budget_used` starts again when the delta belongs to a later
    /// period (a delta of an older period adds nothing to it), the latest use wins.
    pub fn apply(&mut self, delta: &ClientUsageDelta) {
        self.request_count = self.request_count.saturating_add(delta.requests);
        self.token_count = self.token_count.saturating_add(delta.tokens);
        if let Some(period) = delta.budget_period_start {
            match self.budget_period_start {
                Some(current) if current == period => {
                    self.budget_used = self.budget_used.saturating_add(delta.budget_tokens);
                }
                Some(current) if current > period => {}
                _ => {
                    self.budget_period_start = Some(period);
                    self.budget_used = delta.budget_tokens;
                }
            }
        }
        if delta.last_used_at > self.last_used_at {
            self.last_used_at = delta.last_used_at;
        }
    }

    /// The budget used in the period `now` falls in (zero once a new period started).
    pub fn budget_used_at(&self, period: BudgetPeriod, now: DateTime<Utc>) -> u64 {
        match self.budget_period_start {
            Some(start) if start == period.start(now) => self.budget_used,
            _ => 0,
        }
    }
}

/// Usage of one client key aggregated since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientUsageDelta {
    /// The key.
    pub key_id: ClientKeyId,
    /// Requests.
    pub requests: u64,
    /// Tokens.
    pub tokens: u64,
    /// Tokens counted against the budget of the period starting at `budget_period_start`.
    pub budget_tokens: u64,
    /// The budget period these tokens belong to (`None` without a budget).
    pub budget_period_start: Option<DateTime<Utc>>,
    /// The latest use.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ClientUsageDelta {
    /// An empty delta for `key_id`.
    pub fn new(key_id: ClientKeyId) -> Self {
        ClientUsageDelta {
            key_id,
            requests: 0,
            tokens: 0,
            budget_tokens: 0,
            budget_period_start: None,
            last_used_at: None,
        }
    }

    /// Adds another delta of the same key (a later period's budget replaces an earlier one's).
    pub fn merge(&mut self, other: &ClientUsageDelta) {
        self.requests = self.requests.saturating_add(other.requests);
        self.tokens = self.tokens.saturating_add(other.tokens);
        match (self.budget_period_start, other.budget_period_start) {
            (Some(mine), Some(theirs)) if mine == theirs => {
                self.budget_tokens = self.budget_tokens.saturating_add(other.budget_tokens);
            }
            (Some(mine), Some(theirs)) if mine > theirs => {}
            (_, Some(theirs)) => {
                self.budget_period_start = Some(theirs);
                self.budget_tokens = other.budget_tokens;
            }
            (_, None) => {}
        }
        if other.last_used_at > self.last_used_at {
            self.last_used_at = other.last_used_at;
        }
    }
}

/// A stored client key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    /// Set by the store.
    pub id: ClientKeyId,
    /// What the admin set.
    pub spec: ClientKeySpec,
    /// Digest of the current secret.
    pub digest: SecretDigest,
    /// The first characters of the current secret.
    pub key_prefix: String,
    /// Usage totals.
    pub usage: ClientKeyUsage,
    /// Set by the store on insert.
    pub created_at: DateTime<Utc>,
    /// Set by the store on every write.
    pub updated_at: DateTime<Utc>,
}

impl ClientKey {
    /// Whether the key authenticates at `now`: switched on and not expired.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.spec.is_active && self.spec.expires_at.is_none_or(|at| now < at)
    }

    /// Whether the key may call `config`.
    pub fn allows(&self, config: ProxyConfigId) -> bool {
        self.spec.allowed_config_ids.is_empty()
            || self.spec.allowed_config_ids.binary_search(&config).is_ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn budget_periods_start_and_end_on_utc_boundaries() {
        let now = at("2026-12-31T23:59:59Z");
        assert_eq!(BudgetPeriod::Day.start(now), at("2026-12-31T00:00:00Z"));
        assert_eq!(BudgetPeriod::Day.end(now), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(BudgetPeriod::Month.start(now), at("2026-12-01T00:00:00Z"));
        assert_eq!(
            BudgetPeriod::Month.end(now),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(BudgetPeriod::Total.start(now), DateTime::UNIX_EPOCH);
        assert_eq!(BudgetPeriod::Total.end(now), None);
        let feb = at("2028-02-29T12:00:00Z");
        assert_eq!(
            BudgetPeriod::Month.end(feb),
            Some(at("2028-03-01T00:00:00Z"))
        );
    }

    #[test]
    fn digest_round_trips_through_hex_and_never_prints() {
        let digest = SecretDigest([0xab; 32]);
        assert_eq!(SecretDigest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(SecretDigest::from_hex("zz"), None);
        assert!(!format!("{digest:?}").contains("ab"));
    }

    #[test]
    fn usage_budget_restarts_in_a_new_period_and_ignores_older_ones() {
        let day1 = at("2026-12-06T00:00:00Z");
        let day2 = at("2026-12-07T00:00:00Z");
        let mut usage = ClientKeyUsage::default();
        let mut delta = ClientUsageDelta::new(ClientKeyId(1));
        delta.requests = 2;
        delta.tokens = 30;
        delta.budget_tokens = 30;
        delta.budget_period_start = Some(day1);
        usage.apply(&delta);
        usage.apply(&delta);
        assert_eq!(
            (usage.request_count, usage.token_count, usage.budget_used),
            (4, 60, 60)
        );
        delta.budget_period_start = Some(day2);
        usage.apply(&delta);
        assert_eq!(usage.budget_used, 30);
        delta.budget_period_start = Some(day1);
        usage.apply(&delta);
        assert_eq!(usage.budget_used, 30);
        assert_eq!(
            usage.budget_used_at(BudgetPeriod::Day, at("2026-12-07T10:00:00Z")),
            30
        );
        assert_eq!(
            usage.budget_used_at(BudgetPeriod::Day, at("2026-12-08T10:00:00Z")),
            0
        );
    }

    #[test]
    fn deltas_merge_by_period() {
        let day1 = at("2026-12-06T00:00:00Z");
        let day2 = at("2026-12-07T00:00:00Z");
        let mut a = ClientUsageDelta::new(ClientKeyId(1));
        a.budget_tokens = 5;
        a.budget_period_start = Some(day1);
        let mut b = a;
        b.budget_period_start = Some(day2);
        b.budget_tokens = 7;
        a.merge(&b);
        assert_eq!((a.budget_tokens, a.budget_period_start), (7, Some(day2)));
        let mut c = b;
        c.budget_period_start = Some(day1);
        a.merge(&c);
        assert_eq!(a.budget_tokens, 7);
    }
}
