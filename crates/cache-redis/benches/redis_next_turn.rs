//! "Next counter" on the Redis rotation state: `next_turn` for a config with 3 keys, measured as
//! sequential calls on a tokio runtime against `TEST_REDIS_URL`: without counter blocks (one
//! `INCR` plus the health reads, pipelined in one round trip per call) and with blocks of 32 (one
//! such round trip per 32 calls, the others served from memory). Without `TEST_REDIS_URL` the
//! benchmark says so and measures nothing. Any topology's URL may be given (`redis-cluster://`,
//! `redis-sentinel://`, `rediss://` with `TEST_REDIS_TLS_CA_CERT_FILE`) to compare them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::{hint::black_box, time::Instant};

use cache_redis::{RedisCache, RedisOptions};
use chrono::{TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use domain::{ApiKeyId, ProxyConfigId, RotationState};
use fred::prelude::{Builder, ClientLike, Config, KeysInterface};

fn next_turn(c: &mut Criterion) {
    let Ok(url) = std::env::var("TEST_REDIS_URL") else {
        eprintln!("skipped: TEST_REDIS_URL unset");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for block_size in [1, 32] {
        measure(c, &runtime, &url, block_size);
    }
}

fn measure(c: &mut Criterion, runtime: &tokio::runtime::Runtime, url: &str, block_size: u32) {
    let namespace = format!("akr-bench-{}", domain::contract::unique_suffix());
    let cache = runtime
        .block_on(RedisCache::connect(RedisOptions {
            url: url.to_owned(),
            tls_ca_cert_file: std::env::var_os("TEST_REDIS_TLS_CA_CERT_FILE")
                .filter(|_| url.starts_with("rediss"))
                .map(Into::into),
            namespace: namespace.clone(),
            rotation_block_size: block_size,
            ..RedisOptions::default()
        }))
        .expect("TEST_REDIS_URL is set, so Redis must be reachable");
    let config = ProxyConfigId(1);
    let keys = [ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)];
    runtime
        .block_on(cache.cool_down(keys[1], Utc::now() + TimeDelta::hours(1)))
        .unwrap();
    let name = match block_size {
        1 => "redis next_turn (3 keys)".to_owned(),
        n => format!("redis next_turn (3 keys, blocks of {n})"),
    };
    c.bench_function(&name, |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    black_box(cache.next_turn(config, &keys).await.unwrap());
                }
                start.elapsed()
            })
        });
    });
    runtime.block_on(async {
        cache.forget(&keys).await.unwrap();
        let admin = Builder::from_config(Config::from_url(url).unwrap())
            .build()
            .unwrap();
        // A plain client trusts only the system's authorities: a private-CA TLS server keeps
        // the two keys.
        if admin.init().await.is_err() {
            eprintln!("left {{{namespace}}}:rr:1 and {{{namespace}}}:health-version behind");
            return;
        }
        let _: i64 = admin
            .del(vec![
                format!("{{{namespace}}}:rr:1"),
                format!("{{{namespace}}}:health-version"),
            ])
            .await
            .unwrap();
        admin.quit().await.ok();
    });
}

criterion_group!(benches, next_turn);
criterion_main!(benches);
