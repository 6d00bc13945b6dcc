//! Renewal of the concurrency slots this instance holds. A slot's lease (see `client_limits`)
//! exists so that a crashed instance's slots stop counting; a live holder must not lose its slot
//! to it, however long its exchange lasts (a long SSE stream). So the cache records every slot
//! it hands out ([`HeldSlots::hold`]) until it is given back ([`HeldSlots::give_back`]), and one
//! task per cache ([`renew_held_slots`]) pushes the lease of every recorded slot to a full lease
//! from now, every third of a lease: a held slot always has two thirds of a lease left or more.
//!
//! The renewal only updates members still in the set (`ZADD XX`), so it never brings back a slot
//! given back in between (its `ZREM` may overtake the renewal). A slot is forgotten before its
//! `ZREM` is sent, so a slot whose `ZREM` failed (Redis down) is no longer renewed and ends with
//! its lease. When the cache is dropped or quits, the task ends and every slot it held ends with
//! its lease, as a crashed instance's would. The renewal script goes by digest (`EVALSHA`), as
//! the admission scripts do.
//!
//! While Redis is unreachable renewals fail: the first failure of an outage is logged, and the
//! next tick tries again. A slot whose lease ran out during a long outage (two thirds of a lease
//! without a renewal) counts again once renewed, unless an admission removed it meanwhile; the
//! fleet may then have admitted past `max_concurrency`, as it may while limits are local.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use chrono::Utc;
use domain::{ClientKeyId, Result, SlotId};
use fred::{prelude::Pool, types::scripts::Script};
use tokio::time::{Instant, MissedTickBehavior};

use crate::{client_limits::member, convert::cache_error, keys::KeyNames};

/// Renews the lease of the members given, if they are still in the set, and keeps the set for
/// two leases, as an admission does (`PEXPIRE` of a set gone is a no-op). `KEYS[1]` = the
/// slots; `ARGV[1]` = the leases' new end (Unix ms), `ARGV[2]` = the set's time to live (ms),
/// `ARGV[3..]` = the members. Answers how many members it renewed.
const RENEW: &str = r"
local renewed = 0
for i = 3, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return renewed
";

/// [`RENEW`] with its digest, sent with `EVALSHA` (loaded again on `NOSCRIPT`).
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(RENEW));

/// The slots this cache handed out and has not been given back, per client key.
#[derive(Debug, Default)]
pub(crate) struct HeldSlots {
    // A client key holds at most its `max_concurrency` slots here, usually a handful, so a
    // vector beats a set; the lock is held for a push or a short scan, never across an await.
    by_key: Mutex<HashMap<ClientKeyId, Vec<SlotId>>>,
}

impl HeldSlots {
    /// Records a slot handed out to a caller, who gives it back through `give_back`.
    pub(crate) fn hold(&self, key: ClientKeyId, slot: SlotId) {
        self.lock().entry(key).or_default().push(slot);
    }

    /// Forgets a slot; one that was never held (or already given back) changes nothing.
    pub(crate) fn give_back(&self, key: ClientKeyId, slot: SlotId) {
        let mut by_key = self.lock();
        let Some(slots) = by_key.get_mut(&key) else {
            return;
        };
        if let Some(at) = slots.iter().position(|&held| held == slot) {
            slots.swap_remove(at);
        }
        if slots.is_empty() {
            by_key.remove(&key);
        }
    }

    /// The slots held now, copied so the renewal's round trips run without the lock.
    fn snapshot(&self) -> Vec<(ClientKeyId, Vec<SlotId>)> {
        self.lock()
            .iter()
            .map(|(&key, slots)| (key, slots.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKeyId, Vec<SlotId>>> {
        // The map stays consistent whatever panicked while holding it: each change is one step.
        self.by_key.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the renewal task needs; it holds no `RedisCache`, so dropping the last one ends it.
pub(crate) struct Renewal {
    pub(crate) pool: Pool,
    pub(crate) names: KeyNames,
    pub(crate) held: Arc<HeldSlots>,
    pub(crate) lease: Duration,
}

impl Renewal {
    /// How often held slots are renewed: a third of the lease, so a renewal can fail once and
    /// the next one still finds the slot counting.
    pub(crate) fn period(lease: Duration) -> Duration {
        lease / 3
    }

    /// One round of renewals: one script per client key holding slots, stopping at the first
    /// failure (Redis is most likely down: the others would each wait for their timeout).
    async fn renew_all(&self) -> Result<()> {
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let ends = Utc::now().timestamp_millis().saturating_add(lease_ms);
        let ttl = lease_ms.saturating_mul(2);
        for (key, slots) in self.held.snapshot() {
            let mut args = Vec::with_capacity(slots.len() + 2);
            args.extend([ends.to_string(), ttl.to_string()]);
            args.extend(slots.into_iter().map(member));
            let _renewed: i64 = RENEW_SCRIPT
                .evalsha_with_reload(
                    self.pool.next_connected(),
                    vec![self.names.client_key_slots(key)],
                    args,
                )
                .await
                .map_err(|e| cache_error(&e))?;
        }
        Ok(())
    }
}

/// Renews every held slot each `Renewal::period` until the task is aborted (the cache was
/// dropped or quit). A failure is logged once per outage and retried at the next tick.
pub(crate) async fn renew_held_slots(renewal: Renewal) {
    let period = Renewal::period(renewal.lease);
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    // After a stall, one renewal is enough: each sets a full lease from now.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut outage = Outage::default();
    loop {
        ticks.tick().await;
        let renewed = renewal.renew_all().await;
        if !outage.changed(renewed.is_err()) {
            continue;
        }
        match renewed {
            Err(error) => {
                tracing::warn!(%error, retry_every = ?period, "client-key concurrency slots could not be renewed; a slot not renewed within its lease stops counting");
            }
            Ok(()) => tracing::info!("client-key concurrency slots are renewed again"),
        }
    }
}

/// Whether renewals are failing, so that an outage is logged when it begins and ends, not at
/// every tick in between.
#[derive(Debug, Default)]
struct Outage {
    failing: bool,
}

impl Outage {
    /// Records the last renewal's outcome; true when it differs from the one before.
    fn changed(&mut self, failing: bool) -> bool {
        std::mem::replace(&mut self.failing, failing) != failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_given_back_are_no_longer_renewed() {
        let held = HeldSlots::default();
        let (a, b) = (ClientKeyId(1), ClientKeyId(2));
        held.hold(a, SlotId(10));
        held.hold(a, SlotId(11));
        held.hold(b, SlotId(12));

        held.give_back(a, SlotId(10));
        held.give_back(b, SlotId(12));
        held.give_back(b, SlotId(99));

        assert_eq!(held.snapshot(), vec![(a, vec![SlotId(11)])]);
    }

    #[test]
    fn a_slot_never_held_changes_nothing() {
        let held = HeldSlots::default();
        held.give_back(ClientKeyId(1), SlotId(1));
        assert!(held.snapshot().is_empty());
    }

    #[test]
    fn an_outage_is_reported_when_it_begins_and_ends_only() {
        let mut outage = Outage::default();
        let reports: Vec<bool> = [false, true, true, true, false, false, true]
            .into_iter()
            .map(|failing| outage.changed(failing))
            .collect();
        assert_eq!(reports, [false, true, false, false, true, false, true]);
    }

    #[test]
    fn a_held_slot_is_renewed_three_times_a_lease() {
        assert_eq!(
            Renewal::period(Duration::from_secs(600)),
            Duration::from_secs(200)
        );
    }
}
