//! The lightweight edition's client-key limiter: the domain's [`LiveLimits`] rules applied in
//! process, one small state per client key behind a sharded lock (each admission locks one
//! shard for a few arithmetic operations, no allocation once the key was seen).

use std::{
    collections::HashMap,
    hash::BuildHasherDefault,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{Admission, ClientKeyId, ClientLimiter, ClientLimits, LiveLimits, SlotId};

use crate::sharded::IdHasher;

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<ClientKeyId, LiveLimits, BuildHasherDefault<IdHasher>>>;

/// Client-key limits kept in this process.
pub struct MemoryClientLimiter {
    shards: Box<[Shard]>,
    slots: AtomicU64,
}

impl std::fmt::Debug for MemoryClientLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryClientLimiter")
            .finish_non_exhaustive()
    }
}

impl Default for MemoryClientLimiter {
    fn default() -> Self {
        MemoryClientLimiter {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            slots: AtomicU64::new(1),
        }
    }
}

impl MemoryClientLimiter {
    /// Runs `f` on the live state of `key` (created on first use).
    fn with<T>(&self, key: ClientKeyId, f: impl FnOnce(&mut LiveLimits) -> T) -> T {
        let index = usize::try_from(key.0.unsigned_abs() % SHARDS as u64).unwrap_or(0);
        let shard = &self.shards[index];
        // A poisoned shard only means another request panicked mid-update of plain integers;
        // the state is still usable.
        let mut map = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(key).or_default())
    }

    /// Admission without the async wrapper, for the server's local fallback and benches.
    pub fn admit_now(
        &self,
        key: ClientKeyId,
        limits: &ClientLimits,
        seed: u64,
        now: DateTime<Utc>,
    ) -> Admission {
        if limits.is_unlimited() {
            return Admission::Admitted(None);
        }
        match self.with(key, |live| live.admit(limits, seed, now)) {
            Ok(()) => Admission::Admitted(
                limits
                    .max_concurrency
                    .map(|_| SlotId(self.slots.fetch_add(1, Ordering::Relaxed))),
            ),
            Err(refusal) => Admission::Refused(refusal),
        }
    }

    /// Gives back a slot, synchronously.
    pub fn release_now(&self, key: ClientKeyId) {
        self.with(key, LiveLimits::release);
    }

    /// Charges tokens, synchronously.
    pub fn record_tokens_now(
        &self,
        key: ClientKeyId,
        limits: &ClientLimits,
        tokens: u64,
        seed: u64,
        now: DateTime<Utc>,
    ) {
        if limits.tpm.is_none() && limits.budget.is_none() {
            return;
        }
        self.with(key, |live| live.record_tokens(limits, tokens, seed, now));
    }
}

#[async_trait]
impl ClientLimiter for MemoryClientLimiter {
    async fn admit(
        &self,
        key: ClientKeyId,
        limits: &ClientLimits,
        seed: u64,
        now: DateTime<Utc>,
    ) -> domain::Result<Admission> {
        Ok(self.admit_now(key, limits, seed, now))
    }

    async fn release(&self, key: ClientKeyId, _slot: SlotId) -> domain::Result<()> {
        self.release_now(key);
        Ok(())
    }

    async fn record_tokens(
        &self,
        key: ClientKeyId,
        limits: &ClientLimits,
        tokens: u64,
        seed: u64,
        now: DateTime<Utc>,
    ) -> domain::Result<()> {
        self.record_tokens_now(key, limits, tokens, seed, now);
        Ok(())
    }

    async fn ping(&self) -> domain::Result<()> {
        Ok(())
    }
}
