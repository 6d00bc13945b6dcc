//! [`RedisOptions`]: where Redis is, the key prefix, the pool size and the timeouts.

use std::{fmt, time::Duration};

/// How a [`crate::RedisCache`] connects.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[[username]:password@]host:port/db`. The credentials are never printed: `Debug`
    /// masks them.
    pub url: String,
    /// Prefix of every key and channel, so several deployments (or test runs) can share one
    /// Redis: `{namespace}:rr:{config_id}`, `{namespace}:cool:{key_id}`, `{namespace}:health`,
    /// `{namespace}:usage:{key_id}`, `{namespace}:config-changes`. Default `akr`.
    pub namespace: String,
    /// Connections used for commands (at least 1); pub/sub uses one more. Default 4.
    pub pool_size: usize,
    /// Longest wait for a connection (and its handshake) to be established. Default 5 s.
    pub connect_timeout: Duration,
    /// Longest wait for one command's answer. Default 2 s.
    pub command_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            namespace: "akr".to_owned(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// The URL with any credentials between `://` and `@` replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return "***".to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let options = RedisOptions {
            url: "redis://user:s3cr3t@cache.internal:6380/2".to_owned(),
            ..RedisOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("redis://***@cache.internal:6380/2"),
            "{shown}"
        );
    }

    #[test]
    fn urls_without_credentials_are_shown_as_is() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("not a url"), "***");
    }
}
