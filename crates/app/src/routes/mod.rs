//! HTTP routes, one module per surface: the admin API (its request log and stats in
//! `request_logs`), the generic proxy, the LLM proxy and the
//! operations endpoints.

pub mod admin;
pub mod client_keys;
pub mod llm;
pub mod ops;
pub mod proxy;
pub mod request_logs;
pub mod ui;

use actix_web::{HttpRequest, HttpResponse, middleware::Condition, web};

use crate::{cors::CorsPolicy, errors::ApiError};

/// The cross-origin middleware of a proxy scope: `actix-cors` when origins are allowed, nothing
/// otherwise.
pub type ProxyCors = Condition<actix_cors::Cors>;

/// Mounts every route with the default cross-origin rules (SPEC §11).
pub fn configure(config: &mut web::ServiceConfig) {
    configure_with_cors(config, &CorsPolicy::default());
}

/// Mounts every route; the proxies and the admin API answer cross-origin requests as `cors`
/// says.
pub fn configure_with_cors(config: &mut web::ServiceConfig, cors: &CorsPolicy) {
    // The proxies come first and are plain prefixes: every proxied request is matched with two
    // string comparisons instead of trying route patterns (profiling showed pattern matching as
    // the largest cost per request); the handlers split slug and path themselves.
    let admin_cors = || Condition::new(cors.admin.is_enabled(), cors.admin.middleware());
    let proxy_cors = || Condition::new(cors.proxy.is_enabled(), cors.proxy.middleware());
    proxy::configure(config, proxy_cors());
    llm::configure(config, proxy_cors());
    config
        .configure(ops::configure)
        .configure(ui::configure)
        .route("/admin/openapi.json", web::get().to(crate::openapi::serve))
        .service(admin::scope("/admin", admin_cors()))
        // Some deployments of the original put its `/admin` routes behind a reverse proxy
        // under /api/admin; both prefixes serve the same API.
        .service(admin::scope("/api/admin", admin_cors()));
}

/// 404 for unknown routes, as JSON.
pub async fn not_found(request: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.path()
    ))
    .error_response()
}
