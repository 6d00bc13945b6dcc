//! The LLM proxy of SPEC §2: `ANY /llm/{slug}/{action...}`. Clients authenticate the way their
//! SDK does (by the config's client format) and are checked before a byte of the body is read
//! (only OpenAI's body `api_key` needs the body), the proxy key is stripped, the request body is
//! buffered once (within `crate::inbound`'s limits) and replayed for failover without copying, the
//! upstream key is injected the upstream format's way, streams pass through chunk by chunk, and
//! every error the proxy itself reports is shaped like the client format's own errors.

use actix_web::{
    HttpRequest, HttpResponse,
    http::{
        StatusCode,
        header::{self, HeaderMap},
    },
    web,
};
use std::time::Instant;

use bytes::Bytes;
use domain::{ConfigKind, LlmTarget};
use llm_adapters::{ClientFormat, ProxyError};

use crate::{
    client_keys::Caller,
    completion::Completion,
    errors::ApiError,
    inbound::BufferedBody,
    routes::proxy::{outcome_name, split_proxy_path},
    state::AppState,
    streaming::StreamError,
    upstream::{self, AttemptTrace, Reply, RequestBody, Target, UpstreamClient, UpstreamRequest},
};

/// Mounts the LLM proxy.
pub fn configure(config: &mut web::ServiceConfig, cors: crate::routes::ProxyCors) {
    config.service(
        web::scope("/llm")
            .wrap(cors)
            .default_service(web::to(llm_proxy)),
    );
}

async fn llm_proxy(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    client: web::Data<UpstreamClient>,
) -> HttpResponse {
    use actix_web::ResponseError;
    let started = Instant::now();
    let (slug, action) = split_proxy_path(request.path(), "/llm/");
    let snapshot = match state.active_config(slug).await {
        Ok(snapshot) => snapshot,
        Err(error) => return error.error_response(),
    };
    let ConfigKind::Llm(target) = &snapshot.config.kind else {
        return ApiError::not_found(format!(
            "proxy config {slug:?} is a GENERIC config; call it under /proxy/{slug}/"
        ))
        .error_response();
    };
    let exchange = LlmExchange {
        request: &request,
        state: &state,
        client: &client,
        snapshot: &snapshot,
        target,
        action,
        client_format: ClientFormat::from(target),
        started,
        trace: AttemptTrace::default(),
    };
    let mut completion = None;
    let result = exchange.serve(payload, &mut completion).await;
    if let Some(completion) = &mut completion {
        exchange.trace.fill(completion.facts_mut());
    }
    let slug = snapshot.config.slug.as_str();
    match result {
        Ok((response, outcome)) => {
            state
                .metrics
                .count_request(slug, response.status().as_u16(), outcome);
            match completion {
                Some(completion) => completion.respond(response, outcome),
                None => response,
            }
        }
        Err(error) => {
            state
                .metrics
                .count_request(slug, error.status().as_u16(), error.code());
            if let Some(completion) = completion {
                completion.fail(error.status().as_u16(), error.code());
            }
            client_error(exchange.client_format, &error)
        }
    }
}

/// One LLM request on its way through the proxy: what it asked for and where it goes.
struct LlmExchange<'a> {
    request: &'a HttpRequest,
    state: &'a AppState,
    client: &'a UpstreamClient,
    snapshot: &'a domain::ConfigSnapshot,
    target: &'a LlmTarget,
    action: &'a str,
    client_format: ClientFormat,
    /// When the request arrived.
    started: Instant,
    /// The failover loop's attempts, for the request log.
    trace: AttemptTrace,
}

/// The request body after authentication, with the credential field removed, and who sent it.
struct ClientBody {
    body: BufferedBody,
    caller: Caller,
}

impl LlmExchange<'_> {
    /// Serves the exchange; once the client is authenticated, `completion` holds the exchange's
    /// [`Completion`] (the caller finishes it with the answer).
    async fn serve(
        &self,
        payload: web::Payload,
        completion: &mut Option<Completion>,
    ) -> Result<(HttpResponse, &'static str), ApiError> {
        let body = self.authenticated_body(payload).await?;
        let done = completion.insert(Completion::new(
            self.state.exchange_observers.clone(),
            self.snapshot.config.id,
            self.request.method(),
            self.request.path(),
            self.started,
        ));
        done.set_bytes_in(body.body.bytes.len() as u64);
        if let Caller::Client(entry) = &body.caller {
            self.state
                .client_keys
                .admit(entry, self.snapshot.config.id, done)
                .await?;
        }
        let conversion =
            llm_adapters::Conversion::lookup(self.client_format, self.target.api_format);
        let mut converted = match &conversion {
            Some(conversion) => self.convert(conversion, &body.body.bytes)?,
            None => None,
        };
        // Endpoints the conversion does not cover (model lists, embeddings) pass through as sent.
        let conversion = conversion.filter(|_| converted.is_some());
        let upstream_body = match converted.as_mut() {
            Some(converted) => Bytes::from(std::mem::take(&mut converted.body)),
            None => body.body.bytes.clone(),
        };
        let reply = tokio::select! {
            reply = self.send(conversion.as_ref(), converted.as_ref(), upstream_body) => reply,
            () = crate::disconnect::client_gone(self.request) => Err(ApiError::client_closed()),
        };
        // The client's body (and its share of the buffer budget) is held until the exchange ends.
        drop(body);
        let reply = done.meter(reply?, self.target.api_format);
        let outcome = match &reply {
            Reply::Stream { .. } => "success",
            Reply::Buffered { verdict, .. } => outcome_name(*verdict),
        };
        let event = self.stream_error_event();
        let response = match (conversion, converted) {
            (Some(conversion), Some(converted)) => {
                convert_reply(reply, &conversion, &converted, &self.state.settings, event).await
            }
            _ => upstream::respond(reply, &self.state.settings, Some(event)),
        };
        Ok((response, outcome))
    }

    /// Checks a credential from the request head before reading a byte of the body; only a
    /// client that sent none may still authenticate with OpenAI's body `api_key` field. The body
    /// is read within the limits of [`crate::inbound::BodyLimits`] either way, and loses its `api_key` field.
    async fn authenticated_body(&self, payload: web::Payload) -> Result<ClientBody, ApiError> {
        self.state.hop.check(self.request.headers())?;
        let lookup = |name: &str| {
            self.request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
        };
        let head_key =
            llm_adapters::client_key(self.client_format, lookup, self.request.query_string());
        let verified_in_head = match &head_key {
            Some(presented) => Some(self.verify(&presented.key)?),
            None if self.client_format.is_openai() => None,
            None => {
                return Err(ApiError::unauthorized(missing_key_message(
                    self.client_format,
                )));
            }
        };
        let limits = &self.state.bodies;
        let declared = limits.declared_length(self.request.headers())?;
        let body = limits.read(payload, declared).await?;
        if !self.client_format.is_openai() {
            let Some(caller) = verified_in_head else {
                return Err(ApiError::unauthorized(missing_key_message(
                    self.client_format,
                )));
            };
            return Ok(ClientBody { body, caller });
        }
        let found = llm_adapters::take_body_api_key(&body.bytes)
            .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
        match (found, verified_in_head) {
            (Some(found), head) => {
                let caller = match head {
                    Some(caller) => caller,
                    None => self.verify(&found.key)?,
                };
                Ok(ClientBody {
                    body: body.with_bytes(Bytes::from(found.body)),
                    caller,
                })
            }
            (None, Some(caller)) => Ok(ClientBody { body, caller }),
            (None, None) => Err(ApiError::unauthorized(missing_key_message(
                self.client_format,
            ))),
        }
    }

    fn verify(&self, presented: &str) -> Result<Caller, ApiError> {
        self.state
            .authenticate(presented, "the proxy key is not valid")
    }

    /// The request in the upstream's format, `None` for an endpoint the conversion leaves as is.
    fn convert(
        &self,
        conversion: &llm_adapters::Conversion,
        body: &[u8],
    ) -> Result<Option<llm_adapters::ConvertedRequest>, ApiError> {
        match conversion.request(self.action, self.request.query_string(), body) {
            Ok(converted) => Ok(Some(converted)),
            Err(llm_adapters::ConvertError::UnsupportedAction { .. }) => Ok(None),
            Err(error) => {
                let status =
                    StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
                Err(ApiError::new(status, error.code(), error.to_string()))
            }
        }
    }

    /// Sends the (converted) request upstream with failover.
    async fn send(
        &self,
        conversion: Option<&llm_adapters::Conversion>,
        converted: Option<&llm_adapters::ConvertedRequest>,
        body: Bytes,
    ) -> Result<Reply, ApiError> {
        let (action, query) = match converted {
            Some(converted) => (converted.action.as_str(), converted.query.as_str()),
            None => (self.action, self.request.query_string()),
        };
        let lookup = |name: &str| {
            self.request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
        };
        let target_for = |key: &str| {
            let prepared =
                llm_adapters::prepare_llm_request(self.target, action, query, key, lookup)
                    .map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
            Target::new(prepared.url, &prepared.injection)
        };
        let upstream_request = UpstreamRequest {
            method: self.request.method().clone(),
            headers: self.forwarded_headers(conversion),
            body: RequestBody::Replayable(body),
            target: &target_for,
            trace: &self.trace,
        };
        upstream::send_with_failover(self.state, self.client, self.snapshot, upstream_request).await
    }

    /// The client's headers that travel upstream: the client format's own credentials and the
    /// hop-by-hop headers are dropped; a converted body is JSON whatever the client sent.
    fn forwarded_headers(&self, conversion: Option<&llm_adapters::Conversion>) -> HeaderMap {
        let incoming = self.request.headers();
        let connection = upstream::connection_header(incoming);
        let mut headers = HeaderMap::with_capacity(incoming.len());
        for (name, value) in incoming {
            let forward = match conversion {
                Some(conversion) => conversion.forward_request_header(name.as_str(), connection),
                None => {
                    name != header::CONTENT_LENGTH
                        && llm_adapters::forward_llm_request_header(
                            name.as_str(),
                            self.client_format,
                            connection,
                        )
                }
            };
            if forward {
                headers.append(name.clone(), value.clone());
            }
        }
        if conversion.is_some() {
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
        }
        self.state.hop.stamp(&mut headers);
        headers
    }

    /// The in-band event that ends a stream broken after the commit boundary, in the client's
    /// format.
    fn stream_error_event(&self) -> upstream::StreamErrorEvent {
        let idle = self.state.settings.stream_idle_timeout;
        let client_format = self.client_format;
        Box::new(move |error: &StreamError| {
            let (code, message) = match error {
                StreamError::Idle(_) => (
                    "stream_idle_timeout",
                    format!(
                        "the upstream sent nothing for {} s (STREAM_IDLE_TIMEOUT); the response is incomplete",
                        idle.as_secs()
                    ),
                ),
                StreamError::Total(_) => (
                    "stream_total_timeout",
                    format!("{error}; the response is incomplete"),
                ),
                StreamError::Upstream(_) => (
                    "upstream_stream_broken",
                    "the upstream stream broke; the response is incomplete".to_owned(),
                ),
            };
            llm_adapters::stream_error_event(client_format, &ProxyError::new(502, code, &message))
        })
    }
}

/// Largest non-streamed upstream answer read whole for conversion.
const CONVERTED_BODY_LIMIT: usize = 64 << 20;

/// Answers in the client's format: whole bodies converted at once, event streams event by event.
async fn convert_reply(
    reply: Reply,
    conversion: &llm_adapters::Conversion,
    converted: &llm_adapters::ConvertedRequest,
    settings: &crate::config::Settings,
    event: upstream::StreamErrorEvent,
) -> HttpResponse {
    let (status, headers, body) = match reply {
        Reply::Stream {
            status,
            headers,
            body,
        } if upstream::is_event_stream(&headers) => {
            let chunks = crate::streaming::IdleTimeout::new(body, settings.stream_idle_timeout)
                .with_total(settings.total_timeout);
            let converting =
                crate::streaming::Converting::new(chunks, converted.stream_converter());
            let response = HttpResponse::build(status)
                .streaming(crate::streaming::EndWithEvent::new(converting, event));
            let mut response = with_upstream_headers(response, headers, converted.content_type());
            response.headers_mut().insert(
                header::HeaderName::from_static("x-accel-buffering"),
                header::HeaderValue::from_static("no"),
            );
            return response;
        }
        Reply::Stream {
            status,
            headers,
            body,
        } => match crate::upstream_body::read_bounded(body, CONVERTED_BODY_LIMIT).await {
            Ok(bytes) => (status, headers, bytes),
            Err(error) => {
                let message = format!("the answer could not be converted: {error}");
                return client_error(conversion.client(), &ApiError::bad_gateway(message));
            }
        },
        Reply::Buffered {
            status,
            headers,
            body,
            ..
        } => (status, headers, body),
    };
    let answer = conversion.response(status.as_u16(), &body);
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let response = HttpResponse::build(status).body(answer.body);
    with_upstream_headers(response, headers, answer.content_type)
}

/// A converted answer with the upstream's end-to-end headers, except those that described the
/// upstream's body, and the converted content type.
fn with_upstream_headers(
    mut response: HttpResponse,
    mut headers: header::HeaderMap,
    content_type: &'static str,
) -> HttpResponse {
    upstream::keep_end_to_end_headers(&mut headers, true);
    *response.headers_mut() = headers;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn missing_key_message(client: ClientFormat) -> &'static str {
    match client {
        ClientFormat::Openai | ClientFormat::OpenaiResponses => {
            "send the proxy key as Authorization: Bearer <key> (the OpenAI SDK's api_key)"
        }
        ClientFormat::Anthropic => "send the proxy key as x-api-key (the Anthropic SDK's api_key)",
        ClientFormat::Gemini => {
            "send the proxy key as x-goog-api-key or ?key= (the Gemini SDK's api_key)"
        }
    }
}

/// An error of the proxy itself, shaped like the client format's errors so its SDK raises it.
fn client_error(client: ClientFormat, error: &ApiError) -> HttpResponse {
    let status = error.status();
    let body = llm_adapters::error_body(
        client,
        &ProxyError::new(status.as_u16(), error.code(), error.message()),
    );
    let mut response = HttpResponse::build(status);
    if error.closes_connection() {
        response.force_close();
    }
    if let Some(seconds) = error.retry_after() {
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
    }
    if let Some(attempts) = error.attempts() {
        response.insert_header((crate::errors::ATTEMPTS_HEADER, attempts));
    }
    response
        .content_type(llm_adapters::ERROR_CONTENT_TYPE)
        .body(body)
}
