//! Bounded fuzzing on stable Rust (the cargo-fuzz targets in `fuzz/` need nightly): thousands
//! of pseudo-random inputs for the SSE parser and for every request, response and stream
//! converter, asserting that nothing panics and that what comes out is still well-formed (a
//! JSON body, an SSE stream that parses). Inputs are raw bytes, JSON built from the formats'
//! own field names and type tags (so decoding gets past the first `match`), and the fixtures
//! with random bytes flipped, cut, inserted and repeated.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use llm_adapters::{ClientFormat, Conversion, SseParser};
use proptest::prelude::*;
use serde_json::Value;
use support::{ALL_FORMATS, fixture, sse_events};

const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "id",
    "tool_call_id",
    "tools",
    "parameters",
    "tool_choice",
    "stream",
    "max_tokens",
    "system",
    "input",
    "instructions",
    "contents",
    "parts",
    "functionCall",
    "functionResponse",
    "args",
    "response",
    "inlineData",
    "fileData",
    "mimeType",
    "data",
    "fileUri",
    "generationConfig",
    "candidates",
    "finishReason",
    "usageMetadata",
    "choices",
    "delta",
    "index",
    "finish_reason",
    "usage",
    "message",
    "content_block",
    "partial_json",
    "stop_reason",
    "output",
    "item",
    "call_id",
    "output_index",
    "error",
    "image_url",
    "url",
    "source",
    "input_schema",
    "tool_use_id",
    "systemInstruction",
    "stop",
    "stop_sequences",
    "temperature",
    "top_p",
    "maxOutputTokens",
    "status",
    "incomplete_details",
    "reason",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "thought",
    "is_error",
    "media_type",
    "functionDeclarations",
    "parametersJsonSchema",
    "toolConfig",
    "functionCallingConfig",
    "mode",
    "allowedFunctionNames",
    "previous_response_id",
    "max_output_tokens",
    "code",
    "responseId",
    "modelVersion",
    "stop_sequence",
    "cache_read_input_tokens",
];

const TAGS: &[&str] = &[
    "user",
    "assistant",
    "model",
    "tool",
    "system",
    "developer",
    "function",
    "text",
    "image_url",
    "tool_use",
    "tool_result",
    "image",
    "base64",
    "url",
    "message",
    "function_call",
    "function_call_output",
    "input_text",
    "output_text",
    "input_image",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "text_delta",
    "input_json_delta",
    "message_delta",
    "message_stop",
    "thinking",
    "response.created",
    "response.output_item.added",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "auto",
    "any",
    "required",
    "none",
    "AUTO",
    "ANY",
    "NONE",
    "tool_calls",
    "length",
    "end_turn",
    "completed",
    "incomplete",
    "max_output_tokens",
    "data:image/png;base64,AAAA",
    "data:;base64,",
    "data:image/png,AAAA",
    "{}",
    "{\"a\":",
    "[DONE]",
    "https://x.example/a.png",
    "",
    "é😀",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::sample::select(TAGS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(KEYS).prop_map(str::to_owned),
                    "[a-z]{1,4}"
                ],
                inner,
                0..7,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON objects shaped like requests (top-level keys from the vocabulary).
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::btree_map(prop::sample::select(KEYS), json_value(), 0..8).prop_map(|m| {
        let map: serde_json::Map<String, Value> =
            m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        serde_json::to_vec(&Value::Object(map)).unwrap()
    })
}

const FIXTURES: &[&str] = &[
    "convert/openai_chat_request.json",
    "convert/anthropic_messages_request.json",
    "convert/gemini_generate_request.json",
    "convert/openai_responses_request.json",
    "convert/openai_chat_response.json",
    "convert/anthropic_messages_response.json",
    "convert/gemini_generate_response.json",
    "convert/openai_responses_response.json",
    "convert/openai_chat_stream_tools.sse",
    "convert/anthropic_messages_stream_tools.sse",
    "convert/gemini_stream_tools.sse",
    "convert/openai_responses_stream_tools.sse",
    "openai_chat_stream.sse",
    "anthropic_messages_stream.sse",
    "gemini_stream.sse",
    "openai_responses_stream.sse",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Repeat(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Flip(at, b)),
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..8),
                prop::sample::select(vec![
                    b"\n\n".to_vec(),
                    b"\r\n".to_vec(),
                    b"data: ".to_vec(),
                    b"event: error\n".to_vec(),
                    b"{".to_vec(),
                    b"}".to_vec(),
                    b"\"".to_vec(),
                    b"null".to_vec(),
                    b"[".to_vec(),
                ]),
            ]
        )
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), 1usize..200).prop_map(|(at, n)| Mutation::Repeat(at, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutated_fixture() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(FIXTURES),
        prop::collection::vec(mutation(), 1..6),
    )
        .prop_map(|(name, mutations)| {
            let mut bytes = fixture(name);
            for m in mutations {
                let len = bytes.len().max(1);
                match m {
                    Mutation::Flip(at, b) => {
                        if let Some(byte) = bytes.get_mut(at % len) {
                            *byte ^= b;
                        }
                    }
                    Mutation::Delete(at, n) => {
                        let start = (at % len).min(bytes.len());
                        let end = (start + n).min(bytes.len());
                        bytes.drain(start..end);
                    }
                    Mutation::Insert(at, extra) => {
                        let at = (at % len).min(bytes.len());
                        bytes.splice(at..at, extra);
                    }
                    Mutation::Repeat(at, n) => {
                        let start = (at % len).min(bytes.len());
                        let end = (start + n).min(bytes.len());
                        let copy = bytes[start..end].to_vec();
                        bytes.splice(end..end, copy);
                    }
                    Mutation::Truncate(at) => bytes.truncate(at % len),
                }
            }
            bytes
        })
}

/// Any input: raw bytes, vocabulary JSON, or a mutated fixture.
fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_body(),
        mutated_fixture(),
    ]
}

/// SSE streams whose events carry vocabulary JSON (or junk), named or not.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let event = (
        prop::option::of(prop::sample::select(TAGS)),
        prop_oneof![
            json_value().prop_map(|v| v.to_string()),
            json_body().prop_map(|b| String::from_utf8(b).unwrap()),
            Just("[DONE]".to_owned()),
            ".{0,20}",
        ],
        prop::sample::select(vec!["\n", "\r\n", "\r"]),
    )
        .prop_map(|(name, data, eol)| {
            let mut frame = String::new();
            if let Some(name) = name {
                frame.push_str(&format!("event: {name}{eol}"));
            }
            frame.push_str(&format!("data: {data}{eol}{eol}"));
            frame
        });
    prop_oneof![
        prop::collection::vec(event, 0..12).prop_map(|frames| frames.concat().into_bytes()),
        mutated_fixture(),
        prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn pairs() -> Vec<(ClientFormat, ClientFormat)> {
    ALL_FORMATS
        .into_iter()
        .flat_map(|a| ALL_FORMATS.into_iter().map(move |b| (a, b)))
        .filter(|(a, b)| a != b)
        .collect()
}

fn actions(client: ClientFormat) -> [&'static str; 3] {
    match client {
        ClientFormat::Openai => ["v1/chat/completions", "chat/completions", "v1/models"],
        ClientFormat::OpenaiResponses => ["v1/responses", "responses/", "v1/responses/x/cancel"],
        ClientFormat::Anthropic => ["v1/messages", "messages", "v1/messages/count_tokens"],
        ClientFormat::Gemini => [
            "v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "v1beta/models/gemini-2.5-flash:generateContent",
            "v1beta/models/%2e%2e:generateContent",
        ],
    }
}

fn cut(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for p in points {
        chunks.push(bytes[start..p].to_vec());
        start = p;
    }
    chunks.push(bytes[start..].to_vec());
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn sse_parser_never_panics(bytes in input(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let mut parser = SseParser::with_max_event_bytes(4096);
        for chunk in cut(&bytes, &cuts) {
            let _ = parser.feed(&chunk, |_| {});
        }
        parser.finish();
        while let Ok(Some(_)) = parser.next_event() {}
    }

    #[test]
    fn request_converters_never_panic(body in input(), which in 0usize..3, query in "[a-z=&%]{0,12}") {
        for (client, upstream) in pairs() {
            let action = actions(client)[which];
            match Conversion::between(client, upstream).unwrap().request(action, &query, &body) {
                Ok(converted) => {
                    serde_json::from_slice::<Value>(&converted.body).unwrap();
                    prop_assert!(!converted.action.contains("/..:"));
                    prop_assert!(!converted.action.contains('?'));
                }
                Err(err) => prop_assert!(matches!(err.status(), 400 | 404)),
            }
        }
    }

    #[test]
    fn response_converters_never_panic(body in input(), status in prop_oneof![Just(200u16), Just(201), 100u16..600]) {
        for (client, upstream) in pairs() {
            let converted = Conversion::between(client, upstream).unwrap().response(status, &body);
            serde_json::from_slice::<Value>(&converted.body).unwrap();
            prop_assert!((100..600).contains(&converted.status));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn stream_converters_never_panic(bytes in sse_stream(), cuts in prop::collection::vec(any::<usize>(), 0..5)) {
        let chunks = cut(&bytes, &cuts);
        for (client, upstream) in pairs() {
            let mut stream = Conversion::between(client, upstream).unwrap().stream();
            let mut out = Vec::new();
            for chunk in &chunks {
                out.extend_from_slice(&stream.push(chunk));
            }
            out.extend_from_slice(&stream.finish());
            prop_assert!(stream.is_done());
            // The client gets a well-formed SSE stream of JSON events (or OpenAI's [DONE]).
            for event in sse_events(&out) {
                if event.data != "[DONE]" {
                    serde_json::from_str::<Value>(&event.data).unwrap();
                }
            }
        }
    }
}
