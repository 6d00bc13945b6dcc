//! Format conversion run on real-shaped fixtures through the public API, for every pair of
//! wire formats: the same conversation as a request in each client format must reach each
//! upstream format intact; upstream responses, errors and SSE transcripts (with tool calls,
//! streamed arguments and usage) must reach each client in its own shape and grammar, however
//! the transcript is cut into chunks; unknown upstream events are skipped and malformed ones
//! end the client stream with an error event in the client's format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use llm_adapters::{ClientFormat, Conversion, ConvertError, StreamFraming};
use serde_json::{Value, json};
use support::{
    ALL_FORMATS, Answer, Conversation, Item, Turn, end_turn_finish, fixture, read_request,
    read_response, read_stream, result_value, sse_events, tool_use_finish,
};

/// Every (client, upstream) pair of different wire formats, including OpenAI Responses as an
/// upstream (reachable through [`Conversion::between`]).
fn pairs() -> Vec<(ClientFormat, ClientFormat)> {
    let mut pairs = Vec::new();
    for client in ALL_FORMATS {
        for upstream in ALL_FORMATS {
            if client != upstream {
                pairs.push((client, upstream));
            }
        }
    }
    pairs
}

fn conversion(client: ClientFormat, upstream: ClientFormat) -> Conversion {
    Conversion::between(client, upstream).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// The fixture request of a client format, with its action and query.
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
            "alt=sse&key=proxy-key-123",
            fixture("convert/gemini_generate_request.json"),
        ),
    }
}

fn model_of(client: ClientFormat) -> &'static str {
    match client {
        ClientFormat::Openai => "gpt-4o-2024-08-06",
        ClientFormat::OpenaiResponses => "gpt-4.1-2025-04-14",
        ClientFormat::Anthropic => "claude-sonnet-4-5-20250929",
        ClientFormat::Gemini => "gemini-2.5-flash",
    }
}

/// The conversation every request fixture holds.
fn expected_conversation(client: ClientFormat, upstream: ClientFormat) -> Conversation {
    let weather_args = json!({"location": "Paris, France", "unit": "celsius"});
    let time_args = json!({"timezone": "Europe/Paris"});
    let stop_expressible =
        client != ClientFormat::OpenaiResponses && upstream != ClientFormat::OpenaiResponses;
    Conversation {
        model: Some(model_of(client).to_owned()),
        system: vec!["You are a helpful travel assistant.".to_owned()],
        turns: vec![
            (
                Turn::User,
                vec![
                    Item::Text(
                        "What's the weather where this photo was taken, and what time is it there?"
                            .to_owned(),
                    ),
                    Item::ImageUrl(
                        "https://upload.wikimedia.org/wikipedia/commons/4/4b/La_Tour_Eiffel.jpg"
                            .to_owned(),
                    ),
                    Item::ImageData {
                        mime: "image/png".to_owned(),
                        data: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==".to_owned(),
                    },
                ],
            ),
            (
                Turn::Assistant,
                vec![
                    Item::Text("Let me check both.".to_owned()),
                    Item::Call {
                        name: "get_weather".to_owned(),
                        args: weather_args,
                    },
                    Item::Call {
                        name: "get_time".to_owned(),
                        args: time_args,
                    },
                ],
            ),
            (
                Turn::Tool,
                vec![
                    Item::Result {
                        call: "get_weather".to_owned(),
                        content: json!({"temperature": 18, "conditions": "light rain"}),
                    },
                    Item::Result {
                        call: "get_time".to_owned(),
                        content: result_value("14:05"),
                    },
                ],
            ),
            (
                Turn::Assistant,
                vec![Item::Text(
                    "It is 18 °C with light rain in Paris, and 14:05 local time.".to_owned(),
                )],
            ),
            (
                Turn::User,
                vec![Item::Text(
                    "Thanks! Should I bring an umbrella tomorrow?".to_owned(),
                )],
            ),
        ],
        tools: vec![
            (
                "get_weather".to_owned(),
                Some("Get the current weather for a location".to_owned()),
                json!({"type": "object", "properties": {"location": {"type": "string", "description": "City and country"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}),
            ),
            (
                "get_time".to_owned(),
                Some("Get the local time in a time zone".to_owned()),
                json!({"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}),
            ),
        ],
        tool_choice: Some("auto".to_owned()),
        max_tokens: Some(512),
        temperature: Some(0.7),
        top_p: Some(0.9),
        stop: if stop_expressible {
            vec!["\n\nUser:".to_owned(), "<END>".to_owned()]
        } else {
            Vec::new()
        },
        stream: true,
    }
}

/// Schemas compared without `additionalProperties`, which only the OpenAI fixture sets.
fn without_additional_properties(mut c: Conversation) -> Conversation {
    for tool in &mut c.tools {
        if let Some(map) = tool.2.as_object_mut() {
            map.remove("additionalProperties");
        }
    }
    c
}

#[test]
fn every_client_request_reaches_every_upstream_intact() {
    for client in ALL_FORMATS {
        let (action, query, body) = client_request(client);
        // The fixture itself reads as the expected conversation.
        let mut own = without_additional_properties(read_request(client, action, &body));
        if client == ClientFormat::OpenaiResponses {
            own.stop = Vec::new();
        }
        assert_eq!(
            own,
            expected_conversation(client, ClientFormat::Openai).with_stop_of(client),
            "{client:?} fixture"
        );
        for upstream in ALL_FORMATS.into_iter().filter(|u| *u != client) {
            let converted = conversion(client, upstream)
                .request(action, query, &body)
                .unwrap_or_else(|e| panic!("{client:?} → {upstream:?}: {e}"));
            assert!(converted.stream, "{client:?} → {upstream:?}");
            let seen = without_additional_properties(read_request(
                upstream,
                &converted.action,
                &converted.body,
            ));
            assert_eq!(
                seen,
                expected_conversation(client, upstream),
                "{client:?} → {upstream:?}"
            );
            let expected_action = match upstream {
                ClientFormat::Openai => "v1/chat/completions".to_owned(),
                ClientFormat::OpenaiResponses => "v1/responses".to_owned(),
                ClientFormat::Anthropic => "v1/messages".to_owned(),
                ClientFormat::Gemini => {
                    format!("v1beta/models/{}:streamGenerateContent", model_of(client))
                }
            };
            assert_eq!(
                converted.action, expected_action,
                "{client:?} → {upstream:?}"
            );
            let expected_query = if upstream == ClientFormat::Gemini {
                "alt=sse"
            } else {
                ""
            };
            assert_eq!(converted.query, expected_query, "{client:?} → {upstream:?}");
            assert_eq!(converted.content_type(), "text/event-stream");
        }
    }
}

trait WithStop {
    fn with_stop_of(self, client: ClientFormat) -> Self;
}

impl WithStop for Conversation {
    /// The conversation as the client's own fixture states it (Responses has no stop).
    fn with_stop_of(mut self, client: ClientFormat) -> Self {
        if client == ClientFormat::OpenaiResponses {
            self.stop = Vec::new();
        } else {
            self.stop = vec!["\n\nUser:".to_owned(), "<END>".to_owned()];
        }
        self
    }
}

#[test]
fn path_mapping_between_openai_and_gemini() {
    let to_gemini =
        Conversion::lookup(ClientFormat::Openai, domain::ApiFormat::GeminiNative).unwrap();
    let body = br#"{"model":"gemini-2.5-pro","messages":[{"role":"user","content":"hi"}]}"#;
    let plain = to_gemini.request("v1/chat/completions", "", body).unwrap();
    assert_eq!(plain.action, "v1beta/models/gemini-2.5-pro:generateContent");
    assert_eq!(plain.query, "");
    assert!(!plain.stream);
    assert_eq!(plain.content_type(), "application/json");
    let streamed = to_gemini
        .request(
            "chat/completions",
            "",
            br#"{"model":"models/gemini-2.5-pro","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
    assert_eq!(
        streamed.action,
        "v1beta/models/gemini-2.5-pro:streamGenerateContent"
    );
    assert_eq!(streamed.query, "alt=sse");

    let to_openai =
        Conversion::lookup(ClientFormat::Gemini, domain::ApiFormat::OpenaiCompatible).unwrap();
    let converted = to_openai
        .request(
            "v1beta/models/gemini-2.5-flash:generateContent",
            "key=proxy&trace=1",
            br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
        )
        .unwrap();
    assert_eq!(converted.action, "v1/chat/completions");
    assert_eq!(converted.query, "trace=1", "the client's key never leaves");
    let body: Value = serde_json::from_slice(&converted.body).unwrap();
    assert_eq!(body["model"], "gemini-2.5-flash");
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
    assert_eq!(body.get("stream"), None);

    let streamed = to_openai
        .request(
            "v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "alt=sse",
            br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
        )
        .unwrap();
    let body: Value = serde_json::from_slice(&streamed.body).unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(streamed.framing, StreamFraming::Sse);
}

#[test]
fn openai_client_on_anthropic_upstream_uses_the_messages_path() {
    let conversion =
        Conversion::lookup(ClientFormat::Openai, domain::ApiFormat::AnthropicNative).unwrap();
    let converted = conversion
        .request(
            "v1/chat/completions",
            "",
            br#"{"model":"claude-haiku-4-5","messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
    assert_eq!(converted.action, "v1/messages");
    let body: Value = serde_json::from_slice(&converted.body).unwrap();
    assert_eq!(
        body,
        json!({"model": "claude-haiku-4-5", "max_tokens": 4096, "system": "s", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    );
}

#[test]
fn unconvertible_requests_are_refused_with_a_status() {
    /// client, upstream, action, body, expected status, expected code
    type Case = (
        ClientFormat,
        ClientFormat,
        &'static str,
        &'static [u8],
        u16,
        &'static str,
    );
    let cases: [Case; 6] = [
        (
            ClientFormat::Openai,
            ClientFormat::Anthropic,
            "v1/embeddings",
            b"{}",
            404,
            "unsupported_conversion",
        ),
        (
            ClientFormat::Anthropic,
            ClientFormat::Openai,
            "v1/messages/count_tokens",
            b"{}",
            404,
            "unsupported_conversion",
        ),
        (
            ClientFormat::Gemini,
            ClientFormat::Openai,
            "v1beta/models/gemini-2.5-flash:countTokens",
            b"{}",
            404,
            "unsupported_conversion",
        ),
        (
            ClientFormat::Openai,
            ClientFormat::Anthropic,
            "v1/chat/completions",
            br#"{"messages":[]}"#,
            400,
            "missing_model",
        ),
        (
            ClientFormat::Openai,
            ClientFormat::Gemini,
            "v1/chat/completions",
            br#"{"model":"../../admin","messages":[]}"#,
            400,
            "invalid_model",
        ),
        (
            ClientFormat::Anthropic,
            ClientFormat::Gemini,
            "v1/messages",
            b"{\"model\": tru",
            400,
            "invalid_request_body",
        ),
    ];
    for (client, upstream, action, body, status, code) in cases {
        let err: ConvertError = conversion(client, upstream)
            .request(action, "", body)
            .err()
            .unwrap_or_else(|| panic!("{action} should fail"));
        assert_eq!(
            (err.status(), err.code()),
            (status, code),
            "{action}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Non-streamed responses and errors.

fn upstream_response(upstream: ClientFormat) -> Vec<u8> {
    fixture(match upstream {
        ClientFormat::Openai => "convert/openai_chat_response.json",
        ClientFormat::OpenaiResponses => "convert/openai_responses_response.json",
        ClientFormat::Anthropic => "convert/anthropic_messages_response.json",
        ClientFormat::Gemini => "convert/gemini_generate_response.json",
    })
}

#[test]
fn every_upstream_response_reaches_every_client() {
    for (client, upstream) in pairs() {
        let converted = conversion(client, upstream).response(200, &upstream_response(upstream));
        assert_eq!(converted.status, 200, "{client:?} ← {upstream:?}");
        assert_eq!(converted.content_type, "application/json");
        let answer = read_response(client, &converted.body);
        assert_eq!(
            answer.text, "Let me check the forecast.",
            "{client:?} ← {upstream:?}"
        );
        assert_eq!(answer.calls.len(), 1);
        assert_eq!(answer.calls[0].1, "get_weather");
        assert_eq!(
            answer.calls[0].2,
            json!({"location": "Paris, France", "unit": "celsius"})
        );
        if client != ClientFormat::Gemini {
            assert!(!answer.calls[0].0.is_empty(), "calls get ids");
        }
        assert_eq!(
            answer.finish,
            tool_use_finish(client),
            "{client:?} ← {upstream:?}"
        );
        assert_eq!(
            (
                answer.input_tokens,
                answer.output_tokens,
                answer.cached_tokens
            ),
            (182, 27, Some(128)),
            "{client:?} ← {upstream:?}"
        );
    }
}

#[test]
fn upstream_tool_call_ids_are_kept() {
    let converted = conversion(ClientFormat::Openai, ClientFormat::Anthropic)
        .response(200, &upstream_response(ClientFormat::Anthropic));
    let answer = read_response(ClientFormat::Openai, &converted.body);
    assert_eq!(answer.calls[0].0, "toolu_01A09q90qw90lq917835lq9");
}

fn upstream_error(upstream: ClientFormat) -> (u16, Vec<u8>, &'static str) {
    match upstream {
        ClientFormat::Openai | ClientFormat::OpenaiResponses => (
            429,
            fixture("convert/openai_error_429.json"),
            "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29861, Requested 1024. Please try again in 1.77s.",
        ),
        ClientFormat::Anthropic => (
            529,
            fixture("convert/anthropic_error_529.json"),
            "Overloaded",
        ),
        ClientFormat::Gemini => (
            400,
            fixture("convert/gemini_error_400.json"),
            "API key not valid. Please pass a valid API key.",
        ),
    }
}

/// The message of an error body in the client's shape, checking the shape.
fn client_error_message(client: ClientFormat, status: u16, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    match client {
        ClientFormat::Openai | ClientFormat::OpenaiResponses => {
            assert!(v["error"]["type"].is_string() && v["error"]["code"].is_string());
        }
        ClientFormat::Anthropic => {
            assert_eq!(v["type"], "error");
            assert!(v["error"]["type"].is_string());
        }
        ClientFormat::Gemini => {
            assert_eq!(v["error"]["code"], status);
            assert!(v["error"]["status"].is_string());
        }
    }
    v["error"]["message"].as_str().unwrap().to_owned()
}

#[test]
fn upstream_errors_arrive_in_the_client_error_shape() {
    for (client, upstream) in pairs() {
        let (status, body, message) = upstream_error(upstream);
        let converted = conversion(client, upstream).response(status, &body);
        assert_eq!(converted.status, status, "{client:?} ← {upstream:?}");
        assert_eq!(
            client_error_message(client, status, &converted.body),
            message,
            "{client:?} ← {upstream:?}"
        );
    }
    // The upstream's code survives where the client format has a code field.
    let converted = conversion(ClientFormat::Openai, ClientFormat::Anthropic)
        .response(529, &fixture("convert/anthropic_error_529.json"));
    let v: Value = serde_json::from_slice(&converted.body).unwrap();
    assert_eq!(v["error"]["code"], "overloaded_error");
}

#[test]
fn unreadable_success_bodies_become_502_errors() {
    for (client, upstream) in pairs() {
        let converted = conversion(client, upstream).response(200, b"<html>oops</html>");
        assert_eq!(converted.status, 502);
        let message = client_error_message(client, 502, &converted.body);
        assert!(message.contains("malformed response"), "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Streams.

fn upstream_stream(upstream: ClientFormat) -> Vec<u8> {
    fixture(match upstream {
        ClientFormat::Openai => "convert/openai_chat_stream_tools.sse",
        ClientFormat::OpenaiResponses => "convert/openai_responses_stream_tools.sse",
        ClientFormat::Anthropic => "convert/anthropic_messages_stream_tools.sse",
        ClientFormat::Gemini => "convert/gemini_stream_tools.sse",
    })
}

fn convert_chunks<'a>(
    conversion: Conversion,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut stream = conversion.stream();
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&stream.push(chunk));
    }
    out.extend_from_slice(&stream.finish());
    assert!(stream.is_done());
    out
}

fn convert_whole(conversion: Conversion, bytes: &[u8]) -> Vec<u8> {
    convert_chunks(conversion, [bytes])
}

fn assert_tool_stream(client: ClientFormat, upstream: ClientFormat, answer: &Answer) {
    let context = format!("{client:?} ← {upstream:?}");
    assert_eq!(answer.error, None, "{context}");
    assert_eq!(answer.text, "Let me check both — un instant.", "{context}");
    let calls: Vec<(&str, &Value)> = answer
        .calls
        .iter()
        .map(|(_, name, args)| (name.as_str(), args))
        .collect();
    assert_eq!(
        calls,
        [
            (
                "get_weather",
                &json!({"location": "Paris, France", "unit": "celsius"})
            ),
            ("get_time", &json!({"timezone": "Europe/Paris"})),
        ],
        "{context}"
    );
    assert_eq!(answer.finish, tool_use_finish(client), "{context}");
    assert_eq!(
        (
            answer.input_tokens,
            answer.output_tokens,
            answer.cached_tokens
        ),
        (182, 58, Some(128)),
        "{context}"
    );
    if client != ClientFormat::Gemini {
        let ids: Vec<&str> = answer.calls.iter().map(|c| c.0.as_str()).collect();
        assert!(ids.iter().all(|id| !id.is_empty()), "{context}");
        assert_ne!(ids[0], ids[1], "{context}");
        let expected: Option<[&str; 2]> = match upstream {
            ClientFormat::Openai | ClientFormat::OpenaiResponses => {
                Some(["call_Wd7XqP3rYQqB8tYv", "call_9sKdL2mNpQ4rT6uV"])
            }
            ClientFormat::Anthropic => Some([
                "toolu_01A09q90qw90lq917835lq9",
                "toolu_01B7yT5nM3kQ8pW2xR4sV6u",
            ]),
            ClientFormat::Gemini => None,
        };
        if let Some(expected) = expected {
            assert_eq!(ids, expected, "{context}");
        }
    }
}

#[test]
fn every_upstream_stream_reaches_every_client_in_its_grammar() {
    for (client, upstream) in pairs() {
        let out = convert_whole(conversion(client, upstream), &upstream_stream(upstream));
        let answer = read_stream(client, &out);
        assert_tool_stream(client, upstream, &answer);
    }
}

/// The client stream with every id and timestamp replaced by a placeholder numbered in order
/// of first appearance, so two runs (with fresh ids) compare equal.
fn normalized(bytes: &[u8]) -> Vec<(Option<String>, Value)> {
    fn mask(value: &mut Value, seen: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    let volatile = matches!(
                        key.as_str(),
                        "id" | "item_id" | "call_id" | "created" | "created_at" | "responseId"
                    );
                    if volatile && !child.is_object() && !child.is_array() {
                        let text = child.to_string();
                        let n = seen.iter().position(|s| *s == text).unwrap_or_else(|| {
                            seen.push(text);
                            seen.len() - 1
                        });
                        *child = json!(format!("<{n}>"));
                    } else {
                        mask(child, seen);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| mask(v, seen)),
            _ => {}
        }
    }
    let mut seen = Vec::new();
    sse_events(bytes)
        .into_iter()
        .map(|e| {
            let mut value = serde_json::from_str(&e.data).unwrap_or(Value::String(e.data));
            mask(&mut value, &mut seen);
            (e.event, value)
        })
        .collect()
}

#[test]
fn streams_split_at_any_byte_convert_the_same() {
    for (client, upstream) in pairs() {
        let bytes = upstream_stream(upstream);
        let conv = conversion(client, upstream);
        let whole = normalized(&convert_whole(conv, &bytes));
        let stride = (bytes.len() / 150).max(1);
        for cut in (0..=bytes.len()).step_by(stride) {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(
                normalized(&convert_chunks(conv, [a, b])),
                whole,
                "{client:?} ← {upstream:?} cut at {cut}"
            );
        }
        let byte_by_byte = convert_chunks(conv, bytes.chunks(1));
        assert_eq!(
            normalized(&byte_by_byte),
            whole,
            "{client:?} ← {upstream:?} bytewise"
        );
        assert_tool_stream(client, upstream, &read_stream(client, &byte_by_byte));
        // Uneven chunk sizes, as a network delivers them.
        let mut chunks = Vec::new();
        let mut rest = &bytes[..];
        for size in [1, 7, 2, 64, 3, 500, 11].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        assert_eq!(normalized(&convert_chunks(conv, chunks)), whole);
    }
}

#[test]
fn output_is_sent_as_soon_as_an_event_completes() {
    let bytes = upstream_stream(ClientFormat::Anthropic);
    let mut stream = conversion(ClientFormat::Openai, ClientFormat::Anthropic).stream();
    // Everything up to the first text delta, minus its blank line: nothing for the client yet
    // beyond the role chunk.
    let text = std::str::from_utf8(&bytes).unwrap();
    let first_text = text.find("\"Let me check \"").unwrap();
    let end = first_text + text[first_text..].find("\n\n").unwrap();
    let before = stream.push(&bytes[..end]);
    assert!(!String::from_utf8_lossy(&before).contains("Let me check"));
    let now = stream.push(&bytes[end..end + 2]);
    assert!(
        String::from_utf8_lossy(&now).contains("Let me check "),
        "the delta goes out with its event"
    );
}

/// `bytes` with `extra` inserted after its `after`-th event.
fn insert_after_event(bytes: &[u8], after: usize, extra: &str) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    let separator = if text.contains("\r\n\r\n") {
        "\r\n\r\n"
    } else {
        "\n\n"
    };
    let mut position = 0;
    for _ in 0..after {
        position += text[position..].find(separator).unwrap() + separator.len();
    }
    let mut out = text[..position].to_owned();
    out.push_str(extra);
    out.push_str(&text[position..]);
    out.into_bytes()
}

fn unknown_events(upstream: ClientFormat) -> &'static str {
    match upstream {
        ClientFormat::Openai => {
            "event: keepalive\ndata: {\"status\":\"processing\"}\n\n: comment\n\n"
        }
        ClientFormat::OpenaiResponses => {
            "event: response.reasoning_summary_text.delta\ndata: {\"type\":\"response.reasoning_summary_text.delta\",\"sequence_number\":99,\"item_id\":\"rs_1\",\"output_index\":0,\"summary_index\":0,\"delta\":\"thinking\"}\n\n"
        }
        ClientFormat::Anthropic => {
            "event: future_event\ndata: {\"type\":\"future_event\",\"payload\":[1,2]}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"citations_delta\",\"citation\":{}}}\n\n"
        }
        ClientFormat::Gemini => "event: ping\r\ndata: {}\r\n\r\n",
    }
}

#[test]
fn unknown_upstream_events_are_skipped() {
    for (client, upstream) in pairs() {
        let bytes = insert_after_event(&upstream_stream(upstream), 2, unknown_events(upstream));
        let out = convert_whole(conversion(client, upstream), &bytes);
        assert_tool_stream(client, upstream, &read_stream(client, &out));
    }
}

#[test]
fn malformed_upstream_json_ends_the_stream_with_a_client_error_event() {
    for (client, upstream) in pairs() {
        let malformed = if upstream == ClientFormat::Gemini {
            "data: {\"candidates\": [{\"content\": oops\r\n\r\n"
        } else {
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"choices\":[{\n\n"
        };
        let malformed = if upstream == ClientFormat::Openai {
            "data: {\"choices\": [{\"delta\": {\"content\": \"x\"\n\n"
        } else {
            malformed
        };
        let bytes = insert_after_event(&upstream_stream(upstream), 3, malformed);
        let conv = conversion(client, upstream);
        let out = convert_whole(conv, &bytes);
        let answer = read_stream(client, &out);
        let message = answer
            .error
            .unwrap_or_else(|| panic!("{client:?} ← {upstream:?}: no error event"));
        assert!(message.contains("malformed"), "{message}");
        // Byte-by-byte gives the same.
        assert_eq!(
            normalized(&convert_chunks(conv, bytes.chunks(1))),
            normalized(&out)
        );
    }
}

#[test]
fn upstream_error_events_become_client_error_events() {
    let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let openai = "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":null}}\n\n";
    let gemini = "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n";
    let responses = "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_1\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"Something went wrong\"},\"output\":[]}}\n\n";
    for (client, upstream) in pairs() {
        let (bytes, message) = match upstream {
            ClientFormat::Anthropic => (anthropic, "Overloaded"),
            ClientFormat::Openai => (openai, "The server had an error"),
            ClientFormat::Gemini => (gemini, "The model is overloaded."),
            ClientFormat::OpenaiResponses => (responses, "Something went wrong"),
        };
        let mut stream = conversion(client, upstream).stream();
        let mut out = stream.push(bytes.as_bytes()).to_vec();
        assert!(stream.is_done(), "{client:?} ← {upstream:?}");
        out.extend_from_slice(&stream.finish());
        out.extend_from_slice(&stream.push(b"data: {}\n\n"));
        let answer = read_stream(client, &out);
        assert_eq!(
            answer.error.as_deref(),
            Some(message),
            "{client:?} ← {upstream:?}"
        );
    }
}

#[test]
fn plain_text_streams_of_every_provider_convert() {
    let cases = [
        (
            ClientFormat::Openai,
            "openai_chat_stream.sse",
            "Bonjour ! Comment ça va 😀 ?",
        ),
        (
            ClientFormat::Anthropic,
            "anthropic_messages_stream.sse",
            "Hello! How can I help you today? 🌍",
        ),
        (
            ClientFormat::OpenaiResponses,
            "openai_responses_stream.sse",
            "Hi there!",
        ),
    ];
    for (upstream, file, text) in cases {
        for client in ALL_FORMATS.into_iter().filter(|c| *c != upstream) {
            let out = convert_whole(conversion(client, upstream), &fixture(file));
            let answer = read_stream(client, &out);
            assert_eq!(answer.text, text, "{client:?} ← {upstream:?}");
            assert!(answer.calls.is_empty());
            assert_eq!(
                answer.finish,
                end_turn_finish(client),
                "{client:?} ← {upstream:?}"
            );
        }
    }
    // Gemini's transcript (CRLF line endings).
    let gemini = fixture("gemini_stream.sse");
    for client in ALL_FORMATS
        .into_iter()
        .filter(|c| *c != ClientFormat::Gemini)
    {
        let out = convert_whole(conversion(client, ClientFormat::Gemini), &gemini);
        let answer = read_stream(client, &out);
        assert!(
            answer.text.contains(" une réponse\nsur deux lignes."),
            "{client:?}"
        );
        assert_eq!(answer.finish, end_turn_finish(client));
    }
}

#[test]
fn gemini_clients_without_alt_sse_get_a_json_array_stream() {
    let conv =
        Conversion::lookup(ClientFormat::Gemini, domain::ApiFormat::AnthropicNative).unwrap();
    let (action, _, body) = client_request(ClientFormat::Gemini);
    let request = conv.request(action, "key=k", &body).unwrap();
    assert_eq!(request.framing, StreamFraming::JsonArray);
    assert_eq!(request.content_type(), "application/json");
    assert_eq!(
        request.query, "",
        "upstream is asked for plain SSE by the Anthropic body"
    );
    let mut stream = request.stream_converter();
    let bytes = upstream_stream(ClientFormat::Anthropic);
    let mut out = Vec::new();
    for chunk in bytes.chunks(13) {
        out.extend_from_slice(&stream.push(chunk));
    }
    out.extend_from_slice(&stream.finish());
    let answer = support::read_gemini_array_stream(&out);
    assert_eq!(answer.text, "Let me check both — un instant.");
    assert_eq!(answer.calls.len(), 2);
    assert_eq!(answer.finish, "STOP");
}

#[test]
fn an_upstream_that_closes_without_its_end_event_still_ends_the_client_stream() {
    for (client, upstream) in pairs() {
        let bytes = upstream_stream(upstream);
        let text = String::from_utf8(bytes).unwrap();
        // Cut the terminal event (and, for Gemini, nothing: its end is the close itself).
        let cut = match upstream {
            ClientFormat::Openai => text.replace("data: [DONE]\n\n", ""),
            ClientFormat::Anthropic => text.replace(
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                "",
            ),
            ClientFormat::OpenaiResponses | ClientFormat::Gemini => text,
        };
        let out = convert_whole(conversion(client, upstream), cut.as_bytes());
        let answer = read_stream(client, &out);
        assert_eq!(answer.error, None);
        assert_eq!(answer.calls.len(), 2, "{client:?} ← {upstream:?}");
    }
}

#[test]
fn nothing_is_sent_after_the_client_stream_ended() {
    let conv = conversion(ClientFormat::Anthropic, ClientFormat::Openai);
    let mut stream = conv.stream();
    let bytes = upstream_stream(ClientFormat::Openai);
    let out = stream.push(&bytes);
    assert!(stream.is_done());
    assert!(
        String::from_utf8_lossy(&out)
            .ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    );
    assert!(stream.push(b"data: {\"choices\":[]}\n\n").is_empty());
    assert!(stream.finish().is_empty());
}
