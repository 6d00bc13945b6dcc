//! The end of a proxied exchange: what the proxy knows about it ([`ExchangeFacts`]), who is told
//! ([`ExchangeObserver`]s: client-key limits and usage, the request log), and the per-request
//! [`Completion`] that tells them exactly once, when the response body ends, fails or is dropped
//! because the client left, or at once for an error answer.
//!
//! A completion also owns whatever must live exactly as long as the exchange (a client key's
//! concurrency slot), so releasing it needs no separate bookkeeping. On LLM routes the upstream
//! body is metered on its way through ([`Completion::meter`]): stream usage events or a whole
//! JSON body, in the upstream's format and before any conversion, so converted streams count.
//!
//! Hot path: a completion is one struct on the handler's stack and then inside the response
//! body; the one extra allocation is the shared usage cell of a metered LLM response.

use std::{
    cell::Cell,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use actix_web::{
    HttpResponse,
    body::{BodySize, BoxBody, MessageBody},
    http::{Method, header},
};
use bytes::{Bytes, BytesMut};
use domain::{ApiFormat, ApiKeyId, ClientKeyId, ProxyConfigId};
use futures_util::Stream;
use llm_adapters::{SseParser, StreamUsage, TokenUsage};

use crate::upstream::{BodyChunks, Reply};

/// What the proxy knows when an exchange ends.
#[derive(Debug, Clone)]
pub struct ExchangeFacts {
    /// The config the request went to.
    pub config_id: ProxyConfigId,
    /// The client key that authenticated it (`None` for a global proxy key).
    pub client_key_id: Option<ClientKeyId>,
    /// The upstream key of the last attempt, when one was made.
    pub api_key_id: Option<ApiKeyId>,
    /// The client's method.
    pub method: Method,
    /// The request path, without the query string (query values may carry secrets).
    pub path: String,
    /// The status the client got.
    pub status: u16,
    /// `success`, the upstream verdict, the proxy's error code, or `client_closed`.
    pub outcome: &'static str,
    /// Upstream attempts made.
    pub attempts: u32,
    /// From the request's arrival to the response head.
    pub head_latency: Duration,
    /// From the request's arrival to the end of the response body.
    pub total_latency: Duration,
    /// Whether the answer was an event stream.
    pub streamed: bool,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes the client was sent.
    pub bytes_out: u64,
    /// Token usage the upstream reported, `None` when unknown.
    pub tokens: Option<TokenUsage>,
    /// The proxy's own error code when it answered with an error.
    pub error_code: Option<&'static str>,
}

/// Told about every finished exchange. Runs on the request's worker thread, so it must never
/// block or await: bump counters, `try_send` to a queue.
pub trait ExchangeObserver: Send + Sync {
    /// One exchange ended.
    fn exchange_finished(&self, facts: &ExchangeFacts);
}

/// The observers of every exchange, told in order.
#[derive(Clone, Default)]
pub struct ExchangeObservers(Arc<[Arc<dyn ExchangeObserver>]>);

impl std::fmt::Debug for ExchangeObservers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeObservers")
            .field("count", &self.0.len())
            .finish()
    }
}

impl ExchangeObservers {
    /// A fan-out over `observers`.
    pub fn new(observers: Vec<Arc<dyn ExchangeObserver>>) -> Self {
        Self(observers.into())
    }

    /// Whether nobody listens (then responses are not metered).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn notify(&self, facts: &ExchangeFacts) {
        for observer in self.0.iter() {
            observer.exchange_finished(facts);
        }
    }
}

/// One exchange's completion: created once the request is authenticated and its config known,
/// finished exactly once (see the module doc). Dropping it unfinished finishes it as
/// `client_closed` (the handler's future was dropped: the client went away).
pub struct Completion {
    observers: ExchangeObservers,
    facts: ExchangeFacts,
    started: Instant,
    usage: Option<Rc<Cell<Option<TokenUsage>>>>,
    held: Option<Box<dyn Send>>,
    finished: bool,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("facts", &self.facts)
            .finish_non_exhaustive()
    }
}

impl Completion {
    /// Starts the completion of a request that arrived at `started`.
    pub fn new(
        observers: ExchangeObservers,
        config_id: ProxyConfigId,
        method: &Method,
        path: &str,
        started: Instant,
    ) -> Self {
        Completion {
            observers,
            facts: ExchangeFacts {
                config_id,
                client_key_id: None,
                api_key_id: None,
                method: method.clone(),
                path: path.to_owned(),
                status: 0,
                outcome: "client_closed",
                attempts: 0,
                head_latency: Duration::ZERO,
                total_latency: Duration::ZERO,
                streamed: false,
                bytes_in: 0,
                bytes_out: 0,
                tokens: None,
                error_code: Some("client_closed"),
            },
            started,
            usage: None,
            held: None,
            finished: false,
        }
    }

    /// The facts gathered so far, for the parts of the proxy that fill them in.
    pub fn facts_mut(&mut self) -> &mut ExchangeFacts {
        &mut self.facts
    }

    /// Records the client key that authenticated the request.
    pub fn set_client_key(&mut self, id: ClientKeyId) {
        self.facts.client_key_id = Some(id);
    }

    /// Keeps `guard` alive until the exchange ends (a concurrency slot), then drops it.
    pub fn hold(&mut self, guard: Box<dyn Send>) {
        self.held = Some(guard);
    }

    /// Records the size of the request body.
    pub fn set_bytes_in(&mut self, bytes: u64) {
        self.facts.bytes_in = bytes;
    }

    /// Records a usage the proxy already read whole (a converted non-streamed answer).
    pub fn set_tokens(&mut self, usage: Option<TokenUsage>) {
        self.facts.tokens = usage;
    }

    /// Meters an LLM reply's body for token usage, in the upstream's format `format`: an event
    /// stream event by event, a JSON body whole (up to [`METERED_BODY_LIMIT`]); an error reply
    /// already read whole at once. Does nothing when no observer listens.
    pub fn meter(&mut self, reply: Reply, format: ApiFormat) -> Reply {
        if self.observers.is_empty() {
            return reply;
        }
        match reply {
            Reply::Stream {
                status,
                headers,
                body,
            } => {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let tap = if crate::upstream::is_event_stream(&headers) {
                    Tap::Events {
                        parser: SseParser::new(),
                        usage: StreamUsage::new(format),
                    }
                } else if content_type.contains("json") {
                    Tap::Body {
                        format,
                        chunks: Vec::new(),
                        len: 0,
                    }
                } else {
                    return Reply::Stream {
                        status,
                        headers,
                        body,
                    };
                };
                let cell = Rc::new(Cell::new(None));
                self.usage = Some(cell.clone());
                let body: BodyChunks = Box::pin(Metered {
                    inner: body,
                    tap,
                    cell,
                });
                Reply::Stream {
                    status,
                    headers,
                    body,
                }
            }
            Reply::Buffered {
                status,
                headers,
                body,
                verdict,
            } => {
                self.facts.tokens = llm_adapters::usage_in_body(format, &body);
                Reply::Buffered {
                    status,
                    headers,
                    body,
                    verdict,
                }
            }
        }
    }

    /// Finishes at once for an error the proxy answers itself.
    pub fn fail(mut self, status: u16, code: &'static str) {
        self.facts.status = status;
        self.facts.outcome = code;
        self.facts.error_code = Some(code);
        self.facts.head_latency = self.started.elapsed();
        self.finish();
    }

    /// Hands the completion to `response`'s body, which finishes it when it ends, fails or is
    /// dropped. `outcome` names the answer (`success` or the upstream verdict).
    pub fn respond(mut self, response: HttpResponse, outcome: &'static str) -> HttpResponse {
        self.facts.status = response.status().as_u16();
        self.facts.outcome = outcome;
        self.facts.error_code = None;
        self.facts.head_latency = self.started.elapsed();
        self.facts.streamed = crate::upstream::is_event_stream(response.headers());
        response
            .map_body(|_, body| Finishing {
                inner: body,
                completion: Some(self),
            })
            .map_into_boxed_body()
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.facts.total_latency = self.started.elapsed();
        if let Some(usage) = self.usage.as_ref().and_then(|cell| cell.get()) {
            self.facts.tokens = Some(usage);
        }
        self.observers.notify(&self.facts);
        self.held = None;
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Largest JSON body read whole for its usage; larger bodies count as usage unknown.
pub const METERED_BODY_LIMIT: usize = 8 << 20;

/// How a metered upstream body is read.
enum Tap {
    Events {
        parser: SseParser,
        usage: StreamUsage,
    },
    Body {
        format: ApiFormat,
        chunks: Vec<Bytes>,
        len: usize,
    },
    Done,
}

/// An upstream body on its way to the client (or the converter), with its usage read on the
/// way into a cell the completion reads when it finishes.
struct Metered<S> {
    inner: S,
    tap: Tap,
    cell: Rc<Cell<Option<TokenUsage>>>,
}

impl<S> Metered<S> {
    fn observe(&mut self, chunk: &Bytes) {
        match &mut self.tap {
            Tap::Events { parser, usage } => {
                let fed = parser.feed(chunk, |event| usage.observe_event(event.data.as_bytes()));
                if fed.is_err() {
                    // A malformed or oversized event: what was read stays, the rest is unknown.
                    self.tap = Tap::Done;
                    return;
                }
                self.cell.set(usage.usage());
            }
            Tap::Body { chunks, len, .. } => {
                *len += chunk.len();
                if *len > METERED_BODY_LIMIT {
                    self.tap = Tap::Done;
                } else {
                    // A reference-counted clone: nothing is copied until the end.
                    chunks.push(chunk.clone());
                }
            }
            Tap::Done => {}
        }
    }

    fn end(&mut self) {
        match std::mem::replace(&mut self.tap, Tap::Done) {
            Tap::Events {
                mut parser,
                mut usage,
            } => {
                parser.finish();
                while let Ok(Some(event)) = parser.next_event() {
                    usage.observe_event(event.data.as_bytes());
                }
                self.cell.set(usage.usage());
            }
            Tap::Body {
                format,
                chunks,
                len,
            } => {
                let usage = match chunks.as_slice() {
                    [one] => llm_adapters::usage_in_body(format, one),
                    many => {
                        let mut whole = BytesMut::with_capacity(len);
                        for chunk in many {
                            whole.extend_from_slice(chunk);
                        }
                        llm_adapters::usage_in_body(format, &whole)
                    }
                };
                self.cell.set(usage);
            }
            Tap::Done => {}
        }
    }
}

impl<S, E> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => self.observe(chunk),
            Poll::Ready(None) => self.end(),
            Poll::Ready(Some(Err(_))) => self.tap = Tap::Done,
            Poll::Pending => {}
        }
        polled
    }
}

/// The client's response body, counting what it sends and finishing the completion when it
/// ends, fails or is dropped.
struct Finishing {
    inner: BoxBody,
    completion: Option<Completion>,
}

impl MessageBody for Finishing {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(completion) = &mut self.completion {
                    completion.facts.bytes_out += chunk.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(mut completion) = self.completion.take() {
                    completion.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut completion) = self.completion.take() {
                    completion.facts.outcome = "stream_error";
                    completion.facts.error_code = Some("stream_error");
                    completion.finish();
                }
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        if let Some(mut completion) = self.completion.take() {
            // Dropped before its end: the client went away mid-body (a body actix never polls,
            // an empty one, ends here too, with nothing left to send).
            if matches!(self.inner.size(), BodySize::None | BodySize::Sized(0)) {
                completion.finish();
            } else {
                completion.facts.outcome = "client_closed";
                completion.facts.error_code = Some("client_closed");
                completion.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use actix_web::{body, http::StatusCode};
    use futures_util::{StreamExt, stream};

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<ExchangeFacts>>);

    impl ExchangeObserver for Recorder {
        fn exchange_finished(&self, facts: &ExchangeFacts) {
            self.0.lock().unwrap().push(facts.clone());
        }
    }

    fn completion(recorder: &Arc<Recorder>) -> Completion {
        let observers = ExchangeObservers::new(vec![recorder.clone() as Arc<dyn ExchangeObserver>]);
        Completion::new(
            observers,
            ProxyConfigId(7),
            &Method::POST,
            "/llm/x/v1/chat/completions",
            Instant::now(),
        )
    }

    struct Flag(Arc<Mutex<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = true;
        }
    }

    fn sse_reply(chunks: Vec<&'static str>) -> Reply {
        let mut headers = actix_web::http::header::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        let body: BodyChunks =
            Box::pin(stream::iter(chunks.into_iter().map(|c| {
                Ok::<_, awc::error::PayloadError>(Bytes::from_static(c.as_bytes()))
            })));
        Reply::Stream {
            status: StatusCode::OK,
            headers,
            body,
        }
    }

    #[actix_web::test]
    async fn a_failed_exchange_finishes_at_once_and_releases_what_it_holds() {
        let recorder = Arc::new(Recorder::default());
        let released = Arc::new(Mutex::new(false));
        let mut done = completion(&recorder);
        done.hold(Box::new(Flag(released.clone())));
        done.fail(429, "client_rate_limited");
        let facts = recorder.0.lock().unwrap();
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].status, 429);
        assert_eq!(facts[0].error_code, Some("client_rate_limited"));
        assert!(*released.lock().unwrap());
    }

    #[actix_web::test]
    async fn a_streamed_body_finishes_at_its_end_with_the_upstream_usage() {
        let recorder = Arc::new(Recorder::default());
        let released = Arc::new(Mutex::new(false));
        let mut done = completion(&recorder);
        done.hold(Box::new(Flag(released.clone())));
        let reply = done.meter(
            sse_reply(vec![
                "data: {\"choices\":[],\"usage\":null}\n\n",
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,",
                "\"completion_tokens\":7}}\n\ndata: [DONE]\n\n",
            ]),
            ApiFormat::OpenaiCompatible,
        );
        let Reply::Stream { body, .. } = reply else {
            panic!("a stream stays a stream")
        };
        let response = HttpResponse::Ok()
            .content_type("text/event-stream")
            .streaming(body);
        let response = done.respond(response, "success");
        assert!(
            recorder.0.lock().unwrap().is_empty(),
            "not before the body ends"
        );
        assert!(!*released.lock().unwrap());
        let bytes = body::to_bytes(response.into_body()).await.unwrap();
        let facts = recorder.0.lock().unwrap();
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].bytes_out, bytes.len() as u64);
        assert_eq!(
            facts[0].tokens,
            Some(TokenUsage {
                input: 5,
                output: 7
            })
        );
        assert!(facts[0].streamed);
        assert_eq!(facts[0].outcome, "success");
        assert!(*released.lock().unwrap());
    }

    #[actix_web::test]
    async fn a_dropped_body_finishes_as_client_closed() {
        let recorder = Arc::new(Recorder::default());
        let done = completion(&recorder);
        let body = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"a"))])
            .chain(stream::pending());
        let response = done.respond(HttpResponse::Ok().streaming(body), "success");
        let mut body = response.into_body();
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await;
        assert!(first.is_some());
        drop(body);
        let facts = recorder.0.lock().unwrap();
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].outcome, "client_closed");
        assert_eq!(facts[0].bytes_out, 1);
    }

    #[actix_web::test]
    async fn a_json_body_is_read_whole_for_its_usage() {
        let recorder = Arc::new(Recorder::default());
        let mut done = completion(&recorder);
        let mut headers = actix_web::http::header::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        let body: BodyChunks = Box::pin(stream::iter([
            Ok::<_, awc::error::PayloadError>(Bytes::from_static(
                b"{\"usage\":{\"input_tokens\":3,",
            )),
            Ok(Bytes::from_static(b"\"output_tokens\":4}}")),
        ]));
        let reply = done.meter(
            Reply::Stream {
                status: StatusCode::OK,
                headers,
                body,
            },
            ApiFormat::AnthropicNative,
        );
        let Reply::Stream { body, .. } = reply else {
            panic!("a stream stays a stream")
        };
        let response = done.respond(HttpResponse::Ok().streaming(body), "success");
        body::to_bytes(response.into_body()).await.unwrap();
        let facts = recorder.0.lock().unwrap();
        assert_eq!(
            facts[0].tokens,
            Some(TokenUsage {
                input: 3,
                output: 4
            })
        );
        assert!(!facts[0].streamed);
    }

    #[actix_web::test]
    async fn an_unfinished_completion_dropped_by_the_handler_reports_once() {
        let recorder = Arc::new(Recorder::default());
        drop(completion(&recorder));
        assert_eq!(recorder.0.lock().unwrap().len(), 1);
        assert_eq!(recorder.0.lock().unwrap()[0].outcome, "client_closed");
    }
}
