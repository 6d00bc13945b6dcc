//! The one error type of the HTTP layer: every failure becomes the SPEC §2 JSON body
//! `{"error": {"code", "message"}}` with the right status; internals are logged, never shown.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use domain::{Dependency, Error as DomainError, FieldError};
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<FieldError>,
    retry_after: Option<u64>,
    close_connection: bool,
    attempts: Option<String>,
}

/// The response header naming each failed upstream attempt of a request (`429,503,timeout`).
pub const ATTEMPTS_HEADER: &str = "x-akr-attempts";

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    fields: &'a [FieldError],
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after: None,
            close_connection: false,
            attempts: None,
        }
    }

    /// 400 with a message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 502: the upstream could not be reached.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_unreachable", message)
    }

    /// 504: the upstream did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message)
    }

    /// 499 (nginx's "client closed request"): the client left before the answer; recorded in
    /// metrics and logs, never seen by anyone.
    pub fn client_closed() -> Self {
        let status = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(
            status,
            "client_closed_request",
            "the client closed the connection before the answer",
        )
        .closing_connection()
    }

    /// Adds a `Retry-After` header, in seconds.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Closes the connection after the answer: the client's request body was not (wholly) read,
    /// so the connection cannot carry another request.
    #[must_use]
    pub fn closing_connection(mut self) -> Self {
        self.close_connection = true;
        self
    }

    /// Whether the answer closes the connection.
    pub fn closes_connection(&self) -> bool {
        self.close_connection
    }

    /// Names each failed upstream attempt in an [`ATTEMPTS_HEADER`] header.
    #[must_use]
    pub fn with_attempts(mut self, attempts: String) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// The failed upstream attempts, when the error ends a failover.
    pub fn attempts(&self) -> Option<&str> {
        self.attempts.as_deref()
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human sentence.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Seconds for a `Retry-After` header, when set.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::NotFound { entity, id } => {
                ApiError::not_found(format!("{entity} {id} not found"))
            }
            DomainError::Conflict { entity, field } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("a {entity} with this {field} already exists"),
            ),
            DomainError::Invalid(errors) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_fields",
                message: errors.to_string(),
                fields: errors.fields().to_vec(),
                retry_after: None,
                close_connection: false,
                attempts: None,
            },
            DomainError::Unavailable {
                dependency,
                message,
            } => {
                tracing::warn!(%dependency, %message, "dependency unavailable");
                let what = match dependency {
                    Dependency::Database => {
                        "the database is unreachable; changes cannot be saved right now, try again shortly"
                    }
                    Dependency::Cache => "the cache is unreachable; try again shortly",
                };
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "dependency_unavailable",
                    what,
                )
            }
            no_key @ DomainError::NoUsableKey { retry_at } => {
                let message = no_key.to_string();
                let mut error =
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_usable_key", message);
                if let Some(at) = retry_at {
                    let seconds = (at - chrono::Utc::now()).num_seconds().max(1);
                    error = error.with_retry_after(seconds.unsigned_abs());
                }
                error
            }
            DomainError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl From<domain::KeyQueryError> for ApiError {
    fn from(error: domain::KeyQueryError) -> Self {
        match error {
            domain::KeyQueryError::Cursor(malformed) => {
                ApiError::bad_request("invalid_cursor", malformed.to_string())
            }
            domain::KeyQueryError::Fields(errors) => DomainError::Invalid(errors).into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                fields: &self.fields,
            },
        };
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.close_connection {
            response.force_close();
        }
        if let Some(attempts) = &self.attempts {
            response.insert_header((ATTEMPTS_HEADER, attempts.as_str()));
        }
        response.json(body)
    }
}

/// Turns actix's JSON extractor failures into SPEC errors: 413, 415 or 400.
pub fn json_error(
    error: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &error {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than MAX_BODY_BYTES",
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        E::Deserialize(e) => ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON for this route: {e}"),
        ),
        _ => ApiError::bad_request("invalid_body", "request body could not be read"),
    };
    api.into()
}

/// Turns path parameter failures (a non-numeric id) into a 404.
pub fn path_error(
    error: actix_web::error::PathError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    let _ = error;
    ApiError::not_found("no such resource: the id must be a number").into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use actix_web::body::to_bytes;
    use domain::{Entity, ValidationErrors};

    use super::*;

    async fn json_of(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.error_response();
        let status = response.status();
        let bytes = to_bytes(response.into_body()).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn domain_errors_map_to_spec_statuses_and_codes() {
        let cases = [
            (DomainError::config_not_found(3), 404, "not_found"),
            (
                DomainError::Conflict {
                    entity: Entity::ProxyConfig,
                    field: "slug",
                },
                409,
                "conflict",
            ),
            (
                DomainError::database("pool timed out"),
                503,
                "dependency_unavailable",
            ),
            (
                DomainError::NoUsableKey { retry_at: None },
                503,
                "no_usable_key",
            ),
            (DomainError::Internal("bug".into()), 500, "internal"),
        ];
        for (error, status, code) in cases {
            let (actual, body) = json_of(error.into()).await;
            assert_eq!(actual.as_u16(), status);
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].as_str().unwrap().len() > 5);
        }
    }

    #[actix_web::test]
    async fn validation_errors_list_each_field() {
        let mut errors = ValidationErrors::default();
        errors.add("name", "must not be empty");
        errors.add("slug", "must start with a letter or a digit");
        let (status, body) = json_of(DomainError::Invalid(errors).into()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["fields"][1]["field"], "slug");
    }

    #[actix_web::test]
    async fn unavailable_dependencies_hide_driver_text() {
        let (_, body) =
            json_of(DomainError::database("Connection refused (os error 111) at 10.0.0.3").into())
                .await;
        assert!(!body.to_string().contains("10.0.0.3"));
    }
}
