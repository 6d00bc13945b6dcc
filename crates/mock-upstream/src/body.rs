//! Response bodies of the mock: one static buffer, or an OpenAI-style event stream of a fixed
//! number of chunks, the first sent at once and each later one (and the closing `[DONE]`) after
//! a fixed delay. Nothing is allocated per chunk: every frame is a static buffer.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// One chunk of a streamed chat completion.
pub const SSE_CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1747400000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";

/// The event that ends an OpenAI stream.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// A response body of the mock.
#[derive(Debug)]
pub enum MockBody {
    /// A complete body, sent with a `Content-Length`.
    Full(Option<Bytes>),
    /// An event stream, sent chunked.
    Events(EventStream),
}

impl MockBody {
    /// A complete body from a static buffer.
    pub fn from_static(bytes: &'static [u8]) -> Self {
        MockBody::Full(Some(Bytes::from_static(bytes)))
    }

    /// A complete body from owned bytes.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        MockBody::Full(Some(Bytes::from(bytes)))
    }

    /// No body.
    pub fn empty() -> Self {
        MockBody::Full(None)
    }
}

/// `chunks` completion chunks, then `data: [DONE]`, `delay` apart.
#[derive(Debug)]
pub struct EventStream {
    chunks_left: u32,
    done_sent: bool,
    delay: Duration,
    started: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl EventStream {
    /// A stream of `chunks` chunks and the final `[DONE]`, each event after the first `delay`
    /// after the previous one.
    pub fn new(chunks: u32, delay: Duration) -> Self {
        EventStream {
            chunks_left: chunks,
            done_sent: false,
            delay,
            started: false,
            sleep: None,
        }
    }

    /// Waits out the delay before the next event; `Pending` while it runs.
    fn poll_delay(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.started || self.delay.is_zero() {
            self.started = true;
            return Poll::Ready(());
        }
        let deadline = Instant::now() + self.delay;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Re-armed for the next event; the box is reused for the whole stream.
        sleep.as_mut().reset(Instant::now() + self.delay);
        Poll::Ready(())
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Events(stream) => {
                if stream.done_sent {
                    return Poll::Ready(None);
                }
                if stream.poll_delay(cx).is_pending() {
                    return Poll::Pending;
                }
                let frame = if stream.chunks_left > 0 {
                    stream.chunks_left -= 1;
                    SSE_CHUNK
                } else {
                    stream.done_sent = true;
                    SSE_DONE
                };
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(frame)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Events(stream) => stream.done_sent,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            MockBody::Events(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn an_event_stream_sends_its_chunks_then_done() {
        let body = MockBody::Events(EventStream::new(3, Duration::ZERO));

        let bytes = body.collect().await.unwrap().to_bytes();

        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(text.matches("chat.completion.chunk").count(), 3);
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn events_after_the_first_wait_for_the_delay() {
        let start = Instant::now();
        let body = MockBody::Events(EventStream::new(2, Duration::from_millis(10)));

        body.collect().await.unwrap();

        // Chunk 1 at once, chunk 2 and [DONE] 10 ms apart.
        assert_eq!(start.elapsed(), Duration::from_millis(20));
    }

    #[test]
    fn a_full_body_announces_its_exact_length() {
        let body = MockBody::from_static(b"hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert!(MockBody::empty().is_end_stream());
    }
}
