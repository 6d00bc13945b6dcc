//! `RedisCache` against the domain contract suites and as two app instances use it: one shared
//! counter, each other's cooldowns, config changes across instances, and connections killed
//! under it. Needs `TEST_REDIS_URL` (each test prints `skipped: TEST_REDIS_URL unset` without
//! it); every test works under its own key namespace and deletes it afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use cache_redis::{RedisCache, RedisOptions};
use chrono::{TimeDelta, Utc};
use domain::{
    ApiKeyId, ChangeStream, ConfigChange, ConfigEvents, ConfigNotice, Dependency, Error, KeyHealth,
    ProxyConfigId, RotationState, UsageCounters, UsageEvent,
};
use fred::{
    prelude::{Builder, ClientInterface, ClientLike, Config, HashesInterface, Value},
    types::{CustomCommand, client::ClientKillFilter},
};
use futures_util::{StreamExt, future::join_all};

/// The test Redis, or `None` (after saying so) when the tests should skip.
/// Taken for reading by every Redis test and for writing by the latency test, so that test
/// measures pub/sub latency, not the scheduling of 10 000 concurrent increments beside it.
static RUN_ALONE: std::sync::LazyLock<tokio::sync::RwLock<()>> =
    std::sync::LazyLock::new(|| tokio::sync::RwLock::new(()));

fn redis_url() -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!("skipped: TEST_REDIS_URL unset");
            None
        }
    }
}

/// A namespace no other test or run uses.
fn namespace() -> String {
    format!("akr-test-{}", domain::contract::unique_suffix())
}

fn options(url: &str, namespace: &str) -> RedisOptions {
    RedisOptions {
        url: url.to_owned(),
        namespace: namespace.to_owned(),
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
    }
}

async fn connect(url: &str, namespace: &str) -> RedisCache {
    RedisCache::connect(options(url, namespace))
        .await
        .expect("TEST_REDIS_URL is set, so Redis must be reachable")
}

/// A plain client for checks and for killing the cache's connections.
async fn admin(url: &str) -> fred::prelude::Client {
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

/// Deletes every key of `namespace`.
async fn purge(url: &str, namespace: &str) {
    let admin = admin(url).await;
    let mut cursor = "0".to_owned();
    loop {
        let (next, keys): (String, Vec<String>) = admin
            .custom(
                CustomCommand::new_static("SCAN", None, false),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    format!("{namespace}:*"),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: Value = admin
                .custom(CustomCommand::new_static("DEL", None, false), keys)
                .await
                .unwrap();
        }
        if next == "0" {
            break;
        }
        cursor = next;
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

fn change(id: i64, slug: &str) -> ConfigChange {
    ConfigChange {
        config_id: ProxyConfigId(id),
        slugs: vec![slug.parse().unwrap()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_meets_the_rotation_state_contract() {
    let Some(url) = redis_url() else { return };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::rotation_state(&connect(&url, &ns).await).await;
    purge(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_meets_the_usage_counters_contract() {
    let Some(url) = redis_url() else { return };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::usage_counters(&connect(&url, &ns).await).await;
    purge(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_meets_the_leases_contract() {
    let Some(url) = redis_url() else { return };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::leases(&connect(&url, &ns).await).await;
    purge(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_meets_the_config_events_contract() {
    let Some(url) = redis_url() else { return };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    domain::contract::config_events(&connect(&url, &ns).await).await;
    purge(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_counter() {
    let Some(url) = redis_url() else { return };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_published_by_one_instance_reaches_the_other_within_100_ms() {
    let Some(url) = redis_url() else { return };
    // A latency bound: measured while no other test in this binary loads the machine.
    let _turn = RUN_ALONE.write().await;
    let ns = namespace();
    let (a, b) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let mut stream = b.subscribe().await.unwrap();
    // The first message after start-up also pays for connection set-up on both sides; the bound
    // is about delivery between running instances, so it is measured from the second on.
    let warm_up = change(100, "cross-warm-up");
    a.publish(warm_up.clone()).await.unwrap();
    assert_eq!(
        next_change(&mut stream, Duration::from_secs(5)).await,
        Some(warm_up)
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_sees_the_others_health_marks_on_its_next_read() {
    let Some(url) = redis_url() else { return };
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
    let Some(url) = redis_url() else { return };
    let _turn = RUN_ALONE.read().await;
    let ns = namespace();
    let (publisher, victim) = (connect(&url, &ns).await, connect(&url, &ns).await);
    let config = ProxyConfigId(3);
    let keys = [ApiKeyId(1)];
    let mut stream = victim.subscribe().await.unwrap();
    let before = victim.next_turn(config, &keys).await.unwrap().counter;

    let doomed = victim.connection_ids();
    assert_eq!(
        doomed.len(),
        3,
        "two pooled connections and one for pub/sub"
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
        let fresh: HashSet<i64> = victim.connection_ids().into_iter().collect();
        if fresh.len() == doomed.len() && doomed.iter().all(|id| !fresh.contains(id)) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_publishes_usage_to_redis_and_forget_removes_it() {
    let Some(url) = redis_url() else { return };
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
    let usage_key = format!("{ns}:usage:11");
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
    ] {
        let result = RedisCache::connect(options).await;
        assert!(
            matches!(result, Err(Error::Unavailable { dependency: Dependency::Cache, ref message }) if message.starts_with("invalid redis settings")),
            "{result:?}"
        );
    }
}
