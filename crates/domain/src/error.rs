//! The error categories every port and service reports; adapters convert their own errors into
//! these once, and the server maps each category to one HTTP status.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::command::ValidationErrors;

/// Result with the domain's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a record is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A proxy config.
    ProxyConfig,
    /// An upstream API key.
    ApiKey,
    /// A client key (SPEC §7).
    ClientKey,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::ProxyConfig => "proxy config",
            Entity::ApiKey => "api key",
            Entity::ClientKey => "client key",
        })
    }
}

/// A service the rotator depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The configuration database.
    Database,
    /// The cache holding rotation state and counters (in-process or Redis).
    Cache,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dependency::Database => "database",
            Dependency::Cache => "cache",
        })
    }
}

/// Every failure the domain and its ports can report, by category.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record does not exist.
    #[error("{entity} {id} not found")]
    NotFound {
        /// What was looked for.
        entity: Entity,
        /// The identifier that was looked for, as text.
        id: String,
    },
    /// A unique field already holds this value.
    #[error("a {entity} with this {field} already exists")]
    Conflict {
        /// The kind of record.
        entity: Entity,
        /// The field whose value is taken (`name`, `slug`, `key_value`).
        field: &'static str,
    },
    /// The input failed validation; every bad field is listed.
    #[error("{0}")]
    Invalid(ValidationErrors),
    /// A dependency could not be reached or answered with an error.
    #[error("{dependency} unavailable: {message}")]
    Unavailable {
        /// Which dependency.
        dependency: Dependency,
        /// A sanitised description, safe to show to an admin (never raw driver text).
        message: String,
    },
    /// Every key of the config is cooling down, failed or disabled.
    #[error("{}", no_usable_key_message(*retry_at))]
    NoUsableKey {
        /// When the first cooling key comes back; `None` when no key will come back by itself.
        retry_at: Option<DateTime<Utc>>,
    },
    /// An invariant was broken (corrupt stored data, a bug); details are for the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

fn no_usable_key_message(retry_at: Option<DateTime<Utc>>) -> String {
    match retry_at {
        Some(at) => format!(
            "no usable upstream key: every key is cooling down or disabled; the first one comes back at {}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => "no usable upstream key: every key is disabled or failed; add or re-enable a key"
            .to_owned(),
    }
}

impl Error {
    /// Shorthand for a missing proxy config.
    pub fn config_not_found(id: impl fmt::Display) -> Self {
        Error::NotFound {
            entity: Entity::ProxyConfig,
            id: id.to_string(),
        }
    }

    /// Shorthand for a missing API key.
    pub fn key_not_found(id: impl fmt::Display) -> Self {
        Error::NotFound {
            entity: Entity::ApiKey,
            id: id.to_string(),
        }
    }

    /// Shorthand for an unreachable database.
    pub fn database(message: impl Into<String>) -> Self {
        Error::Unavailable {
            dependency: Dependency::Database,
            message: message.into(),
        }
    }

    /// Shorthand for an unreachable cache.
    pub fn cache(message: impl Into<String>) -> Self {
        Error::Unavailable {
            dependency: Dependency::Cache,
            message: message.into(),
        }
    }
}

impl From<ValidationErrors> for Error {
    fn from(errors: ValidationErrors) -> Self {
        Error::Invalid(errors)
    }
}
