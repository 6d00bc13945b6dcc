//! The per-host bound on a worker's upstream connections. awc bounds its pool only as a whole
//! (see `upstream::MAX_CONNECTIONS_PER_WORKER`), so one slow or hung upstream host could hold
//! every connection of a worker and starve the configs of every other host. Each attempt holds a
//! slot of its host (scheme and authority) from before it is sent until its response body ends
//! or it fails; an attempt past `UPSTREAM_MAX_CONNECTIONS_PER_HOST` waits for a slot, at most
//! the connect timeout, and then fails the way a connect timeout does (the failover moves on).
//! HTTP/1.1 carries one exchange per connection at a time, so slots in use bound the connections
//! in use, and the idle ones the pool keeps never outnumber the peak.

use std::{
    cell::RefCell,
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One worker's slots, by host.
#[derive(Debug)]
pub struct HostSlots {
    per_host: usize,
    hosts: RefCell<HashMap<Box<str>, Arc<Semaphore>>>,
}

/// A held slot: the connection it stands for is in use until this is dropped.
pub type HostSlot = OwnedSemaphorePermit;

impl HostSlots {
    /// Slots of `per_host` connections for each host.
    pub fn new(per_host: usize) -> Self {
        HostSlots {
            per_host: per_host.max(1),
            hosts: RefCell::default(),
        }
    }

    /// A slot of the host of `url`, waiting at most `wait` for one; `None` when none was
    /// freed in time.
    pub async fn acquire(&self, url: &str, wait: Duration) -> Option<HostSlot> {
        let semaphore = self.semaphore(host_of(url));
        // The common case takes a free slot without a timer.
        if let Ok(slot) = semaphore.clone().try_acquire_owned() {
            return Some(slot);
        }
        tokio::time::timeout(wait, semaphore.acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Forgets the hosts with no slot in use, so hosts no config uses any more do not pile up.
    pub fn forget_idle(&self) {
        let per_host = self.per_host;
        self.hosts
            .borrow_mut()
            .retain(|_, semaphore| semaphore.available_permits() < per_host);
    }

    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.hosts.borrow().len()
    }

    fn semaphore(&self, host: &str) -> Arc<Semaphore> {
        if let Some(semaphore) = self.hosts.borrow().get(host) {
            return semaphore.clone();
        }
        let semaphore = Arc::new(Semaphore::new(self.per_host));
        self.hosts
            .borrow_mut()
            .insert(host.into(), semaphore.clone());
        semaphore
    }
}

/// The scheme and authority of a URL (`https://api.example.com:8443`), which name the pool a
/// connection comes from; the whole text when it has no `://`.
pub fn host_of(url: &str) -> &str {
    let Some(scheme_end) = url.find("://") else {
        return url;
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |end| authority_start + end);
    &url[..authority_end]
}

/// A response body that keeps its connection's host slot until it ends or is dropped.
pub struct HeldBody<S> {
    body: S,
    slot: Option<HostSlot>,
}

impl<S> HeldBody<S> {
    /// `body`, holding `slot`.
    pub fn new(body: S, slot: HostSlot) -> Self {
        HeldBody {
            body,
            slot: Some(slot),
        }
    }
}

impl<S: Stream + Unpin> Stream for HeldBody<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let next = Pin::new(&mut self.body).poll_next(cx);
        if matches!(next, Poll::Ready(None)) {
            // The body is read to its end: the connection goes back to the pool now, not when
            // the client's response is dropped.
            self.slot = None;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_host_is_the_scheme_and_authority() {
        assert_eq!(
            host_of("https://api.openai.com/v1/chat?x=1"),
            "https://api.openai.com"
        );
        assert_eq!(
            host_of("http://127.0.0.1:8080?key=abc"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(host_of("http://h#frag"), "http://h");
        assert_eq!(host_of("http://h"), "http://h");
        assert_eq!(host_of("no-scheme"), "no-scheme");
    }

    #[tokio::test]
    async fn a_host_past_its_bound_waits_and_other_hosts_do_not() {
        let slots = HostSlots::new(2);
        let wait = Duration::from_millis(50);
        let first = slots.acquire("http://slow/a", wait).await.unwrap();
        let _second = slots.acquire("http://slow/b", wait).await.unwrap();
        assert!(
            slots.acquire("http://slow/c", wait).await.is_none(),
            "a third connection to the same host waits, then gives up"
        );
        assert!(
            slots.acquire("http://other/", wait).await.is_some(),
            "another host is not starved"
        );
        drop(first);
        assert!(
            slots.acquire("http://slow/d", wait).await.is_some(),
            "a freed slot is taken"
        );
    }

    #[tokio::test]
    async fn a_body_gives_its_slot_back_at_its_end() {
        use futures_util::StreamExt;
        let slots = HostSlots::new(1);
        let wait = Duration::from_millis(20);
        let slot = slots.acquire("http://h/", wait).await.unwrap();
        let mut body = HeldBody::new(futures_util::stream::iter([1, 2]), slot);
        assert_eq!(body.next().await, Some(1));
        assert!(slots.acquire("http://h/", wait).await.is_none(), "held");
        assert_eq!(body.next().await, Some(2));
        assert_eq!(body.next().await, None);
        assert!(slots.acquire("http://h/", wait).await.is_some(), "freed");
    }

    #[tokio::test]
    async fn idle_hosts_are_forgotten() {
        let slots = HostSlots::new(1);
        let held = slots.acquire("http://busy/", Duration::ZERO).await.unwrap();
        drop(slots.acquire("http://idle/", Duration::ZERO).await);
        assert_eq!(slots.hosts(), 2);
        slots.forget_idle();
        assert_eq!(slots.hosts(), 1, "only the host with a slot in use stays");
        drop(held);
    }
}
