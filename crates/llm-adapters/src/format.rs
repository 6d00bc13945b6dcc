//! The wire format a client speaks, with the config's `none` already resolved, so every
//! client-side rule can match on exactly four cases.

use domain::{ApiFormat, LlmTarget, OutputFormat};

/// The format the clients of an LLM config speak: [`LlmTarget::client_format`] without the
/// `none` case, which cannot be handled without the upstream format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientFormat {
    /// OpenAI Chat Completions (and the other OpenAI endpoints).
    Openai,
    /// OpenAI Responses.
    OpenaiResponses,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
}

impl ClientFormat {
    /// Resolves a config's output format against its upstream format (`none` = the upstream's).
    pub fn resolve(output: OutputFormat, upstream: ApiFormat) -> Self {
        match output {
            OutputFormat::Openai => ClientFormat::Openai,
            OutputFormat::OpenaiResponses => ClientFormat::OpenaiResponses,
            OutputFormat::Anthropic => ClientFormat::Anthropic,
            OutputFormat::Gemini => ClientFormat::Gemini,
            OutputFormat::None => Self::native(upstream),
        }
    }

    /// The client format that speaks the upstream format natively.
    pub fn native(upstream: ApiFormat) -> Self {
        match upstream {
            ApiFormat::OpenaiCompatible => ClientFormat::Openai,
            ApiFormat::AnthropicNative => ClientFormat::Anthropic,
            ApiFormat::GeminiNative => ClientFormat::Gemini,
        }
    }

    /// Whether the client speaks one of OpenAI's formats (same authentication rules).
    pub fn is_openai(self) -> bool {
        matches!(self, ClientFormat::Openai | ClientFormat::OpenaiResponses)
    }
}

impl From<&LlmTarget> for ClientFormat {
    fn from(target: &LlmTarget) -> Self {
        ClientFormat::resolve(target.output_format, target.api_format)
    }
}

/// [`OutputFormat::None`] given where a resolved client format is needed; resolve it with
/// [`ClientFormat::resolve`] or [`LlmTarget::client_format`] first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("output format `none` must be resolved against the upstream format first")]
pub struct NoClientFormat;

impl TryFrom<OutputFormat> for ClientFormat {
    type Error = NoClientFormat;

    fn try_from(output: OutputFormat) -> Result<Self, Self::Error> {
        match output {
            OutputFormat::None => Err(NoClientFormat),
            OutputFormat::Openai => Ok(ClientFormat::Openai),
            OutputFormat::OpenaiResponses => Ok(ClientFormat::OpenaiResponses),
            OutputFormat::Anthropic => Ok(ClientFormat::Anthropic),
            OutputFormat::Gemini => Ok(ClientFormat::Gemini),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn target(api: ApiFormat, output: OutputFormat) -> LlmTarget {
        LlmTarget {
            target_base_url: "https://x.example".parse().unwrap(),
            api_format: api,
            output_format: output,
            key_placement: None,
        }
    }

    #[test]
    fn none_resolves_to_the_upstream_native_format() {
        assert_eq!(
            ClientFormat::from(&target(ApiFormat::OpenaiCompatible, OutputFormat::None)),
            ClientFormat::Openai
        );
        assert_eq!(
            ClientFormat::from(&target(ApiFormat::AnthropicNative, OutputFormat::None)),
            ClientFormat::Anthropic
        );
        assert_eq!(
            ClientFormat::from(&target(ApiFormat::GeminiNative, OutputFormat::None)),
            ClientFormat::Gemini
        );
    }

    #[test]
    fn explicit_output_format_wins_over_the_upstream() {
        assert_eq!(
            ClientFormat::from(&target(
                ApiFormat::GeminiNative,
                OutputFormat::OpenaiResponses
            )),
            ClientFormat::OpenaiResponses
        );
    }

    #[test]
    fn agrees_with_domain_client_format() {
        for api in [
            ApiFormat::OpenaiCompatible,
            ApiFormat::AnthropicNative,
            ApiFormat::GeminiNative,
        ] {
            for output in [
                OutputFormat::None,
                OutputFormat::Openai,
                OutputFormat::OpenaiResponses,
                OutputFormat::Anthropic,
                OutputFormat::Gemini,
            ] {
                let t = target(api, output);
                assert_eq!(
                    ClientFormat::try_from(t.client_format()).unwrap(),
                    ClientFormat::from(&t)
                );
            }
        }
    }

    #[test]
    fn unresolved_none_is_rejected() {
        assert_eq!(
            ClientFormat::try_from(OutputFormat::None),
            Err(NoClientFormat)
        );
    }
}
