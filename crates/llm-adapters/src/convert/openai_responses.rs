//! OpenAI Responses (`v1/responses`) as a conversion format: request, response, usage and
//! stream event wire types, and their mapping to and from the neutral model. `instructions`
//! and system/developer input messages become system segments, `function_call` and
//! `function_call_output` items tool calls and results. The client stream keeps the full
//! Responses grammar with `sequence_number`s: `response.created`, `response.in_progress`, per
//! output item `response.output_item.added`, then for a message `response.content_part.added`,
//! `response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`,
//! for a function call `response.function_call_arguments.delta`...,
//! `response.function_call_arguments.done`, then `response.output_item.done`, and finally
//! `response.completed` (or `response.incomplete`) with the whole output and usage. Response ids
//! always carry `resp_` (an upstream id without it is kept behind the prefix). Encoded requests
//! leave out blank assistant text and user messages with nothing to carry.
//!
//! The Responses API is stateful and the other formats are not: a request with
//! `previous_response_id` is refused (send the whole conversation), and server-side tools
//! (web search, file search, ...) are dropped. Stop sequences cannot be expressed and are
//! dropped when converting to this format.

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ConvertError, MalformedResponse,
    neutral::{
        ChatRequest, ChatResponse, ErrorInfo, FinishReason, Image, Message, Part, Role,
        StreamEvent, Tool, ToolCall, ToolChoice, ToolResult, Usage, client_id, fresh_id, json_text,
        now_unix, push_part, status_for_code,
    },
    registry::{Codec, DecodedRequest, EncodedRequest},
    stream::{
        ClientStream, StreamDecoder, StreamEncoder, StreamFraming, parse_event, put_error_event,
        put_json_event,
    },
};
use crate::{ClientFormat, SseEvent};

const NAME: &str = "OpenAI Responses";

/// The prefix of every Responses id (`resp_…`), which clients that chain or store responses
/// expect; an upstream id without it is put behind it.
const RESPONSE_ID_PREFIX: &str = "resp_";

/// The upstream action of a converted request.
pub(crate) const ACTION: &str = "v1/responses";

/// The codec of OpenAI Responses.
pub(crate) struct OpenaiResponsesCodec;

// ---------------------------------------------------------------------------------------------
// Wire types.

#[derive(Deserialize)]
struct RequestIn {
    model: Option<String>,
    input: Option<Input>,
    instructions: Option<String>,
    tools: Option<Vec<ToolIn>>,
    tool_choice: Option<Value>,
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stream: Option<bool>,
    previous_response_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<ItemIn>),
}

#[derive(Deserialize)]
struct ItemIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    content: Option<ItemContent>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
    output: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ItemContent {
    Text(String),
    Parts(Vec<ContentPartIn>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentPartIn {
    InputText {
        text: String,
    },
    OutputText {
        text: String,
    },
    InputImage {
        image_url: Option<String>,
    },
    Refusal {
        refusal: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ToolIn {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    description: Option<String>,
    parameters: Option<Value>,
}

#[derive(Deserialize)]
struct ResponseIn {
    id: Option<String>,
    created_at: Option<u64>,
    model: Option<String>,
    status: Option<String>,
    incomplete_details: Option<IncompleteIn>,
    #[serde(default)]
    output: Vec<ItemIn>,
    usage: Option<UsageIn>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct IncompleteIn {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct UsageIn {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<InputDetails>,
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetails {
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct EventIn {
    #[serde(rename = "type")]
    kind: String,
    response: Option<ResponseIn>,
    output_index: Option<usize>,
    item: Option<ItemIn>,
    delta: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Mapping helpers.

impl UsageIn {
    fn to_neutral(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.input(),
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens.unwrap_or(0)},
        "output_tokens": usage.output(),
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens.unwrap_or(0)},
        "total_tokens": usage.total(),
    })
}

impl ResponseIn {
    fn finish(&self, called_tools: bool) -> Option<FinishReason> {
        match self.status.as_deref()? {
            "completed" if called_tools => Some(FinishReason::ToolUse),
            "completed" => Some(FinishReason::EndTurn),
            "incomplete" => Some(
                match self
                    .incomplete_details
                    .as_ref()
                    .and_then(|d| d.reason.as_deref())
                {
                    Some("max_output_tokens") => FinishReason::MaxTokens,
                    Some("content_filter") => FinishReason::ContentFilter,
                    _ => FinishReason::Other,
                },
            ),
            _ => None,
        }
    }
}

/// The response status and incomplete details of a finish reason.
fn status_of(finish: Option<FinishReason>) -> (&'static str, Value) {
    match finish {
        Some(FinishReason::MaxTokens) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(FinishReason::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn item_parts(content: Option<ItemContent>) -> Vec<Part> {
    match content {
        None => Vec::new(),
        Some(ItemContent::Text(text)) => vec![Part::Text(text)],
        Some(ItemContent::Parts(parts)) => parts
            .into_iter()
            .filter_map(|part| match part {
                ContentPartIn::InputText { text }
                | ContentPartIn::OutputText { text }
                | ContentPartIn::Refusal { refusal: text } => Some(Part::Text(text)),
                ContentPartIn::InputImage { image_url } => {
                    image_url.map(|url| Part::Image(Image::from_url(&url)))
                }
                ContentPartIn::Other => None,
            })
            .collect(),
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "completed" {
        json!([output_text(text)])
    } else {
        json!([])
    };
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    })
}

/// The response object, as in the final event or a non-streamed body.
fn response_json(
    id: &str,
    created_at: u64,
    model: &str,
    status: &str,
    incomplete: Value,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "usage": usage.map(usage_json),
    })
}

// ---------------------------------------------------------------------------------------------
// Codec.

impl Codec for OpenaiResponsesCodec {
    fn decode_request(
        &self,
        action: &str,
        _query: &str,
        body: &[u8],
    ) -> Result<DecodedRequest, ConvertError> {
        if !action.trim_end_matches('/').ends_with("responses") {
            return Err(ConvertError::UnsupportedAction {
                action: action.to_owned(),
                expected: ACTION,
            });
        }
        let wire: RequestIn =
            serde_json::from_slice(body).map_err(|e| ConvertError::invalid(NAME, e))?;
        if wire.previous_response_id.is_some() {
            return Err(ConvertError::Unsupported(
                "`previous_response_id` needs an OpenAI Responses upstream; send the whole conversation in `input`",
            ));
        }
        let mut request = ChatRequest {
            model: wire.model,
            max_tokens: wire.max_output_tokens,
            temperature: wire.temperature,
            top_p: wire.top_p,
            stream: wire.stream.unwrap_or(false),
            tool_choice: wire.tool_choice.as_ref().and_then(|v| match v {
                Value::String(mode) => match mode.as_str() {
                    "auto" => Some(ToolChoice::Auto),
                    "none" => Some(ToolChoice::None),
                    "required" => Some(ToolChoice::Required),
                    _ => None,
                },
                Value::Object(map) => map
                    .get("name")
                    .and_then(Value::as_str)
                    .map(|n| ToolChoice::Function(n.to_owned())),
                _ => None,
            }),
            ..ChatRequest::default()
        };
        if let Some(instructions) = wire.instructions {
            request.system.push(instructions);
        }
        for tool in wire.tools.unwrap_or_default() {
            if tool.kind == "function"
                && let Some(name) = tool.name
            {
                request.tools.push(Tool {
                    name,
                    description: tool.description,
                    parameters: tool.parameters.unwrap_or_else(|| json!({"type": "object"})),
                });
            }
        }
        let items = match wire.input {
            None => Vec::new(),
            Some(Input::Text(text)) => {
                request
                    .messages
                    .push(Message::new(Role::User, vec![Part::Text(text)]));
                Vec::new()
            }
            Some(Input::Items(items)) => items,
        };
        for item in items {
            match item.kind.as_deref() {
                None | Some("message") => {
                    let parts = item_parts(item.content);
                    match item.role.as_deref() {
                        Some("system" | "developer") => request.system.push(
                            parts
                                .into_iter()
                                .filter_map(|p| match p {
                                    Part::Text(t) => Some(t),
                                    _ => None,
                                })
                                .collect(),
                        ),
                        Some("user") => {
                            if !parts.is_empty() {
                                request.messages.push(Message::new(Role::User, parts));
                            }
                        }
                        Some("assistant") => {
                            for part in parts.into_iter().filter(|p| matches!(p, Part::Text(_))) {
                                push_part(&mut request.messages, Role::Assistant, part);
                            }
                        }
                        other => {
                            return Err(ConvertError::invalid(
                                NAME,
                                format!("unknown message role `{}`", other.unwrap_or("")),
                            ));
                        }
                    }
                }
                Some("function_call") => push_part(
                    &mut request.messages,
                    Role::Assistant,
                    Part::ToolCall(ToolCall {
                        id: item.call_id.unwrap_or_default(),
                        name: item.name.unwrap_or_default(),
                        arguments: item.arguments.unwrap_or_default(),
                    }),
                ),
                Some("function_call_output") => push_part(
                    &mut request.messages,
                    Role::Tool,
                    Part::ToolResult(ToolResult {
                        call_id: item.call_id.unwrap_or_default(),
                        name: None,
                        content: match item.output {
                            Some(Value::String(text)) => text,
                            Some(other) => json_text(&other),
                            None => String::new(),
                        },
                        is_error: false,
                    }),
                ),
                // Reasoning items, item references and server tool calls cannot move.
                Some(_) => {}
            }
        }
        Ok(DecodedRequest {
            request,
            framing: StreamFraming::Sse,
            include_usage: false,
        })
    }

    fn encode_request(&self, request: &ChatRequest) -> Result<EncodedRequest, ConvertError> {
        let mut input = Vec::new();
        for message in &request.messages {
            match message.role {
                Role::User => {
                    let content: Vec<Value> = message
                        .parts
                        .iter()
                        .filter_map(|p| match p {
                            Part::Text(text) => Some(json!({"type": "input_text", "text": text})),
                            Part::Image(image) => {
                                Some(json!({"type": "input_image", "image_url": image.to_url()}))
                            }
                            _ => None,
                        })
                        .collect();
                    if !content.is_empty() {
                        input.push(json!({"type": "message", "role": "user", "content": content}));
                    }
                }
                Role::Assistant => {
                    for part in &message.parts {
                        match part {
                            // Blank text beside calls means "no text" in agent frameworks.
                            Part::Text(text) if text.trim().is_empty() => {}
                            Part::Text(text) => input.push(json!({
                                "type": "message",
                                "role": "assistant",
                                "content": [output_text(text)],
                            })),
                            Part::ToolCall(call) => input.push(json!({
                                "type": "function_call",
                                "call_id": call.id,
                                "name": call.name,
                                "arguments": call.arguments,
                            })),
                            _ => {}
                        }
                    }
                }
                Role::Tool => {
                    for part in &message.parts {
                        if let Part::ToolResult(result) = part {
                            input.push(json!({
                                "type": "function_call_output",
                                "call_id": result.call_id,
                                "output": result.content,
                            }));
                        }
                    }
                }
            }
        }
        if input.is_empty() {
            return Err(ConvertError::EmptyConversation);
        }
        let mut body = Map::new();
        if let Some(model) = &request.model {
            body.insert("model".into(), json!(model));
        }
        if !request.system.is_empty() {
            body.insert("instructions".into(), json!(request.system.join("\n\n")));
        }
        body.insert("input".into(), Value::Array(input));
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|tool| {
                    let mut value = json!({
                        "type": "function",
                        "name": tool.name,
                        "parameters": tool.parameters,
                    });
                    if let Some(description) = &tool.description {
                        value["description"] = json!(description);
                    }
                    value
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(choice) = &request.tool_choice {
            let value = match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Function(name) => json!({"type": "function", "name": name}),
            };
            body.insert("tool_choice".into(), value);
        }
        if let Some(max) = request.max_tokens {
            body.insert("max_output_tokens".into(), json!(max));
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = request.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if request.stream {
            body.insert("stream".into(), json!(true));
        }
        Ok(EncodedRequest {
            action: ACTION.to_owned(),
            params: Vec::new(),
            body: json_text(&Value::Object(body)).into_bytes(),
        })
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, MalformedResponse> {
        let mut wire: ResponseIn = serde_json::from_slice(body)?;
        let mut parts = Vec::new();
        for item in std::mem::take(&mut wire.output) {
            match item.kind.as_deref() {
                Some("message") => parts.extend(item_parts(item.content)),
                Some("function_call") => parts.push(Part::ToolCall(ToolCall {
                    id: item.call_id.unwrap_or_else(|| fresh_id("call_")),
                    name: item.name.unwrap_or_default(),
                    arguments: item.arguments.unwrap_or_default(),
                })),
                _ => {}
            }
        }
        let called = parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
        Ok(ChatResponse {
            finish: wire.finish(called),
            id: wire.id,
            model: wire.model,
            created: wire.created_at,
            parts,
            stop_sequence: None,
            usage: wire.usage.map(|u| u.to_neutral()).unwrap_or_default(),
        })
    }

    fn encode_response(&self, response: &ChatResponse) -> Vec<u8> {
        let mut output = Vec::new();
        let text: String = response
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        if response.parts.iter().any(|p| matches!(p, Part::Text(_))) {
            output.push(message_item(&fresh_id("msg_"), &text, "completed"));
        }
        for part in &response.parts {
            if let Part::ToolCall(call) = part {
                output.push(call_item(
                    &fresh_id("fc_"),
                    &call.id,
                    &call.name,
                    &call.arguments,
                    "completed",
                ));
            }
        }
        let (status, incomplete) = status_of(response.finish);
        json_text(&response_json(
            &client_id(RESPONSE_ID_PREFIX, response.id.as_deref()),
            response.created.unwrap_or_else(now_unix),
            response.model.as_deref().unwrap_or_default(),
            status,
            incomplete,
            output,
            Some(&response.usage),
        ))
        .into_bytes()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(EventDecoder::default())
    }

    fn stream_encoder(&self, client: &ClientStream) -> Box<dyn StreamEncoder> {
        Box::new(EventEncoder {
            model: client.model.clone().unwrap_or_default(),
            ..EventEncoder::default()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Stream decoding.

#[derive(Default)]
struct EventDecoder {
    started: bool,
    /// Output index → neutral tool-call index, for function-call items.
    calls: Vec<(usize, usize)>,
}

impl StreamDecoder for EventDecoder {
    fn event(&mut self, event: &SseEvent<'_>, out: &mut Vec<StreamEvent>) {
        let Some(parsed) = parse_event::<EventIn>(event.data, out) else {
            return;
        };
        match parsed.kind.as_str() {
            "response.created" | "response.in_progress" if !self.started => {
                self.started = true;
                let response = parsed.response;
                out.push(StreamEvent::Start {
                    id: response.as_ref().and_then(|r| r.id.clone()),
                    model: response.as_ref().and_then(|r| r.model.clone()),
                    created: response.as_ref().and_then(|r| r.created_at),
                });
            }
            "response.output_item.added" => {
                if let Some(item) = parsed.item
                    && item.kind.as_deref() == Some("function_call")
                {
                    let index = self.calls.len();
                    self.calls
                        .push((parsed.output_index.unwrap_or(index), index));
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: item.call_id.unwrap_or_else(|| fresh_id("call_")),
                        name: item.name.unwrap_or_default(),
                    });
                    if let Some(arguments) = item.arguments.filter(|a| !a.is_empty()) {
                        out.push(StreamEvent::ToolCallDelta { index, arguments });
                    }
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(delta) = parsed.delta.filter(|d| !d.is_empty()) {
                    out.push(StreamEvent::Text(delta));
                }
            }
            "response.function_call_arguments.delta" => {
                let output_index = parsed.output_index.unwrap_or(0);
                if let Some(&(_, index)) = self.calls.iter().find(|(o, _)| *o == output_index)
                    && let Some(arguments) = parsed.delta.filter(|d| !d.is_empty())
                {
                    out.push(StreamEvent::ToolCallDelta { index, arguments });
                }
            }
            "response.completed" | "response.incomplete" => {
                if let Some(response) = parsed.response {
                    if let Some(usage) = &response.usage {
                        out.push(StreamEvent::Usage(usage.to_neutral()));
                    }
                    if let Some(reason) = response.finish(!self.calls.is_empty()) {
                        out.push(StreamEvent::Finish {
                            reason,
                            stop_sequence: None,
                        });
                    }
                }
                out.push(StreamEvent::End);
            }
            "response.failed" | "error" => {
                let error = parsed.response.and_then(|r| r.error);
                let field = |name: &str| {
                    error
                        .as_ref()
                        .and_then(|e| e.get(name))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                let code = parsed
                    .code
                    .or_else(|| field("code"))
                    .unwrap_or_else(|| "server_error".to_owned());
                let message = parsed
                    .message
                    .or_else(|| field("message"))
                    .unwrap_or_else(|| "the upstream response failed".to_owned());
                out.push(StreamEvent::Error(ErrorInfo::new(
                    status_for_code(&code),
                    code,
                    message,
                )));
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream encoding.

/// One output item of the client stream, kept whole for its `done` events and the final
/// response object.
enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        index: usize,
        call_id: String,
        name: String,
        arguments: String,
    },
}

#[derive(Default)]
struct EventEncoder {
    id: String,
    model: String,
    created_at: u64,
    sequence: u64,
    started: bool,
    items: Vec<Item>,
    /// The output index of the item still open.
    open: Option<usize>,
    finish: Option<FinishReason>,
    usage: Usage,
    done: bool,
}

impl EventEncoder {
    fn event(&mut self, out: &mut BytesMut, kind: &str, mut fields: Value) {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        put_json_event(out, Some(kind), &fields);
    }

    /// The response object in `status`; its output lists the items only once they are all
    /// done (the final event), as the API does.
    fn response(&self, status: &str, incomplete: Value, usage: Option<&Usage>) -> Value {
        let output = if status == "in_progress" {
            Vec::new()
        } else {
            self.items
                .iter()
                .map(|item| match item {
                    Item::Message { id, text } => message_item(id, text, "completed"),
                    Item::Call {
                        id,
                        call_id,
                        name,
                        arguments,
                        ..
                    } => call_item(id, call_id, name, arguments, "completed"),
                })
                .collect()
        };
        response_json(
            &self.id,
            self.created_at,
            &self.model,
            status,
            incomplete,
            output,
            usage,
        )
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = fresh_id(RESPONSE_ID_PREFIX);
        }
        if self.created_at == 0 {
            self.created_at = now_unix();
        }
        let response = self.response("in_progress", Value::Null, None);
        self.event(out, "response.created", json!({ "response": response }));
        self.event(out, "response.in_progress", json!({ "response": response }));
    }

    fn close(&mut self, out: &mut BytesMut) {
        let Some(index) = self.open.take() else {
            return;
        };
        let (kind, fields, item) = match self.items.get(index) {
            Some(Item::Message { id, text }) => (
                "response.output_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                message_item(id, text, "completed"),
            ),
            Some(Item::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            }) => (
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "arguments": arguments}),
                call_item(id, call_id, name, arguments, "completed"),
            ),
            None => return,
        };
        self.event(out, kind, fields);
        if let Some(Item::Message { id, text }) = self.items.get(index) {
            let fields = json!({
                "item_id": id,
                "output_index": index,
                "content_index": 0,
                "part": output_text(text),
            });
            self.event(out, "response.content_part.done", fields);
        }
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }

    fn open_message(&mut self, out: &mut BytesMut) -> usize {
        if let Some(index) = self.open
            && matches!(self.items.get(index), Some(Item::Message { .. }))
        {
            return index;
        }
        self.close(out);
        let index = self.items.len();
        let id = fresh_id("msg_");
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": message_item(&id, "", "in_progress")}),
        );
        self.event(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text("")}),
        );
        self.items.push(Item::Message {
            id,
            text: String::new(),
        });
        self.open = Some(index);
        index
    }
}

impl StreamEncoder for EventEncoder {
    fn encode(&mut self, event: StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Start { id, model, created } => {
                if !self.started {
                    self.id = client_id(RESPONSE_ID_PREFIX, id.as_deref());
                    if let Some(model) = model {
                        self.model = model;
                    }
                    self.created_at = created.unwrap_or(0);
                }
                self.start(out);
            }
            StreamEvent::Text(delta) => {
                self.start(out);
                let index = self.open_message(out);
                let Some(Item::Message { id, text }) = self.items.get_mut(index) else {
                    return;
                };
                text.push_str(&delta);
                let fields = json!({
                    "item_id": id,
                    "output_index": index,
                    "content_index": 0,
                    "delta": delta,
                    "logprobs": [],
                });
                self.event(out, "response.output_text.delta", fields);
            }
            StreamEvent::ToolCallStart {
                index: call_index,
                id: call_id,
                name,
            } => {
                self.start(out);
                self.close(out);
                let index = self.items.len();
                let id = fresh_id("fc_");
                self.event(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": call_item(&id, &call_id, &name, "", "in_progress")}),
                );
                self.items.push(Item::Call {
                    id,
                    index: call_index,
                    call_id,
                    name,
                    arguments: String::new(),
                });
                self.open = Some(index);
            }
            StreamEvent::ToolCallDelta {
                index: call_index,
                arguments: delta,
            } => {
                self.start(out);
                let found = self
                    .items
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, item)| match item {
                        Item::Call {
                            id,
                            index,
                            arguments,
                            ..
                        } if *index == call_index => Some((i, id, arguments)),
                        _ => None,
                    });
                let Some((output_index, id, arguments)) = found else {
                    return;
                };
                arguments.push_str(&delta);
                let fields = json!({"item_id": id, "output_index": output_index, "delta": delta});
                self.event(out, "response.function_call_arguments.delta", fields);
            }
            StreamEvent::Usage(usage) => self.usage.merge(&usage),
            StreamEvent::Finish { reason, .. } => self.finish = Some(reason),
            StreamEvent::Error(error) => {
                put_error_event(out, ClientFormat::OpenaiResponses, &error);
                self.done = true;
            }
            StreamEvent::End => {
                self.start(out);
                self.close(out);
                let (status, incomplete) = status_of(self.finish);
                let usage = self.usage;
                let response = self.response(status, incomplete, Some(&usage));
                let kind = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                self.event(out, kind, json!({ "response": response }));
                self.done = true;
            }
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn string_input_is_one_user_message() {
        let request = OpenaiResponsesCodec
            .decode_request(
                "v1/responses",
                "",
                br#"{"model":"gpt-4.1","input":"hi","instructions":"be nice"}"#,
            )
            .unwrap()
            .request;
        assert_eq!(request.system, ["be nice"]);
        assert_eq!(
            request.messages,
            [Message::new(Role::User, vec![Part::Text("hi".to_owned())])]
        );
    }

    #[test]
    fn response_ids_are_response_ids() {
        let body = OpenaiResponsesCodec.encode_response(&ChatResponse {
            id: Some("msg_01".to_owned()),
            parts: vec![Part::Text("hi".to_owned())],
            ..ChatResponse::default()
        });
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["id"], "resp_msg_01");
        let fresh = OpenaiResponsesCodec.encode_response(&ChatResponse::default());
        let fresh: Value = serde_json::from_slice(&fresh).unwrap();
        assert!(fresh["id"].as_str().unwrap().starts_with("resp_"));
    }

    #[test]
    fn stream_ids_are_response_ids() {
        let mut encoder = OpenaiResponsesCodec.stream_encoder(&ClientStream::default());
        let mut out = BytesMut::new();
        for event in [
            StreamEvent::Start {
                id: Some("chatcmpl-9".to_owned()),
                model: None,
                created: Some(1),
            },
            StreamEvent::Usage(Usage {
                input_tokens: Some(4),
                output_tokens: Some(2),
                ..Usage::default()
            }),
            StreamEvent::End,
        ] {
            encoder.encode(event, &mut out);
        }
        let text = String::from_utf8(out.to_vec()).unwrap();
        let completed = text
            .split("\n\n")
            .find(|frame| frame.starts_with("event: response.completed"))
            .and_then(|frame| frame.lines().nth(1))
            .and_then(|line| line.strip_prefix("data: "))
            .unwrap();
        let completed: Value = serde_json::from_str(completed).unwrap();
        assert_eq!(completed["response"]["id"], "resp_chatcmpl-9");
        assert_eq!(completed["response"]["usage"]["total_tokens"], 6);
    }

    #[test]
    fn previous_response_id_is_refused() {
        let err = OpenaiResponsesCodec
            .decode_request(
                "v1/responses",
                "",
                br#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#,
            )
            .err()
            .unwrap();
        assert_eq!(err.code(), "unsupported_feature");
    }

    #[test]
    fn function_items_become_calls_and_results() {
        let request = OpenaiResponsesCodec
            .decode_request(
                "v1/responses",
                "",
                br#"{"model":"m","input":[
                    {"role":"user","content":"weather?"},
                    {"type":"reasoning","id":"rs_1","summary":[]},
                    {"type":"function_call","call_id":"c1","name":"weather","arguments":"{}"},
                    {"type":"function_call_output","call_id":"c1","output":"sunny"}
                ],"tools":[{"type":"function","name":"weather","parameters":{"type":"object"}},{"type":"web_search"}]}"#,
            )
            .unwrap()
            .request;
        assert_eq!(request.tools.len(), 1);
        let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool]);
    }
}
