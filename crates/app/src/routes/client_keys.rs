//! The client-key admin API of SPEC §7: `GET/POST /admin/client-keys`,
//! `GET/PUT/DELETE /admin/client-keys/{id}` and `POST /admin/client-keys/{id}/rotate`, behind
//! the admin token. The secret is in the create and rotate answers only; the wire shapes here
//! are the OpenAPI schemas too, so the document cannot drift from what is sent.
//!
//! Every write rebuilds this instance's client-key directory before it answers and publishes a
//! change notice, so the other instances rebuild theirs.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use domain::{ClientKey, ClientKeyId, ClientKeyInput, ConfigChange};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{auth::Admin, errors::ApiError, state::AppState};

/// Mounts the routes on an admin scope; `resource` answers other methods with 405.
pub fn routes(
    scope: actix_web::Scope,
    resource: impl Fn(&str, &'static str) -> actix_web::Resource,
) -> actix_web::Scope {
    scope
        .service(
            resource("/client-keys", "GET, POST")
                .route(web::get().to(list_client_keys))
                .route(web::post().to(create_client_key)),
        )
        .service(
            resource("/client-keys/{id}", "GET, PUT, DELETE")
                .route(web::get().to(get_client_key))
                .route(web::put().to(replace_client_key))
                .route(web::delete().to(delete_client_key)),
        )
        .service(
            resource("/client-keys/{id}/rotate", "POST").route(web::post().to(rotate_client_key)),
        )
}

type State = web::Data<AppState>;

/// A client key as the admin API shows it: limits as top-level fields, usage including what this
/// instance has not flushed yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientKeyView {
    /// Identifier.
    #[schema(examples(3))]
    pub id: i64,
    /// Unique display name.
    #[schema(examples("team-search"))]
    pub name: String,
    /// The first characters of the secret, to recognise it.
    #[schema(examples("akr-Xq3b9ZkP"))]
    pub key_prefix: String,
    /// The admin's switch.
    pub is_active: bool,
    /// When the key stops working (RFC 3339 UTC); null = never.
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Configs the key may call; empty = every config.
    pub allowed_config_ids: Vec<i64>,
    /// Requests per minute; null = no limit.
    #[schema(required = true)]
    pub rpm: Option<u32>,
    /// LLM tokens per minute; null = no limit.
    #[schema(required = true)]
    pub tpm: Option<u64>,
    /// Requests in flight at once; null = no limit.
    #[schema(required = true)]
    pub max_concurrency: Option<u32>,
    /// Tokens per `budget_period`; null = no budget.
    #[schema(required = true)]
    pub token_budget: Option<u64>,
    /// `day`, `month` or `total` (UTC periods); null without a budget.
    #[schema(required = true, examples("month"))]
    pub budget_period: Option<String>,
    /// Requests authenticated with the key.
    pub request_count: u64,
    /// Tokens the upstreams reported for them.
    pub token_count: u64,
    /// Tokens counted against the budget in the current period.
    pub budget_used: u64,
    /// Last use (RFC 3339).
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// Creation time (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

impl ClientKeyView {
    fn new(key: &ClientKey, state: &AppState) -> Self {
        let mut usage = key.usage;
        if let Some(pending) = state.client_keys.pending_usage(key.id) {
            usage.apply(&pending);
        }
        let now = Utc::now();
        let limits = &key.spec.limits;
        ClientKeyView {
            id: key.id.0,
            name: key.spec.name.as_str().to_owned(),
            key_prefix: key.key_prefix.clone(),
            is_active: key.spec.is_active,
            expires_at: key.spec.expires_at,
            allowed_config_ids: key.spec.allowed_config_ids.iter().map(|id| id.0).collect(),
            rpm: limits.rpm,
            tpm: limits.tpm,
            max_concurrency: limits.max_concurrency,
            token_budget: limits.budget.map(|b| b.tokens),
            budget_period: limits.budget.map(|b| b.period.as_str().to_owned()),
            request_count: usage.request_count,
            token_count: usage.token_count,
            budget_used: limits
                .budget
                .map_or(0, |b| usage.budget_used_at(b.period, now)),
            last_used_at: usage.last_used_at,
            created_at: key.created_at,
        }
    }
}

/// A client key with its new secret: the create and rotate answers, the only ones that carry it.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedClientKey {
    /// The key.
    #[serde(flatten)]
    pub key: ClientKeyView,
    /// The secret (`akr-` and 40 URL-safe characters), shown this once: store it now.
    #[schema(examples("akr-Xq3b9ZkPw1n8Yc0Lr5Tg7Hs2Jd4Kf6Va9Mb3Ne1Qz"))]
    pub secret: String,
}

/// `GET /admin/client-keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientKeyList {
    /// Every client key, ordered by id.
    pub items: Vec<ClientKeyView>,
}

/// `POST /admin/client-keys` and `PUT /admin/client-keys/{id}` (the same body).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(examples(json!({"name": "team-search", "expires_at": "2027-06-30T00:00:00Z", "allowed_config_ids": [1, 2], "rpm": 60, "tpm": 100000, "max_concurrency": 4, "token_budget": 5000000, "budget_period": "month"})))]
pub struct ClientKeyInputDoc {
    /// Unique display name (1 to 100 characters).
    #[schema(
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        max_length = 100
    )]
    pub name: String,
    /// The admin's switch (default true).
    pub is_active: Option<bool>,
    /// When the key stops working (RFC 3339); null = never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Configs the key may call; empty or missing = every config.
    pub allowed_config_ids: Option<Vec<i64>>,
    /// Requests per minute (1 to 1 000 000); null = no limit.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rpm: Option<i64>,
    /// LLM tokens per minute; null = no limit.
    #[schema(minimum = 1)]
    pub tpm: Option<i64>,
    /// Requests in flight at once (1 to 1 000 000); null = no limit.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_concurrency: Option<i64>,
    /// Tokens per `budget_period`; needs `budget_period`.
    #[schema(minimum = 1)]
    pub token_budget: Option<i64>,
    /// `day`, `month` or `total`; needs `token_budget`.
    #[schema(value_type = Option<BudgetPeriodDoc>)]
    pub budget_period: Option<String>,
}

/// The period a token budget covers.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum BudgetPeriodDoc {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    Month,
    /// The key's whole life.
    Total,
}

/// Rebuilds this instance's directory and tells the others.
async fn changed(state: &AppState) -> Result<(), ApiError> {
    state.client_keys.refresh().await?;
    if let Err(error) = state.events.publish(ConfigChange::client_keys()).await {
        tracing::warn!(%error, "other instances could not be told about a client-key change; they pick it up on their next notice");
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/admin/client-keys",
    tag = "client-keys",
    summary = "List client keys",
    description = "Every client key with its limits and usage, ordered by id. Secrets are never shown here.",
    responses(
        (status = 200, description = "The client keys", body = ClientKeyList),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn list_client_keys(_: Admin, state: State) -> Result<HttpResponse, ApiError> {
    let keys = state.client_keys.store().list_client_keys().await?;
    let items = keys.iter().map(|k| ClientKeyView::new(k, &state)).collect();
    Ok(HttpResponse::Ok().json(ClientKeyList { items }))
}

#[utoipa::path(
    post,
    path = "/admin/client-keys",
    tag = "client-keys",
    summary = "Create a client key",
    description = "Issues a new client key; the answer carries its `secret`, shown this once. Clients send it wherever a global proxy key goes.",
    request_body = ClientKeyInputDoc,
    responses(
        (status = 201, description = "Created, with the secret", body = IssuedClientKey),
        (status = 400, description = "Body is not valid JSON for this route (`invalid_json`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 409, description = "The name is taken (`conflict`)", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body larger than `MAX_BODY_BYTES` (`payload_too_large`)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body is not `application/json` (`unsupported_media_type`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid fields, each listed in `error.fields` (`invalid_fields`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn create_client_key(
    _: Admin,
    state: State,
    input: web::Json<ClientKeyInput>,
) -> Result<HttpResponse, ApiError> {
    let spec = input.validate().map_err(domain::Error::Invalid)?;
    let (secret, issued) = state.client_keys.issue()?;
    let key = state
        .client_keys
        .store()
        .create_client_key(spec, issued)
        .await?;
    changed(&state).await?;
    Ok(HttpResponse::Created().json(IssuedClientKey {
        key: ClientKeyView::new(&key, &state),
        secret,
    }))
}

#[utoipa::path(
    get,
    path = "/admin/client-keys/{id}",
    tag = "client-keys",
    summary = "Read a client key",
    description = "One client key with its limits and usage (no secret).",
    params(("id" = i64, Path, description = "Client key id")),
    responses(
        (status = 200, description = "The client key", body = ClientKeyView),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such client key, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn get_client_key(
    _: Admin,
    state: State,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let key = state
        .client_keys
        .store()
        .get_client_key(ClientKeyId(*id))
        .await?;
    Ok(HttpResponse::Ok().json(ClientKeyView::new(&key, &state)))
}

#[utoipa::path(
    put,
    path = "/admin/client-keys/{id}",
    tag = "client-keys",
    summary = "Replace a client key",
    description = "Takes the create body and replaces every field; the secret and the usage stay. Takes effect on the next request, on every instance.",
    params(("id" = i64, Path, description = "Client key id")),
    request_body = ClientKeyInputDoc,
    responses(
        (status = 200, description = "Replaced", body = ClientKeyView),
        (status = 400, description = "Body is not valid JSON for this route (`invalid_json`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such client key, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 409, description = "The name is taken by another key (`conflict`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid fields, each listed in `error.fields` (`invalid_fields`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body is not `application/json` (`unsupported_media_type`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn replace_client_key(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<ClientKeyInput>,
) -> Result<HttpResponse, ApiError> {
    let spec = input.validate().map_err(domain::Error::Invalid)?;
    let key = state
        .client_keys
        .store()
        .replace_client_key(ClientKeyId(*id), spec)
        .await?;
    changed(&state).await?;
    Ok(HttpResponse::Ok().json(ClientKeyView::new(&key, &state)))
}

#[utoipa::path(
    delete,
    path = "/admin/client-keys/{id}",
    tag = "client-keys",
    summary = "Delete a client key",
    description = "Its secret stops working on the next request, on every instance.",
    params(("id" = i64, Path, description = "Client key id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such client key, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn delete_client_key(
    _: Admin,
    state: State,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state
        .client_keys
        .store()
        .delete_client_key(ClientKeyId(*id))
        .await?;
    changed(&state).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/admin/client-keys/{id}/rotate",
    tag = "client-keys",
    summary = "Rotate a client key's secret",
    description = "Issues a new secret, shown this once in the answer; the old one stops working on the next request, on every instance. Limits and usage stay.",
    params(("id" = i64, Path, description = "Client key id")),
    responses(
        (status = 200, description = "Rotated, with the new secret", body = IssuedClientKey),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such client key, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn rotate_client_key(
    _: Admin,
    state: State,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (secret, issued) = state.client_keys.issue()?;
    let key = state
        .client_keys
        .store()
        .rotate_client_key(ClientKeyId(*id), issued)
        .await?;
    changed(&state).await?;
    Ok(HttpResponse::Ok().json(IssuedClientKey {
        key: ClientKeyView::new(&key, &state),
        secret,
    }))
}
