//! The one neutral model every format converts through: a chat request (system prompt, turns of
//! text, images, tool calls and tool results, tool definitions and sampling parameters), a
//! non-streamed response, an upstream error, and the events of a streamed response. Each
//! provider module decodes its wire JSON into these types and encodes them back; nothing here
//! knows any wire format.
//!
//! Tool calls are linked to their results by id. Formats without ids (Gemini) get ids
//! synthesised by [`ChatRequest::link_tool_calls`], and formats whose results carry no function
//! name (OpenAI) get it filled in from the call, so every encoder finds both.

use serde_json::Value;

/// A chat request in no particular format.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The model name, when the format carries it in the body (Gemini carries it in the path;
    /// its decoder fills it from there).
    pub model: Option<String>,
    /// System prompt segments, in order (OpenAI system/developer messages, Anthropic `system`
    /// blocks, Gemini `systemInstruction` parts, Responses `instructions`).
    pub system: Vec<String>,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// Function tools the model may call.
    pub tools: Vec<Tool>,
    /// How the model must use the tools; `None` leaves the upstream default.
    pub tool_choice: Option<ToolChoice>,
    /// The bound on generated tokens.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling probability mass.
    pub top_p: Option<f64>,
    /// Sequences that stop generation.
    pub stop: Vec<String>,
    /// Whether the client asked for a streamed response.
    pub stream: bool,
}

/// Who a message is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The user: text and images.
    User,
    /// The model: text and tool calls.
    Assistant,
    /// Results of tool calls, sent back to the model (OpenAI `tool` messages, Anthropic
    /// `tool_result` blocks in a user turn, Gemini `functionResponse` parts).
    Tool,
}

impl Role {
    /// Whether `part` belongs in a message of this role: text and images from the user, text
    /// and tool calls from the assistant, results in tool messages. Encoders drop the rest.
    pub fn carries(self, part: &Part) -> bool {
        matches!(
            (self, part),
            (Role::User, Part::Text(_) | Part::Image(_))
                | (Role::Assistant, Part::Text(_) | Part::ToolCall(_))
                | (Role::Tool, Part::ToolResult(_))
        )
    }
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The speaker.
    pub role: Role,
    /// The content, in order.
    pub parts: Vec<Part>,
}

impl Message {
    /// A message with these parts.
    pub fn new(role: Role, parts: Vec<Part>) -> Self {
        Message { role, parts }
    }
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Plain text.
    Text(String),
    /// An image, by URL or inline.
    Image(Image),
    /// A call of a function tool, made by the model.
    ToolCall(ToolCall),
    /// The result of a tool call.
    ToolResult(ToolResult),
}

impl Part {
    /// Whether this is text with nothing but whitespace (empty included).
    pub fn is_blank_text(&self) -> bool {
        matches!(self, Part::Text(text) if text.trim().is_empty())
    }
}

/// An image in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// An image the upstream fetches itself (`https://...`, `gs://...`).
    Url(String),
    /// An inline image.
    Base64 {
        /// The media type, such as `image/png`.
        media_type: String,
        /// The base64-encoded bytes.
        data: String,
    },
}

impl Image {
    /// The image as a URL: a `data:` URL for inline images.
    pub fn to_url(&self) -> String {
        match self {
            Image::Url(url) => url.clone(),
            Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }

    /// Parses a URL, turning `data:<type>;base64,<data>` into [`Image::Base64`].
    pub fn from_url(url: &str) -> Self {
        if let Some(rest) = url.strip_prefix("data:")
            && let Some((meta, data)) = rest.split_once(',')
            && let Some(media_type) = meta.strip_suffix(";base64")
        {
            return Image::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            };
        }
        Image::Url(url.to_owned())
    }
}

/// A function call made by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The id linking the call to its result.
    pub id: String,
    /// The function name.
    pub name: String,
    /// The arguments as JSON text (an object when the model behaves).
    pub arguments: String,
}

/// The result of a function call, sent back to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The id of the call this answers.
    pub call_id: String,
    /// The function name, when known (Gemini needs it; filled from the call otherwise).
    pub name: Option<String>,
    /// The result as text (JSON text for structured results).
    pub content: String,
    /// Whether the tool failed (Anthropic's `is_error`; other formats drop it).
    pub is_error: bool,
}

/// A function tool definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The function name.
    pub name: String,
    /// What the function does.
    pub description: Option<String>,
    /// The JSON Schema of the arguments object.
    pub parameters: Value,
}

/// How the model must use the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this function.
    Function(String),
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model finished its turn.
    EndTurn,
    /// The token bound was reached.
    MaxTokens,
    /// A stop sequence was generated.
    StopSequence,
    /// The model called tools and waits for their results.
    ToolUse,
    /// Content was withheld by a safety filter or refused.
    ContentFilter,
    /// Any other reason.
    Other,
}

/// Token counts. Every count is optional so streamed updates can be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: Option<u64>,
    /// Generated tokens, reasoning included.
    pub output_tokens: Option<u64>,
    /// The part of `input_tokens` read from a prompt cache.
    pub cached_input_tokens: Option<u64>,
    /// The part of `output_tokens` spent on reasoning.
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    /// Whether no count is known.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// Takes every count `newer` knows (stream updates carry running totals).
    pub fn merge(&mut self, newer: &Usage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cached_input_tokens = newer.cached_input_tokens.or(self.cached_input_tokens);
        self.reasoning_tokens = newer.reasoning_tokens.or(self.reasoning_tokens);
    }

    /// Prompt tokens, 0 when unknown.
    pub fn input(&self) -> u64 {
        self.input_tokens.unwrap_or(0)
    }

    /// Generated tokens, 0 when unknown.
    pub fn output(&self) -> u64 {
        self.output_tokens.unwrap_or(0)
    }

    /// Prompt plus generated tokens.
    pub fn total(&self) -> u64 {
        self.input().saturating_add(self.output())
    }
}

/// A complete (non-streamed) model response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatResponse {
    /// The upstream's response id.
    pub id: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// Creation time, Unix seconds, when the upstream said.
    pub created: Option<u64>,
    /// The generated content: text and tool calls.
    pub parts: Vec<Part>,
    /// Why generation stopped.
    pub finish: Option<FinishReason>,
    /// The stop sequence that ended generation, when the upstream reports it.
    pub stop_sequence: Option<String>,
    /// Token counts.
    pub usage: Usage,
}

/// An error reported by the upstream, or found in what it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The HTTP status it stands for.
    pub status: u16,
    /// A short snake_case code (the upstream's type, code or status name when it gave one).
    pub code: String,
    /// The human message.
    pub message: String,
}

impl ErrorInfo {
    /// An error with this status, code and message.
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorInfo {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// The error for an upstream stream event that is not valid JSON of the expected shape.
    pub fn malformed_event(detail: &str) -> Self {
        ErrorInfo::new(
            502,
            "upstream_malformed_event",
            format!("the upstream sent a malformed stream event: {detail}"),
        )
    }
}

/// One step of a streamed response.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The response began.
    Start {
        /// The upstream's response id.
        id: Option<String>,
        /// The model that answers.
        model: Option<String>,
        /// Creation time, Unix seconds.
        created: Option<u64>,
    },
    /// More generated text.
    Text(String),
    /// A tool call began.
    ToolCallStart {
        /// The call's position among this response's tool calls (0, 1, ...).
        index: usize,
        /// The call id.
        id: String,
        /// The function name.
        name: String,
    },
    /// More argument JSON text for a started tool call.
    ToolCallDelta {
        /// As in [`StreamEvent::ToolCallStart`].
        index: usize,
        /// The next piece of the arguments.
        arguments: String,
    },
    /// Token counts so far (merge with [`Usage::merge`]).
    Usage(Usage),
    /// Generation stopped.
    Finish {
        /// Why.
        reason: FinishReason,
        /// The stop sequence, when reported.
        stop_sequence: Option<String>,
    },
    /// The upstream reported an error, or sent something unreadable; the stream ends.
    Error(ErrorInfo),
    /// The upstream ended the response cleanly.
    End,
}

impl ChatRequest {
    /// Gives every tool call an id (`call_<n>` for those without one) and links every result to
    /// its call: a result without a call id takes the oldest unanswered call of the same name,
    /// and a result takes its call's name.
    ///
    /// Call ids are made unique within the conversation: some OpenAI-compatible servers restart
    /// their ids every turn (`call_0`, `functions.f:0`), and Anthropic refuses a repeated
    /// `tool_use` id. A repeated id becomes `<id>_<n>`, and the results after it that name it
    /// follow the rename.
    pub fn link_tool_calls(&mut self) {
        let mut next = 0usize;
        let mut calls: Vec<(String, String)> = Vec::new();
        let mut unanswered: Vec<(String, String)> = Vec::new();
        // (id the client sent, id it goes by now) for every renamed call id.
        let mut renamed: Vec<(String, String)> = Vec::new();
        for message in &mut self.messages {
            for part in &mut message.parts {
                match part {
                    Part::ToolCall(call) => {
                        if call.id.is_empty() {
                            call.id = format!("call_{next}");
                        }
                        next += 1;
                        renamed.retain(|(sent, _)| *sent != call.id);
                        if calls.iter().any(|(id, _)| *id == call.id) {
                            let unique = unique_id(&call.id, &calls);
                            renamed.push((call.id.clone(), unique.clone()));
                            call.id = unique;
                        }
                        calls.push((call.id.clone(), call.name.clone()));
                        unanswered.push((call.id.clone(), call.name.clone()));
                    }
                    Part::ToolResult(result) => {
                        if let Some((_, now)) =
                            renamed.iter().find(|(sent, _)| *sent == result.call_id)
                        {
                            result.call_id = now.clone();
                        }
                        if result.call_id.is_empty()
                            && let Some(name) = &result.name
                            && let Some(pos) = unanswered.iter().position(|(_, n)| n == name)
                        {
                            result.call_id = unanswered.remove(pos).0;
                        } else if let Some(pos) =
                            unanswered.iter().position(|(id, _)| *id == result.call_id)
                        {
                            unanswered.remove(pos);
                        }
                        // The call's name is authoritative: Gemini pairs results with calls
                        // by name, so a result naming another function would not pair.
                        if let Some((_, name)) = calls.iter().find(|(id, _)| *id == result.call_id)
                        {
                            result.name = Some(name.clone());
                        }
                    }
                    Part::Text(_) | Part::Image(_) => {}
                }
            }
        }
    }
}

/// `<id>_<n>` with the smallest `n` from 1 that no call in `calls` uses.
fn unique_id(id: &str, calls: &[(String, String)]) -> String {
    (1usize..)
        .map(|n| format!("{id}_{n}"))
        .find(|candidate| calls.iter().all(|(taken, _)| taken != candidate))
        .unwrap_or_else(|| fresh_id("call_"))
}

/// A tool call or result that breaks the pairing every provider demands, found by
/// [`ChatRequest::check_tool_pairing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolPairing {
    /// A call no result answers in the tool message right after its assistant message.
    Unanswered {
        /// The call's id.
        call_id: String,
    },
    /// A result that answers no call of the assistant message right before it.
    Unmatched {
        /// The call id the result names (or its function name when it has no id).
        call_id: String,
    },
}

impl ChatRequest {
    /// Checks that tool calls and results pair up the way every provider requires (OpenAI
    /// "tool_calls must be followed by tool messages responding to each tool_call_id",
    /// Anthropic "tool_use ids were found without tool_result blocks immediately after",
    /// Gemini "the number of function response parts is equal to the number of function call
    /// parts"): the results of an assistant message's calls come in the tool message right
    /// after it, one per call, and nothing else does. Run after [`Self::link_tool_calls`].
    ///
    /// # Errors
    /// The first call left unanswered or result left unmatched, in conversation order.
    pub fn check_tool_pairing(&self) -> Result<(), ToolPairing> {
        let mut pending: Vec<&str> = Vec::new();
        for message in &self.messages {
            if message.role == Role::Tool {
                for part in &message.parts {
                    if let Part::ToolResult(result) = part {
                        let Some(pos) = pending.iter().position(|id| *id == result.call_id) else {
                            let named = if result.call_id.is_empty() {
                                result.name.clone().unwrap_or_default()
                            } else {
                                result.call_id.clone()
                            };
                            return Err(ToolPairing::Unmatched { call_id: named });
                        };
                        pending.remove(pos);
                    }
                }
            }
            if let Some(call_id) = pending.first() {
                return Err(ToolPairing::Unanswered {
                    call_id: (*call_id).to_owned(),
                });
            }
            if message.role == Role::Assistant {
                pending = message
                    .parts
                    .iter()
                    .filter_map(|part| match part {
                        Part::ToolCall(call) => Some(call.id.as_str()),
                        _ => None,
                    })
                    .collect();
            }
        }
        match pending.first() {
            Some(call_id) => Err(ToolPairing::Unanswered {
                call_id: (*call_id).to_owned(),
            }),
            None => Ok(()),
        }
    }
}

/// Appends `part` to the last message when it has `role`, else starts a new message.
pub(crate) fn push_part(messages: &mut Vec<Message>, role: Role, part: Part) {
    match messages.last_mut() {
        Some(last) if last.role == role => last.parts.push(part),
        _ => messages.push(Message::new(role, vec![part])),
    }
}

/// The parts of `messages` grouped into alternating turns for formats that know only a user and
/// a model side (Anthropic, Gemini): `side` names each role's side, parts a role does not carry
/// and blank text are dropped, messages left empty are skipped, consecutive messages of one side
/// merge (also across a skipped message, so turns always alternate), and tool results open the
/// turn that answers the tool calls.
///
/// Blank text goes because both formats refuse it: Anthropic answers 400 "text content blocks
/// must be non-empty" (or "must contain non-whitespace text"), Gemini refuses empty text parts.
/// Agent frameworks send it on tool-call-only assistant turns (`"content": ""` beside
/// `tool_calls`).
pub(crate) fn turns_by_side(
    messages: &[Message],
    side: impl Fn(Role) -> &'static str,
) -> Vec<(&'static str, Vec<&Part>)> {
    let mut turns: Vec<(&'static str, Vec<&Part>)> = Vec::new();
    for message in messages {
        let name = side(message.role);
        let mut parts = message
            .parts
            .iter()
            .filter(|p| message.role.carries(p) && !p.is_blank_text())
            .peekable();
        if parts.peek().is_none() {
            continue;
        }
        match turns.last_mut() {
            Some((last, list)) if *last == name => list.extend(parts),
            _ => turns.push((name, parts.collect())),
        }
    }
    for (_, parts) in &mut turns {
        parts.sort_by_key(|p| !matches!(p, Part::ToolResult(_)));
    }
    turns
}

/// The system segments that are not blank (Anthropic and Gemini refuse empty system text).
pub(crate) fn non_blank_system(request: &ChatRequest) -> Vec<&str> {
    request
        .system
        .iter()
        .map(String::as_str)
        .filter(|text| !text.trim().is_empty())
        .collect()
}

/// Parses tool-call argument text into a JSON object for formats that carry objects; anything
/// that is not an object (invalid or truncated JSON included) becomes an empty object, with
/// non-object JSON values kept under `"value"`.
pub(crate) fn arguments_object(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(other) => {
            let mut map = serde_json::Map::new();
            map.insert("value".to_owned(), other);
            Value::Object(map)
        }
        Err(_) => Value::Object(serde_json::Map::new()),
    }
}

/// JSON text of a value (arguments, structured tool results).
pub(crate) fn json_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The HTTP status an upstream error type or code stands for, when the format does not give it.
pub(crate) fn status_for_code(code: &str) -> u16 {
    match code {
        "invalid_request_error"
        | "invalid_request"
        | "INVALID_ARGUMENT"
        | "FAILED_PRECONDITION" => 400,
        "authentication_error" | "invalid_api_key" | "UNAUTHENTICATED" => 401,
        "billing_error" | "insufficient_quota" => 402,
        "permission_error" | "PERMISSION_DENIED" => 403,
        "not_found_error" | "NOT_FOUND" => 404,
        "request_too_large" => 413,
        "rate_limit_error" | "rate_limit_exceeded" | "RESOURCE_EXHAUSTED" => 429,
        "timeout_error" | "DEADLINE_EXCEEDED" => 504,
        "overloaded_error" => 529,
        "UNAVAILABLE" => 503,
        _ => 500,
    }
}

/// A fresh id with `prefix`, unique within the process and unlikely to repeat across
/// processes (time and a counter, mixed), for formats that need ids the upstream did not give.
pub(crate) fn fresh_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let a = mix(nanos ^ count.rotate_left(32));
    let b = mix(a ^ count);
    format!("{prefix}{a:016x}{:08x}", b >> 32)
}

/// A response id in the shape the client's provider gives (`resp_…`, `msg_…`, `chatcmpl-…`),
/// since SDKs and clients that store or chain ids expect it: the upstream's id as it is when it
/// already has `prefix`, else behind `prefix` (so it can still be traced upstream), else a
/// fresh id.
pub(crate) fn client_id(prefix: &str, upstream: Option<&str>) -> String {
    match upstream {
        Some(id) if id.starts_with(prefix) => id.to_owned(),
        Some(id) if !id.is_empty() => format!("{prefix}{id}"),
        _ => fresh_id(prefix),
    }
}

/// The current time, Unix seconds, for formats whose responses require a creation time the
/// upstream did not give.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn call(id: &str, name: &str) -> Part {
        Part::ToolCall(ToolCall {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments: "{}".to_owned(),
        })
    }

    fn result(call_id: &str, name: Option<&str>) -> Part {
        Part::ToolResult(ToolResult {
            call_id: call_id.to_owned(),
            name: name.map(str::to_owned),
            content: "ok".to_owned(),
            is_error: false,
        })
    }

    #[test]
    fn link_tool_calls_synthesises_ids_and_matches_results_by_name() {
        let mut request = ChatRequest {
            messages: vec![
                Message::new(
                    Role::Assistant,
                    vec![call("", "a"), call("", "b"), call("", "a")],
                ),
                Message::new(
                    Role::Tool,
                    vec![
                        result("", Some("a")),
                        result("", Some("a")),
                        result("", Some("b")),
                    ],
                ),
            ],
            ..ChatRequest::default()
        };
        request.link_tool_calls();
        let ids: Vec<_> = request.messages[1]
            .parts
            .iter()
            .map(|p| match p {
                Part::ToolResult(r) => r.call_id.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(ids, ["call_0", "call_2", "call_1"]);
    }

    #[test]
    fn repeated_call_ids_are_made_unique_with_their_results() {
        let mut request = ChatRequest {
            messages: vec![
                Message::new(Role::Assistant, vec![call("call_0", "a")]),
                Message::new(Role::Tool, vec![result("call_0", None)]),
                Message::new(Role::Assistant, vec![call("call_0", "b"), call("", "c")]),
                Message::new(
                    Role::Tool,
                    vec![result("call_0", None), result("call_1", None)],
                ),
            ],
            ..ChatRequest::default()
        };
        request.link_tool_calls();
        let ids: Vec<&str> = request
            .messages
            .iter()
            .flat_map(|m| &m.parts)
            .map(|p| match p {
                Part::ToolCall(c) => c.id.as_str(),
                Part::ToolResult(r) => r.call_id.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(
            ids,
            [
                "call_0", "call_0", "call_0_1", "call_2", "call_0_1", "call_1"
            ]
        );
        assert_eq!(request.messages[3].parts[0], result("call_0_1", Some("b")));
        assert!(matches!(
            request.check_tool_pairing(),
            Err(ToolPairing::Unmatched { .. })
        ));
    }

    #[test]
    fn link_tool_calls_fills_result_names_from_calls() {
        let mut request = ChatRequest {
            messages: vec![
                Message::new(Role::Assistant, vec![call("x1", "weather")]),
                Message::new(Role::Tool, vec![result("x1", None)]),
            ],
            ..ChatRequest::default()
        };
        request.link_tool_calls();
        assert_eq!(request.messages[1].parts[0], result("x1", Some("weather")));
    }

    #[test]
    fn data_urls_become_inline_images_and_back() {
        let image = Image::from_url("data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(
            image,
            Image::Base64 {
                media_type: "image/png".to_owned(),
                data: "iVBORw0KGgo=".to_owned()
            }
        );
        assert_eq!(image.to_url(), "data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(
            Image::from_url("https://x.example/a.png"),
            Image::Url("https://x.example/a.png".to_owned())
        );
    }

    #[test]
    fn arguments_object_tolerates_bad_json() {
        assert_eq!(arguments_object(""), serde_json::json!({}));
        assert_eq!(arguments_object("{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(arguments_object("{\"a\":"), serde_json::json!({}));
        assert_eq!(arguments_object("[1]"), serde_json::json!({"value": [1]}));
    }

    #[test]
    fn usage_merge_keeps_known_counts() {
        let mut usage = Usage {
            input_tokens: Some(10),
            output_tokens: Some(1),
            ..Usage::default()
        };
        usage.merge(&Usage {
            output_tokens: Some(7),
            ..Usage::default()
        });
        assert_eq!((usage.input(), usage.output(), usage.total()), (10, 7, 17));
    }

    #[test]
    fn client_ids_carry_the_client_prefix() {
        assert_eq!(client_id("resp_", Some("resp_1")), "resp_1");
        assert_eq!(client_id("resp_", Some("chatcmpl-9")), "resp_chatcmpl-9");
        assert!(client_id("msg_", Some("")).starts_with("msg_"));
        assert!(client_id("msg_", None).len() > "msg_".len());
    }

    #[test]
    fn tool_pairing_wants_results_right_after_their_calls() {
        let answered = ChatRequest {
            messages: vec![
                Message::new(Role::User, vec![Part::Text("hi".to_owned())]),
                Message::new(Role::Assistant, vec![call("a", "f"), call("b", "g")]),
                Message::new(Role::Tool, vec![result("b", None), result("a", None)]),
                Message::new(Role::Assistant, vec![Part::Text("done".to_owned())]),
            ],
            ..ChatRequest::default()
        };
        assert_eq!(answered.check_tool_pairing(), Ok(()));

        let mut half = answered.clone();
        half.messages[2].parts.pop();
        assert_eq!(
            half.check_tool_pairing(),
            Err(ToolPairing::Unanswered {
                call_id: "a".to_owned()
            })
        );

        let mut orphan = answered.clone();
        orphan.messages.remove(1);
        assert_eq!(
            orphan.check_tool_pairing(),
            Err(ToolPairing::Unmatched {
                call_id: "b".to_owned()
            })
        );

        let mut trailing = answered;
        trailing.messages.truncate(2);
        assert!(matches!(
            trailing.check_tool_pairing(),
            Err(ToolPairing::Unanswered { .. })
        ));
    }

    #[test]
    fn turns_skip_blank_text_and_stay_alternating() {
        let messages = vec![
            Message::new(Role::User, vec![Part::Text("hi".to_owned())]),
            Message::new(
                Role::Assistant,
                vec![Part::Text(" ".to_owned()), call("a", "f")],
            ),
            Message::new(Role::Tool, vec![result("a", None)]),
            Message::new(Role::Assistant, vec![Part::Text(String::new())]),
            Message::new(Role::User, vec![Part::Text("\n".to_owned())]),
            Message::new(Role::User, vec![Part::Text("more".to_owned())]),
        ];
        let turns = turns_by_side(&messages, |role| match role {
            Role::Assistant => "model",
            Role::User | Role::Tool => "user",
        });
        let shape: Vec<(&str, usize)> = turns.iter().map(|(side, p)| (*side, p.len())).collect();
        assert_eq!(shape, [("user", 1), ("model", 1), ("user", 2)]);
    }

    #[test]
    fn fresh_ids_differ() {
        assert_ne!(fresh_id("call_"), fresh_id("call_"));
        assert!(fresh_id("msg_").starts_with("msg_"));
    }
}
