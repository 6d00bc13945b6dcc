//! Client authentication on the LLM proxy: where each client format's SDK sends the proxy key
//! (header, `?key=` query parameter or OpenAI's `"api_key"` body field), which source was used,
//! and the body with the `api_key` field cut out so it is never forwarded upstream.
//!
//! The per-format rules live in [`crate::openai`], [`crate::anthropic`] and [`crate::gemini`];
//! this module dispatches on [`ClientFormat`] and owns the shared result types. Comparing the
//! key with the configured proxy keys (in constant time) is the caller's job
//! (`domain::ProxyKeySet`).

use std::borrow::Cow;

use crate::{ClientFormat, anthropic, gemini, openai};

/// Where the client's proxy key was found; the caller logs it and must not forward it (every
/// credential header is dropped by [`crate::forward_llm_request_header`], the `key` query
/// parameter by [`crate::upstream_query`], the body field by [`authenticate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// `Authorization: Bearer <key>`.
    AuthorizationBearer,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
    /// `x-anthropic-api-key: <key>` (Anthropic clients of the original backend).
    XAnthropicApiKey,
    /// `x-goog-api-key: <key>` (Gemini).
    XGoogApiKey,
    /// `?key=<key>` (Gemini).
    QueryKey,
    /// A top-level `"api_key"` field of the JSON body (OpenAI).
    BodyApiKey,
}

impl KeySource {
    /// The header the key came in, for header sources.
    pub fn header_name(self) -> Option<&'static str> {
        match self {
            KeySource::AuthorizationBearer => Some("authorization"),
            KeySource::XApiKey => Some("x-api-key"),
            KeySource::XAnthropicApiKey => Some(anthropic::ORIGINAL_KEY_HEADER),
            KeySource::XGoogApiKey => Some("x-goog-api-key"),
            KeySource::QueryKey | KeySource::BodyApiKey => None,
        }
    }

    /// A short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::AuthorizationBearer => "authorization_bearer",
            KeySource::XApiKey => "x_api_key",
            KeySource::XAnthropicApiKey => "x_anthropic_api_key",
            KeySource::XGoogApiKey => "x_goog_api_key",
            KeySource::QueryKey => "query_key",
            KeySource::BodyApiKey => "body_api_key",
        }
    }
}

/// A proxy key presented by a client and where it was found.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey<'a> {
    /// The key as presented (trimmed; query values percent-decoded; body values JSON-decoded).
    pub key: Cow<'a, str>,
    /// Where it was found.
    pub source: KeySource,
}

impl std::fmt::Debug for ClientKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("key", &domain::mask_secret(&self.key))
            .field("source", &self.source)
            .finish()
    }
}

/// An OpenAI `"api_key"` body field and the body without it.
#[derive(Clone, PartialEq, Eq)]
pub struct BodyApiKey {
    /// The field's string value (JSON-decoded). When the field appears more than once, the
    /// last one, as JSON parsers read it.
    pub key: String,
    /// The body with every top-level `api_key` member removed; every other byte is kept as the
    /// client sent it (key order, numbers, escapes, whitespace).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for BodyApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyApiKey")
            .field("key", &domain::mask_secret(&self.key))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A body credential that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyKeyError {
    /// The top-level `api_key` field is not a JSON string.
    #[error("the `api_key` field of the request body must be a string")]
    NotAString,
}

/// The outcome of [`authenticate`]: the key the client presented, if any, and the body to
/// forward when the original one had to be changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth<'a> {
    /// The presented proxy key, `None` when the client sent none (answer 401).
    pub key: Option<ClientKey<'a>>,
    /// `Some` when the body contained an `api_key` field: forward this body instead of the
    /// original (and recompute `Content-Length`).
    pub rewritten_body: Option<Vec<u8>>,
}

/// Finds the client's proxy key in headers or query string, in the order of the client
/// format's rules (see [`openai::client_key`], [`anthropic::client_key`],
/// [`gemini::client_key`]). Does not look at the body; see [`authenticate`] for OpenAI clients.
///
/// `headers` looks a header up by its lower-case name; `query` is the raw query string without
/// `?` (empty when there is none).
pub fn client_key<'a>(
    client: ClientFormat,
    headers: impl Fn(&str) -> Option<&'a str>,
    query: &'a str,
) -> Option<ClientKey<'a>> {
    match client {
        ClientFormat::Openai | ClientFormat::OpenaiResponses => openai::client_key(headers),
        ClientFormat::Anthropic => anthropic::client_key(headers),
        ClientFormat::Gemini => gemini::client_key(headers, query),
    }
}

/// OpenAI's body credential: see [`openai::take_body_api_key`].
///
/// # Errors
/// [`BodyKeyError::NotAString`] when the field is present with a non-string value.
pub fn take_body_api_key(body: &[u8]) -> Result<Option<BodyApiKey>, BodyKeyError> {
    openai::take_body_api_key(body)
}

/// Client authentication for one LLM request: [`client_key`], then, for OpenAI client formats,
/// the body's `"api_key"` field, which is removed from the body even when a header already
/// carried the key (OpenAI rejects the unknown field, and a proxy key must never travel
/// upstream). The body is only parsed when it contains the bytes `"api_key"`.
///
/// # Errors
/// [`BodyKeyError`] when an OpenAI body carries an unusable `api_key` field (answer 400).
pub fn authenticate<'a>(
    client: ClientFormat,
    headers: impl Fn(&str) -> Option<&'a str>,
    query: &'a str,
    body: &[u8],
) -> Result<ClientAuth<'a>, BodyKeyError> {
    let key = client_key(client, headers, query);
    if !client.is_openai() {
        return Ok(ClientAuth {
            key,
            rewritten_body: None,
        });
    }
    match openai::take_body_api_key(body)? {
        None => Ok(ClientAuth {
            key,
            rewritten_body: None,
        }),
        Some(found) => Ok(ClientAuth {
            key: key.or(Some(ClientKey {
                key: Cow::Owned(found.key),
                source: KeySource::BodyApiKey,
            })),
            rewritten_body: Some(found.body),
        }),
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive, token
/// trimmed), `None` for other schemes or an empty token. The one parser of this header: the
/// LLM proxy's client keys and the admin API's tokens both use it.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, token) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    non_empty(token)
}

/// A trimmed header value, `None` when blank.
pub(crate) fn non_empty(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

/// The key from `Authorization: Bearer`, shared by the OpenAI and Anthropic rules.
pub(crate) fn bearer_key<'a>(headers: &impl Fn(&str) -> Option<&'a str>) -> Option<ClientKey<'a>> {
    headers("authorization")
        .and_then(bearer_token)
        .map(|key| ClientKey {
            key: Cow::Borrowed(key),
            source: KeySource::AuthorizationBearer,
        })
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A header lookup over a fixed list, case-insensitive like the server's.
    pub(crate) fn lookup<'a>(list: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            list.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn bearer_token_accepts_any_scheme_case_and_trims() {
        assert_eq!(bearer_token("Bearer sk-1"), Some("sk-1"));
        assert_eq!(bearer_token("bearer   sk-1  "), Some("sk-1"));
        assert_eq!(bearer_token("BEARER\tsk-1"), Some("sk-1"));
        assert_eq!(bearer_token("Basic dXNlcjpwdw=="), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("sk-1"), None);
    }

    #[test]
    fn dispatch_follows_the_client_format() {
        let headers = [("x-api-key", "ant"), ("x-goog-api-key", "goog")];
        let headers = lookup(&headers);
        assert_eq!(client_key(ClientFormat::Openai, &headers, ""), None);
        assert_eq!(
            client_key(ClientFormat::Anthropic, &headers, "")
                .unwrap()
                .key,
            "ant"
        );
        assert_eq!(
            client_key(ClientFormat::Gemini, &headers, "").unwrap().key,
            "goog"
        );
    }

    #[test]
    fn openai_body_key_is_used_when_no_header_and_always_removed() {
        let body = br#"{"model":"gpt-4o","api_key":"proxy-1","stream":true}"#;
        let auth = authenticate(ClientFormat::Openai, lookup(&[]), "", body).unwrap();
        let key = auth.key.unwrap();
        assert_eq!(
            (key.key.as_ref(), key.source),
            ("proxy-1", KeySource::BodyApiKey)
        );
        assert_eq!(
            auth.rewritten_body.unwrap(),
            br#"{"model":"gpt-4o","stream":true}"#
        );

        let headers = [("authorization", "Bearer from-header")];
        let auth = authenticate(ClientFormat::OpenaiResponses, lookup(&headers), "", body).unwrap();
        assert_eq!(auth.key.unwrap().source, KeySource::AuthorizationBearer);
        assert!(
            auth.rewritten_body.is_some(),
            "body key removed even when a header won"
        );
    }

    #[test]
    fn body_is_not_touched_without_an_api_key_field() {
        let body = br#"{"model":"gpt-4o","messages":[]}"#;
        let headers = [("authorization", "Bearer k")];
        let auth = authenticate(ClientFormat::Openai, lookup(&headers), "", body).unwrap();
        assert_eq!(auth.rewritten_body, None);
    }

    #[test]
    fn non_openai_bodies_are_never_inspected() {
        let body = br#"{"api_key":"proxy-1"}"#;
        let auth = authenticate(ClientFormat::Anthropic, lookup(&[]), "", body).unwrap();
        assert_eq!(
            auth,
            ClientAuth {
                key: None,
                rewritten_body: None
            }
        );
    }

    #[test]
    fn non_string_body_key_is_an_error() {
        let body = br#"{"api_key":42}"#;
        assert_eq!(
            authenticate(ClientFormat::Openai, lookup(&[]), "", body),
            Err(BodyKeyError::NotAString)
        );
    }

    #[test]
    fn debug_output_masks_keys() {
        let key = ClientKey {
            key: Cow::Borrowed("sk-proxy-0123456789abcdef"),
            source: KeySource::AuthorizationBearer,
        };
        let shown = format!("{key:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn key_sources_name_their_headers() {
        assert_eq!(KeySource::XApiKey.header_name(), Some("x-api-key"));
        assert_eq!(KeySource::QueryKey.header_name(), None);
        assert_eq!(KeySource::BodyApiKey.as_str(), "body_api_key");
    }
}
