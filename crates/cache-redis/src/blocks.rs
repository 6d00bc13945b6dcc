//! Counter values reserved in blocks: the bookkeeping of block mode (a rotation block size above
//! 1), in which an instance takes a whole range of a config's round-robin counter with one
//! `INCRBY` and hands its values out one by one without asking Redis.
//!
//! Invariants: a value enters a block only from the range one `INCRBY` answered (so no two
//! instances, and no two refills, ever hold the same value), leaves it only through
//! [`CounterBlocks::take`], and goes back into it when the request it was reserved for is gone
//! before using it (see [`Reservation`]). So every counter value is handed out at most once, and
//! none is lost to a cancelled request: the key split across a fleet stays within one block per
//! instance of even.

use std::{
    collections::{HashMap, VecDeque},
    ops::Range,
    sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock},
};

use domain::{Error, ProxyConfigId, Result};
use tokio::sync::oneshot;

/// The counter values reserved for one config and not handed out yet, in order.
///
/// Usually one range; more only when a value comes back from a cancelled request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CounterBlocks {
    ranges: VecDeque<Range<u64>>,
}

impl CounterBlocks {
    /// The next reserved value, or `None` when the block is used up.
    pub(crate) fn take(&mut self) -> Option<u64> {
        loop {
            let front = self.ranges.front_mut()?;
            if let Some(value) = front.next() {
                if front.is_empty() {
                    self.ranges.pop_front();
                }
                return Some(value);
            }
            self.ranges.pop_front();
        }
    }

    /// Adds a freshly reserved range; an empty one is ignored.
    pub(crate) fn add(&mut self, range: Range<u64>) {
        if !range.is_empty() {
            self.ranges.push_back(range);
        }
    }

    /// Gives back a value taken for a request that did not use it; it is handed out next.
    pub(crate) fn put_back(&mut self, value: u64) {
        self.ranges.push_front(value..value.saturating_add(1));
    }

    /// Whether no value is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.iter().all(Range::is_empty)
    }

    /// How many values are left.
    #[cfg(test)]
    pub(crate) fn remaining(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }
}

/// The range an `INCRBY counter size` that answered `after` reserved: `after - size .. after`.
pub(crate) fn reserved_range(after: i64, size: u32) -> Result<Range<u64>> {
    after
        .checked_sub(i64::from(size))
        .and_then(|start| Some(u64::try_from(start).ok()?..u64::try_from(after).ok()?))
        .ok_or_else(|| Error::Internal(format!("redis counter is corrupt: {after}")))
}

/// One config's reserved values, and the lock that makes its refills single-flight.
#[derive(Debug, Default)]
pub(crate) struct ConfigBlock {
    /// Held only for a few instructions, never across an await.
    values: Mutex<CounterBlocks>,
    /// Held by the one refill in flight (moved into its task, so it stays held even when the
    /// request that started the refill goes away); the other requests that found the block
    /// empty queue on it, then find the values it added.
    refill: Arc<tokio::sync::Mutex<()>>,
}

impl ConfigBlock {
    fn values(&self) -> MutexGuard<'_, CounterBlocks> {
        // Every critical section is a plain VecDeque operation: consistent even after a panic.
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next reserved value, or `None` when a refill is needed.
    pub(crate) fn take(&self) -> Option<u64> {
        self.values().take()
    }

    /// Whether no value is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.values().is_empty()
    }

    /// Adds a freshly reserved range.
    pub(crate) fn add(&self, range: Range<u64>) {
        self.values().add(range);
    }

    /// Gives back a value a request did not use.
    pub(crate) fn put_back(&self, value: u64) {
        self.values().put_back(value);
    }

    /// Waits for the refill lock; the guard may be moved into the refill's task.
    pub(crate) async fn lock_refill(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.refill.clone().lock_owned().await
    }

    /// Takes a value for the request waiting on `reply`; gives it back when that request is
    /// gone. Does nothing when the block is empty (the request then tries again).
    pub(crate) fn reserve_for(&self, reply: oneshot::Sender<u64>) {
        let Some(value) = self.take() else { return };
        if let Err(value) = reply.send(value) {
            self.put_back(value);
        }
    }
}

/// The blocks of every config this instance has drawn from.
#[derive(Debug, Default)]
pub(crate) struct ConfigBlocks {
    configs: RwLock<HashMap<ProxyConfigId, Arc<ConfigBlock>>>,
}

impl ConfigBlocks {
    /// The config's block, created empty on first use.
    pub(crate) fn get(&self, config: ProxyConfigId) -> Arc<ConfigBlock> {
        let known = self
            .configs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&config)
            .cloned();
        known.unwrap_or_else(|| {
            self.configs
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(config)
                .or_default()
                .clone()
        })
    }
}

/// The value a refill takes for the request that started it, delivered over a oneshot channel.
///
/// The refill runs in its own task, so it completes (and keeps its range) even when the request
/// is cancelled. If the request is gone, the value goes back into the block: either the refill's
/// `send` fails and [`ConfigBlock::reserve_for`] puts it back, or the value was already sent and
/// this reservation's `Drop` puts it back.
pub(crate) struct Reservation {
    reply: oneshot::Receiver<u64>,
    block: Arc<ConfigBlock>,
}

impl Reservation {
    /// A reservation for `block`, and the sender its refill answers on.
    pub(crate) fn new(block: Arc<ConfigBlock>) -> (Reservation, oneshot::Sender<u64>) {
        let (sender, reply) = oneshot::channel();
        (Reservation { reply, block }, sender)
    }

    /// The value, once the refill has finished; `None` when it found nothing to reserve.
    pub(crate) fn take(&mut self) -> Option<u64> {
        self.reply.try_recv().ok()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(value) = self.reply.try_recv() {
            self.block.put_back(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_out_in_order_then_run_out() {
        let mut blocks = CounterBlocks::default();
        assert_eq!(blocks.take(), None, "a new block is empty");
        blocks.add(64..67);
        assert_eq!(blocks.remaining(), 3);
        assert_eq!(
            [blocks.take(), blocks.take(), blocks.take()],
            [Some(64), Some(65), Some(66)]
        );
        assert!(blocks.is_empty());
        assert_eq!(blocks.take(), None);
    }

    #[test]
    fn a_value_put_back_is_handed_out_next_and_only_once() {
        let mut blocks = CounterBlocks::default();
        blocks.add(10..12);
        let first = blocks.take();
        assert_eq!(first, Some(10));
        blocks.put_back(10);
        blocks.add(96..97);
        let mut out = Vec::new();
        while let Some(value) = blocks.take() {
            out.push(value);
        }
        assert_eq!(out, [10, 11, 96]);
    }

    #[test]
    fn empty_ranges_are_ignored() {
        let mut blocks = CounterBlocks::default();
        blocks.add(5..5);
        assert!(blocks.is_empty());
        assert_eq!(blocks, CounterBlocks::default());
    }

    #[test]
    fn an_incrby_reply_names_the_range_it_reserved() {
        assert_eq!(reserved_range(32, 32).ok(), Some(0..32));
        assert_eq!(reserved_range(96, 32).ok(), Some(64..96));
        assert!(
            reserved_range(5, 32).is_err(),
            "INCRBY never answers less than it added"
        );
        assert!(reserved_range(-1, 1).is_err());
    }

    #[test]
    fn a_reservation_whose_request_is_gone_returns_its_value() {
        let block = Arc::new(ConfigBlock::default());
        block.add(0..2);

        // The request is gone before the refill answers: the send fails, the value stays.
        let (reservation, reply) = Reservation::new(block.clone());
        drop(reservation);
        block.reserve_for(reply);
        assert_eq!(block.values().remaining(), 2);

        // The refill answered, then the request went away without reading it.
        let (reservation, reply) = Reservation::new(block.clone());
        block.reserve_for(reply);
        assert_eq!(block.values().remaining(), 1);
        drop(reservation);
        assert_eq!(block.values().remaining(), 2);

        // The request reads its value: it is not handed out again.
        let (mut reservation, reply) = Reservation::new(block.clone());
        block.reserve_for(reply);
        assert_eq!(reservation.take(), Some(0));
        drop(reservation);
        assert_eq!(block.take(), Some(1));
        assert_eq!(block.take(), None);
    }

    #[test]
    fn blocks_are_per_config() {
        let blocks = ConfigBlocks::default();
        blocks.get(ProxyConfigId(1)).add(0..1);
        assert_eq!(blocks.get(ProxyConfigId(2)).take(), None);
        assert_eq!(blocks.get(ProxyConfigId(1)).take(), Some(0));
    }
}
