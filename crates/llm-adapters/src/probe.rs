//! The key recovery probe (SPEC §3 "Recovery"): for each upstream format the cheapest
//! authenticated request, a model list, built with the same URL rule and key injection as real
//! traffic, so a probe succeeds exactly when real requests with that key would authenticate.

use domain::{ApiFormat, LlmTarget};

use crate::{KeyInjection, UrlError, anthropic, gemini, inject_key, llm_url, openai};

/// The method and action of a format's probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Always `GET`: probes must not create anything or cost tokens.
    pub method: &'static str,
    /// Relative to the target base URL, joined with the LLM URL rule.
    pub action: &'static str,
}

/// The probe of an upstream format: OpenAI `GET models` (base `.../v1` gives `.../v1/models`),
/// Anthropic `GET v1/models`, Gemini `GET v1beta/models`.
pub fn probe(upstream: ApiFormat) -> Probe {
    let action = match upstream {
        ApiFormat::OpenaiCompatible => openai::PROBE_ACTION,
        ApiFormat::AnthropicNative => anthropic::PROBE_ACTION,
        ApiFormat::GeminiNative => gemini::PROBE_ACTION,
    };
    Probe {
        method: "GET",
        action,
    }
}

/// A ready-to-send probe: method, full URL (it contains the key when the config places it in
/// the query: redact before logging) and the header edits (key, plus `anthropic-version` for
/// Anthropic upstreams).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRequest<'a> {
    /// HTTP method.
    pub method: &'static str,
    /// Full URL.
    pub url: String,
    /// Headers to set.
    pub injection: KeyInjection<'a>,
}

/// The probe request testing `key` against `target`, honouring its key placement override.
///
/// # Errors
/// Never for the built-in actions; the [`UrlError`] is kept for symmetry with real requests.
pub fn probe_request<'a>(
    target: &'a LlmTarget,
    key: &'a str,
) -> Result<ProbeRequest<'a>, UrlError> {
    let Probe { method, action } = probe(target.api_format);
    let injection = inject_key(
        target.api_format,
        target.key_placement.as_ref(),
        key,
        |_: &str| None,
    );
    let query = injection.apply_to_query("");
    let url = llm_url(target.target_base_url.as_str(), action, &query)?;
    Ok(ProbeRequest {
        method,
        url,
        injection,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use domain::{KeyLocation, KeyPlacement, OutputFormat};

    fn target(base: &str, api: ApiFormat) -> LlmTarget {
        LlmTarget {
            target_base_url: base.parse().unwrap(),
            api_format: api,
            output_format: OutputFormat::None,
            key_placement: None,
        }
    }

    fn headers(request: &ProbeRequest<'_>) -> Vec<(String, String)> {
        request
            .injection
            .headers()
            .map(|h| (h.name.to_owned(), h.value.clone().into_owned()))
            .collect()
    }

    #[test]
    fn every_probe_is_a_get() {
        for api in [
            ApiFormat::OpenaiCompatible,
            ApiFormat::AnthropicNative,
            ApiFormat::GeminiNative,
        ] {
            assert_eq!(probe(api).method, "GET");
        }
    }

    #[test]
    fn openai_probe_lists_models_relative_to_the_base() {
        let t = target("https://api.openai.com/v1", ApiFormat::OpenaiCompatible);
        let request = probe_request(&t, "sk-1").unwrap();
        assert_eq!(request.url, "https://api.openai.com/v1/models");
        assert_eq!(
            headers(&request),
            [("authorization".to_owned(), "Bearer sk-1".to_owned())]
        );

        let compatible = target("https://openrouter.ai/api/v1/", ApiFormat::OpenaiCompatible);
        assert_eq!(
            probe_request(&compatible, "k").unwrap().url,
            "https://openrouter.ai/api/v1/models"
        );
    }

    #[test]
    fn anthropic_probe_sends_key_and_version() {
        let t = target("https://api.anthropic.com", ApiFormat::AnthropicNative);
        let request = probe_request(&t, "sk-ant").unwrap();
        assert_eq!(request.url, "https://api.anthropic.com/v1/models");
        assert_eq!(
            headers(&request),
            [
                ("x-api-key".to_owned(), "sk-ant".to_owned()),
                ("anthropic-version".to_owned(), "2023-06-01".to_owned())
            ]
        );
        let with_v1 = target("https://api.anthropic.com/v1", ApiFormat::AnthropicNative);
        assert_eq!(
            probe_request(&with_v1, "k").unwrap().url,
            "https://api.anthropic.com/v1/models"
        );
    }

    #[test]
    fn gemini_probe_lists_v1beta_models() {
        let t = target(
            "https://generativelanguage.googleapis.com",
            ApiFormat::GeminiNative,
        );
        let request = probe_request(&t, "AIza").unwrap();
        assert_eq!(
            request.url,
            "https://generativelanguage.googleapis.com/v1beta/models"
        );
        assert_eq!(
            headers(&request),
            [("x-goog-api-key".to_owned(), "AIza".to_owned())]
        );
    }

    #[test]
    fn probe_honours_a_query_placement() {
        let mut t = target(
            "https://generativelanguage.googleapis.com",
            ApiFormat::GeminiNative,
        );
        t.key_placement = Some(KeyPlacement::new(KeyLocation::Query, "key").unwrap());
        let request = probe_request(&t, "AIza+1").unwrap();
        assert_eq!(
            request.url,
            "https://generativelanguage.googleapis.com/v1beta/models?key=AIza%2B1"
        );
        assert_eq!(headers(&request), []);
    }
}
