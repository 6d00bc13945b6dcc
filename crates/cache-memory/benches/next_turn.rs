//! "Next counter" on the in-process rotation state: `next_turn` for a config with 3 keys, one of
//! them cooling down. The call never suspends, so it is polled once, with no runtime in the way.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use cache_memory::MemoryCache;
use chrono::{TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use domain::{ApiKeyId, ProxyConfigId, RotationState};
use futures_util::FutureExt;

fn next_turn(c: &mut Criterion) {
    let cache = MemoryCache::default();
    let config = ProxyConfigId(1);
    let keys = [ApiKeyId(1), ApiKeyId(2), ApiKeyId(3)];
    cache
        .cool_down(keys[1], Utc::now() + TimeDelta::hours(1))
        .now_or_never()
        .unwrap()
        .unwrap();
    c.bench_function("memory next_turn (3 keys)", |b| {
        b.iter(|| {
            let turn = cache
                .next_turn(black_box(config), black_box(&keys))
                .now_or_never()
                .expect("the in-process state never suspends")
                .unwrap();
            black_box(turn)
        });
    });
}

criterion_group!(benches, next_turn);
criterion_main!(benches);
