//! The request leases this instance holds: per client key, the requests of its `rpm` that the
//! admission script granted ahead of time and that `admit` hands out without a round trip (the
//! rule, its sizes and its expiry are `domain::client_limits`'s [`RequestLease`]).
//!
//! One std mutex around a map: it is held for a lookup and a decrement, never across an await.
//! A lease that is used up, expired or taken under another `rpm` is removed when it is found so;
//! the leases of keys that stopped calling are swept when the map has grown past its last size
//! (at least [`SWEEP_AT`] entries), so the map stays as large as the keys that call within a
//! lease's life, at an amortised constant cost per insert.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::{Mutex, MutexGuard, PoisonError},
};

use chrono::{DateTime, Utc};
use domain::{ClientKeyId, client_limits::RequestLease};

/// Entries the map may hold before the first sweep of unusable leases.
const SWEEP_AT: usize = 1_024;

/// Leases held per client key, and the size that triggers the next sweep.
#[derive(Debug)]
pub(crate) struct HeldLeases {
    inner: Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    by_key: HashMap<ClientKeyId, RequestLease>,
    sweep_at: usize,
}

impl Default for HeldLeases {
    fn default() -> Self {
        HeldLeases {
            inner: Mutex::new(Held {
                by_key: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }
}

impl HeldLeases {
    /// Takes one request of `key`'s lease at `now` (the key's `rpm` is `rpm`): `false` when
    /// there is no usable lease, and the caller asks Redis. A lease found unusable is dropped.
    pub(crate) fn take(&self, key: ClientKeyId, rpm: u32, now: DateTime<Utc>) -> bool {
        let mut held = self.lock();
        match held.by_key.get_mut(&key).map(|lease| lease.take(rpm, now)) {
            Some(true) => true,
            Some(false) => {
                held.by_key.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Keeps the requests of a lease just granted for `key` (added to one still held).
    pub(crate) fn keep(&self, key: ClientKeyId, lease: RequestLease, now: DateTime<Utc>) {
        if !lease.is_usable(now) {
            return;
        }
        let mut held = self.lock();
        match held.by_key.entry(key) {
            Entry::Occupied(mut entry) => entry.get_mut().add(lease, now),
            Entry::Vacant(entry) => {
                entry.insert(lease);
            }
        }
        if held.by_key.len() > held.sweep_at {
            held.by_key.retain(|_, lease| lease.is_usable(now));
            held.sweep_at = SWEEP_AT.max(held.by_key.len().saturating_mul(2));
        }
    }

    /// Leases held (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // Each change is one step on a plain map, so it is consistent whatever panicked while
        // holding it: a poisoned lock is recovered, never a panic on the hot path.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::TimeDelta;
    use domain::client_limits::REQUEST_LEASE_TTL;

    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_kept_lease_is_taken_until_used_up_then_dropped() {
        let held = HeldLeases::default();
        let key = ClientKeyId(1);
        assert!(!held.take(key, 60_000, t0()));
        held.keep(key, RequestLease::new(2, 60_000, t0()), t0());
        assert!(held.take(key, 60_000, t0()));
        assert!(held.take(key, 60_000, t0()));
        assert!(!held.take(key, 60_000, t0()));
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn an_empty_lease_is_not_kept() {
        let held = HeldLeases::default();
        held.keep(ClientKeyId(1), RequestLease::new(0, 60_000, t0()), t0());
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn expired_leases_of_keys_that_stopped_calling_are_swept() {
        let held = HeldLeases::default();
        for id in 0..i64::try_from(SWEEP_AT).unwrap() {
            held.keep(ClientKeyId(id), RequestLease::new(5, 60_000, t0()), t0());
        }
        assert_eq!(held.len(), SWEEP_AT, "no sweep up to its size");
        let later = t0() + REQUEST_LEASE_TTL + TimeDelta::milliseconds(1);
        held.keep(ClientKeyId(-1), RequestLease::new(5, 60_000, later), later);
        assert_eq!(held.len(), 1, "only the usable lease is left");
        assert!(held.take(ClientKeyId(-1), 60_000, later));
    }

    #[test]
    fn a_poisoned_lock_is_recovered() {
        let held = std::sync::Arc::new(HeldLeases::default());
        held.keep(ClientKeyId(1), RequestLease::new(5, 60_000, t0()), t0());
        let poisoner = held.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.inner.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(held.inner.is_poisoned());
        assert!(held.take(ClientKeyId(1), 60_000, t0()));
    }
}
