//! [`MemoryLeases`]: named leases inside one process, for jobs that must not run twice at once
//! (several servers in one test process, or an embedded deployment).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use domain::{Leases, Result};

/// In-process [`Leases`]; expiry is checked on every call, no sweeper runs.
#[derive(Debug, Default)]
pub struct MemoryLeases {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

#[async_trait]
impl Leases for MemoryLeases {
    async fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.get_mut(name) {
            Some((owner, expires)) if owner != holder && *expires > now => Ok(false),
            Some((owner, expires)) => {
                holder.clone_into(owner);
                *expires = now + ttl;
                Ok(true)
            }
            None => {
                held.insert(name.to_owned(), (holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn release(&self, name: &str, holder: &str) -> Result<()> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.get(name).is_some_and(|(owner, _)| owner == holder) {
            held.remove(name);
        }
        Ok(())
    }
}
