//! Redis adapters of API Key Rotator's enterprise edition: [`RedisCache`] keeps the round-robin
//! counters, cooldowns, key health and usage totals in Redis, so every instance behind a load
//! balancer rotates over one counter per config and sees the others' cooldowns and failures on
//! its very next read; it also carries config-change notices between instances over pub/sub.
//!
//! It also implements `ClientLimiter`: client-key limits shared by the fleet, one Lua script per
//! admission (see the `client_limits` module), or per lease of requests for a key whose only
//! limit is a large `rpm` (see the `request_leases` module); the concurrency slots an instance
//! holds are renewed in the background for as long as it holds them (see the `slot_renewal`
//! module).
//!
//! Commands go through a client opened on the calling thread, so they never cross threads (see
//! the `local_clients` module); the shared pool serves until that client has connected.
//!
//! Built from [`RedisOptions`] (URL, trusted TLS authorities, key namespace, pool size, timeouts,
//! rotation block size). The URL's scheme picks standalone, Sentinel or Cluster, with or without
//! TLS, and the client library follows failovers and slot moves itself; every key of a namespace
//! carries the hash tag `{namespace}`, so each script and pipeline touches one cluster slot.
//! Every failure is reported as `domain::Error::Unavailable { dependency: Cache, .. }` with a
//! sanitised message. In-process aggregation and fan-out reuse `cache-memory`'s building blocks.
//!
//! By default every selection costs one round trip to Redis. With a rotation block size above 1
//! (*block mode*) an instance reserves counter values in blocks and keeps a local mirror of key
//! health that pub/sub keeps exact, so most selections need none; rotation across the fleet is
//! then fair to within one block per instance (see the `cache` module).

mod blocks;
mod cache;
mod client_limits;
mod convert;
mod keys;
mod local_clients;
mod mirror;
mod options;
mod request_leases;
mod slot_renewal;
mod subscription;
mod tls;

pub use cache::RedisCache;
pub use options::RedisOptions;
