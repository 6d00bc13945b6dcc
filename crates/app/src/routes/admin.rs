//! The admin API of SPEC §2: login, proxy configs and their key pools. Every route but
//! `app-config` and `login` requires an admin token; key values only ever leave masked.

use actix_web::{HttpRequest, HttpResponse, Scope, web};
use domain::{ApiKeyId, BatchKeysInput, NewKeyInput, ProxyConfigId, ProxyConfigInput};
use serde::Deserialize;
use serde_json::json;

use crate::{
    auth::{Admin, AdminAuth},
    errors::ApiError,
    probe,
    state::AppState,
    upstream::UpstreamClient,
};

/// The admin routes under `prefix`.
pub fn scope(prefix: &str) -> Scope {
    web::scope(prefix)
        .route("/app-config", web::get().to(app_config))
        .route("/login", web::post().to(login))
        .service(
            web::resource("/proxy-configs")
                .route(web::get().to(list_configs))
                .route(web::post().to(create_config)),
        )
        .service(
            web::resource("/proxy-configs/{id}")
                .route(web::get().to(get_config))
                .route(web::put().to(replace_config))
                .route(web::delete().to(delete_config)),
        )
        .route(
            "/proxy-configs/{id}/status",
            web::put().to(set_config_status),
        )
        .service(
            web::resource("/proxy-configs/{id}/keys")
                .route(web::get().to(list_keys))
                .route(web::post().to(add_key))
                .route(web::delete().to(clear_keys)),
        )
        .route(
            "/proxy-configs/{id}/keys/batch",
            web::post().to(import_keys),
        )
        .service(
            web::resource("/keys/{key_id}")
                .route(web::patch().to(set_key_status))
                .route(web::delete().to(delete_key)),
        )
        .route("/keys/{key_id}/test", web::post().to(test_key))
}

type State = web::Data<AppState>;

async fn app_config(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({ "proxy_public_base_url": state.settings.proxy_public_base_url }))
}

#[derive(Deserialize)]
struct LoginInput {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn login(
    request: HttpRequest,
    auth: web::Data<AdminAuth>,
    input: web::Json<LoginInput>,
) -> Result<HttpResponse, ApiError> {
    let client = request.peer_addr().map(|a| a.ip());
    let token = auth.login(client, &input.username, &input.password)?;
    Ok(HttpResponse::Ok().json(token))
}

async fn list_configs(_: Admin, state: State) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.admin.list_configs().await?))
}

async fn create_config(
    _: Admin,
    state: State,
    input: web::Json<ProxyConfigInput>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(state.admin.create_config(&input).await?))
}

async fn get_config(_: Admin, state: State, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.admin.get_config(ProxyConfigId(*id)).await?))
}

async fn replace_config(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<ProxyConfigInput>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        state
            .admin
            .replace_config(ProxyConfigId(*id), &input)
            .await?,
    ))
}

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
    Ok(HttpResponse::Ok().json(config))
}

async fn list_keys(_: Admin, state: State, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.admin.list_keys(ProxyConfigId(*id)).await?))
}

async fn add_key(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<NewKeyInput>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(state.admin.add_key(ProxyConfigId(*id), &input).await?))
}

async fn import_keys(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<BatchKeysInput>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.admin.import_keys(ProxyConfigId(*id), &input).await?))
}

async fn clear_keys(_: Admin, state: State, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let deleted = state.admin.clear_keys(ProxyConfigId(*id)).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted_count": deleted })))
}

async fn set_key_status(
    _: Admin,
    state: State,
    id: web::Path<i64>,
    input: web::Json<StatusInput>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        state
            .admin
            .set_key_active(ApiKeyId(*id), input.value()?)
            .await?,
    ))
}

async fn delete_key(_: Admin, state: State, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    state.admin.delete_key(ApiKeyId(*id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

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
