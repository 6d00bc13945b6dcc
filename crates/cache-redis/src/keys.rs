//! The names of every Redis key and channel the adapter uses, all under one namespace prefix.

use domain::{ApiKeyId, ProxyConfigId};

/// Builds key names under `{namespace}:`.
#[derive(Debug, Clone)]
pub(crate) struct KeyNames {
    namespace: String,
}

impl KeyNames {
    pub(crate) fn new(namespace: &str) -> Self {
        KeyNames {
            namespace: namespace.to_owned(),
        }
    }

    /// The round-robin counter of a config (`INCR`).
    pub(crate) fn counter(&self, config: ProxyConfigId) -> String {
        format!("{}:rr:{config}", self.namespace)
    }

    /// A key's cooldown: a string holding the end in Unix milliseconds, expiring then.
    pub(crate) fn cooldown(&self, key: ApiKeyId) -> String {
        format!("{}:cool:{key}", self.namespace)
    }

    /// The hash of failed keys: field = key id.
    pub(crate) fn health(&self) -> String {
        format!("{}:health", self.namespace)
    }

    /// A key's usage totals: a hash of `requests`, `failures`, `last_status`, `last_used_at`.
    pub(crate) fn usage(&self, key: ApiKeyId) -> String {
        format!("{}:usage:{key}", self.namespace)
    }

    /// A named lease: a string holding the holder's name, expiring with the lease.
    pub(crate) fn lease(&self, name: &str) -> String {
        format!("{}:lease:{name}", self.namespace)
    }

    /// The hash tag of one client key's limiter state: every key a limiter script touches for
    /// this client key starts with it, so they share a cluster slot.
    pub(crate) fn client_key_tag(&self, key: domain::ClientKeyId) -> String {
        format!("{{{}:ck:{key}}}", self.namespace)
    }

    /// The pub/sub channel of config changes.
    pub(crate) fn changes(&self) -> String {
        format!("{}:config-changes", self.namespace)
    }

    /// The pub/sub channel of key health changes, which instances reserving counter blocks use
    /// to keep their local health mirror exact (see `crate::mirror` for the message format).
    pub(crate) fn health_changes(&self) -> String {
        format!("{}:health-changes", self.namespace)
    }

    /// The health version: a counter bumped by every announced health change, in the same script
    /// as the change, so every instance applies the changes in Redis' order.
    pub(crate) fn health_version(&self) -> String {
        format!("{}:health-version", self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        let names = KeyNames::new("akr");
        assert_eq!(names.counter(ProxyConfigId(3)), "akr:rr:3");
        assert_eq!(names.cooldown(ApiKeyId(9)), "akr:cool:9");
        assert_eq!(names.health(), "akr:health");
        assert_eq!(names.usage(ApiKeyId(9)), "akr:usage:9");
        assert_eq!(names.changes(), "akr:config-changes");
        assert_eq!(names.health_changes(), "akr:health-changes");
        assert_eq!(names.health_version(), "akr:health-version");
    }
}
