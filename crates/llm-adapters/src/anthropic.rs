//! Anthropic Messages' wire rules: clients authenticate with `x-api-key` (the SDK's way),
//! `x-anthropic-api-key` (accepted by the original backend) or `Authorization: Bearer`, upstream keys go in `x-api-key` together with `anthropic-version`
//! when the client sent none, a key is probed with `GET v1/models`, a request streams when its
//! body has `"stream": true`, and the proxy's own errors use Anthropic's
//! `{"type":"error","error":{...}}` shape, in bodies and as an `event: error` stream event.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

use crate::{ClientKey, KeyInjection, KeySource, ProxyError, auth, json, sse::SseEncoder};

/// The headers Anthropic clients send the key in.
pub const CLIENT_CREDENTIAL_HEADERS: &[&str] = &["x-api-key", ORIGINAL_KEY_HEADER, "authorization"];

/// The header the key travels in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The header the original backend also accepted from Anthropic clients; kept so its clients
/// switch without a change.
pub const ORIGINAL_KEY_HEADER: &str = "x-anthropic-api-key";

/// The API version header Anthropic requires on every request.
pub const VERSION_HEADER: &str = "anthropic-version";

/// The version sent when the client sent none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// The action of the key probe (the base URL is the host, without `/v1`).
pub const PROBE_ACTION: &str = "v1/models";

/// The key from `x-api-key`, else `x-anthropic-api-key`, else `Authorization: Bearer`.
pub fn client_key<'a>(headers: impl Fn(&str) -> Option<&'a str>) -> Option<ClientKey<'a>> {
    let from = |name: &str, source: KeySource| {
        headers(name)
            .and_then(auth::non_empty)
            .map(|key| ClientKey {
                key: Cow::Borrowed(key),
                source,
            })
    };
    from(API_KEY_HEADER, KeySource::XApiKey)
        .or_else(|| from(ORIGINAL_KEY_HEADER, KeySource::XAnthropicApiKey))
        .or_else(|| auth::bearer_key(&headers))
}

/// The upstream injection: `x-api-key: <key>` (the version is added by
/// [`with_default_version`]).
pub fn upstream_key(key: &str) -> KeyInjection<'_> {
    KeyInjection::header(API_KEY_HEADER, key)
}

/// Adds `anthropic-version: 2023-06-01` unless the client sent a (non-blank) version, which is
/// then forwarded with the other client headers.
pub fn with_default_version<'a>(
    injection: KeyInjection<'a>,
    client_version: Option<&str>,
) -> KeyInjection<'a> {
    if client_version.and_then(auth::non_empty).is_some() {
        injection
    } else {
        injection.with_header(VERSION_HEADER, DEFAULT_VERSION)
    }
}

/// Whether a Messages request asks for a stream (`"stream": true` at the top level).
pub fn is_streaming_request(body: &[u8]) -> bool {
    json::has_true_stream_flag(body)
}

/// Anthropic's error `type` for a status the proxy answers with.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// A JSON error body in Anthropic's shape: `{"type":"error","error":{"type":...,"message":...}}`.
pub fn error_body(error: &ProxyError<'_>) -> Vec<u8> {
    crate::errors::to_json(&Envelope {
        kind: "error",
        error: Detail {
            kind: error_type(error.status),
            message: error.message,
        },
    })
}

/// The in-band error event for a stream that broke after the response was committed:
/// `event: error` / `data: {"type":"error","error":{"type":"api_error","message":...}}`.
pub fn stream_error_event(error: &ProxyError<'_>) -> Bytes {
    SseEncoder::new().json_frame(
        Some("error"),
        &Envelope {
            kind: "error",
            error: Detail {
                kind: "api_error",
                message: error.message,
            },
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::auth::tests::lookup;
    use serde_json::{Value, json};

    #[test]
    fn x_api_key_is_the_first_source() {
        let headers = [
            ("x-api-key", "proxy-ant"),
            ("authorization", "Bearer other"),
        ];
        let key = client_key(lookup(&headers)).unwrap();
        assert_eq!(
            (key.key.as_ref(), key.source),
            ("proxy-ant", KeySource::XApiKey)
        );
    }

    #[test]
    fn bearer_is_the_fallback() {
        let headers = [("authorization", "Bearer proxy-ant")];
        let key = client_key(lookup(&headers)).unwrap();
        assert_eq!(
            (key.key.as_ref(), key.source),
            ("proxy-ant", KeySource::AuthorizationBearer)
        );
        let blank = [("x-api-key", "  "), ("authorization", "Bearer b")];
        assert_eq!(client_key(lookup(&blank)).unwrap().key, "b");
    }

    #[test]
    fn the_originals_x_anthropic_api_key_header_is_accepted() {
        let headers = [
            ("x-anthropic-api-key", "proxy-ant"),
            ("authorization", "Bearer other"),
        ];
        let key = client_key(lookup(&headers)).unwrap();
        assert_eq!(
            (key.key.as_ref(), key.source),
            ("proxy-ant", KeySource::XAnthropicApiKey)
        );
        assert_eq!(
            KeySource::XAnthropicApiKey.header_name(),
            Some("x-anthropic-api-key")
        );
    }

    #[test]
    fn no_credential_means_no_key() {
        let headers = [("x-goog-api-key", "g"), ("authorization", "Basic abc")];
        assert!(client_key(lookup(&headers)).is_none());
    }

    #[test]
    fn version_is_added_only_when_missing_or_blank() {
        let added = with_default_version(upstream_key("k"), None);
        assert!(added.sets_header(VERSION_HEADER));
        let blank = with_default_version(upstream_key("k"), Some(" "));
        assert!(blank.sets_header(VERSION_HEADER));
        let kept = with_default_version(upstream_key("k"), Some("2023-01-01"));
        assert!(!kept.sets_header(VERSION_HEADER));
        assert!(kept.sets_header(API_KEY_HEADER));
    }

    #[test]
    fn stream_flag_detection() {
        assert!(is_streaming_request(
            br#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[]}"#
        ));
        assert!(!is_streaming_request(
            br#"{"model":"claude-sonnet-4-5","max_tokens":1024}"#
        ));
    }

    #[test]
    fn error_types_follow_the_status() {
        assert_eq!(error_type(400), "invalid_request_error");
        assert_eq!(error_type(401), "authentication_error");
        assert_eq!(error_type(413), "request_too_large");
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(502), "api_error");
        assert_eq!(error_type(503), "api_error");
        assert_eq!(error_type(504), "timeout_error");
    }

    #[test]
    fn error_body_has_anthropic_shape() {
        let body = error_body(&ProxyError::new(
            502,
            "upstream_unreachable",
            "upstream unreachable",
        ));
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            json!({"type": "error", "error": {"type": "api_error", "message": "upstream unreachable"}})
        );
    }

    #[test]
    fn stream_error_event_is_an_error_event() {
        let frame = stream_error_event(&ProxyError::new(
            502,
            "upstream_stream_broken",
            "stream broke",
        ));
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"stream broke\"}}\n\n"
        );
    }
}
