//! The admin web console: plain HTML, CSS and JavaScript modules from `crates/app/ui/`, embedded
//! in the binary at compile time and served at `/` and `/ui/{file}`, so both editions ship the
//! console in one file with no front-end build or deployment. Every console response carries a
//! strict Content-Security-Policy (no inline script or style, no third-party origin), `nosniff`,
//! `no-referrer`, and an `ETag` the browser revalidates with (`Cache-Control: no-cache`), so a
//! new binary is picked up at once and an unchanged asset costs a 304.

use std::sync::LazyLock;

use actix_web::{
    HttpRequest, HttpResponse,
    http::header::{self, HeaderValue},
    web,
};
use sha2::{Digest, Sha256};

use crate::errors::ApiError;

/// The Content-Security-Policy sent with every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'";

/// One embedded console file.
#[derive(Debug)]
pub struct Asset {
    /// Path under `/ui/`, e.g. `views/keys.js`.
    pub path: &'static str,
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// The file, as compiled in.
    pub body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../../ui/", $path)),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of the console; a file under `crates/app/ui/` that is not listed here is not
/// served (a test checks that the list and the folder agree).
pub const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("favicon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("i18n.js", JS),
    asset!("model.js", JS),
    asset!("chart.js", JS),
    asset!("views/login.js", JS),
    asset!("views/configs.js", JS),
    asset!("views/config-form.js", JS),
    asset!("views/keys.js", JS),
    asset!("views/client-keys.js", JS),
    asset!("views/dashboard.js", JS),
    asset!("views/request-log.js", JS),
];

/// Strong validators, one per asset, in [`ASSETS`] order: a hash of the content.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// Mounts the console: `/` serves the single page, `/ui/{file}` the assets.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/")
                .route(web::get().to(index))
                .route(web::head().to(index)),
        )
        .service(
            web::resource("/ui/{file:.*}")
                .route(web::get().to(file))
                .route(web::head().to(file)),
        );
}

async fn index(request: HttpRequest) -> HttpResponse {
    serve(&request, 0)
}

async fn file(request: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let wanted = path.into_inner();
    let wanted = if wanted.is_empty() {
        "index.html"
    } else {
        wanted.as_str()
    };
    ASSETS
        .iter()
        .position(|asset| asset.path == wanted)
        .map(|index| serve(&request, index))
        .ok_or_else(|| ApiError::not_found(format!("no console file named {wanted}")))
}

/// Answers with asset `index`, or 304 when the browser already holds this version.
fn serve(request: &HttpRequest, index: usize) -> HttpResponse {
    let (Some(asset), Some(etag)) = (ASSETS.get(index), ETAGS.get(index)) else {
        return HttpResponse::NotFound().finish();
    };
    let fresh = request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if fresh {
        return response.finish();
    }
    response
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .body(asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_path_and_an_etag() {
        let mut paths: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
        assert_eq!(ETAGS.len(), ASSETS.len());
        assert!(
            ETAGS
                .iter()
                .all(|tag| tag.len() == 26 && tag.starts_with('"'))
        );
    }

    #[test]
    fn content_security_policy_has_no_unsafe_source() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(!CONTENT_SECURITY_POLICY.contains("  "));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
    }
}
