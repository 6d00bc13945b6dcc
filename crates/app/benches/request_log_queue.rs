//! The hot-path cost of the request log (SPEC §10): what a proxied request pays when its
//! exchange ends, `RequestLogQueue::exchange_finished`, which builds the `RequestRecord` (the
//! clock read, the path copy) and `try_send`s it into the bounded queue; and the same push into
//! a full queue, which drops the record and counts the drop instead.
//!
//! The writer is never run: the queue only fills, so each measured push lands in a queue with
//! room (a fresh one every [`CHUNK`] pushes, made and dropped outside the timing) or, for the
//! drop path, in a queue that is always full.
//!
//! Run with `cargo bench -p app --bench request_log_queue`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::http::Method;
use app::{
    completion::{ExchangeFacts, ExchangeObserver},
    request_log::{DropCounter, RequestLogQueue},
};
use cache_memory::MemoryRequestLog;
use criterion::{Criterion, criterion_group, criterion_main};
use domain::{ApiKeyId, ClientKeyId, ProxyConfigId};
use llm_adapters::TokenUsage;
use prometheus_client::metrics::counter::Counter;

/// Pushes into one queue before it is replaced: the queue's capacity.
const CHUNK: u64 = 10_000;

/// A streamed LLM exchange through a client key, as the proxy reports it.
fn facts() -> ExchangeFacts {
    ExchangeFacts {
        config_id: ProxyConfigId(3),
        client_key_id: Some(ClientKeyId(12)),
        api_key_id: Some(ApiKeyId(31)),
        method: Method::POST,
        path: "/llm/openai/v1/chat/completions".into(),
        status: 200,
        outcome: "success",
        attempts: 1,
        head_latency: Duration::from_millis(180),
        total_latency: Duration::from_millis(2_400),
        streamed: true,
        bytes_in: 1_800,
        bytes_out: 12_000,
        tokens: Some(TokenUsage {
            input: 420,
            output: 310,
        }),
        error_code: None,
    }
}

fn queue(capacity: usize) -> (RequestLogQueue, impl Sized, Arc<DropCounter>) {
    let drops = Arc::new(DropCounter::new(Counter::default()));
    let (queue, writer) = RequestLogQueue::new(
        capacity,
        Arc::new(MemoryRequestLog::default()),
        drops.clone(),
    );
    (queue, writer, drops)
}

fn request_log_queue(c: &mut Criterion) {
    let facts = facts();
    let mut group = c.benchmark_group("request_log_queue");
    group.bench_function("push_one_record", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let pushes = left.min(CHUNK);
                let (queue, writer, drops) = queue(CHUNK as usize);
                let started = Instant::now();
                for _ in 0..pushes {
                    queue.exchange_finished(black_box(&facts));
                }
                spent += started.elapsed();
                assert_eq!(drops.total(), 0, "every push had room");
                // The queued records are freed outside the timing.
                drop((queue, writer));
                left -= pushes;
            }
            spent
        });
    });
    group.bench_function("push_into_full_queue_drops", |b| {
        let (queue, _writer, drops) = queue(1);
        queue.exchange_finished(&facts);
        b.iter(|| queue.exchange_finished(black_box(&facts)));
        assert!(drops.total() > 0, "the pushes were dropped");
    });
    group.finish();
}

criterion_group!(benches, request_log_queue);
criterion_main!(benches);
