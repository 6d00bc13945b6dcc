//! Client keys (SPEC §7): the keys admins issue to one team, app or person, each with its own
//! scope, limits, budget and expiry, beside the unlimited `GLOBAL_PROXY_KEYS`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Database identifier of a client key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientKeyId(pub i64);

impl fmt::Display for ClientKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
