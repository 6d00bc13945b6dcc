//! `RedisCache` against the domain contract suites and as two app instances use it: one shared
//! counter, each other's cooldowns, config changes across instances, and connections killed
//! under it; with and without counter blocks (a rotation block size above 1); client-key limits
//! shared by two instances, exactly or from request leases, and scripts Redis forgot.
//!
//! The tests that hold for any topology run once per topology, each in a module named after it,
//! against the URL of its variable: `standalone` (`TEST_REDIS_URL`), `cluster`
//! (`TEST_REDIS_CLUSTER_URL`, a Redis Cluster), `sentinel` (`TEST_REDIS_SENTINEL_URL`) and `tls`
//! (`TEST_REDIS_TLS_URL`, a `rediss://` server whose certificate `TEST_REDIS_TLS_CA_CERT_FILE`
//! signed); `.ci/redis-topologies.sh` starts the last three. A test whose variable is unset
//! prints `skipped: <variable> unset`. Every test works under its own key namespace and deletes
//! it afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use cache_redis::{RedisCache, RedisOptions};
use chrono::{TimeDelta, Utc};
use domain::{
    ApiKey, ApiKeyId, ChangeStream, Classifier, ConfigChange, ConfigEvents, ConfigNotice,
    ConfigSnapshot, Dependency, Error, FailoverPolicy, KeyHealth, KeySecret, KeyUsage, ProxyConfig,
    ProxyConfigId, ProxyConfigInput, RotationState, Rotator, SystemClock, Turn, UsageCounters,
    UsageEvent,
};
use fred::{
    prelude::{
        Builder, ClientInterface, ClientLike, Config, HashesInterface, KeysInterface, TlsConnector,
        Value,
    },
    rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, pem::PemObject},
    },
    types::{CustomCommand, client::ClientKillFilter, config::Server},
};
use futures_util::{FutureExt, StreamExt, TryStreamExt, future::join_all};

/// Taken for reading by every Redis test and for writing by the latency tests, so they measure
/// pub/sub latency, not the scheduling of 10 000 concurrent increments beside them.
static RUN_ALONE: std::sync::LazyLock<tokio::sync::RwLock<()>> =
    std::sync::LazyLock::new(|| tokio::sync::RwLock::new(()));

/// The Redis deployments the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Standalone,
    Cluster,
    Sentinel,
    Tls,
}

impl Topology {
    /// The variable holding this topology's URL.
    fn variable(self) -> &'static str {
        match self {
            Topology::Standalone => "TEST_REDIS_URL",
            Topology::Cluster => "TEST_REDIS_CLUSTER_URL",
            Topology::Sentinel => "TEST_REDIS_SENTINEL_URL",
            Topology::Tls => "TEST_REDIS_TLS_URL",
        }
    }
}

/// The test Redis of `topology`, or `None` (after saying so) when the tests should skip.
fn redis_url(topology: Topology) -> Option<String> {
    match std::env::var(topology.variable()) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipped: {} unset", topology.variable());
            None
        }
    }
}

/// The CA file of the TLS server, for `rediss` URLs.
fn ca_file(url: &str) -> Option<PathBuf> {
    url.starts_with("rediss").then(|| {
        std::env::var("TEST_REDIS_TLS_CA_CERT_FILE")
            .expect("TEST_REDIS_TLS_CA_CERT_FILE names the CA of TEST_REDIS_TLS_URL")
            .into()
    })
}

/// A namespace no other test or run uses.
fn namespace() -> String {
    format!("akr-test-{}", domain::contract::unique_suffix())
}

fn options(url: &str, namespace: &str) -> RedisOptions {
    RedisOptions {
        url: url.to_owned(),
        tls_ca_cert_file: ca_file(url),
        namespace: namespace.to_owned(),
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        rotation_block_size: 1,
        client_slot_lease: Duration::from_secs(600),
    }
}

async fn connect(url: &str, namespace: &str) -> RedisCache {
    connect_with_blocks(url, namespace, 1).await
}

/// A cache reserving `block_size` counter values at a time.
async fn connect_with_blocks(url: &str, namespace: &str, block_size: u32) -> RedisCache {
    RedisCache::connect(RedisOptions {
        rotation_block_size: block_size,
        ..options(url, namespace)
    })
    .await
    .expect("the topology's URL is set, so Redis must be reachable")
}

/// Two instances sharing `namespace`, both in block mode.
async fn two_with_blocks(url: &str, namespace: &str, block_size: u32) -> (RedisCache, RedisCache) {
    (
        connect_with_blocks(url, namespace, block_size).await,
        connect_with_blocks(url, namespace, block_size).await,
    )
}

/// A TLS connector trusting only the certificates of `ca_file`.
fn trusting(ca_file: &std::path::Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(config)
}

/// A plain client for checks and for killing the cache's connections.
async fn admin(url: &str) -> fred::prelude::Client {
    let mut config = Config::from_url(url).unwrap();
    if let (Some(tls), Some(ca)) = (&mut config.tls, ca_file(url)) {
        *tls = trusting(&ca).into();
    }
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();
    client
}

/// Deletes every key of `namespace`. They all carry its hash tag, so a scan of that one slot
/// finds them on a Cluster too.
async fn purge(url: &str, namespace: &str) {
    let admin = admin(url).await;
    let keys: Vec<fred::types::Key> = admin
        .scan_buffered(format!("{{{namespace}}}:*"), Some(1_000), None)
        .try_collect()
        .await
        .unwrap();
    for chunk in keys.chunks(1_000) {
        let _: i64 = admin.del(chunk.to_vec()).await.unwrap();
    }
    // Client-key limiter keys carry one hash tag per client key, so they spread over slots.
    let pattern = format!("{{{namespace}:ck:*");
    let keys: Vec<fred::types::Key> = if admin.is_clustered() {
        admin
            .scan_cluster_buffered(pattern, Some(1_000), None)
            .try_collect()
            .await
            .unwrap()
    } else {
        admin
            .scan_buffered(pattern, Some(1_000), None)
            .try_collect()
            .await
            .unwrap()
    };
    for key in keys {
        let _: i64 = admin.del(key).await.unwrap();
    }
    admin.quit().await.ok();
}

/// The next change notice on `stream` (skipping resyncs), waiting at most `limit`.
async fn next_change(stream: &mut ChangeStream, limit: Duration) -> Option<ConfigChange> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(ConfigNotice::Changed(change))) => return Some(change),
            Ok(Some(ConfigNotice::Resync)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

/// A config `id` with enabled keys `keys`, as the store would load it.
fn snapshot(id: ProxyConfigId, keys: &[ApiKeyId]) -> ConfigSnapshot {
    let spec = ProxyConfigInput {
        name: Some(format!("Config {id}")),
        slug: Some(format!("config-{id}")),
        config_type: Some("LLM".into()),
        target_base_url: Some("https://api.example.com/v1".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let now = Utc::now();
    let keys = keys
        .iter()
        .map(|&key| {
            std::sync::Arc::new(ApiKey {
                id: key,
                proxy_config_id: id,
                key_value: KeySecret::parse(&format!("sk-test-{key}")).unwrap(),
                is_active: true,
                health: KeyHealth::Ok,
                usage: KeyUsage::default(),
                created_at: now,
                updated_at: now,
            })
        })
        .collect();
    ConfigSnapshot::new(ProxyConfig::from_spec(id, spec, now, now), keys)
}

/// The proxy's selection over `cache`.
fn rotator(cache: &RedisCache) -> Rotator {
    let shared = std::sync::Arc::new(cache.clone());
    Rotator::new(
        shared.clone(),
        shared,
        std::sync::Arc::new(SystemClock),
        Classifier::new(TimeDelta::seconds(60)),
        FailoverPolicy {
            max_retries: 0,
            ..FailoverPolicy::default()
        },
    )
}

/// The ids of the keys the next `plans` plans of `rotator` start with.
async fn first_keys(rotator: &Rotator, snapshot: &ConfigSnapshot, plans: usize) -> Vec<i64> {
    let mut picked = Vec::with_capacity(plans);
    for _ in 0..plans {
        let plan = rotator.plan(snapshot, 1).await.unwrap();
        picked.push(plan.keys(snapshot).next().unwrap().id.0);
    }
    picked
}

fn change(id: i64, slug: &str) -> ConfigChange {
    ConfigChange {
        config_id: ProxyConfigId(id),
        slugs: vec![slug.parse().unwrap()],
    }
}

async fn redis_cache_meets_the_rotation_state_contract(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::rotation_state(&connect(&url, &ns).await).await;
    purge(&url, &ns).await;
}

async fn redis_cache_meets_the_usage_counters_contract(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::usage_counters(&connect(&url, &ns).await).await;
    purge(&url, &ns).await;
}

async fn redis_cache_meets_the_leases_contract(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::leases(&connect(&url, &ns).await).await;
    purge(&url, &ns).await;
}

async fn redis_cache_meets_the_config_events_contract(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::config_events(&connect(&url, &ns).await).await;
    purge(&url, &ns).await;
}

async fn two_instances_share_one_counter(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (a, b) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let config = ProxyConfigId(1);
    let keys = [ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)];
    let draw = |cache: RedisCache| async move {
        join_all((0..5_000).map(|_| {
            let cache = cache.clone();
            async move { cache.next_turn(config, &keys).await.unwrap().counter }
        }))
        .await
    };
    let (from_a, from_b) = tokio::join!(draw(a.clone()), draw(b.clone()));
    let distinct: HashSet<u64> = from_a.iter().chain(&from_b).copied().collect();
    assert_eq!(distinct.len(), 10_000, "no value is drawn twice");
    assert_eq!(distinct, (0..10_000).collect(), "values are 0..10 000");
    purge(&url, &ns).await;
}

async fn a_change_published_by_one_instance_reaches_the_other_within_100_ms(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    // A latency bound: measured while no other test in this binary loads the machine.
    let _turn = RUN_ALONE.write().await;
    let ns = namespace();
    let (a, b) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let mut stream = b.subscribe().await.unwrap();
    // The first message after start-up also pays for connection set-up on both sides; the bound
    // is about delivery between running instances, so it is measured from the second on.
    // Sent until one arrives: a message published before the subscription is active on the
    // server is dropped by Redis, and on a loaded machine that can take a moment.
    let warm_up = change(100, "cross-warm-up");
    let mut warmed = None;
    for _ in 0..25 {
        a.publish(warm_up.clone()).await.unwrap();
        warmed = next_change(&mut stream, Duration::from_millis(200)).await;
        if warmed.is_some() {
            break;
        }
    }
    assert_eq!(warmed, Some(warm_up));
    // Copies of the warm-up still on their way are not part of the measurement.
    while next_change(&mut stream, Duration::from_millis(200))
        .await
        .is_some()
    {}
    for round in 0..5 {
        let sent = change(round, &format!("cross-{round}"));
        let start = Instant::now();
        a.publish(sent.clone()).await.unwrap();
        let received = next_change(&mut stream, Duration::from_millis(100)).await;
        assert_eq!(
            received,
            Some(sent),
            "change {round} did not arrive within 100 ms"
        );
        eprintln!("change {round} arrived after {:?}", start.elapsed());
    }
    purge(&url, &ns).await;
}

async fn one_instance_sees_the_others_health_marks_on_its_next_read(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (a, b) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let config = ProxyConfigId(7);
    let keys = [ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)];
    let until = Utc::now() + TimeDelta::seconds(60);

    let effective = a.cool_down(keys[0], until).await.unwrap();
    let turn = b.next_turn(config, &keys).await.unwrap();
    assert_eq!(
        turn.states[0],
        KeyHealth::Cooling { until: effective },
        "b sees a's cooldown on its very next read"
    );
    let shorter = b
        .cool_down(keys[0], Utc::now() + TimeDelta::seconds(5))
        .await
        .unwrap();
    assert_eq!(shorter, effective, "b cannot shorten a's cooldown");

    a.mark_failed(keys[1]).await.unwrap();
    assert_eq!(
        b.key_states(&keys).await.unwrap()[1],
        KeyHealth::Failed,
        "b sees a's failure"
    );
    b.mark_ok(keys[0]).await.unwrap();
    b.mark_ok(keys[1]).await.unwrap();
    assert_eq!(
        a.key_states(&keys).await.unwrap(),
        [KeyHealth::Ok; 3],
        "a sees b's recovery"
    );
    purge(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_survived() {
    let Some(url) = redis_url(Topology::Standalone) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (publisher, victim) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let config = ProxyConfigId(3);
    let keys = [ApiKeyId(1)];
    let mut stream = victim.subscribe().await.unwrap();
    let before = victim.next_turn(config, &keys).await.unwrap().counter;

    let doomed = standalone_ids(&victim);
    assert!(
        doomed.len() >= 3,
        "two pooled connections, one for pub/sub and any per-thread ones: {doomed:?}"
    );
    let admin = admin(&url).await;
    for id in &doomed {
        let killed: i64 = admin
            .client_kill(vec![ClientKillFilter::ID(id.to_string())])
            .await
            .unwrap();
        assert_eq!(killed, 1, "connection {id} was killed");
    }

    // Calls succeed again once the client has reconnected.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match victim.next_turn(config, &keys).await {
            Ok(turn) => break turn.counter,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "no reconnect within 10 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        after > before,
        "the shared counter went on: {before} then {after}"
    );

    // The subscription is restored, then subscribers are told to resync.
    let resync = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(notice) = stream.next().await {
            if notice == ConfigNotice::Resync {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(resync.ok(), Some(true), "a resync follows the reconnect");
    // Every connection is redialled, idle ones included.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh: HashSet<i64> = standalone_ids(&victim).into_iter().collect();
        // A per-thread client that connected after the kill may add one.
        if fresh.len() >= doomed.len() && doomed.iter().all(|id| !fresh.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every connection came back within 10 s: {doomed:?} then {fresh:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Changes published afterwards arrive.
    let sent = change(3, "after-kill");
    publisher.publish(sent.clone()).await.unwrap();
    assert_eq!(
        next_change(&mut stream, Duration::from_secs(2)).await,
        Some(sent)
    );
    admin.quit().await.ok();
    purge(&url, &ns).await;
}

async fn flush_publishes_usage_to_redis_and_forget_removes_it(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let cache = connect(&url, &ns).await;
    let key = ApiKeyId(11);
    let at = Utc::now();
    for status in [200, 429] {
        cache.record(
            key,
            UsageEvent {
                status: Some(status),
                failed: status != 200,
                at,
            },
        );
    }
    let deltas = cache.flush().await.unwrap();
    assert_eq!(deltas.len(), 1);
    let admin = admin(&url).await;
    let usage_key = format!("{{{ns}}}:usage:11");
    let totals: std::collections::HashMap<String, String> =
        admin.hgetall(usage_key.as_str()).await.unwrap();
    assert_eq!(totals.get("requests").map(String::as_str), Some("2"));
    assert_eq!(totals.get("failures").map(String::as_str), Some("1"));
    assert!(totals.contains_key("last_used_at"));

    cache.mark_failed(key).await.unwrap();
    cache.forget(&[key]).await.unwrap();
    let left: std::collections::HashMap<String, String> =
        admin.hgetall(usage_key.as_str()).await.unwrap();
    assert!(left.is_empty(), "forget deletes the usage hash");
    assert_eq!(cache.key_states(&[key]).await.unwrap(), [KeyHealth::Ok]);
    admin.quit().await.ok();
    purge(&url, &ns).await;
}

#[tokio::test]
async fn an_unreachable_redis_is_a_sanitised_cache_error() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let result = RedisCache::connect(RedisOptions {
        url: "redis://admin:hunter2@127.0.0.1:1/0".to_owned(),
        connect_timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    })
    .await;
    match result {
        Err(Error::Unavailable {
            dependency: Dependency::Cache,
            message,
        }) => assert!(!message.contains("hunter2"), "{message}"),
        other => panic!("expected the cache to be unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_options_are_refused_before_connecting() {
    for options in [
        RedisOptions {
            url: "http://nope".to_owned(),
            ..RedisOptions::default()
        },
        RedisOptions {
            pool_size: 0,
            ..RedisOptions::default()
        },
        RedisOptions {
            namespace: String::new(),
            ..RedisOptions::default()
        },
        RedisOptions {
            rotation_block_size: 0,
            ..RedisOptions::default()
        },
        RedisOptions {
            client_slot_lease: Duration::from_millis(99),
            ..RedisOptions::default()
        },
    ] {
        let result = RedisCache::connect(options).await;
        assert!(
            matches!(result, Err(Error::Unavailable { dependency: Dependency::Cache, ref message }) if message.starts_with("invalid redis settings")),
            "{result:?}"
        );
    }
}

// Counter blocks (a rotation block size above 1).

/// The value of a config's counter in Redis (0 before the first draw).
async fn counter_in_redis(url: &str, namespace: &str, config: ProxyConfigId) -> i64 {
    let admin = admin(url).await;
    let value: Option<i64> = admin
        .get(format!("{{{namespace}}}:rr:{config}"))
        .await
        .unwrap();
    admin.quit().await.ok();
    value.unwrap_or(0)
}

/// Draws turns from `cache` until `seen` holds for one, at most `limit` after the call, polling
/// every 5 ms; the turns drawn, the last one satisfying `seen`.
async fn draw_until(
    cache: &RedisCache,
    config: ProxyConfigId,
    keys: &[ApiKeyId],
    limit: Duration,
    seen: impl Fn(&[KeyHealth]) -> bool,
) -> Vec<Turn> {
    let deadline = Instant::now() + limit;
    let mut turns = Vec::new();
    loop {
        let turn = cache.next_turn(config, keys).await.unwrap();
        let done = seen(&turn.states);
        let states = turn.states.clone();
        turns.push(turn);
        if done {
            return turns;
        }
        assert!(
            Instant::now() < deadline,
            "not seen within {limit:?}; the last turn read {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How many clients are subscribed to `channel`.
async fn subscribers(admin: &fred::prelude::Client, channel: &str) -> i64 {
    let reply: Vec<Value> = admin
        .custom(
            CustomCommand::new_static("PUBSUB", None, false),
            vec!["NUMSUB".to_owned(), channel.to_owned()],
        )
        .await
        .unwrap();
    reply
        .get(1)
        .and_then(Value::as_i64)
        .expect("NUMSUB answers the channel and its count")
}

/// The `CLIENT ID`s of `cache`'s connections to a standalone server (the only node, so an id
/// alone names a connection).
fn standalone_ids(cache: &RedisCache) -> Vec<i64> {
    cache
        .connection_ids()
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

/// The id of `cache`'s pub/sub connection: the one of its connections that is subscribed to
/// something, waiting (at most 10 s) for it to be (re)established.
async fn subscriber_connection(admin: &fred::prelude::Client, cache: &RedisCache) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids: HashSet<i64> = standalone_ids(cache).into_iter().collect();
        let list: String = admin
            .custom(
                CustomCommand::new_static("CLIENT", None, false),
                vec!["LIST"],
            )
            .await
            .unwrap();
        let found = list.lines().find_map(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            };
            let id = field("id")?.parse::<i64>().ok()?;
            let subscribed = field("sub")?.parse::<i64>().ok()? > 0;
            (subscribed && ids.contains(&id)).then_some(id)
        });
        if let Some(id) = found {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no subscribed connection among {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 10 s) for a resync notice on `stream`.
async fn next_resync(stream: &mut ChangeStream) {
    let resync = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(notice) = stream.next().await {
            if notice == ConfigNotice::Resync {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(resync.ok(), Some(true), "a resync follows the reconnect");
}

async fn redis_cache_with_counter_blocks_meets_the_rotation_state_contract(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::rotation_state(&connect_with_blocks(&url, &ns, 32).await).await;
    purge(&url, &ns).await;
}

async fn redis_cache_with_counter_blocks_meets_the_config_events_contract(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::config_events(&connect_with_blocks(&url, &ns, 32).await).await;
    purge(&url, &ns).await;
}

async fn instances_with_counter_blocks_never_share_a_value_and_split_keys_evenly(
    topology: Topology,
) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    const BLOCK: u32 = 32;
    const CALLS: usize = 3_000;
    let (a, b) = two_with_blocks(&url, &ns, BLOCK).await;
    let config = ProxyConfigId(1);
    let keys = [ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)];
    let draw = |cache: RedisCache| async move {
        let tasks = (0..CALLS).map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.next_turn(config, &keys).await.unwrap().counter })
        });
        join_all(tasks)
            .await
            .into_iter()
            .map(|drawn| drawn.unwrap())
            .collect::<Vec<u64>>()
    };
    let (from_a, from_b) = tokio::join!(draw(a.clone()), draw(b.clone()));

    let distinct: HashSet<u64> = from_a.iter().chain(&from_b).copied().collect();
    assert_eq!(distinct.len(), 2 * CALLS, "no value is drawn twice");
    let slack = 2 * u64::from(BLOCK);
    let reserved = u64::try_from(counter_in_redis(&url, &ns, config).await).unwrap();
    assert!(
        reserved <= (2 * CALLS) as u64 + slack && reserved % u64::from(BLOCK) == 0,
        "whole blocks were reserved, at most one left over per instance: {reserved}"
    );
    assert!(
        distinct.iter().all(|&value| value < reserved),
        "every value drawn was reserved"
    );
    let mut per_key: HashMap<u64, u64> = HashMap::new();
    for value in &distinct {
        *per_key.entry(value % 3).or_default() += 1;
    }
    let even = (2 * CALLS / 3) as u64;
    for (key, drawn) in &per_key {
        assert!(
            drawn.abs_diff(even) <= slack,
            "key {key} drew {drawn} turns, {even} ± {slack} expected: {per_key:?}"
        );
    }
    purge(&url, &ns).await;
}

async fn with_counter_blocks_one_instance_sees_the_others_health_changes_within_200_ms(
    topology: Topology,
) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    // A latency bound: measured while no other test in this binary loads the machine.
    let _turn = RUN_ALONE.write().await;
    let ns = namespace();
    // Blocks far larger than the turns drawn here, so no refill can be what shows a change.
    const BLOCK: u32 = 1_024;
    let (a, b) = two_with_blocks(&url, &ns, BLOCK).await;
    let config = ProxyConfigId(21);
    let keys = [ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)];
    let limit = Duration::from_millis(200);
    let mut drawn = vec![b.next_turn(config, &keys).await.unwrap()];
    assert_eq!(drawn[0].states, [KeyHealth::Ok; 3]);
    assert_eq!(a.next_turn(config, &keys).await.unwrap().counter, 1_024);

    let effective = a
        .cool_down(keys[0], Utc::now() + TimeDelta::seconds(60))
        .await
        .unwrap();
    let cooling = KeyHealth::Cooling { until: effective };
    assert_eq!(
        a.next_turn(config, &keys).await.unwrap().states[0],
        cooling,
        "a sees its own cooldown at once"
    );
    drawn.extend(draw_until(&b, config, &keys, limit, |s| s[0] == cooling).await);

    a.mark_failed(keys[1]).await.unwrap();
    assert_eq!(
        a.next_turn(config, &keys).await.unwrap().states[1],
        KeyHealth::Failed
    );
    drawn.extend(draw_until(&b, config, &keys, limit, |s| s[1] == KeyHealth::Failed).await);
    let shorter = b
        .cool_down(keys[0], Utc::now() + TimeDelta::seconds(5))
        .await
        .unwrap();
    assert_eq!(shorter, effective, "b cannot shorten a's cooldown");

    a.mark_ok(keys[0]).await.unwrap();
    a.mark_ok(keys[1]).await.unwrap();
    drawn.extend(draw_until(&b, config, &keys, limit, |s| s == [KeyHealth::Ok; 3]).await);
    assert_eq!(
        a.next_turn(config, &keys).await.unwrap().states,
        [KeyHealth::Ok; 3],
        "a's own notices, coming back over pub/sub, undo nothing"
    );

    let counters: Vec<u64> = drawn.iter().map(|turn| turn.counter).collect();
    assert_eq!(
        counters,
        (0..drawn.len() as u64).collect::<Vec<_>>(),
        "b drew every turn from its first block"
    );
    assert_eq!(
        counter_in_redis(&url, &ns, config).await,
        2 * i64::from(BLOCK),
        "one block reserved per instance, none refilled"
    );
    purge(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_counter_blocks_a_health_change_missed_while_disconnected_is_seen_after_reconnect() {
    let Some(url) = redis_url(Topology::Standalone) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    const BLOCK: u32 = 1_024;
    let (a, b) = two_with_blocks(&url, &ns, BLOCK).await;
    let config = ProxyConfigId(31);
    let keys = [ApiKeyId(1), ApiKeyId(2)];
    let health_channel = format!("{ns}:health-changes");
    let mut notices = b.subscribe().await.unwrap();
    assert_eq!(
        b.next_turn(config, &keys).await.unwrap().states,
        [KeyHealth::Ok; 2],
        "b's mirror knows both keys"
    );
    let admin = admin(&url).await;

    // Kill b's pub/sub connection and cool a key down through a before b has subscribed again,
    // so b never receives that message. (b reconnects within 50 ms or so: try again when it
    // was faster than the cooldown.)
    let mut attempts = 0;
    let effective = loop {
        attempts += 1;
        let victim = subscriber_connection(&admin, &b).await;
        let killed: i64 = admin
            .client_kill(vec![ClientKillFilter::ID(victim.to_string())])
            .await
            .unwrap();
        assert_eq!(killed, 1, "b's pub/sub connection {victim} was killed");
        let until = Utc::now() + TimeDelta::seconds(60 + attempts);
        let effective = a.cool_down(keys[0], until).await.unwrap();
        if subscribers(&admin, &health_channel).await == 1 {
            break effective;
        }
        assert!(attempts < 20, "b always subscribed again too fast");
        next_resync(&mut notices).await;
    };
    eprintln!("announced while b was not subscribed, at attempt {attempts}");

    // Once b has subscribed again (and resynced), its very next turn shows the missed cooldown.
    next_resync(&mut notices).await;
    assert_eq!(subscribers(&admin, &health_channel).await, 2);
    let turn = b.next_turn(config, &keys).await.unwrap();
    assert_eq!(
        turn.states,
        [KeyHealth::Cooling { until: effective }, KeyHealth::Ok],
        "b read the health again after the reconnect"
    );
    assert_eq!(
        counter_in_redis(&url, &ns, config).await,
        i64::from(BLOCK),
        "b's block did not run out: the health was read again on its own"
    );

    // Changes announced afterwards arrive again.
    a.mark_ok(keys[0]).await.unwrap();
    draw_until(&b, config, &keys, Duration::from_secs(2), |s| {
        s == [KeyHealth::Ok; 2]
    })
    .await;
    admin.quit().await.ok();
    purge(&url, &ns).await;
}

async fn with_counter_blocks_a_cancelled_request_loses_no_value(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    const BLOCK: u32 = 8;
    let cache = connect_with_blocks(&url, &ns, BLOCK).await;
    let keys = [ApiKeyId(1)];
    // Polled once, the first call of a config starts the block's refill and is then dropped, as
    // a request whose client went away. (On a loaded machine the refill may even be done by the
    // time the call is polled: then try another config.)
    let config = (51..71)
        .map(ProxyConfigId)
        .find(|&config| cache.next_turn(config, &keys).now_or_never().is_none())
        .expect("a first turn waits for Redis");
    let counters: Vec<u64> = join_all((0..BLOCK).map(|_| cache.next_turn(config, &keys)))
        .await
        .into_iter()
        .map(|turn| turn.unwrap().counter)
        .collect::<std::collections::BTreeSet<u64>>()
        .into_iter()
        .collect();
    assert_eq!(
        counters,
        (0..u64::from(BLOCK)).collect::<Vec<_>>(),
        "the value reserved for the cancelled call is handed out to the next one"
    );
    assert_eq!(
        counter_in_redis(&url, &ns, config).await,
        i64::from(BLOCK),
        "one block was reserved"
    );
    purge(&url, &ns).await;
}

async fn without_counter_blocks_every_turn_increments_the_shared_counter(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let cache = connect(&url, &ns).await;
    let config = ProxyConfigId(41);
    let keys = [ApiKeyId(1), ApiKeyId(2)];
    for call in 0..50 {
        let turn = cache.next_turn(config, &keys).await.unwrap();
        assert_eq!(turn.counter, call, "values are drawn one by one");
        assert_eq!(
            counter_in_redis(&url, &ns, config).await,
            i64::try_from(call + 1).unwrap(),
            "one INCR per call, nothing reserved ahead"
        );
    }
    purge(&url, &ns).await;
}

async fn without_counter_blocks_a_selection_sees_the_others_health_changes_at_once(
    topology: Topology,
) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (a, b) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let config = ProxyConfigId(41);
    let keys = [ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)];
    let snapshot = snapshot(config, &keys);
    let selection = rotator(&b);
    let mut first = first_keys(&selection, &snapshot, 3).await;
    first.sort_unstable();
    assert_eq!(
        first,
        [1, 2, 3],
        "b's selection now keeps the three usable keys"
    );

    a.mark_failed(keys[1]).await.unwrap();
    let picked = first_keys(&selection, &snapshot, 6).await;
    assert!(
        !picked.contains(&2),
        "b's very next selections skip it: {picked:?}"
    );
    a.cool_down(keys[0], Utc::now() + TimeDelta::seconds(60))
        .await
        .unwrap();
    assert_eq!(first_keys(&selection, &snapshot, 3).await, [3, 3, 3]);
    a.mark_ok(keys[0]).await.unwrap();
    a.mark_ok(keys[1]).await.unwrap();
    let mut back = first_keys(&selection, &snapshot, 3).await;
    back.sort_unstable();
    assert_eq!(back, [1, 2, 3], "both back in rotation at once");
    purge(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_counter_blocks_a_selection_sees_a_change_missed_while_disconnected() {
    let Some(url) = redis_url(Topology::Standalone) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (a, b) = two_with_blocks(&url, &ns, 1_024).await;
    let config = ProxyConfigId(51);
    let keys = [ApiKeyId(1), ApiKeyId(2)];
    let snapshot = snapshot(config, &keys);
    let selection = rotator(&b);
    let mut notices = b.subscribe().await.unwrap();
    let mut first = first_keys(&selection, &snapshot, 2).await;
    first.sort_unstable();
    assert_eq!(first, [1, 2], "b's selection keeps both keys");
    let admin = admin(&url).await;
    let health_channel = format!("{ns}:health-changes");

    // As in the test above: a cools key 1 down while b is not subscribed.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let victim = subscriber_connection(&admin, &b).await;
        let _: i64 = admin
            .client_kill(vec![ClientKillFilter::ID(victim.to_string())])
            .await
            .unwrap();
        a.cool_down(keys[0], Utc::now() + TimeDelta::seconds(60 + attempts))
            .await
            .unwrap();
        if subscribers(&admin, &health_channel).await == 1 {
            break;
        }
        assert!(attempts < 20, "b always subscribed again too fast");
        next_resync(&mut notices).await;
    }
    next_resync(&mut notices).await;
    assert_eq!(
        first_keys(&selection, &snapshot, 4).await,
        [2, 2, 2, 2],
        "the usable keys b kept were dropped with its mirror's trust"
    );
    admin.quit().await.ok();
    purge(&url, &ns).await;
}

// Topologies: Cluster, Sentinel and TLS.

/// Generates, in module `$module`, one `#[tokio::test]` per named test, running it against
/// `Topology::$topology`.
macro_rules! on_topology {
    ($module:ident, $topology:ident, $($test:ident),+ $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Topology::$topology).await;
                }
            )+
        }
    };
}

/// Runs the named tests against every topology.
macro_rules! on_every_topology {
    ($($test:ident),+ $(,)?) => {
        on_topology!(standalone, Standalone, $($test),+);
        on_topology!(cluster, Cluster, $($test),+);
        on_topology!(sentinel, Sentinel, $($test),+);
        on_topology!(tls, Tls, $($test),+);
    };
}

on_every_topology!(
    redis_cache_meets_the_rotation_state_contract,
    redis_cache_meets_the_usage_counters_contract,
    redis_cache_meets_the_leases_contract,
    redis_cache_meets_the_config_events_contract,
    redis_cache_with_counter_blocks_meets_the_rotation_state_contract,
    redis_cache_with_counter_blocks_meets_the_config_events_contract,
    two_instances_share_one_counter,
    a_change_published_by_one_instance_reaches_the_other_within_100_ms,
    one_instance_sees_the_others_health_marks_on_its_next_read,
    flush_publishes_usage_to_redis_and_forget_removes_it,
    instances_with_counter_blocks_never_share_a_value_and_split_keys_evenly,
    with_counter_blocks_one_instance_sees_the_others_health_changes_within_200_ms,
    with_counter_blocks_a_cancelled_request_loses_no_value,
    without_counter_blocks_every_turn_increments_the_shared_counter,
    without_counter_blocks_a_selection_sees_the_others_health_changes_at_once,
    redis_cache_meets_the_client_limiter_contract,
    each_thread_sends_through_a_connection_of_its_own,
    two_instances_share_client_limits_and_a_lost_slot_expires_with_its_lease,
    a_slot_held_past_its_lease_still_counts_until_released,
    the_slots_of_a_cache_dropped_or_quit_end_with_their_lease,
    two_instances_leasing_a_large_rpm_admit_the_burst_less_at_most_their_leases,
    a_small_rpm_is_never_leased_and_stays_exact_across_instances,
    a_lease_unused_for_its_ttl_is_dropped_and_the_instance_asks_redis_again,
    scripts_flushed_from_redis_are_loaded_again,
);

/// `url` with its password replaced.
fn with_password(url: &str, password: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_password(Some(password)).unwrap();
    parsed.to_string()
}

/// Connects with a wrong password in the URL: the ACL user's credentials are what the data
/// nodes check.
async fn wrong_credentials_are_refused_with_a_clear_error(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let result = RedisCache::connect(RedisOptions {
        connect_timeout: Duration::from_secs(3),
        ..options(&with_password(&url, "not-the-password"), &namespace())
    })
    .await;
    match result {
        Err(Error::Unavailable {
            dependency: Dependency::Cache,
            message,
        }) => {
            assert!(message.contains("credentials"), "{message}");
            assert!(!message.contains("not-the-password"), "{message}");
        }
        other => panic!("expected the credentials to be refused, got {other:?}"),
    }
}

on_topology!(
    cluster_acl,
    Cluster,
    wrong_credentials_are_refused_with_a_clear_error
);
on_topology!(
    sentinel_acl,
    Sentinel,
    wrong_credentials_are_refused_with_a_clear_error
);
on_topology!(
    tls_acl,
    Tls,
    wrong_credentials_are_refused_with_a_clear_error
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_a_server_certificate_no_trusted_authority_signed_is_refused() {
    let Some(url) = redis_url(Topology::Tls) else {
        return;
    };
    let unrelated =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unrelated-ca.pem");
    // The system's authorities (no file), then a CA that did not sign the server's certificate.
    for trusted in [None, Some(unrelated)] {
        let result = RedisCache::connect(RedisOptions {
            tls_ca_cert_file: trusted.clone(),
            connect_timeout: Duration::from_secs(3),
            ..options(&url, &namespace())
        })
        .await;
        match result {
            Err(Error::Unavailable {
                dependency: Dependency::Cache,
                message,
            }) => assert!(message.contains("certificate"), "{trusted:?}: {message}"),
            other => panic!("trusting {trusted:?}, expected a refusal, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_a_ca_file_for_a_plain_url_is_refused() {
    let result = RedisCache::connect(RedisOptions {
        tls_ca_cert_file: Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")),
        ..RedisOptions::default()
    })
    .await;
    assert!(
        matches!(&result, Err(Error::Unavailable { message, .. }) if message.contains("rediss://")),
        "{result:?}"
    );
}

/// The cluster's first node as a standalone `redis://` URL, as a new user might write it.
fn first_node_as_standalone(cluster_url: &str) -> String {
    let parsed = url::Url::parse(cluster_url).unwrap();
    format!(
        "redis://{}:{}@{}:{}/0",
        parsed.username(),
        parsed.password().unwrap_or_default(),
        parsed.host_str().unwrap(),
        parsed.port().unwrap()
    )
}

/// A namespace whose slot `node` (a plain client to one cluster node) does not serve.
async fn namespace_served_elsewhere(node: &fred::prelude::Client) -> String {
    for _ in 0..100 {
        let candidate = namespace();
        let probe: Result<Option<String>, _> = node.get(format!("{{{candidate}}}:probe")).await;
        if probe.is_err() {
            return candidate;
        }
    }
    panic!("one node serves every slot: not a cluster of several masters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_standalone_url_to_one_node_fails_the_shared_state_probe() {
    let Some(url) = redis_url(Topology::Cluster) else {
        return;
    };
    let node_url = first_node_as_standalone(&url);
    let node = admin(&node_url).await;
    let ns = namespace_served_elsewhere(&node).await;
    node.quit().await.ok();
    // PING answers; the shared state does not, and the probe behind /ready says why.
    let cache = connect(&node_url, &ns).await;
    let probe = cache.ping().await;
    match probe {
        Err(Error::Unavailable {
            dependency: Dependency::Cache,
            message,
        }) => assert!(message.contains("redis-cluster://"), "{message}"),
        other => panic!("expected the probe to fail, got {other:?}"),
    }
    assert!(cache.draw(ProxyConfigId(1)).await.is_err());
    // The same namespace through the cluster URL works.
    let clustered = connect(&url, &ns).await;
    clustered.ping().await.unwrap();
    assert_eq!(clustered.draw(ProxyConfigId(1)).await.unwrap().counter, 0);
    purge(&url, &ns).await;
}

async fn redis_cache_meets_the_client_limiter_contract(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::client_limiter(&connect(&url, &ns).await).await;
    purge(&url, &ns).await;
}

/// Two instances share one limit, and a slot whose instance never gives it back stops counting
/// when its lease ends.
async fn two_instances_share_client_limits_and_a_lost_slot_expires_with_its_lease(
    topology: Topology,
) {
    use domain::{Admission, ClientKeyId, ClientLimiter, ClientLimits};
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    // Long enough that a loaded machine cannot let a slot expire between two admissions, short
    // enough to wait out.
    let lease = Duration::from_secs(2);
    let short = RedisOptions {
        client_slot_lease: lease,
        ..options(&url, &ns)
    };
    let a = RedisCache::connect(short.clone()).await.unwrap();
    let b = RedisCache::connect(short).await.unwrap();
    let key = ClientKeyId(7);
    let now = chrono::Utc::now();
    let rpm = ClientLimits {
        rpm: Some(60),
        ..ClientLimits::default()
    };
    let mut admitted = 0;
    for i in 0..80 {
        let cache = if i % 2 == 0 { &a } else { &b };
        if matches!(
            cache.admit(key, &rpm, 0, now).await.unwrap(),
            Admission::Admitted(_)
        ) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 60, "one rpm over both instances");

    let key = ClientKeyId(8);
    let two = ClientLimits {
        max_concurrency: Some(2),
        ..ClientLimits::default()
    };
    assert!(matches!(
        a.admit(key, &two, 0, chrono::Utc::now()).await.unwrap(),
        Admission::Admitted(Some(_))
    ));
    // `b` takes the second slot and "crashes": it never gives it back.
    assert!(matches!(
        b.admit(key, &two, 0, chrono::Utc::now()).await.unwrap(),
        Admission::Admitted(Some(_))
    ));
    drop(b);
    assert!(matches!(
        a.admit(key, &two, 0, chrono::Utc::now()).await.unwrap(),
        Admission::Refused(_)
    ));
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert!(
        matches!(
            a.admit(key, &two, 0, chrono::Utc::now()).await.unwrap(),
            Admission::Admitted(Some(_))
        ),
        "the lost slots expired with their lease"
    );
    purge(&url, &ns).await;
}

/// The lease of the slot renewal tests: short, so a slot is held for several leases in a few
/// seconds; renewals come every 200 ms, so a slot is lost only if one is 400 ms late.
const SHORT_LEASE: Duration = Duration::from_millis(600);

/// An instance whose slots have `SHORT_LEASE`.
async fn short_leased(url: &str, namespace: &str) -> RedisCache {
    RedisCache::connect(RedisOptions {
        client_slot_lease: SHORT_LEASE,
        ..options(url, namespace)
    })
    .await
    .unwrap()
}

/// One concurrency slot at a time.
fn one_at_a_time() -> domain::ClientLimits {
    domain::ClientLimits {
        max_concurrency: Some(1),
        ..domain::ClientLimits::default()
    }
}

/// Admits one exchange of `key` on `cache`, as of now: the slot, or `None` when refused.
async fn admit_one(cache: &RedisCache, key: domain::ClientKeyId) -> Option<domain::SlotId> {
    use domain::{Admission, ClientLimiter};
    match cache
        .admit(key, &one_at_a_time(), 0, Utc::now())
        .await
        .unwrap()
    {
        Admission::Admitted(slot) => Some(slot.expect("max_concurrency takes a slot")),
        Admission::Refused(_) => None,
    }
}

/// A live instance renews the slots it holds: one held for three leases (a long stream) still
/// counts on another instance the whole time, and is free there as soon as it is given back.
async fn a_slot_held_past_its_lease_still_counts_until_released(topology: Topology) {
    use domain::{ClientKeyId, ClientLimiter};
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (holder, other) = (short_leased(&url, &ns).await, short_leased(&url, &ns).await);
    let key = ClientKeyId(21);
    let slot = admit_one(&holder, key)
        .await
        .expect("the first slot is free");

    let held_until = Instant::now() + SHORT_LEASE * 3;
    while Instant::now() < held_until {
        tokio::time::sleep(SHORT_LEASE / 4).await;
        assert_eq!(
            admit_one(&other, key).await,
            None,
            "the held slot still counts {:?} before the end of the hold",
            held_until.saturating_duration_since(Instant::now())
        );
    }

    holder.release(key, slot).await.unwrap();
    let freed = admit_one(&other, key).await;
    assert!(freed.is_some(), "a released slot is free at once");
    other.release(key, freed.unwrap()).await.unwrap();
    purge(&url, &ns).await;
}

/// The slots of a cache that is gone (dropped, as by a crash, or quit) are no longer renewed:
/// they stop counting when their lease ends.
async fn the_slots_of_a_cache_dropped_or_quit_end_with_their_lease(topology: Topology) {
    use domain::ClientKeyId;
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let dropped = short_leased(&url, &ns).await;
    let quitting = short_leased(&url, &ns).await;
    let other = short_leased(&url, &ns).await;
    let (by_drop, by_quit) = (ClientKeyId(22), ClientKeyId(23));
    assert!(admit_one(&dropped, by_drop).await.is_some());
    assert!(admit_one(&quitting, by_quit).await.is_some());
    // Held for more than a lease first, so each has been renewed before it stops.
    tokio::time::sleep(SHORT_LEASE * 3 / 2).await;
    drop(dropped);
    quitting.quit().await.unwrap();
    assert_eq!(admit_one(&other, by_drop).await, None, "leased still");
    assert_eq!(admit_one(&other, by_quit).await, None, "leased still");

    // A renewal just before the end leaves at most one lease.
    tokio::time::sleep(SHORT_LEASE * 3 / 2).await;
    assert!(
        admit_one(&other, by_drop).await.is_some(),
        "the dropped cache's slot ended with its lease"
    );
    assert!(
        admit_one(&other, by_quit).await.is_some(),
        "the quit cache's slot ended with its lease"
    );
    purge(&url, &ns).await;
}

/// Only an `rpm`, as a request lease needs.
fn rpm_only(rpm: u32) -> domain::ClientLimits {
    domain::ClientLimits {
        rpm: Some(rpm),
        ..domain::ClientLimits::default()
    }
}

/// Whether `cache` admits one request of `key` under `limits` at `now`.
async fn admits(
    cache: &RedisCache,
    key: domain::ClientKeyId,
    limits: &domain::ClientLimits,
    now: chrono::DateTime<Utc>,
) -> bool {
    use domain::{Admission, ClientLimiter};
    match cache.admit(key, limits, 0, now).await.unwrap() {
        Admission::Admitted(slot) => {
            assert_eq!(slot, None, "an rpm-only key takes no slot");
            true
        }
        Admission::Refused(refusal) => {
            assert_eq!(refusal.kind, domain::LimitKind::Requests);
            false
        }
    }
}

/// Admits requests of `key` at `now` on `cache` until one is refused; answers how many were.
async fn admit_until_refused(
    cache: &RedisCache,
    key: domain::ClientKeyId,
    limits: &domain::ClientLimits,
    now: chrono::DateTime<Utc>,
) -> u32 {
    let mut admitted = 0;
    while admits(cache, key, limits, now).await {
        admitted += 1;
    }
    admitted
}

/// Two instances taking requests of one key in leases (60 000 rpm: leases of 10) at one instant,
/// turn by turn until each has been refused: together they admit the GCRA's burst (the rpm)
/// less at most what both leases left unused, never more.
async fn two_instances_leasing_a_large_rpm_admit_the_burst_less_at_most_their_leases(
    topology: Topology,
) {
    use domain::{ClientKeyId, client_limits::request_lease_size};
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (a, b) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let limits = rpm_only(60_000);
    let lease = request_lease_size(&limits);
    assert_eq!(lease, 10);
    let key = ClientKeyId(31);
    let now = Utc::now();
    let (mut admitted, mut refused) = (0, [false, false]);
    while refused != [true, true] {
        for (at, cache) in [&a, &b].into_iter().enumerate() {
            if refused[at] {
                continue;
            }
            if admits(cache, key, &limits, now).await {
                admitted += 1;
            } else {
                refused[at] = true;
            }
        }
    }
    assert!(admitted <= 60_000, "{admitted} admitted: over the burst");
    assert!(
        admitted >= 60_000 - 2 * lease,
        "{admitted} admitted: more than two leases short of the burst"
    );
    purge(&url, &ns).await;
}

/// Under 12 000 rpm every request asks Redis: a burst over two instances admits exactly rpm.
async fn a_small_rpm_is_never_leased_and_stays_exact_across_instances(topology: Topology) {
    use domain::{ClientKeyId, client_limits::request_lease_size};
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (a, b) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let now = Utc::now();
    for (key, rpm) in [(ClientKeyId(32), 3), (ClientKeyId(33), 10_000)] {
        let limits = rpm_only(rpm);
        assert_eq!(request_lease_size(&limits), 1);
        let mut admitted = 0;
        for i in 0..rpm + 4 {
            let cache = if i % 2 == 0 { &a } else { &b };
            if admits(cache, key, &limits, now).await {
                admitted += 1;
            }
        }
        assert_eq!(admitted, rpm, "exactly rpm over both instances");
        assert!(!admits(&a, key, &limits, now).await);
        assert!(!admits(&b, key, &limits, now).await);
    }
    purge(&url, &ns).await;
}

/// A lease is used without Redis for its TTL, then dropped: the instance's next request takes a
/// new lease from Redis, which the other instance sees as requests it can no longer admit.
/// At 60 000 rpm a request's interval is 1 ms and a lease holds 10.
async fn a_lease_unused_for_its_ttl_is_dropped_and_the_instance_asks_redis_again(
    topology: Topology,
) {
    use domain::{ClientKeyId, client_limits::REQUEST_LEASE_TTL};
    let Some(url) = redis_url(topology) else {
        return;
    };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (a, b) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let limits = rpm_only(60_000);
    let key = ClientKeyId(34);
    let t0 = Utc::now();

    // `a` takes a lease of 10 and uses one; `b` takes all the rest of the burst.
    assert!(admits(&a, key, &limits, t0).await);
    assert_eq!(admit_until_refused(&b, key, &limits, t0).await, 60_000 - 10);

    // Just before the TTL ends `a` admits from its lease: Redis is not asked, so `b` finds
    // every one of the 999 requests the 999 ms gave back.
    let almost = t0 + REQUEST_LEASE_TTL - TimeDelta::milliseconds(1);
    assert!(admits(&a, key, &limits, almost).await);
    assert_eq!(admit_until_refused(&b, key, &limits, almost).await, 999);

    // Past the TTL `a`'s 8 leftover requests are gone: its next request takes a new lease of
    // 10 from the 1 001 requests given back since, and `b` finds 991.
    let past = t0 + REQUEST_LEASE_TTL * 2;
    assert!(admits(&a, key, &limits, past).await);
    assert_eq!(admit_until_refused(&b, key, &limits, past).await, 991);
    purge(&url, &ns).await;
}

/// The limiter's scripts run by digest (`EVALSHA`); after Redis forgot them (a restart, a
/// failover to a node that never loaded them, here `SCRIPT FLUSH` on every node) the next call
/// loads them again and succeeds.
async fn scripts_flushed_from_redis_are_loaded_again(topology: Topology) {
    use domain::{ClientKeyId, ClientLimiter};
    use fred::prelude::LuaInterface;
    let Some(url) = redis_url(topology) else {
        return;
    };
    // Alone: SCRIPT FLUSH empties the script cache of every test sharing this Redis, and a
    // flush between another test's reload and its retry fails that test's call.
    let _turn = RUN_ALONE.write().await;
    let ns = namespace();
    let cache = connect(&url, &ns).await;
    let admin = admin(&url).await;
    let key = ClientKeyId(35);
    let limits = domain::ClientLimits {
        rpm: Some(2),
        tpm: Some(1_000),
        ..domain::ClientLimits::default()
    };
    let now = Utc::now();
    assert!(admits(&cache, key, &limits, now).await);
    admin.script_flush_cluster(false).await.unwrap();
    assert!(
        admits(&cache, key, &limits, now).await,
        "ADMIT loaded again"
    );
    admin.script_flush_cluster(false).await.unwrap();
    cache.record_tokens(key, &limits, 10, 0, now).await.unwrap();
    assert!(
        !admits(&cache, key, &limits, now).await,
        "the state went on"
    );
    admin.quit().await.ok();
    purge(&url, &ns).await;
}

/// Sends `next_turn`s from the current thread until the cache lists connections beyond `shared`
/// (this thread's own client has connected: one per node it talks to); answers their ids.
async fn own_connections(
    cache: &RedisCache,
    shared: &HashSet<(Server, i64)>,
) -> HashSet<(Server, i64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    loop {
        let turn = cache
            .next_turn(ProxyConfigId(9), &[])
            .await
            .unwrap()
            .counter;
        assert!(
            last < Some(turn),
            "the counter moves on: {last:?} then {turn}"
        );
        last = Some(turn);
        let own: HashSet<(Server, i64)> = cache
            .connection_ids()
            .into_iter()
            .filter(|id| !shared.contains(id))
            .collect();
        if !own.is_empty() {
            return own;
        }
        assert!(
            Instant::now() < deadline,
            "this thread's own client connected within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A thread's commands go through a client opened on that thread (its connection task runs on
/// the thread's runtime, so no command crosses threads); when that runtime ends, the next one on
/// the same thread gets a client of its own instead of the dead one, and commands go on.
async fn each_thread_sends_through_a_connection_of_its_own(topology: Topology) {
    let Some(url) = redis_url(topology) else {
        return;
    };
    let ns = namespace();
    let cache = connect(&url, &ns).await;
    let shared: HashSet<(Server, i64)> = cache.connection_ids().into_iter().collect();
    let on_thread = cache.clone();
    let owns = std::thread::spawn(move || {
        (0..2)
            .map(|_| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(own_connections(&on_thread, &shared))
            })
            .collect::<Vec<HashSet<(Server, i64)>>>()
    })
    .join()
    .unwrap();
    assert!(
        owns[0].is_disjoint(&owns[1]),
        "the second runtime on the thread has connections of its own: {owns:?}"
    );
    let listed: HashSet<(Server, i64)> = cache.connection_ids().into_iter().collect();
    assert!(
        owns.iter().all(|own| own.is_disjoint(&listed)),
        "connections of ended runtimes are not listed: {listed:?}"
    );
    cache.quit().await.unwrap();
    purge(&url, &ns).await;
}
