//! The ports: what the domain needs from the outside world, as object-safe async traits.
//!
//! The store keeps configs and keys durably; the rotation state keeps the live round-robin
//! counters, cooldowns and key health (shared by every instance when the adapter is); usage
//! counters aggregate per-key usage off the hot path; config events tell every instance that a
//! config changed. Implementations must pass the suites in [`crate::contract`] (feature
//! `contract-tests`).

use std::pin::Pin;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_core::Stream;

use crate::{
    client_limits::Refusal,
    error::Result,
    key_page::{KeyCount, KeyRange},
    model::{
        ApiKey, ApiKeyId, ClientKey, ClientKeyId, ClientKeySpec, ClientLimits, ClientUsageDelta,
        ConfigChange, ConfigSnapshot, IssuedSecret, KeyHealth, KeySecret, ProxyConfig,
        ProxyConfigId, ProxyConfigSpec, Slug, UsageDelta, UsageEvent,
    },
    request_log::{LogCursor, LogPage, LogQuery, RequestRecord, Retention, StatsQuery, UsageStats},
};

/// What a batch insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertedKeys {
    /// Keys newly stored.
    pub inserted: u64,
    /// Keys the config already had.
    pub skipped: u64,
}

/// Durable storage of proxy configs and their keys.
///
/// Errors: a missing record is [`crate::Error::NotFound`]; a taken name, slug or key value is
/// [`crate::Error::Conflict`] naming the field; an unreachable database is
/// [`crate::Error::Unavailable`]. Messages never carry raw driver text or key values.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ProxyStore: Send + Sync {
    /// Stores a new config; the store sets id and timestamps.
    async fn create_config(&self, spec: ProxyConfigSpec) -> Result<ProxyConfig>;
    /// Every config, ordered by id.
    async fn list_configs(&self) -> Result<Vec<ProxyConfig>>;
    /// One config.
    async fn get_config(&self, id: ProxyConfigId) -> Result<ProxyConfig>;
    /// Replaces every field of a config but its id and creation time.
    async fn replace_config(&self, id: ProxyConfigId, spec: ProxyConfigSpec)
    -> Result<ProxyConfig>;
    /// Switches a config on or off.
    async fn set_config_active(&self, id: ProxyConfigId, is_active: bool) -> Result<ProxyConfig>;
    /// Deletes a config and all its keys; returns what was deleted.
    async fn delete_config(&self, id: ProxyConfigId) -> Result<ProxyConfig>;
    /// The keys of a config, ordered by id; `NotFound` when the config does not exist. Its cost
    /// grows with the pool: the admin API and the metrics use [`ProxyStore::list_key_range`] and
    /// [`ProxyStore::count_keys`]; only jobs that must see every key call this.
    async fn list_keys(&self, config: ProxyConfigId) -> Result<Vec<ApiKey>>;
    /// At most `range.limit` keys of a config with an id above `range.after` (and the switch
    /// `range.is_active` when given), ordered by id: one page, read without loading the pool.
    /// `NotFound` when the config does not exist.
    async fn list_key_range(&self, config: ProxyConfigId, range: KeyRange) -> Result<Vec<ApiKey>>;
    /// How many keys each config has per stored health and switch position, with health as of
    /// `now` (an ended cooldown counts as ok). Pairs without keys may be left out. Computed by
    /// the store (one grouped query), so the caller's cost does not grow with the pools.
    async fn count_keys(&self, now: DateTime<Utc>) -> Result<Vec<KeyCount>>;
    /// One key.
    async fn get_key(&self, id: ApiKeyId) -> Result<ApiKey>;
    /// Adds one key; `Conflict { field: "key_value" }` when the config already has it.
    async fn add_key(
        &self,
        config: ProxyConfigId,
        key: KeySecret,
        is_active: bool,
    ) -> Result<ApiKey>;
    /// Adds many keys in a few statements, skipping the ones the config already has. The keys
    /// given are distinct. Must not hit the database's bound-parameter limit for any count.
    async fn add_keys(
        &self,
        config: ProxyConfigId,
        keys: Vec<KeySecret>,
        is_active: bool,
    ) -> Result<InsertedKeys>;
    /// Deletes every key of a config; returns how many.
    async fn clear_keys(&self, config: ProxyConfigId) -> Result<u64>;
    /// Switches a key on or off.
    async fn set_key_active(&self, id: ApiKeyId, is_active: bool) -> Result<ApiKey>;
    /// Deletes one key; returns what was deleted.
    async fn delete_key(&self, id: ApiKeyId) -> Result<ApiKey>;
    /// The active config with this slug and all its keys, or `None` when there is no such active
    /// config. This feeds the in-process snapshot cache; it is not called per proxied request.
    async fn active_config_by_slug(&self, slug: &Slug) -> Result<Option<ConfigSnapshot>>;
    /// Adds usage deltas to the keys' counters in one batched write; unknown keys are ignored.
    async fn apply_usage(&self, deltas: &[UsageDelta]) -> Result<()>;
    /// Persists a key's health so it survives restarts; unknown keys are ignored.
    async fn set_key_health(&self, id: ApiKeyId, health: KeyHealth) -> Result<()>;
    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;
}

/// One selection's view of the rotation state: the counter value it drew and the health of each
/// key asked about, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The config's counter before this selection incremented it.
    pub counter: u64,
    /// Health of each key, aligned with the ids passed in.
    pub states: Vec<KeyHealth>,
}

/// One selection's draw: the counter value and the version of the key health it goes with.
///
/// The version lets [`crate::Rotator`] keep a config's usable keys between requests and read
/// every key's health again only after some health changed, instead of once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// The config's counter before this selection incremented it.
    pub counter: u64,
    /// The health version in force when the counter was drawn (see [`RotationState::draw`]).
    pub health_version: u64,
}

/// Key health read together with the health version it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRead {
    /// A health version read before `states`: the states reflect at least every change up to it.
    pub version: u64,
    /// Health of each key, aligned with the ids passed in.
    pub states: Vec<KeyHealth>,
}

/// Live rotation state: round-robin counters, cooldowns and key health.
///
/// An adapter shared by several instances (Redis) makes all of them see one counter per config
/// and each other's cooldowns and failures on their very next read.
///
/// Health versions: [`RotationState::draw`] and [`RotationState::read_health`] answer a version
/// of the health of every key this state holds. Two answers with the same version mean that no
/// key's health changed in between (a cooldown that ends by itself is not a change: callers
/// compare cooldown ends with their clock). Any health write (`cool_down`, `mark_failed`,
/// `mark_ok`, `forget`) that changes a key's health, by this instance or, for a shared adapter,
/// by another, changes the version before its effect can be read; a write that changes nothing
/// may leave it. Versions are only ever compared for equality, and only with versions of the
/// same state object.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RotationState: Send + Sync {
    /// Atomically draws the config's next counter value (as [`RotationState::next_turn`] does)
    /// and answers the current health version, reading no key's health: the cost does not grow
    /// with the pool. An adapter may answer both in one round trip.
    async fn draw(&self, config: ProxyConfigId) -> Result<Draw>;
    /// The health of `keys`, aligned with the ids passed in, with a version read before them.
    async fn read_health(&self, keys: &[ApiKeyId]) -> Result<HealthRead>;
    /// Atomically draws the config's next counter value and reads the health of `keys`; an
    /// adapter may answer both in one round trip. Counters start at 0 and never repeat a value.
    async fn next_turn(&self, config: ProxyConfigId, keys: &[ApiKeyId]) -> Result<Turn>;
    /// The health of `keys`, aligned with the ids passed in. A key never marked reads `Ok`.
    async fn key_states(&self, keys: &[ApiKeyId]) -> Result<Vec<KeyHealth>>;
    /// Cools a key down until `until`, unless it already cools down longer: a cooldown only ever
    /// extends. Returns the cooldown in force afterwards.
    async fn cool_down(&self, key: ApiKeyId, until: DateTime<Utc>) -> Result<DateTime<Utc>>;
    /// Takes a key out of rotation until [`RotationState::mark_ok`].
    async fn mark_failed(&self, key: ApiKeyId) -> Result<()>;
    /// Puts a key back in rotation, clearing failure and cooldown.
    async fn mark_ok(&self, key: ApiKeyId) -> Result<()>;
    /// Drops all state of deleted keys.
    async fn forget(&self, keys: &[ApiKeyId]) -> Result<()>;
    /// Checks the state is reachable.
    async fn ping(&self) -> Result<()>;
}

/// Per-key usage counters, aggregated off the hot path and flushed in batches.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait UsageCounters: Send + Sync {
    /// Records one attempt. Called on the hot path: must not block or do I/O.
    fn record(&self, key: ApiKeyId, event: UsageEvent);
    /// Takes everything recorded since the last successful flush, one delta per key, after
    /// publishing it to the shared tier when there is one. The caller writes the deltas to the
    /// store. On error nothing is lost: the next flush returns it.
    async fn flush(&self) -> Result<Vec<UsageDelta>>;
}

/// Named leases with expiry, so that a background job runs on one instance at a time and is
/// taken over when its holder dies.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes the lease `name` for `holder`, or renews it when `holder` already has it, for
    /// `ttl`. `true` when `holder` holds the lease afterwards.
    async fn acquire(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool>;
    /// Gives the lease up if `holder` has it.
    async fn release(&self, name: &str, holder: &str) -> Result<()>;
}

/// What a config-change subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigNotice {
    /// One config changed.
    Changed(ConfigChange),
    /// Changes may have been missed (the adapter reconnected, or the subscriber fell behind):
    /// drop every cached snapshot.
    Resync,
}

/// A stream of config notices.
pub type ChangeStream = Pin<Box<dyn Stream<Item = ConfigNotice> + Send>>;

/// Tells every instance that a config changed, so each drops its cached snapshot.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ConfigEvents: Send + Sync {
    /// Sends a change to every subscriber, this instance's included.
    async fn publish(&self, change: ConfigChange) -> Result<()>;
    /// Receives every change published after this call, in order, and a
    /// [`ConfigNotice::Resync`] whenever some may have been missed. The stream survives
    /// reconnects of the adapter.
    async fn subscribe(&self) -> Result<ChangeStream>;
}

/// The request log of SPEC §10: one record per proxied request, written in batches off the hot
/// path, read newest first a page at a time, aggregated into time series, and pruned by age and
/// row count in bounded steps.
///
/// Errors: an unreachable store is [`crate::Error::Unavailable`]; messages never carry driver
/// text. Records are kept as [`RequestRecord::normalized`] makes them (time to the millisecond,
/// texts cut to their bounds).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RequestLog: Send + Sync {
    /// Stores a batch of records in a few statements, whatever its size (never over the
    /// database's bound-parameter limit).
    async fn append(&self, records: &[RequestRecord]) -> Result<()>;
    /// One page of the records matching the query's filter, newest first (time, then id, both
    /// descending), after the query's cursor.
    async fn query(&self, query: &LogQuery) -> Result<LogPage>;
    /// The query's window cut into buckets (gap-filled, oldest first) and the top configs,
    /// upstream keys and client keys, over the records matching its filter. The cost must not
    /// grow with the rows' size beyond one scan of the matching records.
    async fn stats(&self, query: &StatsQuery) -> Result<UsageStats>;
    /// The row cap's edge: the newest record beyond the newest `max_rows` (in the log's order),
    /// or `None` when the log holds no more than `max_rows`. One read of the log's time index,
    /// as far as the cap; a prune pass asks once (see [`Retention::cap_edge`]).
    async fn cap_edge(&self, max_rows: u64) -> Result<Option<LogCursor>>;
    /// One bounded prune step: deletes at most `retention.batch` of the records
    /// [`Retention::dooms`], oldest first; returns how many it deleted. Callers repeat it,
    /// pausing between steps, until it deletes fewer than `batch`; no step holds the store for
    /// longer than one small delete, and none reads more than the records it deletes.
    async fn prune(&self, retention: &Retention) -> Result<u64>;
}

/// Durable storage of client keys (SPEC §7). Errors as [`ProxyStore`]'s: a missing key is
/// `NotFound { entity: ClientKey }`, a taken name `Conflict { field: "name" }`.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ClientKeyStore: Send + Sync {
    /// Stores a new key with the digest and prefix of its first secret; usage starts at zero.
    async fn create_client_key(
        &self,
        spec: ClientKeySpec,
        secret: IssuedSecret,
    ) -> Result<ClientKey>;
    /// Every client key, ordered by id.
    async fn list_client_keys(&self) -> Result<Vec<ClientKey>>;
    /// One client key.
    async fn get_client_key(&self, id: ClientKeyId) -> Result<ClientKey>;
    /// Replaces what the admin set; secret and usage stay.
    async fn replace_client_key(&self, id: ClientKeyId, spec: ClientKeySpec) -> Result<ClientKey>;
    /// Replaces the secret: the old one stops matching at once.
    async fn rotate_client_key(&self, id: ClientKeyId, secret: IssuedSecret) -> Result<ClientKey>;
    /// Deletes a key; returns what was deleted.
    async fn delete_client_key(&self, id: ClientKeyId) -> Result<ClientKey>;
    /// Adds aggregated usage (see [`ClientKeyUsage::apply`](crate::ClientKeyUsage::apply));
    /// deltas of keys deleted meanwhile are dropped.
    async fn apply_client_usage(&self, deltas: &[ClientUsageDelta]) -> Result<()>;
}

/// A concurrency slot an admitted request holds, named by the limiter that gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId(pub u64);

/// The answer of [`ClientLimiter::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; give the slot back with [`ClientLimiter::release`] when the exchange ends.
    Admitted(Option<SlotId>),
    /// A limit refuses the request.
    Refused(Refusal),
}

/// The live limits of client keys (the rules of [`crate::client_limits`]): in process, or shared
/// by every instance. Times are passed in, so tests drive them. A slot an instance never gives
/// back (it crashed) is released by the adapter after at most its lease. A shared adapter may
/// admit a key whose only limit is a large `rpm` from request leases
/// ([`crate::client_limits::request_lease_size`], [`crate::client_limits::RequestLease`]);
/// every other key is admitted exactly, request by request.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ClientLimiter: Send + Sync {
    /// Admits one request of `key` under `limits` at `now`; `seed` is the budget the store has
    /// counted in the current period.
    async fn admit(
        &self,
        key: ClientKeyId,
        limits: &ClientLimits,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Result<Admission>;
    /// Gives back a slot of `key`.
    async fn release(&self, key: ClientKeyId, slot: SlotId) -> Result<()>;
    /// Charges tokens an exchange of `key` used, ended at `now`.
    async fn record_tokens(
        &self,
        key: ClientKeyId,
        limits: &ClientLimits,
        tokens: u64,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Cheap reachability check.
    async fn ping(&self) -> Result<()>;
}
