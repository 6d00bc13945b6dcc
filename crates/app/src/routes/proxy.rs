//! The generic proxy of SPEC §2: `ANY /proxy/{slug}/{rest...}` to an active GENERIC config's
//! `target_url`, with the client's `X-Proxy-Key` checked in constant time, the method enforced,
//! every query value kept, hop-by-hop headers dropped, the next upstream key injected, bodies
//! streamed both ways, and failover when the request body can be replayed.

use std::time::Instant;

use actix_web::{
    HttpRequest, HttpResponse,
    http::{
        StatusCode,
        header::{self, HeaderMap},
    },
    web,
};
use domain::{ConfigKind, GenericTarget, KeyLocation};
use llm_adapters::PROXY_KEY_HEADER;

use crate::{
    client_keys::Caller,
    completion::Completion,
    disconnect,
    errors::ApiError,
    inbound::{self, BodyLimits, BufferedBody},
    state::AppState,
    upstream::{self, AttemptTrace, Reply, RequestBody, Target, UpstreamClient, UpstreamRequest},
};

/// Request bodies up to this size (with a declared length) are buffered so a failed attempt can
/// be retried with another key; larger or unsized bodies stream straight through, once.
pub const REPLAY_BUFFER_BYTES: u64 = 1 << 20;

/// Mounts the generic proxy.
pub fn configure(config: &mut web::ServiceConfig, cors: crate::routes::ProxyCors) {
    config.service(
        web::scope("/proxy")
            .wrap(cors)
            .default_service(web::to(generic_proxy)),
    );
}

async fn generic_proxy(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    client: web::Data<UpstreamClient>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    state.hop.check(request.headers())?;
    let presented = request
        .headers()
        .get(PROXY_KEY_HEADER)
        .and_then(|v| v.to_str().ok());
    let caller = match presented {
        Some(key) => state.authenticate(key, "the X-Proxy-Key is not valid")?,
        None => {
            return Err(ApiError::unauthorized(
                "send one of the GLOBAL_PROXY_KEYS or a client key in the X-Proxy-Key header",
            ));
        }
    };
    let (slug, rest) = split_proxy_path(request.path(), "/proxy/");
    let snapshot = state.active_config(slug).await?;
    let ConfigKind::Generic(target) = &snapshot.config.kind else {
        return Err(ApiError::not_found(format!(
            "proxy config {slug:?} is an LLM config; call it under /llm/{slug}/"
        )));
    };
    if request.method().as_str() != target.method.as_str() {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("proxy config {slug:?} accepts only {}", target.method),
        ));
    }
    let mut completion = Completion::new(
        state.exchange_observers.clone(),
        snapshot.config.id,
        request.method(),
        request.path(),
        started,
    );
    if let Caller::Client(entry) = &caller
        && let Err(error) = state
            .client_keys
            .admit(entry, snapshot.config.id, &mut completion)
            .await
    {
        state.metrics.count_request(
            snapshot.config.slug.as_str(),
            error.status().as_u16(),
            error.code(),
        );
        completion.fail(error.status().as_u16(), error.code());
        return Err(error);
    }
    let query = request.query_string();
    let target_for = |key: &str| {
        let injection = llm_adapters::inject_at(&target.key_placement, key);
        let url = llm_adapters::join_url(
            target.target_url.as_str(),
            rest,
            &injection.apply_to_query(query),
        )
        .map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
        Target::new(url, &injection)
    };
    let (body, buffered) = match request_body(&request, payload, &state.bodies).await {
        Ok(read) => read,
        Err(error) => {
            completion.fail(error.status().as_u16(), error.code());
            return Err(error);
        }
    };
    completion.set_bytes_in(match &body {
        RequestBody::Replayable(bytes) => bytes.len() as u64,
        RequestBody::Streaming { length, .. } => length.unwrap_or(0),
    });
    let trace = AttemptTrace::default();
    let upstream_request = UpstreamRequest {
        method: request.method().clone(),
        headers: {
            let mut headers = forwarded_headers(request.headers(), target);
            state.hop.stamp(&mut headers);
            headers
        },
        body,
        target: &target_for,
        trace: &trace,
    };
    let reply = tokio::select! {
        reply = upstream::send_with_failover(&state, &client, &snapshot, upstream_request) => reply,
        () = disconnect::client_gone(&request) => Err(ApiError::client_closed()),
    };
    drop(buffered);
    trace.fill(completion.facts_mut());
    let slug = snapshot.config.slug.as_str();
    match reply {
        Ok(reply) => {
            let (status, outcome) = match &reply {
                Reply::Stream { status, .. } => (*status, "success"),
                Reply::Buffered {
                    status, verdict, ..
                } => (*status, outcome_name(*verdict)),
            };
            state.metrics.count_request(slug, status.as_u16(), outcome);
            Ok(completion.respond(upstream::respond(reply, &state.settings, None), outcome))
        }
        Err(error) => {
            state
                .metrics
                .count_request(slug, error.status().as_u16(), error.code());
            completion.fail(error.status().as_u16(), error.code());
            Err(error)
        }
    }
}

/// The metric outcome of an upstream error reply.
pub fn outcome_name(verdict: domain::Verdict) -> &'static str {
    verdict.as_str()
}

/// Splits `/proxy/{slug}/{rest}` into the slug and the raw (still percent-encoded) rest.
pub fn split_proxy_path<'a>(path: &'a str, prefix: &str) -> (&'a str, &'a str) {
    let tail = path.strip_prefix(prefix).unwrap_or(path);
    tail.split_once('/').unwrap_or((tail, ""))
}

/// The client's headers minus hop-by-hop ones, `Host`, `Content-Length` (set from the body),
/// the proxy key and whatever header the upstream key will occupy.
fn forwarded_headers(incoming: &HeaderMap, target: &GenericTarget) -> HeaderMap {
    let key_header = match target.key_placement.location {
        KeyLocation::Header => Some(&*target.key_placement.name),
        KeyLocation::Query => None,
    };
    let connection = upstream::connection_header(incoming);
    let mut headers = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        let skip = name == header::CONTENT_LENGTH
            || name.as_str() == PROXY_KEY_HEADER
            || key_header.is_some_and(|k| k.eq_ignore_ascii_case(name.as_str()))
            || !llm_adapters::forward_generic_request_header(name.as_str(), connection);
        if !skip {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Buffers small bodies of known length (replayable for failover, within the limits of
/// [`BodyLimits`]); streams the rest, once. A buffered body comes back a second time as the
/// holder of its share of the buffer budget, to keep until the exchange ends.
async fn request_body(
    request: &HttpRequest,
    payload: web::Payload,
    limits: &BodyLimits,
) -> Result<(RequestBody, Option<BufferedBody>), ApiError> {
    let chunked = request.headers().contains_key(header::TRANSFER_ENCODING);
    let length = if chunked {
        None
    } else {
        inbound::content_length(request.headers())?
    };
    match length {
        None if !chunked => Ok((RequestBody::Replayable(bytes::Bytes::new()), None)),
        Some(length) if length <= REPLAY_BUFFER_BYTES.min(limits.max_bytes() as u64) => {
            let body = limits.read(payload, Some(length)).await?;
            Ok((RequestBody::Replayable(body.bytes.clone()), Some(body)))
        }
        length => Ok((
            RequestBody::Streaming {
                payload: Some(payload),
                length,
            },
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use actix_web::http::header::{HeaderName, HeaderValue};
    use domain::{HttpMethod, KeyPlacement};

    use super::*;

    fn target(url: &str) -> GenericTarget {
        GenericTarget {
            method: HttpMethod::Get,
            target_url: url.parse().unwrap(),
            key_placement: KeyPlacement::new(KeyLocation::Header, "X-Api-Key").unwrap(),
        }
    }

    #[test]
    fn proxy_path_splits_slug_and_raw_rest() {
        assert_eq!(
            split_proxy_path("/proxy/weather/v1/today", "/proxy/"),
            ("weather", "v1/today")
        );
        assert_eq!(
            split_proxy_path("/proxy/weather", "/proxy/"),
            ("weather", "")
        );
    }

    #[test]
    fn forwarded_headers_drop_proxy_key_hop_by_hop_and_the_key_header() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("x-proxy-key", "secret"),
            ("x-api-key", "client-supplied"),
            ("connection", "keep-alive"),
            ("host", "proxy.local"),
            ("accept", "application/json"),
            ("x-custom", "1"),
        ] {
            incoming.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let headers = forwarded_headers(&incoming, &target("https://x.example"));
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(headers.contains_key("accept") && headers.contains_key("x-custom"));
    }
}
