//! Keeping the proxy up when the shared cache is not: rotation state ([`FallbackRotation`]) and
//! client-key limits ([`FallbackLimiter`]) that fall back to this process's own state while
//! Redis is unreachable, say so once in the log, and go back to the shared state as soon as
//! Redis answers again.
//!
//! Health versions (`RotationState::draw`) of the two states count independently, so each is
//! tagged with its source in the low bit: a version of one can never equal a version of the
//! other, and the usable keys a snapshot learnt from one are never reused for the other.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use cache_memory::MemoryCache;
use chrono::{DateTime, Utc};
use domain::{
    ApiKeyId, Draw, Error, HealthRead, KeyHealth, ProxyConfigId, Result, RotationState, Turn,
};

/// How long to stay on the local state before trying the shared one again.
const RETRY_SHARED_AFTER: Duration = Duration::from_secs(1);

/// Which state answered a health version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Shared,
    Local,
}

impl Source {
    /// The version tagged with its source in the low bit. Neither state's count gets anywhere
    /// near 2^63 (one per health change), so no information is lost.
    fn tag(self, version: u64) -> u64 {
        match self {
            Source::Shared => version << 1,
            Source::Local => (version << 1) | 1,
        }
    }
}

/// [`RotationState`] over a shared backend with a local fallback.
pub struct FallbackRotation {
    shared: Arc<dyn RotationState>,
    local: MemoryCache,
    degraded: AtomicBool,
    retry_at_ms: AtomicI64,
    transitions: AtomicI64,
}

impl FallbackRotation {
    /// Wraps the shared state.
    pub fn new(shared: Arc<dyn RotationState>) -> Self {
        FallbackRotation {
            shared,
            local: MemoryCache::default(),
            degraded: AtomicBool::new(false),
            retry_at_ms: AtomicI64::new(0),
            transitions: AtomicI64::new(0),
        }
    }

    /// Whether requests are being served from the local fallback.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// How many times the state switched to the fallback (each logged once).
    pub fn degradations(&self) -> i64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// Switches to the local state (logging it once per switch) until the next retry.
    fn fall_back(&self, message: &str, now: i64) {
        self.retry_at_ms.store(
            now + RETRY_SHARED_AFTER.as_millis() as i64,
            Ordering::Relaxed,
        );
        if !self.degraded.swap(true, Ordering::Relaxed) {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%message, "the shared cache is unreachable: rotation, cooldowns and key health continue in this instance only until it is back");
        }
    }

    async fn either<T, S, SF, L, LF>(&self, shared: S, local: L) -> Result<T>
    where
        S: FnOnce() -> SF,
        SF: Future<Output = Result<T>>,
        L: FnOnce() -> LF,
        LF: Future<Output = Result<T>>,
    {
        let now = Utc::now().timestamp_millis();
        if self.is_degraded() && now < self.retry_at_ms.load(Ordering::Relaxed) {
            return local().await;
        }
        match shared().await {
            Err(Error::Unavailable { message, .. }) => {
                self.fall_back(&message, now);
                local().await
            }
            answer => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "the shared cache is reachable again: rotation state is shared across instances"
                    );
                }
                answer
            }
        }
    }
}

#[async_trait]
impl RotationState for FallbackRotation {
    async fn next_turn(&self, config: ProxyConfigId, keys: &[ApiKeyId]) -> Result<Turn> {
        self.either(
            || self.shared.next_turn(config, keys),
            || self.local.next_turn(config, keys),
        )
        .await
    }

    async fn draw(&self, config: ProxyConfigId) -> Result<Draw> {
        let tagged = |source: Source| {
            move |draw: Draw| Draw {
                health_version: source.tag(draw.health_version),
                ..draw
            }
        };
        self.either(
            || async { self.shared.draw(config).await.map(tagged(Source::Shared)) },
            || async { self.local.draw(config).await.map(tagged(Source::Local)) },
        )
        .await
    }

    async fn read_health(&self, keys: &[ApiKeyId]) -> Result<HealthRead> {
        let tagged = |source: Source| {
            move |read: HealthRead| HealthRead {
                version: source.tag(read.version),
                ..read
            }
        };
        self.either(
            || async {
                self.shared
                    .read_health(keys)
                    .await
                    .map(tagged(Source::Shared))
            },
            || async {
                self.local
                    .read_health(keys)
                    .await
                    .map(tagged(Source::Local))
            },
        )
        .await
    }

    async fn key_states(&self, keys: &[ApiKeyId]) -> Result<Vec<KeyHealth>> {
        self.either(
            || self.shared.key_states(keys),
            || self.local.key_states(keys),
        )
        .await
    }

    async fn cool_down(&self, key: ApiKeyId, until: DateTime<Utc>) -> Result<DateTime<Utc>> {
        self.either(
            || self.shared.cool_down(key, until),
            || self.local.cool_down(key, until),
        )
        .await
    }

    async fn mark_failed(&self, key: ApiKeyId) -> Result<()> {
        self.either(
            || self.shared.mark_failed(key),
            || self.local.mark_failed(key),
        )
        .await
    }

    async fn mark_ok(&self, key: ApiKeyId) -> Result<()> {
        let _ = self.local.mark_ok(key).await;
        self.either(|| self.shared.mark_ok(key), || async { Ok(()) })
            .await
    }

    async fn forget(&self, keys: &[ApiKeyId]) -> Result<()> {
        let _ = self.local.forget(keys).await;
        self.either(|| self.shared.forget(keys), || async { Ok(()) })
            .await
    }

    /// Reports whether the shared state's operations succeed (the adapter's probe, not only a
    /// `PING`), so `/ready` tells the truth; a failure switches to the local state at once, so
    /// the probe run at start-up already says so in the log rather than the first request.
    async fn ping(&self) -> Result<()> {
        let probe = self.shared.ping().await;
        if let Err(Error::Unavailable { message, .. }) = &probe {
            self.fall_back(message, Utc::now().timestamp_millis());
        }
        probe
    }
}

/// Slots the local fallback hands out carry this bit, so each slot goes back to the limiter that
/// gave it, even when Redis comes back in between.
const LOCAL_SLOT: u64 = 1 << 63;

/// [`domain::ClientLimiter`] over a shared backend with a local fallback: while Redis is
/// unreachable each instance enforces every client key's limits by itself (announced once in
/// the log and on `/ready`), never failing open and never refusing everything, and goes back
/// to the shared limits as soon as Redis answers.
pub struct FallbackLimiter {
    shared: Arc<dyn domain::ClientLimiter>,
    local: cache_memory::MemoryClientLimiter,
    degraded: AtomicBool,
    retry_at_ms: AtomicI64,
}

impl FallbackLimiter {
    /// Wraps the shared limiter.
    pub fn new(shared: Arc<dyn domain::ClientLimiter>) -> Self {
        FallbackLimiter {
            shared,
            local: cache_memory::MemoryClientLimiter::default(),
            degraded: AtomicBool::new(false),
            retry_at_ms: AtomicI64::new(0),
        }
    }

    /// Whether limits are being enforced by this instance alone.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Whether to skip the shared limiter for now (it failed less than a second ago).
    fn on_local(&self, now_ms: i64) -> bool {
        self.is_degraded() && now_ms < self.retry_at_ms.load(Ordering::Relaxed)
    }

    fn went_down(&self, now_ms: i64, message: &str) {
        self.retry_at_ms.store(
            now_ms + RETRY_SHARED_AFTER.as_millis() as i64,
            Ordering::Relaxed,
        );
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(%message, "the shared cache is unreachable: client-key limits are enforced by each instance alone until it is back");
        }
    }

    fn came_back(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(
                "the shared cache is reachable again: client-key limits are shared across instances"
            );
        }
    }
}

#[async_trait]
impl domain::ClientLimiter for FallbackLimiter {
    async fn admit(
        &self,
        key: domain::ClientKeyId,
        limits: &domain::ClientLimits,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Result<domain::Admission> {
        let local = || match self.local.admit_now(key, limits, seed, now) {
            domain::Admission::Admitted(slot) => {
                domain::Admission::Admitted(slot.map(|s| domain::SlotId(s.0 | LOCAL_SLOT)))
            }
            refused => refused,
        };
        let now_ms = Utc::now().timestamp_millis();
        if self.on_local(now_ms) {
            return Ok(local());
        }
        match self.shared.admit(key, limits, seed, now).await {
            Err(Error::Unavailable { message, .. }) => {
                self.went_down(now_ms, &message);
                Ok(local())
            }
            answer => {
                if answer.is_ok() {
                    self.came_back();
                }
                answer
            }
        }
    }

    async fn release(&self, key: domain::ClientKeyId, slot: domain::SlotId) -> Result<()> {
        if slot.0 & LOCAL_SLOT != 0 {
            self.local.release_now(key);
            return Ok(());
        }
        match self.shared.release(key, slot).await {
            // The shared slot expires with its lease.
            Err(Error::Unavailable { .. }) => Ok(()),
            other => other,
        }
    }

    async fn record_tokens(
        &self,
        key: domain::ClientKeyId,
        limits: &domain::ClientLimits,
        tokens: u64,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        // The local copy always counts too, so a fallback starts from what this instance saw.
        self.local.record_tokens_now(key, limits, tokens, seed, now);
        let now_ms = Utc::now().timestamp_millis();
        if self.on_local(now_ms) {
            return Ok(());
        }
        match self
            .shared
            .record_tokens(key, limits, tokens, seed, now)
            .await
        {
            Err(Error::Unavailable { message, .. }) => {
                self.went_down(now_ms, &message);
                Ok(())
            }
            other => other,
        }
    }

    async fn ping(&self) -> Result<()> {
        self.shared.ping().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use domain::ports::MockRotationState;

    use super::*;

    fn down() -> Error {
        Error::cache("connection refused")
    }

    #[tokio::test]
    async fn an_unreachable_shared_state_falls_back_once_and_recovers() {
        let mut shared = MockRotationState::new();
        let mut calls = 0;
        shared.expect_next_turn().returning(move |_, keys| {
            calls += 1;
            if calls == 1 {
                Err(down())
            } else {
                Ok(Turn {
                    counter: 100,
                    states: vec![KeyHealth::Ok; keys.len()],
                })
            }
        });
        let state = FallbackRotation::new(Arc::new(shared));
        let keys = [ApiKeyId(1), ApiKeyId(2)];
        let first = state.next_turn(ProxyConfigId(1), &keys).await.unwrap();
        assert_eq!(first.counter, 0, "served locally");
        assert!(state.is_degraded());
        for expected in 1..50 {
            assert_eq!(
                state
                    .next_turn(ProxyConfigId(1), &keys)
                    .await
                    .unwrap()
                    .counter,
                expected,
                "still local, no retry yet"
            );
        }
        assert_eq!(state.degradations(), 1, "one warning, not one per request");
        state.retry_at_ms.store(0, Ordering::Relaxed);
        assert_eq!(
            state
                .next_turn(ProxyConfigId(1), &keys)
                .await
                .unwrap()
                .counter,
            100,
            "shared again"
        );
        assert!(!state.is_degraded());
    }

    #[tokio::test]
    async fn versions_of_the_shared_and_the_local_state_never_collide() {
        let mut shared = MockRotationState::new();
        let mut calls = 0;
        shared.expect_draw().returning(move |_| {
            calls += 1;
            if calls == 1 {
                Err(down())
            } else {
                Ok(Draw {
                    counter: 100,
                    health_version: 0,
                })
            }
        });
        shared.expect_read_health().returning(|keys| {
            Ok(HealthRead {
                version: 0,
                states: vec![KeyHealth::Ok; keys.len()],
            })
        });
        let state = FallbackRotation::new(Arc::new(shared));
        let local = state.draw(ProxyConfigId(1)).await.unwrap();
        assert_eq!(local.counter, 0, "served locally");
        let local_read = state.read_health(&[ApiKeyId(1)]).await.unwrap();
        assert_eq!(local_read.version, local.health_version);
        state.retry_at_ms.store(0, Ordering::Relaxed);
        let shared = state.draw(ProxyConfigId(1)).await.unwrap();
        assert_eq!(shared.counter, 100, "shared again");
        let shared_read = state.read_health(&[ApiKeyId(1)]).await.unwrap();
        assert_eq!(shared_read.version, shared.health_version);
        assert_ne!(
            local.health_version, shared.health_version,
            "both states answered version 0"
        );
    }

    #[tokio::test]
    async fn a_failing_probe_falls_back_at_once_and_reports_the_failure() {
        let mut shared = MockRotationState::new();
        shared
            .expect_ping()
            .returning(|| Err(Error::cache("redis answered MOVED")));
        shared.expect_draw().never();
        let state = FallbackRotation::new(Arc::new(shared));
        assert!(
            state.ping().await.is_err(),
            "the probe's failure is reported"
        );
        assert!(state.is_degraded(), "before any request was served");
        assert_eq!(state.degradations(), 1);
        let draw = state.draw(ProxyConfigId(1)).await.unwrap();
        assert_eq!(draw.counter, 0, "served locally without asking Redis again");
        assert!(state.ping().await.is_err());
        assert_eq!(state.degradations(), 1, "logged once");
    }

    #[tokio::test]
    async fn cooldowns_taken_while_degraded_apply_locally() {
        let mut shared = MockRotationState::new();
        shared.expect_cool_down().returning(|_, _| Err(down()));
        shared.expect_key_states().returning(|_| Err(down()));
        let state = FallbackRotation::new(Arc::new(shared));
        let until = Utc::now() + chrono::TimeDelta::seconds(30);
        state.cool_down(ApiKeyId(5), until).await.unwrap();
        let states = state.key_states(&[ApiKeyId(5)]).await.unwrap();
        assert!(matches!(states[0], KeyHealth::Cooling { .. }));
    }
}
