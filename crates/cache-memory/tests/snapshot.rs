//! `SnapshotCache`: negative caching, single-flight loads, uncached errors and race-free
//! invalidation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cache_memory::SnapshotCache;
use chrono::Utc;
use domain::{ConfigSnapshot, ProxyConfig, ProxyConfigId, ProxyConfigInput, Slug};
use tokio::sync::oneshot;

fn slug(text: &str) -> Slug {
    text.parse().unwrap()
}

/// A snapshot of a config named after `slug`, told apart by `id`.
fn snapshot(slug: &str, id: i64) -> ConfigSnapshot {
    let spec = ProxyConfigInput {
        name: Some(format!("Config {slug} {id}")),
        slug: Some(slug.to_owned()),
        config_type: Some("GENERIC".into()),
        method: Some("GET".into()),
        target_url: Some("https://api.example.com/v1".into()),
        api_key_location: Some("header".into()),
        api_key_name: Some("x-api-key".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let now = Utc::now();
    ConfigSnapshot::new(
        ProxyConfig::from_spec(ProxyConfigId(id), spec, now, now),
        Vec::new(),
    )
}

fn id_of(entry: &Option<Arc<ConfigSnapshot>>) -> Option<i64> {
    entry.as_ref().map(|s| s.config.id.0)
}

#[tokio::test]
async fn unknown_slugs_are_cached_as_absent() {
    let cache = SnapshotCache::new(16);
    let loads = AtomicUsize::new(0);
    let missing = slug("missing");
    assert!(cache.get(&missing).is_none(), "nothing cached yet");
    for _ in 0..3 {
        let entry = cache
            .get_or_load(&missing, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            })
            .await
            .unwrap();
        assert!(entry.is_none());
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one database look-up");
    assert!(matches!(cache.get(&missing), Some(None)));
}

#[tokio::test]
async fn concurrent_misses_share_one_load() {
    let cache = Arc::new(SnapshotCache::new(16));
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load(&slug("shared"), || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(Some(snapshot("shared", 1)))
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(id_of(&task.await.unwrap().unwrap()), Some(1));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(id_of(&cache.get(&slug("shared")).unwrap()), Some(1));
}

#[tokio::test]
async fn errors_are_not_cached() {
    let cache = SnapshotCache::new(16);
    let key = slug("flaky");
    let failed = cache
        .get_or_load(&key, || async { Err(domain::Error::database("down")) })
        .await;
    assert!(failed.is_err());
    assert!(cache.get(&key).is_none(), "an error leaves nothing behind");
    let entry = cache
        .get_or_load(&key, || async { Ok(Some(snapshot("flaky", 2))) })
        .await
        .unwrap();
    assert_eq!(id_of(&entry), Some(2), "the next call loads again");
}

#[tokio::test]
async fn invalidate_and_clear_drop_cached_answers() {
    let cache = SnapshotCache::new(16);
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        cache
            .get_or_load(
                &slug(name),
                || async move { Ok(Some(snapshot(name, i as i64))) },
            )
            .await
            .unwrap();
    }
    assert_eq!(cache.len(), 2);
    cache.invalidate(&slug("a"));
    assert!(cache.get(&slug("a")).is_none());
    assert!(cache.get(&slug("b")).is_some());
    cache.clear();
    assert!(cache.is_empty());
}

type LoadTask = tokio::task::JoinHandle<Result<Option<Arc<ConfigSnapshot>>, domain::Error>>;

/// Starts a load of `name` that answers `answer` only when released; returns its task, a signal
/// that it reached the database, and its release.
fn blocked_load(
    cache: &Arc<SnapshotCache>,
    name: &'static str,
    answer: i64,
) -> (LoadTask, oneshot::Receiver<()>, oneshot::Sender<()>) {
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let cache = cache.clone();
    let task = tokio::spawn(async move {
        cache
            .get_or_load(&slug(name), || async move {
                started_tx.send(()).unwrap();
                release_rx.await.unwrap();
                Ok(Some(snapshot(name, answer)))
            })
            .await
    });
    (task, started_rx, release_tx)
}

#[tokio::test]
async fn a_load_that_started_before_an_invalidation_is_not_cached() {
    let cache = Arc::new(SnapshotCache::new(16));
    let (stale, started, release) = blocked_load(&cache, "racy", 1);
    started.await.unwrap();
    cache.invalidate(&slug("racy"));
    release.send(()).unwrap();
    assert_eq!(
        id_of(&stale.await.unwrap().unwrap()),
        Some(1),
        "its own caller still gets an answer"
    );
    assert!(
        cache.get(&slug("racy")).is_none(),
        "the stale answer was not put back after the invalidation"
    );
}

#[tokio::test]
async fn a_stale_load_never_overwrites_a_fresh_one() {
    let cache = Arc::new(SnapshotCache::new(16));
    let (stale, started, release) = blocked_load(&cache, "racy", 1);
    started.await.unwrap();
    cache.clear();
    // A request after the write does not wait for the stale load: it loads on its own.
    let fresh = cache
        .get_or_load(&slug("racy"), || async { Ok(Some(snapshot("racy", 2))) })
        .await
        .unwrap();
    assert_eq!(id_of(&fresh), Some(2));
    release.send(()).unwrap();
    stale.await.unwrap().unwrap();
    assert_eq!(
        id_of(&cache.get(&slug("racy")).unwrap()),
        Some(2),
        "the fresh answer stays"
    );
}

#[tokio::test]
async fn the_cache_stays_within_its_capacity() {
    let cache = SnapshotCache::new(100);
    for i in 0..1_000 {
        let name = format!("slug-{i}");
        cache
            .get_or_load(&slug(&name), || async { Ok(None) })
            .await
            .unwrap();
    }
    assert!(cache.len() <= 110, "bounded: {}", cache.len());
}
