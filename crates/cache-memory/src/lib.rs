//! In-process cache adapters of API Key Rotator: the lightweight edition's rotation state, usage
//! counters and config-change notices ([`MemoryCache`]), the client-key limiter
//! ([`MemoryClientLimiter`]), the bounded snapshot cache of active configs that every edition's
//! proxy hot path reads ([`SnapshotCache`]), and an in-memory request log ([`MemoryRequestLog`])
//! for tests and database-free setups.
//!
//! Hot-path operations are lock-free or take one shard read lock; nothing here does I/O. The
//! building blocks [`UsageAggregator`] and [`NoticeBus`] are public so the Redis adapter aggregates
//! usage and fans out notices within a process exactly the same way.

mod client_limits;
mod events;
mod leases;
mod memory;
mod request_log;
mod rotation;
mod sharded;
mod snapshot;
mod usage;

pub use client_limits::MemoryClientLimiter;
pub use events::{DEFAULT_NOTICE_CAPACITY, NoticeBus};
pub use leases::MemoryLeases;
pub use memory::{MemoryCache, MemoryCacheOptions};
pub use request_log::MemoryRequestLog;
pub use snapshot::SnapshotCache;
pub use usage::UsageAggregator;
