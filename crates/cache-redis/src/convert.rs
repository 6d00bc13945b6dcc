//! Mapping between Redis replies and domain values, and from client errors to the domain's
//! `Unavailable { Cache }` with a sanitised message (never the server's or client's raw text,
//! which may echo a URL or credentials).

use chrono::{DateTime, Utc};
use domain::{Error, KeyHealth};
use fred::error::{Error as RedisError, ErrorKind};

/// The value stored in the health hash for a failed key.
pub(crate) const FAILED: &str = "failed";

/// Converts a client error into the domain's cache-unavailable error, logging the details.
pub(crate) fn cache_error(error: &RedisError) -> Error {
    let kind = error.kind();
    let message = match kind {
        ErrorKind::IO | ErrorKind::Canceled => {
            "redis is unreachable; check REDIS_URL and that Redis is running"
        }
        ErrorKind::Timeout => "redis did not answer in time",
        ErrorKind::Auth => "redis rejected the credentials; check REDIS_PASSWORD or REDIS_URL",
        ErrorKind::Config | ErrorKind::Url => "invalid redis settings; check REDIS_URL",
        ErrorKind::Backpressure => "redis is overloaded",
        // A clustered client follows MOVED itself: one that reaches us came from a cluster node
        // addressed as a standalone server, which can only serve its own slots.
        ErrorKind::Cluster if error.is_moved() => {
            "redis answered MOVED: REDIS_URL names one node of a Redis Cluster; \
             use redis-cluster://host:port?node=host2:port2"
        }
        ErrorKind::Cluster | ErrorKind::Routing => "redis cluster is not ready",
        // The client tried every sentinel; the last failure may be the primary's AUTH.
        ErrorKind::Sentinel => {
            "no sentinel named a primary that accepted the connection; check REDIS_URL's \
             sentinels, sentinelServiceName and credentials"
        }
        ErrorKind::Tls => {
            "the TLS handshake with redis failed; check the certificate and REDIS_TLS_CA_CERT_FILE"
        }
        _ => "redis answered unexpectedly",
    };
    if matches!(kind, ErrorKind::Config | ErrorKind::Url | ErrorKind::Auth) {
        // These may quote the URL or the credentials: log the category only.
        tracing::debug!(?kind, "redis command failed");
    } else {
        tracing::debug!(?kind, details = error.details(), "redis command failed");
    }
    Error::cache(message)
}

/// A key's health from its entry in the health hash and its cooldown value, as of `now`.
pub(crate) fn key_health(
    failed: Option<&str>,
    cooling_until_ms: Option<&str>,
    now: DateTime<Utc>,
) -> KeyHealth {
    if failed == Some(FAILED) {
        return KeyHealth::Failed;
    }
    cooling_until_ms
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .filter(|&until| until > now)
        .map_or(KeyHealth::Ok, |until| KeyHealth::Cooling { until })
}

/// A timestamp from Unix milliseconds, as Redis holds it.
pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| Error::Internal(format!("redis holds an impossible time: {ms} ms")))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn failure_outranks_a_cooldown() {
        let now = Utc::now();
        let later = (now + TimeDelta::seconds(30))
            .timestamp_millis()
            .to_string();
        assert_eq!(
            key_health(Some(FAILED), Some(&later), now),
            KeyHealth::Failed
        );
    }

    #[test]
    fn a_cooldown_reads_cooling_until_it_ends() {
        let now = DateTime::from_timestamp_millis(1_790_000_000_000).unwrap_or_default();
        let until = now + TimeDelta::seconds(30);
        let value = until.timestamp_millis().to_string();
        assert_eq!(
            key_health(None, Some(&value), now),
            KeyHealth::Cooling { until }
        );
        assert_eq!(
            key_health(None, Some(&value), until),
            KeyHealth::Ok,
            "an ended cooldown reads ok even before Redis expires it"
        );
        assert_eq!(key_health(None, Some("garbage"), now), KeyHealth::Ok);
        assert_eq!(key_health(None, None, now), KeyHealth::Ok);
    }

    #[test]
    fn errors_are_sanitised() {
        let raw = RedisError::new(ErrorKind::Auth, "WRONGPASS for redis://u:hunter2@h");
        let shown = cache_error(&raw).to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.starts_with("cache unavailable: "), "{shown}");
    }

    #[test]
    fn a_moved_reply_says_to_use_the_cluster_url() {
        let moved = RedisError::new(ErrorKind::Cluster, "MOVED 3999 10.0.0.2:6381");
        assert!(
            cache_error(&moved).to_string().contains("redis-cluster://"),
            "{}",
            cache_error(&moved)
        );
        let down = RedisError::new(ErrorKind::Cluster, "CLUSTERDOWN The cluster is down");
        assert!(!cache_error(&down).to_string().contains("MOVED"));
    }
}
