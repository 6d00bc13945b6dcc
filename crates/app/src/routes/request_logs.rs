//! The request log's admin routes (SPEC §10): `GET /admin/request-logs`, one page of the log
//! newest first with its filters and cursor, and `GET /admin/stats`, the time series and top
//! lists of a window. Both read the `RequestLog` port; the proxies never do.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use domain::{LogQueryInput, StatsInput};

use crate::{auth::Admin, errors::ApiError, openapi, state::AppState};

impl From<domain::LogQueryError> for ApiError {
    fn from(error: domain::LogQueryError) -> Self {
        match error {
            domain::LogQueryError::Cursor(malformed) => {
                ApiError::bad_request("invalid_cursor", malformed.to_string())
            }
            domain::LogQueryError::Fields(errors) => domain::Error::Invalid(errors).into(),
        }
    }
}

fn query<T: serde::de::DeserializeOwned>(request: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(request.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))
}

#[utoipa::path(
    get,
    path = "/admin/request-logs",
    tag = "usage",
    summary = "Read the request log, a page at a time",
    description = "One record per proxied request, newest first (time, then id). Every filter narrows the page; pass `next_cursor` back as `cursor` for the next one, with the same filters. Records are written in batches off the request path, so the last second or so may not be there yet; they are kept `REQUEST_LOG_RETENTION_DAYS` days, `REQUEST_LOG_MAX_ROWS` at most.",
    params(
        ("proxy_config_id" = Option<i64>, Query, description = "Only this config", minimum = 0),
        ("client_key_id" = Option<i64>, Query, description = "Only this client key", minimum = 0),
        ("api_key_id" = Option<i64>, Query, description = "Only this upstream key", minimum = 0),
        ("status_class" = Option<String>, Query, description = "`2xx`, `4xx` or `5xx`", pattern = "^(2xx|4xx|5xx)?$"),
        ("outcome" = Option<String>, Query, description = "Only this outcome (`success`, `rate_limited`, `key_rejected`, `upstream_fault`, a proxy error code...)", pattern = "^[a-z0-9_]{0,64}$"),
        ("from" = Option<String>, Query, description = "Records at or after this time (RFC 3339)", format = DateTime),
        ("to" = Option<String>, Query, description = "Records before this time (RFC 3339)", format = DateTime),
        ("limit" = Option<u16>, Query, description = "Records per page, 1 to 500 (default 100)", minimum = 1, maximum = 500),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page, as is; empty = the first page", pattern = "^([0-9]{1,15}_[0-9]{1,18})?$"),
    ),
    responses(
        (status = 200, description = "One page of records", body = openapi::RequestLogPage),
        (status = 400, description = "`cursor` is not one this service handed out (`invalid_cursor`), or the query string cannot be read (`invalid_query`)", body = openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = openapi::ErrorBody),
        (status = 422, description = "A filter or `limit` is invalid, each listed in `error.fields` (`invalid_fields`)", body = openapi::ErrorBody),
        (status = 503, description = "The database is unreachable (`dependency_unavailable`)", body = openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub(crate) async fn list_request_logs(
    _: Admin,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let input: LogQueryInput = query(&request)?;
    let query = input.validate()?;
    let page = state.request_log.query(&query).await?;
    Ok(HttpResponse::Ok().json(openapi::RequestLogPage {
        next_cursor: page.next_cursor.map(|cursor| cursor.to_string()),
        items: page.items.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/admin/stats",
    tag = "usage",
    summary = "Usage over time and the busiest configs and keys",
    description = "The records of a window (the same filters as the log) cut into buckets of a minute, an hour or a UTC day: requests, errors by status class, total latency p50/p95 and tokens per bucket, every bucket of the window present (empty ones with zeros and null latencies), plus the ten busiest configs, upstream keys and client keys. Without `to` the window ends now; without `from` it spans the last hour (`minute`), day (`hour`) or 30 days (`day`); at most 2 000 buckets. Percentiles are read from a latency histogram, interpolated within its bucket.",
    params(
        ("interval" = Option<openapi::StatsInterval>, Query, description = "Bucket width (default `hour`)"),
        ("proxy_config_id" = Option<i64>, Query, description = "Only this config", minimum = 0),
        ("client_key_id" = Option<i64>, Query, description = "Only this client key", minimum = 0),
        ("api_key_id" = Option<i64>, Query, description = "Only this upstream key", minimum = 0),
        ("status_class" = Option<String>, Query, description = "`2xx`, `4xx` or `5xx`", pattern = "^(2xx|4xx|5xx)?$"),
        ("outcome" = Option<String>, Query, description = "Only this outcome", pattern = "^[a-z0-9_]{0,64}$"),
        ("from" = Option<String>, Query, description = "Window start, inclusive (RFC 3339)", format = DateTime),
        ("to" = Option<String>, Query, description = "Window end, exclusive (RFC 3339)", format = DateTime),
    ),
    responses(
        (status = 200, description = "The series and top lists", body = openapi::Stats),
        (status = 400, description = "The query string cannot be read (`invalid_query`)", body = openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = openapi::ErrorBody),
        (status = 422, description = "A filter, `interval` or the window is invalid, each listed in `error.fields` (`invalid_fields`)", body = openapi::ErrorBody),
        (status = 503, description = "The database is unreachable (`dependency_unavailable`)", body = openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub(crate) async fn stats(
    _: Admin,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let input: StatsInput = query(&request)?;
    let query = input.validate(Utc::now())?;
    let stats = state.request_log.stats(&query).await?;
    Ok(HttpResponse::Ok().json(openapi::Stats::new(&query, stats)))
}
