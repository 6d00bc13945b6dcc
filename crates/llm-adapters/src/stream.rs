//! Stream detection: whether a client request asks for a streamed response (decided per client
//! format, without parsing bodies that cannot say so) and whether an upstream response is SSE
//! (decided by its content type), so the server knows when to pass chunks through unbuffered.

use crate::{ClientFormat, anthropic, gemini, openai};

/// The SSE media type.
pub const EVENT_STREAM: &str = "text/event-stream";

/// Whether the client asked for a stream: OpenAI and Anthropic formats by a top-level
/// `"stream": true` in the JSON body (parsed only when it contains `"stream"`), Gemini by an
/// action naming `:streamGenerateContent`. `action` is the path after `/llm/{slug}/`.
pub fn is_streaming_request(client: ClientFormat, action: &str, body: &[u8]) -> bool {
    match client {
        ClientFormat::Openai | ClientFormat::OpenaiResponses => openai::is_streaming_request(body),
        ClientFormat::Anthropic => anthropic::is_streaming_request(body),
        ClientFormat::Gemini => gemini::is_streaming_request(action),
    }
}

/// Whether a `Content-Type` value is `text/event-stream` (any case, parameters ignored).
pub fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(EVENT_STREAM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_flag_decides_for_openai_and_anthropic() {
        let streaming = br#"{"model":"m","stream":true}"#;
        for client in [
            ClientFormat::Openai,
            ClientFormat::OpenaiResponses,
            ClientFormat::Anthropic,
        ] {
            assert!(is_streaming_request(
                client,
                "v1/chat/completions",
                streaming
            ));
            assert!(!is_streaming_request(client, "v1/chat/completions", b"{}"));
            assert!(!is_streaming_request(
                client,
                "x:streamGenerateContent",
                b"{}"
            ));
        }
    }

    #[test]
    fn action_decides_for_gemini() {
        assert!(is_streaming_request(
            ClientFormat::Gemini,
            "v1beta/models/gemini-2.5-pro:streamGenerateContent",
            b"{}"
        ));
        assert!(!is_streaming_request(
            ClientFormat::Gemini,
            "v1beta/models/gemini-2.5-pro:generateContent",
            br#"{"stream":true}"#
        ));
    }

    #[test]
    fn event_stream_content_types() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("text/event-stream; charset=utf-8"));
        assert!(is_event_stream(" Text/Event-Stream ;charset=UTF-8"));
        assert!(!is_event_stream("application/json"));
        assert!(!is_event_stream("text/event-streams"));
        assert!(!is_event_stream(""));
    }
}
