//! Request validators, one per provider, written from the providers' documented request rules
//! (and the 400 errors they answer with) independently of the crate's encoders, so they can
//! judge them. Each returns every rule the body breaks, as readable lines; an empty list means
//! the provider would accept the body's shape. Test-only: the proxy never runs them.

use std::collections::HashSet;

use llm_adapters::ClientFormat;
use serde_json::Value;

/// Every rule `body` (an encoded request for an upstream of `format`) breaks.
pub fn request_problems(format: ClientFormat, body: &[u8]) -> Vec<String> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => return vec![format!("the body is not JSON: {err}")],
    };
    let mut problems = Problems::default();
    match format {
        ClientFormat::Anthropic => anthropic(&value, &mut problems),
        ClientFormat::Gemini => gemini(&value, &mut problems),
        ClientFormat::Openai => openai_chat(&value, &mut problems),
        ClientFormat::OpenaiResponses => openai_responses(&value, &mut problems),
    }
    problems.0
}

/// Panics with every broken rule and the body when `body` is not a valid `format` request.
pub fn assert_valid_request(format: ClientFormat, body: &[u8]) {
    let problems = request_problems(format, body);
    assert!(
        problems.is_empty(),
        "{format:?} would refuse this request:\n  {}\nbody: {}",
        problems.join("\n  "),
        String::from_utf8_lossy(body)
    );
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

fn array<'a>(value: &'a Value, what: &str, problems: &mut Problems) -> &'a [Value] {
    match value.as_array() {
        Some(items) => items,
        None => {
            problems
                .0
                .push(format!("{what} must be an array, got {value}"));
            &[]
        }
    }
}

fn non_empty_str(value: &Value) -> bool {
    value.as_str().is_some_and(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages (https://docs.anthropic.com/en/api/messages).

const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
];

fn anthropic(body: &Value, problems: &mut Problems) {
    let Some(object) = body.as_object() else {
        problems.0.push("the body must be an object".to_owned());
        return;
    };
    for key in object.keys() {
        problems.check(ANTHROPIC_FIELDS.contains(&key.as_str()), || {
            format!("unknown top-level field `{key}`")
        });
    }
    problems.check(non_empty_str(&body["model"]), || {
        "`model` is required".to_owned()
    });
    problems.check(body["max_tokens"].as_u64().is_some_and(|n| n > 0), || {
        "`max_tokens` is required and positive".to_owned()
    });
    if let Some(t) = body.get("temperature") {
        problems.check(t.as_f64().is_some_and(|t| (0.0..=1.0).contains(&t)), || {
            format!("`temperature` must be in 0..=1, got {t}")
        });
    }
    match body.get("system") {
        None => {}
        Some(Value::String(text)) => problems.check(!is_blank(text), || {
            "system: text content blocks must be non-empty".to_owned()
        }),
        Some(blocks) => {
            for block in array(blocks, "system", problems) {
                anthropic_text_block(block, "system", problems);
            }
        }
    }
    let messages = array(&body["messages"], "messages", problems);
    problems.check(!messages.is_empty(), || {
        "messages: at least one message is required".to_owned()
    });
    let mut previous_calls: Vec<String> = Vec::new();
    let mut all_calls: HashSet<String> = HashSet::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or("");
        problems.check(matches!(role, "user" | "assistant"), || {
            format!("messages.{i}: role must be user or assistant (system goes in `system`), got `{role}`")
        });
        if i > 0 {
            problems.check(messages[i - 1]["role"] != message["role"], || {
                format!("messages.{i}: roles must alternate")
            });
        }
        let blocks = anthropic_blocks(&message["content"], i, problems);
        let mut results: Vec<String> = Vec::new();
        let mut calls: Vec<String> = Vec::new();
        let mut seen_other = false;
        for block in &blocks {
            match block["type"].as_str().unwrap_or("") {
                "text" => {
                    anthropic_text_block(block, &format!("messages.{i}"), problems);
                    seen_other = true;
                }
                "image" => seen_other = true,
                "tool_use" => {
                    problems.check(role == "assistant", || {
                        format!("messages.{i}: tool_use blocks belong to assistant turns")
                    });
                    let id = block["id"].as_str().unwrap_or("").to_owned();
                    problems.check(
                        !id.is_empty()
                            && id
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                        || format!("messages.{i}: tool_use id `{id}` must match ^[a-zA-Z0-9_-]+$"),
                    );
                    problems.check(non_empty_str(&block["name"]), || {
                        format!("messages.{i}: tool_use needs a name")
                    });
                    problems.check(block["input"].is_object(), || {
                        format!("messages.{i}: tool_use input must be an object")
                    });
                    problems.check(all_calls.insert(id.clone()), || {
                        format!("messages.{i}: tool_use ids must be unique, `{id}` repeats")
                    });
                    calls.push(id);
                }
                "tool_result" => {
                    problems.check(role == "user", || {
                        format!("messages.{i}: tool_result blocks belong to user turns")
                    });
                    problems.check(!seen_other, || {
                        format!(
                            "messages.{i}: tool_result blocks must come before any other content"
                        )
                    });
                    anthropic_result_content(&block["content"], i, problems);
                    results.push(block["tool_use_id"].as_str().unwrap_or("").to_owned());
                }
                other => problems
                    .0
                    .push(format!("messages.{i}: unknown block type `{other}`")),
            }
        }
        for id in &previous_calls {
            problems.check(results.contains(id), || {
                format!("messages.{i}: tool_use ids were found without tool_result blocks immediately after: {id}")
            });
        }
        for id in &results {
            problems.check(previous_calls.contains(id), || {
                format!("messages.{i}: unexpected tool_use_id `{id}` in tool_result blocks: each tool_result must have a corresponding tool_use in the previous message")
            });
        }
        previous_calls = calls;
    }
    problems.check(previous_calls.is_empty(), || {
        format!("tool_use ids were found without tool_result blocks: {previous_calls:?}")
    });
    if let Some(last) = messages.last()
        && last["role"] == "assistant"
        && let Some(text) =
            anthropic_blocks(&last["content"], messages.len(), &mut Problems::default())
                .last()
                .and_then(|b| b["text"].as_str())
    {
        problems.check(text.trim_end() == text, || {
            "final assistant content cannot end with trailing whitespace".to_owned()
        });
    }
}

/// The content blocks of a message (a string is one text block).
fn anthropic_blocks(content: &Value, i: usize, problems: &mut Problems) -> Vec<Value> {
    match content {
        Value::String(text) => vec![serde_json::json!({"type": "text", "text": text})],
        Value::Array(blocks) => {
            problems.check(!blocks.is_empty(), || {
                format!("messages.{i}: all messages must have non-empty content")
            });
            blocks.clone()
        }
        other => {
            problems.0.push(format!(
                "messages.{i}: content must be a string or blocks, got {other}"
            ));
            Vec::new()
        }
    }
}

fn anthropic_text_block(block: &Value, at: &str, problems: &mut Problems) {
    match block["text"].as_str() {
        Some("") => problems
            .0
            .push(format!("{at}: text content blocks must be non-empty")),
        Some(text) if is_blank(text) => problems.0.push(format!(
            "{at}: text content blocks must contain non-whitespace text"
        )),
        Some(_) => {}
        None => problems.0.push(format!("{at}: a text block needs `text`")),
    }
}

fn anthropic_result_content(content: &Value, i: usize, problems: &mut Problems) {
    match content {
        Value::Null => {}
        Value::String(text) => problems.check(!is_blank(text), || {
            format!("messages.{i}: tool_result text must contain non-whitespace text")
        }),
        Value::Array(blocks) => {
            for block in blocks {
                if block["type"] == "text" {
                    anthropic_text_block(block, &format!("messages.{i}.tool_result"), problems);
                }
            }
        }
        other => problems.0.push(format!(
            "messages.{i}: tool_result content must be text or blocks, got {other}"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Gemini generateContent (https://ai.google.dev/api/generate-content).

fn gemini(body: &Value, problems: &mut Problems) {
    gemini_camel_case(body, "", problems);
    let contents = array(&body["contents"], "contents", problems);
    problems.check(!contents.is_empty(), || {
        "contents is not specified".to_owned()
    });
    if let Some(system) = body.get("systemInstruction") {
        let parts = array(&system["parts"], "systemInstruction.parts", problems);
        problems.check(!parts.is_empty(), || {
            "systemInstruction must have parts".to_owned()
        });
        for part in parts {
            gemini_part(part, "systemInstruction", problems);
        }
    }
    let mut previous_calls: Vec<String> = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        let role = content["role"].as_str().unwrap_or("");
        problems.check(matches!(role, "user" | "model"), || {
            format!("contents[{i}]: role must be user or model, got `{role}`")
        });
        if i > 0 {
            problems.check(contents[i - 1]["role"] != content["role"], || {
                format!("contents[{i}]: multiturn requests must alternate between user and model")
            });
        }
        let parts = array(&content["parts"], &format!("contents[{i}].parts"), problems);
        problems.check(!parts.is_empty(), || {
            format!("contents[{i}]: must include at least one part")
        });
        let mut calls = Vec::new();
        let mut responses = Vec::new();
        for part in parts {
            gemini_part(part, &format!("contents[{i}]"), problems);
            if let Some(name) = part["functionCall"]["name"].as_str() {
                problems.check(role == "model", || {
                    format!("contents[{i}]: functionCall parts belong to model turns")
                });
                calls.push(name.to_owned());
            }
            if let Some(name) = part["functionResponse"]["name"].as_str() {
                problems.check(role == "user", || {
                    format!("contents[{i}]: functionResponse parts belong to user turns")
                });
                responses.push(name.to_owned());
            }
        }
        let mut expected = previous_calls.clone();
        expected.sort();
        let mut answered = responses.clone();
        answered.sort();
        problems.check(expected == answered, || {
            format!(
                "contents[{i}]: the number of function response parts must equal the number of function call parts of the function call turn (calls {previous_calls:?}, responses {responses:?})"
            )
        });
        previous_calls = calls;
    }
    problems.check(previous_calls.is_empty(), || {
        format!("function calls {previous_calls:?} have no function response turn")
    });
}

fn gemini_part(part: &Value, at: &str, problems: &mut Problems) {
    const DATA: &[&str] = &[
        "text",
        "inlineData",
        "fileData",
        "functionCall",
        "functionResponse",
    ];
    let Some(object) = part.as_object() else {
        problems.0.push(format!("{at}: a part must be an object"));
        return;
    };
    let data: Vec<&String> = object
        .keys()
        .filter(|k| DATA.contains(&k.as_str()))
        .collect();
    problems.check(data.len() == 1, || {
        format!(
            "{at}: a part holds exactly one kind of data, got {:?}",
            object.keys().collect::<Vec<_>>()
        )
    });
    if let Some(text) = object.get("text") {
        problems.check(text.as_str().is_some_and(|t| !is_blank(t)), || {
            format!("{at}: text parts must not be empty")
        });
    }
    if let Some(call) = object.get("functionCall") {
        problems.check(
            non_empty_str(&call["name"]) && call["args"].is_object(),
            || format!("{at}: functionCall needs a name and an args object"),
        );
    }
    if let Some(response) = object.get("functionResponse") {
        problems.check(
            non_empty_str(&response["name"]) && response["response"].is_object(),
            || format!("{at}: functionResponse needs a name and a response object"),
        );
    }
    if let Some(inline) = object.get("inlineData") {
        problems.check(
            non_empty_str(&inline["mimeType"]) && non_empty_str(&inline["data"]),
            || format!("{at}: inlineData needs mimeType and data"),
        );
    }
    if let Some(file) = object.get("fileData") {
        problems.check(non_empty_str(&file["fileUri"]), || {
            format!("{at}: fileData needs fileUri")
        });
    }
}

/// Gemini's JSON uses camelCase field names; user data (call arguments, function responses,
/// schemas) is exempt.
fn gemini_camel_case(value: &Value, at: &str, problems: &mut Problems) {
    const USER_DATA: &[&str] = &["args", "response", "parametersJsonSchema", "parameters"];
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                problems.check(!key.contains('_'), || {
                    format!("{at}.{key}: field names are camelCase")
                });
                if !USER_DATA.contains(&key.as_str()) {
                    gemini_camel_case(inner, &format!("{at}.{key}"), problems);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                gemini_camel_case(item, &format!("{at}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI Chat Completions (https://platform.openai.com/docs/api-reference/chat/create).

fn openai_chat(body: &Value, problems: &mut Problems) {
    problems.check(non_empty_str(&body["model"]), || {
        "`model` is required".to_owned()
    });
    let messages = array(&body["messages"], "messages", problems);
    problems.check(!messages.is_empty(), || {
        "messages: the array must not be empty".to_owned()
    });
    let mut pending: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or("");
        if role != "tool" {
            problems.check(pending.is_empty(), || {
                format!("messages.{i}: an assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'; missing {pending:?}")
            });
            pending.clear();
        }
        match role {
            "system" | "developer" => problems.check(message["content"].is_string(), || {
                format!("messages.{i}: {role} content must be text")
            }),
            "user" => problems.check(
                message["content"].is_string()
                    || message["content"].as_array().is_some_and(|a| !a.is_empty()),
                || format!("messages.{i}: user content must be text or a non-empty array of parts"),
            ),
            "assistant" => {
                let calls = message.get("tool_calls").and_then(Value::as_array);
                problems.check(
                    !message["content"].is_null() || calls.is_some_and(|c| !c.is_empty()),
                    || format!("messages.{i}: assistant content is required unless tool_calls is specified"),
                );
                for call in calls.into_iter().flatten() {
                    let id = call["id"].as_str().unwrap_or("").to_owned();
                    problems.check(!id.is_empty() && seen.insert(id.clone()), || {
                        format!(
                            "messages.{i}: tool call ids must be present and unique, got `{id}`"
                        )
                    });
                    problems.check(
                        call["type"] == "function"
                            && non_empty_str(&call["function"]["name"])
                            && call["function"]["arguments"].is_string(),
                        || format!("messages.{i}: a tool call needs type function, a name and arguments text"),
                    );
                    pending.push(id);
                }
            }
            "tool" => {
                let id = message["tool_call_id"].as_str().unwrap_or("");
                match pending.iter().position(|p| p == id) {
                    Some(pos) => {
                        pending.remove(pos);
                    }
                    None => problems.0.push(format!(
                        "messages.{i}: messages with role 'tool' must be a response to a preceding message with 'tool_calls' (`{id}`)"
                    )),
                }
                problems.check(message["content"].is_string(), || {
                    format!("messages.{i}: tool content must be text")
                });
            }
            other => problems
                .0
                .push(format!("messages.{i}: unknown role `{other}`")),
        }
    }
    problems.check(pending.is_empty(), || {
        format!("tool calls {pending:?} have no tool message")
    });
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses (https://platform.openai.com/docs/api-reference/responses/create).

fn openai_responses(body: &Value, problems: &mut Problems) {
    problems.check(non_empty_str(&body["model"]), || {
        "`model` is required".to_owned()
    });
    let input = array(&body["input"], "input", problems);
    problems.check(!input.is_empty(), || "input must not be empty".to_owned());
    let mut calls: Vec<String> = Vec::new();
    let mut answered: HashSet<String> = HashSet::new();
    for (i, item) in input.iter().enumerate() {
        match item["type"].as_str().unwrap_or("") {
            "message" => {
                let role = item["role"].as_str().unwrap_or("");
                problems.check(
                    matches!(role, "user" | "assistant" | "system" | "developer"),
                    || format!("input[{i}]: unknown role `{role}`"),
                );
                problems.check(
                    item["content"].as_array().is_some_and(|c| !c.is_empty()),
                    || format!("input[{i}]: message content must be a non-empty array"),
                );
            }
            "function_call" => {
                let id = item["call_id"].as_str().unwrap_or("").to_owned();
                problems.check(!id.is_empty() && !calls.contains(&id), || {
                    format!(
                        "input[{i}]: function_call call_id must be present and unique, got `{id}`"
                    )
                });
                problems.check(
                    non_empty_str(&item["name"]) && item["arguments"].is_string(),
                    || format!("input[{i}]: function_call needs a name and arguments text"),
                );
                calls.push(id);
            }
            "function_call_output" => {
                let id = item["call_id"].as_str().unwrap_or("").to_owned();
                problems.check(calls.contains(&id), || {
                    format!(
                        "input[{i}]: no tool call found for function call output with call_id {id}"
                    )
                });
                problems.check(answered.insert(id.clone()), || {
                    format!("input[{i}]: call_id {id} is answered twice")
                });
                problems.check(item["output"].is_string(), || {
                    format!("input[{i}]: output must be text")
                });
            }
            other => problems
                .0
                .push(format!("input[{i}]: unknown item type `{other}`")),
        }
    }
    for id in calls {
        problems.check(answered.contains(&id), || {
            format!("no tool output found for function call {id}")
        });
    }
}
