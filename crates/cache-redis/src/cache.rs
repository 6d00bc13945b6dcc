//! [`RedisCache`]: rotation state, usage counters and config events kept in Redis, shared by every
//! instance of the enterprise edition.
//!
//! Layout (all under the namespace prefix): one `INCR` counter per config; one string per cooling
//! key holding the cooldown's end in Unix milliseconds and expiring then (extended atomically by a
//! small Lua script, so a cooldown only ever grows); one hash of failed keys; one usage hash per
//! key; one pub/sub channel of config changes. `next_turn` sends the `INCR` and the health reads
//! as one pipeline: one round trip. Usage is aggregated in process and pushed with pipelined
//! `HINCRBY` on flush. The client reconnects by itself with exponential backoff.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use cache_memory::{NoticeBus, UsageAggregator};
use chrono::{DateTime, Utc};
use domain::{
    ApiKeyId, ChangeStream, ConfigChange, ConfigEvents, Error, KeyHealth, Leases, ProxyConfigId,
    Result, RotationState, Turn, UsageCounters, UsageDelta, UsageEvent,
};
use fred::{
    clients::SubscriberClient,
    error::Error as RedisError,
    prelude::{
        Builder, Client, ClientInterface, ClientLike, Config, EventInterface, HashesInterface,
        KeysInterface, LuaInterface, Pool, PubsubInterface, ReconnectPolicy, TcpConfig, Value,
    },
    types::config::UnresponsiveConfig,
};
use tokio::task::JoinHandle;

use crate::{
    convert::{FAILED, cache_error, from_millis, key_health},
    keys::KeyNames,
    options::RedisOptions,
    subscription,
};

/// Extends a cooldown unless the current one lasts longer; answers the cooldown in force.
/// KEYS[1] = cooldown key; ARGV[1] = requested end (Unix ms); ARGV[2] = time to live (ms).
const COOL_DOWN: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]))
local requested = tonumber(ARGV[1])
if current ~= nil and current >= requested then
  return current
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
end
return requested
";

/// Keys per command when deleting or flushing many keys at once.
const BATCH: usize = 1_000;

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
    pool: Pool,
    subscriber: SubscriberClient,
    names: KeyNames,
    usage: UsageAggregator,
    notices: NoticeBus,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Close the connections politely when a runtime is still there to do it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (pool, subscriber) = (self.pool.clone(), self.subscriber.clone());
            runtime.spawn(async move {
                let _ = pool.quit().await;
                let _ = subscriber.quit().await;
            });
        }
    }
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("channel", &self.inner.names.changes())
            .field("pool_size", &self.inner.pool.size())
            .finish_non_exhaustive()
    }
}

fn redis(error: RedisError) -> Error {
    cache_error(&error)
}

fn invalid(message: &str) -> Error {
    Error::cache(format!("invalid redis settings: {message}"))
}

/// Waits for a client's first connection, at most `limit`.
async fn init(client: &impl ClientLike, limit: Duration) -> Result<()> {
    match tokio::time::timeout(limit, client.init()).await {
        Ok(Ok(_connection_task)) => Ok(()),
        Ok(Err(error)) => Err(redis(error)),
        Err(_) => Err(Error::cache(
            "redis did not accept a connection in time; check REDIS_URL and that Redis is running",
        )),
    }
}

impl RedisCache {
    /// Connects the command pool and the pub/sub connection and subscribes to config changes.
    /// Must run inside a tokio runtime, which then drives the connections and the subscription.
    ///
    /// # Errors
    /// `Unavailable { Cache }` when the options are invalid (empty namespace, pool size 0, a bad
    /// URL) or Redis cannot be reached within `connect_timeout`.
    pub async fn connect(options: RedisOptions) -> Result<RedisCache> {
        if options.namespace.is_empty() || options.namespace.contains(char::is_whitespace) {
            return Err(invalid("the namespace must be non-empty, without spaces"));
        }
        if options.pool_size == 0 {
            return Err(invalid("the pool size must be at least 1"));
        }
        // Every scheme the client knows starts with "redis" (redis-cluster, redis-sentinel, ...).
        let config = Some(&options.url)
            .filter(|url| url.starts_with("redis"))
            .and_then(|url| Config::from_url(url).ok())
            .ok_or_else(|| invalid("REDIS_URL must be a redis:// URL"))?;
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
        init(&pool, limit).await?;
        if let Err(error) = init(&subscriber, limit).await {
            let _ = pool.quit().await;
            return Err(error);
        }

        let names = KeyNames::new(&options.namespace);
        let channel = names.changes();
        let notices = NoticeBus::default();
        // Listen before subscribing, so no message and no reconnect slips through in between.
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        if let Err(error) = subscriber.subscribe(channel.as_str()).await {
            let _ = pool.quit().await;
            let _ = subscriber.quit().await;
            return Err(redis(error));
        }
        let tasks = vec![
            tokio::spawn(subscription::forward_messages(
                messages,
                channel.clone(),
                notices.clone(),
            )),
            tokio::spawn(subscription::resubscribe_on_reconnect(
                subscriber.clone(),
                reconnects,
                channel,
                notices.clone(),
            )),
        ];
        tracing::info!(namespace = %options.namespace, pool_size = options.pool_size, "connected to redis");
        Ok(RedisCache {
            inner: Arc::new(Inner {
                pool,
                subscriber,
                names,
                usage: UsageAggregator::new(),
                notices,
                tasks,
            }),
        })
    }

    /// The Redis `CLIENT ID`s of this cache's connections (commands and pub/sub), as of their
    /// last (re)connect, to find them in `CLIENT LIST`.
    pub fn connection_ids(&self) -> Vec<i64> {
        let pool = self.inner.pool.clients().iter().map(|c| c.connection_ids());
        pool.chain(std::iter::once(self.inner.subscriber.connection_ids()))
            .flat_map(|ids| ids.into_values())
            .collect()
    }

    /// Closes every connection. Calls made afterwards fail.
    ///
    /// # Errors
    /// `Unavailable { Cache }` when Redis could not be told.
    pub async fn quit(&self) -> Result<()> {
        self.inner.pool.quit().await.map_err(redis)?;
        self.inner.subscriber.quit().await.map_err(redis)
    }

    fn client(&self) -> &Client {
        self.inner.pool.next_connected()
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
}

/// Decodes the replies of `HMGET` and `MGET` into one health per key.
fn states_from(
    keys: &[ApiKeyId],
    failed: Value,
    cooling: Value,
    now: DateTime<Utc>,
) -> Result<Vec<KeyHealth>> {
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
        .map(|(failed, cooling)| key_health(failed.as_deref(), cooling.as_deref(), now))
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

    #[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len()))]
    async fn key_states(&self, keys: &[ApiKeyId]) -> Result<Vec<KeyHealth>> {
        self.read_states(keys, Utc::now()).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn cool_down(&self, key: ApiKeyId, until: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let until_ms = until.timestamp_millis();
        let ttl_ms = until_ms - Utc::now().timestamp_millis();
        let effective: i64 = self
            .client()
            .eval(
                COOL_DOWN,
                vec![self.inner.names.cooldown(key)],
                vec![until_ms, ttl_ms],
            )
            .await
            .map_err(redis)?;
        from_millis(effective)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn mark_failed(&self, key: ApiKeyId) -> Result<()> {
        let () = self
            .client()
            .hset(self.inner.names.health(), (key.to_string(), FAILED))
            .await
            .map_err(redis)?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn mark_ok(&self, key: ApiKeyId) -> Result<()> {
        let names = &self.inner.names;
        let pipeline = self.client().pipeline();
        let () = pipeline
            .hdel(names.health(), key.to_string())
            .await
            .map_err(redis)?;
        let () = pipeline.del(names.cooldown(key)).await.map_err(redis)?;
        let _: Value = pipeline.all().await.map_err(redis)?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len()))]
    async fn forget(&self, keys: &[ApiKeyId]) -> Result<()> {
        self.inner.usage.forget(keys);
        let names = &self.inner.names;
        for chunk in keys.chunks(BATCH) {
            let fields: Vec<String> = chunk.iter().map(ToString::to_string).collect();
            let doomed: Vec<String> = chunk
                .iter()
                .flat_map(|&k| [names.cooldown(k), names.usage(k)])
                .collect();
            let pipeline = self.client().pipeline();
            let () = pipeline.hdel(names.health(), fields).await.map_err(redis)?;
            let () = pipeline.del(doomed).await.map_err(redis)?;
            let _: Value = pipeline.all().await.map_err(redis)?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        let _: Value = self.client().ping(None).await.map_err(redis)?;
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
