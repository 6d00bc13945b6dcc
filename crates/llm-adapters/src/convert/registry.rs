//! The registry of format codecs and the [`Conversion`] the server uses. Each wire format has
//! one codec (request, response, error and stream decoder and encoder, all through the
//! [neutral model](super::neutral)); a conversion is the pair (client codec, upstream codec)
//! looked up by format, so every client format works with every upstream format without a
//! function per pair: a request is decoded by the client codec and encoded by the upstream
//! codec, a response the other way round.

use serde::Deserialize;
use serde_json::Value;

use super::{
    ConvertError, MalformedResponse,
    anthropic::AnthropicCodec,
    gemini::GeminiCodec,
    neutral::{ChatRequest, ChatResponse, ErrorInfo},
    openai_chat::OpenaiChatCodec,
    openai_responses::OpenaiResponsesCodec,
    stream::{ClientStream, StreamConverter, StreamDecoder, StreamEncoder, StreamFraming},
};
use crate::{ClientFormat, ProxyError, forward_llm_request_header, query};

/// The content type of every converted body.
const JSON: &str = "application/json";

/// A request decoded from a client: the neutral request and how the client wants a stream.
pub(crate) struct DecodedRequest {
    pub(crate) request: ChatRequest,
    pub(crate) framing: StreamFraming,
    /// OpenAI Chat Completions' `stream_options.include_usage` (false in other formats, whose
    /// streams always carry usage).
    pub(crate) include_usage: bool,
}

/// A request encoded for an upstream: its action, the query parameters it needs, its body.
pub(crate) struct EncodedRequest {
    pub(crate) action: String,
    pub(crate) params: Vec<(&'static str, &'static str)>,
    pub(crate) body: Vec<u8>,
}

/// One wire format's decoders and encoders. Implementations are unit structs in the provider
/// modules; [`codec`] is the registry.
pub(crate) trait Codec: Sync {
    /// Decodes a client request. `action` is the path after `/llm/{slug}/`, `query` the raw
    /// query string (Gemini reads its model and stream method from them).
    fn decode_request(
        &self,
        action: &str,
        query: &str,
        body: &[u8],
    ) -> Result<DecodedRequest, ConvertError>;

    /// Query parameters of this format's clients that must not reach another format's upstream.
    fn client_params(&self) -> &'static [&'static str] {
        &[]
    }

    /// Encodes a request for an upstream of this format.
    fn encode_request(&self, request: &ChatRequest) -> Result<EncodedRequest, ConvertError>;

    /// Decodes a successful upstream response body.
    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, MalformedResponse>;

    /// Encodes a response for a client of this format.
    fn encode_response(&self, response: &ChatResponse) -> Vec<u8>;

    /// A stateful decoder of this format's upstream stream.
    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;

    /// A stateful encoder of this format's client stream, shaped as `client` asked.
    fn stream_encoder(&self, client: &ClientStream) -> Box<dyn StreamEncoder>;
}

/// The registry: the codec of each wire format.
pub(crate) fn codec(format: ClientFormat) -> &'static dyn Codec {
    match format {
        ClientFormat::Openai => &OpenaiChatCodec,
        ClientFormat::OpenaiResponses => &OpenaiResponsesCodec,
        ClientFormat::Anthropic => &AnthropicCodec,
        ClientFormat::Gemini => &GeminiCodec,
    }
}

/// How to convert between a config's client format and its upstream format. `Copy` and
/// cheap: look it up per request.
///
/// Here [`ClientFormat`] names a wire format on either side (OpenAI Chat Completions, OpenAI
/// Responses, Anthropic Messages, Gemini); a [`domain::ApiFormat`] upstream maps to its native
/// format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conversion {
    client: ClientFormat,
    upstream: ClientFormat,
}

/// A client request converted for the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedRequest {
    /// The upstream action (path after the base URL), e.g. `v1/messages` or
    /// `v1beta/models/gemini-2.5-flash:streamGenerateContent`.
    pub action: String,
    /// The upstream query string without `?`: the client's, minus the client format's own
    /// parameters (Gemini's `key` and `alt`), plus what the upstream needs (`alt=sse`). Give it
    /// to [`crate::prepare_llm_request`], which injects the key.
    pub query: String,
    /// The upstream JSON body (send with `Content-Type: application/json`).
    pub body: Vec<u8>,
    /// Whether the client asked for a stream (and the upstream was asked for one).
    pub stream: bool,
    /// How the client wants the stream framed.
    pub framing: StreamFraming,
    /// What else the client asked of the stream (usage, the model it named).
    client_stream: ClientStream,
    conversion: Conversion,
}

impl ConvertedRequest {
    /// The stream converter for this request's response, shaped as the client asked (framing,
    /// OpenAI's `stream_options.include_usage`, the requested model as a fallback name).
    pub fn stream_converter(&self) -> StreamConverter {
        self.conversion.stream_for(&self.client_stream)
    }

    /// The content type to answer the client with: the stream's when streaming, JSON otherwise.
    pub fn content_type(&self) -> &'static str {
        if self.stream {
            self.framing.content_type()
        } else {
            JSON
        }
    }
}

/// An upstream response body converted for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedResponse {
    /// The status to answer with: the upstream's, except 502 when a 2xx body is unreadable.
    pub status: u16,
    /// The body in the client's format.
    pub body: Vec<u8>,
    /// Its content type (always JSON).
    pub content_type: &'static str,
}

impl Conversion {
    /// The conversion for a config whose clients speak `client` and whose upstream speaks
    /// `upstream`; `None` when they are the same format (pass everything through untouched).
    /// An OpenAI Responses client on an OpenAI-compatible upstream is converted to Chat
    /// Completions, which every OpenAI-compatible server speaks.
    pub fn lookup(client: ClientFormat, upstream: domain::ApiFormat) -> Option<Conversion> {
        Conversion::between(client, ClientFormat::native(upstream))
    }

    /// The conversion between any two wire formats (`None` when equal), including OpenAI
    /// Responses as the upstream side, which no [`domain::ApiFormat`] names.
    pub fn between(client: ClientFormat, upstream: ClientFormat) -> Option<Conversion> {
        (client != upstream).then_some(Conversion { client, upstream })
    }

    /// The client's format.
    pub fn client(&self) -> ClientFormat {
        self.client
    }

    /// The upstream's format.
    pub fn upstream(&self) -> ClientFormat {
        self.upstream
    }

    /// Converts a client request. `action` is the path after `/llm/{slug}/`, `query` the raw
    /// query string without `?`, `body` the request body (after
    /// [`crate::authenticate`] removed any body credential).
    ///
    /// # Errors
    /// [`ConvertError`] when the action is not the client format's chat endpoint, the body is
    /// not a valid request, or the upstream cannot express it; answer with
    /// [`ConvertError::status`] and [`crate::error_body`].
    pub fn request(
        &self,
        action: &str,
        query: &str,
        body: &[u8],
    ) -> Result<ConvertedRequest, ConvertError> {
        let decoded = codec(self.client).decode_request(action, query, body)?;
        let client_stream = ClientStream {
            framing: decoded.framing,
            include_usage: decoded.include_usage,
            model: decoded.request.model.clone(),
        };
        self.encode(decoded.request, query, client_stream)
    }

    /// Encodes a neutral request for the upstream, as [`Conversion::request`] does after
    /// decoding the client's body: tool calls are linked to their results and their pairing
    /// checked, then the upstream codec writes the body. `query` is the client's raw query
    /// string. Public so the encoders can be exercised with any neutral conversation.
    ///
    /// # Errors
    /// [`ConvertError`] when tool calls and results do not pair up, nothing of the conversation
    /// is left that the upstream accepts, or the upstream cannot express the request.
    pub fn encode(
        &self,
        mut request: ChatRequest,
        query: &str,
        client_stream: ClientStream,
    ) -> Result<ConvertedRequest, ConvertError> {
        request.link_tool_calls();
        request.check_tool_pairing()?;
        let encoded = codec(self.upstream).encode_request(&request)?;
        let mut upstream_query = query.to_owned();
        for name in codec(self.client).client_params() {
            upstream_query = query::remove_query_param(&upstream_query, name).into_owned();
        }
        for (name, value) in &encoded.params {
            upstream_query = query::remove_query_param(&upstream_query, name).into_owned();
            upstream_query = query::append_query_param(&upstream_query, name, value);
        }
        Ok(ConvertedRequest {
            action: encoded.action,
            query: upstream_query,
            body: encoded.body,
            stream: request.stream,
            framing: client_stream.framing,
            client_stream,
            conversion: *self,
        })
    }

    /// Converts a complete (non-streamed) upstream response: a 2xx body into the client's
    /// response shape, any other status's body into the client's error shape (same status).
    /// A 2xx body that cannot be read becomes a 502 error in the client's shape.
    pub fn response(&self, status: u16, body: &[u8]) -> ConvertedResponse {
        if (200..300).contains(&status) {
            match codec(self.upstream).decode_response(body) {
                Ok(response) => ConvertedResponse {
                    status,
                    body: codec(self.client).encode_response(&response),
                    content_type: JSON,
                },
                Err(detail) => self.error_response(&ErrorInfo::new(
                    502,
                    "upstream_malformed_response",
                    format!("the upstream sent a malformed response: {detail}"),
                )),
            }
        } else {
            self.error_response(&decode_error(status, body))
        }
    }

    /// A stream converter for an SSE upstream response, answering the client with SSE and
    /// usage ([`ClientStream::default`]). A converted request's
    /// [`ConvertedRequest::stream_converter`] follows what the client asked instead.
    pub fn stream(&self) -> StreamConverter {
        self.stream_for(&ClientStream::default())
    }

    /// A stream converter answering the client with `framing` (and usage).
    pub fn stream_with(&self, framing: StreamFraming) -> StreamConverter {
        self.stream_for(&ClientStream {
            framing,
            ..ClientStream::default()
        })
    }

    /// A stream converter shaping the client stream as `client` says.
    pub fn stream_for(&self, client: &ClientStream) -> StreamConverter {
        StreamConverter::new(
            codec(self.upstream).stream_decoder(),
            codec(self.client).stream_encoder(client),
        )
    }

    /// The content type of the client's response: SSE for streams, JSON otherwise.
    pub fn content_type(&self, stream: bool) -> &'static str {
        if stream {
            StreamFraming::Sse.content_type()
        } else {
            JSON
        }
    }

    /// Whether a client request header is forwarded on a converted request:
    /// [`crate::forward_llm_request_header`] for the client format, minus what described the
    /// client's body or API: `content-length` and `content-type` (the body is re-encoded: send
    /// `Content-Type: application/json` and its new length), `accept-encoding` (the converters
    /// read the upstream's bytes, so the upstream must answer uncompressed), and the client
    /// format's own API headers (`openai-*`, `anthropic-*`, `x-goog-*`), which mean nothing to
    /// another provider. Names are compared case-insensitively.
    pub fn forward_request_header(&self, name: &str, connection: Option<&str>) -> bool {
        let lower = name.to_ascii_lowercase();
        let own_api_prefix = match self.client {
            ClientFormat::Openai | ClientFormat::OpenaiResponses => "openai-",
            ClientFormat::Anthropic => "anthropic-",
            ClientFormat::Gemini => "x-goog-",
        };
        forward_llm_request_header(&lower, self.client, connection)
            && !matches!(
                lower.as_str(),
                "content-length" | "content-type" | "accept-encoding"
            )
            && !lower.starts_with(own_api_prefix)
    }

    fn error_response(&self, error: &ErrorInfo) -> ConvertedResponse {
        ConvertedResponse {
            status: error.status,
            body: crate::error_body(
                self.client,
                &ProxyError::new(error.status, &error.code, &error.message),
            ),
            content_type: JSON,
        }
    }
}

/// Reads an upstream error body in any format's shape: OpenAI `{"error":{"message","type",
/// "code"}}`, Anthropic `{"type":"error","error":{"type","message"}}`, Google
/// `{"error":{"code","message","status"}}` (also wrapped in an array), or plain text.
pub(crate) fn decode_error(status: u16, body: &[u8]) -> ErrorInfo {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<Detail>,
        message: Option<String>,
    }
    #[derive(Deserialize)]
    struct Detail {
        message: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        status: Option<String>,
        code: Option<Value>,
    }
    let parsed = serde_json::from_slice::<Envelope>(body).ok().or_else(|| {
        serde_json::from_slice::<Vec<Envelope>>(body)
            .ok()
            .and_then(|list| list.into_iter().next())
    });
    let fallback_code = || {
        match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            _ => "upstream_error",
        }
        .to_owned()
    };
    match parsed {
        Some(Envelope {
            error: Some(detail),
            ..
        }) => {
            let code = match detail.code {
                Some(Value::String(code)) if !code.is_empty() => Some(code),
                _ => None,
            };
            ErrorInfo::new(
                status,
                code.or(detail.kind)
                    .or(detail.status)
                    .unwrap_or_else(fallback_code),
                detail.message.unwrap_or_default(),
            )
        }
        Some(Envelope {
            message: Some(message),
            ..
        }) => ErrorInfo::new(status, fallback_code(), message),
        _ => {
            let text = String::from_utf8_lossy(body);
            let mut message: String = text.trim().chars().take(2000).collect();
            if message.is_empty() {
                message = format!("the upstream answered {status} with no error message");
            }
            ErrorInfo::new(status, fallback_code(), message)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use domain::ApiFormat;

    #[test]
    fn same_format_is_passthrough() {
        assert_eq!(
            Conversion::lookup(ClientFormat::Openai, ApiFormat::OpenaiCompatible),
            None
        );
        assert_eq!(
            Conversion::lookup(ClientFormat::Anthropic, ApiFormat::AnthropicNative),
            None
        );
        assert_eq!(
            Conversion::lookup(ClientFormat::Gemini, ApiFormat::GeminiNative),
            None
        );
    }

    #[test]
    fn every_other_pair_converts() {
        let clients = [
            ClientFormat::Openai,
            ClientFormat::OpenaiResponses,
            ClientFormat::Anthropic,
            ClientFormat::Gemini,
        ];
        let upstreams = [
            ApiFormat::OpenaiCompatible,
            ApiFormat::AnthropicNative,
            ApiFormat::GeminiNative,
        ];
        let count = clients
            .iter()
            .flat_map(|c| upstreams.iter().map(move |u| (*c, *u)))
            .filter_map(|(c, u)| Conversion::lookup(c, u))
            .count();
        assert_eq!(count, 9);
        let responses =
            Conversion::lookup(ClientFormat::OpenaiResponses, ApiFormat::OpenaiCompatible).unwrap();
        assert_eq!(responses.upstream(), ClientFormat::Openai);
    }

    #[test]
    fn body_and_client_api_headers_are_not_forwarded() {
        let conversion =
            Conversion::between(ClientFormat::Anthropic, ClientFormat::Openai).unwrap();
        for dropped in [
            "Content-Length",
            "content-type",
            "Accept-Encoding",
            "anthropic-version",
            "anthropic-beta",
            "x-api-key",
            "connection",
        ] {
            assert!(
                !conversion.forward_request_header(dropped, None),
                "{dropped}"
            );
        }
        for kept in [
            "user-agent",
            "accept",
            "x-request-id",
            "openai-organization",
        ] {
            assert!(conversion.forward_request_header(kept, None), "{kept}");
        }
    }

    #[test]
    fn error_shapes_are_read() {
        let openai = decode_error(
            429,
            br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(
            openai,
            ErrorInfo::new(429, "rate_limit_exceeded", "Rate limit reached")
        );
        let anthropic = decode_error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(
            anthropic,
            ErrorInfo::new(529, "overloaded_error", "Overloaded")
        );
        let gemini = decode_error(
            400,
            br#"[{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}]"#,
        );
        assert_eq!(
            gemini,
            ErrorInfo::new(400, "INVALID_ARGUMENT", "API key not valid.")
        );
        let text = decode_error(502, b"<html>Bad gateway</html>");
        assert_eq!(text.message, "<html>Bad gateway</html>");
        assert_eq!(decode_error(500, b"").code, "upstream_error");
    }
}
