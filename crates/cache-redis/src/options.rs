//! [`RedisOptions`]: where Redis is (standalone, Sentinel or Cluster, with or without TLS), the
//! key prefix, the pool size, the timeouts, the size of the counter blocks an instance reserves
//! and the lease of client-key concurrency slots.

use std::{fmt, path::PathBuf, time::Duration};

/// How a [`crate::RedisCache`] connects.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Where Redis is, in the client's URL forms; the topology follows the scheme:
    /// - standalone: `redis://[[username]:password@]host:port/db`;
    /// - Cluster: `redis-cluster://[[username]:password@]host:port?node=host2:port2&node=…`
    ///   (one reachable node is enough, the others are discovered);
    /// - Sentinel: `redis-sentinel://[[username]:password@]host:port/db?sentinelServiceName=name&node=host2:port2&…`
    ///   (the hosts are the sentinels; the username and password are the data nodes').
    ///
    /// `rediss`, `rediss-cluster` and `rediss-sentinel` connect with TLS. The credentials are
    /// never printed: `Debug` masks them.
    pub url: String,
    /// A PEM file of the certificate authorities to trust for TLS (`rediss…` URLs) instead of the
    /// system's: for a Redis whose certificate a private CA signed. A server certificate that
    /// does not verify against them (or, without this file, against the system's) is refused.
    pub tls_ca_cert_file: Option<PathBuf>,
    /// Prefix of every key and channel, so several deployments (or test runs) can share one
    /// Redis: `{namespace}:rr:{config_id}`, `{namespace}:cool:{key_id}`, `{namespace}:health`,
    /// `{namespace}:usage:{key_id}`, `{namespace}:lease:{name}`, `{namespace}:config-changes`;
    /// with a rotation block size above 1 also the channel `{namespace}:health-changes` and its
    /// sequence number `{namespace}:health-version`. Default `akr`.
    pub namespace: String,
    /// Connections used for commands (at least 1); pub/sub uses one more. Default 4.
    pub pool_size: usize,
    /// Longest wait for a connection (and its handshake) to be established. Default 5 s.
    pub connect_timeout: Duration,
    /// Longest wait for one command's answer. Default 2 s.
    pub command_timeout: Duration,
    /// How many round-robin counter values an instance reserves per config with one `INCRBY`
    /// (at least 1). Default 1: every selection increments the shared counter and reads key
    /// health from Redis, one round trip per proxied request, exactly as without blocks.
    ///
    /// Above 1, selections take counter values from a block reserved locally and read key health
    /// from a local mirror, so most requests need no round trip at all. The mirror is refreshed
    /// by every block reservation and kept exact in between by the `{namespace}:health-changes`
    /// channel, on which every instance in block mode announces its health changes. Values are
    /// never handed out twice nor lost, but the split of requests over a config's keys across
    /// the fleet is even only to within one block per instance (each instance still cycles
    /// through the keys with consecutive values). 32, for example, costs one round trip per 32
    /// selections of a config. Every instance sharing a namespace should use the same setting:
    /// instances with block size 1 do not announce their health changes, so instances in block
    /// mode only see those on their next reservation.
    pub rotation_block_size: u32,
    /// How long a client key's concurrency slot goes on counting once its instance stops
    /// renewing it (it crashed, or the cache was dropped or quit): the slot's lease in
    /// `{<namespace>:ck:<id>}:slots`. A live instance renews the slots it holds every third of
    /// the lease, so an exchange may last longer than the lease and keep its slot. Default
    /// 10 min; at least 100 ms. Shorter frees a crashed instance's slots sooner, for one more
    /// script per client key holding slots per renewal.
    pub client_slot_lease: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            tls_ca_cert_file: None,
            namespace: "akr".to_owned(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            client_slot_lease: Duration::from_secs(600),
            rotation_block_size: 1,
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact_url(&self.url))
            .field("tls_ca_cert_file", &self.tls_ca_cert_file)
            .field("namespace", &self.namespace)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("rotation_block_size", &self.rotation_block_size)
            .field("client_slot_lease", &self.client_slot_lease)
            .finish()
    }
}

/// The URL with any credentials between `://` and `@` replaced by `***`, and the sentinels'
/// password (`sentinelPassword=` in the query) too.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return "***".to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let shown = match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    };
    redact_sentinel_password(&shown)
}

/// `sentinelPassword=…` in a query replaced by `sentinelPassword=***`.
fn redact_sentinel_password(url: &str) -> String {
    const PARAMETER: &str = "sentinelPassword=";
    let Some(query_start) = url.find('?') else {
        return url.to_owned();
    };
    let (base, query) = url.split_at(query_start + 1);
    let pairs: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with(PARAMETER) {
                "sentinelPassword=***"
            } else {
                pair
            }
        })
        .collect();
    format!("{base}{}", pairs.join("&"))
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

    #[test]
    fn cluster_and_sentinel_urls_hide_every_password() {
        assert_eq!(
            redact_url("redis-cluster://app:pw@10.0.0.1:7000?node=10.0.0.2:7000"),
            "redis-cluster://***@10.0.0.1:7000?node=10.0.0.2:7000"
        );
        assert_eq!(
            redact_url(
                "rediss-sentinel://app:pw@s1:26379/0?sentinelServiceName=main&sentinelPassword=spw&node=s2:26379"
            ),
            "rediss-sentinel://***@s1:26379/0?sentinelServiceName=main&sentinelPassword=***&node=s2:26379"
        );
        assert_eq!(
            redact_url("redis-cluster://h:7000?node=x@y:1"),
            "redis-cluster://h:7000?node=x@y:1",
            "an @ in the query is not a credential"
        );
    }
}
