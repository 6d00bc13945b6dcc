//! The OpenAPI 3.1 document of the admin API, generated with utoipa from the `#[utoipa::path]`
//! annotations of [`crate::routes::admin`], served at `GET /admin/openapi.json` and committed as
//! `docs/openapi.json` (a test fails when the committed file is stale; `cargo xtask openapi` or
//! `UPDATE_OPENAPI=1 cargo test -p app --lib openapi::` rewrites it).
//!
//! The response types here are the admin API's wire DTOs: the handlers build them from the domain
//! values (`From<&domain::...>`) and serialise them, so the document describes exactly what is
//! sent and `domain` knows nothing of the wire. Request bodies are read by the domain's input types
//! (which validate every field at once); their schemas here describe what those accept.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
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
        GenericConfigInput,
        LlmConfigInput,
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
    modifiers(&AdminToken, &LlmPlacementRule, &ClientKeyRules),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum ConfigType {
    /// Any REST API, one method and one target URL, served under `/proxy/{slug}/...`.
    #[serde(rename = "GENERIC")]
    Generic,
    /// An LLM API, served under `/llm/{slug}/...`.
    #[serde(rename = "LLM")]
    Llm,
}

/// Where the upstream key is put in the outgoing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyLocation {
    /// In the header named `api_key_name`.
    Header,
    /// In the query parameter named `api_key_name`.
    Query,
}

/// The one method a GENERIC config accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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

impl From<domain::ConfigType> for ConfigType {
    fn from(kind: domain::ConfigType) -> Self {
        match kind {
            domain::ConfigType::Generic => ConfigType::Generic,
            domain::ConfigType::Llm => ConfigType::Llm,
        }
    }
}

impl From<domain::KeyLocation> for KeyLocation {
    fn from(location: domain::KeyLocation) -> Self {
        match location {
            domain::KeyLocation::Header => KeyLocation::Header,
            domain::KeyLocation::Query => KeyLocation::Query,
        }
    }
}

impl From<domain::HttpMethod> for HttpMethod {
    fn from(method: domain::HttpMethod) -> Self {
        match method {
            domain::HttpMethod::Get => HttpMethod::Get,
            domain::HttpMethod::Post => HttpMethod::Post,
            domain::HttpMethod::Put => HttpMethod::Put,
            domain::HttpMethod::Patch => HttpMethod::Patch,
            domain::HttpMethod::Delete => HttpMethod::Delete,
            domain::HttpMethod::Head => HttpMethod::Head,
            domain::HttpMethod::Options => HttpMethod::Options,
        }
    }
}

impl From<domain::ApiFormat> for ApiFormat {
    fn from(format: domain::ApiFormat) -> Self {
        match format {
            domain::ApiFormat::OpenaiCompatible => ApiFormat::OpenaiCompatible,
            domain::ApiFormat::AnthropicNative => ApiFormat::AnthropicNative,
            domain::ApiFormat::GeminiNative => ApiFormat::GeminiNative,
        }
    }
}

impl From<domain::OutputFormat> for OutputFormat {
    fn from(format: domain::OutputFormat) -> Self {
        match format {
            domain::OutputFormat::None => OutputFormat::None,
            domain::OutputFormat::Openai => OutputFormat::Openai,
            domain::OutputFormat::Anthropic => OutputFormat::Anthropic,
            domain::OutputFormat::Gemini => OutputFormat::Gemini,
            domain::OutputFormat::OpenaiResponses => OutputFormat::OpenaiResponses,
        }
    }
}

impl From<domain::RetryClass> for RetryClass {
    fn from(class: domain::RetryClass) -> Self {
        match class {
            domain::RetryClass::RateLimited => RetryClass::RateLimited,
            domain::RetryClass::AuthFailed => RetryClass::AuthFailed,
            domain::RetryClass::ServerError => RetryClass::ServerError,
            domain::RetryClass::ConnectError => RetryClass::ConnectError,
            domain::RetryClass::Timeout => RetryClass::Timeout,
        }
    }
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

/// A config as created or replaced (`POST /admin/proxy-configs`, `PUT /admin/proxy-configs/{id}`):
/// the fields of a GENERIC or of an LLM config, told apart by `config_type` (accepted in any case).
/// Fields of the other config type may be sent empty or null and are ignored.
pub struct ProxyConfigInput;

impl utoipa::PartialSchema for ProxyConfigInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{Discriminator, OneOfBuilder, Ref};
        let mut discriminator = Discriminator::new("config_type");
        for (value, schema) in [("GENERIC", "GenericConfigInput"), ("LLM", "LlmConfigInput")] {
            discriminator
                .mapping
                .insert(value.to_owned(), format!("#/components/schemas/{schema}"));
        }
        OneOfBuilder::new()
            .item(Ref::from_schema_name("GenericConfigInput"))
            .item(Ref::from_schema_name("LlmConfigInput"))
            .discriminator(Some(discriminator))
            .description(Some(
                "A GENERIC or an LLM config, by `config_type` (any case). Fields of the other type may be sent empty or null and are ignored.",
            ))
            .examples([serde_json::json!({
                "name": "OpenAI",
                "slug": "openai",
                "config_type": "LLM",
                "target_base_url": "https://api.openai.com/v1",
                "api_format": "openai_compatible",
                "output_format": "none"
            })])
            .into()
    }
}

impl ToSchema for ProxyConfigInput {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "GenericConfigInput".to_owned(),
            <GenericConfigInput as utoipa::PartialSchema>::schema(),
        ));
        schemas.push((
            "LlmConfigInput".to_owned(),
            <LlmConfigInput as utoipa::PartialSchema>::schema(),
        ));
        <GenericConfigInput as ToSchema>::schemas(schemas);
        <LlmConfigInput as ToSchema>::schemas(schemas);
    }
}

/// `config_type` of a GENERIC config (any case).
#[derive(Serialize, ToSchema)]
pub enum GenericType {
    /// Any REST API.
    #[serde(rename = "GENERIC")]
    Generic,
}

/// `config_type` of an LLM config (any case).
#[derive(Serialize, ToSchema)]
pub enum LlmType {
    /// An LLM API.
    #[serde(rename = "LLM")]
    Llm,
}

/// A GENERIC config: one method, one target URL, the key at a header or query parameter.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "name": "Weather",
    "slug": "weather",
    "config_type": "GENERIC",
    "method": "GET",
    "target_url": "https://api.weather.example/v1",
    "api_key_location": "query",
    "api_key_name": "appid"
})))]
pub struct GenericConfigInput {
    /// Unique display name, 1 to 100 characters.
    #[schema(
        examples("Weather"),
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        max_length = 100
    )]
    pub name: String,
    /// Unique URL name `[a-z0-9][a-z0-9._-]{0,99}`, accepted in any case, stored lower case;
    /// the proxy routes match it case-insensitively.
    #[schema(examples("weather"), pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    pub slug: String,
    /// `GENERIC`, any case.
    pub config_type: GenericType,
    /// Whether the proxy routes serve it; `true` when omitted.
    pub is_active: Option<bool>,
    /// Where the upstream key goes.
    pub api_key_location: KeyLocation,
    /// The header or query parameter that carries the upstream key: an HTTP token (not a header
    /// the proxy manages itself, such as `Host` or `Content-Length`).
    #[schema(examples("X-Api-Key"), pattern = r"^[A-Za-z0-9!$'*.^_`|~-]{1,256}$")]
    pub api_key_name: String,
    /// Sent before the key, exactly as given (mind the trailing space: `token `); nothing when
    /// omitted. Printable ASCII and spaces.
    #[schema(examples("token "), max_length = 64, pattern = "^[ -~]*$")]
    pub api_key_prefix: Option<String>,
    /// The one accepted method (any case).
    pub method: HttpMethod,
    /// Absolute http(s) URL the proxied path is appended to (no credentials, no fragment).
    #[schema(
        examples("https://api.weather.example/v1"),
        pattern = r#"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z][A-Za-z0-9-]{0,30}(\.[A-Za-z][A-Za-z0-9-]{0,30}){0,4}(:[0-9]{1,4})?(/[!-"$-~]*)?$"#
    )]
    pub target_url: String,
    /// Retries with other keys after the first attempt, 0 to 10; null or absent =
    /// `PROXY_MAX_RETRIES`.
    #[schema(examples(2), maximum = 10)]
    pub max_retries: Option<u32>,
    /// The failure classes re-sent to another key, replacing the default set; null or absent =
    /// every class but `timeout`, and for `POST`/`PATCH` only `rate_limited`, `auth_failed` and
    /// `connect_error`.
    pub retry_on: Option<Vec<RetryClass>>,
    /// Seconds to wait for the response head, 0 = no limit (at most 86400); null or absent =
    /// `PROXY_TIMEOUT`.
    #[schema(examples(30), maximum = 86400)]
    pub response_timeout_seconds: Option<u32>,
}

/// An LLM config: an upstream in one of three formats, clients in one of five. A non-blank
/// `api_key_name` or a non-null `api_key_prefix` needs `api_key_location`.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "name": "OpenAI",
    "slug": "openai",
    "config_type": "LLM",
    "target_base_url": "https://api.openai.com/v1",
    "api_format": "openai_compatible",
    "output_format": "none"
})))]
pub struct LlmConfigInput {
    /// Unique display name, 1 to 100 characters.
    #[schema(
        examples("OpenAI"),
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$",
        max_length = 100
    )]
    pub name: String,
    /// Unique URL name `[a-z0-9][a-z0-9._-]{0,99}`, accepted in any case, stored lower case;
    /// the proxy routes match it case-insensitively.
    #[schema(examples("openai"), pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    pub slug: String,
    /// `LLM`, any case.
    pub config_type: LlmType,
    /// Whether the proxy routes serve it; `true` when omitted.
    pub is_active: Option<bool>,
    /// Absolute http(s) URL the action path is appended to (no credentials, no fragment).
    #[schema(
        examples("https://api.openai.com/v1"),
        pattern = r#"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z][A-Za-z0-9-]{0,30}(\.[A-Za-z][A-Za-z0-9-]{0,30}){0,4}(:[0-9]{1,4})?(/[!-"$-~]*)?$"#
    )]
    pub target_base_url: String,
    /// `openai_compatible` when omitted.
    pub api_format: Option<ApiFormat>,
    /// `none` (the upstream's format) when omitted.
    pub output_format: Option<OutputFormat>,
    /// Overrides the format's own placement of the key; comes with `api_key_name`.
    pub api_key_location: Option<KeyLocation>,
    /// The header or query parameter that carries the upstream key; blank with
    /// `api_key_location` means the format's own place (as if neither were sent).
    #[schema(
        examples("Authorization"),
        pattern = r"^(\s*|[A-Za-z0-9!$'*.^_`|~-]{1,256})$"
    )]
    pub api_key_name: Option<String>,
    /// Sent before the key, exactly as given (`Bearer `); when omitted, `Bearer ` for the
    /// `Authorization` header, nothing otherwise; `""` sends the key alone. Printable ASCII and
    /// spaces.
    #[schema(examples("Bearer "), max_length = 64, pattern = "^[ -~]*$")]
    pub api_key_prefix: Option<String>,
    /// Retries with other keys after the first attempt, 0 to 10; null or absent =
    /// `PROXY_MAX_RETRIES`.
    #[schema(examples(2), maximum = 10)]
    pub max_retries: Option<u32>,
    /// The failure classes re-sent to another key, replacing the default set; null or absent =
    /// every class but `timeout`.
    pub retry_on: Option<Vec<RetryClass>>,
    /// Seconds to wait for the response head, 0 = no limit (at most 86400); null or absent =
    /// `LLM_RESPONSE_TIMEOUT`.
    #[schema(examples(600), maximum = 86400)]
    pub response_timeout_seconds: Option<u32>,
}

/// What JSON Schema says and utoipa's derive cannot: in an LLM config, a non-blank
/// `api_key_name` or a string `api_key_prefix` requires `api_key_location` (as `null`, or a
/// blank name, is the same as leaving the field out, `dependentRequired` would say too much).
struct LlmPlacementRule;

impl Modify for LlmPlacementRule {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, schema::Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let Some(RefOr::T(Schema::Object(llm))) = components.schemas.get_mut("LlmConfigInput")
        else {
            return;
        };
        let needs_location = |field: &str, when: serde_json::Value| {
            serde_json::json!({
                "if": {"properties": {field: when}, "required": [field]},
                "then": {
                    "properties": {"api_key_location": {"type": "string", "enum": ["header", "query"]}},
                    "required": ["api_key_location"]
                }
            })
        };
        llm.extensions.get_or_insert_with(Default::default).insert(
            "allOf".to_owned(),
            serde_json::json!([
                needs_location(
                    "api_key_name",
                    serde_json::json!({"type": "string", "pattern": "\\S"})
                ),
                needs_location("api_key_prefix", serde_json::json!({"type": "string"})),
            ]),
        );
    }
}

/// What the derive cannot say about a client key's body: config ids are positive, and a token
/// budget and its period come together.
struct ClientKeyRules;

impl Modify for ClientKeyRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(schema) = openapi
            .components
            .as_mut()
            .and_then(|components| components.schemas.get_mut("ClientKeyInputDoc"))
        else {
            return;
        };
        let Ok(mut json) = serde_json::to_value(&*schema) else {
            return;
        };
        json["properties"]["allowed_config_ids"]["items"]["minimum"] = 1.into();
        let needs = |field: &str, when: serde_json::Value, other: &str, then: serde_json::Value| {
            serde_json::json!({
                "if": {"properties": {field: when}, "required": [field]},
                "then": {"properties": {other: then}, "required": [other]}
            })
        };
        let rules = serde_json::json!([
            needs(
                "token_budget",
                serde_json::json!({"type": "integer"}),
                "budget_period",
                serde_json::json!({"type": "string", "enum": ["day", "month", "total"]}),
            ),
            needs(
                "budget_period",
                serde_json::json!({"type": "string"}),
                "token_budget",
                serde_json::json!({"type": "integer", "minimum": 1}),
            ),
        ]);
        if let Ok(edited) = serde_json::from_value(json) {
            *schema = edited;
        }
        if let utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(object)) = schema {
            object
                .extensions
                .get_or_insert_with(Default::default)
                .insert("allOf".to_owned(), rules);
        }
    }
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
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Last change (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// The SPEC's flat shape: the placement of either type, and the fields of the other type null.
impl From<&domain::ProxyConfig> for ProxyConfig {
    fn from(config: &domain::ProxyConfig) -> Self {
        let placement = config.kind.key_placement();
        let (method, target_url, llm) = match &config.kind {
            domain::ConfigKind::Generic(g) => (Some(g.method), Some(&g.target_url), None),
            domain::ConfigKind::Llm(l) => (None, None, Some(l)),
        };
        ProxyConfig {
            id: config.id.0,
            name: config.name.as_str().to_owned(),
            slug: config.slug.as_str().to_owned(),
            config_type: config.kind.config_type().into(),
            is_active: config.is_active,
            api_key_location: placement.map(|p| p.location.into()),
            api_key_name: placement.map(|p| p.name.to_string()),
            api_key_prefix: placement.map(|p| p.prefix.to_string()),
            method: method.map(Into::into),
            target_url: target_url.map(|url| url.as_str().to_owned()),
            target_base_url: llm.map(|l| l.target_base_url.as_str().to_owned()),
            api_format: llm.map(|l| l.api_format.into()),
            output_format: llm.map(|l| l.output_format.into()),
            max_retries: config.policy.max_retries,
            retry_on: config
                .policy
                .retry_on
                .map(|set| set.classes().map(Into::into).collect()),
            response_timeout_seconds: config.policy.response_timeout_seconds,
            created_at: config.created_at,
            updated_at: config.updated_at,
        }
    }
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
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub cooldown_until: Option<DateTime<Utc>>,
    /// Last upstream status seen with this key.
    #[schema(required = true)]
    pub last_status: Option<u16>,
    /// Upstream requests sent with this key (flushed every `USAGE_FLUSH_SECONDS`).
    pub request_count: u64,
    /// Of those, the failed ones.
    pub failure_count: u64,
    /// Last use (RFC 3339).
    #[schema(required = true, value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// Creation time (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Last change (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// The SPEC's flat shape, the value masked.
impl From<&domain::ApiKey> for ApiKey {
    fn from(key: &domain::ApiKey) -> Self {
        ApiKey {
            id: key.id.0,
            proxy_config_id: key.proxy_config_id.0,
            key_value: key.key_value.masked(),
            is_active: key.is_active,
            health: key.health.into(),
            cooldown_until: key.health.cooldown_until(),
            last_status: key.usage.last_status,
            request_count: key.usage.request_count,
            failure_count: key.usage.failure_count,
            last_used_at: key.usage.last_used_at,
            created_at: key.created_at,
            updated_at: key.updated_at,
        }
    }
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
            keys_of(&serde_json::to_value(ProxyConfig::from(&config)).unwrap()),
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
            keys_of(&serde_json::to_value(ApiKey::from(&key)).unwrap()),
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

    /// The DTOs write the admin API's JSON exactly as before they moved out of `domain`: field
    /// order, null fields of the other type, enum spellings and RFC 3339 times.
    #[test]
    fn the_dtos_write_the_wire_json_byte_for_byte() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let spec = domain::ProxyConfigInput {
            name: Some("OpenAI".into()),
            slug: Some("OpenAI".into()),
            config_type: Some("llm".into()),
            target_base_url: Some("https://api.openai.com/v1".into()),
            api_format: Some("openai_compatible".into()),
            retry_on: Some(vec!["timeout".into(), "rate_limited".into()]),
            max_retries: Some(1),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let config = domain::ProxyConfig::from_spec(ProxyConfigId(7), spec, at, at);
        assert_eq!(
            serde_json::to_string(&ProxyConfig::from(&config)).unwrap(),
            r#"{"id":7,"name":"OpenAI","slug":"openai","config_type":"LLM","is_active":true,"api_key_location":null,"api_key_name":null,"api_key_prefix":null,"method":null,"target_url":null,"target_base_url":"https://api.openai.com/v1","api_format":"openai_compatible","output_format":"none","max_retries":1,"retry_on":["rate_limited","timeout"],"response_timeout_seconds":null,"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"}"#
        );
        let key = domain::ApiKey {
            id: ApiKeyId(3),
            proxy_config_id: ProxyConfigId(7),
            key_value: KeySecret::parse("sk-abcdefghijklmnop").unwrap(),
            is_active: false,
            health: domain::KeyHealth::Cooling { until: at },
            usage: KeyUsage {
                request_count: 5,
                failure_count: 2,
                last_status: Some(429),
                last_used_at: Some(at),
            },
            created_at: at,
            updated_at: at,
        };
        assert_eq!(
            serde_json::to_string(&ApiKey::from(&key)).unwrap(),
            r#"{"id":3,"proxy_config_id":7,"key_value":"sk-a****mnop","is_active":false,"health":"cooling","cooldown_until":"2026-01-02T03:04:05Z","last_status":429,"request_count":5,"failure_count":2,"last_used_at":"2026-01-02T03:04:05Z","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"}"#
        );
    }

    #[test]
    fn the_request_examples_are_accepted_by_the_real_input_types() {
        let document = document();
        let schemas = &document["components"]["schemas"];
        for name in ["ProxyConfigInput", "GenericConfigInput", "LlmConfigInput"] {
            let example = schemas[name]["examples"][0].clone();
            let input: domain::ProxyConfigInput = serde_json::from_value(example).unwrap();
            input.validate().unwrap();
        }
        let one_of: Vec<&str> = schemas["ProxyConfigInput"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["$ref"].as_str().unwrap())
            .collect();
        assert_eq!(
            one_of,
            [
                "#/components/schemas/GenericConfigInput",
                "#/components/schemas/LlmConfigInput"
            ]
        );
        let required = |name: &str| -> BTreeSet<String> {
            schemas[name]["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert!(required("LlmConfigInput").contains("target_base_url"));
        assert!(
            required("GenericConfigInput").is_superset(
                &["method", "target_url", "api_key_location", "api_key_name"]
                    .map(str::to_owned)
                    .into()
            )
        );
        assert_eq!(
            schemas["LlmConfigInput"]["allOf"][0]["then"]["required"],
            serde_json::json!(["api_key_location"])
        );
        // Every field the server reads is described by one of the two.
        let described: BTreeSet<String> = properties(&document, "GenericConfigInput")
            .union(&properties(&document, "LlmConfigInput"))
            .cloned()
            .collect();
        assert_eq!(described.len(), 15, "{described:?}");
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
