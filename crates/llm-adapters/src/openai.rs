//! OpenAI's wire rules (Chat Completions, Responses and every OpenAI-compatible API): clients
//! authenticate with `Authorization: Bearer` or a top-level `"api_key"` body field, upstream
//! keys go in `Authorization: Bearer`, a key is probed with `GET models` relative to the base
//! (`.../v1/models`), a request streams when its body has `"stream": true`, and the proxy's
//! own errors use OpenAI's `{"error": {...}}` envelope, in bodies and in streams (where an
//! error event replaces the final `data: [DONE]`).

use bytes::Bytes;
use serde::Serialize;

use crate::{
    BodyApiKey, BodyKeyError, ClientKey, KeyInjection, ProxyError, auth, json, sse::SseEncoder,
};

/// The headers OpenAI SDKs send the key in.
pub const CLIENT_CREDENTIAL_HEADERS: &[&str] = &["authorization"];

/// The body field some OpenAI clients put the key in.
pub const BODY_KEY_FIELD: &str = "api_key";

/// The action of the key probe, relative to the base URL (which conventionally ends in `/v1`).
pub const PROBE_ACTION: &str = "models";

/// The frame that ends a successful Chat Completions stream. It is not sent after an in-band
/// error event.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// The key from `Authorization: Bearer <key>`.
pub fn client_key<'a>(headers: impl Fn(&str) -> Option<&'a str>) -> Option<ClientKey<'a>> {
    auth::bearer_key(&headers)
}

/// Finds a top-level `"api_key"` string field in a JSON object body and returns it with the
/// body minus that member (every occurrence). Returns `Ok(None)` without parsing when the body
/// does not contain the bytes `"api_key"`, and `Ok(None)` when it is not a JSON object (a
/// multipart upload, say) or has no top-level field of that name.
///
/// # Errors
/// [`BodyKeyError::NotAString`] when the field holds anything but a string.
pub fn take_body_api_key(body: &[u8]) -> Result<Option<BodyApiKey>, BodyKeyError> {
    if memchr::memmem::find(body, b"\"api_key\"").is_none() {
        return Ok(None);
    }
    let Some(members) = json::top_level_members(body) else {
        return Ok(None);
    };
    let is_key = |m: &json::Member| m.has_name(body, BODY_KEY_FIELD);
    let Some(last) = members.iter().rfind(|m| is_key(m)) else {
        return Ok(None);
    };
    for member in members.iter().filter(|m| is_key(m)) {
        if member.value_bytes(body).first() != Some(&b'"') {
            return Err(BodyKeyError::NotAString);
        }
    }
    let key = serde_json::from_slice::<String>(last.value_bytes(body))
        .map_err(|_| BodyKeyError::NotAString)?;
    Ok(Some(BodyApiKey {
        key,
        body: without_members(body, &members, is_key),
    }))
}

/// `body` with the members matching `remove` cut out, keeping the bytes between the kept
/// members (each kept member after the first keeps the separator that preceded it).
fn without_members(
    body: &[u8],
    members: &[json::Member],
    remove: impl Fn(&json::Member) -> bool,
) -> Vec<u8> {
    let (Some(first), Some(last)) = (members.first(), members.last()) else {
        return body.to_vec();
    };
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(body.get(..first.name.0).unwrap_or_default());
    let mut wrote_one = false;
    for (index, member) in members.iter().enumerate() {
        if remove(member) {
            continue;
        }
        if wrote_one {
            let previous_end = index
                .checked_sub(1)
                .and_then(|i| members.get(i))
                .map_or(member.name.0, |p| p.value.1);
            out.extend_from_slice(body.get(previous_end..member.name.0).unwrap_or_default());
        }
        out.extend_from_slice(body.get(member.name.0..member.value.1).unwrap_or_default());
        wrote_one = true;
    }
    out.extend_from_slice(body.get(last.value.1..).unwrap_or_default());
    out
}

/// The upstream injection: `Authorization: Bearer <key>`.
pub fn upstream_key(key: &str) -> KeyInjection<'_> {
    KeyInjection::header("authorization", format!("Bearer {key}"))
}

/// Whether a Chat Completions or Responses request asks for a stream (`"stream": true` at the
/// top level; the body is parsed only when it contains `"stream"`).
pub fn is_streaming_request(body: &[u8]) -> bool {
    json::has_true_stream_flag(body)
}

/// OpenAI's error `type` for a status the proxy answers with.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        502 | 504 => "upstream_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

/// A JSON error body in OpenAI's shape:
/// `{"error":{"message":...,"type":...,"param":null,"code":...}}`.
pub fn error_body(error: &ProxyError<'_>) -> Vec<u8> {
    crate::errors::to_json(&Envelope {
        error: Detail {
            message: error.message,
            kind: error_type(error.status),
            param: None,
            code: error.code,
        },
    })
}

/// The in-band error event for a Chat Completions stream that broke after the response was
/// committed: `data: {"error":{"message":...,"type":"upstream_error","param":null,"code":...}}`
/// (the SDKs raise on a data event with an `error` member). Send no `[DONE]` after it.
pub fn stream_error_event(error: &ProxyError<'_>) -> Bytes {
    SseEncoder::new().json_frame(
        None,
        &Envelope {
            error: Detail {
                message: error.message,
                kind: "upstream_error",
                param: None,
                code: error.code,
            },
        },
    )
}

/// The Responses API's own error event:
/// `event: error` / `data: {"type":"error","code":...,"message":...,"param":null}`.
pub fn responses_stream_error_event(error: &ProxyError<'_>) -> Bytes {
    #[derive(Serialize)]
    struct ResponsesError<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: &'a str,
        message: &'a str,
        param: Option<&'a str>,
    }
    SseEncoder::new().json_frame(
        Some("error"),
        &ResponsesError {
            kind: "error",
            code: error.code,
            message: error.message,
            param: None,
        },
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{KeySource, auth::tests::lookup};
    use serde_json::{Value, json};

    fn take(body: &str) -> Option<(String, String)> {
        take_body_api_key(body.as_bytes())
            .unwrap()
            .map(|found| (found.key, String::from_utf8(found.body).unwrap()))
    }

    #[test]
    fn bearer_header_is_the_client_key() {
        let headers = [("Authorization", "Bearer proxy-1")];
        let key = client_key(lookup(&headers)).unwrap();
        assert_eq!(key.key, "proxy-1");
        assert_eq!(key.source, KeySource::AuthorizationBearer);
    }

    #[test]
    fn x_api_key_is_not_an_openai_credential_source() {
        let headers = [("x-api-key", "proxy-1")];
        assert!(client_key(lookup(&headers)).is_none());
    }

    #[test]
    fn body_api_key_is_removed_in_any_position() {
        assert_eq!(
            take(r#"{"api_key":"k","model":"m"}"#).unwrap(),
            ("k".to_owned(), r#"{"model":"m"}"#.to_owned())
        );
        assert_eq!(
            take(r#"{"model":"m","api_key":"k","stream":true}"#)
                .unwrap()
                .1,
            r#"{"model":"m","stream":true}"#
        );
        assert_eq!(
            take(r#"{"model":"m","api_key":"k"}"#).unwrap().1,
            r#"{"model":"m"}"#
        );
        assert_eq!(take(r#"{"api_key":"k"}"#).unwrap().1, "{}");
    }

    #[test]
    fn body_rewrite_keeps_formatting_numbers_and_escapes() {
        let body = "{\n  \"model\": \"gpt-4o\",\n  \"api_key\": \"k\",\n  \"temperature\": 0.70,\n  \"messages\": [{\"role\":\"user\",\"content\":\"caf\\u00e9 \\\"api_key\\\"\"}]\n}";
        let (key, rewritten) = take(body).unwrap();
        assert_eq!(key, "k");
        assert_eq!(
            rewritten,
            "{\n  \"model\": \"gpt-4o\",\n  \"temperature\": 0.70,\n  \"messages\": [{\"role\":\"user\",\"content\":\"caf\\u00e9 \\\"api_key\\\"\"}]\n}"
        );
        let parsed: Value = serde_json::from_str(&rewritten).unwrap();
        assert!(parsed.get("api_key").is_none());
    }

    #[test]
    fn every_duplicate_is_removed_and_the_last_value_wins() {
        assert_eq!(
            take(r#"{"api_key":"first","a":1,"api_key":"second"}"#).unwrap(),
            ("second".to_owned(), r#"{"a":1}"#.to_owned())
        );
    }

    #[test]
    fn escaped_key_values_are_decoded() {
        assert_eq!(take(r#"{"api_key":"a\/b\u0041"}"#).unwrap().0, "a/bA");
    }

    #[test]
    fn nested_or_quoted_api_key_is_not_a_credential() {
        assert_eq!(take(r#"{"metadata":{"api_key":"k"}}"#), None);
        assert_eq!(
            take(r#"{"messages":[{"content":"my \"api_key\" leaked"}]}"#),
            None
        );
    }

    #[test]
    fn bodies_without_the_field_are_not_parsed() {
        // Invalid JSON would fail a parse; the substring check returns before one.
        assert_eq!(take("{not json, no key here"), None);
        assert_eq!(take(""), None);
    }

    #[test]
    fn non_json_bodies_are_left_alone() {
        let multipart = "--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n{\"api_key\":\"k\"}\r\n--b--\r\n";
        assert_eq!(take(multipart), None);
        assert_eq!(take(r#"["api_key"]"#), None);
    }

    #[test]
    fn non_string_api_key_is_rejected() {
        for body in [
            r#"{"api_key":null}"#,
            r#"{"api_key":1}"#,
            r#"{"api_key":{"k":"v"}}"#,
        ] {
            assert_eq!(
                take_body_api_key(body.as_bytes()),
                Err(BodyKeyError::NotAString),
                "{body}"
            );
        }
        assert_eq!(
            take_body_api_key(br#"{"api_key":"ok","api_key":1}"#),
            Err(BodyKeyError::NotAString)
        );
    }

    #[test]
    fn upstream_key_is_a_bearer_header() {
        let injection = upstream_key("sk-up");
        let edit = injection.headers().next().unwrap();
        assert_eq!(
            (edit.name, edit.value.as_ref()),
            ("authorization", "Bearer sk-up")
        );
    }

    #[test]
    fn stream_flag_detection() {
        assert!(is_streaming_request(
            br#"{"model":"gpt-4o","stream":true,"messages":[]}"#
        ));
        assert!(!is_streaming_request(
            br#"{"model":"gpt-4o","stream":false}"#
        ));
        assert!(!is_streaming_request(br#"{"model":"gpt-4o"}"#));
    }

    #[test]
    fn error_types_follow_the_status() {
        assert_eq!(error_type(400), "invalid_request_error");
        assert_eq!(error_type(413), "invalid_request_error");
        assert_eq!(error_type(401), "authentication_error");
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(502), "upstream_error");
        assert_eq!(error_type(504), "upstream_error");
        assert_eq!(error_type(503), "server_error");
    }

    #[test]
    fn error_body_has_openai_shape() {
        let body = error_body(&ProxyError::new(
            503,
            "no_usable_key",
            "no usable key, retry in 12 s",
        ));
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            json!({"error": {"message": "no usable key, retry in 12 s", "type": "server_error", "param": null, "code": "no_usable_key"}})
        );
    }

    #[test]
    fn stream_error_event_is_a_data_only_frame() {
        let frame = stream_error_event(&ProxyError::new(
            502,
            "upstream_stream_broken",
            "upstream \"closed\"\nearly",
        ));
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(text.starts_with("data: {\"error\":"), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
        assert_eq!(text.matches('\n').count(), 2, "one data line: {text}");
        let value: Value =
            serde_json::from_str(text.trim_start_matches("data: ").trim_end()).unwrap();
        assert_eq!(value["error"]["type"], "upstream_error");
        assert_eq!(value["error"]["code"], "upstream_stream_broken");
        assert_eq!(value["error"]["message"], "upstream \"closed\"\nearly");
    }

    #[test]
    fn responses_stream_error_event_is_an_error_event() {
        let frame = responses_stream_error_event(&ProxyError::new(502, "upstream_error", "boom"));
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            "event: error\ndata: {\"type\":\"error\",\"code\":\"upstream_error\",\"message\":\"boom\",\"param\":null}\n\n"
        );
    }
}
