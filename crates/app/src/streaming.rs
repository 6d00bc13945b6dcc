//! Response body streams: an idle-gap timeout between chunks, so a silent upstream ends the
//! stream while a long stream that keeps sending is never cut.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// Why a proxied response stream ended early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The upstream sent nothing for longer than the idle timeout.
    #[error("upstream sent nothing for {0:?}")]
    Idle(Duration),
    /// The whole exchange took longer than the total timeout.
    #[error("the exchange exceeded {0:?} (PROXY_TOTAL_TIMEOUT)")]
    Total(Duration),
    /// The upstream connection broke.
    #[error("upstream stream broke: {0}")]
    Upstream(String),
}

/// Wraps a body stream, ending it with [`StreamError::Idle`] when no chunk arrives within the
/// idle timeout (the gap restarts with every chunk), and with [`StreamError::Total`] when an
/// optional bound on the whole exchange passes.
///
/// The one timer is armed only the first time the stream has to wait, and re-armed only when it
/// fires: a body that is already there (most non-streamed answers) costs no timer at all, and a
/// busy stream costs one clock read per chunk rather than a timer update.
pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    last_chunk: Instant,
    total: Option<(Duration, Instant)>,
    done: bool,
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: None,
            last_chunk: Instant::now(),
            total: None,
            done: false,
        }
    }

    /// Also ends the stream once `total` has passed from now (`PROXY_TOTAL_TIMEOUT`).
    #[must_use]
    pub fn with_total(mut self, total: Option<Duration>) -> Self {
        self.total = total.map(|t| (t, self.last_chunk + t));
        self
    }

    /// The error of a deadline that has passed at `now`, if one has.
    fn expired(&self, now: Instant) -> Option<StreamError> {
        match self.total {
            Some((total, deadline)) if now >= deadline => Some(StreamError::Total(total)),
            _ if now >= self.last_chunk + self.idle => Some(StreamError::Idle(self.idle)),
            _ => None,
        }
    }

    /// The earliest deadline still ahead.
    fn next_deadline(&self) -> Instant {
        let idle = self.last_chunk + self.idle;
        self.total.map_or(idle, |(_, total)| idle.min(total))
    }
}

impl<S, E> Stream for IdleTimeout<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let now = Instant::now();
                if let Some((total, deadline)) = self.total
                    && now >= deadline
                {
                    self.done = true;
                    return Poll::Ready(Some(Err(StreamError::Total(total))));
                }
                self.last_chunk = now;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(StreamError::Upstream(e.to_string()))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => loop {
                let deadline = self.next_deadline();
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Some(error) = self.expired(Instant::now()) {
                    self.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                // Chunks arrived since the timer was armed: wait out the rest of the gap.
                let next = self.next_deadline();
                if let Some(timer) = self.timer.as_mut() {
                    timer.as_mut().reset(next);
                }
            },
        }
    }
}

/// Ends a stream that failed after the commit boundary with one in-band event (an SSE error
/// event in the client's format) instead of a silent clean end or a cut connection.
pub struct EndWithEvent<S> {
    inner: S,
    event: Box<dyn Fn(&StreamError) -> Bytes>,
    done: bool,
}

impl<S> EndWithEvent<S> {
    /// Wraps `inner`; `event` renders the closing event for the error.
    pub fn new(inner: S, event: Box<dyn Fn(&StreamError) -> Bytes>) -> Self {
        EndWithEvent {
            inner,
            event,
            done: false,
        }
    }
}

impl<S> Stream for EndWithEvent<S>
where
    S: Stream<Item = Result<Bytes, StreamError>> + Unpin,
{
    type Item = Result<Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(%error, "stream ended early; the client gets an error event");
                self.done = true;
                Poll::Ready(Some(Ok((self.event)(&error))))
            }
            other => other,
        }
    }
}

/// Converts an upstream event stream into the client's format, event by event: each upstream
/// chunk goes through the converter and whatever it yields is sent at once; the converter's tail
/// follows a clean end. Errors pass through untouched (the caller closes with an error event).
pub struct Converting<S> {
    inner: S,
    converter: llm_adapters::StreamConverter,
    finished: bool,
}

impl<S> Converting<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, converter: llm_adapters::StreamConverter) -> Self {
        Converting {
            inner,
            converter,
            finished: false,
        }
    }
}

impl<S> Stream for Converting<S>
where
    S: Stream<Item = Result<Bytes, StreamError>> + Unpin,
{
    type Item = Result<Bytes, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = self.converter.push(&chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    let tail = self.converter.finish();
                    return Poll::Ready((!tail.is_empty()).then_some(Ok(tail)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use futures_util::{StreamExt, stream};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_ends_with_an_idle_error() {
        let chunks = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"a"))])
            .chain(stream::pending());
        let mut wrapped = IdleTimeout::new(chunks, Duration::from_secs(5));
        assert_eq!(wrapped.next().await.unwrap().unwrap(), "a");
        assert!(matches!(
            wrapped.next().await,
            Some(Err(StreamError::Idle(_)))
        ));
        assert!(wrapped.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_gap_counts_from_the_last_chunk() {
        let start = Instant::now();
        let ticks = stream::iter(0..3)
            .then(|_| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, std::io::Error>(Bytes::from_static(b"."))
            })
            .chain(stream::pending());
        let mut wrapped = IdleTimeout::new(Box::pin(ticks), Duration::from_secs(5));
        for _ in 0..3 {
            wrapped.next().await.unwrap().unwrap();
        }
        assert!(matches!(
            wrapped.next().await,
            Some(Err(StreamError::Idle(_)))
        ));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(8),
            "3 s of chunks, then a 5 s gap"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_stream_ends_with_one_event() {
        let chunks = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"data: 1\n\n"))])
            .chain(stream::pending());
        let wrapped = IdleTimeout::new(chunks, Duration::from_secs(1));
        let ended = EndWithEvent::new(
            wrapped,
            Box::new(|e| Bytes::from(format!("event: error\ndata: {e}\n\n"))),
        );
        let received: Vec<_> = ended.map(Result::unwrap).collect().await;
        assert_eq!(received.len(), 2);
        assert!(received[1].starts_with(b"event: error"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_timeout_bounds_even_a_busy_stream() {
        let ticks = stream::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from_static(b"."))).then(
            |c| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                c
            },
        );
        let wrapped = IdleTimeout::new(Box::pin(ticks), Duration::from_secs(5))
            .with_total(Some(Duration::from_secs(2)));
        let received: Vec<_> = wrapped.collect().await;
        assert!(matches!(received.last(), Some(Err(StreamError::Total(_)))));
        assert!((18..=21).contains(&received.len()), "{}", received.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_keeps_sending_is_never_cut() {
        let ticks = stream::unfold(0u32, |n| async move {
            if n == 600 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b".")), n + 1))
        });
        let wrapped = IdleTimeout::new(Box::pin(ticks), Duration::from_secs(5));
        let received: Vec<_> = wrapped.collect().await;
        assert_eq!(received.len(), 600, "ten minutes of chunks, one per second");
        assert!(received.iter().all(Result::is_ok));
    }
}
