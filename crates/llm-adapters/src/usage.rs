//! Token usage as the upstream reports it (SPEC §7 "Tokens"): read from a whole response body
//! ([`usage_in_body`]) or, event by event, from a stream ([`StreamUsage`]), always in the
//! *upstream's* format, before any conversion, so a converted stream counts exactly like a
//! passed-through one.
//!
//! Where each provider puts it:
//! - OpenAI Chat Completions: `usage.prompt_tokens` / `usage.completion_tokens`; a stream
//!   carries it in its last chunk only when the client asked (`stream_options.include_usage`).
//!   OpenAI Responses: `usage.input_tokens` / `usage.output_tokens`, in a stream inside the
//!   `response` of its `response.completed` (or `response.incomplete`) event.
//! - Anthropic Messages: `usage.input_tokens` / `usage.output_tokens`; a stream sends the input
//!   in `message_start.message.usage` and the running output total in `message_delta.usage`.
//!   Cache writes and reads (`cache_creation_input_tokens`, `cache_read_input_tokens`) are
//!   input Anthropic reports apart, so they are added to the input.
//! - Gemini: `usageMetadata.promptTokenCount` / `candidatesTokenCount` (plus
//!   `thoughtsTokenCount`, billed as output); every stream event repeats the running totals, so
//!   the last one wins. A stream without `alt=sse` is one JSON array of such objects.
//!
//! Hot path: a body or event is parsed only when a substring check finds `usage` in it, and the
//! parse borrows and skips every other member.

use domain::ApiFormat;
use memchr::memmem;
use serde::Deserialize;

/// Tokens one exchange consumed, as the upstream reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenUsage {
    /// Prompt (input) tokens, cached ones included.
    pub input: u64,
    /// Generated (output) tokens, reasoning included.
    pub output: u64,
}

impl TokenUsage {
    /// Input plus output, the figure limits and budgets count.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The usage a whole (non-streamed) upstream response body reports, `None` when it reports none
/// (an error body, an endpoint without usage, invalid JSON).
#[must_use]
pub fn usage_in_body(format: ApiFormat, body: &[u8]) -> Option<TokenUsage> {
    memmem::find(body, b"usage")?;
    match format {
        ApiFormat::OpenaiCompatible => serde_json::from_slice::<OpenaiEvent>(body).ok()?.usage(),
        ApiFormat::AnthropicNative => {
            let event = serde_json::from_slice::<AnthropicEvent>(body).ok()?;
            let usage = event.usage.or(event.message.and_then(|m| m.usage))?;
            let input = usage.input();
            match (input, usage.output_tokens) {
                (None, None) => None,
                (input, output) => Some(TokenUsage {
                    input: input.unwrap_or(0),
                    output: output.unwrap_or(0),
                }),
            }
        }
        ApiFormat::GeminiNative => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                // `streamGenerateContent` without `alt=sse`: the running totals of the last
                // element that carries them.
                serde_json::from_slice::<Vec<GeminiEvent>>(body)
                    .ok()?
                    .into_iter()
                    .rev()
                    .find_map(GeminiEvent::usage)
            } else {
                serde_json::from_slice::<GeminiEvent>(body).ok()?.usage()
            }
        }
    }
}

/// The usage of one upstream stream, fed one SSE event's `data` payload at a time.
#[derive(Debug, Clone)]
pub struct StreamUsage {
    format: ApiFormat,
    input: Option<u64>,
    output: Option<u64>,
}

impl StreamUsage {
    /// Usage tracking for a stream in the upstream format `format`.
    #[must_use]
    pub fn new(format: ApiFormat) -> Self {
        Self {
            format,
            input: None,
            output: None,
        }
    }

    /// Reads one SSE event's `data` payload (events without usage cost a substring search).
    pub fn observe_event(&mut self, data: &[u8]) {
        if memmem::find(data, b"usage").is_none() {
            return;
        }
        match self.format {
            ApiFormat::OpenaiCompatible => {
                if let Some(usage) = serde_json::from_slice::<OpenaiEvent>(data)
                    .ok()
                    .and_then(|e| e.usage())
                {
                    self.input = Some(usage.input);
                    self.output = Some(usage.output);
                }
            }
            ApiFormat::AnthropicNative => {
                let Ok(event) = serde_json::from_slice::<AnthropicEvent>(data) else {
                    return;
                };
                // `message_start` carries it under `message`, `message_delta` at the top level;
                // both hold running totals, so a later figure replaces an earlier one.
                let Some(usage) = event.usage.or(event.message.and_then(|m| m.usage)) else {
                    return;
                };
                if let Some(input) = usage.input() {
                    self.input = Some(input);
                }
                if let Some(output) = usage.output_tokens {
                    self.output = Some(output);
                }
            }
            ApiFormat::GeminiNative => {
                if let Some(usage) = serde_json::from_slice::<GeminiEvent>(data)
                    .ok()
                    .and_then(GeminiEvent::usage)
                {
                    self.input = Some(usage.input);
                    self.output = Some(usage.output);
                }
            }
        }
    }

    /// The usage seen so far, `None` when no event reported any.
    #[must_use]
    pub fn usage(&self) -> Option<TokenUsage> {
        match (self.input, self.output) {
            (None, None) => None,
            (input, output) => Some(TokenUsage {
                input: input.unwrap_or(0),
                output: output.unwrap_or(0),
            }),
        }
    }
}

#[derive(Deserialize)]
struct OpenaiEvent {
    #[serde(default)]
    usage: Option<OpenaiUsage>,
    /// The Responses API's stream events wrap the response object.
    #[serde(default)]
    response: Option<OpenaiResponse>,
}

#[derive(Deserialize)]
struct OpenaiResponse {
    #[serde(default)]
    usage: Option<OpenaiUsage>,
}

#[derive(Deserialize)]
struct OpenaiUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl OpenaiEvent {
    fn usage(self) -> Option<TokenUsage> {
        let usage = self.usage.or(self.response.and_then(|r| r.usage))?;
        let input = usage.prompt_tokens.or(usage.input_tokens);
        let output = usage.completion_tokens.or(usage.output_tokens);
        match (input, output) {
            (None, None) => None,
            (input, output) => Some(TokenUsage {
                input: input.unwrap_or(0),
                output: output.unwrap_or(0),
            }),
        }
    }
}

#[derive(Deserialize)]
struct AnthropicEvent {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(default)]
    message: Option<AnthropicMessage>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl AnthropicUsage {
    fn input(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        if parts.iter().all(Option::is_none) {
            return None;
        }
        Some(
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b)),
        )
    }
}

#[derive(Deserialize)]
struct GeminiEvent {
    #[serde(default, rename = "usageMetadata")]
    usage_metadata: Option<GeminiUsage>,
}

#[derive(Deserialize)]
struct GeminiUsage {
    #[serde(default, rename = "promptTokenCount")]
    prompt: Option<u64>,
    #[serde(default, rename = "candidatesTokenCount")]
    candidates: Option<u64>,
    #[serde(default, rename = "thoughtsTokenCount")]
    thoughts: Option<u64>,
}

impl GeminiEvent {
    fn usage(self) -> Option<TokenUsage> {
        let usage = self.usage_metadata?;
        if usage.prompt.is_none() && usage.candidates.is_none() && usage.thoughts.is_none() {
            return None;
        }
        Some(TokenUsage {
            input: usage.prompt.unwrap_or(0),
            output: usage
                .candidates
                .unwrap_or(0)
                .saturating_add(usage.thoughts.unwrap_or(0)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SseParser;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Runs a whole SSE transcript through the parser and a [`StreamUsage`], in small chunks.
    fn stream_usage(format: ApiFormat, transcript: &[u8]) -> Option<TokenUsage> {
        let mut parser = SseParser::new();
        let mut usage = StreamUsage::new(format);
        for chunk in transcript.chunks(7) {
            parser
                .feed(chunk, |event| usage.observe_event(event.data.as_bytes()))
                .unwrap();
        }
        parser.finish();
        while let Ok(Some(event)) = parser.next_event() {
            usage.observe_event(event.data.as_bytes());
        }
        usage.usage()
    }

    fn tokens(input: u64, output: u64) -> Option<TokenUsage> {
        Some(TokenUsage { input, output })
    }

    #[test]
    fn openai_chat_body_reports_prompt_and_completion_tokens() {
        let body = fixture("convert/openai_chat_response.json");
        let usage = usage_in_body(ApiFormat::OpenaiCompatible, &body).unwrap();
        assert!(usage.input > 0 && usage.output > 0, "{usage:?}");
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}"#;
        assert_eq!(
            usage_in_body(ApiFormat::OpenaiCompatible, body),
            tokens(12, 9)
        );
    }

    #[test]
    fn openai_responses_body_reports_input_and_output_tokens() {
        let body = br#"{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":10,"output_tokens":3,"total_tokens":13}}"#;
        assert_eq!(
            usage_in_body(ApiFormat::OpenaiCompatible, body),
            tokens(10, 3)
        );
        let body = fixture("convert/openai_responses_response.json");
        assert!(usage_in_body(ApiFormat::OpenaiCompatible, &body).is_some());
    }

    #[test]
    fn bodies_without_usage_report_none() {
        for format in [
            ApiFormat::OpenaiCompatible,
            ApiFormat::AnthropicNative,
            ApiFormat::GeminiNative,
        ] {
            assert_eq!(usage_in_body(format, br#"{"data":[{"id":"m"}]}"#), None);
            assert_eq!(usage_in_body(format, br#"{"usage":null}"#), None);
            assert_eq!(usage_in_body(format, b"not json with usage"), None);
            assert_eq!(usage_in_body(format, b""), None);
        }
    }

    #[test]
    fn openai_chat_stream_takes_the_final_usage_chunk() {
        let transcript = fixture("openai_chat_stream.sse");
        assert_eq!(
            stream_usage(ApiFormat::OpenaiCompatible, &transcript),
            tokens(12, 9)
        );
    }

    #[test]
    fn openai_chat_stream_without_include_usage_reports_none() {
        let transcript = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: [DONE]\n\n";
        assert_eq!(stream_usage(ApiFormat::OpenaiCompatible, transcript), None);
    }

    #[test]
    fn openai_responses_stream_reads_the_completed_response() {
        let transcript = fixture("openai_responses_stream.sse");
        assert_eq!(
            stream_usage(ApiFormat::OpenaiCompatible, &transcript),
            tokens(10, 3)
        );
    }

    #[test]
    fn anthropic_body_adds_cache_tokens_to_the_input() {
        let body = br#"{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":54,"cache_creation_input_tokens":2,"cache_read_input_tokens":128,"output_tokens":58}}"#;
        assert_eq!(
            usage_in_body(ApiFormat::AnthropicNative, body),
            tokens(184, 58)
        );
        let body = fixture("convert/anthropic_messages_response.json");
        assert!(usage_in_body(ApiFormat::AnthropicNative, &body).is_some());
    }

    #[test]
    fn anthropic_stream_joins_message_start_input_and_message_delta_output() {
        let transcript = fixture("anthropic_messages_stream.sse");
        assert_eq!(
            stream_usage(ApiFormat::AnthropicNative, &transcript),
            tokens(25, 15)
        );
        let transcript = fixture("convert/anthropic_messages_stream_tools.sse");
        assert_eq!(
            stream_usage(ApiFormat::AnthropicNative, &transcript),
            tokens(182, 58)
        );
    }

    #[test]
    fn gemini_body_counts_thoughts_as_output() {
        let body = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":182,"candidatesTokenCount":50,"thoughtsTokenCount":8,"totalTokenCount":240}}"#;
        assert_eq!(
            usage_in_body(ApiFormat::GeminiNative, body),
            tokens(182, 58)
        );
        let body = fixture("convert/gemini_generate_response.json");
        assert!(usage_in_body(ApiFormat::GeminiNative, &body).is_some());
    }

    #[test]
    fn gemini_json_array_stream_takes_the_last_totals() {
        let body =
            br#"[{"candidates":[],"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}},
            {"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":12}}]"#;
        assert_eq!(usage_in_body(ApiFormat::GeminiNative, body), tokens(8, 12));
    }

    #[test]
    fn gemini_stream_last_event_wins() {
        let transcript = fixture("gemini_stream.sse");
        assert_eq!(
            stream_usage(ApiFormat::GeminiNative, &transcript),
            tokens(8, 12)
        );
        let transcript = fixture("convert/gemini_stream_tools.sse");
        assert_eq!(
            stream_usage(ApiFormat::GeminiNative, &transcript),
            tokens(182, 58)
        );
    }

    #[test]
    fn total_saturates() {
        let usage = TokenUsage {
            input: u64::MAX,
            output: 1,
        };
        assert_eq!(usage.total(), u64::MAX);
    }
}
