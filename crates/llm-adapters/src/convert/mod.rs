//! Format conversion (SPEC §2 "LLM proxy"): when a config's clients speak another format than
//! its upstream, requests, responses, errors and streams are converted through one neutral
//! model ([`neutral`]). Each wire format (OpenAI Chat Completions, OpenAI Responses, Anthropic
//! Messages, Gemini) has one module with its wire types, decoding into and encoding from the
//! neutral model; the registry pairs a client codec with an upstream codec, so no function is
//! written per pair of formats.
//!
//! The server's call sequence for one converted request (after [`crate::authenticate`]):
//! 1. [`Conversion::lookup`]`(client, upstream)`: `None` means same format, pass through.
//! 2. [`Conversion::request`]`(action, query, body)` → [`ConvertedRequest`]; on
//!    [`ConvertError`] answer [`ConvertError::status`] with [`crate::error_body`].
//! 3. [`crate::prepare_llm_request`] with the converted `action` and `query`; forward the
//!    client headers [`Conversion::forward_request_header`] keeps, send the converted `body`
//!    with `Content-Type: application/json`.
//! 4. A non-2xx or non-SSE upstream response: [`Conversion::response`]`(status, body)` →
//!    [`ConvertedResponse`] with the status, body and content type to answer with.
//! 5. A 2xx SSE upstream response: [`ConvertedRequest::stream_converter`], answer with
//!    [`ConvertedRequest::content_type`], then [`StreamConverter::push`] every upstream chunk
//!    (send what it returns at once; it may be empty) and [`StreamConverter::finish`] at the
//!    clean end. If the upstream connection breaks, send [`crate::stream_error_event`]
//!    instead of calling `finish`.
//!
//! **Architecture invariant:** wire types never leave their provider module; everything
//! between modules is the neutral model.
//!
//! What cannot be expressed on the other side is dropped, never invented: reasoning/thinking
//! content, server-side tools, audio and documents, Anthropic's `is_error` on tool results
//! outside Anthropic, stop sequences on OpenAI Responses.
//!
//! **Architecture invariant:** every request an encoder writes is one its provider accepts.
//! Blank text (which agent frameworks send beside tool calls) is left out where the provider
//! refuses it, and a conversation whose tool calls and results do not pair up, or that has
//! nothing left to send, is refused with a 400 [`ConvertError`] before it reaches the upstream.
//! The tests check every encoder against a validator per provider (`tests/support/validate.rs`).
//!
//! Client streams are shaped like the client's real provider: OpenAI's separate usage chunk
//! only when `stream_options.include_usage` was asked ([`ClientStream`] carries the request's
//! facts), Anthropic's input tokens in `message_start` when the upstream told them before the
//! first content and in `message_delta` otherwise, Responses ids with `resp_`.

mod anthropic;
mod error;
mod gemini;
pub mod neutral;
mod openai_chat;
mod openai_responses;
mod registry;
mod stream;

pub use anthropic::DEFAULT_MAX_TOKENS;
pub use error::{ConvertError, MalformedResponse};
pub use registry::{Conversion, ConvertedRequest, ConvertedResponse};
pub use stream::{ClientStream, StreamConverter, StreamFraming};
