//! The OpenAPI 3.1 document of the admin API, generated with utoipa from the `#[utoipa::path]`
//! annotations of [`crate::routes::admin`], served at `GET /admin/openapi.json` and committed as
//! `docs/openapi.json` (a test fails when the committed file is stale; `cargo xtask openapi` or
//! `UPDATE_OPENAPI=1 cargo test -p app --lib openapi::` rewrites it).
//!
//! The domain crate does not depend on utoipa, so the request and response bodies are described
//! here by small schema types with the same field names as the domain's serde shapes; a test
//! serialises the real domain values and checks that they carry exactly the documented fields.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

/// The generated document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "API Key Rotator admin API",
        description = "Manage proxy configs and their pools of upstream API keys. Every route but `app-config`, `login` and `openapi.json` needs `Authorization: Bearer <token>` from `POST /admin/login`. The same routes are also served under `/api/admin`, the original backend's prefix. Errors are `{\"error\": {\"code\", \"message\"}}` (plus `fields` for 422).",
        license(name = "MIT")
    ),
    paths(
        crate::routes::admin::app_config,
        crate::routes::admin::login,
        crate::routes::admin::list_configs,
        crate::routes::admin::create_config,
        crate::routes::admin::get_config,
        crate::routes::admin::replace_config,
        crate::routes::admin::delete_config,
        crate::routes::admin::set_config_status,
        crate::routes::admin::list_keys,
        crate::routes::admin::key_counts,
        crate::routes::admin::add_key,
        crate::routes::admin::import_keys,
        crate::routes::admin::clear_keys,
        crate::routes::admin::set_key_status,
        crate::routes::admin::delete_key,
        crate::routes::admin::test_key,
        crate::routes::request_logs::list_request_logs,
        crate::routes::request_logs::stats,
        crate::routes::client_keys::list_client_keys,
        crate::routes::client_keys::create_client_key,
        crate::routes::client_keys::get_client_key,
        crate::routes::client_keys::replace_client_key,
        crate::routes::client_keys::delete_client_key,
        crate::routes::client_keys::rotate_client_key,
        serve,
    ),
    components(schemas(
        AppConfig,
        LoginRequest,
        Token,
        ConfigType,
        KeyLocation,
        HttpMethod,
        ApiFormat,
        OutputFormat,
        KeyHealth,
        RetryClass,
        ProxyConfigInput,
        ProxyConfig,
        StatusInput,
        NewKeyInput,
        BatchKeysInput,
        BatchImportReport,
        ApiKey,
        KeyPage,
        KeyCounts,
        KeyTally,
        DeletedCount,
        ProbeReport,
        RequestLogEntry,
        RequestLogPage,
        ErrorCounts,
        StatsPoint,
        TopEntry,
        TopLists,
        StatsInterval,
        Stats,
        ErrorBody,
        ErrorDetail,
        FieldError,
        crate::routes::client_keys::ClientKeyView,
        crate::routes::client_keys::IssuedClientKey,
        crate::routes::client_keys::ClientKeyList,
        crate::routes::client_keys::ClientKeyInputDoc,
    )),
    modifiers(&AdminToken),
    tags(
        (name = "session", description = "Public routes: the console's settings and admin login"),
        (name = "proxy-configs", description = "Upstream services and their settings"),
        (name = "keys", description = "The pool of upstream keys of each config"),
        (name = "usage", description = "The request log and usage statistics"),
        (name = "client-keys", description = "Keys issued to clients, with scopes, limits, budgets and expiry (SPEC §7)"),
        (name = "meta", description = "This document")
    )
)]
pub struct ApiDoc;

/// The name of the bearer security scheme the protected routes require.
pub const SECURITY_SCHEME: &str = "admin_token";

/// Adds the admin token's bearer scheme.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some(
            "An admin token from `POST /admin/login` (HS256, expires after `expires_in` seconds)."
                .to_owned(),
        );
        components.add_security_scheme(SECURITY_SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The document as pretty JSON with a trailing newline, as committed in `docs/openapi.json`.
pub fn json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

/// Serve the admin API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/admin/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn serve() -> HttpResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.get_or_init(json).clone())
}

// ---------------------------------------------------------------------------------------------
// Wire shapes

/// `GET /admin/app-config`: what the admin console needs before login.
#[derive(Serialize, ToSchema)]
pub struct AppConfig {
    /// The base URL clients use to reach the proxies (`PROXY_PUBLIC_BASE_URL`).
    #[schema(examples("https://keys.example.com"))]
    pub proxy_public_base_url: String,
}

/// `POST /admin/login`.
#[derive(Serialize, ToSchema)]
pub struct LoginRequest {
    /// `ADMIN_USERNAME`.
    #[schema(examples("admin"))]
    pub username: String,
    /// `ADMIN_PASSWORD`.
    #[schema(examples("correct horse battery staple"))]
    pub password: String,
}

/// An admin token.
#[derive(Serialize, ToSchema)]
pub struct Token {
    /// Always `true`; the original backend's console reads it.
    #[schema(examples(true))]
    pub success: bool,
    /// The JWT to send as `Authorization: Bearer <access_token>`.
    #[schema(examples("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"))]
    pub access_token: String,
    /// Always `bearer`.
    #[schema(examples("bearer"))]
    pub token_type: String,
    /// Lifetime in seconds (`JWT_EXPIRE_MINUTES` × 60).
    #[schema(examples(86400))]
    pub expires_in: u64,
}

/// Whether a config proxies any REST API or an LLM API (accepted in any case, returned upper case).
#[derive(Serialize, ToSchema)]
pub enum ConfigType {
    /// Any REST API, one method and one target URL, served under `/proxy/{slug}/...`.
    #[serde(rename = "GENERIC")]
    Generic,
    /// An LLM API, served under `/llm/{slug}/...`.
    #[serde(rename = "LLM")]
    Llm,
}

/// Where the upstream key is put in the outgoing request.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyLocation {
    /// In the header named `api_key_name`.
    Header,
    /// In the query parameter named `api_key_name`.
    Query,
}

/// The one method a GENERIC config accepts.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
    /// OPTIONS.
    Options,
}

/// What an LLM upstream speaks.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiFormat {
    /// OpenAI and every OpenAI-compatible API.
    OpenaiCompatible,
    /// Anthropic Messages.
    AnthropicNative,
    /// Google Gemini.
    GeminiNative,
}

/// What an LLM config's clients speak; `none` is the upstream's own format.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Same as `api_format`.
    None,
    /// OpenAI Chat Completions.
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
    /// OpenAI Responses.
    OpenaiResponses,
}

/// A class of failed attempt that a config may re-send to another key (SPEC §8).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryClass {
    /// 429, or a rate-limit/quota marker.
    RateLimited,
    /// 401, a marker that the key is invalid or suspended, or an LLM 403 a probe confirmed.
    AuthFailed,
    /// 5xx.
    ServerError,
    /// No connection could be made: the upstream never saw the request.
    ConnectError,
    /// No response head in time: the upstream may have acted on (and billed) the request.
    Timeout,
}

/// A key's place in rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyHealth {
    /// In rotation.
    Ok,
    /// Rate-limited until `cooldown_until`, then back by itself.
    Cooling,
    /// Rejected by the upstream: out of rotation until a successful probe or an admin re-enables it.
    Failed,
}

impl From<domain::KeyHealth> for KeyHealth {
    fn from(health: domain::KeyHealth) -> Self {
        match health {
            domain::KeyHealth::Ok => KeyHealth::Ok,
            domain::KeyHealth::Cooling { .. } => KeyHealth::Cooling,
            domain::KeyHealth::Failed => KeyHealth::Failed,
        }
    }
}

/// A config as created or replaced (`POST /admin/proxy-configs`, `PUT /admin/proxy-configs/{id}`).
/// Enumerated fields are accepted in any case; fields of the other config type may be sent
/// empty or null and are ignored.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "name": "OpenAI",
    "slug": "openai",
    "config_type": "LLM",
    "target_base_url": "https://api.openai.com/v1",
    "api_format": "openai_compatible",
    "output_format": "none"
})))]
pub struct ProxyConfigInput {
    /// Unique display name, 1 to 100 characters.
    #[schema(examples("OpenAI"))]
    pub name: String,
    /// Unique URL name `[a-z0-9][a-z0-9._-]{0,99}`, accepted in any case, stored lower case;
    /// the proxy routes match it case-insensitively.
    #[schema(examples("openai"))]
    pub slug: String,
    /// `GENERIC` or `LLM`, any case.
    #[schema(examples("LLM"))]
    pub config_type: String,
    /// Whether the proxy routes serve it; `true` when omitted.
    pub is_active: Option<bool>,
    /// `header` or `query`; required for GENERIC, an override of the format's own placement
    /// for LLM. Comes with `api_key_name`.
    #[schema(examples("header"))]
    pub api_key_location: Option<String>,
    /// The header or query parameter that carries the upstream key. For LLM, a blank name
    /// with `api_key_location` means the format's own place (as if neither were sent).
    #[schema(examples("Authorization"))]
    pub api_key_name: Option<String>,
    /// Sent before the key, exactly as given (mind the trailing space: `Bearer `, `token `).
    /// When omitted: `Bearer ` for an LLM config whose key header is `Authorization`, nothing
    /// otherwise; `""` sends the key alone.
    #[schema(examples("Bearer "), max_length = 64)]
    pub api_key_prefix: Option<String>,
    /// GENERIC: the one accepted method.
    #[schema(examples("GET"))]
    pub method: Option<String>,
    /// GENERIC: absolute http(s) URL the proxied path is appended to.
    #[schema(examples("https://api.weather.example/v1"))]
    pub target_url: Option<String>,
    /// LLM: absolute http(s) URL the action path is appended to.
    #[schema(examples("https://api.openai.com/v1"))]
    pub target_base_url: Option<String>,
    /// LLM: `openai_compatible` (default), `anthropic_native` or `gemini_native`.
    #[schema(examples("openai_compatible"))]
    pub api_format: Option<String>,
    /// LLM: `none` (default), `openai`, `anthropic`, `gemini` or `openai_responses`.
    #[schema(examples("none"))]
    pub output_format: Option<String>,
    /// Retries with other keys after the first attempt, 0 to 10; null or absent =
    /// `PROXY_MAX_RETRIES`.
    #[schema(examples(2), maximum = 10)]
    pub max_retries: Option<u32>,
    /// The failure classes re-sent to another key, replacing the default set; null or absent =
    /// every class but `timeout`, and for GENERIC `POST`/`PATCH` only `rate_limited`,
    /// `auth_failed` and `connect_error`.
    pub retry_on: Option<Vec<RetryClass>>,
    /// Seconds to wait for the response head, 0 = no limit (at most 86400); null or absent =
    /// `PROXY_TIMEOUT` (GENERIC) or `LLM_RESPONSE_TIMEOUT` (LLM).
    #[schema(examples(600), maximum = 86400)]
    pub response_timeout_seconds: Option<u32>,
}

/// A stored config; the fields of the other config type are null.
#[derive(Serialize, ToSchema)]
pub struct ProxyConfig {
    /// Identifier.
    #[schema(examples(1))]
    pub id: i64,
    /// Unique display name.
    pub name: String,
    /// Unique URL name, lower case.
    pub slug: String,
    /// Type, upper case.
    pub config_type: ConfigType,
    /// Whether the proxy routes serve it.
    pub is_active: bool,
    /// Where the upstream key goes, when set.
    #[schema(required = true)]
    pub api_key_location: Option<KeyLocation>,
    /// Header or parameter name, when set.
    #[schema(required = true)]
    pub api_key_name: Option<String>,
    /// Sent before the key (`Bearer `, or `""` for none), when a placement is set.
    #[schema(required = true)]
    pub api_key_prefix: Option<String>,
    /// GENERIC only.
    #[schema(required = true)]
    pub method: Option<HttpMethod>,
    /// GENERIC only.
    #[schema(required = true)]
    pub target_url: Option<String>,
    /// LLM only.
    #[schema(required = true)]
    pub target_base_url: Option<String>,
    /// LLM only.
    #[schema(required = true)]
    pub api_format: Option<ApiFormat>,
    /// LLM only.
    #[schema(required = true)]
    pub output_format: Option<OutputFormat>,
    /// Retries after the first attempt; null = `PROXY_MAX_RETRIES`.
    #[schema(required = true)]
    pub max_retries: Option<u32>,
    /// Failure classes re-sent to another key; null = the default for the config's type and
    /// method.
    #[schema(required = true)]
    pub retry_on: Option<Vec<RetryClass>>,
    /// Response-head timeout in seconds, 0 = none; null = the environment's default.
    #[schema(required = true)]
    pub response_timeout_seconds: Option<u32>,
    /// Creation time (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last change (RFC 3339).
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// `PUT /admin/proxy-configs/{id}/status` and `PATCH /admin/keys/{key_id}`.
#[derive(Serialize, ToSchema)]
pub struct StatusInput {
    /// The new switch position; required.
    pub is_active: bool,
}

/// `POST /admin/proxy-configs/{id}/keys`.
#[derive(Serialize, ToSchema)]
pub struct NewKeyInput {
    /// The upstream key: printable ASCII without spaces, at most 4096 bytes.
    #[schema(
        examples("sk-live-abcdefghijklmnopqrstuvwxyz"),
        pattern = "^\\s*[!-~]{1,4096}\\s*$"
    )]
    pub key_value: String,
    /// `true` when omitted.
    pub is_active: Option<bool>,
}

/// `POST /admin/proxy-configs/{id}/keys/batch`.
#[derive(Serialize, ToSchema)]
pub struct BatchKeysInput {
    /// The keys; surrounding blanks are trimmed, empty entries ignored, repeats skipped.
    #[schema(examples(json!(["sk-one-aaaaaaaaaaaa", "sk-two-bbbbbbbbbbbb"])))]
    pub keys: Vec<String>,
    /// Whether the inserted keys are enabled; `true` when omitted.
    pub is_active: Option<bool>,
}

/// The result of a batch import.
#[derive(Serialize, ToSchema)]
pub struct BatchImportReport {
    /// Keys inserted.
    pub success_count: u64,
    /// Invalid entries.
    pub failed_count: u64,
    /// Keys the config already had, or repeated in the batch.
    pub skipped_count: u64,
    /// The invalid entries, masked.
    pub failed_keys: Vec<String>,
}

/// A key with its health and usage; the value is always masked.
#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    /// Identifier.
    pub id: i64,
    /// The config whose pool holds the key.
    pub proxy_config_id: i64,
    /// Masked value: at most four characters at each end (a quarter of a short key) around four stars.
    #[schema(examples("sk-l****wxyz"))]
    pub key_value: String,
    /// The admin's switch.
    pub is_active: bool,
    /// Health as last known.
    pub health: KeyHealth,
    /// End of the cooldown while cooling (RFC 3339).
    #[schema(required = true, format = DateTime)]
    pub cooldown_until: Option<String>,
    /// Last upstream status seen with this key.
    #[schema(required = true)]
    pub last_status: Option<u16>,
    /// Upstream requests sent with this key (flushed every `USAGE_FLUSH_SECONDS`).
    pub request_count: u64,
    /// Of those, the failed ones.
    pub failure_count: u64,
    /// Last use (RFC 3339).
    #[schema(required = true, format = DateTime)]
    pub last_used_at: Option<String>,
    /// Creation time (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last change (RFC 3339).
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// `GET /admin/proxy-configs/{id}/keys`: one page of a pool.
#[derive(Serialize, ToSchema)]
pub struct KeyPage {
    /// The keys of this page, ordered by id.
    pub items: Vec<ApiKey>,
    /// Pass it as `cursor` for the next page; `null` when no key follows.
    #[schema(required = true, examples("4711"))]
    pub next_cursor: Option<String>,
}

/// `GET /admin/key-counts`.
#[derive(Serialize, ToSchema)]
pub struct KeyCounts {
    /// One entry per config that has keys, ordered by config id.
    pub items: Vec<KeyTally>,
}

/// One config's keys, counted.
#[derive(Serialize, ToSchema)]
pub struct KeyTally {
    /// The config.
    pub proxy_config_id: i64,
    /// Every key.
    pub total: u64,
    /// Switched on and in rotation.
    pub ok: u64,
    /// Switched on and cooling down.
    pub cooling: u64,
    /// Switched on and failed.
    pub failed: u64,
    /// Switched off, whatever their health.
    pub disabled: u64,
}

/// `DELETE /admin/proxy-configs/{id}/keys`.
#[derive(Serialize, ToSchema)]
pub struct DeletedCount {
    /// Keys deleted.
    pub deleted_count: u64,
}

/// `POST /admin/keys/{key_id}/test`: one cheap real request with this key.
#[derive(Serialize, ToSchema)]
pub struct ProbeReport {
    /// The key probed.
    pub key_id: i64,
    /// Upstream status, when it answered.
    #[schema(required = true)]
    pub status: Option<u16>,
    /// Time to the response head, in milliseconds.
    pub latency_ms: u64,
    /// Health after the probe.
    pub health: KeyHealth,
    /// End of the cooldown, when cooling (RFC 3339).
    #[schema(required = true, format = DateTime)]
    pub cooldown_until: Option<String>,
    /// Why the probe failed, with secrets redacted.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// Every error response.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({"error": {"code": "not_found", "message": "proxy config 42 not found"}})))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable snake_case code: `unauthorized`, `not_found`, `conflict`,
    /// `invalid_fields`, `invalid_json`, `unsupported_media_type`, `payload_too_large`,
    /// `too_many_login_attempts`, `dependency_unavailable`, `internal`.
    #[schema(examples("invalid_fields"))]
    pub code: String,
    /// A human sentence; says what to do when the caller can fix it.
    pub message: String,
    /// With `invalid_fields` (422): every bad field.
    pub fields: Option<Vec<FieldError>>,
}

/// One invalid field.
#[derive(Serialize, ToSchema)]
pub struct FieldError {
    /// The JSON field name.
    #[schema(examples("slug"))]
    pub field: String,
    /// What is wrong.
    #[schema(examples("must start with a letter or a digit"))]
    pub message: String,
}

/// One proxied request as the request log keeps it (SPEC §10); never a body, header value or key.
#[derive(Serialize, ToSchema)]
pub struct RequestLogEntry {
    /// The log's identifier of the record.
    pub id: i64,
    /// When the exchange ended (RFC 3339, milliseconds).
    #[schema(format = DateTime, examples("2026-12-06T14:05:00.123Z"))]
    pub created_at: String,
    /// The config.
    pub proxy_config_id: i64,
    /// The client key; `null` for a global proxy key.
    #[schema(required = true)]
    pub client_key_id: Option<i64>,
    /// The upstream key of the last attempt; `null` when no key was tried.
    #[schema(required = true)]
    pub api_key_id: Option<i64>,
    /// HTTP method.
    #[schema(examples("POST"))]
    pub method: String,
    /// Request path without the query string.
    #[schema(examples("/llm/openai/v1/chat/completions"))]
    pub path: String,
    /// Status the client got.
    pub status: u16,
    /// `success`, the upstream verdict (`rate_limited`, `key_rejected`, `upstream_fault`, ...) or the proxy's error code.
    #[schema(examples("success"))]
    pub outcome: String,
    /// Upstream attempts made (0 when the proxy answered before trying a key).
    pub attempts: u32,
    /// Milliseconds until the response head.
    pub head_latency_ms: u64,
    /// Milliseconds until the response body ended.
    pub total_latency_ms: u64,
    /// Whether the answer was an event stream.
    pub streamed: bool,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// Input tokens, when the upstream reported usage.
    #[schema(required = true)]
    pub tokens_in: Option<u64>,
    /// Output tokens, when the upstream reported usage.
    #[schema(required = true)]
    pub tokens_out: Option<u64>,
    /// The proxy's error code when it answered with an error.
    #[schema(required = true)]
    pub error_code: Option<String>,
}

impl From<domain::LoggedRequest> for RequestLogEntry {
    fn from(entry: domain::LoggedRequest) -> Self {
        let record = entry.record;
        RequestLogEntry {
            id: entry.id.0,
            created_at: record
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            proxy_config_id: record.proxy_config_id.0,
            client_key_id: record.client_key_id.map(|id| id.0),
            api_key_id: record.api_key_id.map(|id| id.0),
            method: record.method.into_owned(),
            path: record.path,
            status: record.status,
            outcome: record.outcome.into_owned(),
            attempts: record.attempts,
            head_latency_ms: record.head_latency_ms,
            total_latency_ms: record.total_latency_ms,
            streamed: record.streamed,
            bytes_in: record.bytes_in,
            bytes_out: record.bytes_out,
            tokens_in: record.tokens_in,
            tokens_out: record.tokens_out,
            error_code: record.error_code.map(std::borrow::Cow::into_owned),
        }
    }
}

/// `GET /admin/request-logs`: one page of the log, newest first.
#[derive(Serialize, ToSchema)]
pub struct RequestLogPage {
    /// The records of this page.
    pub items: Vec<RequestLogEntry>,
    /// Pass it as `cursor` for the next page; `null` when no record follows.
    #[schema(required = true, examples("1765029900123_4711"))]
    pub next_cursor: Option<String>,
}

/// Errors of a bucket, by status class.
#[derive(Serialize, ToSchema)]
pub struct ErrorCounts {
    /// Requests answered 4xx.
    #[serde(rename = "4xx")]
    #[schema(rename = "4xx")]
    pub client: u64,
    /// Requests answered 5xx.
    #[serde(rename = "5xx")]
    #[schema(rename = "5xx")]
    pub server: u64,
}

/// One bucket of the stats series.
#[derive(Serialize, ToSchema)]
pub struct StatsPoint {
    /// The bucket's start (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub time: String,
    /// Requests.
    pub requests: u64,
    /// Errors by status class.
    pub errors: ErrorCounts,
    /// Median total latency in milliseconds (estimated from a histogram, exact when every latency is equal); `null` without requests.
    #[schema(required = true)]
    pub latency_p50_ms: Option<u64>,
    /// 95th percentile total latency in milliseconds; `null` without requests.
    #[schema(required = true)]
    pub latency_p95_ms: Option<u64>,
    /// Input tokens the upstreams reported.
    pub tokens_in: u64,
    /// Output tokens the upstreams reported.
    pub tokens_out: u64,
}

/// One row of a top list.
#[derive(Serialize, ToSchema)]
pub struct TopEntry {
    /// The config, upstream key or client key id; in `client_keys`, `null` gathers the requests made with a global proxy key.
    #[schema(required = true)]
    pub id: Option<i64>,
    /// Requests.
    pub requests: u64,
    /// Requests answered 4xx or 5xx.
    pub errors: u64,
    /// Input and output tokens.
    pub tokens: u64,
}

/// The busiest configs, upstream keys and client keys of the window, most requests first, ten each.
#[derive(Serialize, ToSchema)]
pub struct TopLists {
    /// Configs.
    pub configs: Vec<TopEntry>,
    /// Upstream keys (requests that reached no key are left out).
    pub api_keys: Vec<TopEntry>,
    /// Client keys.
    pub client_keys: Vec<TopEntry>,
}

/// The width of a stats bucket.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatsInterval {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

/// `GET /admin/stats`.
#[derive(Serialize, ToSchema)]
pub struct Stats {
    /// The bucket width.
    pub interval: StatsInterval,
    /// The window's start, inclusive (RFC 3339).
    #[schema(format = DateTime)]
    pub from: String,
    /// The window's end, exclusive (RFC 3339).
    #[schema(format = DateTime)]
    pub to: String,
    /// One point per bucket of the window, oldest first, empty buckets included.
    pub series: Vec<StatsPoint>,
    /// The top lists.
    pub top: TopLists,
}

impl Stats {
    /// The wire shape of `stats`, the answer to `query`.
    pub fn new(query: &domain::StatsQuery, stats: domain::UsageStats) -> Self {
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        fn top<Id>(
            entries: Vec<domain::TopEntry<Id>>,
            id: impl Fn(Id) -> Option<i64>,
        ) -> Vec<TopEntry> {
            entries
                .into_iter()
                .map(|entry| TopEntry {
                    id: id(entry.id),
                    requests: entry.requests,
                    errors: entry.errors,
                    tokens: entry.tokens,
                })
                .collect()
        }
        Stats {
            interval: match query.interval {
                domain::StatsInterval::Minute => StatsInterval::Minute,
                domain::StatsInterval::Hour => StatsInterval::Hour,
                domain::StatsInterval::Day => StatsInterval::Day,
            },
            from: time(query.filter.from),
            to: time(query.filter.to),
            series: stats
                .series
                .into_iter()
                .map(|point| StatsPoint {
                    time: point
                        .time
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    requests: point.requests,
                    errors: ErrorCounts {
                        client: point.errors_4xx,
                        server: point.errors_5xx,
                    },
                    latency_p50_ms: point.latency_p50_ms,
                    latency_p95_ms: point.latency_p95_ms,
                    tokens_in: point.tokens_in,
                    tokens_out: point.tokens_out,
                })
                .collect(),
            top: TopLists {
                configs: top(stats.top.configs, |id| Some(id.0)),
                api_keys: top(stats.top.api_keys, |id| Some(id.0)),
                client_keys: top(stats.top.client_keys, |id| id.map(|id| id.0)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::{collections::BTreeSet, path::PathBuf};

    use actix_web::{App, test as actix_test};
    use chrono::Utc;
    use domain::{ApiKeyId, KeySecret, KeyUsage, ProxyConfigId};
    use serde_json::Value;

    use super::*;

    fn committed_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
    }

    /// Fails when `docs/openapi.json` differs from what the handlers generate; with
    /// `UPDATE_OPENAPI=1` it rewrites the file instead (`cargo xtask openapi`).
    #[test]
    fn the_committed_document_is_up_to_date() {
        let generated = json();
        let path = committed_path();
        if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: run `cargo xtask openapi` (or UPDATE_OPENAPI=1 cargo test -p app --lib openapi::) and commit the result"
        );
    }

    fn document() -> Value {
        serde_json::from_str(&json()).unwrap()
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_admin_route() {
        let document = document();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
        let operations: BTreeSet<String> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| format!("{} {path}", method.to_uppercase()))
            })
            .collect();
        let expected: BTreeSet<String> = [
            "GET /admin/app-config",
            "POST /admin/login",
            "GET /admin/proxy-configs",
            "POST /admin/proxy-configs",
            "GET /admin/proxy-configs/{id}",
            "PUT /admin/proxy-configs/{id}",
            "DELETE /admin/proxy-configs/{id}",
            "PUT /admin/proxy-configs/{id}/status",
            "GET /admin/proxy-configs/{id}/keys",
            "POST /admin/proxy-configs/{id}/keys",
            "DELETE /admin/proxy-configs/{id}/keys",
            "POST /admin/proxy-configs/{id}/keys/batch",
            "GET /admin/key-counts",
            "PATCH /admin/keys/{key_id}",
            "DELETE /admin/keys/{key_id}",
            "POST /admin/keys/{key_id}/test",
            "GET /admin/request-logs",
            "GET /admin/stats",
            "GET /admin/client-keys",
            "POST /admin/client-keys",
            "GET /admin/client-keys/{id}",
            "PUT /admin/client-keys/{id}",
            "DELETE /admin/client-keys/{id}",
            "POST /admin/client-keys/{id}/rotate",
            "GET /admin/openapi.json",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(operations, expected);
    }

    #[test]
    fn only_the_public_routes_go_without_a_token() {
        let document = document();
        let public = ["/admin/app-config", "/admin/login", "/admin/openapi.json"];
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let secured = operation["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r.get(SECURITY_SCHEME).is_some()));
                assert_eq!(secured, !public.contains(&path.as_str()), "{method} {path}");
                if secured {
                    assert!(
                        operation["responses"].get("401").is_some(),
                        "{method} {path} documents its 401"
                    );
                }
            }
        }
        assert_eq!(
            document["components"]["securitySchemes"][SECURITY_SCHEME]["scheme"],
            "bearer"
        );
    }

    /// The property names of a component schema.
    fn properties(document: &Value, schema: &str) -> BTreeSet<String> {
        document["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {schema}"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys_of(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn the_schemas_name_exactly_the_fields_the_handlers_send() {
        let document = document();
        let config = domain::ProxyConfigInput {
            name: Some("Weather".into()),
            slug: Some("weather".into()),
            config_type: Some("GENERIC".into()),
            method: Some("GET".into()),
            target_url: Some("https://api.weather.example".into()),
            api_key_location: Some("query".into()),
            api_key_name: Some("appid".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let config =
            domain::ProxyConfig::from_spec(ProxyConfigId(1), config, Utc::now(), Utc::now());
        assert_eq!(
            keys_of(&serde_json::to_value(&config).unwrap()),
            properties(&document, "ProxyConfig")
        );
        let key = domain::ApiKey {
            id: ApiKeyId(1),
            proxy_config_id: ProxyConfigId(1),
            key_value: KeySecret::parse("sk-abcdefghijkl").unwrap(),
            is_active: true,
            health: domain::KeyHealth::Ok,
            usage: KeyUsage::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        assert_eq!(
            keys_of(&serde_json::to_value(&key).unwrap()),
            properties(&document, "ApiKey")
        );
        assert_eq!(
            keys_of(&serde_json::to_value(domain::BatchImportReport::default()).unwrap()),
            properties(&document, "BatchImportReport")
        );
        let token = crate::auth::IssuedToken {
            success: true,
            access_token: "t".into(),
            token_type: "bearer",
            expires_in: 1,
        };
        assert_eq!(
            keys_of(&serde_json::to_value(&token).unwrap()),
            properties(&document, "Token")
        );
        let report = crate::probe::ProbeReport {
            key_id: 1,
            status: None,
            latency_ms: 1,
            health: KeyHealth::Ok,
            cooldown_until: None,
            error: None,
        };
        assert_eq!(
            keys_of(&serde_json::to_value(&report).unwrap()),
            properties(&document, "ProbeReport")
        );
    }

    #[test]
    fn the_request_examples_are_accepted_by_the_real_input_types() {
        let document = document();
        let example = document["components"]["schemas"]["ProxyConfigInput"]["examples"][0].clone();
        let input: domain::ProxyConfigInput = serde_json::from_value(example).unwrap();
        input.validate().unwrap();
        let domain_fields: BTreeSet<String> = properties(&document, "ProxyConfigInput");
        assert!(domain_fields.contains("output_format") && domain_fields.len() == 15);
        let example = document["components"]["schemas"]["ClientKeyInputDoc"]["examples"][0].clone();
        let input: domain::ClientKeyInput = serde_json::from_value(example).unwrap();
        input.validate().unwrap();
        assert_eq!(properties(&document, "ClientKeyInputDoc").len(), 9);
    }

    #[actix_web::test]
    async fn the_document_is_served_without_a_token() {
        let app = actix_test::init_service(App::new().configure(crate::routes::configure)).await;
        let response = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/admin/openapi.json")
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), 200);
        let body: Value = actix_test::read_body_json(response).await;
        assert_eq!(body, document());
    }
}
