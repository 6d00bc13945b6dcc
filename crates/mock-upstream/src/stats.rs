//! Request counts per upstream key, read at `GET /__stats` and cleared at `POST /__reset`.
//!
//! The hot path takes a read lock and bumps an atomic; the write lock is taken only the first
//! time a key is seen, and by a reset.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

/// The name under which requests without a key are counted.
pub const NO_KEY: &str = "(none)";

/// Requests counted per key.
#[derive(Debug, Default)]
pub struct Stats {
    per_key: RwLock<HashMap<Box<str>, AtomicU64>>,
}

impl Stats {
    /// Counts one request made with `key`.
    pub fn count(&self, key: &str) {
        {
            let map = self.per_key.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(counter) = map.get(key) {
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self.per_key.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(key.into())
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, by key.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let map = self.per_key.read().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(key, count)| (key.to_string(), count.load(Ordering::Relaxed)))
            .collect()
    }

    /// Forgets every count.
    pub fn reset(&self) {
        self.per_key
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// `{"total": n, "keys": {"<key>": n, ...}}`.
    pub fn to_json(&self) -> Vec<u8> {
        let keys = self.snapshot();
        let total: u64 = keys.values().sum();
        serde_json::json!({ "total": total, "keys": keys })
            .to_string()
            .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn counts_per_key_and_resets() {
        let stats = Stats::default();
        for key in ["a", "b", "a", NO_KEY] {
            stats.count(key);
        }

        let json: serde_json::Value = serde_json::from_slice(&stats.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"total": 4, "keys": {"a": 2, "b": 1, "(none)": 1}})
        );

        stats.reset();
        assert!(stats.snapshot().is_empty());
    }
}
