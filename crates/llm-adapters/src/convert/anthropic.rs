//! Anthropic Messages (`v1/messages`) as a conversion format: request, response, usage and
//! stream event wire types, and their mapping to and from the neutral model. `system` (a string
//! or text blocks) becomes system segments; `tool_result` blocks in a user turn become a tool
//! message; `thinking` blocks are dropped. A stream keeps Anthropic's full grammar:
//! `message_start`, then per content block `content_block_start` / `content_block_delta`
//! (`text_delta`, `input_json_delta`) / `content_block_stop`, then `message_delta` (stop reason
//! and usage) and `message_stop`.
//!
//! Client streams put the input tokens in `message_start` when the upstream told them before
//! the first content (Gemini does, in its first chunk); upstreams that tell usage only at the
//! end (OpenAI-compatible, Responses) leave `message_start` at 0, and `message_delta` carries
//! the input, cached and output tokens. Message ids carry Anthropic's `msg_` prefix.
//!
//! Encoded requests leave out blank text blocks and blank system text (Anthropic answers 400
//! "text content blocks must be non-empty"), omit blank tool result content, and trim a final
//! assistant prefill's trailing whitespace (also a 400).
//!
//! Anthropic requires `max_tokens`: requests without one get [`DEFAULT_MAX_TOKENS`].
//! Anthropic's temperature range is 0 to 1, so higher temperatures are clamped to 1. Its
//! `input_tokens` exclude cache reads and writes; the neutral count includes them.

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ConvertError, MalformedResponse,
    neutral::{
        ChatRequest, ChatResponse, ErrorInfo, FinishReason, Image, Part, Role, StreamEvent, Tool,
        ToolCall, ToolChoice, ToolResult, Usage, arguments_object, client_id, json_text,
        non_blank_system, push_part, status_for_code, turns_by_side,
    },
    registry::{Codec, DecodedRequest, EncodedRequest},
    stream::{
        ClientStream, StreamDecoder, StreamEncoder, StreamFraming, parse_event, put_error_event,
        put_json_event,
    },
};
use crate::{ClientFormat, SseEvent};

const NAME: &str = "Anthropic Messages";

/// The upstream action of a converted request.
pub(crate) const ACTION: &str = "v1/messages";

/// `max_tokens` of converted requests that set no bound (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The codec of Anthropic Messages.
pub(crate) struct AnthropicCodec;

// ---------------------------------------------------------------------------------------------
// Wire types.

#[derive(Deserialize)]
struct RequestIn {
    model: Option<String>,
    max_tokens: Option<u64>,
    system: Option<Blocks>,
    messages: Vec<MessageIn>,
    tools: Option<Vec<ToolIn>>,
    tool_choice: Option<ToolChoiceIn>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct MessageIn {
    role: String,
    content: Blocks,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Blocks {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: Option<Blocks>,
        is_error: Option<bool>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ToolIn {
    name: String,
    description: Option<String>,
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
struct ToolChoiceIn {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct ResponseIn {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct UsageIn {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventIn {
    MessageStart {
        message: MessageStartIn,
    },
    ContentBlockStart {
        index: usize,
        content_block: BlockStartIn,
    },
    ContentBlockDelta {
        index: usize,
        delta: DeltaIn,
    },
    MessageDelta {
        delta: MessageDeltaIn,
        usage: Option<UsageIn>,
    },
    MessageStop,
    Error {
        error: ErrorDetailIn,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageStartIn {
    id: Option<String>,
    model: Option<String>,
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockStartIn {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaIn {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaIn {
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
}

#[derive(Deserialize)]
struct ErrorDetailIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Mapping helpers.

impl UsageIn {
    /// Neutral usage; with `with_output` false the output count is ignored (`message_start`
    /// carries a placeholder).
    fn to_neutral(&self, with_output: bool) -> Usage {
        let input = self.input_tokens.map(|input| {
            input
                .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
                .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
        });
        Usage {
            input_tokens: input,
            output_tokens: if with_output {
                self.output_tokens
            } else {
                None
            },
            cached_input_tokens: self.cache_read_input_tokens,
            reasoning_tokens: None,
        }
    }
}

fn usage_json(usage: &Usage) -> Value {
    let cached = usage.cached_input_tokens.unwrap_or(0);
    let mut out = json!({
        "input_tokens": usage.input().saturating_sub(cached),
        "output_tokens": usage.output(),
    });
    if let Some(cached) = usage.cached_input_tokens {
        out["cache_read_input_tokens"] = json!(cached);
    }
    out
}

fn finish_from(reason: &str) -> FinishReason {
    match reason {
        "end_turn" => FinishReason::EndTurn,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::MaxTokens,
        "stop_sequence" => FinishReason::StopSequence,
        "tool_use" => FinishReason::ToolUse,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

fn finish_to(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::EndTurn | FinishReason::Other => "end_turn",
        FinishReason::MaxTokens => "max_tokens",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::ToolUse => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// A tool id Anthropic accepts (`^[a-zA-Z0-9_-]+$`): other characters become `_`. Ids from
/// other formats (`functions.get_weather:0` from some OpenAI-compatible servers) are mapped the
/// same way wherever they appear, so calls and results stay linked.
fn tool_id(id: &str) -> String {
    let mapped: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if mapped.is_empty() {
        "toolu_".to_owned()
    } else {
        mapped
    }
}

/// Trims trailing whitespace off a final assistant turn (a prefill), which Anthropic refuses
/// ("final assistant content cannot end with trailing whitespace"); blocks and the turn itself
/// are dropped when nothing is left.
fn trim_final_assistant_text(messages: &mut Vec<(&str, Vec<Value>)>) {
    let Some((role, content)) = messages.last_mut() else {
        return;
    };
    if *role != "assistant" {
        return;
    }
    while let Some(last) = content.last_mut() {
        let Some(text) = last.get("text").and_then(Value::as_str) else {
            break;
        };
        let trimmed = text.trim_end().to_owned();
        if !trimmed.is_empty() {
            last["text"] = json!(trimmed);
            break;
        }
        content.pop();
    }
    if content.is_empty() {
        messages.pop();
    }
}

fn blocks(content: Blocks) -> Vec<Block> {
    match content {
        Blocks::Text(text) => vec![Block::Text { text }],
        Blocks::Blocks(blocks) => blocks,
    }
}

fn blocks_text(content: Option<Blocks>) -> String {
    content
        .map(blocks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|b| match b {
            Block::Text { text } => Some(text),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The neutral part and role of one content block, if it maps to one.
fn block_part(block: Block) -> Option<(Role, Part)> {
    match block {
        Block::Text { text } => Some((Role::User, Part::Text(text))),
        Block::Image { source } => {
            let image = match source {
                ImageSource::Base64 { media_type, data } => Image::Base64 { media_type, data },
                ImageSource::Url { url } => Image::Url(url),
                ImageSource::Other => return None,
            };
            Some((Role::User, Part::Image(image)))
        }
        Block::ToolUse { id, name, input } => Some((
            Role::Assistant,
            Part::ToolCall(ToolCall {
                id,
                name,
                arguments: json_text(&input),
            }),
        )),
        Block::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => Some((
            Role::Tool,
            Part::ToolResult(ToolResult {
                call_id: tool_use_id,
                name: None,
                content: blocks_text(content),
                is_error: is_error.unwrap_or(false),
            }),
        )),
        Block::Other => None,
    }
}

fn part_json(part: &Part) -> Value {
    match part {
        Part::Text(text) => json!({"type": "text", "text": text}),
        Part::Image(Image::Base64 { media_type, data }) => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        Part::Image(Image::Url(url)) => {
            json!({"type": "image", "source": {"type": "url", "url": url}})
        }
        Part::ToolCall(call) => json!({
            "type": "tool_use",
            "id": tool_id(&call.id),
            "name": call.name,
            "input": arguments_object(&call.arguments),
        }),
        Part::ToolResult(result) => {
            let mut value = json!({
                "type": "tool_result",
                "tool_use_id": tool_id(&result.call_id),
            });
            // `content` is optional, and blank text is refused wherever Anthropic takes text.
            if !result.content.trim().is_empty() {
                value["content"] = json!(result.content);
            }
            if result.is_error {
                value["is_error"] = json!(true);
            }
            value
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Codec.

impl Codec for AnthropicCodec {
    fn decode_request(
        &self,
        action: &str,
        _query: &str,
        body: &[u8],
    ) -> Result<DecodedRequest, ConvertError> {
        if !action.trim_end_matches('/').ends_with("messages") {
            return Err(ConvertError::UnsupportedAction {
                action: action.to_owned(),
                expected: ACTION,
            });
        }
        let wire: RequestIn =
            serde_json::from_slice(body).map_err(|e| ConvertError::invalid(NAME, e))?;
        let mut request = ChatRequest {
            model: wire.model,
            max_tokens: wire.max_tokens,
            temperature: wire.temperature,
            top_p: wire.top_p,
            stop: wire.stop_sequences.unwrap_or_default(),
            stream: wire.stream.unwrap_or(false),
            tool_choice: wire.tool_choice.and_then(|c| match c.kind.as_str() {
                "auto" => Some(ToolChoice::Auto),
                "any" => Some(ToolChoice::Required),
                "none" => Some(ToolChoice::None),
                "tool" => c.name.map(ToolChoice::Function),
                _ => None,
            }),
            ..ChatRequest::default()
        };
        match wire.system {
            None => {}
            Some(Blocks::Text(text)) => request.system.push(text),
            Some(Blocks::Blocks(list)) => {
                for block in list {
                    if let Block::Text { text } = block {
                        request.system.push(text);
                    }
                }
            }
        }
        for tool in wire.tools.unwrap_or_default() {
            // Server tools (web search, code execution, ...) have no schema and cannot move.
            if let Some(schema) = tool.input_schema {
                request.tools.push(Tool {
                    name: tool.name,
                    description: tool.description,
                    parameters: schema,
                });
            }
        }
        for message in wire.messages {
            let assistant = match message.role.as_str() {
                "user" => false,
                "assistant" => true,
                other => {
                    return Err(ConvertError::invalid(
                        NAME,
                        format!("unknown message role `{other}`"),
                    ));
                }
            };
            for block in blocks(message.content) {
                if let Some((role, part)) = block_part(block) {
                    let role = match (assistant, role) {
                        (true, _) => Role::Assistant,
                        (false, Role::Assistant) => continue,
                        (false, role) => role,
                    };
                    push_part(&mut request.messages, role, part);
                }
            }
        }
        Ok(DecodedRequest {
            request,
            framing: StreamFraming::Sse,
            include_usage: false,
        })
    }

    fn encode_request(&self, request: &ChatRequest) -> Result<EncodedRequest, ConvertError> {
        let model = request.model.as_ref().ok_or(ConvertError::MissingModel)?;
        let turns = turns_by_side(&request.messages, |role| match role {
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        });
        let mut messages: Vec<(&str, Vec<Value>)> = turns
            .into_iter()
            .map(|(role, parts)| (role, parts.into_iter().map(part_json).collect()))
            .collect();
        trim_final_assistant_text(&mut messages);
        if messages.is_empty() {
            return Err(ConvertError::EmptyConversation);
        }
        let messages: Vec<Value> = messages
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert(
            "max_tokens".into(),
            json!(request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        );
        match non_blank_system(request).as_slice() {
            [] => {}
            [one] => {
                body.insert("system".into(), json!(one));
            }
            many => {
                let blocks: Vec<Value> = many
                    .iter()
                    .map(|text| json!({"type": "text", "text": text}))
                    .collect();
                body.insert("system".into(), Value::Array(blocks));
            }
        }
        body.insert("messages".into(), Value::Array(messages));
        if !request.tools.is_empty() {
            let tools = request
                .tools
                .iter()
                .map(|tool| {
                    let mut value = json!({"name": tool.name, "input_schema": tool.parameters});
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
                ToolChoice::Auto => json!({"type": "auto"}),
                ToolChoice::None => json!({"type": "none"}),
                ToolChoice::Required => json!({"type": "any"}),
                ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
            };
            body.insert("tool_choice".into(), value);
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        if let Some(p) = request.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if !request.stop.is_empty() {
            body.insert("stop_sequences".into(), json!(request.stop));
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
        let wire: ResponseIn = serde_json::from_slice(body)?;
        Ok(ChatResponse {
            id: wire.id,
            model: wire.model,
            created: None,
            parts: wire
                .content
                .into_iter()
                .filter_map(block_part)
                .filter(|(_, p)| matches!(p, Part::Text(_) | Part::ToolCall(_)))
                .map(|(_, p)| p)
                .collect(),
            finish: wire.stop_reason.as_deref().map(finish_from),
            stop_sequence: wire.stop_sequence,
            usage: wire.usage.map(|u| u.to_neutral(true)).unwrap_or_default(),
        })
    }

    fn encode_response(&self, response: &ChatResponse) -> Vec<u8> {
        let content: Vec<Value> = response
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Text(_) | Part::ToolCall(_)))
            .map(part_json)
            .collect();
        let has_calls = response
            .parts
            .iter()
            .any(|p| matches!(p, Part::ToolCall(_)));
        let finish = response.finish.unwrap_or(if has_calls {
            FinishReason::ToolUse
        } else {
            FinishReason::EndTurn
        });
        json_text(&json!({
            "id": client_id("msg_", response.id.as_deref()),
            "type": "message",
            "role": "assistant",
            "model": response.model.clone().unwrap_or_default(),
            "content": content,
            "stop_reason": finish_to(finish),
            "stop_sequence": response.stop_sequence,
            "usage": usage_json(&response.usage),
        }))
        .into_bytes()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(EventDecoder::default())
    }

    fn stream_encoder(&self, client: &ClientStream) -> Box<dyn StreamEncoder> {
        Box::new(EventEncoder {
            requested_model: client.model.clone(),
            ..EventEncoder::default()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Stream decoding.

#[derive(Default)]
struct EventDecoder {
    /// Content block index → neutral tool-call index, for `tool_use` blocks.
    tool_blocks: Vec<(usize, usize)>,
}

impl StreamDecoder for EventDecoder {
    fn event(&mut self, event: &SseEvent<'_>, out: &mut Vec<StreamEvent>) {
        let Some(parsed) = parse_event::<EventIn>(event.data, out) else {
            return;
        };
        match parsed {
            EventIn::MessageStart { message } => {
                out.push(StreamEvent::Start {
                    id: message.id,
                    model: message.model,
                    created: None,
                });
                if let Some(usage) = message.usage {
                    out.push(StreamEvent::Usage(usage.to_neutral(false)));
                }
            }
            EventIn::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                BlockStartIn::Text { text } => {
                    if !text.is_empty() {
                        out.push(StreamEvent::Text(text));
                    }
                }
                BlockStartIn::ToolUse { id, name } => {
                    let tool_index = self.tool_blocks.len();
                    self.tool_blocks.push((index, tool_index));
                    out.push(StreamEvent::ToolCallStart {
                        index: tool_index,
                        id,
                        name,
                    });
                }
                BlockStartIn::Other => {}
            },
            EventIn::ContentBlockDelta { index, delta } => match delta {
                DeltaIn::TextDelta { text } => out.push(StreamEvent::Text(text)),
                DeltaIn::InputJsonDelta { partial_json } => {
                    if let Some(&(_, tool_index)) =
                        self.tool_blocks.iter().find(|(block, _)| *block == index)
                        && !partial_json.is_empty()
                    {
                        out.push(StreamEvent::ToolCallDelta {
                            index: tool_index,
                            arguments: partial_json,
                        });
                    }
                }
                DeltaIn::Other => {}
            },
            EventIn::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    out.push(StreamEvent::Usage(usage.to_neutral(true)));
                }
                if let Some(reason) = delta.stop_reason {
                    out.push(StreamEvent::Finish {
                        reason: finish_from(&reason),
                        stop_sequence: delta.stop_sequence,
                    });
                }
            }
            EventIn::MessageStop => out.push(StreamEvent::End),
            EventIn::Error { error } => {
                let code = error.kind.unwrap_or_else(|| "api_error".to_owned());
                out.push(StreamEvent::Error(ErrorInfo::new(
                    status_for_code(&code),
                    code,
                    error.message.unwrap_or_default(),
                )));
            }
            EventIn::Other => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream encoding.

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Tool(usize),
}

#[derive(Default)]
struct EventEncoder {
    id: Option<String>,
    model: Option<String>,
    /// The client's model, named when the upstream names none.
    requested_model: Option<String>,
    started: bool,
    open: Option<OpenBlock>,
    next_block: usize,
    /// Neutral tool-call index → content block index.
    tool_blocks: Vec<(usize, usize)>,
    finish: Option<FinishReason>,
    stop_sequence: Option<String>,
    usage: Usage,
    done: bool,
}

impl EventEncoder {
    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = json!({
            "input_tokens": usage_json(&self.usage)["input_tokens"],
            "output_tokens": 0,
        });
        let message = json!({
            "id": client_id("msg_", self.id.as_deref()),
            "type": "message",
            "role": "assistant",
            "model": self.model.as_ref().or(self.requested_model.as_ref()).cloned().unwrap_or_default(),
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage,
        });
        put_json_event(
            out,
            Some("message_start"),
            &json!({"type": "message_start", "message": message}),
        );
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            let index = self.next_block - 1;
            put_json_event(
                out,
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, block: OpenBlock, content_block: Value, out: &mut BytesMut) -> usize {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some(block);
        put_json_event(
            out,
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        );
        index
    }

    fn delta(out: &mut BytesMut, index: usize, delta: Value) {
        put_json_event(
            out,
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }
}

impl StreamEncoder for EventEncoder {
    fn encode(&mut self, event: StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Start { id, model, .. } => {
                if !self.started {
                    self.id = id;
                    self.model = model;
                }
            }
            StreamEvent::Text(text) => {
                self.start(out);
                if self.open != Some(OpenBlock::Text) {
                    self.open_block(OpenBlock::Text, json!({"type": "text", "text": ""}), out);
                }
                Self::delta(
                    out,
                    self.next_block - 1,
                    json!({"type": "text_delta", "text": text}),
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.start(out);
                let block = self.open_block(
                    OpenBlock::Tool(index),
                    json!({"type": "tool_use", "id": tool_id(&id), "name": name, "input": {}}),
                    out,
                );
                self.tool_blocks.push((index, block));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.start(out);
                // Calls stream one after another; a late delta for an earlier call still names
                // that call's block.
                if let Some(&(_, block)) = self.tool_blocks.iter().find(|(i, _)| *i == index) {
                    Self::delta(
                        out,
                        block,
                        json!({"type": "input_json_delta", "partial_json": arguments}),
                    );
                }
            }
            StreamEvent::Usage(usage) => self.usage.merge(&usage),
            StreamEvent::Finish {
                reason,
                stop_sequence,
            } => {
                self.finish = Some(reason);
                self.stop_sequence = stop_sequence;
            }
            StreamEvent::Error(error) => {
                put_error_event(out, ClientFormat::Anthropic, &error);
                self.done = true;
            }
            StreamEvent::End => {
                self.start(out);
                self.close_block(out);
                let finish = self.finish.unwrap_or(if self.tool_blocks.is_empty() {
                    FinishReason::EndTurn
                } else {
                    FinishReason::ToolUse
                });
                put_json_event(
                    out,
                    Some("message_delta"),
                    &json!({
                        "type": "message_delta",
                        "delta": {"stop_reason": finish_to(finish), "stop_sequence": self.stop_sequence},
                        "usage": usage_json(&self.usage),
                    }),
                );
                put_json_event(out, Some("message_stop"), &json!({"type": "message_stop"}));
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
    use crate::convert::neutral::Message;

    #[test]
    fn tool_results_split_from_user_text() {
        let request = AnthropicCodec
            .decode_request(
                "v1/messages",
                "",
                br#"{"model":"claude","max_tokens":10,"messages":[
                    {"role":"user","content":"hi"},
                    {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"42"}],"is_error":true},{"type":"text","text":"thanks"}]}
                ]}"#,
            )
            .unwrap()
            .request;
        let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::User]);
        assert_eq!(
            request.messages[2].parts[0],
            Part::ToolResult(ToolResult {
                call_id: "t1".to_owned(),
                name: None,
                content: "42".to_owned(),
                is_error: true
            })
        );
    }

    #[test]
    fn encoding_merges_tool_results_into_one_user_turn_first() {
        let request = ChatRequest {
            model: Some("claude".to_owned()),
            temperature: Some(1.7),
            messages: vec![
                Message::new(
                    Role::Tool,
                    vec![Part::ToolResult(ToolResult {
                        call_id: "a".to_owned(),
                        name: None,
                        content: "1".to_owned(),
                        is_error: false,
                    })],
                ),
                Message::new(Role::User, vec![Part::Text("next".to_owned())]),
            ],
            ..ChatRequest::default()
        };
        let encoded = AnthropicCodec.encode_request(&request).unwrap();
        let body: Value = serde_json::from_slice(&encoded.body).unwrap();
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["temperature"], 1.0);
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        assert_eq!(body["messages"][0]["content"][0]["type"], "tool_result");
        assert_eq!(body["messages"][0]["content"][1]["type"], "text");
    }

    #[test]
    fn foreign_tool_ids_are_made_valid_consistently() {
        assert_eq!(
            tool_id("functions.get_weather:0"),
            "functions_get_weather_0"
        );
        assert_eq!(tool_id("call_Ab-1"), "call_Ab-1");
        let request = ChatRequest {
            model: Some("claude".to_owned()),
            messages: vec![
                Message::new(
                    Role::Assistant,
                    vec![Part::ToolCall(ToolCall {
                        id: "functions.f:0".to_owned(),
                        name: "f".to_owned(),
                        arguments: "{}".to_owned(),
                    })],
                ),
                Message::new(
                    Role::Tool,
                    vec![Part::ToolResult(ToolResult {
                        call_id: "functions.f:0".to_owned(),
                        name: None,
                        content: "ok".to_owned(),
                        is_error: false,
                    })],
                ),
            ],
            ..ChatRequest::default()
        };
        let body: Value =
            serde_json::from_slice(&AnthropicCodec.encode_request(&request).unwrap().body).unwrap();
        assert_eq!(body["messages"][0]["content"][0]["id"], "functions_f_0");
        assert_eq!(
            body["messages"][1]["content"][0]["tool_use_id"],
            "functions_f_0"
        );
    }

    #[test]
    fn blank_text_is_dropped_and_a_final_prefill_trimmed() {
        let request = ChatRequest {
            model: Some("claude".to_owned()),
            system: vec![" ".to_owned(), "Be brief.".to_owned()],
            messages: vec![
                Message::new(Role::User, vec![Part::Text("hi".to_owned())]),
                Message::new(
                    Role::Assistant,
                    vec![
                        Part::Text(String::new()),
                        Part::ToolCall(ToolCall {
                            id: "t1".to_owned(),
                            name: "f".to_owned(),
                            arguments: "{}".to_owned(),
                        }),
                    ],
                ),
                Message::new(
                    Role::Tool,
                    vec![Part::ToolResult(ToolResult {
                        call_id: "t1".to_owned(),
                        name: None,
                        content: " ".to_owned(),
                        is_error: false,
                    })],
                ),
                Message::new(Role::User, vec![Part::Text("  ".to_owned())]),
                Message::new(Role::Assistant, vec![Part::Text("Sure, \n".to_owned())]),
            ],
            ..ChatRequest::default()
        };
        let body: Value =
            serde_json::from_slice(&AnthropicCodec.encode_request(&request).unwrap().body).unwrap();
        assert_eq!(body["system"], "Be brief.");
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[1]["content"].as_array().unwrap().len(), 1);
        assert_eq!(messages[1]["content"][0]["type"], "tool_use");
        assert_eq!(
            messages[2]["content"],
            json!([{"type": "tool_result", "tool_use_id": "t1"}])
        );
        assert_eq!(messages[3]["content"][0]["text"], "Sure,");
    }

    #[test]
    fn nothing_but_blank_text_is_an_empty_conversation() {
        let request = ChatRequest {
            model: Some("claude".to_owned()),
            messages: vec![Message::new(Role::User, vec![Part::Text(" ".to_owned())])],
            ..ChatRequest::default()
        };
        assert_eq!(
            AnthropicCodec.encode_request(&request).err(),
            Some(ConvertError::EmptyConversation)
        );
    }

    #[test]
    fn message_start_carries_input_tokens_known_before_content() {
        let mut encoder = AnthropicCodec.stream_encoder(&ClientStream::default());
        let mut out = BytesMut::new();
        for event in [
            StreamEvent::Start {
                id: Some("abc".to_owned()),
                model: Some("gemini-2.5-flash".to_owned()),
                created: None,
            },
            StreamEvent::Usage(Usage {
                input_tokens: Some(12),
                ..Usage::default()
            }),
            StreamEvent::Text("hi".to_owned()),
            StreamEvent::End,
        ] {
            encoder.encode(event, &mut out);
        }
        let text = String::from_utf8(out.to_vec()).unwrap();
        let start = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        let start: Value = serde_json::from_str(start).unwrap();
        assert_eq!(start["message"]["usage"]["input_tokens"], 12);
        assert_eq!(start["message"]["id"], "msg_abc");
    }

    #[test]
    fn missing_model_is_an_error() {
        assert_eq!(
            AnthropicCodec
                .encode_request(&ChatRequest::default())
                .err()
                .unwrap(),
            ConvertError::MissingModel
        );
    }
}
