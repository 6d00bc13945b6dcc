//! Gemini's wire rules: clients authenticate with `x-goog-api-key` (the SDK's way) or the
//! `?key=` query parameter (REST and older clients), upstream keys go in `x-goog-api-key`, a
//! key is probed with `GET v1beta/models`, a request streams when its action is
//! `...:streamGenerateContent`, and the proxy's own errors use Google's
//! `{"error":{"code":...,"message":...,"status":...}}` shape, in bodies and as a data event.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

use crate::{ClientKey, KeyInjection, KeySource, ProxyError, auth, query, sse::SseEncoder};

/// The headers Gemini clients send the key in.
pub const CLIENT_CREDENTIAL_HEADERS: &[&str] = &["x-goog-api-key"];

/// The header the key travels in.
pub const API_KEY_HEADER: &str = "x-goog-api-key";

/// The query parameter some clients send the key in; stripped before forwarding.
pub const KEY_PARAM: &str = query::GEMINI_KEY_PARAM;

/// The action of the key probe (the base URL is the host).
pub const PROBE_ACTION: &str = "v1beta/models";

/// The method suffix of streaming calls (`models/{model}:streamGenerateContent`).
pub const STREAM_METHOD: &str = ":streamGenerateContent";

/// The key from `x-goog-api-key`, else from the `key` query parameter (percent-decoded).
/// `query` is the raw query string without `?`.
pub fn client_key<'a>(
    headers: impl Fn(&str) -> Option<&'a str>,
    query: &'a str,
) -> Option<ClientKey<'a>> {
    if let Some(key) = headers(API_KEY_HEADER).and_then(auth::non_empty) {
        return Some(ClientKey {
            key: Cow::Borrowed(key),
            source: KeySource::XGoogApiKey,
        });
    }
    query::query_param(query, KEY_PARAM)
        .filter(|key| !key.trim().is_empty())
        .map(|key| ClientKey {
            key,
            source: KeySource::QueryKey,
        })
}

/// The upstream injection: `x-goog-api-key: <key>`.
pub fn upstream_key(key: &str) -> KeyInjection<'_> {
    KeyInjection::header(API_KEY_HEADER, key)
}

/// Whether a Gemini call streams: its action names the `streamGenerateContent` method. The
/// response is SSE with `?alt=sse` (what the SDKs send) and a streamed JSON array without it,
/// so decide SSE handling from the response's content type.
pub fn is_streaming_request(action: &str) -> bool {
    action.contains(STREAM_METHOD)
}

/// Google's canonical status name for an HTTP status the proxy answers with.
pub fn status_name(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        405..=499 => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
}

fn envelope<'a>(error: &ProxyError<'a>) -> Envelope<'a> {
    Envelope {
        error: Detail {
            code: error.status,
            message: error.message,
            status: status_name(error.status),
        },
    }
}

/// A JSON error body in Google's shape: `{"error":{"code":502,"message":...,"status":...}}`.
pub fn error_body(error: &ProxyError<'_>) -> Vec<u8> {
    crate::errors::to_json(&envelope(error))
}

/// The in-band error event for a stream that broke after the response was committed:
/// `data: {"error":{"code":502,"message":...,"status":"UNAVAILABLE"}}` (the status follows
/// the error's HTTP status; the server passes 502 for a broken upstream).
pub fn stream_error_event(error: &ProxyError<'_>) -> Bytes {
    SseEncoder::new().json_frame(None, &envelope(error))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::auth::tests::lookup;
    use serde_json::{Value, json};

    #[test]
    fn header_is_the_first_source() {
        let headers = [("x-goog-api-key", "proxy-g")];
        let key = client_key(lookup(&headers), "key=other").unwrap();
        assert_eq!(
            (key.key.as_ref(), key.source),
            ("proxy-g", KeySource::XGoogApiKey)
        );
    }

    #[test]
    fn query_key_is_the_fallback_and_is_decoded() {
        let key = client_key(lookup(&[]), "alt=sse&key=proxy%2Dg%2B1").unwrap();
        assert_eq!(
            (key.key.as_ref(), key.source),
            ("proxy-g+1", KeySource::QueryKey)
        );
    }

    #[test]
    fn plain_query_key_is_borrowed() {
        let key = client_key(lookup(&[]), "key=AIzaPlain").unwrap();
        assert!(matches!(key.key, Cow::Borrowed("AIzaPlain")));
    }

    #[test]
    fn bearer_and_empty_keys_are_not_gemini_sources() {
        let headers = [("authorization", "Bearer x"), ("x-goog-api-key", " ")];
        assert!(client_key(lookup(&headers), "key=&alt=sse").is_none());
    }

    #[test]
    fn stream_is_decided_by_the_action() {
        assert!(is_streaming_request(
            "v1beta/models/gemini-2.5-flash:streamGenerateContent"
        ));
        assert!(!is_streaming_request(
            "v1beta/models/gemini-2.5-flash:generateContent"
        ));
        assert!(!is_streaming_request("v1beta/models"));
    }

    #[test]
    fn status_names_follow_google_conventions() {
        assert_eq!(status_name(400), "INVALID_ARGUMENT");
        assert_eq!(status_name(401), "UNAUTHENTICATED");
        assert_eq!(status_name(429), "RESOURCE_EXHAUSTED");
        assert_eq!(status_name(502), "UNAVAILABLE");
        assert_eq!(status_name(503), "UNAVAILABLE");
        assert_eq!(status_name(504), "DEADLINE_EXCEEDED");
        assert_eq!(status_name(500), "INTERNAL");
        assert_eq!(status_name(405), "FAILED_PRECONDITION");
    }

    #[test]
    fn error_body_has_google_shape() {
        let body = error_body(&ProxyError::new(
            504,
            "upstream_timeout",
            "upstream timed out",
        ));
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            json!({"error": {"code": 504, "message": "upstream timed out", "status": "DEADLINE_EXCEEDED"}})
        );
    }

    #[test]
    fn stream_error_event_is_a_data_event() {
        let frame = stream_error_event(&ProxyError::new(
            502,
            "upstream_stream_broken",
            "stream broke",
        ));
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            "data: {\"error\":{\"code\":502,\"message\":\"stream broke\",\"status\":\"UNAVAILABLE\"}}\n\n"
        );
    }
}
