//! HTTP routes, one module per surface: the admin API, the generic proxy, the LLM proxy and the
//! operations endpoints.

pub mod admin;
pub mod llm;
pub mod ops;
pub mod proxy;
pub mod ui;

use actix_web::{HttpRequest, HttpResponse, web};

use crate::errors::ApiError;

/// Mounts every route.
pub fn configure(config: &mut web::ServiceConfig) {
    // The proxies come first and are plain prefixes: every proxied request is matched with two
    // string comparisons instead of trying route patterns (profiling showed pattern matching as
    // the largest cost per request); the handlers split slug and path themselves.
    config
        .configure(proxy::configure)
        .configure(llm::configure)
        .configure(ops::configure)
        .configure(ui::configure)
        .route("/admin/openapi.json", web::get().to(crate::openapi::serve))
        .service(admin::scope("/admin"))
        // The original backend served its admin API under /api/admin.
        .service(admin::scope("/api/admin"));
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
