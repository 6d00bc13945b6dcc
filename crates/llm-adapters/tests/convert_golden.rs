//! Golden transcripts: for every (client, upstream) pair, the upstream's real-shaped SSE
//! transcript (`convert/<upstream>_stream_tools.sse`: text, two parallel tool calls, usage),
//! converted for a client that sent its format's request fixture, must equal
//! `convert/golden/<upstream>_to_<client>.sse` byte for byte once generated ids and timestamps
//! are normalised (ids the converter mints become `<id>`, creation times it stamps become 0).
//! The goldens pin what each client sees: event names and order, where usage sits (OpenAI's
//! separate `choices: []` chunk, Anthropic's `message_start` and `message_delta`, Responses'
//! `response.completed`), and the ids' prefixes.
//!
//! After a deliberate change, rewrite them with `UPDATE_GOLDEN=1 cargo test -p llm-adapters
//! --test convert_golden` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use llm_adapters::{ClientFormat, Conversion};
use support::{ALL_FORMATS, fixture};

fn file_stem(format: ClientFormat) -> &'static str {
    match format {
        ClientFormat::Openai => "openai_chat",
        ClientFormat::OpenaiResponses => "openai_responses",
        ClientFormat::Anthropic => "anthropic_messages",
        ClientFormat::Gemini => "gemini",
    }
}

/// The streamed request of a client format: action, query and body.
fn client_request(client: ClientFormat) -> (&'static str, &'static str, Vec<u8>) {
    match client {
        ClientFormat::Openai => (
            "v1/chat/completions",
            "",
            fixture("convert/openai_chat_request.json"),
        ),
        ClientFormat::OpenaiResponses => (
            "v1/responses",
            "",
            fixture("convert/openai_responses_request.json"),
        ),
        ClientFormat::Anthropic => (
            "v1/messages",
            "",
            fixture("convert/anthropic_messages_request.json"),
        ),
        ClientFormat::Gemini => (
            "v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "alt=sse",
            fixture("convert/gemini_generate_request.json"),
        ),
    }
}

/// The client stream for `upstream`'s transcript, converted for a client that sent `body`.
fn convert(client: ClientFormat, upstream: ClientFormat, body: &[u8]) -> String {
    let since = now();
    let (action, query, _) = client_request(client);
    let converted = Conversion::between(client, upstream)
        .unwrap()
        .request(action, query, body)
        .unwrap();
    let transcript = fixture(&format!("convert/{}_stream_tools.sse", file_stem(upstream)));
    let mut whole = converted.stream_converter();
    let mut out = whole.push(&transcript).to_vec();
    out.extend_from_slice(&whole.finish());
    // The same bytes whatever the cuts: one byte at a time here.
    let mut bytewise = converted.stream_converter();
    let mut cut: Vec<u8> = Vec::new();
    for byte in &transcript {
        cut.extend_from_slice(&bytewise.push(std::slice::from_ref(byte)));
    }
    cut.extend_from_slice(&bytewise.finish());
    let (out, cut) = (
        String::from_utf8(out).unwrap(),
        String::from_utf8(cut).unwrap(),
    );
    assert_eq!(
        normalise(&out, since),
        normalise(&cut, since),
        "{client:?} ← {upstream:?}"
    );
    out
}

/// Whether `bytes` is a minted id's random tail: 24 lower-case hex digits.
fn is_minted_tail(bytes: &[u8]) -> bool {
    bytes.len() == 24 && bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Replaces what the converter mints per run: ids (`<prefix>` + 24 hex digits, closing a JSON
/// string) become `<prefix><id>`, and `created` / `created_at` values from this run (at or
/// after `since`) become 0. Everything else, upstream ids and times included, stays.
fn normalise(text: &str, since: u64) -> String {
    let bytes = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if matches!(b, b'_' | b'-')
            && bytes.get(i + 25) == Some(&b'"')
            && is_minted_tail(&bytes[i + 1..i + 25])
        {
            out.push(b);
            out.extend_from_slice(b"<id>");
            i += 25;
            continue;
        }
        let mut stamped = false;
        for key in [&b"\"created\":"[..], &b"\"created_at\":"[..]] {
            if bytes[i..].starts_with(key) {
                let digits_start = i + key.len();
                let digits_end = bytes[digits_start..]
                    .iter()
                    .position(|d| !d.is_ascii_digit())
                    .map_or(bytes.len(), |n| digits_start + n);
                let value: Option<u64> = std::str::from_utf8(&bytes[digits_start..digits_end])
                    .ok()
                    .and_then(|d| d.parse().ok());
                if value.is_some_and(|v| v >= since) {
                    out.extend_from_slice(key);
                    out.push(b'0');
                    i = digits_end;
                    stamped = true;
                }
                break;
            }
        }
        if !stamped {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Compares `actual` with the golden file `name`, or writes it under `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, actual: &str) -> Option<String> {
    let path = format!(
        "{}/tests/fixtures/convert/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {path}: {e} (write it with UPDATE_GOLDEN=1)"));
    (expected != actual).then(|| {
        let first_diff = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        format!(
            "{name} differs at line {}:\n  expected: {}\n  actual:   {}",
            first_diff + 1,
            expected.lines().nth(first_diff).unwrap_or("<end>"),
            actual.lines().nth(first_diff).unwrap_or("<end>")
        )
    })
}

#[test]
fn every_pair_matches_its_golden_transcript() {
    let since = now();
    let mut failures = Vec::new();
    for client in ALL_FORMATS {
        for upstream in ALL_FORMATS.into_iter().filter(|u| *u != client) {
            let (_, _, body) = client_request(client);
            let actual = normalise(&convert(client, upstream, &body), since);
            let name = format!("{}_to_{}.sse", file_stem(upstream), file_stem(client));
            failures.extend(check_golden(&name, &actual));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn openai_clients_that_ask_no_usage_get_none() {
    let since = now();
    let (_, _, body) = client_request(ClientFormat::Openai);
    let mut request: serde_json::Value = serde_json::from_slice(&body).unwrap();
    request.as_object_mut().unwrap().remove("stream_options");
    let body = serde_json::to_vec(&request).unwrap();
    for upstream in [ClientFormat::Anthropic, ClientFormat::Gemini] {
        let actual = normalise(&convert(ClientFormat::Openai, upstream, &body), since);
        assert!(!actual.contains("usage"), "{actual}");
        let name = format!("{}_to_openai_chat_without_usage.sse", file_stem(upstream));
        if let Some(failure) = check_golden(&name, &actual) {
            panic!("{failure}");
        }
    }
}

#[test]
fn normalising_replaces_only_what_the_converter_mints() {
    let since = 1_750_000_000;
    let text = r#"{"id":"resp_0123456789abcdef01234567","call":"call_Wd7XqP3rYQqB8tYv","created":1800000000,"created_at":1742380200,"x":"msg_0123456789abcdef0123456"}"#;
    assert_eq!(
        normalise(text, since),
        r#"{"id":"resp_<id>","call":"call_Wd7XqP3rYQqB8tYv","created":0,"created_at":1742380200,"x":"msg_0123456789abcdef0123456"}"#
    );
}
