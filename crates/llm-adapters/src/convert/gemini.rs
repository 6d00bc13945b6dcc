//! Gemini `generateContent` / `streamGenerateContent` as a conversion format: request,
//! response, usage and stream chunk wire types (camelCase, with the snake_case spellings the
//! REST API also accepts), and their mapping to and from the neutral model. The model and the
//! stream flag live in the path (`v1beta/models/{model}:streamGenerateContent?alt=sse`);
//! `model` turns are the assistant's, `functionResponse` parts are tool results, thought parts
//! are dropped.
//!
//! Gemini function calls carry no id (or an optional one): calls get ids synthesised
//! (`call_<n>` in requests, unique ids in responses) and results are matched to calls by name;
//! ids are not sent to Gemini. A tool result's text is sent as the `response` object when it is
//! JSON for an object, else as `{"content": text}` (and read back the same way). Tool schemas
//! are sent as `parametersJsonSchema`, which takes full JSON Schema. A stream is a series of
//! data events, each a whole `GenerateContentResponse`; the client stream buffers a tool call
//! until its arguments are complete (Gemini sends whole calls), puts `usageMetadata` on every
//! chunk once the upstream has told any count (as Gemini does), and ends with a chunk carrying
//! `finishReason` and the final `usageMetadata`. Blank text and blank system segments are not
//! sent (Gemini refuses empty text parts).

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ConvertError, MalformedResponse,
    neutral::{
        ChatRequest, ChatResponse, ErrorInfo, FinishReason, Image, Part, Role, StreamEvent, Tool,
        ToolCall, ToolChoice, ToolResult, Usage, arguments_object, fresh_id, json_text,
        non_blank_system, push_part, status_for_code, turns_by_side,
    },
    registry::{Codec, DecodedRequest, EncodedRequest},
    stream::{
        ClientStream, StreamDecoder, StreamEncoder, StreamFraming, parse_event, put_error_event,
        put_json_event,
    },
};
use crate::{ClientFormat, ProxyError, SseEvent, query};

const NAME: &str = "Gemini generateContent";

const GENERATE: &str = "generateContent";
const STREAM_GENERATE: &str = "streamGenerateContent";

/// The codec of Gemini.
pub(crate) struct GeminiCodec;

// ---------------------------------------------------------------------------------------------
// Wire types.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    #[serde(default)]
    contents: Vec<ContentIn>,
    #[serde(alias = "system_instruction")]
    system_instruction: Option<ContentIn>,
    tools: Option<Vec<ToolIn>>,
    #[serde(alias = "tool_config")]
    tool_config: Option<ToolConfigIn>,
    #[serde(alias = "generation_config")]
    generation_config: Option<GenerationConfigIn>,
}

#[derive(Deserialize)]
struct ContentIn {
    role: Option<String>,
    #[serde(default)]
    parts: Vec<PartIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartIn {
    text: Option<String>,
    thought: Option<bool>,
    #[serde(alias = "inline_data")]
    inline_data: Option<BlobIn>,
    #[serde(alias = "file_data")]
    file_data: Option<FileIn>,
    #[serde(alias = "function_call")]
    function_call: Option<FunctionCallIn>,
    #[serde(alias = "function_response")]
    function_response: Option<FunctionResponseIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlobIn {
    #[serde(alias = "mime_type")]
    mime_type: String,
    data: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileIn {
    #[serde(alias = "mime_type")]
    mime_type: Option<String>,
    #[serde(alias = "file_uri")]
    file_uri: String,
}

#[derive(Deserialize)]
struct FunctionCallIn {
    id: Option<String>,
    name: String,
    args: Option<Value>,
}

#[derive(Deserialize)]
struct FunctionResponseIn {
    id: Option<String>,
    name: String,
    response: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolIn {
    #[serde(alias = "function_declarations")]
    function_declarations: Option<Vec<FunctionDeclarationIn>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclarationIn {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    #[serde(alias = "parameters_json_schema")]
    parameters_json_schema: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfigIn {
    #[serde(alias = "function_calling_config")]
    function_calling_config: Option<FunctionCallingConfigIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfigIn {
    mode: Option<String>,
    #[serde(alias = "allowed_function_names")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfigIn {
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    #[serde(alias = "top_p")]
    top_p: Option<f64>,
    #[serde(alias = "stop_sequences")]
    stop_sequences: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseIn {
    candidates: Option<Vec<CandidateIn>>,
    usage_metadata: Option<UsageIn>,
    model_version: Option<String>,
    response_id: Option<String>,
    prompt_feedback: Option<PromptFeedbackIn>,
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateIn {
    content: Option<ContentIn>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedbackIn {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageIn {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Mapping helpers.

impl UsageIn {
    fn to_neutral(&self) -> Usage {
        let output = match (self.candidates_token_count, self.thoughts_token_count) {
            (None, None) => None,
            (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
        };
        Usage {
            input_tokens: self.prompt_token_count,
            output_tokens: output,
            cached_input_tokens: self.cached_content_token_count,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

fn usage_json(usage: &Usage) -> Value {
    let reasoning = usage.reasoning_tokens.unwrap_or(0);
    let mut out = json!({
        "promptTokenCount": usage.input(),
        "candidatesTokenCount": usage.output().saturating_sub(reasoning),
        "totalTokenCount": usage.total(),
    });
    if let Some(cached) = usage.cached_input_tokens {
        out["cachedContentTokenCount"] = json!(cached);
    }
    if let Some(reasoning) = usage.reasoning_tokens {
        out["thoughtsTokenCount"] = json!(reasoning);
    }
    out
}

fn finish_from(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "STOP" if called_tools => FinishReason::ToolUse,
        "STOP" => FinishReason::EndTurn,
        "MAX_TOKENS" => FinishReason::MaxTokens,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ => FinishReason::Other,
    }
}

fn finish_to(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::EndTurn | FinishReason::StopSequence | FinishReason::ToolUse => "STOP",
        FinishReason::MaxTokens => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Other => "OTHER",
    }
}

/// A tool result's `response` object as neutral text (see the module docs).
fn response_text(response: Option<Value>) -> String {
    match response {
        None | Some(Value::Null) => String::new(),
        Some(Value::Object(map)) if map.len() == 1 => match map.get("content") {
            Some(Value::String(text)) => text.clone(),
            _ => json_text(&Value::Object(map)),
        },
        Some(other) => json_text(&other),
    }
}

/// Neutral tool result text as Gemini's `response` object.
fn response_object(content: &str) -> Value {
    match serde_json::from_str::<Value>(content) {
        Ok(Value::Object(map)) if !(map.len() == 1 && map.contains_key("content")) => {
            Value::Object(map)
        }
        _ => json!({ "content": content }),
    }
}

/// Gemini's OpenAPI-style `parameters` schema as JSON Schema: its upper-case type names
/// (`OBJECT`, `STRING`, ...) become the lower-case ones JSON Schema uses, at every depth.
fn json_schema_from_openapi(mut schema: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if key == "type"
                        && let Value::String(kind) = child
                        && matches!(
                            kind.as_str(),
                            "STRING"
                                | "NUMBER"
                                | "INTEGER"
                                | "BOOLEAN"
                                | "ARRAY"
                                | "OBJECT"
                                | "NULL"
                        )
                    {
                        *kind = kind.to_ascii_lowercase();
                    } else {
                        walk(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

/// A media type for an image URL, from its extension (Gemini's `fileData` needs one).
fn guess_image_type(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else if path.ends_with(".heic") {
        "image/heic"
    } else {
        "image/jpeg"
    }
}

fn part_json(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text(text) => json!({ "text": text }),
        Part::Image(Image::Base64 { media_type, data }) => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        Part::Image(Image::Url(url)) => {
            json!({"fileData": {"mimeType": guess_image_type(url), "fileUri": url}})
        }
        Part::ToolCall(call) => json!({"functionCall": {
            "name": call.name,
            "args": arguments_object(&call.arguments),
        }}),
        Part::ToolResult(result) => json!({"functionResponse": {
            "name": result.name.as_deref().unwrap_or(&result.call_id),
            "response": response_object(&result.content),
        }}),
    })
}

/// The model name and method of a Gemini action such as
/// `v1beta/models/gemini-2.5-flash:streamGenerateContent`.
fn parse_action(action: &str) -> Option<(&str, &str)> {
    let action = action.trim_end_matches('/');
    let start = action.rfind("models/")? + "models/".len();
    let (model, method) = action.get(start..)?.rsplit_once(':')?;
    (!model.is_empty()).then_some((model, method))
}

/// Whether a model name can be put in the path as is (at least one letter or digit, so never
/// a dot segment).
fn valid_model(model: &str) -> bool {
    model.bytes().any(|b| b.is_ascii_alphanumeric())
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The neutral parts of a content, with their role (text and images take `role`).
fn content_parts(content: ContentIn, role: Role, out: &mut Vec<(Role, Part)>) {
    for part in content.parts {
        if part.thought == Some(true) {
            continue;
        }
        if let Some(text) = part.text {
            out.push((role, Part::Text(text)));
        }
        if let Some(blob) = part.inline_data {
            out.push((
                role,
                Part::Image(Image::Base64 {
                    media_type: blob.mime_type,
                    data: blob.data,
                }),
            ));
        }
        if let Some(file) = part.file_data
            && file
                .mime_type
                .as_deref()
                .is_none_or(|m| m.starts_with("image/"))
        {
            out.push((role, Part::Image(Image::Url(file.file_uri))));
        }
        if let Some(call) = part.function_call {
            out.push((
                Role::Assistant,
                Part::ToolCall(ToolCall {
                    id: call.id.unwrap_or_default(),
                    name: call.name,
                    arguments: json_text(&call.args.unwrap_or_else(|| json!({}))),
                }),
            ));
        }
        if let Some(response) = part.function_response {
            out.push((
                Role::Tool,
                Part::ToolResult(ToolResult {
                    call_id: response.id.unwrap_or_default(),
                    name: Some(response.name),
                    content: response_text(response.response),
                    is_error: false,
                }),
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Codec.

impl Codec for GeminiCodec {
    fn decode_request(
        &self,
        action: &str,
        query_string: &str,
        body: &[u8],
    ) -> Result<DecodedRequest, ConvertError> {
        let unsupported = || ConvertError::UnsupportedAction {
            action: action.to_owned(),
            expected: "v1beta/models/{model}:generateContent or :streamGenerateContent",
        };
        let (model, method) = parse_action(action).ok_or_else(unsupported)?;
        let stream = match method {
            GENERATE => false,
            STREAM_GENERATE => true,
            _ => return Err(unsupported()),
        };
        let wire: RequestIn =
            serde_json::from_slice(body).map_err(|e| ConvertError::invalid(NAME, e))?;
        let config = wire.generation_config;
        let mut request = ChatRequest {
            model: Some(query::percent_decode(model).into_owned()),
            stream,
            ..ChatRequest::default()
        };
        if let Some(config) = config {
            request.max_tokens = config.max_output_tokens;
            request.temperature = config.temperature;
            request.top_p = config.top_p;
            request.stop = config.stop_sequences.unwrap_or_default();
        }
        if let Some(system) = wire.system_instruction {
            for part in system.parts {
                if let Some(text) = part.text {
                    request.system.push(text);
                }
            }
        }
        for tool in wire.tools.unwrap_or_default() {
            for function in tool.function_declarations.unwrap_or_default() {
                request.tools.push(Tool {
                    name: function.name,
                    description: function.description,
                    parameters: function
                        .parameters_json_schema
                        .or_else(|| function.parameters.map(json_schema_from_openapi))
                        .unwrap_or_else(|| json!({"type": "object"})),
                });
            }
        }
        if let Some(config) = wire.tool_config.and_then(|c| c.function_calling_config) {
            let allowed = config.allowed_function_names.unwrap_or_default();
            request.tool_choice = match config.mode.as_deref() {
                Some("AUTO") => Some(ToolChoice::Auto),
                Some("NONE") => Some(ToolChoice::None),
                Some("ANY") => match allowed.as_slice() {
                    [one] => Some(ToolChoice::Function(one.clone())),
                    _ => Some(ToolChoice::Required),
                },
                _ => None,
            };
        }
        for content in wire.contents {
            let role = match content.role.as_deref() {
                None | Some("user") => Role::User,
                Some("model") => Role::Assistant,
                Some("function" | "tool") => Role::Tool,
                Some(other) => {
                    return Err(ConvertError::invalid(
                        NAME,
                        format!("unknown content role `{other}`"),
                    ));
                }
            };
            let mut parts = Vec::new();
            let text_role = if role == Role::Assistant {
                Role::Assistant
            } else {
                Role::User
            };
            content_parts(content, text_role, &mut parts);
            for (part_role, part) in parts {
                let part_role = if role == Role::Assistant {
                    Role::Assistant
                } else {
                    part_role
                };
                push_part(&mut request.messages, part_role, part);
            }
        }
        let framing =
            if !stream || query::query_param(query_string, "alt").as_deref() == Some("sse") {
                StreamFraming::Sse
            } else {
                StreamFraming::JsonArray
            };
        Ok(DecodedRequest {
            request,
            framing,
            include_usage: false,
        })
    }

    fn client_params(&self) -> &'static [&'static str] {
        &[query::GEMINI_KEY_PARAM, "alt"]
    }

    fn encode_request(&self, request: &ChatRequest) -> Result<EncodedRequest, ConvertError> {
        let model = request.model.as_deref().ok_or(ConvertError::MissingModel)?;
        let model = model.strip_prefix("models/").unwrap_or(model);
        if !valid_model(model) {
            return Err(ConvertError::InvalidModel(model.to_owned()));
        }
        let turns = turns_by_side(&request.messages, |role| match role {
            Role::User | Role::Tool => "user",
            Role::Assistant => "model",
        });
        if turns.is_empty() {
            return Err(ConvertError::EmptyConversation);
        }
        let contents: Vec<Value> = turns
            .into_iter()
            .map(|(role, parts)| {
                let parts: Vec<Value> = parts.into_iter().filter_map(part_json).collect();
                json!({"role": role, "parts": parts})
            })
            .collect();
        let mut body = Map::new();
        body.insert("contents".into(), Value::Array(contents));
        let system = non_blank_system(request);
        if !system.is_empty() {
            let parts: Vec<Value> = system.iter().map(|t| json!({"text": t})).collect();
            body.insert("systemInstruction".into(), json!({ "parts": parts }));
        }
        if !request.tools.is_empty() {
            let declarations: Vec<Value> = request
                .tools
                .iter()
                .map(|tool| {
                    let mut value =
                        json!({"name": tool.name, "parametersJsonSchema": tool.parameters});
                    if let Some(description) = &tool.description {
                        value["description"] = json!(description);
                    }
                    value
                })
                .collect();
            body.insert(
                "tools".into(),
                json!([{ "functionDeclarations": declarations }]),
            );
        }
        if let Some(choice) = &request.tool_choice {
            let config = match choice {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Function(name) => {
                    json!({"mode": "ANY", "allowedFunctionNames": [name]})
                }
            };
            body.insert(
                "toolConfig".into(),
                json!({ "functionCallingConfig": config }),
            );
        }
        let mut generation = Map::new();
        if let Some(max) = request.max_tokens {
            generation.insert("maxOutputTokens".into(), json!(max));
        }
        if let Some(t) = request.temperature {
            generation.insert("temperature".into(), json!(t));
        }
        if let Some(p) = request.top_p {
            generation.insert("topP".into(), json!(p));
        }
        if !request.stop.is_empty() {
            generation.insert("stopSequences".into(), json!(request.stop));
        }
        if !generation.is_empty() {
            body.insert("generationConfig".into(), Value::Object(generation));
        }
        let (method, params) = if request.stream {
            (STREAM_GENERATE, vec![("alt", "sse")])
        } else {
            (GENERATE, Vec::new())
        };
        Ok(EncodedRequest {
            action: format!("v1beta/models/{model}:{method}"),
            params,
            body: json_text(&Value::Object(body)).into_bytes(),
        })
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, MalformedResponse> {
        let wire: ResponseIn = serde_json::from_slice(body)?;
        let mut response = ChatResponse {
            id: wire.response_id,
            model: wire.model_version,
            usage: wire
                .usage_metadata
                .map(|u| u.to_neutral())
                .unwrap_or_default(),
            ..ChatResponse::default()
        };
        let candidate = wire.candidates.and_then(|c| c.into_iter().next());
        match candidate {
            Some(candidate) => {
                let mut parts = Vec::new();
                if let Some(content) = candidate.content {
                    content_parts(content, Role::Assistant, &mut parts);
                }
                response.parts = parts
                    .into_iter()
                    .filter_map(|(_, part)| match part {
                        Part::Text(_) => Some(part),
                        Part::ToolCall(mut call) => {
                            if call.id.is_empty() {
                                call.id = fresh_id("call_");
                            }
                            Some(Part::ToolCall(call))
                        }
                        _ => None,
                    })
                    .collect();
                let called = response
                    .parts
                    .iter()
                    .any(|p| matches!(p, Part::ToolCall(_)));
                response.finish = candidate
                    .finish_reason
                    .as_deref()
                    .map(|r| finish_from(r, called));
            }
            None => {
                if wire.prompt_feedback.and_then(|f| f.block_reason).is_some() {
                    response.finish = Some(FinishReason::ContentFilter);
                }
            }
        }
        Ok(response)
    }

    fn encode_response(&self, response: &ChatResponse) -> Vec<u8> {
        let parts: Vec<Value> = response
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Text(_) | Part::ToolCall(_)))
            .filter_map(part_json)
            .collect();
        let finish = response.finish.unwrap_or(FinishReason::EndTurn);
        let mut out = json!({
            "candidates": [{
                "content": {"role": "model", "parts": parts},
                "finishReason": finish_to(finish),
                "index": 0,
            }],
            "usageMetadata": usage_json(&response.usage),
        });
        if let Some(model) = &response.model {
            out["modelVersion"] = json!(model);
        }
        if let Some(id) = &response.id {
            out["responseId"] = json!(id);
        }
        json_text(&out).into_bytes()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChunkDecoder::default())
    }

    fn stream_encoder(&self, client: &ClientStream) -> Box<dyn StreamEncoder> {
        Box::new(ChunkEncoder {
            framing: client.framing,
            requested_model: client.model.clone(),
            ..ChunkEncoder::default()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Stream decoding.

#[derive(Default)]
struct ChunkDecoder {
    started: bool,
    calls: usize,
}

impl StreamDecoder for ChunkDecoder {
    fn event(&mut self, event: &SseEvent<'_>, out: &mut Vec<StreamEvent>) {
        let Some(chunk) = parse_event::<ResponseIn>(event.data, out) else {
            return;
        };
        if let Some(error) = chunk.error {
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok());
            let code = error
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("INTERNAL")
                .to_owned();
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the upstream reported an error")
                .to_owned();
            let status = status.unwrap_or_else(|| status_for_code(&code));
            out.push(StreamEvent::Error(ErrorInfo::new(status, code, message)));
            return;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.response_id,
                model: chunk.model_version,
                created: None,
            });
        }
        if let Some(usage) = &chunk.usage_metadata {
            out.push(StreamEvent::Usage(usage.to_neutral()));
        }
        let Some(candidate) = chunk.candidates.and_then(|c| c.into_iter().next()) else {
            if chunk.prompt_feedback.and_then(|f| f.block_reason).is_some() {
                out.push(StreamEvent::Finish {
                    reason: FinishReason::ContentFilter,
                    stop_sequence: None,
                });
            }
            return;
        };
        let mut parts = Vec::new();
        if let Some(content) = candidate.content {
            content_parts(content, Role::Assistant, &mut parts);
        }
        for (_, part) in parts {
            match part {
                Part::Text(text) if !text.is_empty() => out.push(StreamEvent::Text(text)),
                Part::ToolCall(call) => {
                    let index = self.calls;
                    self.calls += 1;
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: if call.id.is_empty() {
                            fresh_id("call_")
                        } else {
                            call.id
                        },
                        name: call.name,
                    });
                    out.push(StreamEvent::ToolCallDelta {
                        index,
                        arguments: call.arguments,
                    });
                }
                _ => {}
            }
        }
        if let Some(reason) = candidate.finish_reason {
            out.push(StreamEvent::Finish {
                reason: finish_from(&reason, self.calls > 0),
                stop_sequence: None,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream encoding.

#[derive(Default)]
struct ChunkEncoder {
    framing: StreamFraming,
    id: Option<String>,
    model: Option<String>,
    /// The client's model, named when the upstream names none.
    requested_model: Option<String>,
    /// Tool calls whose arguments may still grow: (neutral index, name, arguments).
    pending: Vec<(usize, String, String)>,
    finish: Option<FinishReason>,
    usage: Usage,
    chunks: usize,
    done: bool,
}

impl ChunkEncoder {
    fn write(&mut self, out: &mut BytesMut, value: &Value) {
        match self.framing {
            StreamFraming::Sse => put_json_event(out, None, value),
            StreamFraming::JsonArray => {
                out.put_slice(if self.chunks == 0 { b"[" } else { b",\r\n" });
                let _ = serde_json::to_writer(out.writer(), value);
            }
        }
        self.chunks += 1;
    }

    /// The parts of pending tool calls, which are complete once anything else arrives.
    fn take_calls(&mut self) -> Vec<Value> {
        self.pending
            .drain(..)
            .map(|(_, name, arguments)| {
                json!({"functionCall": {"name": name, "args": arguments_object(&arguments)}})
            })
            .collect()
    }

    fn chunk(&self, parts: Vec<Value>, last: bool) -> Value {
        let mut candidate = json!({
            "content": {"role": "model", "parts": parts},
            "index": 0,
        });
        let mut chunk = Map::new();
        if last {
            let finish = self.finish.unwrap_or(FinishReason::EndTurn);
            candidate["finishReason"] = json!(finish_to(finish));
        }
        chunk.insert("candidates".into(), json!([candidate]));
        // Gemini puts the counts so far on every chunk; before the end, only when known.
        if last || !self.usage.is_empty() {
            chunk.insert("usageMetadata".into(), usage_json(&self.usage));
        }
        if let Some(model) = self.model.as_ref().or(self.requested_model.as_ref()) {
            chunk.insert("modelVersion".into(), json!(model));
        }
        if let Some(id) = &self.id {
            chunk.insert("responseId".into(), json!(id));
        }
        Value::Object(chunk)
    }
}

impl StreamEncoder for ChunkEncoder {
    fn encode(&mut self, event: StreamEvent, out: &mut BytesMut) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Start { id, model, .. } => {
                self.id = self.id.take().or(id);
                self.model = self.model.take().or(model);
            }
            StreamEvent::Text(text) => {
                let mut parts = self.take_calls();
                parts.push(json!({ "text": text }));
                let chunk = self.chunk(parts, false);
                self.write(out, &chunk);
            }
            StreamEvent::ToolCallStart { index, name, .. } => {
                self.pending.push((index, name, String::new()));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                if let Some((_, _, args)) = self.pending.iter_mut().find(|(i, _, _)| *i == index) {
                    args.push_str(&arguments);
                }
            }
            StreamEvent::Usage(usage) => self.usage.merge(&usage),
            StreamEvent::Finish { reason, .. } => self.finish = Some(reason),
            StreamEvent::Error(error) => {
                match self.framing {
                    StreamFraming::Sse => put_error_event(out, ClientFormat::Gemini, &error),
                    StreamFraming::JsonArray => {
                        out.put_slice(if self.chunks == 0 { b"[" } else { b",\r\n" });
                        out.put_slice(&crate::gemini::error_body(&ProxyError::new(
                            error.status,
                            &error.code,
                            &error.message,
                        )));
                        out.put_slice(b"]");
                    }
                }
                self.done = true;
            }
            StreamEvent::End => {
                let mut parts = self.take_calls();
                if parts.is_empty() {
                    parts.push(json!({ "text": "" }));
                }
                let chunk = self.chunk(parts, true);
                self.write(out, &chunk);
                if self.framing == StreamFraming::JsonArray {
                    out.put_slice(b"]");
                }
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
    fn actions_name_model_and_method() {
        assert_eq!(
            parse_action("v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            Some(("gemini-2.5-flash", "streamGenerateContent"))
        );
        assert_eq!(
            parse_action("v1/models/gemini-pro:generateContent"),
            Some(("gemini-pro", "generateContent"))
        );
        assert_eq!(parse_action("v1beta/models"), None);
        assert_eq!(parse_action("v1beta/models/:generateContent"), None);
    }

    #[test]
    fn model_names_are_validated() {
        assert!(valid_model("gemini-2.5-flash-preview_05.20"));
        assert!(!valid_model("../admin"));
        assert!(!valid_model("a/b"));
        assert!(!valid_model("a?b"));
        assert!(!valid_model(".."));
        assert!(!valid_model(""));
        let err = GeminiCodec
            .encode_request(&ChatRequest {
                model: Some("x/../../y".to_owned()),
                ..ChatRequest::default()
            })
            .err()
            .unwrap();
        assert!(matches!(err, ConvertError::InvalidModel(_)));
    }

    #[test]
    fn openapi_type_names_become_json_schema_ones() {
        let schema = json!({"type": "OBJECT", "properties": {
            "type": {"type": "STRING", "enum": ["OBJECT"]},
            "tags": {"type": "ARRAY", "items": {"type": "INTEGER"}}
        }});
        assert_eq!(
            json_schema_from_openapi(schema),
            json!({"type": "object", "properties": {
                "type": {"type": "string", "enum": ["OBJECT"]},
                "tags": {"type": "array", "items": {"type": "integer"}}
            }})
        );
    }

    #[test]
    fn tool_result_text_and_response_object() {
        assert_eq!(response_object("sunny"), json!({"content": "sunny"}));
        assert_eq!(response_object("{\"t\":20}"), json!({"t": 20}));
        assert_eq!(response_text(Some(json!({"content": "sunny"}))), "sunny");
        assert_eq!(response_text(Some(json!({"t": 20}))), "{\"t\":20}");
        // A JSON text that looks like the wrapper itself survives the round trip.
        let tricky = "{\"content\":\"x\"}";
        assert_eq!(response_text(Some(response_object(tricky))), tricky);
    }

    #[test]
    fn snake_case_requests_are_read() {
        let decoded = GeminiCodec
            .decode_request(
                "v1beta/models/gemini-2.5-flash:generateContent",
                "",
                br#"{"system_instruction":{"parts":[{"text":"sys"}]},"contents":[{"role":"user","parts":[{"inline_data":{"mime_type":"image/png","data":"AA=="}}]}],"generation_config":{"max_output_tokens":5}}"#,
            )
            .unwrap();
        assert_eq!(decoded.request.system, ["sys"]);
        assert_eq!(decoded.request.max_tokens, Some(5));
        assert!(matches!(
            decoded.request.messages[0].parts[0],
            Part::Image(Image::Base64 { .. })
        ));
    }

    #[test]
    fn stream_without_alt_sse_is_a_json_array() {
        let decoded = GeminiCodec
            .decode_request(
                "v1beta/models/gemini-2.5-flash:streamGenerateContent",
                "key=k",
                br#"{"contents":[]}"#,
            )
            .unwrap();
        assert_eq!(decoded.framing, StreamFraming::JsonArray);
    }
}
