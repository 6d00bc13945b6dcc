//! The pure pieces every LLM request goes through, so that a regression shows without a load
//! test: client authentication (including the `api_key`-in-body check), header filtering,
//! upstream key injection, URL joining, the whole upstream request preparation, and SSE
//! framing of a real-shaped OpenAI stream (parse, and parse plus re-encode).
//!
//! Run with `cargo bench -p llm-adapters --bench hot_path`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use domain::{ApiFormat, HttpUrl, LlmTarget, OutputFormat};
use llm_adapters::{
    ClientFormat, SseEncoder, SseParser, authenticate, forward_llm_request_header, inject_key,
    join_url, llm_url, prepare_llm_request,
};

/// What the official OpenAI Python SDK sends with a chat completion, plus a proxy's additions.
const OPENAI_SDK_HEADERS: &[(&str, &str)] = &[
    ("host", "127.0.0.1:8000"),
    ("accept-encoding", "gzip, deflate"),
    ("connection", "keep-alive"),
    ("accept", "application/json"),
    ("content-type", "application/json"),
    ("user-agent", "OpenAI/Python 1.99.1"),
    ("x-stainless-lang", "python"),
    ("x-stainless-package-version", "1.99.1"),
    ("x-stainless-os", "Linux"),
    ("x-stainless-arch", "x64"),
    ("x-stainless-runtime", "CPython"),
    ("x-stainless-runtime-version", "3.11.7"),
    ("authorization", "Bearer sk-proxy-0123456789abcdef"),
    ("x-stainless-async", "false"),
    ("x-stainless-retry-count", "0"),
    ("x-stainless-read-timeout", "600"),
    ("content-length", "97"),
];

const CHAT_BODY: &[u8] =
    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":false}"#;

const OPENAI_STREAM: &[u8] = include_bytes!("../tests/fixtures/openai_chat_stream.sse");

fn lookup(name: &str) -> Option<&'static str> {
    OPENAI_SDK_HEADERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
}

fn openai_target() -> LlmTarget {
    LlmTarget {
        target_base_url: "https://api.openai.com/v1".parse::<HttpUrl>().unwrap(),
        api_format: ApiFormat::OpenaiCompatible,
        output_format: OutputFormat::None,
        key_placement: None,
    }
}

fn request_side(c: &mut Criterion) {
    let mut group = c.benchmark_group("request");

    group.bench_function("authenticate_openai_bearer", |b| {
        b.iter(|| {
            let auth =
                authenticate(ClientFormat::Openai, lookup, "", black_box(CHAT_BODY)).unwrap();
            black_box(auth.key.is_some())
        });
    });

    group.bench_function("forward_llm_request_header_sdk_set", |b| {
        b.iter(|| {
            let connection = lookup("connection");
            let mut kept = 0_usize;
            for (name, _) in black_box(OPENAI_SDK_HEADERS) {
                if *name != "content-length"
                    && forward_llm_request_header(name, ClientFormat::Openai, connection)
                {
                    kept += 1;
                }
            }
            black_box(kept)
        });
    });

    group.bench_function("inject_key_openai", |b| {
        b.iter(|| {
            black_box(inject_key(
                ApiFormat::OpenaiCompatible,
                None,
                black_box("sk-upstream-0123456789abcdefghijklmnopqrstuvwxyz"),
                lookup,
            ))
        });
    });

    group.bench_function("inject_key_anthropic", |b| {
        b.iter(|| {
            black_box(inject_key(
                ApiFormat::AnthropicNative,
                None,
                black_box("sk-ant-upstream-0123456789abcdefghijklmnopqrstuvwxyz"),
                lookup,
            ))
        });
    });

    group.bench_function("llm_url_with_duplicate_version", |b| {
        b.iter(|| {
            black_box(llm_url(
                black_box("https://api.openai.com/v1"),
                black_box("v1/chat/completions"),
                "",
            ))
            .unwrap()
        });
    });

    group.bench_function("join_url_with_queries", |b| {
        b.iter(|| {
            black_box(join_url(
                black_box("https://example.openai.azure.com/openai/deployments/gpt?api-version=2024-06-01"),
                black_box("chat/completions"),
                black_box("timeout=30"),
            ))
            .unwrap()
        });
    });

    let target = openai_target();
    group.bench_function("prepare_llm_request_openai", |b| {
        b.iter(|| {
            black_box(
                prepare_llm_request(
                    &target,
                    black_box("chat/completions"),
                    "",
                    black_box("sk-upstream-0123456789abcdefghijklmnopqrstuvwxyz"),
                    lookup,
                )
                .unwrap(),
            )
        });
    });
    group.finish();
}

/// The stream cut the way it arrives from an upstream: one network read per event.
fn per_event_chunks() -> Vec<&'static [u8]> {
    let mut chunks = Vec::new();
    let mut rest = OPENAI_STREAM;
    while let Some(end) = rest.windows(2).position(|w| w == b"\n\n") {
        let (chunk, tail) = rest.split_at(end + 2);
        chunks.push(chunk);
        rest = tail;
    }
    if !rest.is_empty() {
        chunks.push(rest);
    }
    chunks
}

fn sse(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_openai_stream");
    group.throughput(Throughput::Bytes(OPENAI_STREAM.len() as u64));
    let per_event = per_event_chunks();

    group.bench_function("parse_one_read_per_event", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut events = 0_usize;
            for chunk in &per_event {
                parser.feed(black_box(chunk), |_| events += 1).unwrap();
            }
            black_box(events)
        });
    });

    group.bench_function("parse_in_7_byte_reads", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut events = 0_usize;
            for chunk in OPENAI_STREAM.chunks(7) {
                parser.feed(black_box(chunk), |_| events += 1).unwrap();
            }
            black_box(events)
        });
    });

    group.bench_function("parse_and_reencode_per_event", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut encoder = SseEncoder::new();
            let mut bytes = 0_usize;
            for chunk in &per_event {
                parser
                    .feed(black_box(chunk), |event| {
                        bytes += encoder.encode(&event).len()
                    })
                    .unwrap();
            }
            black_box(bytes)
        });
    });
    group.finish();
}

criterion_group!(benches, request_side, sse);
criterion_main!(benches);
