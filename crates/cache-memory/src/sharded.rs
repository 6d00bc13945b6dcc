//! A map split into independently locked shards, keyed by database ids.
//!
//! Readers of different keys never wait for each other: a read takes only its shard's read lock
//! (shared), and writers lock one shard. Values that need updating under a read lock are atomics.
//! Ids come from the database, not from clients, so a fast multiplicative hash is safe here.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hash, Hasher},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

/// Number of shards; a power of two, several times the core count of a typical server.
const SHARDS: usize = 64;

/// A hasher for integer ids: one multiplication, mixed so both ends of the hash carry entropy.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mixed = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = mixed ^ (mixed >> 29);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n.cast_unsigned());
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// One shard: its entries and whatever bookkeeping the owner keeps per shard.
#[derive(Debug)]
pub(crate) struct Shard<K, V> {
    /// The entries.
    pub(crate) map: IdMap<K, V>,
    /// Size at which the owner next sweeps stale entries out of this shard.
    pub(crate) sweep_at: usize,
}

/// A sharded hash map with a read-write lock per shard.
#[derive(Debug)]
pub(crate) struct ShardedMap<K, V> {
    shards: Box<[RwLock<Shard<K, V>>]>,
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// An empty map whose shards are swept when they reach `sweep_at` entries.
    pub(crate) fn new(sweep_at: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                RwLock::new(Shard {
                    map: IdMap::default(),
                    sweep_at,
                })
            })
            .collect();
        ShardedMap { shards }
    }

    fn shard(&self, key: &K) -> &RwLock<Shard<K, V>> {
        let mut hasher = IdHasher::default();
        key.hash(&mut hasher);
        // High bits pick the shard; hashbrown uses the low bits and the top 7 inside it.
        let index = (hasher.finish() >> 40) as usize % SHARDS;
        &self.shards[index]
    }

    /// The shard holding `key`, locked for reading.
    pub(crate) fn read(&self, key: &K) -> RwLockReadGuard<'_, Shard<K, V>> {
        // A panic while a shard was locked leaves its data consistent (every critical section
        // is a plain map operation), so a poisoned lock is used as is.
        self.shard(key)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shard holding `key`, locked for writing.
    pub(crate) fn write(&self, key: &K) -> RwLockWriteGuard<'_, Shard<K, V>> {
        self.shard(key)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every shard in turn, locked for writing.
    pub(crate) fn for_each_shard(&self, mut f: impl FnMut(&mut Shard<K, V>)) {
        for shard in &self.shards {
            let mut guard = shard
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut guard);
        }
    }

    /// Number of entries (a sum over shards, not a snapshot).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .map
                    .len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_every_shard() {
        let map: ShardedMap<i64, ()> = ShardedMap::new(16);
        for id in 0..10_000 {
            map.write(&id).map.insert(id, ());
        }
        let mut sizes = Vec::new();
        map.for_each_shard(|s| sizes.push(s.map.len()));
        assert_eq!(sizes.iter().sum::<usize>(), 10_000);
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(
            min.is_some_and(|&m| m > 80) && max.is_some_and(|&m| m < 250),
            "shards are balanced: {sizes:?}"
        );
    }

    #[test]
    fn reads_see_writes_of_the_same_key() {
        let map: ShardedMap<i64, u32> = ShardedMap::new(16);
        map.write(&7).map.insert(7, 3);
        assert_eq!(map.read(&7).map.get(&7), Some(&3));
        assert_eq!(map.read(&8).map.get(&8), None);
        assert_eq!(map.len(), 1);
    }
}
