//! The pure, per-format rules of the LLM proxy (SPEC §2 "LLM proxy", §3): where each client SDK
//! sends its proxy key and how to strip it, how the upstream key is injected for each upstream
//! format (or a config's override), how target URLs are joined, which requests and responses
//! stream, an incremental SSE parser and encoder, the error bodies and in-band stream error
//! events the proxy itself emits in each client format, and the cheap request that probes a key.
//!
//! **Architecture invariant:** this crate does no I/O and knows no HTTP framework or runtime.
//! Headers come in as a lookup closure (`Fn(&str) -> Option<&str>`, lower-case names, the
//! caller handles case-insensitivity) and go out as owned `(name, value)` edits, so the server
//! (actix-web/awc) and any other caller can use it unchanged.
//!
//! **Architecture invariant:** every provider's wire rules live in its own module
//! ([`openai`], [`anthropic`], [`gemini`], and for conversion one module per format under
//! [`convert`]); the shared modules only dispatch on [`ClientFormat`] or [`domain::ApiFormat`].
//!
//! Hot-path rules followed throughout: a body is parsed only after a cheap substring check says
//! it can contain what we look for, results borrow from the inputs where they can (`Cow`), and
//! the SSE parser and encoder reuse their buffers.
//!
//! A typical LLM request, in order: [`authenticate`] (find and remove the client's proxy key),
//! drop client headers with [`forward_llm_request_header`], [`prepare_llm_request`] (URL rule,
//! query clean-up and key injection), [`is_streaming_request`] / [`is_event_stream`], and, when
//! something breaks, [`error_body`] or [`stream_error_event`]. When the config's client format
//! differs from its upstream format, [`Conversion`] converts the request, the response and the
//! stream in between (see [`convert`]).

pub mod anthropic;
pub mod auth;
pub mod convert;
pub mod errors;
pub mod format;
pub mod gemini;
pub mod headers;
pub mod inject;
mod json;
pub mod openai;
pub mod probe;
pub mod query;
pub mod sse;
pub mod stream;
pub mod upstream;
pub mod url;
pub mod usage;

pub use auth::{
    BodyApiKey, BodyKeyError, ClientAuth, ClientKey, KeySource, authenticate, bearer_token,
    client_key, take_body_api_key,
};
pub use convert::{
    ClientStream, Conversion, ConvertError, ConvertedRequest, ConvertedResponse, StreamConverter,
    StreamFraming,
};
pub use errors::{ERROR_CONTENT_TYPE, ProxyError, error_body, stream_error_event};
pub use format::{ClientFormat, NoClientFormat};
pub use headers::{
    PROXY_KEY_HEADER, forward_generic_request_header, forward_llm_request_header,
    forward_response_header, is_client_credential, is_hop_by_hop, listed_in_connection,
};
pub use inject::{HeaderEdit, KeyInjection, QueryParam, inject_at, inject_key};
pub use probe::{Probe, ProbeRequest, probe, probe_request};
pub use query::{append_query_param, query_param, remove_query_param, strip_key_param};
pub use sse::{OwnedSseEvent, SseEncoder, SseError, SseEvent, SseParser, write_event};
pub use stream::{is_event_stream, is_streaming_request};
pub use upstream::{UpstreamRequest, prepare_llm_request, upstream_query};
pub use url::{UrlError, join_url, llm_url};
pub use usage::{StreamUsage, TokenUsage, usage_in_body};
