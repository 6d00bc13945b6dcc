//! Real-shaped request bodies and SSE transcripts of each provider, run through the public API:
//! the parser must yield the same events however the transcript is cut into chunks, and body
//! rules (body `api_key`, stream flag) must hold on realistic bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use llm_adapters::{
    ClientFormat, OwnedSseEvent, SseParser, is_streaming_request, take_body_api_key,
};
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn parse_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<OwnedSseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        parser
            .feed(chunk, |event| events.push(event.to_owned_event()))
            .unwrap();
    }
    parser.finish();
    while let Some(event) = parser.next_event().unwrap() {
        events.push(event.to_owned_event());
    }
    events
}

fn parse_whole(bytes: &[u8]) -> Vec<OwnedSseEvent> {
    parse_chunks([bytes])
}

/// Every two-way cut and the byte-by-byte feed give the same events as the whole transcript.
fn assert_split_invariant(bytes: &[u8]) -> Vec<OwnedSseEvent> {
    let whole = parse_whole(bytes);
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(parse_chunks([a, b]), whole, "cut at byte {cut}");
    }
    assert_eq!(parse_chunks(bytes.chunks(1)), whole, "byte by byte");
    whole
}

fn types(events: &[OwnedSseEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.event.as_deref().unwrap_or("message"))
        .collect()
}

#[test]
fn openai_chat_stream_transcript() {
    let events = assert_split_invariant(&fixture("openai_chat_stream.sse"));
    assert_eq!(events.len(), 11);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Bonjour ! Comment ça va 😀 ?");
}

#[test]
fn openai_responses_stream_transcript() {
    let events = assert_split_invariant(&fixture("openai_responses_stream.sse"));
    assert_eq!(
        types(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.completed",
        ]
    );
    for event in &events {
        let value: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(value["type"], event.event.as_deref().unwrap());
    }
}

#[test]
fn anthropic_messages_stream_transcript() {
    let events = assert_split_invariant(&fixture("anthropic_messages_stream.sse"));
    assert_eq!(
        types(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["delta"]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "Hello! How can I help you today? 🌍");
}

#[test]
fn gemini_stream_transcript_with_crlf_line_endings() {
    let bytes = fixture("gemini_stream.sse");
    assert!(
        bytes.windows(4).any(|w| w == b"\r\n\r\n"),
        "fixture keeps CRLF"
    );
    let events = assert_split_invariant(&bytes);
    assert_eq!(events.len(), 3);
    let last: Value = serde_json::from_str(&events[2].data).unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    let second: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(
        second["candidates"][0]["content"]["parts"][0]["text"],
        " une réponse\nsur deux lignes."
    );
}

#[test]
fn openai_request_body_key_is_removed_byte_exactly() {
    let body = fixture("openai_chat_request_with_api_key.json");
    let found = take_body_api_key(&body).unwrap().unwrap();
    assert_eq!(found.key, "sk-proxy-fixture-0123456789");
    let rewritten = String::from_utf8(found.body).unwrap();
    let original = String::from_utf8(body).unwrap();
    assert_eq!(
        rewritten,
        original.replace("  \"api_key\": \"sk-proxy-fixture-0123456789\",\n", "")
    );
    assert!(
        rewritten.contains("\"temperature\": 0.70"),
        "numbers kept as sent"
    );
    let value: Value = serde_json::from_str(&rewritten).unwrap();
    assert!(value.get("api_key").is_none());
    assert_eq!(value["metadata"]["api_key"], "nested-not-a-credential");
    assert!(is_streaming_request(
        ClientFormat::Openai,
        "v1/chat/completions",
        rewritten.as_bytes()
    ));
}

#[test]
fn anthropic_and_gemini_request_bodies() {
    let anthropic = fixture("anthropic_messages_request.json");
    assert!(is_streaming_request(
        ClientFormat::Anthropic,
        "v1/messages",
        &anthropic
    ));
    assert_eq!(take_body_api_key(&anthropic).unwrap(), None);

    let gemini = fixture("gemini_generate_request.json");
    assert!(!is_streaming_request(
        ClientFormat::Gemini,
        "v1beta/models/gemini-2.5-flash:generateContent",
        &gemini
    ));
    assert!(is_streaming_request(
        ClientFormat::Gemini,
        "v1beta/models/gemini-2.5-flash:streamGenerateContent",
        &gemini
    ));
}
