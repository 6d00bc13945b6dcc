//! Redis adapters of API Key Rotator's enterprise edition: [`RedisCache`] keeps the round-robin
//! counters, cooldowns, key health and usage totals in Redis, so every instance behind a load
//! balancer rotates over one counter per config and sees the others' cooldowns and failures on
//! its very next read; it also carries config-change notices between instances over pub/sub.
//!
//! Built from [`RedisOptions`] (URL, key namespace, pool size, timeouts). Every failure is
//! reported as `domain::Error::Unavailable { dependency: Cache, .. }` with a sanitised message.
//! In-process aggregation and fan-out reuse `cache-memory`'s building blocks.

mod cache;
mod convert;
mod keys;
mod options;
mod subscription;

pub use cache::RedisCache;
pub use options::RedisOptions;
