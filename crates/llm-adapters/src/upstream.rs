//! The upstream request of one LLM call, assembled from the pure rules: the client's query
//! without its credential, the upstream key injected (header or query), and the URL rule. The
//! server adds the forwarded client headers, the method and the body.

use std::borrow::Cow;

use domain::LlmTarget;

use crate::{KeyInjection, UrlError, inject_key, llm_url, query};

/// Where and how to send one LLM request upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest<'a> {
    /// The full upstream URL, query string included (it may contain the key when the config
    /// puts it in the query: redact before logging).
    pub url: String,
    /// The header edits to apply after copying the forwarded client headers (set = replace).
    pub injection: KeyInjection<'a>,
}

/// The upstream query string: the client's, without its `key` parameter, with the injection's
/// parameter (if any) replacing any of the same name. Every other pair is kept byte for byte.
/// Borrows when nothing changes.
///
/// `key` is Gemini's credential parameter; it is dropped for every client format, since a client
/// of another format that sends its proxy key there (a misconfigured SDK) must not see it
/// forwarded, and no OpenAI or Anthropic endpoint takes a `key` parameter.
pub fn upstream_query<'q>(client_query: &'q str, injection: &KeyInjection<'_>) -> Cow<'q, str> {
    let cleaned = query::strip_key_param(client_query);
    match (cleaned, injection.query()) {
        (cleaned, None) => cleaned,
        (Cow::Borrowed(q), Some(_)) => injection.apply_to_query(q),
        (Cow::Owned(q), Some(_)) => Cow::Owned(injection.apply_to_query(&q).into_owned()),
    }
}

/// Builds the upstream URL and key injection of one LLM request: `action` is the raw
/// (still percent-encoded) path after `/llm/{slug}/`, `client_query` the raw query string
/// without `?`, `key` the selected upstream key (injected the upstream format's way unless the
/// target's `key_placement` overrides it), `client_headers` the client request's header
/// lookup (only `anthropic-version` is read).
///
/// # Errors
/// [`UrlError`] when the action cannot be appended to the base URL (answer 400).
pub fn prepare_llm_request<'a, 'h>(
    target: &'a LlmTarget,
    action: &str,
    client_query: &str,
    key: &'a str,
    client_headers: impl Fn(&str) -> Option<&'h str>,
) -> Result<UpstreamRequest<'a>, UrlError> {
    let injection = inject_key(
        target.api_format,
        target.key_placement.as_ref(),
        key,
        client_headers,
    );
    let query = upstream_query(client_query, &injection);
    let url = llm_url(target.target_base_url.as_str(), action, &query)?;
    Ok(UpstreamRequest { url, injection })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::auth::tests::lookup;
    use domain::{ApiFormat, KeyLocation, KeyPlacement, OutputFormat};

    fn target(base: &str, api: ApiFormat, output: OutputFormat) -> LlmTarget {
        LlmTarget {
            target_base_url: base.parse().unwrap(),
            api_format: api,
            output_format: output,
            key_placement: None,
        }
    }

    fn header_list(request: &UpstreamRequest<'_>) -> Vec<(String, String)> {
        request
            .injection
            .headers()
            .map(|h| (h.name.to_owned(), h.value.clone().into_owned()))
            .collect()
    }

    #[test]
    fn gemini_client_query_key_is_stripped_and_header_injected() {
        let t = target(
            "https://generativelanguage.googleapis.com",
            ApiFormat::GeminiNative,
            OutputFormat::None,
        );
        let request = prepare_llm_request(
            &t,
            "v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "alt=sse&key=proxy-key",
            "AIza-upstream",
            lookup(&[]),
        )
        .unwrap();
        assert_eq!(
            request.url,
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            header_list(&request),
            [("x-goog-api-key".to_owned(), "AIza-upstream".to_owned())]
        );
    }

    #[test]
    fn query_placement_replaces_the_client_key_param() {
        let mut t = target(
            "https://g.example",
            ApiFormat::GeminiNative,
            OutputFormat::None,
        );
        t.key_placement = Some(KeyPlacement::new(KeyLocation::Query, "key").unwrap());
        let request = prepare_llm_request(
            &t,
            "v1beta/models",
            "key=proxy&pageSize=5",
            "up/key",
            lookup(&[]),
        )
        .unwrap();
        assert_eq!(
            request.url,
            "https://g.example/v1beta/models?pageSize=5&key=up%2Fkey"
        );
        assert_eq!(header_list(&request), []);
    }

    #[test]
    fn non_gemini_clients_lose_a_key_parameter_but_keep_the_rest_of_their_query() {
        let t = target(
            "https://api.openai.com/v1",
            ApiFormat::OpenaiCompatible,
            OutputFormat::None,
        );
        let request = prepare_llm_request(
            &t,
            "v1/models",
            "key=proxy-key-sent-by-mistake&limit=5",
            "sk-up",
            lookup(&[]),
        )
        .unwrap();
        assert_eq!(request.url, "https://api.openai.com/v1/models?limit=5");
        assert_eq!(
            header_list(&request),
            [("authorization".to_owned(), "Bearer sk-up".to_owned())]
        );
    }

    #[test]
    fn openai_client_on_anthropic_upstream_gets_anthropic_headers() {
        let t = target(
            "https://api.anthropic.com",
            ApiFormat::AnthropicNative,
            OutputFormat::Openai,
        );
        let request = prepare_llm_request(&t, "v1/messages", "", "sk-ant", lookup(&[])).unwrap();
        assert_eq!(request.url, "https://api.anthropic.com/v1/messages");
        assert_eq!(
            header_list(&request),
            [
                ("x-api-key".to_owned(), "sk-ant".to_owned()),
                ("anthropic-version".to_owned(), "2023-06-01".to_owned())
            ]
        );
    }

    #[test]
    fn bad_actions_are_refused() {
        let t = target(
            "https://api.openai.com/v1",
            ApiFormat::OpenaiCompatible,
            OutputFormat::None,
        );
        assert_eq!(
            prepare_llm_request(&t, "../admin", "", "k", lookup(&[])),
            Err(UrlError::DotSegment)
        );
    }

    #[test]
    fn upstream_query_borrows_when_nothing_changes() {
        let injection = KeyInjection::header("authorization", "Bearer k");
        assert!(matches!(
            upstream_query("a=1&b=2", &injection),
            Cow::Borrowed("a=1&b=2")
        ));
    }
}
