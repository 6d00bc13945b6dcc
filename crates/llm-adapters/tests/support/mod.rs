//! Test-side readers of every wire format, written independently of the crate's converters so
//! they can judge them: each reads a request, a response or a client stream into one plain
//! summary, and the stream readers check the format's event grammar on the way (event order,
//! block and item pairing, terminal events, sequence numbers).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod validate;

use llm_adapters::{ClientFormat, OwnedSseEvent, SseParser};
use serde_json::{Value, json};

/// Reads a fixture file.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Every SSE event of a complete stream.
pub fn sse_events(bytes: &[u8]) -> Vec<OwnedSseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser
        .feed(bytes, |e| events.push(e.to_owned_event()))
        .unwrap();
    parser.finish();
    while let Some(e) = parser.next_event().unwrap() {
        events.push(e.to_owned_event());
    }
    events
}

pub const ALL_FORMATS: [ClientFormat; 4] = [
    ClientFormat::Openai,
    ClientFormat::OpenaiResponses,
    ClientFormat::Anthropic,
    ClientFormat::Gemini,
];

// ---------------------------------------------------------------------------------------------
// Requests.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Text(String),
    ImageUrl(String),
    ImageData {
        mime: String,
        data: String,
    },
    /// A call by function name and parsed arguments (ids differ between formats).
    Call {
        name: String,
        args: Value,
    },
    /// A result, by the name of the call it answers (resolved through ids where the format
    /// has them), with its content (JSON objects parsed, other text as a string).
    Result {
        call: String,
        content: Value,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub model: Option<String>,
    pub system: Vec<String>,
    pub turns: Vec<(Turn, Vec<Item>)>,
    /// (name, description, parameters schema)
    pub tools: Vec<(String, Option<String>, Value)>,
    /// "auto" | "none" | "required" | "fn:<name>"
    pub tool_choice: Option<String>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub stream: bool,
}

impl Conversation {
    fn push(&mut self, turn: Turn, item: Item) {
        match self.turns.last_mut() {
            Some((t, items)) if *t == turn => items.push(item),
            _ => self.turns.push((turn, vec![item])),
        }
    }
}

/// Tool result text as the summary holds it.
pub fn result_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => Value::String(text.to_owned()),
    }
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string: {v}"))
        .to_owned()
}

fn opt_f64(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Reads a request of `format`; `action` is needed for Gemini.
pub fn read_request(format: ClientFormat, action: &str, body: &[u8]) -> Conversation {
    let v: Value = serde_json::from_slice(body).unwrap();
    match format {
        ClientFormat::Openai => read_openai_request(&v),
        ClientFormat::OpenaiResponses => read_responses_request(&v),
        ClientFormat::Anthropic => read_anthropic_request(&v),
        ClientFormat::Gemini => read_gemini_request(action, &v),
    }
}

fn call_name(calls: &[(String, String)], id: &str) -> String {
    calls
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| panic!("tool result for unknown call id {id:?}; calls: {calls:?}"))
}

fn openai_content(content: &Value) -> Vec<Item> {
    match content {
        Value::Null => vec![],
        Value::String(s) => vec![Item::Text(s.clone())],
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str().unwrap() {
                "text" => Item::Text(str_of(&p["text"])),
                "image_url" => image_from_url(&str_of(&p["image_url"]["url"])),
                other => panic!("unexpected part {other}"),
            })
            .collect(),
        other => panic!("unexpected content {other}"),
    }
}

fn image_from_url(url: &str) -> Item {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').unwrap();
        Item::ImageData {
            mime: meta.trim_end_matches(";base64").to_owned(),
            data: data.to_owned(),
        }
    } else {
        Item::ImageUrl(url.to_owned())
    }
}

fn read_openai_request(v: &Value) -> Conversation {
    let mut c = Conversation {
        model: v["model"].as_str().map(str::to_owned),
        max_tokens: v["max_completion_tokens"]
            .as_u64()
            .or(v["max_tokens"].as_u64()),
        temperature: opt_f64(&v["temperature"]),
        top_p: opt_f64(&v["top_p"]),
        stream: v["stream"].as_bool().unwrap_or(false),
        ..Conversation::default()
    };
    c.stop = match &v["stop"] {
        Value::Null => vec![],
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(str_of).collect(),
        other => panic!("stop {other}"),
    };
    c.tool_choice = match &v["tool_choice"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        o => Some(format!("fn:{}", str_of(&o["function"]["name"]))),
    };
    for t in v["tools"].as_array().into_iter().flatten() {
        assert_eq!(t["type"], "function");
        let f = &t["function"];
        c.tools.push((
            str_of(&f["name"]),
            f["description"].as_str().map(str::to_owned),
            f["parameters"].clone(),
        ));
    }
    let mut calls = Vec::new();
    for m in v["messages"].as_array().unwrap() {
        match m["role"].as_str().unwrap() {
            "system" | "developer" => c.system.push(str_of(&m["content"])),
            "user" => {
                for item in openai_content(&m["content"]) {
                    c.push(Turn::User, item);
                }
            }
            "assistant" => {
                let mut items = openai_content(&m["content"]);
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    assert_eq!(call["type"], "function");
                    let id = str_of(&call["id"]);
                    let name = str_of(&call["function"]["name"]);
                    calls.push((id, name.clone()));
                    let args: Value =
                        serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
                            .unwrap();
                    items.push(Item::Call { name, args });
                }
                for item in items {
                    c.push(Turn::Assistant, item);
                }
            }
            "tool" => {
                let id = str_of(&m["tool_call_id"]);
                c.push(
                    Turn::Tool,
                    Item::Result {
                        call: call_name(&calls, &id),
                        content: result_value(&str_of(&m["content"])),
                    },
                );
            }
            other => panic!("role {other}"),
        }
    }
    c
}

fn read_responses_request(v: &Value) -> Conversation {
    let mut c = Conversation {
        model: v["model"].as_str().map(str::to_owned),
        max_tokens: v["max_output_tokens"].as_u64(),
        temperature: opt_f64(&v["temperature"]),
        top_p: opt_f64(&v["top_p"]),
        stream: v["stream"].as_bool().unwrap_or(false),
        ..Conversation::default()
    };
    if let Some(i) = v["instructions"].as_str() {
        c.system.push(i.to_owned());
    }
    c.tool_choice = match &v["tool_choice"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        o => Some(format!("fn:{}", str_of(&o["name"]))),
    };
    for t in v["tools"].as_array().into_iter().flatten() {
        if t["type"] == "function" {
            c.tools.push((
                str_of(&t["name"]),
                t["description"].as_str().map(str::to_owned),
                t["parameters"].clone(),
            ));
        }
    }
    let mut calls = Vec::new();
    let items: Vec<Value> = match &v["input"] {
        Value::String(s) => vec![json!({"role": "user", "content": s})],
        Value::Array(a) => a.clone(),
        other => panic!("input {other}"),
    };
    for item in items {
        match item["type"].as_str().unwrap_or("message") {
            "message" => {
                let parts: Vec<Item> = match &item["content"] {
                    Value::String(s) => vec![Item::Text(s.clone())],
                    Value::Array(a) => a
                        .iter()
                        .map(|p| match p["type"].as_str().unwrap() {
                            "input_text" | "output_text" => Item::Text(str_of(&p["text"])),
                            "input_image" => image_from_url(&str_of(&p["image_url"])),
                            other => panic!("part {other}"),
                        })
                        .collect(),
                    other => panic!("content {other}"),
                };
                let turn = match item["role"].as_str().unwrap() {
                    "user" => Turn::User,
                    "assistant" => Turn::Assistant,
                    "system" | "developer" => {
                        for p in parts {
                            if let Item::Text(t) = p {
                                c.system.push(t);
                            }
                        }
                        continue;
                    }
                    other => panic!("role {other}"),
                };
                for p in parts {
                    c.push(turn, p);
                }
            }
            "function_call" => {
                let name = str_of(&item["name"]);
                calls.push((str_of(&item["call_id"]), name.clone()));
                let args = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
                c.push(Turn::Assistant, Item::Call { name, args });
            }
            "function_call_output" => {
                let id = str_of(&item["call_id"]);
                c.push(
                    Turn::Tool,
                    Item::Result {
                        call: call_name(&calls, &id),
                        content: result_value(&str_of(&item["output"])),
                    },
                );
            }
            _ => {}
        }
    }
    c
}

fn read_anthropic_request(v: &Value) -> Conversation {
    let mut c = Conversation {
        model: v["model"].as_str().map(str::to_owned),
        max_tokens: v["max_tokens"].as_u64(),
        temperature: opt_f64(&v["temperature"]),
        top_p: opt_f64(&v["top_p"]),
        stream: v["stream"].as_bool().unwrap_or(false),
        stop: v["stop_sequences"]
            .as_array()
            .into_iter()
            .flatten()
            .map(str_of)
            .collect(),
        ..Conversation::default()
    };
    assert!(c.max_tokens.is_some(), "anthropic requires max_tokens");
    match &v["system"] {
        Value::Null => {}
        Value::String(s) => c.system.push(s.clone()),
        Value::Array(a) => c.system.extend(a.iter().map(|b| str_of(&b["text"]))),
        other => panic!("system {other}"),
    }
    c.tool_choice = match v["tool_choice"]["type"].as_str() {
        None => None,
        Some("any") => Some("required".to_owned()),
        Some("tool") => Some(format!("fn:{}", str_of(&v["tool_choice"]["name"]))),
        Some(other) => Some(other.to_owned()),
    };
    for t in v["tools"].as_array().into_iter().flatten() {
        if t.get("input_schema").is_some() {
            c.tools.push((
                str_of(&t["name"]),
                t["description"].as_str().map(str::to_owned),
                t["input_schema"].clone(),
            ));
        }
    }
    let mut calls = Vec::new();
    let mut last_role = "";
    for m in v["messages"].as_array().unwrap() {
        let role = m["role"].as_str().unwrap();
        assert_ne!(role, last_role, "anthropic roles must alternate");
        last_role = role;
        let blocks: Vec<Value> = match &m["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(a) => a.clone(),
            other => panic!("content {other}"),
        };
        assert!(!blocks.is_empty(), "anthropic rejects empty content");
        let mut seen_non_result = false;
        for b in blocks {
            let kind = b["type"].as_str().unwrap();
            if kind == "tool_result" {
                assert!(!seen_non_result, "tool results must come first");
            } else {
                seen_non_result = true;
            }
            match (role, kind) {
                (_, "text") => c.push(
                    if role == "user" {
                        Turn::User
                    } else {
                        Turn::Assistant
                    },
                    Item::Text(str_of(&b["text"])),
                ),
                ("user", "image") => {
                    let s = &b["source"];
                    let item = match s["type"].as_str().unwrap() {
                        "url" => Item::ImageUrl(str_of(&s["url"])),
                        "base64" => Item::ImageData {
                            mime: str_of(&s["media_type"]),
                            data: str_of(&s["data"]),
                        },
                        other => panic!("source {other}"),
                    };
                    c.push(Turn::User, item);
                }
                ("assistant", "tool_use") => {
                    let name = str_of(&b["name"]);
                    calls.push((str_of(&b["id"]), name.clone()));
                    assert!(b["input"].is_object());
                    c.push(
                        Turn::Assistant,
                        Item::Call {
                            name,
                            args: b["input"].clone(),
                        },
                    );
                }
                ("user", "tool_result") => {
                    let content = match &b["content"] {
                        Value::String(s) => s.clone(),
                        Value::Array(a) => a.iter().map(|t| str_of(&t["text"])).collect(),
                        other => panic!("tool_result content {other}"),
                    };
                    c.push(
                        Turn::Tool,
                        Item::Result {
                            call: call_name(&calls, &str_of(&b["tool_use_id"])),
                            content: result_value(&content),
                        },
                    );
                }
                ("assistant", "thinking") => {}
                other => panic!("block {other:?}"),
            }
        }
    }
    c
}

fn read_gemini_request(action: &str, v: &Value) -> Conversation {
    let (model, method) = action
        .rsplit_once("models/")
        .unwrap()
        .1
        .split_once(':')
        .unwrap();
    let g = &v["generationConfig"];
    let mut c = Conversation {
        model: Some(model.to_owned()),
        stream: method == "streamGenerateContent",
        max_tokens: g["maxOutputTokens"].as_u64(),
        temperature: opt_f64(&g["temperature"]),
        top_p: opt_f64(&g["topP"]),
        stop: g["stopSequences"]
            .as_array()
            .into_iter()
            .flatten()
            .map(str_of)
            .collect(),
        ..Conversation::default()
    };
    for p in v["systemInstruction"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        c.system.push(str_of(&p["text"]));
    }
    let fc = &v["toolConfig"]["functionCallingConfig"];
    c.tool_choice = match fc["mode"].as_str() {
        None => None,
        Some("AUTO") => Some("auto".to_owned()),
        Some("NONE") => Some("none".to_owned()),
        Some("ANY") => match fc["allowedFunctionNames"].as_array() {
            Some(names) if names.len() == 1 => Some(format!("fn:{}", str_of(&names[0]))),
            _ => Some("required".to_owned()),
        },
        Some(other) => panic!("mode {other}"),
    };
    for t in v["tools"].as_array().into_iter().flatten() {
        for f in t["functionDeclarations"].as_array().into_iter().flatten() {
            let schema = if f.get("parametersJsonSchema").is_some() {
                f["parametersJsonSchema"].clone()
            } else {
                lower_types(f["parameters"].clone())
            };
            c.tools.push((
                str_of(&f["name"]),
                f["description"].as_str().map(str::to_owned),
                schema,
            ));
        }
    }
    for content in v["contents"].as_array().unwrap() {
        let model_turn = match content["role"].as_str().unwrap_or("user") {
            "user" | "function" => false,
            "model" => true,
            other => panic!("role {other}"),
        };
        for p in content["parts"].as_array().unwrap() {
            if p["thought"] == true {
                continue;
            }
            let text_turn = if model_turn {
                Turn::Assistant
            } else {
                Turn::User
            };
            if let Some(t) = p["text"].as_str() {
                c.push(text_turn, Item::Text(t.to_owned()));
            } else if let Some(d) = p.get("inlineData") {
                c.push(
                    Turn::User,
                    Item::ImageData {
                        mime: str_of(&d["mimeType"]),
                        data: str_of(&d["data"]),
                    },
                );
            } else if let Some(f) = p.get("fileData") {
                assert!(f["mimeType"].as_str().unwrap().starts_with("image/"));
                c.push(Turn::User, Item::ImageUrl(str_of(&f["fileUri"])));
            } else if let Some(f) = p.get("functionCall") {
                assert!(model_turn);
                assert!(f["args"].is_object());
                c.push(
                    Turn::Assistant,
                    Item::Call {
                        name: str_of(&f["name"]),
                        args: f["args"].clone(),
                    },
                );
            } else if let Some(f) = p.get("functionResponse") {
                assert!(!model_turn);
                let r = &f["response"];
                assert!(r.is_object(), "functionResponse.response must be an object");
                let content = match r.get("content") {
                    Some(Value::String(s)) if r.as_object().unwrap().len() == 1 => {
                        Value::String(s.clone())
                    }
                    _ => r.clone(),
                };
                c.push(
                    Turn::Tool,
                    Item::Result {
                        call: str_of(&f["name"]),
                        content,
                    },
                );
            } else {
                panic!("part {p}");
            }
        }
    }
    c
}

fn lower_types(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, c) in m.iter_mut() {
                    if k == "type" && c.is_string() {
                        *c = Value::String(c.as_str().unwrap().to_ascii_lowercase());
                    } else {
                        walk(c);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

// ---------------------------------------------------------------------------------------------
// Responses and streams.

/// What a client learns from a response or a stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    pub text: String,
    /// (id, name, parsed arguments)
    pub calls: Vec<(String, String, Value)>,
    /// The format's own finish value (`tool_calls`, `tool_use`, `STOP`, `completed`, ...).
    pub finish: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: Option<u64>,
    /// The error message, when the stream ended with an in-band error event.
    pub error: Option<String>,
}

fn parse_args(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("arguments {text:?} are not JSON: {e}"))
}

/// Reads a non-streamed response body of `format`.
pub fn read_response(format: ClientFormat, body: &[u8]) -> Answer {
    let v: Value = serde_json::from_slice(body).unwrap();
    let mut a = Answer::default();
    match format {
        ClientFormat::Openai => {
            assert_eq!(v["object"], "chat.completion");
            assert!(v["created"].is_u64() && v["id"].is_string() && v["model"].is_string());
            let m = &v["choices"][0]["message"];
            assert_eq!(m["role"], "assistant");
            a.text = m["content"].as_str().unwrap_or_default().to_owned();
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                a.calls.push((
                    str_of(&c["id"]),
                    str_of(&c["function"]["name"]),
                    parse_args(c["function"]["arguments"].as_str().unwrap()),
                ));
            }
            a.finish = str_of(&v["choices"][0]["finish_reason"]);
            let u = &v["usage"];
            a.input_tokens = u["prompt_tokens"].as_u64().unwrap();
            a.output_tokens = u["completion_tokens"].as_u64().unwrap();
            assert_eq!(
                u["total_tokens"].as_u64().unwrap(),
                a.input_tokens + a.output_tokens
            );
            a.cached_tokens = u["prompt_tokens_details"]["cached_tokens"].as_u64();
        }
        ClientFormat::OpenaiResponses => {
            assert_eq!(v["object"], "response");
            assert!(v["created_at"].is_u64() && v["id"].is_string());
            read_responses_output(&v, &mut a);
        }
        ClientFormat::Anthropic => {
            assert_eq!(v["type"], "message");
            assert_eq!(v["role"], "assistant");
            assert!(v["id"].is_string() && v["model"].is_string());
            for b in v["content"].as_array().unwrap() {
                match b["type"].as_str().unwrap() {
                    "text" => a.text.push_str(b["text"].as_str().unwrap()),
                    "tool_use" => {
                        assert!(b["input"].is_object());
                        a.calls
                            .push((str_of(&b["id"]), str_of(&b["name"]), b["input"].clone()));
                    }
                    other => panic!("block {other}"),
                }
            }
            a.finish = str_of(&v["stop_reason"]);
            read_anthropic_usage(&v["usage"], &mut a);
        }
        ClientFormat::Gemini => read_gemini_chunk(&v, &mut a, true),
    }
    a
}

fn read_anthropic_usage(u: &Value, a: &mut Answer) {
    let cached = u["cache_read_input_tokens"].as_u64();
    a.input_tokens = u["input_tokens"].as_u64().unwrap() + cached.unwrap_or(0);
    a.output_tokens = u["output_tokens"].as_u64().unwrap();
    a.cached_tokens = cached;
}

fn read_responses_output(response: &Value, a: &mut Answer) {
    for item in response["output"].as_array().unwrap() {
        assert_eq!(item["status"], "completed");
        match item["type"].as_str().unwrap() {
            "message" => {
                for p in item["content"].as_array().unwrap() {
                    assert_eq!(p["type"], "output_text");
                    a.text.push_str(p["text"].as_str().unwrap());
                }
            }
            "function_call" => a.calls.push((
                str_of(&item["call_id"]),
                str_of(&item["name"]),
                parse_args(item["arguments"].as_str().unwrap()),
            )),
            other => panic!("item {other}"),
        }
    }
    a.finish = str_of(&response["status"]);
    let u = &response["usage"];
    a.input_tokens = u["input_tokens"].as_u64().unwrap();
    a.output_tokens = u["output_tokens"].as_u64().unwrap();
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        a.input_tokens + a.output_tokens
    );
    a.cached_tokens = u["input_tokens_details"]["cached_tokens"].as_u64();
}

fn read_gemini_chunk(v: &Value, a: &mut Answer, last: bool) {
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    for p in cand["content"]["parts"].as_array().unwrap() {
        if let Some(t) = p["text"].as_str() {
            a.text.push_str(t);
        } else if let Some(f) = p.get("functionCall") {
            assert!(f["args"].is_object());
            a.calls
                .push((String::new(), str_of(&f["name"]), f["args"].clone()));
        } else {
            panic!("part {p}");
        }
    }
    if let Some(f) = cand["finishReason"].as_str() {
        assert!(last, "finishReason only on the last chunk");
        a.finish = f.to_owned();
    }
    if last {
        let u = &v["usageMetadata"];
        let thoughts = u["thoughtsTokenCount"].as_u64().unwrap_or(0);
        a.input_tokens = u["promptTokenCount"].as_u64().unwrap();
        a.output_tokens = u["candidatesTokenCount"].as_u64().unwrap() + thoughts;
        assert_eq!(
            u["totalTokenCount"].as_u64().unwrap(),
            a.input_tokens + a.output_tokens
        );
        a.cached_tokens = u["cachedContentTokenCount"].as_u64();
    }
}

/// Reads a client stream of `format`, checking its grammar.
pub fn read_stream(format: ClientFormat, bytes: &[u8]) -> Answer {
    let events = sse_events(bytes);
    assert!(!events.is_empty(), "empty stream");
    match format {
        ClientFormat::Openai => read_openai_stream(&events),
        ClientFormat::OpenaiResponses => read_responses_stream(&events),
        ClientFormat::Anthropic => read_anthropic_stream(&events),
        ClientFormat::Gemini => read_gemini_stream(&events),
    }
}

/// Reads a Gemini stream framed as a JSON array.
pub fn read_gemini_array_stream(bytes: &[u8]) -> Answer {
    let chunks: Vec<Value> = serde_json::from_slice(bytes).unwrap();
    let mut a = Answer::default();
    for (i, c) in chunks.iter().enumerate() {
        if let Some(e) = c.get("error") {
            a.error = Some(str_of(&e["message"]));
            assert_eq!(i, chunks.len() - 1);
            return a;
        }
        read_gemini_chunk(c, &mut a, i == chunks.len() - 1);
    }
    a
}

fn read_openai_stream(events: &[OwnedSseEvent]) -> Answer {
    let mut a = Answer::default();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut id = None;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event, None, "chat streams have unnamed events");
        if e.data == "[DONE]" {
            assert_eq!(i, events.len() - 1, "[DONE] ends the stream");
            assert!(!a.finish.is_empty(), "a finish_reason before [DONE]");
            break;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        if let Some(err) = v.get("error") {
            assert_eq!(i, events.len() - 1, "an error event ends the stream");
            a.error = Some(str_of(&err["message"]));
            return a;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        assert!(v["created"].is_u64() && v["model"].is_string());
        let this_id = str_of(&v["id"]);
        assert_eq!(
            id.get_or_insert(this_id.clone()),
            &this_id,
            "one id per stream"
        );
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            a.input_tokens = u["prompt_tokens"].as_u64().unwrap();
            a.output_tokens = u["completion_tokens"].as_u64().unwrap();
            a.cached_tokens = u["prompt_tokens_details"]["cached_tokens"].as_u64();
        }
        let Some(choice) = v["choices"].as_array().and_then(|c| c.first()) else {
            continue;
        };
        if i == 0 {
            assert_eq!(choice["delta"]["role"], "assistant");
        }
        assert!(a.finish.is_empty(), "nothing after finish_reason but usage");
        if let Some(t) = choice["delta"]["content"].as_str() {
            a.text.push_str(t);
        }
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = tc["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                assert_eq!(tc["type"], "function");
                calls.push((
                    str_of(&tc["id"]),
                    str_of(&tc["function"]["name"]),
                    String::new(),
                ));
            }
            assert!(index < calls.len(), "tool call index out of order");
            if let Some(args) = tc["function"]["arguments"].as_str() {
                calls[index].2.push_str(args);
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            a.finish = f.to_owned();
        }
    }
    assert_eq!(events.last().unwrap().data, "[DONE]");
    a.calls = calls
        .into_iter()
        .map(|(id, n, args)| (id, n, parse_args(&args)))
        .collect();
    a
}

fn read_anthropic_stream(events: &[OwnedSseEvent]) -> Answer {
    let mut a = Answer::default();
    let mut blocks: Vec<(String, String, String, String)> = Vec::new(); // kind, id, name, acc
    let mut open: Option<usize> = None;
    let mut state = "start";
    for (i, e) in events.iter().enumerate() {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        let kind = v["type"].as_str().unwrap();
        assert_eq!(e.event.as_deref(), Some(kind), "event name = data type");
        if kind == "error" {
            assert_eq!(i, events.len() - 1, "an error event ends the stream");
            a.error = Some(str_of(&v["error"]["message"]));
            return a;
        }
        match (state, kind) {
            ("start", "message_start") => {
                let m = &v["message"];
                assert_eq!(m["role"], "assistant");
                assert!(m["id"].is_string() && m["content"] == json!([]));
                state = "body";
            }
            ("body", "ping") => {}
            ("body", "content_block_start") => {
                assert_eq!(open, None, "a block is still open");
                let index = v["index"].as_u64().unwrap() as usize;
                assert_eq!(index, blocks.len(), "block indices are sequential");
                let b = &v["content_block"];
                let k = str_of(&b["type"]);
                let (id, name) = if k == "tool_use" {
                    assert_eq!(b["input"], json!({}));
                    (str_of(&b["id"]), str_of(&b["name"]))
                } else {
                    assert_eq!(k, "text");
                    (String::new(), String::new())
                };
                blocks.push((k, id, name, String::new()));
                open = Some(index);
            }
            ("body", "content_block_delta") => {
                let index = v["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(index), "delta for the open block");
                let d = &v["delta"];
                let block = &mut blocks[index];
                match d["type"].as_str().unwrap() {
                    "text_delta" => {
                        assert_eq!(block.0, "text");
                        block.3.push_str(d["text"].as_str().unwrap());
                    }
                    "input_json_delta" => {
                        assert_eq!(block.0, "tool_use");
                        block.3.push_str(d["partial_json"].as_str().unwrap());
                    }
                    other => panic!("delta {other}"),
                }
            }
            ("body", "content_block_stop") => {
                assert_eq!(open, Some(v["index"].as_u64().unwrap() as usize));
                open = None;
            }
            ("body", "message_delta") => {
                assert_eq!(open, None, "blocks closed before message_delta");
                a.finish = str_of(&v["delta"]["stop_reason"]);
                read_anthropic_usage(&v["usage"], &mut a);
                state = "delta";
            }
            ("delta", "message_stop") => {
                assert_eq!(i, events.len() - 1, "message_stop ends the stream");
                state = "stopped";
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(state, "stopped", "stream ends with message_stop");
    for (kind, id, name, acc) in blocks {
        if kind == "text" {
            a.text.push_str(&acc);
        } else {
            a.calls.push((id, name, parse_args(&acc)));
        }
    }
    a
}

fn read_gemini_stream(events: &[OwnedSseEvent]) -> Answer {
    let mut a = Answer::default();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event, None);
        let v: Value = serde_json::from_str(&e.data).unwrap();
        if let Some(err) = v.get("error") {
            assert_eq!(i, events.len() - 1);
            a.error = Some(str_of(&err["message"]));
            return a;
        }
        read_gemini_chunk(&v, &mut a, i == events.len() - 1);
    }
    assert!(!a.finish.is_empty(), "last chunk has a finishReason");
    a
}

fn read_responses_stream(events: &[OwnedSseEvent]) -> Answer {
    let mut a = Answer::default();
    // (item id, type, accumulated text or arguments, done)
    let mut items: Vec<(String, String, String, bool)> = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    let mut final_response = None;
    for (i, e) in events.iter().enumerate() {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        let kind = v["type"].as_str().unwrap();
        assert_eq!(e.event.as_deref(), Some(kind), "event name = data type");
        if kind == "error" {
            assert_eq!(i, events.len() - 1);
            a.error = Some(str_of(&v["message"]));
            return a;
        }
        assert_eq!(v["sequence_number"].as_u64(), Some(i as u64), "sequence");
        let out = v["output_index"].as_u64().map(|o| o as usize);
        match kind {
            "response.created" => assert_eq!(i, 0),
            "response.in_progress" => assert_eq!(i, 1),
            "response.output_item.added" => {
                assert_eq!(out, Some(items.len()));
                assert!(items.iter().all(|it| it.3), "previous items done");
                let item = &v["item"];
                assert_eq!(item["status"], "in_progress");
                let t = str_of(&item["type"]);
                if t == "function_call" {
                    names.push((str_of(&item["call_id"]), str_of(&item["name"])));
                }
                items.push((str_of(&item["id"]), t, String::new(), false));
            }
            "response.content_part.added" | "response.content_part.done" => {
                assert_eq!(items[out.unwrap()].1, "message");
            }
            "response.output_text.delta" => {
                let it = &mut items[out.unwrap()];
                assert_eq!(it.0, str_of(&v["item_id"]));
                assert!(!it.3);
                it.2.push_str(v["delta"].as_str().unwrap());
            }
            "response.output_text.done" => {
                let it = &items[out.unwrap()];
                assert_eq!(it.2, str_of(&v["text"]));
            }
            "response.function_call_arguments.delta" => {
                let it = &mut items[out.unwrap()];
                assert_eq!(it.0, str_of(&v["item_id"]));
                assert!(!it.3);
                it.2.push_str(v["delta"].as_str().unwrap());
            }
            "response.function_call_arguments.done" => {
                let it = &items[out.unwrap()];
                assert_eq!(it.2, str_of(&v["arguments"]));
            }
            "response.output_item.done" => {
                let it = &mut items[out.unwrap()];
                assert_eq!(v["item"]["status"], "completed");
                assert_eq!(it.0, str_of(&v["item"]["id"]));
                it.3 = true;
            }
            "response.completed" | "response.incomplete" => {
                assert_eq!(i, events.len() - 1, "the final event ends the stream");
                assert!(items.iter().all(|it| it.3), "every item done");
                final_response = Some(v["response"].clone());
            }
            other => panic!("unexpected event {other}"),
        }
    }
    let response = final_response.expect("a response.completed event");
    read_responses_output(&response, &mut a);
    // The streamed items agree with the final output.
    let streamed_text: String = items
        .iter()
        .filter(|it| it.1 == "message")
        .map(|it| it.2.as_str())
        .collect();
    assert_eq!(streamed_text, a.text);
    let streamed_calls: Vec<Value> = items
        .iter()
        .filter(|it| it.1 == "function_call")
        .map(|it| parse_args(&it.2))
        .collect();
    assert_eq!(
        streamed_calls,
        a.calls.iter().map(|c| c.2.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        names,
        a.calls
            .iter()
            .map(|c| (c.0.clone(), c.1.clone()))
            .collect::<Vec<_>>()
    );
    a
}

/// The client format's finish value for "the model called tools".
pub fn tool_use_finish(format: ClientFormat) -> &'static str {
    match format {
        ClientFormat::Openai => "tool_calls",
        ClientFormat::OpenaiResponses => "completed",
        ClientFormat::Anthropic => "tool_use",
        ClientFormat::Gemini => "STOP",
    }
}

/// The client format's finish value for "the model finished its turn".
pub fn end_turn_finish(format: ClientFormat) -> &'static str {
    match format {
        ClientFormat::Openai => "stop",
        ClientFormat::OpenaiResponses => "completed",
        ClientFormat::Anthropic => "end_turn",
        ClientFormat::Gemini => "STOP",
    }
}
