//! Why a client request could not be converted to the upstream's format, with the HTTP status
//! and SPEC error code the server answers with (rendered in the client's format by
//! [`crate::error_body`]).

use super::neutral::ToolPairing;

/// A client request that cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The body is not JSON of the client format's request shape.
    #[error("the request body is not a valid {format} request: {detail}")]
    InvalidBody {
        /// The client format's name.
        format: &'static str,
        /// What the JSON parser said.
        detail: String,
    },
    /// The action is not an endpoint this conversion handles.
    #[error(
        "`{action}` cannot be converted to the upstream's format; call the chat endpoint of your format ({expected})"
    )]
    UnsupportedAction {
        /// The action the client called.
        action: String,
        /// The action(s) that are converted.
        expected: &'static str,
    },
    /// The upstream needs a model name and the request gives none.
    #[error("the request names no model; set `model` in the body")]
    MissingModel,
    /// The model name cannot be placed in the upstream path.
    #[error("the model name `{0}` is not valid; use letters, digits, `.`, `-` and `_`")]
    InvalidModel(String),
    /// The request uses a feature the upstream's format cannot express.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A tool call has no result in the turn right after it (every provider refuses this).
    #[error(
        "tool call `{0}` has no result right after it; send the result of every call in the tool turn that follows the assistant turn that made it"
    )]
    UnansweredToolCall(String),
    /// A tool result answers no call of the assistant turn right before it.
    #[error(
        "the tool result for `{0}` answers no tool call of the assistant turn right before it; send results right after the turn that made the calls"
    )]
    UnmatchedToolResult(String),
    /// Nothing of the conversation is left that the upstream accepts (no message, or only
    /// empty and whitespace-only text).
    #[error("the conversation has no message with content; send at least one non-empty message")]
    EmptyConversation,
}

impl From<ToolPairing> for ConvertError {
    fn from(pairing: ToolPairing) -> Self {
        match pairing {
            ToolPairing::Unanswered { call_id } => ConvertError::UnansweredToolCall(call_id),
            ToolPairing::Unmatched { call_id } => ConvertError::UnmatchedToolResult(call_id),
        }
    }
}

/// An upstream response body that is not the upstream format's response shape (answered to the
/// client as a 502 in its own error shape).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MalformedResponse(#[from] serde_json::Error);

impl ConvertError {
    /// The HTTP status to answer with: 404 for an unconverted endpoint, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ConvertError::UnsupportedAction { .. } => 404,
            ConvertError::InvalidBody { .. }
            | ConvertError::MissingModel
            | ConvertError::InvalidModel(_)
            | ConvertError::Unsupported(_)
            | ConvertError::UnansweredToolCall(_)
            | ConvertError::UnmatchedToolResult(_)
            | ConvertError::EmptyConversation => 400,
        }
    }

    /// The SPEC error code (snake_case).
    pub fn code(&self) -> &'static str {
        match self {
            ConvertError::InvalidBody { .. } => "invalid_request_body",
            ConvertError::UnsupportedAction { .. } => "unsupported_conversion",
            ConvertError::MissingModel => "missing_model",
            ConvertError::InvalidModel(_) => "invalid_model",
            ConvertError::Unsupported(_) => "unsupported_feature",
            ConvertError::UnansweredToolCall(_) | ConvertError::UnmatchedToolResult(_) => {
                "unpaired_tool_call"
            }
            ConvertError::EmptyConversation => "empty_conversation",
        }
    }

    pub(crate) fn invalid(format: &'static str, err: impl std::fmt::Display) -> Self {
        ConvertError::InvalidBody {
            format,
            detail: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let unsupported = ConvertError::UnsupportedAction {
            action: "v1/models".to_owned(),
            expected: "v1/chat/completions",
        };
        assert_eq!(unsupported.status(), 404);
        assert_eq!(unsupported.code(), "unsupported_conversion");
        assert_eq!(ConvertError::MissingModel.status(), 400);
        assert!(
            ConvertError::invalid("OpenAI Chat Completions", "expected value at line 1")
                .to_string()
                .starts_with("the request body is not a valid OpenAI Chat Completions request")
        );
    }
}
