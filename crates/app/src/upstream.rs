//! The upstream side of both proxies: one pooled awc client per worker, and the I/O loop of the
//! failover. The rules (which key, retry or not, what happens to the key) are the domain's
//! [`domain::Failover`]; this loop only sends each attempt, reads the facts the machine needs
//! (status, headers, a bounded error body, connect error, head timeout), feeds them to it, and
//! does what it answers: commit, retry with the next key, confirm an ambiguous 403 with a probe,
//! or give up with every attempt's failure.

use std::{
    borrow::Cow,
    cell::RefCell,
    pin::Pin,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{
    HttpResponse,
    body::{BodyStream, SizedStream},
    http::{
        Method, StatusCode,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
    web,
};
use awc::{
    FrozenClientRequest, FrozenSendBuilder,
    error::{ConnectError, PayloadError, SendRequestError},
};
use bytes::Bytes;
use domain::{
    ApiKey, BodyRedactor, BodyReplay, ConfigKind, ConfigSnapshot, Decision, Failover, Next,
    Outcome, Redactor, UpstreamResponse, Verdict,
};
use futures_util::Stream;

use crate::{
    config::Settings,
    errors::{ATTEMPTS_HEADER, ApiError},
    state::AppState,
    streaming::{EndWithEvent, IdleTimeout, StreamError},
    upstream_hosts::{HeldBody, HostSlot, HostSlots},
};

/// Largest error body read to classify a failed attempt and to hand it back to the client.
const ERROR_BODY_LIMIT: usize = 1 << 20;

/// Most upstream connections one worker keeps open or opening at once, over every host (awc
/// bounds its pool as a whole; [`HostSlots`] bounds each host below it); requests past it wait
/// for a connection. Before, the pool was unbounded and a config pointed at the gateway itself
/// used up every descriptor.
const MAX_CONNECTIONS_PER_WORKER: usize = 512;

/// One pooled HTTP client per worker thread (awc clients are not `Send`).
pub struct UpstreamClient {
    client: RefCell<awc::Client>,
    hosts: HostSlots,
    settings: Rc<ClientSettings>,
}

/// What a worker's client is built from.
struct ClientSettings {
    connect_timeout: Duration,
    idle: Duration,
    max_connections_per_host: usize,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamClient")
    }
}

impl UpstreamClient {
    /// A client with the settings' connect timeout; the head timeout is set per request.
    pub fn new(settings: &Settings) -> Self {
        let settings = ClientSettings {
            connect_timeout: settings.connect_timeout,
            idle: settings.upstream_idle_timeout,
            max_connections_per_host: settings.upstream_max_connections_per_host,
        };
        UpstreamClient {
            client: RefCell::new(settings.build()),
            hosts: HostSlots::new(settings.max_connections_per_host),
            settings: Rc::new(settings),
        }
    }

    /// The current client (a cheap handle), also for requests outside the failover loop
    /// (probes).
    pub fn raw(&self) -> awc::Client {
        self.client.borrow().clone()
    }

    /// Closes every idle upstream connection of this worker every `UPSTREAM_IDLE_SECONDS`
    /// (call once per worker). awc checks a pooled connection only when it reuses one for the
    /// same host, so a connection the upstream closed stayed in CLOSE-WAIT until the next request
    /// to that host (measured: minutes). Replacing the client drops its pool once every request
    /// that holds one of its connections is done, which closes them; the next request to a host
    /// opens a fresh connection.
    pub fn spawn_idle_sweep(client: web::Data<UpstreamClient>) {
        let period = client.settings.idle;
        actix_web::rt::spawn(async move {
            let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                sweep.tick().await;
                let fresh = client.settings.build();
                client.client.replace(fresh);
                client.hosts.forget_idle();
            }
        });
    }
}

impl ClientSettings {
    fn build(&self) -> awc::Client {
        let connector = awc::Connector::new()
            .timeout(self.connect_timeout)
            .conn_keep_alive(self.idle)
            .limit(MAX_CONNECTIONS_PER_WORKER);
        // Redirects go back to the client: following one would send the upstream key wherever
        // the upstream points (and awc would otherwise follow up to ten).
        awc::Client::builder()
            .connector(connector)
            .disable_timeout()
            .disable_redirects()
            .finish()
    }
}

/// Period of the worker's floor timer; shorter than actix-http's 500 ms date timer.
const TIMER_FLOOR_PERIOD: Duration = Duration::from_millis(250);

/// Keeps one short periodic timer alive on the calling worker (call it once per worker).
///
/// awc builds a fresh actix-http codec configuration for every request it sends, and with it a
/// date task with a 500 ms timer. Registering a timer that is earlier than the worker's next
/// planned wake-up makes tokio wake its own I/O driver with an eventfd write: with no other
/// short timer pending, that was one extra syscall and event per proxied request. A timer that
/// is always due within 250 ms keeps the planned wake-up close, so most registrations no longer
/// do it (measured: 0.86 eventfd writes per request before, 0.14 after), at the price of four
/// idle wake-ups a second.
pub fn spawn_timer_floor() {
    actix_web::rt::spawn(async {
        let mut floor = tokio::time::interval(TIMER_FLOOR_PERIOD);
        floor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            floor.tick().await;
        }
    });
}

/// Where one attempt goes and the key-bearing headers it carries.
#[derive(Debug)]
pub struct Target {
    /// The full URL, with the key when it travels in the query.
    pub url: String,
    /// Headers carrying the key (and any header the upstream format requires with it).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    /// Converts the pure crate's key injection into request headers.
    ///
    /// # Errors
    /// 400 when a key cannot travel in a header (it was validated as printable ASCII, so only a
    /// config's header name could be at fault).
    pub fn new(
        url: String,
        injection: &llm_adapters::KeyInjection<'_>,
    ) -> Result<Target, ApiError> {
        let headers = injection
            .headers()
            .map(|edit| {
                let name = HeaderName::try_from(edit.name);
                let value = HeaderValue::try_from(edit.value.as_ref());
                match (name, value) {
                    (Ok(name), Ok(value)) => Ok((name, value)),
                    _ => Err(ApiError::bad_request(
                        "invalid_key_header",
                        format!("header {:?} cannot carry the upstream key", edit.name),
                    )),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Target { url, headers })
    }
}

/// Builds an attempt's target for one key.
pub type TargetFor<'a> = dyn Fn(&str) -> Result<Target, ApiError> + 'a;

/// The request body, buffered when it can be replayed for failover.
pub enum RequestBody {
    /// Buffered: every attempt resends the same bytes without copying them.
    Replayable(Bytes),
    /// Streamed straight through: only one attempt is possible.
    Streaming {
        /// The client's body, taken by the one attempt that sends it.
        payload: Option<web::Payload>,
        /// Its declared length, kept so the upstream gets a `Content-Length`.
        length: Option<u64>,
    },
}

/// What to send upstream, minus the key.
pub struct UpstreamRequest<'a> {
    /// Method.
    pub method: Method,
    /// Headers to forward (already filtered).
    pub headers: HeaderMap,
    /// Body.
    pub body: RequestBody,
    /// URL and key headers of the attempt with a given key.
    pub target: &'a TargetFor<'a>,
    /// Where the failover loop notes its attempts, for the request log.
    pub trace: &'a AttemptTrace,
}

/// What the failover loop did, read by the exchange's completion whatever the answer: how many
/// upstream attempts it made and the key of the last one. Cells: one request's task only.
#[derive(Debug, Default)]
pub struct AttemptTrace {
    attempts: std::cell::Cell<u32>,
    last_key: std::cell::Cell<Option<domain::ApiKeyId>>,
}

impl AttemptTrace {
    /// Notes an attempt about to be sent.
    fn attempt(&self, attempts: u32, key: domain::ApiKeyId) {
        self.attempts.set(attempts);
        self.last_key.set(Some(key));
    }

    /// Copies the attempts and the last key into an exchange's facts.
    pub fn fill(&self, facts: &mut crate::completion::ExchangeFacts) {
        facts.attempts = self.attempts.get();
        facts.api_key_id = self.last_key.get();
    }
}

/// A streamed upstream body.
pub type BodyChunks = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// The upstream answer the client gets.
pub enum Reply {
    /// A success (or redirect): committed, streamed to the client.
    Stream {
        /// Status.
        status: StatusCode,
        /// Response headers.
        headers: HeaderMap,
        /// Body.
        body: BodyChunks,
    },
    /// An error response, read whole to classify it.
    Buffered {
        /// Status.
        status: StatusCode,
        /// Response headers.
        headers: HeaderMap,
        /// Body.
        body: Bytes,
        /// What it meant for the key.
        verdict: Verdict,
    },
}

/// Sends `request` with the keys the failover plans, until it commits or gives up.
///
/// # Errors
/// 503 with `no_usable_key` when no key is usable; 502 or 504 (naming every attempt) when the
/// last attempt could not reach the upstream or timed out. An upstream error response is not an
/// error here: it comes back as [`Reply::Buffered`].
pub async fn send_with_failover(
    state: &AppState,
    client: &UpstreamClient,
    snapshot: &ConfigSnapshot,
    mut request: UpstreamRequest<'_>,
) -> Result<Reply, ApiError> {
    let replay = match request.body {
        RequestBody::Replayable(_) => BodyReplay::Replayable,
        RequestBody::Streaming { .. } => BodyReplay::OneShot,
    };
    let mut failover = state.rotator.begin(snapshot, replay).await?;
    let slug = snapshot.config.slug.as_str();
    let mut prepared: Option<Prepared> = None;
    let mut last: Option<(Answer, &Arc<ApiKey>)> = None;
    while let Some(key) = failover.next_key(snapshot) {
        if failover.attempts() > 1 {
            state.metrics.count_retry(slug);
        }
        request.trace.attempt(
            u32::try_from(failover.attempts()).unwrap_or(u32::MAX),
            key.id,
        );
        let target = (request.target)(key.key_value.expose())?;
        let started = Instant::now();
        let timeout = failover.rules().response_timeout();
        let sent = send_once(client, target, &mut request, &mut prepared, timeout).await;
        state
            .metrics
            .observe_upstream_latency(slug, started.elapsed().as_secs_f64());
        let answer = Answer::read(sent, key).await;
        let settled = state
            .rotator
            .settle(&mut failover, key.id, &answer.outcome())
            .await;
        state.record_health(key, &settled.health);
        let decision = match settled.decision.next {
            Next::Confirm => confirm(state, client, snapshot, key, &mut failover).await,
            _ => settled.decision,
        };
        match decision.next {
            // A confirmation is settled above, so it never stands here.
            Next::Commit | Next::GiveUp | Next::Confirm => {
                let relay = Relay::new(state, snapshot, key);
                return answer.into_reply(decision.verdict, &failover, &relay);
            }
            Next::Retry => {
                tracing::info!(
                    config = %snapshot.config.slug,
                    key_id = %key.id,
                    attempt = failover.attempts(),
                    verdict = decision.verdict.as_str(),
                    "upstream attempt failed; trying the next key"
                );
                last = Some((answer, key));
            }
        }
    }
    // The plan ran out after a retry (a key vanished from the snapshot): the last failure stands.
    match last {
        Some((answer, key)) => {
            let relay = Relay::new(state, snapshot, key);
            answer.into_reply(Verdict::UpstreamFault, &failover, &relay)
        }
        None => Err(domain::Error::NoUsableKey { retry_at: None }.into()),
    }
}

/// Probes a key whose 403 was ambiguous and feeds the probe to the failover, which decides
/// whether the 403 was about the key (it fails, the request moves on) or about the request.
async fn confirm(
    state: &AppState,
    client: &UpstreamClient,
    snapshot: &ConfigSnapshot,
    key: &ApiKey,
    failover: &mut Failover,
) -> Decision {
    let probe = crate::probe::send_probe(state, client, &snapshot.config, key).await;
    let confirmed = state
        .rotator
        .settle_confirmation(failover, key.id, &probe.outcome())
        .await;
    state.record_health(key, &confirmed.health);
    confirmed.decision
}

/// What one attempt brought back, read as far as the failover needs.
enum Answer {
    /// A success or redirect head; the body is left unread for the client.
    Stream {
        status: StatusCode,
        headers: HeaderMap,
        body: BodyChunks,
    },
    /// An error response, its body read whole (bounded) to classify and relay it.
    Buffered {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// No usable response: the message is redacted of the key.
    Failed { timed_out: bool, message: String },
}

impl Answer {
    async fn read(sent: Sent, key: &ApiKey) -> Self {
        let (response, slot) = match sent {
            Ok(sent) => sent,
            Err(SendRequestError::Timeout) => {
                return Answer::Failed {
                    timed_out: true,
                    message: String::new(),
                };
            }
            Err(error) => {
                return Answer::Failed {
                    timed_out: false,
                    message: redact(&format!("the upstream could not be reached: {error}"), key),
                };
            }
        };
        let status = response.status();
        let (headers, mut response) = take_headers(response);
        if !domain::classify::needs_body(status.as_u16()) {
            return Answer::Stream {
                status,
                headers,
                body: Box::pin(HeldBody::new(response, slot)),
            };
        }
        match crate::upstream_body::read_bounded(&mut response, ERROR_BODY_LIMIT).await {
            Ok(body) => Answer::Buffered {
                status,
                headers,
                body,
            },
            Err(error) => Answer::Failed {
                timed_out: false,
                message: redact(&format!("error response: {error}"), key),
            },
        }
    }

    /// The facts the failover machine judges.
    fn outcome(&self) -> Outcome<'_> {
        match self {
            Answer::Stream {
                status, headers, ..
            } => Outcome::Response(UpstreamResponse::from_head(
                status.as_u16(),
                |name| header_text(headers, name),
                &[],
            )),
            Answer::Buffered {
                status,
                headers,
                body,
            } => Outcome::Response(UpstreamResponse::from_head(
                status.as_u16(),
                |name| header_text(headers, name),
                body,
            )),
            Answer::Failed {
                timed_out: true, ..
            } => Outcome::HeadTimeout,
            Answer::Failed { .. } => Outcome::ConnectFailed,
        }
    }

    /// The client's answer: a success streamed, an upstream error relayed, or the proxy's own
    /// 502/504; every error names the failed attempts, never a key.
    fn into_reply(
        self,
        verdict: Verdict,
        failover: &Failover,
        relay: &Relay<'_>,
    ) -> Result<Reply, ApiError> {
        let (status, headers, body) = match self {
            Answer::Stream {
                status,
                headers,
                body,
            } => {
                return Ok(Reply::Stream {
                    status,
                    headers,
                    body,
                });
            }
            Answer::Buffered {
                status,
                headers,
                body,
            } => (status, headers, body),
            Answer::Failed { timed_out, message } => {
                let error = relay.failure(timed_out, &message, failover);
                relay.log_failure(error.status(), failover);
                return Err(error);
            }
        };
        relay.log_failure(status, failover);
        Ok(relay.error_reply(status, headers, &body, verdict, failover))
    }
}

/// What an exchange that ends without a success answers, and what it logs.
struct Relay<'a> {
    state: &'a AppState,
    snapshot: &'a ConfigSnapshot,
    /// The key of the attempt whose answer is relayed.
    key: &'a ApiKey,
}

impl<'a> Relay<'a> {
    fn new(state: &'a AppState, snapshot: &'a ConfigSnapshot, key: &'a ApiKey) -> Self {
        Relay {
            state,
            snapshot,
            key,
        }
    }

    /// The proxy's own 502/504 after the last attempt found no usable answer.
    fn failure(&self, timed_out: bool, message: &str, failover: &Failover) -> ApiError {
        let attempts = failover.failures().to_string();
        if timed_out {
            ApiError::gateway_timeout(format!(
                "the upstream did not answer within {} ({}); attempts: {attempts}",
                failover
                    .rules()
                    .response_timeout()
                    .map_or_else(|| "any time".to_owned(), |t| format!("{} s", t.as_secs())),
                timeout_setting(&self.snapshot.config.kind),
            ))
            .with_attempts(attempts)
        } else {
            ApiError::bad_gateway(format!("{message}; attempts: {attempts}"))
                .with_attempts(attempts)
        }
    }

    /// An upstream error answer as the client gets it: every form of the attempt's key and of
    /// every proxy key masked out of the body and the header values (some upstreams echo the
    /// key they got), and the attempts header added.
    fn error_reply(
        &self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: &Bytes,
        verdict: Verdict,
        failover: &Failover,
    ) -> Reply {
        let redactor = BodyRedactor::new(
            std::iter::once(self.key.key_value.expose()).chain(
                self.state
                    .settings
                    .proxy_keys
                    .iter()
                    .map(secrecy::ExposeSecret::expose_secret),
            ),
        );
        let body = match redactor.redact(body) {
            Cow::Borrowed(_) => body.clone(),
            Cow::Owned(redacted) => Bytes::from(redacted),
        };
        let echoed: Vec<HeaderName> = headers
            .iter()
            .filter(|(_, value)| matches!(redactor.redact(value.as_bytes()), Cow::Owned(_)))
            .map(|(name, _)| name.clone())
            .collect();
        for name in echoed {
            let values: Vec<HeaderValue> = headers
                .get_all(&name)
                .filter_map(|value| {
                    HeaderValue::from_bytes(&redactor.redact(value.as_bytes())).ok()
                })
                .collect();
            headers.remove(&name);
            for value in values {
                headers.append(name.clone(), value);
            }
        }
        if let Ok(value) = HeaderValue::from_str(&failover.failures().to_string()) {
            headers.insert(HeaderName::from_static(ATTEMPTS_HEADER), value);
        }
        Reply::Buffered {
            status,
            headers,
            body,
            verdict,
        }
    }

    /// One warn line per failed exchange: config, status, each attempt's class, the last key
    /// (id and mask, never the value).
    fn log_failure(&self, status: StatusCode, failover: &Failover) {
        tracing::warn!(
            config = %self.snapshot.config.slug,
            status = status.as_u16(),
            attempts = %failover.failures(),
            key_id = %self.key.id,
            key = %self.key.key_value,
            "proxied request failed"
        );
    }
}

/// Where the response timeout of a config comes from, for the 504's message.
fn timeout_setting(kind: &ConfigKind) -> &'static str {
    match kind {
        ConfigKind::Generic(_) => "the config's response_timeout_seconds, else PROXY_TIMEOUT",
        ConfigKind::Llm(_) => "the config's response_timeout_seconds, else LLM_RESPONSE_TIMEOUT",
    }
}

/// The request head of the last attempt, kept so a retry to the same URL sends it again with
/// only the key headers replaced, instead of copying every forwarded header per attempt.
struct Prepared {
    url: String,
    request: FrozenClientRequest,
}

/// One attempt's answer, and the host slot its connection holds.
type Sent = Result<(awc::ClientResponse, HostSlot), SendRequestError>;

/// Sends one attempt once its host has a free connection slot.
async fn send_once(
    client: &UpstreamClient,
    target: Target,
    request: &mut UpstreamRequest<'_>,
    prepared: &mut Option<Prepared>,
    timeout: Option<Duration>,
) -> Sent {
    let Some(slot) = client
        .hosts
        .acquire(&target.url, client.settings.connect_timeout)
        .await
    else {
        // Every slot of the host stayed in use for the connect timeout: as good as a connection
        // that could not be made in time, and judged the same way.
        let busy = std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "all {} connections of this worker to the upstream host \
                 (UPSTREAM_MAX_CONNECTIONS_PER_HOST) stayed in use for {} s",
                client.settings.max_connections_per_host,
                client.settings.connect_timeout.as_secs()
            ),
        );
        return Err(SendRequestError::Connect(ConnectError::Io(busy)));
    };
    let response = send_attempt(client, target, request, prepared, timeout).await?;
    Ok((response, slot))
}

async fn send_attempt(
    client: &UpstreamClient,
    target: Target,
    request: &mut UpstreamRequest<'_>,
    prepared: &mut Option<Prepared>,
    timeout: Option<Duration>,
) -> Result<awc::ClientResponse, SendRequestError> {
    let sender = match prepared.as_ref().filter(|p| p.url == target.url) {
        Some(previous) => {
            let mut key_headers = HeaderMap::with_capacity(target.headers.len());
            for (name, value) in target.headers {
                key_headers.insert(name, value);
            }
            Sender::Again(previous.request.extra_headers(key_headers))
        }
        None => {
            // The first attempt moves the forwarded headers in; a retry to another URL (the key
            // travels in the query) copies them from the previous head, whose key headers the
            // new ones replace.
            let headers = match prepared.as_ref() {
                Some(previous) => previous.request.headers().clone(),
                None => std::mem::take(&mut request.headers),
            };
            let mut upstream = client
                .raw()
                .request(request.method.clone(), target.url.as_str())
                .no_decompress();
            if let Some(timeout) = timeout {
                upstream = upstream.timeout(timeout);
            }
            *upstream.headers_mut() = headers;
            for (name, value) in target.headers {
                upstream.headers_mut().insert(name, value);
            }
            let frozen = upstream.freeze()?;
            let sender = Sender::First(frozen.clone());
            *prepared = Some(Prepared {
                url: target.url,
                request: frozen,
            });
            sender
        }
    };
    match &mut request.body {
        RequestBody::Replayable(bytes) => sender.send_body(bytes.clone()).await,
        RequestBody::Streaming { payload, length } => {
            let Some(payload) = payload.take() else {
                return Err(SendRequestError::Body(
                    "the request body was already sent".into(),
                ));
            };
            match length {
                Some(length) => sender.send_body(SizedStream::new(*length, payload)).await,
                None => sender.send_body(BodyStream::new(payload)).await,
            }
        }
    }
}

/// A prepared request head, sent as it is or with other key headers.
enum Sender {
    First(FrozenClientRequest),
    Again(FrozenSendBuilder),
}

impl Sender {
    fn send_body<B: actix_web::body::MessageBody + 'static>(
        self,
        body: B,
    ) -> awc::SendClientRequest {
        match self {
            Sender::First(request) => request.send_body(body),
            Sender::Again(builder) => builder.send_body(body),
        }
    }
}

/// Moves the response headers out of an upstream response instead of copying them.
fn take_headers(response: awc::ClientResponse) -> (HeaderMap, awc::ClientResponse) {
    let mut headers = HeaderMap::new();
    let response = response.map_body(|head, payload| {
        headers = std::mem::take(&mut head.headers);
        payload
    });
    (headers, response)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The key and any credential query value masked out of an error message.
fn redact(message: &str, key: &ApiKey) -> String {
    Redactor::new([key.key_value.expose()])
        .redact(message)
        .into_owned()
}

/// Renders the in-band event that closes an event stream broken after the commit boundary.
pub type StreamErrorEvent = Box<dyn Fn(&StreamError) -> Bytes>;

/// Builds the client's response from an upstream reply: hop-by-hop headers dropped, the body
/// streamed with the idle and total timeouts (or sent whole when it was buffered). An event
/// stream that breaks ends with `error_event` when one is given, else the connection is cut so
/// the client cannot mistake it for a complete body.
pub fn respond(
    reply: Reply,
    settings: &Settings,
    error_event: Option<StreamErrorEvent>,
) -> HttpResponse {
    match reply {
        Reply::Stream {
            status,
            mut headers,
            body,
        } => {
            let event_stream = is_event_stream(&headers);
            let length = keep_end_to_end_headers(&mut headers, false);
            let body = IdleTimeout::new(body, settings.stream_idle_timeout)
                .with_total(settings.total_timeout);
            let mut builder = HttpResponse::build(status);
            let mut response = match (event_stream, error_event, length) {
                (true, Some(event), _) => builder.streaming(EndWithEvent::new(body, event)),
                (true, None, _) | (false, _, None) => builder.streaming(body),
                (false, _, Some(length)) => builder.body(SizedStream::new(length, body)),
            };
            if event_stream {
                headers.insert(
                    HeaderName::from_static("x-accel-buffering"),
                    HeaderValue::from_static("no"),
                );
            }
            *response.headers_mut() = headers;
            response
        }
        Reply::Buffered {
            status,
            mut headers,
            body,
            ..
        } => {
            keep_end_to_end_headers(&mut headers, false);
            let mut response = HttpResponse::build(status).body(body);
            *response.headers_mut() = headers;
            response
        }
    }
}

/// Drops, in place, the headers that must not reach the client: hop-by-hop ones, and
/// `Content-Length` (returned instead: the server writes it from the body); a rewritten body
/// also loses the upstream's content type and encoding.
pub fn keep_end_to_end_headers(headers: &mut HeaderMap, body_rewritten: bool) -> Option<u64> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    // Owned only when present: the filter below cannot borrow the map it edits.
    let connection = connection_header(headers).map(str::to_owned);
    headers.retain(|name, _| {
        let describes_old_body = *name == header::CONTENT_LENGTH
            || (body_rewritten
                && (*name == header::CONTENT_TYPE || *name == header::CONTENT_ENCODING));
        !describes_old_body
            && llm_adapters::forward_response_header(name.as_str(), connection.as_deref())
    });
    length
}

/// The `Connection` header of a message, for the hop-by-hop rules.
pub fn connection_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
}

/// Whether a response is a server-sent event stream.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(llm_adapters::is_event_stream)
}
