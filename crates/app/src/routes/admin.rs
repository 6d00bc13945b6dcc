//! The admin API of SPEC §2: login, proxy configs and their key pools (and, from
//! [`super::request_logs`], the request log and stats). Every route but
//! `app-config` and `login` requires an admin token; key values only ever leave masked.

use actix_web::{HttpRequest, HttpResponse, dev::HttpServiceFactory, http::header, web};
use domain::{
    ApiKeyId, BatchKeysInput, KeyListInput, NewKeyInput, ProxyConfigId, ProxyConfigInput,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    auth::{Admin, AdminAuth},
    errors::ApiError,
    openapi, probe,
    state::AppState,
    upstream::UpstreamClient,
};

/// The admin routes under `prefix`, answering cross-origin requests as `cors` says. Admin
/// answers are never cached and never sniffed: they carry tokens and key lists.
pub fn scope(prefix: &str, cors: super::ProxyCors) -> impl HttpServiceFactory + use<> {
    super::client_keys::routes(web::scope(prefix), resource)
        .wrap(
            actix_web::middleware::DefaultHeaders::new()
                .add((header::CACHE_CONTROL, "no-store"))
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
        )
        .service(resource("/app-config", "GET").route(web::get().to(app_config)))
        .service(resource("/login", "POST").route(web::post().to(login)))
        .service(
            resource("/proxy-configs", "GET, POST")
                .route(web::get().to(list_configs))
                .route(web::post().to(create_config)),
        )
        .service(
            resource("/proxy-configs/{id}", "GET, PUT, DELETE")
                .route(web::get().to(get_config))
                .route(web::put().to(replace_config))
                .route(web::delete().to(delete_config)),
        )
        .service(
            resource("/proxy-configs/{id}/status", "PUT").route(web::put().to(set_config_status)),
        )
        .service(
            resource("/proxy-configs/{id}/keys", "GET, POST, DELETE")
                .route(web::get().to(list_keys))
                .route(web::post().to(add_key))
                .route(web::delete().to(clear_keys)),
        )
        .service(
            resource("/proxy-configs/{id}/keys/batch", "POST").route(web::post().to(import_keys)),
        )
        .service(resource("/key-counts", "GET").route(web::get().to(key_counts)))
        .service(
            resource("/keys/{key_id}", "PATCH, DELETE")
                .route(web::patch().to(set_key_status))
                .route(web::delete().to(delete_key)),
        )
        .service(resource("/keys/{key_id}/test", "POST").route(web::post().to(test_key)))
        .service(
            resource("/request-logs", "GET")
                .route(web::get().to(super::request_logs::list_request_logs)),
        )
        .service(resource("/stats", "GET").route(web::get().to(super::request_logs::stats)))
        .wrap(cors)
}

/// A resource whose other methods answer 405 with `Allow: allow` (the methods it routes).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        use actix_web::ResponseError;
        let mut response = ApiError::new(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this route accepts {allow}"),
        )
        .error_response();
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        response
    }))
}

type State = web::Data<AppState>;

#[utoipa::path(
    get,
    path = "/admin/app-config",
    tag = "session",
    summary = "Console settings",
    description = "Public: the base URL clients use to reach the proxies.",
    responses(
        (status = 200, description = "Settings", body = crate::openapi::AppConfig),
    ),
)]
async fn app_config(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({ "proxy_public_base_url": state.settings.proxy_public_base_url }))
}

#[derive(Deserialize)]
struct LoginInput {
    username: String,
    password: String,
}

#[utoipa::path(
    post,
    path = "/admin/login",
    tag = "session",
    summary = "Log in",
    description = "Public: checks `ADMIN_USERNAME`/`ADMIN_PASSWORD` and issues an admin token. At most 10 attempts per client IP per minute.",
    request_body = crate::openapi::LoginRequest,
    responses(
        (status = 200, description = "A fresh token", body = crate::openapi::Token),
        (status = 400, description = "Body is not valid JSON for this route (`invalid_json`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Wrong username or password (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body larger than `MAX_BODY_BYTES` (`payload_too_large`)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body is not `application/json` (`unsupported_media_type`)", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many attempts from this address; see `Retry-After` (`too_many_login_attempts`)", body = crate::openapi::ErrorBody),
    ),
)]
async fn login(
    request: HttpRequest,
    auth: web::Data<AdminAuth>,
    input: web::Json<LoginInput>,
) -> Result<HttpResponse, ApiError> {
    let client = request.peer_addr().map(|a| a.ip());
    let token = auth.login(client, &input.username, &input.password)?;
    Ok(HttpResponse::Ok().json(token))
}

#[utoipa::path(
    get,
    path = "/admin/proxy-configs",
    tag = "proxy-configs",
    summary = "List configs",
    description = "Every proxy config, ordered by id.",
    responses(
        (status = 200, description = "The configs", body = Vec<crate::openapi::ProxyConfig>),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn list_configs(_: Admin, state: State) -> Result<HttpResponse, ApiError> {
    let configs = state.admin.list_configs().await?;
    let body: Vec<openapi::ProxyConfig> = configs.iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(
    post,
    path = "/admin/proxy-configs",
    tag = "proxy-configs",
    summary = "Create a config",
    description = "Validates every field at once; `name` and `slug` must be unique.",
    request_body = crate::openapi::ProxyConfigInput,
    responses(
        (status = 201, description = "Created", body = crate::openapi::ProxyConfig),
        (status = 400, description = "Body is not valid JSON for this route (`invalid_json`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 409, description = "The name or slug is taken (`conflict`)", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body larger than `MAX_BODY_BYTES` (`payload_too_large`)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body is not `application/json` (`unsupported_media_type`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid fields, each listed in `error.fields` (`invalid_fields`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn create_config(
    _: Admin,
    state: State,
    input: web::Json<ProxyConfigInput>,
) -> Result<HttpResponse, ApiError> {
    let config = state.admin.create_config(&input).await?;
    Ok(HttpResponse::Created().json(openapi::ProxyConfig::from(&config)))
}

#[utoipa::path(
    get,
    path = "/admin/proxy-configs/{id}",
    tag = "proxy-configs",
    summary = "Read a config",
    description = "One proxy config.",
    params(
        ("id" = i64, Path, description = "Proxy config id"),
    ),
    responses(
        (status = 200, description = "The config", body = crate::openapi::ProxyConfig),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such config, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn get_config(_: Admin, state: State, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let config = state.admin.get_config(ProxyConfigId(*id)).await?;
    Ok(HttpResponse::Ok().json(openapi::ProxyConfig::from(&config)))
}

#[utoipa::path(
    put,
    path = "/admin/proxy-configs/{id}",
    tag = "proxy-configs",
    summary = "Replace a config",
    description = "Replaces every field but the id and creation time; the type may change. Keys are kept.",
    params(
        ("id" = i64, Path, description = "Proxy config id"),
    ),
    request_body = crate::openapi::ProxyConfigInput,
    responses(
        (status = 200, description = "Replaced", body = crate::openapi::ProxyConfig),
        (status = 400, description = "Body is not valid JSON for this route (`invalid_json`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such config, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 409, description = "The name or slug is taken by another config (`conflict`)", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body larger than `MAX_BODY_BYTES` (`payload_too_large`)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body is not `application/json` (`unsupported_media_type`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid fields, each listed in `error.fields` (`invalid_fields`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn replace_config(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<ProxyConfigInput>,
) -> Result<HttpResponse, ApiError> {
    let config = state
        .admin
        .replace_config(ProxyConfigId(*id), &input)
        .await?;
    Ok(HttpResponse::Ok().json(openapi::ProxyConfig::from(&config)))
}

#[utoipa::path(
    delete,
    path = "/admin/proxy-configs/{id}",
    tag = "proxy-configs",
    summary = "Delete a config",
    description = "Deletes the config and all its keys.",
    params(
        ("id" = i64, Path, description = "Proxy config id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such config, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn delete_config(
    _: Admin,
    state: State,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    state.admin.delete_config(ProxyConfigId(*id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct StatusInput {
    is_active: Option<bool>,
}

impl StatusInput {
    fn value(&self) -> Result<bool, ApiError> {
        self.is_active.ok_or_else(|| {
            let mut errors = domain::ValidationErrors::default();
            errors.add("is_active", "is required (true or false)");
            domain::Error::Invalid(errors).into()
        })
    }
}

#[utoipa::path(
    put,
    path = "/admin/proxy-configs/{id}/status",
    tag = "proxy-configs",
    summary = "Switch a config on or off",
    description = "An inactive config answers 404 on the proxy routes.",
    params(
        ("id" = i64, Path, description = "Proxy config id"),
    ),
    request_body = crate::openapi::StatusInput,
    responses(
        (status = 200, description = "The updated config", body = crate::openapi::ProxyConfig),
        (status = 400, description = "Body is not valid JSON for this route (`invalid_json`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such config, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body larger than `MAX_BODY_BYTES` (`payload_too_large`)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body is not `application/json` (`unsupported_media_type`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "`is_active` is missing (`invalid_fields`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn set_config_status(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<StatusInput>,
) -> Result<HttpResponse, ApiError> {
    let config = state
        .admin
        .set_config_active(ProxyConfigId(*id), input.value()?)
        .await?;
    Ok(HttpResponse::Ok().json(openapi::ProxyConfig::from(&config)))
}

#[utoipa::path(
    get,
    path = "/admin/proxy-configs/{id}/keys",
    tag = "keys",
    summary = "List the keys of a config, a page at a time",
    description = "One page of the config's keys, ordered by id, masked, with live health and usage. Pass `next_cursor` back as `cursor` for the next page; `null` means no key follows. With a `health` filter a page may hold fewer keys than `limit`, none even, and still have a `next_cursor`: one request reads at most 10 000 keys of the pool.",
    params(
        ("id" = i64, Path, description = "Proxy config id"),
        ("limit" = Option<u16>, Query, description = "Keys per page, 1 to 1000", minimum = 1, maximum = 1000, example = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page, as is (a key id); empty = the first page", pattern = "^[0-9]{0,18}$", example = "4711"),
        ("health" = Option<crate::openapi::KeyHealth>, Query, description = "Only keys in this live health"),
        ("is_active" = Option<bool>, Query, description = "Only keys switched on (`true`) or off (`false`)"),
    ),
    responses(
        (status = 200, description = "One page of keys", body = crate::openapi::KeyPage),
        (status = 400, description = "`cursor` is not one this service handed out (`invalid_cursor`), or the query string cannot be read (`invalid_query`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such config, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "`limit`, `health` or `is_active` is invalid, each listed in `error.fields` (`invalid_fields`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn list_keys(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let input = web::Query::<KeyListInput>::from_query(request.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let query = input.validate()?;
    let page = state
        .admin
        .list_key_page(ProxyConfigId(*id), &query)
        .await?;
    Ok(HttpResponse::Ok().json(openapi::KeyPage {
        items: page.items.iter().map(Into::into).collect(),
        next_cursor: page.next_cursor.map(|cursor| cursor.to_string()),
    }))
}

#[utoipa::path(
    get,
    path = "/admin/key-counts",
    tag = "keys",
    summary = "Count every config's keys",
    description = "How many keys each config has: in all, switched off (`disabled`), and switched on by health. Counted by the database in one grouped query, whatever the pools hold; the health is the stored one, written as soon as a key's live health changes. Configs without keys are left out.",
    responses(
        (status = 200, description = "Counts per config, ordered by config id", body = crate::openapi::KeyCounts),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn key_counts(_: Admin, state: State) -> Result<HttpResponse, ApiError> {
    let items: Vec<_> = state
        .admin
        .key_tallies()
        .await?
        .into_iter()
        .map(|(config, tally)| {
            json!({
                "proxy_config_id": config,
                "total": tally.total,
                "ok": tally.ok,
                "cooling": tally.cooling,
                "failed": tally.failed,
                "disabled": tally.disabled,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

#[utoipa::path(
    post,
    path = "/admin/proxy-configs/{id}/keys",
    tag = "keys",
    summary = "Add a key",
    description = "Adds one upstream key to the pool.",
    params(
        ("id" = i64, Path, description = "Proxy config id"),
    ),
    request_body = crate::openapi::NewKeyInput,
    responses(
        (status = 201, description = "Added (masked)", body = crate::openapi::ApiKey),
        (status = 400, description = "Body is not valid JSON for this route (`invalid_json`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such config, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 409, description = "The config already has this key (`conflict`)", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body larger than `MAX_BODY_BYTES` (`payload_too_large`)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body is not `application/json` (`unsupported_media_type`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "Invalid fields, each listed in `error.fields` (`invalid_fields`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn add_key(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<NewKeyInput>,
) -> Result<HttpResponse, ApiError> {
    let key = state.admin.add_key(ProxyConfigId(*id), &input).await?;
    Ok(HttpResponse::Created().json(openapi::ApiKey::from(&key)))
}

#[utoipa::path(
    post,
    path = "/admin/proxy-configs/{id}/keys/batch",
    tag = "keys",
    summary = "Import keys",
    description = "Adds many keys in a few statements. Blank entries are ignored; keys the config already has and repeats inside the batch are skipped; invalid entries are reported masked.",
    params(
        ("id" = i64, Path, description = "Proxy config id"),
    ),
    request_body = crate::openapi::BatchKeysInput,
    responses(
        (status = 200, description = "What was imported", body = crate::openapi::BatchImportReport),
        (status = 400, description = "Body is not valid JSON for this route (`invalid_json`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such config, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body larger than `MAX_BODY_BYTES` (`payload_too_large`)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body is not `application/json` (`unsupported_media_type`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn import_keys(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<BatchKeysInput>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.admin.import_keys(ProxyConfigId(*id), &input).await?))
}

#[utoipa::path(
    delete,
    path = "/admin/proxy-configs/{id}/keys",
    tag = "keys",
    summary = "Delete every key of a config",
    description = "Empties the pool; the config stays.",
    params(
        ("id" = i64, Path, description = "Proxy config id"),
    ),
    responses(
        (status = 200, description = "How many keys were deleted", body = crate::openapi::DeletedCount),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such config, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn clear_keys(_: Admin, state: State, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let deleted = state.admin.clear_keys(ProxyConfigId(*id)).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted_count": deleted })))
}

#[utoipa::path(
    patch,
    path = "/admin/keys/{key_id}",
    tag = "keys",
    summary = "Switch a key on or off",
    description = "Enabling a key also puts a failed or cooling key back in rotation.",
    params(
        ("key_id" = i64, Path, description = "API key id"),
    ),
    request_body = crate::openapi::StatusInput,
    responses(
        (status = 200, description = "The updated key (masked)", body = crate::openapi::ApiKey),
        (status = 400, description = "Body is not valid JSON for this route (`invalid_json`)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such key, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body larger than `MAX_BODY_BYTES` (`payload_too_large`)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Body is not `application/json` (`unsupported_media_type`)", body = crate::openapi::ErrorBody),
        (status = 422, description = "`is_active` is missing (`invalid_fields`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn set_key_status(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<StatusInput>,
) -> Result<HttpResponse, ApiError> {
    let key = state
        .admin
        .set_key_active(ApiKeyId(*id), input.value()?)
        .await?;
    Ok(HttpResponse::Ok().json(openapi::ApiKey::from(&key)))
}

#[utoipa::path(
    delete,
    path = "/admin/keys/{key_id}",
    tag = "keys",
    summary = "Delete a key",
    description = "Removes one key from its pool.",
    params(
        ("key_id" = i64, Path, description = "API key id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such key, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn delete_key(_: Admin, state: State, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    state.admin.delete_key(ApiKeyId(*id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    post,
    path = "/admin/keys/{key_id}/test",
    tag = "keys",
    summary = "Test a key",
    description = "Sends one cheap real request upstream with this key (a model list for LLM configs, a GET of the target URL for GENERIC ones), classifies the answer like a proxied attempt and updates the key health: a success puts a failed key back in rotation.",
    params(
        ("key_id" = i64, Path, description = "API key id"),
    ),
    responses(
        (status = 200, description = "What the probe found; an upstream failure is reported here, not as an HTTP error", body = crate::openapi::ProbeReport),
        (status = 401, description = "Missing, invalid or expired admin token (`unauthorized`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such key, or a non-numeric id (`not_found`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or cache is unreachable (`dependency_unavailable`)", body = crate::openapi::ErrorBody),
    ),
    security(("admin_token" = [])),
)]
async fn test_key(
    _: Admin,
    state: State,
    client: web::Data<UpstreamClient>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let key = state.admin.get_key(ApiKeyId(*id)).await?;
    let config = state.admin.get_config(key.proxy_config_id).await?;
    let report = probe::probe_key(&state, &client, &config, &key).await;
    Ok(HttpResponse::Ok().json(report))
}
