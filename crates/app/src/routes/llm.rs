//! The LLM proxy of SPEC §2: `ANY /llm/{slug}/{action...}`. Clients authenticate the way their
//! SDK does (by the config's client format), the proxy key is stripped, the request body is
//! buffered once (bounded by `MAX_BODY_BYTES`) and replayed for failover without copying, the
//! upstream key is injected the upstream format's way, streams pass through chunk by chunk, and
//! every error the proxy itself reports is shaped like the client format's own errors.

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header},
    web,
};
use bytes::{Bytes, BytesMut};
use domain::{ConfigKind, LlmTarget};
use futures_util::StreamExt;
use llm_adapters::{ClientFormat, ProxyError};

use crate::{
    errors::ApiError,
    routes::proxy::{outcome_name, split_proxy_path},
    state::AppState,
    streaming::StreamError,
    upstream::{self, Reply, RequestBody, Target, UpstreamClient, UpstreamRequest},
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
    let client_format = ClientFormat::from(target);
    let result = serve(
        &request,
        payload,
        &state,
        &client,
        &snapshot,
        target,
        action,
        client_format,
    )
    .await;
    let slug = snapshot.config.slug.as_str();
    match result {
        Ok((response, outcome)) => {
            state
                .metrics
                .count_request(slug, response.status().as_u16(), outcome);
            response
        }
        Err(error) => {
            state
                .metrics
                .count_request(slug, error.status().as_u16(), error.code());
            client_error(client_format, &error)
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces are distinct"
)]
async fn serve(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    client: &UpstreamClient,
    snapshot: &domain::ConfigSnapshot,
    target: &LlmTarget,
    action: &str,
    client_format: ClientFormat,
) -> Result<(HttpResponse, &'static str), ApiError> {
    let body = read_body(payload, state.settings.max_body_bytes).await?;
    let lookup = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let query = request.query_string();
    let auth = llm_adapters::authenticate(client_format, lookup, query, &body)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let presented = auth
        .key
        .as_ref()
        .ok_or_else(|| ApiError::unauthorized(missing_key_message(client_format)))?;
    if !state.proxy_keys.verify(&presented.key) {
        return Err(ApiError::unauthorized("the proxy key is not valid"));
    }
    let body = auth.rewritten_body.map_or(body, Bytes::from);

    // Endpoints the conversion does not cover (model lists, embeddings) pass through as sent.
    let conversion = llm_adapters::Conversion::lookup(client_format, target.api_format);
    let converted = match &conversion {
        Some(conversion) => match conversion.request(action, query, &body) {
            Ok(converted) => Some(converted),
            Err(error) if error.code() == "unsupported_conversion" => None,
            Err(error) => {
                let status =
                    StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
                return Err(ApiError::new(status, error.code(), error.to_string()));
            }
        },
        None => None,
    };
    let conversion = conversion.filter(|_| converted.is_some());
    let (action, query, body) = match &converted {
        Some(converted) => (
            converted.action.as_str(),
            converted.query.as_str(),
            Bytes::from(converted.body.clone()),
        ),
        None => (action, query, body),
    };

    let connection = upstream::connection_header(request.headers());
    let mut headers = header::HeaderMap::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let forward = match &conversion {
            Some(conversion) => conversion.forward_request_header(name.as_str(), connection),
            None => {
                name != header::CONTENT_LENGTH
                    && llm_adapters::forward_llm_request_header(
                        name.as_str(),
                        client_format,
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
    let target_for = |key: &str| {
        let prepared = llm_adapters::prepare_llm_request(target, action, query, key, lookup)
            .map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
        Target::new(prepared.url, &prepared.injection)
    };
    let upstream_request = UpstreamRequest {
        method: request.method().clone(),
        headers,
        body: RequestBody::Replayable(body),
        target: &target_for,
    };
    let reply = upstream::send_with_failover(state, client, snapshot, upstream_request).await?;
    let outcome = match &reply {
        Reply::Stream { .. } => "success",
        Reply::Buffered { verdict, .. } => outcome_name(*verdict),
    };
    let idle = state.settings.stream_idle_timeout;
    let event: upstream::StreamErrorEvent = Box::new(move |error: &StreamError| {
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
    });
    let response = match (conversion, converted) {
        (Some(conversion), Some(converted)) => {
            convert_reply(reply, &conversion, &converted, &state.settings, event).await
        }
        _ => upstream::respond(reply, &state.settings, Some(event)),
    };
    Ok((response, outcome))
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
        } => match read_all(body, CONVERTED_BODY_LIMIT).await {
            Ok(bytes) => (status, headers, bytes),
            Err(message) => {
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

/// Reads a whole upstream body, bounded.
async fn read_all(mut body: upstream::BodyChunks, limit: usize) -> Result<Bytes, String> {
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("the upstream response could not be read: {e}"))?;
        if bytes.len() + chunk.len() > limit {
            return Err("the upstream response is too large to convert".to_owned());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

/// Reads the whole request body once, refusing more than `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("request body could not be read: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than MAX_BODY_BYTES",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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
    if let Some(seconds) = error.retry_after() {
        response.insert_header((header::RETRY_AFTER, seconds.to_string()));
    }
    response
        .content_type(llm_adapters::ERROR_CONTENT_TYPE)
        .body(body)
}
