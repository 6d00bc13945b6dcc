//! [`SnapshotCache`]: the bounded in-process cache of active configs by slug that the proxy hot
//! path reads instead of the database.
//!
//! Unknown or inactive slugs are cached too (as "no such active config"), so a client hammering
//! a wrong URL does not reach the database on every request. Concurrent misses of one slug share
//! one load (quick_cache's placeholder guard). Invalidation is race-free: every invalidation bumps
//! a generation counter, and a load stores its result only if no invalidation happened since it
//! started, checked and stored under the same lock the invalidation takes; so a load that read
//! the database before an admin write can never put its stale answer back after the write's
//! invalidation. (quick_cache also drops a placeholder on `remove` and `clear`; the generation
//! makes the guarantee ours rather than a detail of the cache's current version.)

use std::{
    borrow::Borrow,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
};

use domain::{ConfigSnapshot, Slug};
use quick_cache::sync::Cache;

/// A cached answer: the active config, or `None` for "no such active config".
type Entry = Option<Arc<ConfigSnapshot>>;

/// Bounded cache of config snapshots by slug, with negative caching and single-flight loads.
pub struct SnapshotCache {
    entries: Cache<Slug, Entry>,
    /// Bumped by every invalidation; loads store their result only if it did not move.
    generation: Mutex<u64>,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("len", &self.entries.len())
            .field("capacity", &self.entries.capacity())
            .finish_non_exhaustive()
    }
}

impl SnapshotCache {
    /// A cache holding about `capacity` slugs (at least 1), evicting the least useful ones
    /// beyond that.
    pub fn new(capacity: usize) -> Self {
        SnapshotCache {
            entries: Cache::new(capacity.max(1)),
            generation: Mutex::new(0),
        }
    }

    /// The cached answer for `slug`: `None` when not cached, `Some(None)` when cached as "no
    /// such active config", `Some(Some(snapshot))` when cached. Takes the slug's text so the hot
    /// path can look up a request's slug as it came (slugs are stored in lower case; other
    /// spellings miss and are parsed by the caller).
    pub fn get(&self, slug: &(impl Borrow<str> + ?Sized)) -> Option<Option<Arc<ConfigSnapshot>>> {
        self.entries.get(slug.borrow())
    }

    /// The cached answer for `slug`, or `load`'s answer, cached unless an invalidation happened
    /// while it ran. Concurrent callers that miss the same slug wait for one load.
    ///
    /// # Errors
    /// `load`'s error, which is not cached: the next call loads again.
    pub async fn get_or_load<F, Fut>(
        &self,
        slug: &Slug,
        load: F,
    ) -> Result<Option<Arc<ConfigSnapshot>>, domain::Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<ConfigSnapshot>, domain::Error>>,
    {
        let guard = match self.entries.get_value_or_guard_async(slug).await {
            Ok(entry) => return Ok(entry),
            Err(guard) => guard,
        };
        let started = self.generation();
        // On error the guard drops without a value: a waiting caller takes over the load.
        let entry: Entry = load().await?.map(Arc::new);
        let generation = self.lock_generation();
        if *generation == started {
            // Fails only if the placeholder was removed meanwhile, which happens only through an
            // invalidation, and that would have moved the generation.
            let _ = guard.insert(entry.clone());
        }
        drop(generation);
        Ok(entry)
    }

    /// Drops the cached answer for `slug`, and stops loads in flight from caching theirs.
    pub fn invalidate(&self, slug: &Slug) {
        let mut generation = self.lock_generation();
        *generation += 1;
        self.entries.remove(slug);
    }

    /// Drops every cached answer, and stops loads in flight from caching theirs.
    pub fn clear(&self) {
        let mut generation = self.lock_generation();
        *generation += 1;
        self.entries.clear();
    }

    /// Number of cached slugs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn generation(&self) -> u64 {
        *self.lock_generation()
    }

    fn lock_generation(&self) -> std::sync::MutexGuard<'_, u64> {
        // The guarded value is a plain counter, consistent even after a panic elsewhere.
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
