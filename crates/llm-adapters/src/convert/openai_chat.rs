//! OpenAI Chat Completions (`v1/chat/completions`, also every OpenAI-compatible server) as a
//! conversion format: its request, response, chunk and usage wire types, and their mapping to
//! and from the neutral model. System and developer messages become system segments, `tool`
//! messages tool results, `image_url` parts images (data URLs inline); a stream is a series of
//! `chat.completion.chunk` data events ending with `data: [DONE]`, with tool-call arguments
//! streamed as string deltas under the call's `index`.
//!
//! Encoded upstream requests ask for `stream_options.include_usage` so streamed usage arrives.
//! The client stream carries usage as OpenAI does: only when the client asked for
//! `stream_options.include_usage`, then as `"usage": null` on every chunk and a separate last
//! chunk with `"choices": []` and the usage, before `data: [DONE]`. `max_tokens` (not
//! `max_completion_tokens`) is sent, which every compatible server understands. Blank assistant
//! text beside tool calls is sent as `content: null`, and messages left with nothing to carry
//! are left out.

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ConvertError, MalformedResponse,
    neutral::{
        ChatRequest, ChatResponse, ErrorInfo, FinishReason, Image, Message, Part, Role,
        StreamEvent, Tool, ToolCall, ToolChoice, ToolResult, Usage, fresh_id, json_text, now_unix,
        push_part, status_for_code,
    },
    registry::{Codec, DecodedRequest, EncodedRequest},
    stream::{
        ClientStream, StreamDecoder, StreamEncoder, StreamFraming, parse_event, put_error_event,
        put_json_event,
    },
};
use crate::{ClientFormat, SseEvent};

const NAME: &str = "OpenAI Chat Completions";

/// The upstream action of a converted request.
pub(crate) const ACTION: &str = "v1/chat/completions";

/// The codec of OpenAI Chat Completions.
pub(crate) struct OpenaiChatCodec;

// ---------------------------------------------------------------------------------------------
// Wire types (only what the conversion reads; unknown fields are ignored).

#[derive(Deserialize)]
struct RequestIn {
    model: Option<String>,
    messages: Vec<MessageIn>,
    tools: Option<Vec<ToolIn>>,
    tool_choice: Option<Value>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<Stop>,
    stream: Option<bool>,
    stream_options: Option<StreamOptionsIn>,
}

#[derive(Deserialize)]
struct StreamOptionsIn {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct MessageIn {
    role: String,
    content: Option<Content>,
    tool_calls: Option<Vec<ToolCallIn>>,
    tool_call_id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
#[serde(tag = "type")]
pub(crate) enum ContentPart {
    #[serde(rename = "text", alias = "input_text", alias = "output_text")]
    Text { text: String },
    #[serde(rename = "image_url")]
    ImageUrl { image_url: ImageUrl },
    #[serde(rename = "refusal")]
    Refusal { refusal: String },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ImageUrl {
    Object { url: String },
    Plain(String),
}

#[derive(Deserialize)]
struct ToolCallIn {
    id: Option<String>,
    function: FunctionCallIn,
}

#[derive(Deserialize)]
struct FunctionCallIn {
    name: String,
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct ToolIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<FunctionDefIn>,
}

#[derive(Deserialize)]
struct FunctionDefIn {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
}

#[derive(Deserialize)]
struct ResponseIn {
    id: Option<String>,
    created: Option<u64>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChoiceIn>,
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct ChoiceIn {
    message: Option<ResponseMessageIn>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponseMessageIn {
    content: Option<Content>,
    tool_calls: Option<Vec<ToolCallIn>>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct UsageIn {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ChunkIn {
    id: Option<String>,
    created: Option<u64>,
    model: Option<String>,
    choices: Option<Vec<ChunkChoiceIn>>,
    usage: Option<UsageIn>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoiceIn {
    delta: Option<DeltaIn>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaIn {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<ToolCallDeltaIn>>,
}

#[derive(Deserialize)]
struct ToolCallDeltaIn {
    index: Option<usize>,
    id: Option<String>,
    function: Option<FunctionDeltaIn>,
}

#[derive(Deserialize)]
struct FunctionDeltaIn {
    name: Option<String>,
    arguments: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Shared mapping helpers.

impl UsageIn {
    fn to_neutral(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cached_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

fn usage_json(usage: &Usage) -> Value {
    let mut out = json!({
        "prompt_tokens": usage.input(),
        "completion_tokens": usage.output(),
        "total_tokens": usage.total(),
    });
    if let Some(cached) = usage.cached_input_tokens {
        out["prompt_tokens_details"] = json!({ "cached_tokens": cached });
    }
    if let Some(reasoning) = usage.reasoning_tokens {
        out["completion_tokens_details"] = json!({ "reasoning_tokens": reasoning });
    }
    out
}

fn finish_from(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::EndTurn,
        "length" => FinishReason::MaxTokens,
        "tool_calls" | "function_call" => FinishReason::ToolUse,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

fn finish_to(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::EndTurn | FinishReason::StopSequence | FinishReason::Other => "stop",
        FinishReason::MaxTokens => "length",
        FinishReason::ToolUse => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// Argument text of a call: the string as sent, or the JSON text of a non-string value.
fn arguments_text(arguments: Option<Value>) -> String {
    match arguments {
        Some(Value::String(text)) => text,
        Some(Value::Null) | None => String::new(),
        Some(other) => json_text(&other),
    }
}

/// The parts of a message's content, in order; refusals count as text.
pub(crate) fn content_parts(content: Option<Content>) -> Vec<Part> {
    match content {
        None => Vec::new(),
        Some(Content::Text(text)) => vec![Part::Text(text)],
        Some(Content::Parts(parts)) => parts
            .into_iter()
            .filter_map(|part| match part {
                ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
                    Some(Part::Text(text))
                }
                ContentPart::ImageUrl { image_url } => {
                    let url = match image_url {
                        ImageUrl::Object { url } | ImageUrl::Plain(url) => url,
                    };
                    Some(Part::Image(Image::from_url(&url)))
                }
                ContentPart::Other => None,
            })
            .collect(),
    }
}

/// The text of a content, parts joined.
fn content_text(content: Option<Content>) -> String {
    content_parts(content)
        .into_iter()
        .filter_map(|part| match part {
            Part::Text(text) => Some(text),
            _ => None,
        })
        .collect()
}

fn tool_choice_from(value: &Value) -> Option<ToolChoice> {
    match value {
        Value::String(mode) => match mode.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            _ => None,
        },
        Value::Object(map) => map
            .get("function")
            .and_then(|f| f.get("name"))
            .or_else(|| map.get("name"))
            .and_then(Value::as_str)
            .map(|name| ToolChoice::Function(name.to_owned())),
        _ => None,
    }
}

fn tool_choice_to(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

fn tool_call_json(call: &ToolCall) -> Value {
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    })
}

/// A message's content: a plain string for a single text, parts otherwise, `null` when empty.
fn content_json(parts: &[&Part]) -> Value {
    if let [Part::Text(text)] = parts {
        return json!(text);
    }
    if parts.is_empty() {
        return Value::Null;
    }
    Value::Array(
        parts
            .iter()
            .filter_map(|part| match part {
                Part::Text(text) => Some(json!({"type": "text", "text": text})),
                Part::Image(image) => {
                    Some(json!({"type": "image_url", "image_url": {"url": image.to_url()}}))
                }
                Part::ToolCall(_) | Part::ToolResult(_) => None,
            })
            .collect(),
    )
}

fn message_json(message: &Message, out: &mut Vec<Value>) {
    match message.role {
        Role::User => {
            let parts: Vec<&Part> = message
                .parts
                .iter()
                .filter(|p| matches!(p, Part::Text(_) | Part::Image(_)))
                .collect();
            // A user message needs content; one with nothing it can carry is left out.
            if !parts.is_empty() {
                out.push(json!({"role": "user", "content": content_json(&parts)}));
            }
        }
        Role::Assistant => {
            // Blank text beside tool calls is what agent frameworks send for "no text";
            // OpenAI's own shape for that is `content: null`.
            let texts: Vec<&Part> = message
                .parts
                .iter()
                .filter(|p| matches!(p, Part::Text(_)) && !p.is_blank_text())
                .collect();
            let calls: Vec<Value> = message
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::ToolCall(call) => Some(tool_call_json(call)),
                    _ => None,
                })
                .collect();
            if texts.is_empty() && calls.is_empty() {
                return;
            }
            let mut value = json!({"role": "assistant", "content": content_json(&texts)});
            if !calls.is_empty() {
                value["tool_calls"] = Value::Array(calls);
            }
            out.push(value);
        }
        Role::Tool => {
            for part in &message.parts {
                if let Part::ToolResult(result) = part {
                    out.push(json!({
                        "role": "tool",
                        "tool_call_id": result.call_id,
                        "content": result.content,
                    }));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Codec.

impl Codec for OpenaiChatCodec {
    fn decode_request(
        &self,
        action: &str,
        _query: &str,
        body: &[u8],
    ) -> Result<DecodedRequest, ConvertError> {
        if !action.trim_end_matches('/').ends_with("chat/completions") {
            return Err(ConvertError::UnsupportedAction {
                action: action.to_owned(),
                expected: ACTION,
            });
        }
        let wire: RequestIn =
            serde_json::from_slice(body).map_err(|e| ConvertError::invalid(NAME, e))?;
        let include_usage = wire
            .stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            .unwrap_or(false);
        let mut request = ChatRequest {
            model: wire.model,
            max_tokens: wire.max_completion_tokens.or(wire.max_tokens),
            temperature: wire.temperature,
            top_p: wire.top_p,
            stop: match wire.stop {
                None => Vec::new(),
                Some(Stop::One(stop)) => vec![stop],
                Some(Stop::Many(stops)) => stops,
            },
            stream: wire.stream.unwrap_or(false),
            tool_choice: wire.tool_choice.as_ref().and_then(tool_choice_from),
            ..ChatRequest::default()
        };
        for tool in wire.tools.unwrap_or_default() {
            if let (None | Some("function"), Some(function)) = (tool.kind.as_deref(), tool.function)
            {
                request.tools.push(Tool {
                    name: function.name,
                    description: function.description,
                    parameters: function
                        .parameters
                        .unwrap_or_else(|| json!({"type": "object"})),
                });
            }
        }
        for message in wire.messages {
            match message.role.as_str() {
                "system" | "developer" => request.system.push(content_text(message.content)),
                "user" => {
                    let parts = content_parts(message.content);
                    if !parts.is_empty() {
                        request.messages.push(Message::new(Role::User, parts));
                    }
                }
                "assistant" => {
                    let mut parts = content_parts(message.content);
                    parts.retain(|p| matches!(p, Part::Text(_)));
                    for call in message.tool_calls.unwrap_or_default() {
                        parts.push(Part::ToolCall(ToolCall {
                            id: call.id.unwrap_or_default(),
                            name: call.function.name,
                            arguments: arguments_text(call.function.arguments),
                        }));
                    }
                    // An assistant turn stays one message even when it is empty.
                    request.messages.push(Message::new(Role::Assistant, parts));
                }
                "tool" | "function" => {
                    let result = ToolResult {
                        call_id: message.tool_call_id.unwrap_or_default(),
                        name: message.name,
                        content: content_text(message.content),
                        is_error: false,
                    };
                    push_part(&mut request.messages, Role::Tool, Part::ToolResult(result));
                }
                other => {
                    return Err(ConvertError::invalid(
                        NAME,
                        format!("unknown message role `{other}`"),
                    ));
                }
            }
        }
        Ok(DecodedRequest {
            request,
            framing: StreamFraming::Sse,
            include_usage,
        })
    }

    fn encode_request(&self, request: &ChatRequest) -> Result<EncodedRequest, ConvertError> {
        let mut messages = Vec::new();
        for segment in &request.system {
            messages.push(json!({"role": "system", "content": segment}));
        }
        for message in &request.messages {
            message_json(message, &mut messages);
        }
        if messages.is_empty() {
            return Err(ConvertError::EmptyConversation);
        }
        let mut body = Map::new();
        if let Some(model) = &request.model {
            body.insert("model".into(), json!(model));
        }
        body.insert("messages".into(), Value::Array(messages));
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|tool| {
                    let mut function = json!({"name": tool.name, "parameters": tool.parameters});
                    if let Some(description) = &tool.description {
                        function["description"] = json!(description);
                    }
                    json!({"type": "function", "function": function})
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(choice) = &request.tool_choice {
            body.insert("tool_choice".into(), tool_choice_to(choice));
        }
        if let Some(max) = request.max_tokens {
            body.insert("max_tokens".into(), json!(max));
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = request.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if !request.stop.is_empty() {
            body.insert("stop".into(), json!(request.stop));
        }
        if request.stream {
            body.insert("stream".into(), json!(true));
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Ok(EncodedRequest {
            action: ACTION.to_owned(),
            params: Vec::new(),
            body: json_text(&Value::Object(body)).into_bytes(),
        })
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, MalformedResponse> {
        let wire: ResponseIn = serde_json::from_slice(body)?;
        let mut response = ChatResponse {
            id: wire.id,
            model: wire.model,
            created: wire.created,
            usage: wire.usage.map(|u| u.to_neutral()).unwrap_or_default(),
            ..ChatResponse::default()
        };
        if let Some(choice) = wire.choices.into_iter().next() {
            response.finish = choice.finish_reason.as_deref().map(finish_from);
            if let Some(message) = choice.message {
                response.parts = content_parts(message.content);
                response.parts.retain(|p| matches!(p, Part::Text(_)));
                if let Some(refusal) = message.refusal.filter(|r| !r.is_empty()) {
                    response.parts.push(Part::Text(refusal));
                }
                for call in message.tool_calls.unwrap_or_default() {
                    response.parts.push(Part::ToolCall(ToolCall {
                        id: call.id.unwrap_or_else(|| fresh_id("call_")),
                        name: call.function.name,
                        arguments: arguments_text(call.function.arguments),
                    }));
                }
            }
        }
        Ok(response)
    }

    fn encode_response(&self, response: &ChatResponse) -> Vec<u8> {
        let text: String = response
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let calls: Vec<Value> = response
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::ToolCall(call) => Some(tool_call_json(call)),
                _ => None,
            })
            .collect();
        let has_text = response.parts.iter().any(|p| matches!(p, Part::Text(_)));
        let mut message = json!({
            "role": "assistant",
            "content": if has_text { json!(text) } else { Value::Null },
            "refusal": null,
        });
        let finish = response.finish.unwrap_or(if calls.is_empty() {
            FinishReason::EndTurn
        } else {
            FinishReason::ToolUse
        });
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        json_text(&json!({
            "id": response.id.clone().unwrap_or_else(|| fresh_id("chatcmpl-")),
            "object": "chat.completion",
            "created": response.created.unwrap_or_else(now_unix),
            "model": response.model.clone().unwrap_or_default(),
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_to(finish),
            }],
            "usage": usage_json(&response.usage),
        }))
        .into_bytes()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChunkDecoder::default())
    }

    fn stream_encoder(&self, client: &ClientStream) -> Box<dyn StreamEncoder> {
        Box::new(ChunkEncoder {
            include_usage: client.include_usage,
            model: client.model.clone().unwrap_or_default(),
            ..ChunkEncoder::default()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Stream decoding (upstream chunks → neutral events).

#[derive(Default)]
struct ChunkDecoder {
    started: bool,
    /// The upstream's calls in order of appearance (neutral index = position): their upstream
    /// `index` (when sent) and id.
    calls: Vec<(Option<usize>, String)>,
}

impl ChunkDecoder {
    /// The neutral index of a delta's call, if it continues a known one. Deltas are matched by
    /// `index`; servers that omit it are matched by id, and a delta with neither continues the
    /// last call.
    fn known_call(&self, delta: &ToolCallDeltaIn) -> Option<usize> {
        match (delta.index, delta.id.as_deref()) {
            (Some(index), _) => self.calls.iter().position(|(i, _)| *i == Some(index)),
            (None, Some(id)) => self.calls.iter().position(|(_, known)| known == id),
            (None, None) => self.calls.len().checked_sub(1),
        }
    }

    fn tool_call(&mut self, delta: ToolCallDeltaIn, out: &mut Vec<StreamEvent>) {
        let index = match self.known_call(&delta) {
            Some(index) => index,
            None => {
                let id = delta.id.clone().unwrap_or_else(|| fresh_id("call_"));
                self.calls.push((delta.index, id.clone()));
                let index = self.calls.len() - 1;
                let name = delta.function.as_ref().and_then(|f| f.name.clone());
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id,
                    name: name.unwrap_or_default(),
                });
                index
            }
        };
        if let Some(arguments) = delta
            .function
            .and_then(|f| f.arguments)
            .filter(|a| !a.is_empty())
        {
            out.push(StreamEvent::ToolCallDelta { index, arguments });
        }
    }
}

impl StreamDecoder for ChunkDecoder {
    fn event(&mut self, event: &SseEvent<'_>, out: &mut Vec<StreamEvent>) {
        let data = event.data.trim();
        if data == "[DONE]" {
            out.push(StreamEvent::End);
            return;
        }
        if !matches!(event.event, None | Some("message") | Some("error")) {
            return;
        }
        let Some(chunk) = parse_event::<ChunkIn>(data, out) else {
            return;
        };
        if let Some(error) = chunk.error {
            let code = error
                .get("code")
                .and_then(Value::as_str)
                .or_else(|| error.get("type").and_then(Value::as_str))
                .unwrap_or("upstream_error")
                .to_owned();
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the upstream reported an error")
                .to_owned();
            out.push(StreamEvent::Error(ErrorInfo::new(
                status_for_code(&code),
                code,
                message,
            )));
            return;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id,
                model: chunk.model,
                created: chunk.created,
            });
        }
        for choice in chunk.choices.unwrap_or_default().into_iter().take(1) {
            if let Some(delta) = choice.delta {
                for text in [delta.content, delta.refusal].into_iter().flatten() {
                    if !text.is_empty() {
                        out.push(StreamEvent::Text(text));
                    }
                }
                for call in delta.tool_calls.unwrap_or_default() {
                    self.tool_call(call, out);
                }
            }
            if let Some(reason) = choice.finish_reason {
                out.push(StreamEvent::Finish {
                    reason: finish_from(&reason),
                    stop_sequence: None,
                });
            }
        }
        if let Some(usage) = chunk.usage {
            out.push(StreamEvent::Usage(usage.to_neutral()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream encoding (neutral events → client chunks).

#[derive(Default)]
struct ChunkEncoder {
    /// `stream_options.include_usage`: every chunk then has `"usage": null` and a last chunk
    /// with no choices carries the usage, as OpenAI does; otherwise no usage is sent.
    include_usage: bool,
    id: String,
    /// The upstream's model name, else the requested one.
    model: String,
    created: u64,
    started: bool,
    saw_tool_call: bool,
    finish: Option<FinishReason>,
    usage: Usage,
    done: bool,
}

impl ChunkEncoder {
    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        if self.id.is_empty() {
            self.id = fresh_id("chatcmpl-");
        }
        if self.created == 0 {
            self.created = now_unix();
        }
        self.chunk(out, json!({"role": "assistant", "content": ""}), None);
    }

    fn chunk(&self, out: &mut BytesMut, delta: Value, finish: Option<&str>) {
        let choices =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        self.put(out, choices, Value::Null);
    }

    /// Writes one chunk; `usage` is written only when the client asked for usage.
    fn put(&self, out: &mut BytesMut, choices: Value, usage: Value) {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = usage;
        }
        put_json_event(out, None, &chunk);
    }
}

impl StreamEncoder for ChunkEncoder {
    fn encode(&mut self, event: StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Start { id, model, created } => {
                if !self.started {
                    self.id = id.unwrap_or_default();
                    if let Some(model) = model {
                        self.model = model;
                    }
                    self.created = created.unwrap_or(0);
                }
                self.start(out);
            }
            StreamEvent::Text(text) => {
                self.start(out);
                self.chunk(out, json!({"content": text}), None);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.start(out);
                self.saw_tool_call = true;
                let call = json!({
                    "index": index,
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                });
                self.chunk(out, json!({"tool_calls": [call]}), None);
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.start(out);
                let call = json!({"index": index, "function": {"arguments": arguments}});
                self.chunk(out, json!({"tool_calls": [call]}), None);
            }
            StreamEvent::Usage(usage) => self.usage.merge(&usage),
            StreamEvent::Finish { reason, .. } => self.finish = Some(reason),
            StreamEvent::Error(error) => {
                put_error_event(out, ClientFormat::Openai, &error);
                self.done = true;
            }
            StreamEvent::End => {
                self.start(out);
                let finish = self.finish.unwrap_or(if self.saw_tool_call {
                    FinishReason::ToolUse
                } else {
                    FinishReason::EndTurn
                });
                self.chunk(out, json!({}), Some(finish_to(finish)));
                if self.include_usage && !self.usage.is_empty() {
                    self.put(out, json!([]), usage_json(&self.usage));
                }
                out.put_slice(crate::openai::DONE_FRAME);
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

    fn decode(body: &str) -> ChatRequest {
        OpenaiChatCodec
            .decode_request("v1/chat/completions", "", body.as_bytes())
            .unwrap()
            .request
    }

    #[test]
    fn decodes_roles_parts_and_parameters() {
        let request = decode(
            r#"{"model":"gpt-4o","messages":[
                {"role":"developer","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"look","arguments":"{\"x\":1}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"a cat"}
            ],"max_completion_tokens":50,"stop":"END","temperature":0.5,"tool_choice":"required"}"#,
        );
        assert_eq!(request.system, ["Be brief."]);
        assert_eq!(request.messages.len(), 3);
        assert_eq!(request.messages[2].role, Role::Tool);
        assert_eq!(request.max_tokens, Some(50));
        assert_eq!(request.stop, ["END"]);
        assert_eq!(request.tool_choice, Some(ToolChoice::Required));
        assert!(matches!(
            &request.messages[0].parts[1],
            Part::Image(Image::Base64 { media_type, .. }) if media_type == "image/png"
        ));
    }

    #[test]
    fn other_endpoints_are_not_converted() {
        let err = OpenaiChatCodec
            .decode_request("v1/embeddings", "", b"{}")
            .err()
            .unwrap();
        assert_eq!(err.status(), 404);
    }

    #[test]
    fn unknown_roles_are_invalid() {
        assert!(
            OpenaiChatCodec
                .decode_request(
                    "chat/completions",
                    "",
                    br#"{"messages":[{"role":"wizard","content":"x"}]}"#
                )
                .is_err()
        );
    }

    fn decode_stream(events: &[&str]) -> Vec<StreamEvent> {
        let mut decoder = ChunkDecoder::default();
        let mut out = Vec::new();
        for data in events {
            decoder.event(&SseEvent::data(data), &mut out);
        }
        out
    }

    #[test]
    fn tool_calls_without_index_are_told_apart_by_id() {
        let events = decode_stream(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":"{\"x\""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}"#,
        ]);
        let calls: Vec<(usize, String)> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallStart { index, name, .. } => Some((*index, name.clone())),
                StreamEvent::ToolCallDelta { index, arguments } => {
                    Some((*index, arguments.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            calls,
            [
                (0, "f".to_owned()),
                (0, "{}".to_owned()),
                (1, "g".to_owned()),
                (1, "{\"x\"".to_owned()),
                (1, ":1}".to_owned()),
            ]
        );
    }

    #[test]
    fn repeated_id_and_name_do_not_start_a_new_call() {
        let events = decode_stream(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{}"}}]}}]}"#,
        ]);
        let starts = events
            .iter()
            .filter(|e| matches!(e, StreamEvent::ToolCallStart { .. }))
            .count();
        assert_eq!(starts, 1);
    }

    #[test]
    fn streamed_requests_ask_for_usage() {
        let encoded = OpenaiChatCodec
            .encode_request(&ChatRequest {
                stream: true,
                messages: vec![Message::new(Role::User, vec![Part::Text("hi".to_owned())])],
                ..ChatRequest::default()
            })
            .unwrap();
        let body: Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn blank_assistant_text_beside_calls_is_null_content() {
        let encoded = OpenaiChatCodec
            .encode_request(&ChatRequest {
                messages: vec![
                    Message::new(Role::User, vec![]),
                    Message::new(Role::Assistant, vec![Part::Text(" ".to_owned())]),
                    Message::new(
                        Role::Assistant,
                        vec![
                            Part::Text(String::new()),
                            Part::ToolCall(ToolCall {
                                id: "c".to_owned(),
                                name: "f".to_owned(),
                                arguments: "{}".to_owned(),
                            }),
                        ],
                    ),
                ],
                ..ChatRequest::default()
            })
            .unwrap();
        let body: Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        assert_eq!(body["messages"][0]["content"], Value::Null);
        assert_eq!(body["messages"][0]["tool_calls"][0]["id"], "c");
    }

    #[test]
    fn usage_chunk_is_separate_and_only_when_asked() {
        let events = || {
            vec![
                StreamEvent::Start {
                    id: Some("chatcmpl-1".to_owned()),
                    model: None,
                    created: Some(7),
                },
                StreamEvent::Text("hi".to_owned()),
                StreamEvent::Usage(Usage {
                    input_tokens: Some(3),
                    output_tokens: Some(1),
                    ..Usage::default()
                }),
                StreamEvent::Finish {
                    reason: FinishReason::EndTurn,
                    stop_sequence: None,
                },
                StreamEvent::End,
            ]
        };
        let run = |include_usage: bool| {
            let mut encoder = OpenaiChatCodec.stream_encoder(&ClientStream {
                include_usage,
                model: Some("gpt-x".to_owned()),
                ..ClientStream::default()
            });
            let mut out = BytesMut::new();
            for event in events() {
                encoder.encode(event, &mut out);
            }
            String::from_utf8(out.to_vec()).unwrap()
        };
        let asked = run(true);
        let chunks: Vec<Value> = asked
            .split("\n\n")
            .filter_map(|frame| frame.strip_prefix("data: "))
            .filter(|data| *data != "[DONE]")
            .map(|data| serde_json::from_str(data).unwrap())
            .collect();
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 3);
        assert_eq!(last["model"], "gpt-x");
        assert!(
            chunks[..chunks.len() - 1]
                .iter()
                .all(|c| c["usage"].is_null())
        );
        assert!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"] == "stop");
        assert!(asked.ends_with("data: [DONE]\n\n"));

        let not_asked = run(false);
        assert!(!not_asked.contains("usage"), "{not_asked}");
    }
}
