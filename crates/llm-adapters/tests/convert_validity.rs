//! Every request the encoders produce must be one its provider accepts: arbitrary neutral
//! conversations (empty and whitespace-only text included, tool rounds with parallel calls,
//! prefills, orphan results and unanswered calls) go through every upstream encoder, and the
//! provider's validator (`support::validate`, written from the providers' documented rules)
//! must accept whatever is not refused with a clear conversion error. Real agent-framework
//! request shapes (fixtures `convert/agent_*.json`) must convert to every upstream format
//! validly and without losing a call or a result.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use llm_adapters::convert::neutral::{
    ChatRequest, Image, Message, Part, Role, ToolCall, ToolResult,
};
use llm_adapters::{ClientFormat, ClientStream, Conversion, ConvertError};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::{
    ALL_FORMATS, fixture,
    validate::{assert_valid_request, request_problems},
};

// ---------------------------------------------------------------------------------------------
// Strategies.

/// Text as agent frameworks send it: often real, often empty or whitespace only.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9 ,.!?é😀\\n]{1,16}",
        1 => Just(String::new()),
        1 => "[ \\n\\t]{1,4}",
    ]
}

fn image() -> impl Strategy<Value = Part> {
    prop_oneof![
        "[a-z]{1,6}".prop_map(|f| Part::Image(Image::Url(format!("https://img.example/{f}.png")))),
        "[A-Za-z0-9+/]{4,12}".prop_map(|data| Part::Image(Image::Base64 {
            media_type: "image/png".to_owned(),
            data,
        })),
    ]
}

fn user_parts() -> impl Strategy<Value = Vec<Part>> {
    prop::collection::vec(
        prop_oneof![4 => text().prop_map(Part::Text), 1 => image()],
        0..3,
    )
}

/// One assistant step: texts, then calls (0 = a plain answer) each with its result content.
fn step() -> impl Strategy<Value = (Vec<String>, Vec<(String, String)>)> {
    (
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(("[a-z][a-z_]{0,6}", text()), 0..4),
    )
}

/// Conversations whose tool calls are all answered right after they are made, as every
/// provider requires: only blank content can make them unsendable.
fn paired_conversation() -> impl Strategy<Value = ChatRequest> {
    (
        prop::collection::vec(text(), 0..3),
        prop::collection::vec((user_parts(), prop::collection::vec(step(), 0..3)), 1..4),
        prop::option::of(text()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(system, rounds, prefill, stream, restart_ids)| {
            let mut messages = Vec::new();
            let mut next_id = 0;
            for (user, steps) in rounds {
                messages.push(Message::new(Role::User, user));
                for (texts, calls) in steps {
                    let mut parts: Vec<Part> = texts.into_iter().map(Part::Text).collect();
                    let mut results = Vec::new();
                    for (index, (name, content)) in calls.into_iter().enumerate() {
                        // Ids as OpenAI, Anthropic, Kimi-style and Gemini (none) clients send
                        // them; some OpenAI-compatible servers restart their ids every turn.
                        let n = if restart_ids { index } else { next_id };
                        let id = match next_id % 4 {
                            0 => format!("call_{n}"),
                            1 => format!("toolu_{n}"),
                            2 => format!("functions.{name}:{n}"),
                            _ => String::new(),
                        };
                        next_id += 1;
                        parts.push(Part::ToolCall(ToolCall {
                            id: id.clone(),
                            name: name.clone(),
                            arguments: "{\"q\":1}".to_owned(),
                        }));
                        results.push(Part::ToolResult(ToolResult {
                            call_id: id,
                            name: Some(name),
                            content,
                            is_error: false,
                        }));
                    }
                    messages.push(Message::new(Role::Assistant, parts));
                    if !results.is_empty() {
                        messages.push(Message::new(Role::Tool, results));
                    }
                }
            }
            if let Some(prefill) = prefill {
                messages.push(Message::new(Role::Assistant, vec![Part::Text(prefill)]));
            }
            ChatRequest {
                model: Some("model-1".to_owned()),
                system,
                messages,
                stream,
                ..ChatRequest::default()
            }
        })
}

/// Any sequence of messages of any role and any parts, tool results naming calls that may or
/// may not exist.
fn any_conversation() -> impl Strategy<Value = ChatRequest> {
    let part = prop_oneof![
        3 => text().prop_map(Part::Text),
        1 => image(),
        2 => (0usize..6, "[a-z]{1,4}").prop_map(|(n, name)| Part::ToolCall(ToolCall {
            id: format!("id{n}"),
            name,
            arguments: "{}".to_owned(),
        })),
        2 => (0usize..6, text()).prop_map(|(n, content)| Part::ToolResult(ToolResult {
            call_id: format!("id{n}"),
            name: None,
            content,
            is_error: false,
        })),
    ];
    let role = prop_oneof![Just(Role::User), Just(Role::Assistant), Just(Role::Tool)];
    (
        prop::collection::vec(text(), 0..2),
        prop::collection::vec((role, prop::collection::vec(part, 0..4)), 0..6),
    )
        .prop_map(|(system, messages)| ChatRequest {
            model: Some("model-1".to_owned()),
            system,
            messages: messages
                .into_iter()
                .map(|(role, parts)| Message::new(role, parts))
                .collect(),
            ..ChatRequest::default()
        })
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A conversion whose upstream is `upstream` (the client side only frames the stream).
fn to(upstream: ClientFormat) -> Conversion {
    let client = if upstream == ClientFormat::Openai {
        ClientFormat::Anthropic
    } else {
        ClientFormat::Openai
    };
    Conversion::between(client, upstream).unwrap()
}

/// Whether anything but blank text is left to send.
fn has_content(request: &ChatRequest) -> bool {
    request
        .messages
        .iter()
        .flat_map(|m| m.parts.iter().filter(move |p| m.role.carries(p)))
        .any(|p| !p.is_blank_text())
}

fn encode(upstream: ClientFormat, request: &ChatRequest) -> Result<Vec<u8>, ConvertError> {
    to(upstream)
        .encode(request.clone(), "", ClientStream::default())
        .map(|converted| converted.body)
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn paired_conversations_become_valid_requests_for_every_provider(request in paired_conversation()) {
        for upstream in ALL_FORMATS {
            match encode(upstream, &request) {
                Ok(body) => {
                    let problems = request_problems(upstream, &body);
                    prop_assert!(problems.is_empty(), "{:?}: {:?}\n{}", upstream, problems, String::from_utf8_lossy(&body));
                }
                Err(ConvertError::EmptyConversation) => {
                    prop_assert!(!has_content(&request), "{:?} found nothing to send in {:?}", upstream, request);
                }
                Err(other) => prop_assert!(false, "{:?} refused a paired conversation: {}", upstream, other),
            }
        }
    }

    #[test]
    fn any_conversation_is_valid_or_refused_with_a_clear_error(request in any_conversation()) {
        for upstream in ALL_FORMATS {
            match encode(upstream, &request) {
                Ok(body) => {
                    let problems = request_problems(upstream, &body);
                    prop_assert!(problems.is_empty(), "{:?}: {:?}\n{}", upstream, problems, String::from_utf8_lossy(&body));
                }
                Err(err) => {
                    prop_assert!(
                        matches!(
                            err,
                            ConvertError::EmptyConversation
                                | ConvertError::UnansweredToolCall(_)
                                | ConvertError::UnmatchedToolResult(_)
                        ),
                        "{:?}: {}", upstream, err
                    );
                    prop_assert_eq!(err.status(), 400);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Agent-framework fixtures.

struct AgentFixture {
    file: &'static str,
    client: ClientFormat,
    action: &'static str,
    calls: usize,
}

const AGENT_FIXTURES: [AgentFixture; 3] = [
    AgentFixture {
        file: "convert/agent_openai_blank_content_tool_calls.json",
        client: ClientFormat::Openai,
        action: "v1/chat/completions",
        calls: 3,
    },
    AgentFixture {
        file: "convert/agent_openai_empty_assistant_turn.json",
        client: ClientFormat::Openai,
        action: "v1/chat/completions",
        calls: 0,
    },
    AgentFixture {
        file: "convert/agent_responses_empty_assistant_message.json",
        client: ClientFormat::OpenaiResponses,
        action: "v1/responses",
        calls: 2,
    },
];

/// The tool calls and results an upstream request holds.
fn calls_and_results(format: ClientFormat, body: &[u8]) -> (usize, usize) {
    let body: Value = serde_json::from_slice(body).unwrap();
    let items = |list: &str, inner: &str| -> Vec<Value> {
        body[list]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m[inner].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let count =
        |values: &[Value], test: &dyn Fn(&Value) -> bool| values.iter().filter(|v| test(v)).count();
    match format {
        ClientFormat::Anthropic => {
            let blocks = items("messages", "content");
            (
                count(&blocks, &|b| b["type"] == "tool_use"),
                count(&blocks, &|b| b["type"] == "tool_result"),
            )
        }
        ClientFormat::Gemini => {
            let parts = items("contents", "parts");
            (
                count(&parts, &|p| p.get("functionCall").is_some()),
                count(&parts, &|p| p.get("functionResponse").is_some()),
            )
        }
        ClientFormat::Openai => {
            let messages = body["messages"].as_array().unwrap();
            (
                items("messages", "tool_calls").len(),
                count(messages, &|m| m["role"] == "tool"),
            )
        }
        ClientFormat::OpenaiResponses => {
            let input = body["input"].as_array().unwrap();
            (
                count(input, &|i| i["type"] == "function_call"),
                count(input, &|i| i["type"] == "function_call_output"),
            )
        }
    }
}

#[test]
fn agent_framework_requests_convert_to_valid_requests_everywhere() {
    for agent in &AGENT_FIXTURES {
        let body = fixture(agent.file);
        for upstream in ALL_FORMATS.into_iter().filter(|u| *u != agent.client) {
            let converted = Conversion::between(agent.client, upstream)
                .unwrap()
                .request(agent.action, "", &body)
                .unwrap_or_else(|e| panic!("{} → {upstream:?}: {e}", agent.file));
            assert_valid_request(upstream, &converted.body);
            assert_eq!(
                calls_and_results(upstream, &converted.body),
                (agent.calls, agent.calls),
                "{} → {upstream:?} lost a call or a result",
                agent.file
            );
            let text = String::from_utf8_lossy(&converted.body);
            for kept in ["Paris", "weather"] {
                assert!(
                    text.contains(kept),
                    "{} → {upstream:?} lost `{kept}`: {text}",
                    agent.file
                );
            }
        }
    }
}

#[test]
fn the_issue_shapes_are_what_anthropic_and_gemini_refused() {
    // Before the fix the encoders wrote these bodies; the validators must refuse them, so the
    // tests above would have caught the bug.
    let anthropic = json!({"model": "claude", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": ""},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}]}
    ]});
    let problems = request_problems(ClientFormat::Anthropic, anthropic.to_string().as_bytes());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("text content blocks must be non-empty")),
        "{problems:?}"
    );
    let gemini = json!({"contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"text": ""}, {"functionCall": {"name": "get_weather", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]}
    ]});
    let problems = request_problems(ClientFormat::Gemini, gemini.to_string().as_bytes());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("text parts must not be empty")),
        "{problems:?}"
    );
}

#[test]
fn unpaired_tool_turns_are_a_clear_400() {
    let orphan = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"call_9","content":"42"}]}"#;
    let err = Conversion::between(ClientFormat::Openai, ClientFormat::Anthropic)
        .unwrap()
        .request("v1/chat/completions", "", orphan)
        .unwrap_err();
    assert_eq!(err, ConvertError::UnmatchedToolResult("call_9".to_owned()));
    assert_eq!((err.status(), err.code()), (400, "unpaired_tool_call"));
    let blank = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"  "}]}"#;
    let err = Conversion::between(ClientFormat::Openai, ClientFormat::Gemini)
        .unwrap()
        .request("v1/chat/completions", "", blank)
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (400, "empty_conversation"));
}

/// The validator must catch what the providers refuse; these bodies are the refused shapes
/// from the issue and the provider docs.
#[test]
fn validators_catch_refused_shapes() {
    let anthropic_empty_text = br#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"text","text":""},{"type":"tool_use","id":"t1","name":"f","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]}"#;
    assert!(
        request_problems(ClientFormat::Anthropic, anthropic_empty_text)
            .iter()
            .any(|p| p.contains("must be non-empty"))
    );
    let anthropic_orphan = br#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t9","content":"ok"}]}]}"#;
    assert!(!request_problems(ClientFormat::Anthropic, anthropic_orphan).is_empty());
    let anthropic_no_max = br#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(!request_problems(ClientFormat::Anthropic, anthropic_no_max).is_empty());
    let gemini_empty_text = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]},{"role":"model","parts":[{"text":""},{"functionCall":{"name":"f","args":{}}}]},{"role":"user","parts":[{"functionResponse":{"name":"f","response":{}}}]}]}"#;
    assert!(!request_problems(ClientFormat::Gemini, gemini_empty_text).is_empty());
    let gemini_snake = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generation_config":{"max_output_tokens":5}}"#;
    assert!(!request_problems(ClientFormat::Gemini, gemini_snake).is_empty());
    let openai_unanswered = br#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"user","content":"next"}]}"#;
    assert!(!request_problems(ClientFormat::Openai, openai_unanswered).is_empty());
    let responses_orphan =
        br#"{"model":"m","input":[{"type":"function_call_output","call_id":"x","output":"1"}]}"#;
    assert!(!request_problems(ClientFormat::OpenaiResponses, responses_orphan).is_empty());
    let fine = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(request_problems(ClientFormat::Openai, fine).is_empty());
}
