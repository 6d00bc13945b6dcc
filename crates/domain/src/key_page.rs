//! Reading a key pool a page at a time: the admin's key list query (limit, cursor, health and
//! active filters) validated into [`KeyPageQuery`], the opaque [`KeyCursor`], the store's
//! [`KeyRange`] read, the [`KeyPage`] answered, and the per-config [`KeyCount`]s the metrics
//! read instead of the keys themselves.
//!
//! A page costs memory in proportion to its limit, never to the pool: pools of tens of
//! thousands of keys are a real use, and a whole pool in one answer weighed 13.7 MB for 50 000
//! keys.

use std::fmt;

use serde::Deserialize;

use crate::{
    command::ValidationErrors,
    model::{ApiKey, ApiKeyId, KeyHealth, ProxyConfigId},
};

/// Most keys one page holds, and the default limit.
pub const MAX_PAGE_LIMIT: usize = 1_000;

/// Most keys one health-filtered page request reads from the store before it answers with what
/// it found so far and a cursor to go on from: live health is not in the store, so a filter
/// that matches few keys would otherwise scan the whole pool in one request.
pub const MAX_SCANNED_KEYS: usize = 10 * MAX_PAGE_LIMIT;

/// A key's health without its details, as the health filter and the key counts name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HealthState {
    /// In rotation.
    Ok,
    /// Cooling down.
    Cooling,
    /// Failed.
    Failed,
}

impl HealthState {
    /// Every state, in wire order.
    pub const ALL: [HealthState; 3] = [HealthState::Ok, HealthState::Cooling, HealthState::Failed];

    /// The state of `health` as of `now`: a cooldown that has ended is `Ok`.
    pub fn of(health: KeyHealth, now: chrono::DateTime<chrono::Utc>) -> Self {
        match health.at(now) {
            KeyHealth::Ok => HealthState::Ok,
            KeyHealth::Cooling { .. } => HealthState::Cooling,
            KeyHealth::Failed => HealthState::Failed,
        }
    }

    /// The wire name: `ok`, `cooling` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Ok => "ok",
            HealthState::Cooling => "cooling",
            HealthState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        HealthState::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the next page starts: after the last key of the previous one. Clients treat it as an
/// opaque string; it is the last key's id, since pages are ordered by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCursor(ApiKeyId);

impl KeyCursor {
    /// The cursor that continues after `key`.
    pub fn after(key: ApiKeyId) -> Self {
        KeyCursor(key)
    }

    /// The last key already seen.
    pub fn last_seen(self) -> ApiKeyId {
        self.0
    }

    /// Reads a cursor this service handed out.
    ///
    /// # Errors
    /// [`MalformedCursor`] for anything else.
    pub fn parse(text: &str) -> Result<Self, MalformedCursor> {
        let digits = text.trim();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MalformedCursor);
        }
        digits
            .parse::<i64>()
            .map(|id| KeyCursor(ApiKeyId(id)))
            .map_err(|_| MalformedCursor)
    }
}

impl fmt::Display for KeyCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A cursor that this service did not hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this service handed out; pass next_cursor from a previous page as is")]
pub struct MalformedCursor;

/// How many keys a page holds: 1 to [`MAX_PAGE_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(usize);

impl PageLimit {
    /// The largest page, also the default.
    pub const MAX: PageLimit = PageLimit(MAX_PAGE_LIMIT);

    /// A limit of `n` keys, when `n` is in range.
    pub fn new(n: usize) -> Option<Self> {
        (1..=MAX_PAGE_LIMIT).contains(&n).then_some(PageLimit(n))
    }

    /// The number of keys.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        PageLimit::MAX
    }
}

/// The key list query as it arrives in the query string: every parameter optional text.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyListInput {
    /// Keys per page, 1 to 1 000 (default 1 000).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `ok`, `cooling` or `failed`: live health.
    pub health: Option<String>,
    /// `true` or `false`.
    pub is_active: Option<String>,
}

/// Why a key list query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyQueryError {
    /// The cursor is not one this service handed out.
    #[error(transparent)]
    Cursor(#[from] MalformedCursor),
    /// Some parameters are invalid; each is listed.
    #[error("{0}")]
    Fields(ValidationErrors),
}

impl KeyListInput {
    /// Validates the query, reporting every bad parameter at once; a malformed cursor is
    /// reported before the other parameters, since a client that sends one has lost its place.
    ///
    /// # Errors
    /// [`KeyQueryError`].
    pub fn validate(&self) -> Result<KeyPageQuery, KeyQueryError> {
        let after = match present(self.cursor.as_deref()) {
            Some(text) => Some(KeyCursor::parse(text)?.last_seen()),
            None => None,
        };
        let mut errors = ValidationErrors::default();
        let limit = match present(self.limit.as_deref()) {
            None => Some(PageLimit::default()),
            Some(text) => {
                let limit = text.parse::<usize>().ok().and_then(PageLimit::new);
                if limit.is_none() {
                    errors.add(
                        "limit",
                        format!("must be a whole number from 1 to {MAX_PAGE_LIMIT}"),
                    );
                }
                limit
            }
        };
        let health = match present(self.health.as_deref()) {
            None => None,
            Some(text) => {
                let state = HealthState::parse(text);
                if state.is_none() {
                    errors.add("health", "must be ok, cooling or failed");
                }
                state
            }
        };
        let is_active = match present(self.is_active.as_deref()) {
            None => None,
            Some(text) if text.eq_ignore_ascii_case("true") => Some(true),
            Some(text) if text.eq_ignore_ascii_case("false") => Some(false),
            Some(_) => {
                errors.add("is_active", "must be true or false");
                None
            }
        };
        match limit {
            Some(limit) if errors.is_empty() => Ok(KeyPageQuery {
                limit,
                after,
                health,
                is_active,
            }),
            _ => Err(KeyQueryError::Fields(errors)),
        }
    }
}

/// A parameter given with a value; an empty `?health=` means no filter, as a console form sends
/// it for "any".
fn present(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

/// A validated key list query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPageQuery {
    /// Keys per page.
    pub limit: PageLimit,
    /// Only keys with a greater id.
    pub after: Option<ApiKeyId>,
    /// Only keys in this live health.
    pub health: Option<HealthState>,
    /// Only keys with this switch.
    pub is_active: Option<bool>,
}

/// One page of a config's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys, ordered by id, with live health.
    pub items: Vec<ApiKey>,
    /// Where the next page starts; `None` when no key follows. A page may hold fewer keys than
    /// the limit (none, even) and still have a next one, when a health filter scanned
    /// [`MAX_SCANNED_KEYS`] keys without filling it.
    pub next_cursor: Option<KeyCursor>,
}

/// The store's side of a page: keys of one config with an id above `after`, ordered by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    /// Only keys with a greater id; `None` from the first key.
    pub after: Option<ApiKeyId>,
    /// Most keys to return.
    pub limit: usize,
    /// Only keys with this switch; `None` for both.
    pub is_active: Option<bool>,
}

/// How many keys of a config are in one stored health with one switch position, as
/// `ProxyStore::count_keys` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCount {
    /// The config.
    pub config: ProxyConfigId,
    /// The stored health as of the time asked about (an ended cooldown is `Ok`).
    pub health: HealthState,
    /// The admin's switch.
    pub is_active: bool,
    /// How many keys.
    pub count: u64,
}

/// A config's keys counted the way the console and the metrics show them: switched-off keys as
/// `disabled` whatever their health, switched-on keys by health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyTally {
    /// Every key.
    pub total: u64,
    /// Switched on and in rotation.
    pub ok: u64,
    /// Switched on and cooling down.
    pub cooling: u64,
    /// Switched on and failed.
    pub failed: u64,
    /// Switched off.
    pub disabled: u64,
}

impl KeyTally {
    /// Adds one [`KeyCount`].
    pub fn add(&mut self, count: &KeyCount) {
        self.total += count.count;
        let slot = match count.health {
            _ if !count.is_active => &mut self.disabled,
            HealthState::Ok => &mut self.ok,
            HealthState::Cooling => &mut self.cooling,
            HealthState::Failed => &mut self.failed,
        };
        *slot += count.count;
    }

    /// One tally per config that has keys, ordered by config id.
    pub fn per_config(counts: &[KeyCount]) -> std::collections::BTreeMap<ProxyConfigId, KeyTally> {
        let mut tallies = std::collections::BTreeMap::<ProxyConfigId, KeyTally>::new();
        for count in counts {
            tallies.entry(count.config).or_default().add(count);
        }
        tallies
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::{TimeDelta, Utc};

    use super::*;

    fn input(pairs: &[(&str, &str)]) -> KeyListInput {
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        KeyListInput {
            limit: get("limit"),
            cursor: get("cursor"),
            health: get("health"),
            is_active: get("is_active"),
        }
    }

    #[test]
    fn an_empty_query_is_the_first_page_of_a_thousand() {
        let query = input(&[]).validate().unwrap();
        assert_eq!(query, KeyPageQuery::default());
        assert_eq!(query.limit.get(), 1_000);
    }

    #[test]
    fn every_parameter_is_read() {
        let query = input(&[
            ("limit", "25"),
            ("cursor", "4711"),
            ("health", "Cooling"),
            ("is_active", "false"),
        ])
        .validate()
        .unwrap();
        assert_eq!(query.limit.get(), 25);
        assert_eq!(query.after, Some(ApiKeyId(4711)));
        assert_eq!(query.health, Some(HealthState::Cooling));
        assert_eq!(query.is_active, Some(false));
    }

    #[test]
    fn blank_parameters_mean_no_filter() {
        let query = input(&[("health", ""), ("is_active", " "), ("limit", "")])
            .validate()
            .unwrap();
        assert_eq!(query, KeyPageQuery::default());
    }

    #[test]
    fn limits_out_of_range_or_not_numbers_are_refused() {
        for limit in ["0", "1001", "-1", "ten", "1.5"] {
            let err = input(&[("limit", limit)]).validate().unwrap_err();
            let KeyQueryError::Fields(errors) = err else {
                panic!("{limit}: {err:?}");
            };
            assert_eq!(errors.fields()[0].field, "limit", "{limit}");
        }
        assert!(input(&[("limit", "1000")]).validate().is_ok());
        assert!(input(&[("limit", "1")]).validate().is_ok());
    }

    #[test]
    fn every_bad_filter_is_listed_at_once() {
        let err = input(&[("limit", "0"), ("health", "sick"), ("is_active", "yes")])
            .validate()
            .unwrap_err();
        let KeyQueryError::Fields(errors) = err else {
            panic!("{err:?}");
        };
        let fields: Vec<&str> = errors.fields().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["limit", "health", "is_active"]);
    }

    #[test]
    fn a_cursor_not_handed_out_is_malformed() {
        for cursor in ["abc", "-3", "1e3", "99999999999999999999"] {
            assert_eq!(
                input(&[("cursor", cursor), ("limit", "0")]).validate(),
                Err(KeyQueryError::Cursor(MalformedCursor)),
                "{cursor}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_through_their_text() {
        let cursor = KeyCursor::after(ApiKeyId(123));
        assert_eq!(KeyCursor::parse(&cursor.to_string()), Ok(cursor));
    }

    #[test]
    fn health_state_counts_an_ended_cooldown_as_ok() {
        let now = Utc::now();
        let ended = KeyHealth::Cooling {
            until: now - TimeDelta::seconds(1),
        };
        let running = KeyHealth::Cooling {
            until: now + TimeDelta::seconds(1),
        };
        assert_eq!(HealthState::of(ended, now), HealthState::Ok);
        assert_eq!(HealthState::of(running, now), HealthState::Cooling);
        assert_eq!(HealthState::of(KeyHealth::Failed, now), HealthState::Failed);
    }

    #[test]
    fn a_tally_counts_switched_off_keys_as_disabled_whatever_their_health() {
        let count = |config, health, is_active, count| KeyCount {
            config: ProxyConfigId(config),
            health,
            is_active,
            count,
        };
        let tallies = KeyTally::per_config(&[
            count(1, HealthState::Ok, true, 5),
            count(1, HealthState::Failed, false, 2),
            count(1, HealthState::Ok, false, 1),
            count(1, HealthState::Cooling, true, 3),
            count(2, HealthState::Failed, true, 4),
        ]);
        assert_eq!(
            tallies[&ProxyConfigId(1)],
            KeyTally {
                total: 11,
                ok: 5,
                cooling: 3,
                failed: 0,
                disabled: 3
            }
        );
        assert_eq!(tallies[&ProxyConfigId(2)].failed, 4);
    }
}
