//! Inbound request bodies the proxies buffer: a declared length over `MAX_BODY_BYTES` is refused
//! before a byte is read, a body must arrive within `CLIENT_BODY_TIMEOUT`, and every buffered
//! byte counts against one process-wide budget (`BODY_BUFFER_BUDGET_BYTES`), so neither
//! unauthenticated clients nor slow ones can hold the server's memory or its connections.
//! This is the one bounded reader of client bodies; callers check credentials that travel in the
//! request head before they call it.

use std::{sync::Arc, time::Duration};

use actix_web::{
    http::{
        StatusCode,
        header::{self, HeaderMap},
    },
    web,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{config::Settings, errors::ApiError};

/// The budget counts in units of this many bytes, so a `u32` permit count covers terabytes.
const BUDGET_UNIT: usize = 1024;

/// What a client may send in a buffered body, and the memory all of them may hold at once.
#[derive(Debug)]
pub struct BodyLimits {
    max_bytes: usize,
    read_timeout: Duration,
    budget: Arc<Semaphore>,
    budget_units: usize,
}

/// A whole request body, holding its share of the buffer budget until it is dropped.
#[derive(Debug)]
pub struct BufferedBody {
    /// The bytes (cheap to clone for a retry).
    pub bytes: Bytes,
    _reservation: Option<OwnedSemaphorePermit>,
}

impl BufferedBody {
    /// The same reservation with other bytes (a body rewritten from this one, never larger).
    #[must_use]
    pub fn with_bytes(self, bytes: Bytes) -> BufferedBody {
        BufferedBody { bytes, ..self }
    }
}

impl BodyLimits {
    /// The limits of the settings.
    pub fn new(settings: &Settings) -> Self {
        BodyLimits {
            max_bytes: settings.max_body_bytes,
            read_timeout: settings.client_body_timeout,
            budget: Arc::new(Semaphore::new(units(settings.body_buffer_budget_bytes))),
            budget_units: units(settings.body_buffer_budget_bytes),
        }
    }

    /// The largest body buffered for one request (`MAX_BODY_BYTES`).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Bytes of the budget held by bodies being received or in flight upstream right now.
    pub fn buffered_bytes(&self) -> usize {
        (self.budget_units - self.budget.available_permits()) * BUDGET_UNIT
    }

    /// The request's declared `Content-Length`, refused when it is over `MAX_BODY_BYTES`.
    ///
    /// # Errors
    /// 400 for a malformed length; 413 when it is over the limit.
    pub fn declared_length(&self, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
        match content_length(headers)? {
            Some(length) if length > self.max_bytes as u64 => Err(too_large()),
            length => Ok(length),
        }
    }

    /// Reads a whole body of at most `MAX_BODY_BYTES` within `CLIENT_BODY_TIMEOUT`.
    ///
    /// # Errors
    /// 413 over the limit or past the declared length; 408 when the body is too slow; 503 with
    /// `Retry-After` when the buffer budget is spent; 400 when the connection breaks.
    pub async fn read(
        &self,
        payload: web::Payload,
        declared: Option<u64>,
    ) -> Result<BufferedBody, ApiError> {
        match tokio::time::timeout(
            self.read_timeout,
            self.read_within_limits(payload, declared),
        )
        .await
        {
            Ok(read) => read,
            Err(_elapsed) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_body_timeout",
                format!(
                    "the request body did not arrive within {} s (CLIENT_BODY_TIMEOUT)",
                    self.read_timeout.as_secs()
                ),
            )
            .closing_connection()),
        }
    }

    async fn read_within_limits(
        &self,
        mut payload: web::Payload,
        declared: Option<u64>,
    ) -> Result<BufferedBody, ApiError> {
        let limit = declared.map_or(self.max_bytes, |length| {
            usize::try_from(length).unwrap_or(usize::MAX)
        });
        // A declared length is reserved whole up front; a chunked body grows its reservation.
        let mut reservation = match declared {
            Some(0) | None => None,
            Some(_) => Some(self.reserve(limit)?),
        };
        let mut body = BytesMut::with_capacity(declared.map_or(0, |_| limit));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_request(
                    "invalid_body",
                    format!("request body could not be read: {e}"),
                )
                .closing_connection()
            })?;
            let length = body.len() + chunk.len();
            if length > limit {
                return Err(match declared {
                    Some(_) => ApiError::bad_request(
                        "invalid_body",
                        "request body is longer than its Content-Length",
                    )
                    .closing_connection(),
                    None => too_large(),
                });
            }
            if declared.is_none() {
                let held = reservation
                    .as_ref()
                    .map_or(0, |r| r.num_permits() * BUDGET_UNIT);
                if length > held {
                    let more = self.reserve(length - held)?;
                    match reservation.as_mut() {
                        Some(reservation) => reservation.merge(more),
                        None => reservation = Some(more),
                    }
                }
            }
            body.extend_from_slice(&chunk);
        }
        Ok(BufferedBody {
            bytes: body.freeze(),
            _reservation: reservation,
        })
    }

    fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let wanted = u32::try_from(units(bytes)).unwrap_or(u32::MAX);
        self.budget
            .clone()
            .try_acquire_many_owned(wanted)
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_busy",
                    "too many request bodies are being received right now (BODY_BUFFER_BUDGET_BYTES); try again shortly",
                )
                .with_retry_after(1)
                .closing_connection()
            })
    }
}

/// The request's `Content-Length`, whatever its size.
///
/// # Errors
/// 400 (closing the connection) when it is not a number.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_body", "Content-Length is not a number")
                        .closing_connection()
                })
        })
        .transpose()
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(BUDGET_UNIT)
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "request body is larger than MAX_BODY_BYTES",
    )
    .closing_connection()
}
