//! The enterprise edition: several instances sharing MariaDB and Redis behave as one service,
//! and each keeps proxying through a Redis or database outage. Needs `TEST_MYSQL_URL` and
//! `TEST_REDIS_URL`; prints a `skipped:` line otherwise.
//!
//! The two-instance tests that hold for any Redis topology also run, in modules named after
//! them, against a Redis Cluster (`TEST_REDIS_CLUSTER_URL`), a Sentinel set-up
//! (`TEST_REDIS_SENTINEL_URL`) and a TLS Redis (`TEST_REDIS_TLS_URL`, whose CA is
//! `TEST_REDIS_TLS_CA_CERT_FILE`), which `.ci/redis-topologies.sh` starts; the Cluster also gets a
//! failover under load and a standalone URL pointed at one of its nodes.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    helpers::{Behavior, MockUpstream, PROXY_KEY, TestApp, spawn_app_with},
    relay::Relay,
};

/// Taken for reading by every test here and for writing by the Cluster failover test, so no
/// other test sees the cluster while one of its masters is down.
static TOPOLOGY: std::sync::LazyLock<tokio::sync::RwLock<()>> =
    std::sync::LazyLock::new(|| tokio::sync::RwLock::new(()));

/// Tests here running at once: each starts two or three instances with their own MySQL pools,
/// and run against four Redis topologies together they would exceed MariaDB's default
/// `max_connections` (151).
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(6);

/// A test's turn: a place among the tests running at once, and the shared side of the topology
/// lock.
struct Turn {
    _running: tokio::sync::SemaphorePermit<'static>,
    _topology: tokio::sync::RwLockReadGuard<'static, ()>,
}

/// Lets the servers a test dropped stop before its runtime goes: their accept loops run on it
/// and act on the stop `TestApp::drop` sent only when polled, and until they do, their worker
/// threads keep the instances' MySQL connections open.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn turn() -> Turn {
    let running = RUNNING
        .acquire()
        .await
        .expect("the semaphore is never closed");
    Turn {
        _running: running,
        _topology: TOPOLOGY.read().await,
    }
}

/// The Redis deployments the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    Standalone,
    Cluster,
    Sentinel,
    Tls,
}

impl Topology {
    fn variable(self) -> &'static str {
        match self {
            Topology::Standalone => "TEST_REDIS_URL",
            Topology::Cluster => "TEST_REDIS_CLUSTER_URL",
            Topology::Sentinel => "TEST_REDIS_SENTINEL_URL",
            Topology::Tls => "TEST_REDIS_TLS_URL",
        }
    }
}

struct Shared {
    mysql: String,
    redis: String,
    /// `REDIS_TLS_CA_CERT_FILE` for a `rediss` URL.
    redis_ca: Option<String>,
    namespace: String,
}

fn shared() -> Option<Shared> {
    shared_on(Topology::Standalone)
}

fn shared_on(topology: Topology) -> Option<Shared> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var("TEST_MYSQL_URL"), var(topology.variable())) {
        (Some(mysql), Some(redis)) => Some(Shared {
            redis_ca: redis
                .starts_with("rediss")
                .then(|| var("TEST_REDIS_TLS_CA_CERT_FILE"))
                .flatten(),
            mysql,
            redis,
            namespace: format!("akr-e2e-{}", domain::contract::unique_suffix()),
        }),
        _ => {
            eprintln!("skipped: TEST_MYSQL_URL or {} unset", topology.variable());
            None
        }
    }
}

async fn instance(shared: &Shared, extra: &[(&str, &str)]) -> TestApp {
    instance_via(shared, &shared.mysql, &shared.redis, extra).await
}

async fn instance_via(
    shared: &Shared,
    mysql: &str,
    redis: &str,
    extra: &[(&str, &str)],
) -> TestApp {
    let mut settings = vec![
        ("DATABASE_URL", mysql),
        ("REDIS_URL", redis),
        ("REDIS_NAMESPACE", shared.namespace.as_str()),
    ];
    if let Some(ca) = &shared.redis_ca {
        settings.push(("REDIS_TLS_CA_CERT_FILE", ca.as_str()));
    }
    settings.extend_from_slice(extra);
    spawn_app_with(&settings).await
}

/// `url` with its port replaced by the relay's.
fn through(url: &str, relay: &Relay) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_port(Some(relay.port)).unwrap();
    url.to_string()
}

fn host_port(url: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    )
}

async fn generic_with_keys(app: &TestApp, slug: &str, target: &str, keys: &[&str]) -> i64 {
    let id = app
        .generic_config(slug, "GET", target, "header", "X-Api-Key")
        .await;
    let report = app.add_keys(id, keys).await;
    assert_eq!(report["success_count"], keys.len());
    id
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", domain::contract::unique_suffix())
}

/// Sends 3 000 requests, alternating between two instances started with `extra`, to a config
/// of three keys; answers how often the upstream saw each key.
async fn split_over_two_instances(
    shared: &Shared,
    extra: &[(&str, &str)],
) -> HashMap<String, usize> {
    let (a, b) = (instance(shared, extra).await, instance(shared, extra).await);
    let mock = MockUpstream::start().await;
    let slug = unique("fleet");
    generic_with_keys(&a, &slug, &mock.base, &["k1", "k2", "k3"]).await;
    let path = format!("/proxy/{slug}/x");
    let urls = [a.url(&path), b.url(&path)];
    let mut handles = Vec::new();
    for worker in 0..8 {
        let client = a.client.clone();
        let urls = urls.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..375 {
                let url = &urls[(worker + i) % 2];
                let response = client
                    .get(url)
                    .header("X-Proxy-Key", PROXY_KEY)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    mock.keys_used()
}

async fn two_instances_share_one_rotation_exactly(topology: Topology) {
    let Some(shared) = shared_on(topology) else {
        return;
    };
    let _turn = turn().await;
    let used = split_over_two_instances(&shared, &[]).await;
    for key in ["k1", "k2", "k3"] {
        assert!(
            (999..=1001).contains(&used[key]),
            "{key} used {} times: {used:?}",
            used[key]
        );
    }
}

async fn with_counter_blocks_the_split_is_even_to_within_one_block_per_instance(
    topology: Topology,
) {
    let Some(shared) = shared_on(topology) else {
        return;
    };
    let _turn = turn().await;
    let used = split_over_two_instances(&shared, &[("ROTATION_BLOCK_SIZE", "32")]).await;
    assert_eq!(used.values().sum::<usize>(), 3_000);
    // Values are never drawn twice; at most the rest of one block per instance goes unused.
    for key in ["k1", "k2", "k3"] {
        assert!(
            (1_000 - 2 * 32..=1_000 + 2 * 32).contains(&used[key]),
            "{key} used {} times: {used:?}",
            used[key]
        );
    }
}

async fn with_counter_blocks_a_cooldown_on_one_instance_reaches_the_other_within_200_ms(
    topology: Topology,
) {
    let Some(shared) = shared_on(topology) else {
        return;
    };
    let _turn = turn().await;
    let blocks = [("ROTATION_BLOCK_SIZE", "32")];
    let (a, b) = (
        instance(&shared, &blocks).await,
        instance(&shared, &blocks).await,
    );
    let mock = MockUpstream::start().await;
    let slug = unique("blockhealth");
    generic_with_keys(&a, &slug, &mock.base, &["limited", "good"]).await;
    let path = format!("/proxy/{slug}/x");
    // B reserves its block and reads both keys' health while both are fine.
    for _ in 0..2 {
        let status = b.proxy(Method::GET, &path).send().await.unwrap().status();
        assert_eq!(status, 200);
    }
    mock.on(
        "limited",
        Behavior::Status(429, "{}", vec![("retry-after", "300")]),
    );
    // A's first request draws the first value after B's block: the limited key, then fails over.
    let status = a.proxy(Method::GET, &path).send().await.unwrap().status();
    assert_eq!(status, 200);
    let after_a = mock.keys_used()["limited"];
    assert_eq!(after_a, 2, "B used it once, A once (answered 429)");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // B still has 30 values in its block and answers from its health mirror: only A's pub/sub
    // notice can have told it about the cooldown.
    for _ in 0..10 {
        let status = b.proxy(Method::GET, &path).send().await.unwrap().status();
        assert_eq!(status, 200);
    }
    assert_eq!(
        mock.keys_used()["limited"],
        after_a,
        "B used the key A saw rate-limited"
    );
}

async fn an_admin_change_on_one_instance_reaches_the_other_within_200_ms(topology: Topology) {
    let Some(shared) = shared_on(topology) else {
        return;
    };
    let _turn = turn().await;
    let (a, b) = (instance(&shared, &[]).await, instance(&shared, &[]).await);
    let mock = MockUpstream::start().await;
    let slug = unique("notice");
    let id = generic_with_keys(&a, &slug, &mock.base, &["k1"]).await;
    let path = format!("/proxy/{slug}/x");
    assert_eq!(
        b.proxy(Method::GET, &path).send().await.unwrap().status(),
        200,
        "B caches the snapshot"
    );

    let changed = a
        .admin(Method::PUT, &format!("/proxy-configs/{id}/status"))
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let written = Instant::now();
    loop {
        let status = b.proxy(Method::GET, &path).send().await.unwrap().status();
        if status == 404 {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_millis(200),
            "B still served the config after 200 ms"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cooldowns_and_failures_taken_on_one_instance_hold_on_the_other(topology: Topology) {
    let Some(shared) = shared_on(topology) else {
        return;
    };
    let _turn = turn().await;
    let (a, b) = (instance(&shared, &[]).await, instance(&shared, &[]).await);
    let mock = MockUpstream::start().await;
    mock.on(
        "limited",
        Behavior::Status(429, "{}", vec![("retry-after", "300")]),
    );
    mock.on("revoked", Behavior::Status(401, "{}", vec![]));
    let slug = unique("health");
    let id = generic_with_keys(&a, &slug, &mock.base, &["limited", "revoked", "good"]).await;
    let path = format!("/proxy/{slug}/x");
    // The first request draws counter 0 (limited), fails over to revoked, then good.
    assert_eq!(
        a.proxy(Method::GET, &path).send().await.unwrap().status(),
        200
    );
    assert_eq!(mock.keys_used()["limited"], 1);
    assert_eq!(mock.keys_used()["revoked"], 1);
    for _ in 0..20 {
        assert_eq!(
            b.proxy(Method::GET, &path).send().await.unwrap().status(),
            200
        );
    }
    let used = mock.keys_used();
    assert_eq!(
        (used["limited"], used["revoked"], used["good"]),
        (1, 1, 21),
        "B skips both keys A took out"
    );
    let health: Vec<Value> = b
        .list_keys(id)
        .await
        .into_iter()
        .map(|k| k["health"].clone())
        .collect();
    assert_eq!(health, [json!("cooling"), json!("failed"), json!("ok")]);
}

async fn failed_keys_are_re_probed_by_one_instance_at_a_time(topology: Topology) {
    let Some(shared) = shared_on(topology) else {
        return;
    };
    let _turn = turn().await;
    let fast = [("KEY_RECOVERY_INTERVAL_SECONDS", "1")];
    let (a, b) = (
        instance(&shared, &fast).await,
        instance(&shared, &fast).await,
    );
    let mock = MockUpstream::start().await;
    mock.on("dead", Behavior::Status(401, "{}", vec![]));
    let slug = unique("probe");
    let config = a
        .create_config(&json!({"name": slug, "slug": slug, "config_type": "LLM", "target_base_url": mock.base}))
        .await
        .json::<Value>()
        .await
        .unwrap();
    a.add_keys(config["id"].as_i64().unwrap(), &["dead", "alive"])
        .await;
    a.llm(Method::GET, &format!("/llm/{slug}/v1/models"))
        .send()
        .await
        .unwrap();
    let probes = || {
        mock.received()
            .iter()
            .filter(|r| r.key == "dead" && r.path == "/models")
            .count()
    };
    let start = probes();
    tokio::time::sleep(Duration::from_millis(4_200)).await;
    let both_running = probes() - start;
    assert!(
        (2..=6).contains(&both_running),
        "one prober, about one pass a second: {both_running} probes in 4.2 s"
    );

    // The holder goes away; the other instance takes over.
    a.handle.stop(true).await;
    let after_stop = probes();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(
        probes() > after_stop,
        "the remaining instance took over the re-probing"
    );
    drop(b);
}

#[tokio::test]
async fn proxying_survives_a_redis_outage_and_shares_state_again_after_it() {
    let Some(shared) = shared() else { return };
    let _turn = turn().await;
    let relay = Relay::start(host_port(&shared.redis)).await;
    let a = instance_via(&shared, &shared.mysql, &through(&shared.redis, &relay), &[]).await;
    let b = instance(&shared, &[]).await;
    let mock = MockUpstream::start().await;
    mock.on(
        "limited",
        Behavior::Status(429, "{}", vec![("retry-after", "300")]),
    );
    let slug = unique("redis-cut");
    generic_with_keys(&a, &slug, &mock.base, &["k1", "k2"]).await;
    let path = format!("/proxy/{slug}/x");
    assert_eq!(
        a.proxy(Method::GET, &path).send().await.unwrap().status(),
        200
    );

    relay.cut();
    for _ in 0..20 {
        assert_eq!(
            a.proxy(Method::GET, &path).send().await.unwrap().status(),
            200,
            "proxying continues"
        );
    }
    let ready = a.client.get(a.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["cache"].as_str()),
        (Some("degraded"), Some("unavailable"))
    );

    relay.restore();
    let restored = Instant::now();
    while a.client.get(a.url("/ready")).send().await.unwrap().status() != 200 {
        assert!(
            restored.elapsed() < Duration::from_secs(10),
            "/ready recovers once Redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Shared again: a key cooled through B is skipped by A.
    mock.on(
        "k1",
        Behavior::Status(429, "{}", vec![("retry-after", "300")]),
    );
    mock.on(
        "k2",
        Behavior::Status(429, "{}", vec![("retry-after", "300")]),
    );
    let _ = b.proxy(Method::GET, &path).send().await.unwrap();
    let before = mock.received().len();
    let answer = a.proxy(Method::GET, &path).send().await.unwrap();
    assert_eq!(answer.status(), 503, "A sees B's cooldowns: no usable key");
    assert_eq!(mock.received().len(), before, "A sent nothing upstream");
}

#[tokio::test]
async fn proxying_survives_a_database_outage_and_admin_writes_say_so() {
    let Some(shared) = shared() else { return };
    let _turn = turn().await;
    let relay = Relay::start(host_port(&shared.mysql)).await;
    let a = instance_via(&shared, &through(&shared.mysql, &relay), &shared.redis, &[]).await;
    let mock = MockUpstream::start().await;
    let slug = unique("db-cut");
    generic_with_keys(&a, &slug, &mock.base, &["k1", "k2"]).await;
    let path = format!("/proxy/{slug}/x");
    assert_eq!(
        a.proxy(Method::GET, &path).send().await.unwrap().status(),
        200
    );

    relay.cut();
    for _ in 0..10 {
        assert_eq!(
            a.proxy(Method::GET, &path).send().await.unwrap().status(),
            200,
            "served from the snapshot"
        );
    }
    let write = a
        .create_config(&json!({"name": unique("during"), "slug": unique("during"), "config_type": "LLM", "target_base_url": mock.base}))
        .await;
    assert_eq!(write.status(), 503);
    let body: Value = write.json().await.unwrap();
    assert_eq!(body["error"]["code"], "dependency_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{body}"
    );

    relay.restore();
    let restored = Instant::now();
    loop {
        let write = a
            .create_config(&json!({"name": unique("after"), "slug": unique("after"), "config_type": "LLM", "target_base_url": mock.base}))
            .await;
        if write.status() == 201 {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "admin writes recover without a restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        a.proxy(Method::GET, &path).send().await.unwrap().status(),
        200
    );
}

/// Generates, in module `$module`, one `#[tokio::test]` per named test, running it against
/// `Topology::$topology`.
macro_rules! on_topology {
    ($module:ident, $topology:ident, $($test:ident),+ $(,)?) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Topology::$topology).await;
                    super::settle().await;
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
    two_instances_share_one_rotation_exactly,
    with_counter_blocks_the_split_is_even_to_within_one_block_per_instance,
    with_counter_blocks_a_cooldown_on_one_instance_reaches_the_other_within_200_ms,
    an_admin_change_on_one_instance_reaches_the_other_within_200_ms,
    cooldowns_and_failures_taken_on_one_instance_hold_on_the_other,
    failed_keys_are_re_probed_by_one_instance_at_a_time,
);

mod cluster_failover;
/// Creates a client key on `app` and waits until `other` accepts it too (the change notice).
async fn shared_client_key(app: &TestApp, other: &TestApp, body: Value) -> String {
    let response = app
        .admin(Method::POST, "/client-keys")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let secret = response.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        // The other instance rebuilt its directory from the change notice.
        if other.state.client_keys.authenticate(&secret).is_some() {
            return secret;
        }
        assert!(
            Instant::now() < deadline,
            "the other instance learnt the key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_instances_enforce_one_client_key_limit() {
    let Some(shared) = shared() else { return };
    let a = instance(&shared, &[]).await;
    let b = instance(&shared, &[]).await;
    let mock = MockUpstream::start().await;
    mock.on("slow", Behavior::Slow(Duration::from_millis(800)));
    let slug = unique("ck-rpm");
    generic_with_keys(&a, &slug, &mock.base, &["k1"]).await;
    let rpm = shared_client_key(&a, &b, json!({"name": unique("ck-rpm"), "rpm": 60})).await;
    let mut admitted = 0;
    for i in 0..80 {
        let app = if i % 2 == 0 { &a } else { &b };
        let status = app
            .client
            .get(app.url(&format!("/proxy/{slug}/x")))
            .header("X-Proxy-Key", &rpm)
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            admitted += 1;
        } else {
            assert_eq!(status, 429);
        }
    }
    // The burst takes a few seconds; GCRA lets one more in per elapsed second.
    assert!(
        (60..=63).contains(&admitted),
        "admitted {admitted} of rpm 60 over two instances"
    );

    let slow = unique("ck-slow");
    generic_with_keys(&a, &slow, &mock.base, &["slow"]).await;
    let two = shared_client_key(
        &a,
        &b,
        json!({"name": unique("ck-two"), "max_concurrency": 2}),
    )
    .await;
    let send = |app: &TestApp| {
        app.client
            .get(app.url(&format!("/proxy/{slow}/x")))
            .header("X-Proxy-Key", &two)
            .send()
    };
    let (first, second) = (send(&a), send(&b));
    let in_flight = tokio::spawn(async move {
        let (x, y) = tokio::join!(first, second);
        (x.unwrap().status().as_u16(), y.unwrap().status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for app in [&a, &b] {
        let refused = send(app).await.unwrap();
        assert_eq!(refused.status(), 429, "two in flight across both instances");
    }
    assert_eq!(in_flight.await.unwrap(), (200, 200));
}

#[tokio::test]
async fn client_key_limits_hold_locally_through_a_redis_outage() {
    let Some(shared) = shared() else { return };
    let relay = Relay::start(host_port(&shared.redis)).await;
    let a = instance_via(&shared, &shared.mysql, &through(&shared.redis, &relay), &[]).await;
    let mock = MockUpstream::start().await;
    let slug = unique("ck-cut");
    generic_with_keys(&a, &slug, &mock.base, &["k1"]).await;
    let response = a
        .admin(Method::POST, "/client-keys")
        .json(&json!({"name": unique("ck-cut"), "rpm": 5}))
        .send()
        .await
        .unwrap();
    let secret = response.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = || {
        a.client
            .get(a.url(&format!("/proxy/{slug}/x")))
            .header("X-Proxy-Key", &secret)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);

    relay.cut();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(send().await.unwrap().status().as_u16());
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (1..=5).contains(&admitted) && statuses.contains(&429),
        "limited locally, neither open nor closed: {statuses:?}"
    );
    let ready: Value = a
        .client
        .get(a.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["client_limits"], "local");

    relay.restore();
    let restored = Instant::now();
    loop {
        let ready: Value = a
            .client
            .get(a.url("/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["client_limits"] == "shared" {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(10),
            "shared limits come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
