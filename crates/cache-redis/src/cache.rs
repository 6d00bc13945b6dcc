//! [`RedisCache`]: rotation state, usage counters and config events kept in Redis, shared by every
//! instance of the enterprise edition.
//!
//! Layout (all under the namespace prefix): one `INCR` counter per config; one string per cooling
//! key holding the cooldown's end in Unix milliseconds and expiring then (extended atomically by a
//! small Lua script, so a cooldown only ever grows); one hash of failed keys; a health version;
//! one usage hash per key; one pub/sub channel of config changes and one of health changes. Usage
//! is aggregated in process and pushed with pipelined `HINCRBY` on flush. The client reconnects
//! by itself with exponential backoff.
//!
//! Every health change (`cool_down`, `mark_failed`, `mark_ok`, `forget`), in either mode, runs as
//! one Lua script that changes Redis, bumps the health version and publishes the change on
//! `{namespace}:health-changes`, so the version moves with every change made by any instance.
//!
//! With a rotation block size of 1 (the default), `draw` sends the `INCR` and a `GET` of the
//! health version as one pipeline: one round trip of constant size per proxied request, however
//! many keys the config has. `read_health` (the version, then `HMGET`/`MGET` of the keys) runs
//! only after the version moved or a cooldown ended. `next_turn` still sends the `INCR` and the
//! health reads as one pipeline.
//!
//! With a block size `n` above 1 (*block mode*), an instance reserves `n` values of a config's
//! counter at once (`INCRBY counter n`, pipelined with the same health reads) and hands them out
//! one by one, so all but one request in `n` need no round trip:
//! - Every value comes from exactly one `INCRBY`, so across the fleet no value is drawn twice,
//!   and a value taken for a request that is cancelled goes back into the block, so none is lost
//!   (the key split stays within one block per instance of even). See `crate::blocks`.
//! - Refills are single-flight per config: requests that find the block empty wait for the one
//!   refill in flight (which runs in its own task, so a cancelled request cannot abandon a range
//!   Redis already reserved). A value left in the block costs a few uncontended instructions
//!   under short locks, never an await.
//! - Key health comes from a local mirror (`crate::mirror`), filled by reads of Redis and kept
//!   exact by pub/sub: the instance applies its own health changes to its mirror at once, the
//!   others' when their message arrives. `read_health` answers from the mirror when it knows
//!   every key asked about, and otherwise reads them from Redis first; `next_turn` refills read
//!   the health of the keys asked about. While the pub/sub connection is down, health is read
//!   from Redis on every call; after it is back, each key is read again before it is trusted.
//! - The health version `draw` answers is the mirror's generation (it moves whenever a mirrored
//!   answer may change) while pub/sub is up, with no round trip, and the Redis version, read with
//!   a `GET`, while it is down; their low bit keeps the two apart.
//! - `key_states` always reads Redis: it is not on the proxy's hot path.
//! - A consequence: while Redis is unreachable but the pub/sub connection has not noticed yet
//!   (a silent network partition), selections go on from the blocks already reserved until they
//!   run out and the refill fails; health changes fail at once, as without blocks.
//!
//! The client-key limiter (`crate::client_limits`) keeps its per-cache state here too: the
//! concurrency slots held (renewed by `crate::slot_renewal`) and the request leases held
//! (`crate::request_leases`); both die with the cache.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use cache_memory::{NoticeBus, UsageAggregator};
use chrono::{DateTime, Utc};
use domain::{
    ApiKeyId, ChangeStream, ConfigChange, ConfigEvents, Draw, Error, HealthRead, KeyHealth, Leases,
    ProxyConfigId, Result, RotationState, Turn, UsageCounters, UsageDelta, UsageEvent,
};
use fred::{
    clients::SubscriberClient,
    error::{Error as RedisError, ErrorKind},
    prelude::{
        Builder, Client, ClientInterface, ClientLike, Config, EventInterface, HashesInterface,
        KeysInterface, LuaInterface, Pool, PubsubInterface, ReconnectPolicy, TcpConfig, Value,
    },
    types::config::{Server, UnresponsiveConfig},
};
use tokio::{
    sync::{OwnedMutexGuard, oneshot},
    task::JoinHandle,
};

use crate::{
    blocks::{ConfigBlock, ConfigBlocks, Reservation, reserved_range},
    convert::{FAILED, cache_error, from_millis, key_health},
    keys::KeyNames,
    local_clients::LocalClients,
    mirror::{HealthChange, HealthMirror, HealthNotice, KeyMark},
    options::RedisOptions,
    request_leases::HeldLeases,
    slot_renewal::{self, HeldSlots, Renewal},
    subscription::{self, Routes},
    tls,
};

/// `cool_down`: extends a cooldown unless the current one lasts longer, then bumps the health
/// version and announces the cooldown in force, all atomically; answers
/// `{cooldown in force, version}`.
/// `KEYS[1]` = cooldown key, `KEYS[2]` = health version; `ARGV[1]` = requested end (Unix ms),
/// `ARGV[2]` = time to live (ms), `ARGV[3]` = health channel, `ARGV[4]` = key id.
const COOL_DOWN_ANNOUNCED: &str = r"
local current = redis.call('GET', KEYS[1])
local effective = ARGV[1]
if current and tonumber(current) and tonumber(current) >= tonumber(ARGV[1]) then
  effective = current
elseif tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3],
  'cooling ' .. string.format('%d', version) .. ' ' .. ARGV[4] .. ' ' .. effective)
return {tonumber(effective), version}
";

/// `mark_failed`: adds the key to the failed hash, bumps the health version and
/// announces the failure, atomically; answers the version.
/// `KEYS[1]` = health hash, `KEYS[2]` = health version; `ARGV[1]` = key id,
/// `ARGV[2]` = health channel, `ARGV[3]` = the failed marker.
const MARK_FAILED_ANNOUNCED: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[2], 'failed ' .. string.format('%d', version) .. ' ' .. ARGV[1])
return version
";

/// `mark_ok` and `forget`: removes the keys from the failed hash, deletes the other
/// keys given (cooldowns, usage), bumps the health version and announces the keys as ok,
/// atomically; answers the version.
/// `KEYS[1]` = health hash, `KEYS[2]` = health version, `KEYS[3..]` = keys to delete;
/// `ARGV[1]` = health channel, `ARGV[2..]` = key ids.
const CLEAR_ANNOUNCED: &str = r"
local ids = {}
for i = 2, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
redis.call('HDEL', KEYS[1], unpack(ids))
local doomed = {}
for i = 3, #KEYS do
  doomed[#doomed + 1] = KEYS[i]
end
if #doomed > 0 then
  redis.call('DEL', unpack(doomed))
end
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1],
  'ok ' .. string.format('%d', version) .. ' ' .. table.concat(ids, ' '))
return version
";

/// `ping`: reads the health version as the other scripts reach it. `KEYS[1]` = health version.
const PROBE: &str = "return redis.call('GET', KEYS[1])";

/// Keys per command when deleting or flushing many keys at once.
const BATCH: usize = 1_000;

/// The shortest client slot lease accepted.
const MIN_SLOT_LEASE: Duration = Duration::from_millis(100);

/// Reconnect backoff: first delay, longest delay (ms), growth factor; retried forever.
const RECONNECT_MIN_MS: u32 = 50;
const RECONNECT_MAX_MS: u32 = 5_000;

/// Redis-backed [`RotationState`], [`UsageCounters`] and [`ConfigEvents`]. Cheap to clone; every
/// clone shares the connections.
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    slot_lease: Duration,
    /// Client-key concurrency slots handed out and not given back, which `renewal` renews.
    held_slots: Arc<HeldSlots>,
    /// The task renewing `held_slots`' leases; aborted on drop and on `quit`.
    renewal: JoinHandle<()>,
    /// Requests of client keys' `rpm` granted ahead of time (request leases).
    request_leases: HeldLeases,
    pool: Pool,
    /// Each thread's own command client, used before the pool (see `crate::local_clients`).
    local: Arc<LocalClients>,
    subscriber: SubscriberClient,
    names: KeyNames,
    usage: UsageAggregator,
    notices: NoticeBus,
    /// `Some` in block mode (a rotation block size above 1).
    blocks: Option<Arc<BlockMode>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The state of block mode: reserved counter values per config, and the health mirror.
#[derive(Debug)]
struct BlockMode {
    /// Values reserved per refill.
    size: u32,
    configs: ConfigBlocks,
    mirror: Arc<HealthMirror>,
}

/// Pub/sub messages the subscriber may hold for us before the oldest are dropped (which costs a
/// resync). The client's default (32) is plenty for config changes alone; block mode also gets
/// a message per health change, which can come in bursts (a provider rejecting every key).
const BLOCK_MODE_MESSAGE_BACKLOG: usize = 1_024;

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.renewal.abort();
        // Close the connections politely when a runtime is still there to do it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (pool, subscriber) = (self.pool.clone(), self.subscriber.clone());
            let local = self.local.close();
            runtime.spawn(async move {
                let _ = pool.quit().await;
                let _ = subscriber.quit().await;
                for client in local {
                    let _ = client.quit().await;
                }
            });
        }
    }
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("channel", &self.inner.names.changes())
            .field("pool_size", &self.inner.pool.size())
            .field(
                "rotation_block_size",
                &self.inner.blocks.as_ref().map_or(1, |blocks| blocks.size),
            )
            .finish_non_exhaustive()
    }
}

fn redis(error: RedisError) -> Error {
    cache_error(&error)
}

fn invalid(message: &str) -> Error {
    Error::cache(format!("invalid redis settings: {message}"))
}

/// Waits for a client's first connection, at most `limit`. Over TLS, a handshake the client
/// refused (a certificate that does not verify) looks like a connection that failed, so the
/// message names the certificate too.
async fn init(client: &impl ClientLike, limit: Duration, tls: bool) -> Result<()> {
    match tokio::time::timeout(limit, client.init()).await {
        Ok(Ok(_connection_task)) => Ok(()),
        Ok(Err(error)) if tls && matches!(error.kind(), ErrorKind::IO | ErrorKind::Tls) => {
            let _ = redis(error);
            Err(Error::cache(
                "redis is unreachable over TLS or its certificate does not verify; check REDIS_URL, \
                 that Redis is running, and REDIS_TLS_CA_CERT_FILE for a private certificate authority",
            ))
        }
        Ok(Err(error)) => Err(redis(error)),
        Err(_) => Err(Error::cache(
            "redis did not accept a connection in time; check REDIS_URL and that Redis is running",
        )),
    }
}

/// The client's settings from the URL (whose scheme picks standalone, Cluster or Sentinel, and
/// TLS), with the trusted certificate authorities of TLS set from the options.
fn client_config(options: &RedisOptions) -> Result<Config> {
    // Every scheme the client knows starts with "redis" (rediss, redis-cluster, ...).
    let mut config = Some(&options.url)
        .filter(|url| url.starts_with("redis"))
        .and_then(|url| Config::from_url(url).ok())
        .ok_or_else(|| {
            invalid(
                "REDIS_URL must be a redis://, rediss://, redis-cluster://, rediss-cluster://, \
                 redis-sentinel:// or rediss-sentinel:// URL",
            )
        })?;
    match (&mut config.tls, &options.tls_ca_cert_file) {
        (Some(tls), ca_file) => *tls = tls::connector(ca_file.as_deref())?.into(),
        (None, Some(_)) => {
            return Err(invalid(
                "REDIS_TLS_CA_CERT_FILE is set but REDIS_URL does not use TLS; use rediss://",
            ));
        }
        (None, None) => {}
    }
    Ok(config)
}

impl RedisCache {
    /// Connects the command pool and the pub/sub connection and subscribes to config changes
    /// (and, in block mode, to health changes). Must run inside a tokio runtime, which then
    /// drives the connections and the subscription.
    ///
    /// # Errors
    /// `Unavailable { Cache }` when the options are invalid (empty namespace, pool size 0,
    /// rotation block size 0, a bad URL) or Redis cannot be reached within `connect_timeout`.
    pub async fn connect(options: RedisOptions) -> Result<RedisCache> {
        if options.namespace.is_empty()
            || options
                .namespace
                .contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            // Braces would change the hash tag that keeps the namespace in one cluster slot.
            return Err(invalid(
                "the namespace must be non-empty, without spaces or braces",
            ));
        }
        if options.pool_size == 0 {
            return Err(invalid("the pool size must be at least 1"));
        }
        if options.rotation_block_size == 0 {
            return Err(invalid(
                "the rotation block size must be at least 1 (1 reserves no blocks)",
            ));
        }
        if options.client_slot_lease < MIN_SLOT_LEASE {
            // Held slots are renewed every third of a lease: shorter would be a busy loop.
            return Err(invalid("the client slot lease must be at least 100 ms"));
        }
        let block_mode = options.rotation_block_size > 1;
        let config = client_config(&options)?;
        let tls = config.tls.is_some();
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|connection| {
                connection.connection_timeout = options.connect_timeout;
                connection.internal_command_timeout = options.connect_timeout;
                connection.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                };
                // A connection that stops answering (half-open TCP) is dropped and redialled.
                connection.unresponsive = UnresponsiveConfig {
                    max_timeout: Some((options.command_timeout * 2).max(Duration::from_secs(1))),
                    interval: Duration::from_millis(500),
                };
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = options.command_timeout;
                if block_mode {
                    performance.broadcast_channel_capacity = performance
                        .broadcast_channel_capacity
                        .max(BLOCK_MODE_MESSAGE_BACKLOG);
                }
            })
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                RECONNECT_MIN_MS,
                RECONNECT_MAX_MS,
                2,
            ));
        let pool = builder.build_pool(options.pool_size).map_err(redis)?;
        let subscriber = builder.build_subscriber_client().map_err(redis)?;
        let limit = options.connect_timeout * 2;
        init(&pool, limit, tls).await?;
        if let Err(error) = init(&subscriber, limit, tls).await {
            let _ = pool.quit().await;
            return Err(error);
        }

        let names = KeyNames::new(&options.namespace);
        let notices = NoticeBus::default();
        let blocks = block_mode.then(|| {
            Arc::new(BlockMode {
                size: options.rotation_block_size,
                configs: ConfigBlocks::default(),
                mirror: Arc::new(HealthMirror::default()),
            })
        });
        let routes = Routes {
            changes: names.changes(),
            notices: notices.clone(),
            health: blocks
                .as_ref()
                .map(|blocks| (names.health_changes(), blocks.mirror.clone())),
        };
        // Listen before subscribing, so no message, failure or reconnect slips through in
        // between. Failures matter only to the health mirror.
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        let errors = block_mode.then(|| subscriber.error_rx());
        if let Err(error) = subscription::subscribe_confirmed(&subscriber, routes.channels()).await
        {
            let _ = pool.quit().await;
            let _ = subscriber.quit().await;
            return Err(redis(error));
        }
        let tasks = vec![
            tokio::spawn(subscription::forward_messages(messages, routes.clone())),
            tokio::spawn(subscription::resubscribe_on_reconnect(
                subscriber.clone(),
                reconnects,
                errors,
                routes,
            )),
        ];
        tracing::info!(
            namespace = %options.namespace,
            pool_size = options.pool_size,
            rotation_block_size = options.rotation_block_size,
            "connected to redis"
        );
        let held_slots = Arc::new(HeldSlots::default());
        let renewal = tokio::spawn(slot_renewal::renew_held_slots(Renewal {
            pool: pool.clone(),
            names: names.clone(),
            held: held_slots.clone(),
            lease: options.client_slot_lease,
        }));
        Ok(RedisCache {
            inner: Arc::new(Inner {
                slot_lease: options.client_slot_lease,
                held_slots,
                renewal,
                request_leases: HeldLeases::default(),
                pool,
                local: LocalClients::new(builder),
                subscriber,
                names,
                usage: UsageAggregator::new(),
                notices,
                blocks,
                tasks,
            }),
        })
    }

    /// This cache's connections (commands and pub/sub), each as its node and the `CLIENT ID`
    /// that node gave it at the last (re)connect, to find them in that node's `CLIENT LIST`.
    /// The node is part of the identity: each node of a cluster numbers its clients on its own,
    /// so two nodes can hand out the same id.
    pub fn connection_ids(&self) -> Vec<(Server, i64)> {
        let pool = self.inner.pool.clients().iter().map(|c| c.connection_ids());
        let local = self.inner.local.live();
        pool.chain(local.iter().map(|c| c.connection_ids()))
            .chain(std::iter::once(self.inner.subscriber.connection_ids()))
            .flatten()
            .collect()
    }

    /// Closes every connection. Calls made afterwards fail. The concurrency slots still held
    /// are no longer renewed: they stop counting when their lease ends.
    ///
    /// # Errors
    /// `Unavailable { Cache }` when Redis could not be told.
    pub async fn quit(&self) -> Result<()> {
        // Stopped first, so no renewal fails on the closed connections and logs an outage.
        self.inner.renewal.abort();
        for client in self.inner.local.close() {
            client.quit().await.map_err(redis)?;
        }
        self.inner.pool.quit().await.map_err(redis)?;
        self.inner.subscriber.quit().await.map_err(redis)
    }

    /// This thread's own client when it is connected, else a connected one of the pool.
    fn client(&self) -> Client {
        self.inner
            .local
            .current()
            .unwrap_or_else(|| self.inner.pool.next_connected().clone())
    }

    /// A connected command client (the client-key limiter's scripts).
    pub(crate) fn command_client(&self) -> Client {
        self.client()
    }

    /// The key names of this cache's namespace.
    pub(crate) fn names(&self) -> &KeyNames {
        &self.inner.names
    }

    /// The lease of a client key's concurrency slot.
    pub(crate) fn slot_lease(&self) -> Duration {
        self.inner.slot_lease
    }

    /// The client-key concurrency slots this cache handed out and has not been given back.
    pub(crate) fn held_slots(&self) -> &HeldSlots {
        &self.inner.held_slots
    }

    /// The request leases this cache holds.
    pub(crate) fn request_leases(&self) -> &HeldLeases {
        &self.inner.request_leases
    }

    /// The health of `keys` as of `now`, in one round trip.
    async fn read_states(&self, keys: &[ApiKeyId], now: DateTime<Utc>) -> Result<Vec<KeyHealth>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.client().pipeline();
        self.queue_state_reads(&pipeline, keys).await?;
        let replies: Vec<Value> = pipeline.all().await.map_err(redis)?;
        let [failed, cooling] = <[Value; 2]>::try_from(replies)
            .map_err(|_| Error::Internal("redis answered the wrong number of replies".into()))?;
        states_from(keys, failed, cooling, now)
    }

    /// Queues `HMGET health ids` and `MGET cooldowns` on a pipeline.
    async fn queue_state_reads(
        &self,
        pipeline: &fred::clients::Pipeline<Client>,
        keys: &[ApiKeyId],
    ) -> Result<()> {
        let names = &self.inner.names;
        let fields: Vec<String> = keys.iter().map(ToString::to_string).collect();
        let cooldowns: Vec<String> = keys.iter().map(|&k| names.cooldown(k)).collect();
        let () = pipeline
            .hmget(names.health(), fields)
            .await
            .map_err(redis)?;
        let () = pipeline.mget(cooldowns).await.map_err(redis)?;
        Ok(())
    }

    /// Block mode's `next_turn`: a value from the config's block and health from the mirror when
    /// both are there; otherwise reads health from Redis and refills the block as needed.
    async fn next_turn_from_block(
        &self,
        blocks: &Arc<BlockMode>,
        config: ProxyConfigId,
        keys: &[ApiKeyId],
    ) -> Result<Turn> {
        let block = blocks.configs.get(config);
        loop {
            // The hot path: no await, a few short locks.
            if let Some(states) = blocks.mirror.fresh_states(keys, Utc::now()) {
                if let Some(counter) = block.take() {
                    return Ok(Turn { counter, states });
                }
            } else if !blocks.mirror.is_attached() && !block.is_empty() {
                // Pub/sub is down, so the mirror may be missing changes: health is read from
                // Redis on every call (concurrently, as with block size 1). The value is taken
                // only after the read, so a request cancelled during it takes none.
                let states = self.sync(blocks, None, keys).await?;
                if let Some(counter) = block.take() {
                    return Ok(Turn { counter, states });
                }
            }

            let single_flight = block.lock_refill().await;
            // The refill this request waited for may have done what it needs.
            if let Some(states) = blocks.mirror.fresh_states(keys, Utc::now()) {
                if let Some(counter) = block.take() {
                    return Ok(Turn { counter, states });
                }
            } else if !blocks.mirror.is_attached() && !block.is_empty() {
                // Values are left: read health above, without holding up the others.
                continue;
            }
            // The block is empty, or the mirror does not know some key (new, or not read since
            // pub/sub came back): one round trip reserves a block if empty and reads health.
            let (mut reservation, reply) = Reservation::new(block.clone());
            let refill = tokio::spawn(self.clone().refill(
                blocks.clone(),
                config,
                keys.to_vec(),
                single_flight,
                reply,
            ));
            let states = refill
                .await
                .map_err(|e| Error::Internal(format!("counter block refill stopped: {e}")))??;
            if let Some(counter) = reservation.take() {
                return Ok(Turn { counter, states });
            }
            // Other requests took every value while health was being read: start over.
        }
    }

    /// One refill of a config's block (a new range only when the block is empty; the health of
    /// `keys` always), holding the block's single-flight lock until done. Runs in its own task,
    /// so a range Redis reserved always reaches the block, even when the request that started
    /// the refill is cancelled. Takes the first value for that request (`reply`).
    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(config = %config, keys = keys.len(), reserve = tracing::field::Empty)
    )]
    async fn refill(
        self,
        blocks: Arc<BlockMode>,
        config: ProxyConfigId,
        keys: Vec<ApiKeyId>,
        single_flight: OwnedMutexGuard<()>,
        reply: oneshot::Sender<u64>,
    ) -> Result<Vec<KeyHealth>> {
        let _single_flight = single_flight;
        let block = blocks.configs.get(config);
        // Under the lock, only this task adds values: an empty block stays empty until it does.
        let reserve = block.is_empty();
        tracing::Span::current().record("reserve", reserve);
        let states = self
            .sync(&blocks, reserve.then_some((config, block.as_ref())), &keys)
            .await?;
        block.reserve_for(reply);
        Ok(states)
    }

    /// Block mode's one round trip: `INCRBY` of the config's counter by the block size when
    /// `reserve` is given (the range goes into the block as soon as Redis answers, before
    /// anything else can fail), and the health of `keys` with the health version read before it,
    /// applied to the mirror. Answers the health of `keys` as mirrored afterwards.
    async fn sync(
        &self,
        blocks: &BlockMode,
        reserve: Option<(ProxyConfigId, &ConfigBlock)>,
        keys: &[ApiKeyId],
    ) -> Result<Vec<KeyHealth>> {
        if keys.is_empty() {
            if let Some((config, block)) = reserve {
                let after: i64 = self
                    .client()
                    .incr_by(self.inner.names.counter(config), i64::from(blocks.size))
                    .await
                    .map_err(redis)?;
                block.add(reserved_range(after, blocks.size)?);
            }
            return Ok(Vec::new());
        }
        self.sync_versioned(blocks, reserve, keys)
            .await
            .map(|(_, states)| states)
    }

    /// [`RedisCache::sync`] for at least one key, also answering the health version Redis
    /// answered before reading them.
    async fn sync_versioned(
        &self,
        blocks: &BlockMode,
        reserve: Option<(ProxyConfigId, &ConfigBlock)>,
        keys: &[ApiKeyId],
    ) -> Result<(u64, Vec<KeyHealth>)> {
        let names = &self.inner.names;
        let size = i64::from(blocks.size);
        let ticket = blocks.mirror.ticket();
        let pipeline = self.client().pipeline();
        if let Some((config, _)) = reserve {
            let () = pipeline
                .incr_by(names.counter(config), size)
                .await
                .map_err(redis)?;
        }
        // The version first: the reads after it on this connection reflect every change up to it.
        let () = pipeline.get(names.health_version()).await.map_err(redis)?;
        self.queue_state_reads(&pipeline, keys).await?;
        // Each reply on its own, so that the range is kept even when a later reply is an error.
        let mut replies = pipeline.try_all::<Value>().await.into_iter();
        let now = Utc::now();
        let mut next = || match replies.next() {
            Some(reply) => reply.map_err(redis),
            None => Err(Error::Internal(
                "redis answered the wrong number of replies".into(),
            )),
        };
        if let Some((_, block)) = reserve {
            let after: i64 = next()?.convert().map_err(redis)?;
            block.add(reserved_range(after, blocks.size)?);
        }
        let version: Option<i64> = next()?.convert().map_err(redis)?;
        let version = health_version(version.unwrap_or(0))?;
        let marks = marks_from(keys, next()?, next()?)?;
        blocks.mirror.apply_read(ticket, version, keys, &marks);
        Ok((version, blocks.mirror.states(keys, now)))
    }

    /// The Redis health version (0 before the first health change).
    async fn shared_health_version(&self) -> Result<u64> {
        let version: Option<i64> = self
            .client()
            .get(self.inner.names.health_version())
            .await
            .map_err(redis)?;
        health_version(version.unwrap_or(0))
    }

    /// Block mode's health version: the mirror's generation while pub/sub keeps it exact,
    /// otherwise the Redis version (one round trip); see [`BlockVersion`].
    async fn block_health_version(&self, blocks: &BlockMode) -> Result<u64> {
        match blocks.mirror.generation() {
            Some(generation) => Ok(BlockVersion::Mirror(generation).tagged()),
            None => Ok(BlockVersion::Shared(self.shared_health_version().await?).tagged()),
        }
    }

    /// Block mode's `read_health`: from the mirror when it knows every key and pub/sub is up,
    /// otherwise one read of Redis that also refreshes the mirror.
    async fn read_health_from_block(
        &self,
        blocks: &BlockMode,
        keys: &[ApiKeyId],
    ) -> Result<HealthRead> {
        let mirrored = |blocks: &BlockMode| {
            blocks
                .mirror
                .versioned_states(keys, Utc::now())
                .map(|(generation, states)| HealthRead {
                    version: BlockVersion::Mirror(generation).tagged(),
                    states,
                })
        };
        if let Some(read) = mirrored(blocks) {
            return Ok(read);
        }
        if keys.is_empty() {
            // Detached: nothing to read but the version.
            return Ok(HealthRead {
                version: self.block_health_version(blocks).await?,
                states: Vec::new(),
            });
        }
        let (version, states) = self.sync_versioned(blocks, None, keys).await?;
        // The read made every key known: answer at the mirror's generation if pub/sub is up.
        Ok(mirrored(blocks).unwrap_or(HealthRead {
            version: BlockVersion::Shared(version).tagged(),
            states,
        }))
    }

    /// Block mode's health change: runs `script` (which changes Redis, bumps the health version,
    /// announces the change and answers the version) and applies `change` to the mirror at once,
    /// before any other instance can have heard of it.
    async fn announce(
        &self,
        script: &'static str,
        keys: Vec<String>,
        args: Vec<String>,
        change: HealthChange,
    ) -> Result<()> {
        let version: i64 = self
            .client()
            .eval(script, keys, args)
            .await
            .map_err(redis)?;
        self.mirror_change(HealthNotice {
            version: health_version(version)?,
            change,
        });
        Ok(())
    }

    /// In block mode, applies this instance's own health change to the mirror at once.
    fn mirror_change(&self, notice: HealthNotice) {
        if let Some(blocks) = &self.inner.blocks {
            blocks.mirror.apply(&notice);
        }
    }

    /// `CLEAR_ANNOUNCED` over `keys`, deleting `doomed` too.
    async fn clear_announced(&self, keys: &[ApiKeyId], doomed: Vec<String>) -> Result<()> {
        let names = &self.inner.names;
        let script_keys = [names.health(), names.health_version()]
            .into_iter()
            .chain(doomed)
            .collect();
        let args = std::iter::once(names.health_changes())
            .chain(keys.iter().map(ToString::to_string))
            .collect();
        let change = HealthChange::Ok {
            keys: keys.to_vec(),
        };
        self.announce(CLEAR_ANNOUNCED, script_keys, args, change)
            .await
    }
}

/// Block mode's two kinds of health version, kept apart by the low bit so they never collide:
/// the mirror's generation while pub/sub keeps the mirror exact, and the Redis version while it
/// does not (then health is read from Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockVersion {
    Mirror(u64),
    Shared(u64),
}

impl BlockVersion {
    /// The version as `RotationState` answers it. Neither count gets anywhere near 2^63.
    fn tagged(self) -> u64 {
        match self {
            BlockVersion::Mirror(generation) => generation << 1,
            BlockVersion::Shared(version) => (version << 1) | 1,
        }
    }
}

/// A health version as Redis answered it.
fn health_version(version: i64) -> Result<u64> {
    u64::try_from(version)
        .map_err(|_| Error::Internal(format!("redis health version is corrupt: {version}")))
}

/// Decodes the replies of `HMGET` and `MGET` into one mark per key, for the mirror.
fn marks_from(keys: &[ApiKeyId], failed: Value, cooling: Value) -> Result<Vec<KeyMark>> {
    per_key(keys, failed, cooling, KeyMark::from_replies)
}

/// Decodes the replies of `HMGET` and `MGET` into one health per key.
fn states_from(
    keys: &[ApiKeyId],
    failed: Value,
    cooling: Value,
    now: DateTime<Utc>,
) -> Result<Vec<KeyHealth>> {
    per_key(keys, failed, cooling, |failed, cooling| {
        key_health(failed, cooling, now)
    })
}

/// Pairs the `HMGET` (failed) and `MGET` (cooldown) replies key by key through `decode`.
fn per_key<T>(
    keys: &[ApiKeyId],
    failed: Value,
    cooling: Value,
    decode: impl Fn(Option<&str>, Option<&str>) -> T,
) -> Result<Vec<T>> {
    let failed: Vec<Option<String>> = strings(failed)?;
    let cooling: Vec<Option<String>> = strings(cooling)?;
    if failed.len() != keys.len() || cooling.len() != keys.len() {
        return Err(Error::Internal(
            "redis answered for the wrong number of keys".into(),
        ));
    }
    Ok(failed
        .iter()
        .zip(&cooling)
        .map(|(failed, cooling)| decode(failed.as_deref(), cooling.as_deref()))
        .collect())
}

/// An array reply of strings or nils.
fn strings(value: Value) -> Result<Vec<Option<String>>> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|item| item.convert::<Option<String>>().map_err(redis))
            .collect(),
        other => Ok(vec![other.convert::<Option<String>>().map_err(redis)?]),
    }
}

/// The counter value before an `INCR` that answered `after`.
fn before_increment(after: i64) -> Result<u64> {
    after
        .checked_sub(1)
        .and_then(|before| u64::try_from(before).ok())
        .ok_or_else(|| Error::Internal(format!("redis counter is corrupt: {after}")))
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl RotationState for RedisCache {
    #[tracing::instrument(level = "debug", skip_all, fields(config = %config, keys = keys.len()))]
    async fn next_turn(&self, config: ProxyConfigId, keys: &[ApiKeyId]) -> Result<Turn> {
        if let Some(blocks) = &self.inner.blocks {
            return self.next_turn_from_block(blocks, config, keys).await;
        }
        let counter_key = self.inner.names.counter(config);
        if keys.is_empty() {
            let after: i64 = self.client().incr(counter_key).await.map_err(redis)?;
            return Ok(Turn {
                counter: before_increment(after)?,
                states: Vec::new(),
            });
        }
        let pipeline = self.client().pipeline();
        let () = pipeline.incr(counter_key).await.map_err(redis)?;
        self.queue_state_reads(&pipeline, keys).await?;
        let replies: Vec<Value> = pipeline.all().await.map_err(redis)?;
        let now = Utc::now();
        let [after, failed, cooling] = <[Value; 3]>::try_from(replies)
            .map_err(|_| Error::Internal("redis answered the wrong number of replies".into()))?;
        let after: i64 = after.convert().map_err(redis)?;
        Ok(Turn {
            counter: before_increment(after)?,
            states: states_from(keys, failed, cooling, now)?,
        })
    }

    /// Without blocks: `INCR` of the counter and `GET` of the health version, one round trip.
    /// In block mode: a value of the block (a round trip per block) and the mirror's generation
    /// (no round trip while pub/sub is up).
    #[tracing::instrument(level = "debug", skip_all, fields(config = %config))]
    async fn draw(&self, config: ProxyConfigId) -> Result<Draw> {
        if let Some(blocks) = &self.inner.blocks {
            let turn = self.next_turn_from_block(blocks, config, &[]).await?;
            return Ok(Draw {
                counter: turn.counter,
                health_version: self.block_health_version(blocks).await?,
            });
        }
        let names = &self.inner.names;
        let pipeline = self.client().pipeline();
        let () = pipeline.incr(names.counter(config)).await.map_err(redis)?;
        let () = pipeline.get(names.health_version()).await.map_err(redis)?;
        let (after, version): (i64, Option<i64>) = pipeline.all().await.map_err(redis)?;
        Ok(Draw {
            counter: before_increment(after)?,
            health_version: health_version(version.unwrap_or(0))?,
        })
    }

    /// Without blocks: the health version, then the keys' health, one round trip. In block
    /// mode: from the mirror when it knows every key.
    #[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len()))]
    async fn read_health(&self, keys: &[ApiKeyId]) -> Result<HealthRead> {
        if let Some(blocks) = &self.inner.blocks {
            return self.read_health_from_block(blocks, keys).await;
        }
        if keys.is_empty() {
            return Ok(HealthRead {
                version: self.shared_health_version().await?,
                states: Vec::new(),
            });
        }
        let pipeline = self.client().pipeline();
        // The version first: the reads after it on this connection reflect every change up to it.
        let () = pipeline
            .get(self.inner.names.health_version())
            .await
            .map_err(redis)?;
        self.queue_state_reads(&pipeline, keys).await?;
        let replies: Vec<Value> = pipeline.all().await.map_err(redis)?;
        let now = Utc::now();
        let [version, failed, cooling] = <[Value; 3]>::try_from(replies)
            .map_err(|_| Error::Internal("redis answered the wrong number of replies".into()))?;
        let version: Option<i64> = version.convert().map_err(redis)?;
        Ok(HealthRead {
            version: health_version(version.unwrap_or(0))?,
            states: states_from(keys, failed, cooling, now)?,
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len()))]
    async fn key_states(&self, keys: &[ApiKeyId]) -> Result<Vec<KeyHealth>> {
        self.read_states(keys, Utc::now()).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn cool_down(&self, key: ApiKeyId, until: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let until_ms = until.timestamp_millis();
        let ttl_ms = until_ms - Utc::now().timestamp_millis();
        let names = &self.inner.names;
        let reply: Vec<i64> = self
            .client()
            .eval(
                COOL_DOWN_ANNOUNCED,
                vec![names.cooldown(key), names.health_version()],
                vec![
                    until_ms.to_string(),
                    ttl_ms.to_string(),
                    names.health_changes(),
                    key.to_string(),
                ],
            )
            .await
            .map_err(redis)?;
        let [effective, version] = <[i64; 2]>::try_from(reply)
            .map_err(|_| Error::Internal("redis answered the wrong number of replies".into()))?;
        self.mirror_change(HealthNotice {
            version: health_version(version)?,
            change: HealthChange::Cooling {
                key,
                until_ms: effective,
            },
        });
        from_millis(effective)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn mark_failed(&self, key: ApiKeyId) -> Result<()> {
        let names = &self.inner.names;
        self.announce(
            MARK_FAILED_ANNOUNCED,
            vec![names.health(), names.health_version()],
            vec![key.to_string(), names.health_changes(), FAILED.to_owned()],
            HealthChange::Failed { key },
        )
        .await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn mark_ok(&self, key: ApiKeyId) -> Result<()> {
        self.clear_announced(&[key], vec![self.inner.names.cooldown(key)])
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len()))]
    async fn forget(&self, keys: &[ApiKeyId]) -> Result<()> {
        self.inner.usage.forget(keys);
        let names = &self.inner.names;
        for chunk in keys.chunks(BATCH) {
            let doomed: Vec<String> = chunk
                .iter()
                .flat_map(|&k| [names.cooldown(k), names.usage(k)])
                .collect();
            self.clear_announced(chunk, doomed).await?;
        }
        Ok(())
    }

    /// Runs a read-only script on the namespace's hash slot rather than a `PING`: it fails
    /// whenever the shared-state operations would, e.g. on one node of a Redis Cluster named by
    /// a standalone `redis://` URL (`MOVED`), or for an ACL user that may not run scripts.
    async fn ping(&self) -> Result<()> {
        let _: Value = self
            .client()
            .eval(
                PROBE,
                vec![self.inner.names.health_version()],
                Vec::<String>::new(),
            )
            .await
            .map_err(redis)?;
        Ok(())
    }
}

#[async_trait]
impl UsageCounters for RedisCache {
    fn record(&self, key: ApiKeyId, event: UsageEvent) {
        self.inner.usage.record(key, &event);
    }

    /// Publishes the deltas to the per-key usage hashes in pipelines of 1 000 keys, then returns
    /// them. On error every delta is kept for the next flush; the hashes of batches that did go
    /// through then count them twice, but the store (fed by the returned deltas) never does.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn flush(&self) -> Result<Vec<UsageDelta>> {
        let deltas = self.inner.usage.take();
        let names = &self.inner.names;
        for chunk in deltas.chunks(BATCH) {
            let pipeline = self.client().pipeline();
            let mut queued = Ok(());
            for delta in chunk {
                queued = queue_usage(&pipeline, names, delta).await;
                if queued.is_err() {
                    break;
                }
            }
            let sent = match queued {
                Ok(()) => pipeline.all::<Value>().await.map(drop),
                Err(error) => Err(error),
            };
            if let Err(error) = sent {
                self.inner.usage.restore(&deltas);
                return Err(redis(error));
            }
        }
        Ok(deltas)
    }
}

/// Queues one key's delta: counters by `HINCRBY`, the latest use by `HSET`.
async fn queue_usage(
    pipeline: &fred::clients::Pipeline<Client>,
    names: &KeyNames,
    delta: &UsageDelta,
) -> std::result::Result<(), RedisError> {
    let key = names.usage(delta.key_id);
    let () = pipeline
        .hincrby(key.as_str(), "requests", saturating_i64(delta.requests))
        .await?;
    if delta.failures > 0 {
        let () = pipeline
            .hincrby(key.as_str(), "failures", saturating_i64(delta.failures))
            .await?;
    }
    if let Some(at) = delta.last_used_at {
        let status = delta.last_status.map(|s| s.to_string()).unwrap_or_default();
        let () = pipeline
            .hset(
                key.as_str(),
                [
                    ("last_used_at", at.timestamp_millis().to_string()),
                    ("last_status", status),
                ],
            )
            .await?;
    }
    Ok(())
}

#[async_trait]
impl ConfigEvents for RedisCache {
    #[tracing::instrument(level = "debug", skip_all, fields(config = %change.config_id))]
    async fn publish(&self, change: ConfigChange) -> Result<()> {
        let payload = serde_json::to_string(&change)
            .map_err(|e| Error::Internal(format!("config change does not serialise: {e}")))?;
        let _receivers: i64 = self
            .client()
            .publish(self.inner.names.changes(), payload)
            .await
            .map_err(redis)?;
        Ok(())
    }

    async fn subscribe(&self) -> Result<ChangeStream> {
        Ok(self.inner.notices.subscribe())
    }
}

/// Takes the lease when it is free or already ours, renewing its expiry; 1 when held after.
const ACQUIRE_LEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Deletes the lease only when it is ours.
const RELEASE_LEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

#[async_trait]
impl Leases for RedisCache {
    #[tracing::instrument(level = "debug", skip(self))]
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let held: i64 = self
            .client()
            .eval(
                ACQUIRE_LEASE,
                vec![self.inner.names.lease(name)],
                vec![holder.to_owned(), ttl_ms.to_string()],
            )
            .await
            .map_err(redis)?;
        Ok(held == 1)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn release(&self, name: &str, holder: &str) -> Result<()> {
        let _: i64 = self
            .client()
            .eval(
                RELEASE_LEASE,
                vec![self.inner.names.lease(name)],
                vec![holder.to_owned()],
            )
            .await
            .map_err(redis)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_read_the_value_before_the_increment() {
        assert_eq!(before_increment(1).ok(), Some(0));
        assert_eq!(before_increment(42).ok(), Some(41));
        assert!(before_increment(0).is_err(), "INCR never answers 0");
    }

    #[test]
    fn health_replies_decode_in_the_order_asked() {
        let now = Utc::now();
        let later = (now + chrono::TimeDelta::seconds(9)).timestamp_millis();
        let keys = [ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)];
        let failed = Value::Array(vec![Value::Null, Value::from(FAILED), Value::Null]);
        let cooling = Value::Array(vec![
            Value::from(later.to_string().as_str()),
            Value::Null,
            Value::Null,
        ]);
        let states = states_from(&keys, failed, cooling, now).ok();
        let until = from_millis(later).ok();
        assert_eq!(
            states,
            until.map(|until| vec![
                KeyHealth::Cooling { until },
                KeyHealth::Failed,
                KeyHealth::Ok
            ])
        );
    }

    #[test]
    fn a_short_reply_is_an_internal_error() {
        let keys = [ApiKeyId(1), ApiKeyId(2)];
        let one = || Value::Array(vec![Value::Null]);
        assert!(matches!(
            states_from(&keys, one(), one(), Utc::now()),
            Err(Error::Internal(_))
        ));
    }
}
