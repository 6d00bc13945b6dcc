//! The names of every Redis key and channel the adapter uses, all under one namespace prefix.
//!
//! Every key of the rotation state (counters, cooldowns, key health, its version, usage, leases)
//! starts with the hash tag `{namespace}`, so Redis Cluster keeps them all in one hash slot: each
//! Lua script and each pipelined read touches a single slot (scripts may only touch one), and
//! the "read the version first, then the keys" ordering holds because one node answers both.
//! The health version is one counter for the whole namespace (the `RotationState` port reads
//! key health by key id, without the config), which is why the tag is the namespace and not a
//! config. Channels are not keys: they keep the plain `namespace:` prefix, and classic pub/sub
//! reaches every node of a cluster whatever the name.

use domain::{ApiKeyId, ProxyConfigId};

/// Builds key names under `{namespace}:` and channel names under `namespace:`.
#[derive(Debug, Clone)]
pub(crate) struct KeyNames {
    namespace: String,
    /// `{namespace}`: the hash tag that puts every rotation-state key in one slot.
    tag: String,
}

impl KeyNames {
    pub(crate) fn new(namespace: &str) -> Self {
        KeyNames {
            namespace: namespace.to_owned(),
            tag: format!("{{{namespace}}}"),
        }
    }

    /// The round-robin counter of a config (`INCR`).
    pub(crate) fn counter(&self, config: ProxyConfigId) -> String {
        format!("{}:rr:{config}", self.tag)
    }

    /// A key's cooldown: a string holding the end in Unix milliseconds, expiring then.
    pub(crate) fn cooldown(&self, key: ApiKeyId) -> String {
        format!("{}:cool:{key}", self.tag)
    }

    /// The hash of failed keys: field = key id.
    pub(crate) fn health(&self) -> String {
        format!("{}:health", self.tag)
    }

    /// A key's usage totals: a hash of `requests`, `failures`, `last_status`, `last_used_at`.
    pub(crate) fn usage(&self, key: ApiKeyId) -> String {
        format!("{}:usage:{key}", self.tag)
    }

    /// A named lease: a string holding the holder's name, expiring with the lease.
    pub(crate) fn lease(&self, name: &str) -> String {
        format!("{}:lease:{name}", self.tag)
    }

    /// The health version: a counter bumped by every announced health change, in the same script
    /// as the change, so every instance applies the changes in Redis' order.
    pub(crate) fn health_version(&self) -> String {
        format!("{}:health-version", self.tag)
    }

    /// The hash tag of one client key's limiter state: every key a limiter script touches for
    /// this client key starts with it, so they share a cluster slot.
    pub(crate) fn client_key_tag(&self, key: domain::ClientKeyId) -> String {
        format!("{{{}:ck:{key}}}", self.namespace)
    }

    /// A client key's limiter state: a hash of its GCRA arrival times and budget count.
    pub(crate) fn client_key_state(&self, key: domain::ClientKeyId) -> String {
        format!("{}:state", self.client_key_tag(key))
    }

    /// A client key's concurrency slots in flight: a sorted set scored by each lease's end.
    pub(crate) fn client_key_slots(&self, key: domain::ClientKeyId) -> String {
        format!("{}:slots", self.client_key_tag(key))
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
}

#[cfg(test)]
mod tests {
    use fred::util::redis_keyslot;

    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        let names = KeyNames::new("akr");
        assert_eq!(names.counter(ProxyConfigId(3)), "{akr}:rr:3");
        assert_eq!(names.cooldown(ApiKeyId(9)), "{akr}:cool:9");
        assert_eq!(names.health(), "{akr}:health");
        assert_eq!(names.usage(ApiKeyId(9)), "{akr}:usage:9");
        assert_eq!(names.lease("probe"), "{akr}:lease:probe");
        assert_eq!(names.health_version(), "{akr}:health-version");
        assert_eq!(names.changes(), "akr:config-changes");
        assert_eq!(names.health_changes(), "akr:health-changes");
        let client_key = domain::ClientKeyId(4);
        assert_eq!(names.client_key_state(client_key), "{akr:ck:4}:state");
        assert_eq!(names.client_key_slots(client_key), "{akr:ck:4}:slots");
    }

    #[test]
    fn every_key_of_a_namespace_hashes_to_one_cluster_slot() {
        let names = KeyNames::new("akr-prod");
        let keys = [
            names.counter(ProxyConfigId(1)),
            names.counter(ProxyConfigId(987_654)),
            names.cooldown(ApiKeyId(5)),
            names.health(),
            names.usage(ApiKeyId(77)),
            names.lease("recovery"),
            names.health_version(),
        ];
        let slot = redis_keyslot(b"akr-prod");
        for key in &keys {
            assert_eq!(redis_keyslot(key.as_bytes()), slot, "{key}");
        }
        assert_ne!(
            redis_keyslot(KeyNames::new("other").health().as_bytes()),
            slot,
            "another namespace may live on another node"
        );
        let client_key = domain::ClientKeyId(31);
        assert_eq!(
            redis_keyslot(names.client_key_state(client_key).as_bytes()),
            redis_keyslot(names.client_key_slots(client_key).as_bytes()),
            "the admission and renewal scripts touch one client key's keys together"
        );
    }
}
