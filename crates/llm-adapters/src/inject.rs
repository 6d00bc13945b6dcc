//! Injection of the upstream key into the outgoing request: the upstream format's own way
//! (OpenAI `Authorization: Bearer`, Anthropic `x-api-key` plus `anthropic-version`, Gemini
//! `x-goog-api-key`) unless the config's [`KeyPlacement`] overrides it (a header or a
//! percent-encoded query parameter, with the placement's prefix such as `Bearer ` before the
//! key). The result is a small owned list of edits the server applies; no allocation beyond a
//! prefixed value.

use std::borrow::Cow;

use domain::{ApiFormat, KeyLocation, KeyPlacement};

use crate::{anthropic, gemini, openai, query};

/// A header to set on the upstream request, replacing any header of the same name.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderEdit<'a> {
    /// Header name (lower case for the built-in ones, as configured for an override).
    pub name: &'a str,
    /// Header value; may be a secret, so it is masked in `Debug` output.
    pub value: Cow<'a, str>,
}

impl std::fmt::Debug for HeaderEdit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderEdit")
            .field("name", &self.name)
            .field("value", &domain::mask_secret(&self.value))
            .finish()
    }
}

/// A query parameter to add to the upstream request, replacing any parameter of the same name.
#[derive(Clone, PartialEq, Eq)]
pub struct QueryParam<'a> {
    /// Parameter name, as configured.
    pub name: &'a str,
    /// The raw (not yet percent-encoded) value: the key, after its prefix if any.
    pub value: Cow<'a, str>,
}

impl std::fmt::Debug for QueryParam<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryParam")
            .field("name", &self.name)
            .field("value", &domain::mask_secret(&self.value))
            .finish()
    }
}

/// How the upstream key goes into one request: at most two header edits and at most one query
/// parameter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyInjection<'a> {
    headers: [Option<HeaderEdit<'a>>; 2],
    query: Option<QueryParam<'a>>,
}

impl<'a> KeyInjection<'a> {
    /// An injection that sets one header.
    pub fn header(name: &'a str, value: impl Into<Cow<'a, str>>) -> Self {
        KeyInjection::default().with_header(name, value)
    }

    /// An injection that adds one query parameter.
    pub fn query_param(name: &'a str, value: impl Into<Cow<'a, str>>) -> Self {
        KeyInjection {
            headers: [None, None],
            query: Some(QueryParam {
                name,
                value: value.into(),
            }),
        }
    }

    /// Adds a header edit; a third header replaces the second (no format needs more than two).
    #[must_use]
    pub fn with_header(mut self, name: &'a str, value: impl Into<Cow<'a, str>>) -> Self {
        let edit = Some(HeaderEdit {
            name,
            value: value.into(),
        });
        match &mut self.headers {
            [slot @ None, _] | [Some(_), slot] => *slot = edit,
        }
        self
    }

    /// The headers to set (replace) on the upstream request.
    pub fn headers(&self) -> impl Iterator<Item = &HeaderEdit<'a>> {
        self.headers.iter().flatten()
    }

    /// The query parameter to add, if the key goes in the query.
    pub fn query(&self) -> Option<&QueryParam<'a>> {
        self.query.as_ref()
    }

    /// Whether this injection sets header `name` (case-insensitive).
    pub fn sets_header(&self, name: &str) -> bool {
        self.headers().any(|h| h.name.eq_ignore_ascii_case(name))
    }

    /// `query` with this injection's parameter (if any) replacing any client-sent parameter of
    /// the same name, its value percent-encoded. Borrows when there is nothing to add.
    pub fn apply_to_query<'q>(&self, query: &'q str) -> Cow<'q, str> {
        match &self.query {
            None => Cow::Borrowed(query),
            Some(param) => {
                let without = query::remove_query_param(query, param.name);
                Cow::Owned(query::append_query_param(
                    &without,
                    param.name,
                    &param.value,
                ))
            }
        }
    }
}

/// How to send `key` to an upstream speaking `upstream`: the format's own way, or `placement`
/// when the config overrides it (a header gets the placement's prefix and the key, a query
/// parameter the same, percent-encoded by [`KeyInjection::apply_to_query`]). For Anthropic upstreams
/// `anthropic-version: 2023-06-01` is added when the client request has none, whatever the
/// placement. `client_headers` looks a client request header up by lower-case name.
pub fn inject_key<'a, 'h>(
    upstream: ApiFormat,
    placement: Option<&'a KeyPlacement>,
    key: &'a str,
    client_headers: impl Fn(&str) -> Option<&'h str>,
) -> KeyInjection<'a> {
    let injection = match placement {
        Some(placement) => inject_at(placement, key),
        None => match upstream {
            ApiFormat::OpenaiCompatible => openai::upstream_key(key),
            ApiFormat::AnthropicNative => anthropic::upstream_key(key),
            ApiFormat::GeminiNative => gemini::upstream_key(key),
        },
    };
    match upstream {
        ApiFormat::AnthropicNative => {
            anthropic::with_default_version(injection, client_headers(anthropic::VERSION_HEADER))
        }
        ApiFormat::OpenaiCompatible | ApiFormat::GeminiNative => injection,
    }
}

/// How to send `key` at an explicit placement: the placement's prefix (`Bearer `, `token `,
/// often none) and the key in the named header, or in the named query parameter
/// (percent-encoded by [`KeyInjection::apply_to_query`]). This is the whole rule of the GENERIC
/// proxy; [`inject_key`] uses it for LLM overrides.
pub fn inject_at<'a>(placement: &'a KeyPlacement, key: &'a str) -> KeyInjection<'a> {
    let value: Cow<'a, str> = if placement.prefix.is_empty() {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(format!("{}{key}", placement.prefix))
    };
    match placement.location {
        KeyLocation::Header => KeyInjection::header(&placement.name, value),
        KeyLocation::Query => KeyInjection::query_param(&placement.name, value),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::auth::tests::lookup;

    fn headers(injection: &KeyInjection<'_>) -> Vec<(String, String)> {
        injection
            .headers()
            .map(|h| (h.name.to_owned(), h.value.clone().into_owned()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn openai_upstream_gets_a_bearer_header() {
        let injection = inject_key(ApiFormat::OpenaiCompatible, None, "sk-up", lookup(&[]));
        assert_eq!(
            headers(&injection),
            pairs(&[("authorization", "Bearer sk-up")])
        );
        assert_eq!(injection.query(), None);
    }

    #[test]
    fn anthropic_upstream_gets_x_api_key_and_a_default_version() {
        let injection = inject_key(ApiFormat::AnthropicNative, None, "sk-ant", lookup(&[]));
        assert_eq!(
            headers(&injection),
            pairs(&[("x-api-key", "sk-ant"), ("anthropic-version", "2023-06-01")])
        );
    }

    #[test]
    fn anthropic_version_sent_by_the_client_is_kept() {
        let client = [("Anthropic-Version", "2024-01-01")];
        let injection = inject_key(ApiFormat::AnthropicNative, None, "sk-ant", lookup(&client));
        assert_eq!(headers(&injection), pairs(&[("x-api-key", "sk-ant")]));
        assert!(!injection.sets_header("anthropic-version"));
    }

    #[test]
    fn gemini_upstream_gets_x_goog_api_key() {
        let injection = inject_key(ApiFormat::GeminiNative, None, "AIza-up", lookup(&[]));
        assert_eq!(headers(&injection), pairs(&[("x-goog-api-key", "AIza-up")]));
    }

    #[test]
    fn header_override_sends_the_raw_key_under_the_configured_name() {
        let placement = KeyPlacement::new(KeyLocation::Header, "api-key").unwrap();
        let injection = inject_key(
            ApiFormat::OpenaiCompatible,
            Some(&placement),
            "az-1",
            lookup(&[]),
        );
        assert_eq!(headers(&injection), pairs(&[("api-key", "az-1")]));
        assert_eq!(injection.apply_to_query("a=1"), "a=1");
    }

    #[test]
    fn header_override_on_anthropic_still_adds_the_version() {
        let placement = KeyPlacement::new(KeyLocation::Header, "X-Custom-Key").unwrap();
        let injection = inject_key(
            ApiFormat::AnthropicNative,
            Some(&placement),
            "k",
            lookup(&[]),
        );
        assert_eq!(
            headers(&injection),
            pairs(&[("X-Custom-Key", "k"), ("anthropic-version", "2023-06-01")])
        );
    }

    #[test]
    fn query_override_appends_the_percent_encoded_key() {
        let placement = KeyPlacement::new(KeyLocation::Query, "key").unwrap();
        let injection = inject_key(
            ApiFormat::GeminiNative,
            Some(&placement),
            "a/b+c",
            lookup(&[]),
        );
        assert_eq!(headers(&injection), []);
        assert_eq!(injection.apply_to_query("alt=sse"), "alt=sse&key=a%2Fb%2Bc");
        assert_eq!(injection.apply_to_query(""), "key=a%2Fb%2Bc");
    }

    #[test]
    fn query_override_replaces_a_client_parameter_of_the_same_name() {
        let placement = KeyPlacement::new(KeyLocation::Query, "api_key").unwrap();
        let injection = inject_key(
            ApiFormat::OpenaiCompatible,
            Some(&placement),
            "up",
            lookup(&[]),
        );
        assert_eq!(
            injection.apply_to_query("api_key=client&x=1&api_key=2"),
            "x=1&api_key=up"
        );
    }

    #[test]
    fn generic_placement_uses_the_configured_name() {
        let header = KeyPlacement::new(KeyLocation::Header, "X-Api-Token").unwrap();
        assert_eq!(
            headers(&inject_at(&header, "t-1")),
            pairs(&[("X-Api-Token", "t-1")])
        );
        let query = KeyPlacement::new(KeyLocation::Query, "access_token").unwrap();
        let injection = inject_at(&query, "t 1");
        assert_eq!(headers(&injection), []);
        assert_eq!(
            injection.apply_to_query("page=2&access_token=client"),
            "page=2&access_token=t%201"
        );
    }

    #[test]
    fn generic_header_prefix_goes_before_the_key() {
        let placement = KeyPlacement::new(KeyLocation::Header, "Authorization")
            .unwrap()
            .with_prefix("token ")
            .unwrap();
        assert_eq!(
            headers(&inject_at(&placement, "ghp_1")),
            pairs(&[("Authorization", "token ghp_1")])
        );
    }

    #[test]
    fn llm_authorization_override_sends_bearer_as_the_original_did() {
        let input = domain::ProxyConfigInput {
            name: Some("OpenAI".into()),
            slug: Some("openai".into()),
            config_type: Some("llm".into()),
            target_base_url: Some("https://api.openai.com/v1".into()),
            api_key_location: Some("header".into()),
            api_key_name: Some("Authorization".into()),
            ..Default::default()
        };
        let spec = input.validate().unwrap();
        let placement = spec.kind.key_placement();
        let injection = inject_key(ApiFormat::OpenaiCompatible, placement, "sk-up", lookup(&[]));
        assert_eq!(
            headers(&injection),
            pairs(&[("Authorization", "Bearer sk-up")])
        );
    }

    #[test]
    fn query_prefix_is_percent_encoded_with_the_key() {
        let placement = KeyPlacement::new(KeyLocation::Query, "auth")
            .unwrap()
            .with_prefix("Key ")
            .unwrap();
        let injection = inject_at(&placement, "k1");
        assert_eq!(injection.apply_to_query(""), "auth=Key%20k1");
    }

    #[test]
    fn debug_output_masks_the_key() {
        let injection = inject_key(
            ApiFormat::OpenaiCompatible,
            None,
            "sk-secret-0123456789abcdef",
            lookup(&[]),
        );
        let shown = format!("{injection:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn with_header_fills_two_slots() {
        let injection = KeyInjection::header("a", "1")
            .with_header("b", "2")
            .with_header("c", "3");
        assert_eq!(headers(&injection), pairs(&[("a", "1"), ("c", "3")]));
    }
}
