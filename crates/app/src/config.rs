//! Configuration (SPEC §5): defaults < optional `config.toml` (`CONFIG_FILE`) < `.env` <
//! environment, with the original backend's variable names, merged with figment and validated
//! right after extraction so that every invalid value stops start-up with one line naming the
//! variable.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
    value::Value,
};
use secrecy::{ExposeSecret, SecretString};
use storage_sql::EncryptionKey;

use crate::cors::{AllowedOrigins, CorsPolicy};

/// Every variable the server reads, with its default (`None`: no default).
pub const VARIABLES: &[(&str, Option<&str>)] = &[
    ("BACKEND_HOST", Some("0.0.0.0")),
    ("BACKEND_PORT", Some("8000")),
    ("LOG_LEVEL", Some("info")),
    ("LOG_FORMAT", Some("text")),
    ("WORKERS", None),
    ("ADMIN_USERNAME", Some("admin")),
    ("ADMIN_PASSWORD", None),
    ("JWT_SECRET", None),
    ("JWT_EXPIRE_MINUTES", Some("1440")),
    ("GLOBAL_PROXY_KEYS", None),
    ("PROXY_TIMEOUT", Some("30")),
    ("LLM_RESPONSE_TIMEOUT", Some("600")),
    ("PROXY_CONNECT_TIMEOUT", Some("10")),
    ("PROXY_TOTAL_TIMEOUT", Some("0")),
    ("STREAM_IDLE_TIMEOUT", Some("120")),
    ("PROXY_MAX_RETRIES", Some("2")),
    ("KEY_COOLDOWN_SECONDS", Some("60")),
    ("KEY_RECOVERY_INTERVAL_SECONDS", Some("300")),
    ("USAGE_FLUSH_SECONDS", Some("5")),
    ("REQUEST_LOG_RETENTION_DAYS", Some("7")),
    ("REQUEST_LOG_MAX_ROWS", Some("1000000")),
    ("REQUEST_LOG_QUEUE_SIZE", Some("50000")),
    ("MAX_BODY_BYTES", Some("20971520")),
    ("CLIENT_BODY_TIMEOUT", Some("30")),
    ("UPSTREAM_IDLE_SECONDS", Some("15")),
    ("UPSTREAM_MAX_CONNECTIONS_PER_HOST", Some("256")),
    ("BODY_BUFFER_BUDGET_BYTES", Some("268435456")),
    ("METRICS_TOKEN", None),
    ("METRICS_PER_KEY_LIMIT", Some("0")),
    ("PROXY_PUBLIC_BASE_URL", None),
    ("DB_TYPE", None),
    ("DATABASE_PATH", Some("./data/api_key_rotator.db")),
    ("DATABASE_URL", None),
    ("DB_HOST", None),
    ("MYSQL_HOST", None),
    ("MYSQL_DB_HOST", None),
    // No defaults in the table for the next three: setting any of them selects MySQL/Redis, as
    // in the original backend, so the code must see whether they were set.
    ("DB_PORT", None),
    ("DB_USER", None),
    ("DB_PASSWORD", None),
    ("DB_NAME", Some("api_key_rotator")),
    ("CACHE_TYPE", None),
    ("REDIS_URL", None),
    ("REDIS_HOST", None),
    ("REDIS_PORT", None),
    ("REDIS_PASSWORD", None),
    ("REDIS_DB", Some("0")),
    ("REDIS_NAMESPACE", Some("akr")),
    ("REDIS_TLS_CA_CERT_FILE", None),
    ("ROTATION_BLOCK_SIZE", Some("1")),
    ("RESET_DB_TABLES", Some("false")),
    ("ENCRYPTION_KEY", None),
    ("NEW_ENCRYPTION_KEY", None),
    ("CONFIG_FILE", Some("config.toml")),
    ("CORS_ALLOWED_ORIGINS", Some("*")),
    ("CORS_ADMIN_ALLOWED_ORIGINS", None),
];

/// A configuration value that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {variable} {message}")]
pub struct ConfigError {
    /// The variable's name.
    pub variable: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

/// Where configs and keys are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageBackend {
    /// A SQLite file (lightweight edition).
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// MySQL or MariaDB (enterprise edition).
    Mysql {
        /// `mysql://user:password@host:port/database`.
        url: SecretUrl,
    },
    /// PostgreSQL (enterprise edition).
    Postgres {
        /// `postgres://user:password@host:port/database[?sslmode=...]`.
        url: SecretUrl,
    },
}

/// Where rotation state, counters and change notifications live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    /// In this process (lightweight edition).
    Memory,
    /// Redis, shared by every instance (enterprise edition).
    Redis {
        /// `redis://[[user]:password@]host:port/db`, or a Cluster (`redis-cluster://`) or
        /// Sentinel (`redis-sentinel://`) URL; `rediss…` for TLS.
        url: SecretUrl,
        /// The CA certificates (PEM) to trust for TLS instead of the system's.
        tls_ca_cert_file: Option<PathBuf>,
        /// Key prefix, so several deployments can share one Redis.
        namespace: String,
        /// Round-robin counter values reserved per Redis round trip (1 = exact fairness).
        rotation_block_size: u32,
    },
}

/// Largest `ROTATION_BLOCK_SIZE`: beyond this the split across instances stops being useful.
pub const MAX_ROTATION_BLOCK_SIZE: u32 = 10_000;

/// A URL that may hold a password: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL that may hold a password.
    pub(crate) fn new(url: &url::Url) -> Self {
        SecretUrl(url.to_string())
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("****"));
                }
                // A Redis Sentinel URL may carry the sentinels' password in its query.
                if url
                    .query_pairs()
                    .any(|(name, _)| name == "sentinelPassword")
                {
                    let pairs: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(name, value)| {
                            let value = if name == "sentinelPassword" {
                                "****".to_owned()
                            } else {
                                value.into_owned()
                            };
                            (name.into_owned(), value)
                        })
                        .collect();
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                write!(f, "{url}")
            }
            Err(_) => f.write_str("<url>"),
        }
    }
}

/// Where a secret came from: generated secrets are printed once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Set by the operator.
    Configured,
    /// Generated at start-up because it was not set.
    Generated,
}

/// The validated settings of one server process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests).
    pub port: u16,
    /// `tracing` filter directive (`info`, `app=debug,info`).
    pub log_level: String,
    /// `text` or `json` log lines.
    pub log_json: bool,
    /// Worker threads; `None` = one per core.
    pub workers: Option<usize>,
    /// Admin login name.
    pub admin_username: String,
    /// Admin password.
    pub admin_password: SecretString,
    /// Whether the admin password was generated.
    pub admin_password_provenance: Provenance,
    /// HS256 signing secret for admin tokens.
    pub jwt_secret: SecretString,
    /// Lifetime of an admin token.
    pub jwt_ttl: Duration,
    /// The proxy keys clients present.
    pub proxy_keys: Vec<SecretString>,
    /// Whether the proxy key was generated.
    pub proxy_keys_provenance: Provenance,
    /// Response-head timeout of GENERIC configs (`PROXY_TIMEOUT`); `None` = no limit (`0`).
    pub proxy_timeout: Option<Duration>,
    /// Response-head timeout of LLM configs (`LLM_RESPONSE_TIMEOUT`, 600 s: a non-streaming
    /// reasoning call may take minutes); `None` = no limit (`0`).
    pub llm_response_timeout: Option<Duration>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Optional bound on a whole proxied exchange; `None` = unbounded (long streams).
    pub total_timeout: Option<Duration>,
    /// Longest silence allowed between two chunks of a streamed response.
    pub stream_idle_timeout: Duration,
    /// Retries with other keys after the first attempt.
    pub max_retries: u32,
    /// Cooldown of a rate-limited key when the upstream does not say.
    pub key_cooldown: Duration,
    /// Interval of the background re-probe of failed keys.
    pub key_recovery_interval: Duration,
    /// Interval of usage-counter flushes to the store.
    pub usage_flush_interval: Duration,
    /// How long the request log keeps a record, in days.
    pub request_log_retention_days: u32,
    /// Most records the request log keeps; 0 turns the log off.
    pub request_log_max_rows: u64,
    /// Records waiting for the log's writer at most; more are dropped and counted.
    pub request_log_queue_size: usize,
    /// Largest request body accepted (admin JSON, buffered proxy bodies).
    pub max_body_bytes: usize,
    /// Time a client has to send a buffered request body.
    pub client_body_timeout: Duration,
    /// How long an idle upstream connection is kept for reuse.
    pub upstream_idle_timeout: Duration,
    /// Upstream connections one worker has in use to one host (scheme and authority) at most.
    pub upstream_max_connections_per_host: usize,
    /// Memory all buffered proxy request bodies may hold at once.
    pub body_buffer_budget_bytes: usize,
    /// Bearer token `/metrics` requires, when set.
    pub metrics_token: Option<SecretString>,
    /// Keys per config that get per-key series on `/metrics` (the first ones by id); 0 = none.
    pub metrics_per_key_limit: usize,
    /// The base URL clients use to reach this service, shown by `/admin/app-config`.
    pub proxy_public_base_url: String,
    /// The store.
    pub storage: StorageBackend,
    /// The cache.
    pub cache: CacheBackend,
    /// Drop and recreate the tables at start-up.
    pub reset_db_tables: bool,
    /// `ENCRYPTION_KEY`: stored key values are encrypted with it; `None` stores them as they
    /// are. Wiped from memory when dropped, never printed.
    pub encryption_key: Option<EncryptionKey>,
    /// `NEW_ENCRYPTION_KEY`: the key `keys rotate-encryption` re-encrypts with; the server
    /// itself ignores it.
    pub new_encryption_key: Option<EncryptionKey>,
    /// Which browser origins may call the proxies and the admin API.
    pub cors: CorsPolicy,
}

/// Reads the layered sources from the process environment and the working directory.
///
/// # Errors
/// The first invalid value, naming its variable.
pub fn load() -> Result<Settings, ConfigError> {
    let environment: BTreeMap<String, String> = std::env::vars()
        .filter(|(name, _)| VARIABLES.iter().any(|(known, _)| known == name))
        .collect();
    let config_file = environment
        .get("CONFIG_FILE")
        .cloned()
        .unwrap_or_else(|| "config.toml".to_owned());
    let dotenv: BTreeMap<String, String> = match dotenvy::from_path_iter(".env") {
        Ok(entries) => entries
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("ENV_FILE", format!("(.env) cannot be parsed: {e}")))?,
        Err(_) => BTreeMap::new(),
    };
    let defaults: BTreeMap<&str, &str> = VARIABLES
        .iter()
        .filter_map(|(name, default)| default.map(|d| (*name, d)))
        .collect();
    let figment = Figment::from(Serialized::defaults(defaults))
        .merge(Toml::file(&config_file))
        .merge(Serialized::defaults(dotenv))
        .merge(Serialized::defaults(environment));
    let raw: BTreeMap<String, Value> = figment.extract().map_err(|e| {
        invalid(
            "CONFIG_FILE",
            format!("({config_file}) cannot be read: {e}"),
        )
    })?;
    let raw = raw
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_ascii_uppercase(), scalar_text(&value)?)))
        .collect();
    Settings::from_raw(&raw)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Num(_, n) => n
            .to_u128()
            .map(|v| v.to_string())
            .or_else(|| n.to_i128().map(|v| v.to_string()))
            .or_else(|| n.to_f64().map(|v| v.to_string())),
        Value::Empty(..) | Value::Dict(..) | Value::Array(..) => None,
    }
}

/// Typed access to the merged raw values, with errors naming the variable.
struct Raw<'a>(&'a BTreeMap<String, String>);

impl Raw<'_> {
    fn text(&self, name: &'static str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        what: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.text(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid(name, format!("must be {what}, got {v:?}")))
            })
            .transpose()
    }

    fn required<T: std::str::FromStr>(
        &self,
        name: &'static str,
        what: &str,
    ) -> Result<T, ConfigError> {
        self.parse(name, what)?
            .ok_or_else(|| invalid(name, format!("must be set to {what}")))
    }

    fn seconds(&self, name: &'static str, allow_zero: bool) -> Result<Duration, ConfigError> {
        let what = if allow_zero {
            "a whole number of seconds"
        } else {
            "a positive whole number of seconds"
        };
        let value: u64 = self.required(name, what)?;
        if value == 0 && !allow_zero {
            return Err(invalid(name, format!("must be {what}, got 0")));
        }
        Ok(Duration::from_secs(value))
    }

    /// A whole number of `unit` of at least 1.
    fn positive<T: std::str::FromStr + PartialEq + Default>(
        &self,
        name: &'static str,
        unit: &str,
    ) -> Result<T, ConfigError> {
        let what = format!("a positive whole number of {unit}");
        let value: T = self.required(name, &what)?;
        if value == T::default() {
            return Err(invalid(name, format!("must be {what}, got 0")));
        }
        Ok(value)
    }

    /// A time limit in seconds where `0` means none.
    fn limit(&self, name: &'static str) -> Result<Option<Duration>, ConfigError> {
        let limit = self.seconds(name, true)?;
        Ok((!limit.is_zero()).then_some(limit))
    }

    /// A comma-separated origin list; unset or blank is same-origin only.
    fn origins(&self, name: &'static str) -> Result<AllowedOrigins, ConfigError> {
        AllowedOrigins::parse(self.text(name).unwrap_or_default()).map_err(|why| invalid(name, why))
    }

    fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        match self.text(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no" | "off") => Ok(false),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some(other) => Err(invalid(
                name,
                format!("must be true or false, got {other:?}"),
            )),
        }
    }

    fn url(&self, name: &'static str, schemes: &[&str]) -> Result<Option<url::Url>, ConfigError> {
        let Some(text) = self.text(name) else {
            return Ok(None);
        };
        let url = url::Url::parse(text).map_err(|_| {
            invalid(
                name,
                format!(
                    "must be a URL like {}://host, got a malformed value",
                    schemes[0]
                ),
            )
        })?;
        if !schemes.contains(&url.scheme()) {
            return Err(invalid(
                name,
                format!("must use the {} scheme", schemes.join(" or ")),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(name, "must name a host"));
        }
        Ok(Some(url))
    }

    /// A 32-byte key written as 64 hex or 44 base64 characters; the error never repeats the
    /// value.
    fn encryption_key(&self, name: &'static str) -> Result<Option<EncryptionKey>, ConfigError> {
        self.text(name)
            .map(|text| EncryptionKey::parse(text).map_err(|e| invalid(name, e.to_string())))
            .transpose()
    }

    fn secret(
        &self,
        name: &'static str,
        generated_len: usize,
    ) -> Result<(SecretString, Provenance), ConfigError> {
        Ok(match self.text(name) {
            Some(value) => (SecretString::from(value.to_owned()), Provenance::Configured),
            None => (
                SecretString::from(random_token(generated_len)?),
                Provenance::Generated,
            ),
        })
    }
}

/// A random URL-safe token of `bytes` random bytes, hex encoded.
///
/// # Errors
/// The system's random source is unavailable.
pub fn random_token(bytes: usize) -> Result<String, ConfigError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)
        .map_err(|e| invalid("JWT_SECRET", format!("cannot be generated: {e}")))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

impl Settings {
    /// Validates merged raw values (upper-case variable names).
    ///
    /// # Errors
    /// The first invalid value, naming its variable.
    pub fn from_raw(values: &BTreeMap<String, String>) -> Result<Settings, ConfigError> {
        let raw = Raw(values);
        let port: u16 = raw.required("BACKEND_PORT", "a port number between 0 and 65535")?;
        let log_level = raw.text("LOG_LEVEL").unwrap_or("info").to_owned();
        tracing_subscriber::EnvFilter::try_new(&log_level).map_err(|_| {
            invalid(
                "LOG_LEVEL",
                format!("must be a level like info or debug, got {log_level:?}"),
            )
        })?;
        let log_json = match raw
            .text("LOG_FORMAT")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(invalid(
                    "LOG_FORMAT",
                    format!("must be text or json, got {other:?}"),
                ));
            }
        };
        let workers = raw.parse::<usize>("WORKERS", "a positive number of threads")?;
        if workers == Some(0) {
            return Err(invalid(
                "WORKERS",
                "must be a positive number of threads, got 0",
            ));
        }
        let (admin_password, admin_password_provenance) = raw.secret("ADMIN_PASSWORD", 12)?;
        let (jwt_secret, _) = raw.secret("JWT_SECRET", 32)?;
        if jwt_secret.expose_secret().len() < 16 {
            return Err(invalid("JWT_SECRET", "must be at least 16 characters long"));
        }
        let jwt_minutes: u64 =
            raw.required("JWT_EXPIRE_MINUTES", "a positive number of minutes")?;
        if jwt_minutes == 0 {
            return Err(invalid(
                "JWT_EXPIRE_MINUTES",
                "must be a positive number of minutes, got 0",
            ));
        }
        let (proxy_keys, proxy_keys_provenance) = match raw.text("GLOBAL_PROXY_KEYS") {
            Some(list) => {
                let keys: Vec<SecretString> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| SecretString::from(k.to_owned()))
                    .collect();
                if keys.is_empty() {
                    return Err(invalid("GLOBAL_PROXY_KEYS", "must list at least one key"));
                }
                (keys, Provenance::Configured)
            }
            None => (
                vec![SecretString::from(format!("akr-{}", random_token(24)?))],
                Provenance::Generated,
            ),
        };
        let total = raw.limit("PROXY_TOTAL_TIMEOUT")?;
        let max_body_bytes: usize = raw.required("MAX_BODY_BYTES", "a number of bytes")?;
        if max_body_bytes < 1024 {
            return Err(invalid("MAX_BODY_BYTES", "must be at least 1024 bytes"));
        }
        let body_buffer_budget_bytes: usize =
            raw.required("BODY_BUFFER_BUDGET_BYTES", "a number of bytes")?;
        if body_buffer_budget_bytes < max_body_bytes {
            return Err(invalid(
                "BODY_BUFFER_BUDGET_BYTES",
                format!("must be at least MAX_BODY_BYTES ({max_body_bytes})"),
            ));
        }
        let metrics_per_key_limit: usize =
            raw.required("METRICS_PER_KEY_LIMIT", "a whole number of keys")?;
        if metrics_per_key_limit > domain::key_page::MAX_PAGE_LIMIT {
            return Err(invalid(
                "METRICS_PER_KEY_LIMIT",
                format!(
                    "must be at most {} keys per config (0 turns per-key series off)",
                    domain::key_page::MAX_PAGE_LIMIT
                ),
            ));
        }
        let public_base = raw.url("PROXY_PUBLIC_BASE_URL", &["http", "https"])?;
        let proxy_public_base_url = match public_base {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://localhost:{port}"),
        };
        Ok(Settings {
            host: raw.text("BACKEND_HOST").unwrap_or("0.0.0.0").to_owned(),
            port,
            log_level,
            log_json,
            workers,
            admin_username: raw.text("ADMIN_USERNAME").unwrap_or("admin").to_owned(),
            admin_password,
            admin_password_provenance,
            jwt_secret,
            jwt_ttl: Duration::from_secs(jwt_minutes * 60),
            proxy_keys,
            proxy_keys_provenance,
            proxy_timeout: raw.limit("PROXY_TIMEOUT")?,
            llm_response_timeout: raw.limit("LLM_RESPONSE_TIMEOUT")?,
            connect_timeout: raw.seconds("PROXY_CONNECT_TIMEOUT", false)?,
            total_timeout: total,
            stream_idle_timeout: raw.seconds("STREAM_IDLE_TIMEOUT", false)?,
            max_retries: raw.required("PROXY_MAX_RETRIES", "a whole number of retries")?,
            key_cooldown: raw.seconds("KEY_COOLDOWN_SECONDS", false)?,
            key_recovery_interval: raw.seconds("KEY_RECOVERY_INTERVAL_SECONDS", false)?,
            usage_flush_interval: raw.seconds("USAGE_FLUSH_SECONDS", false)?,
            request_log_retention_days: raw.positive("REQUEST_LOG_RETENTION_DAYS", "days")?,
            request_log_max_rows: raw.required(
                "REQUEST_LOG_MAX_ROWS",
                "a whole number of records (0 turns the request log off)",
            )?,
            request_log_queue_size: raw.positive("REQUEST_LOG_QUEUE_SIZE", "records")?,
            max_body_bytes,
            client_body_timeout: raw.seconds("CLIENT_BODY_TIMEOUT", false)?,
            upstream_idle_timeout: raw.seconds("UPSTREAM_IDLE_SECONDS", false)?,
            upstream_max_connections_per_host: raw
                .positive("UPSTREAM_MAX_CONNECTIONS_PER_HOST", "connections")?,
            body_buffer_budget_bytes,
            metrics_token: raw
                .text("METRICS_TOKEN")
                .map(|token| SecretString::from(token.to_owned())),
            metrics_per_key_limit,
            proxy_public_base_url,
            storage: storage_backend(&raw)?,
            cache: cache_backend(&raw)?,
            reset_db_tables: raw.flag("RESET_DB_TABLES")?,
            encryption_key: raw.encryption_key("ENCRYPTION_KEY")?,
            new_encryption_key: raw.encryption_key("NEW_ENCRYPTION_KEY")?,
            cors: CorsPolicy {
                proxy: raw.origins("CORS_ALLOWED_ORIGINS")?,
                admin: raw.origins("CORS_ADMIN_ALLOWED_ORIGINS")?,
            },
        })
    }
}

/// The variables whose presence selects MySQL when `DB_TYPE` is unset, as in the original
/// backend.
const MYSQL_SELECTORS: [&str; 4] = ["DB_HOST", "DB_USER", "MYSQL_HOST", "MYSQL_DB_HOST"];

/// The kinds of database `DB_TYPE` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbType {
    Sqlite,
    Mysql,
    Postgres,
}

impl DbType {
    /// The kind a parsed `DATABASE_URL` names, by its scheme.
    fn of_url(url: &url::Url) -> Self {
        match url.scheme() {
            "sqlite" => DbType::Sqlite,
            "postgres" | "postgresql" => DbType::Postgres,
            _ => DbType::Mysql,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DbType::Sqlite => "SQLite",
            DbType::Mysql => "MySQL",
            DbType::Postgres => "PostgreSQL",
        }
    }
}

/// `DB_TYPE` when set; otherwise the kind of a MySQL or PostgreSQL `DATABASE_URL` (a Go DSN is
/// MySQL), else MySQL when one of [`MYSQL_SELECTORS`] is set, as in the original backend; else
/// SQLite.
fn storage_backend(raw: &Raw<'_>) -> Result<StorageBackend, ConfigError> {
    let explicit = match raw.text("DB_TYPE").map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("sqlite") => Some(DbType::Sqlite),
        Some("mysql" | "mariadb") => Some(DbType::Mysql),
        Some("postgres" | "postgresql") => Some(DbType::Postgres),
        Some(other) => {
            return Err(invalid(
                "DB_TYPE",
                format!("must be sqlite, mysql or postgres, got {other:?}"),
            ));
        }
    };
    let database_url = match raw.text("DATABASE_URL") {
        None => None,
        Some(text) => Some(parse_database_url(text)?),
    };
    let url_kind = database_url.as_ref().map(DbType::of_url);
    let selected = MYSQL_SELECTORS.iter().any(|name| raw.text(name).is_some());
    let kind = explicit
        .or(url_kind.filter(|kind| *kind != DbType::Sqlite))
        .unwrap_or(if selected {
            DbType::Mysql
        } else {
            DbType::Sqlite
        });
    // A network URL of the other engine is a mistake, not something to ignore.
    if let (Some(url_kind), Some(explicit)) = (url_kind, explicit)
        && url_kind != explicit
        && url_kind != DbType::Sqlite
        && explicit != DbType::Sqlite
    {
        return Err(invalid(
            "DATABASE_URL",
            format!(
                "is a {} URL but DB_TYPE is {}; make them agree",
                url_kind.name(),
                explicit.name()
            ),
        ));
    }
    if kind == DbType::Sqlite {
        let path = match &database_url {
            Some(url) if url.scheme() == "sqlite" => PathBuf::from(url.path()),
            _ => PathBuf::from(
                raw.text("DATABASE_PATH")
                    .unwrap_or("./data/api_key_rotator.db"),
            ),
        };
        return Ok(StorageBackend::Sqlite { path });
    }
    let url = match database_url.filter(|u| DbType::of_url(u) == kind) {
        Some(url) => url,
        None => url_from_parts(raw, kind)?,
    };
    let url = SecretUrl(url.to_string());
    Ok(match kind {
        DbType::Postgres => StorageBackend::Postgres { url },
        _ => StorageBackend::Mysql { url },
    })
}

/// The URL of a MySQL or PostgreSQL database from `DB_HOST` (or the original's `MYSQL_HOST`,
/// `MYSQL_DB_HOST`), `DB_PORT`, `DB_USER`, `DB_PASSWORD` and `DB_NAME`, with each engine's
/// usual port and administrative user as defaults.
fn url_from_parts(raw: &Raw<'_>, kind: DbType) -> Result<url::Url, ConfigError> {
    let (scheme, default_port, default_user) = match kind {
        DbType::Postgres => ("postgres", 5432, "postgres"),
        _ => ("mysql", 3306, "root"),
    };
    let host = ["DB_HOST", "MYSQL_HOST", "MYSQL_DB_HOST"]
        .iter()
        .find_map(|name| raw.text(name))
        .unwrap_or("127.0.0.1");
    let port: u16 = raw
        .parse("DB_PORT", "a port number")?
        .unwrap_or(default_port);
    let mut url = url::Url::parse(&format!("{scheme}://{host}:{port}/"))
        .map_err(|_| invalid("DB_HOST", format!("must be a host name, got {host:?}")))?;
    let _ = url.set_username(raw.text("DB_USER").unwrap_or(default_user));
    let _ = url.set_password(raw.text("DB_PASSWORD"));
    url.set_path(raw.text("DB_NAME").unwrap_or("api_key_rotator"));
    Ok(url)
}

/// A `DATABASE_URL`: a `mysql://`, `mariadb://`, `postgres://`, `postgresql://` or `sqlite://`
/// URL, or the original backend's
/// Go-style DSN (`user:pass@tcp(host:port)/db?charset=utf8mb4&parseTime=True&loc=Local`, with or
/// without a `mysql://` in front), which becomes the equivalent `mysql://` URL.
pub(crate) fn parse_database_url(text: &str) -> Result<url::Url, ConfigError> {
    if let Some(dsn) = GoDsn::parse(text) {
        return dsn.into_url().map_err(|why| invalid("DATABASE_URL", why));
    }
    let url = url::Url::parse(text).map_err(|_| {
        invalid(
            "DATABASE_URL",
            "must be a URL like mysql://user:password@host:3306/database or \
             postgres://user:password@host:5432/database, or a Go DSN like \
             user:password@tcp(host:3306)/database, got a malformed value",
        )
    })?;
    if !matches!(
        url.scheme(),
        "mysql" | "mariadb" | "postgres" | "postgresql" | "sqlite"
    ) {
        return Err(invalid(
            "DATABASE_URL",
            "must use the mysql, mariadb, postgres, postgresql or sqlite scheme",
        ));
    }
    if url.scheme() != "sqlite" && url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("DATABASE_URL", "must name a host"));
    }
    Ok(url)
}

/// The parts of a Go MySQL driver DSN, `[user[:password]@][tcp[(host[:port])]]/database[?params]`.
/// Its parameters (`charset`, `parseTime`, `loc`, ...) are Go driver settings that this server
/// fixes itself (utf8mb4, UTC timestamps), so they are dropped.
#[derive(Debug, PartialEq, Eq)]
struct GoDsn<'a> {
    user: &'a str,
    password: Option<&'a str>,
    address: &'a str,
    database: &'a str,
}

impl<'a> GoDsn<'a> {
    /// The DSN's parts, `None` when `text` is not in the Go form (it is then read as a URL).
    fn parse(text: &'a str) -> Option<Self> {
        let text = text.strip_prefix("mysql://").unwrap_or(text);
        if text.contains("://") {
            // Another scheme (postgres://...): a URL, never a Go DSN.
            return None;
        }
        // The password may contain '@': the Go driver splits at the last one.
        let (credentials, rest) = text.rsplit_once('@')?;
        let (address, path) = if let Some(rest) = rest.strip_prefix("tcp(") {
            let (address, path) = rest.split_once(')')?;
            (address, path)
        } else if rest.starts_with('/') {
            ("", rest)
        } else {
            return None;
        };
        let database = path.strip_prefix('/')?;
        let database = database.split_once('?').map_or(database, |(db, _)| db);
        let (user, password) = match credentials.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (credentials, None),
        };
        Some(GoDsn {
            user,
            password,
            address,
            database,
        })
    }

    fn into_url(self) -> Result<url::Url, &'static str> {
        let address = if self.address.is_empty() {
            "127.0.0.1:3306"
        } else {
            self.address
        };
        let with_port = if address
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            address.to_owned()
        } else {
            format!("{address}:3306")
        };
        let mut url = url::Url::parse(&format!("mysql://{with_port}/"))
            .map_err(|_| "holds a Go DSN whose tcp(host:port) address is malformed")?;
        if self.database.is_empty() {
            return Err("holds a Go DSN without a database name after the '/'");
        }
        url.set_username(self.user)
            .and_then(|()| url.set_password(self.password))
            .map_err(|()| "holds a Go DSN whose user or password cannot be used")?;
        url.set_path(self.database);
        Ok(url)
    }
}

/// `CACHE_TYPE` when set; otherwise Redis when `REDIS_URL`, `REDIS_HOST` or `REDIS_PORT` is
/// set, as in the original backend; otherwise in-process.
fn cache_backend(raw: &Raw<'_>) -> Result<CacheBackend, ConfigError> {
    let explicit = match raw
        .text("CACHE_TYPE")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => None,
        Some("memory") => Some(false),
        Some("redis") => Some(true),
        Some(other) => {
            return Err(invalid(
                "CACHE_TYPE",
                format!("must be memory or redis, got {other:?}"),
            ));
        }
    };
    let redis_url = raw.url("REDIS_URL", REDIS_SCHEMES)?;
    // Checked in every edition, so a typo is caught before the setting starts to matter.
    let rotation_block_size: u32 = raw.required(
        "ROTATION_BLOCK_SIZE",
        "a whole number of counter values per Redis round trip",
    )?;
    if !(1..=MAX_ROTATION_BLOCK_SIZE).contains(&rotation_block_size) {
        return Err(invalid(
            "ROTATION_BLOCK_SIZE",
            format!(
                "must be between 1 (exact fairness) and {MAX_ROTATION_BLOCK_SIZE}, got {rotation_block_size}"
            ),
        ));
    }
    let use_redis = explicit.unwrap_or(
        redis_url.is_some() || raw.text("REDIS_HOST").is_some() || raw.text("REDIS_PORT").is_some(),
    );
    if !use_redis {
        return Ok(CacheBackend::Memory);
    }
    let url = match redis_url {
        Some(url) => url,
        None => {
            let host = raw.text("REDIS_HOST").unwrap_or("127.0.0.1");
            let port: u16 = raw.parse("REDIS_PORT", "a port number")?.unwrap_or(6379);
            let db: u32 = raw.required("REDIS_DB", "a database number")?;
            let mut url = url::Url::parse(&format!("redis://{host}:{port}/{db}"))
                .map_err(|_| invalid("REDIS_HOST", format!("must be a host name, got {host:?}")))?;
            let _ = url.set_password(raw.text("REDIS_PASSWORD"));
            url
        }
    };
    let namespace = raw.text("REDIS_NAMESPACE").unwrap_or("akr").to_owned();
    if namespace.contains(['{', '}']) {
        return Err(invalid(
            "REDIS_NAMESPACE",
            "must not contain braces: the namespace becomes the hash tag of every key",
        ));
    }
    let tls_ca_cert_file = raw.text("REDIS_TLS_CA_CERT_FILE").map(PathBuf::from);
    if tls_ca_cert_file.is_some() && !url.scheme().starts_with("rediss") {
        return Err(invalid(
            "REDIS_TLS_CA_CERT_FILE",
            "is set but REDIS_URL does not use TLS: use a rediss:// (or rediss-cluster://, \
             rediss-sentinel://) URL",
        ));
    }
    Ok(CacheBackend::Redis {
        url: SecretUrl(url.to_string()),
        tls_ca_cert_file,
        namespace,
        rotation_block_size,
    })
}

/// The schemes of `REDIS_URL`: the client's forms for standalone, Cluster and Sentinel, each
/// with TLS (`rediss…`) or without.
const REDIS_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]
    use figment::Jail;

    use super::*;

    fn clear_env(jail: &mut Jail) {
        jail.clear_env();
    }

    #[test]
    fn defaults_give_a_working_lightweight_server_with_generated_secrets() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            let settings = load().unwrap();
            assert_eq!(settings.port, 8000);
            assert_eq!(
                settings.storage,
                StorageBackend::Sqlite {
                    path: "./data/api_key_rotator.db".into()
                }
            );
            assert_eq!(settings.cache, CacheBackend::Memory);
            assert_eq!(settings.admin_password_provenance, Provenance::Generated);
            assert_eq!(settings.proxy_keys_provenance, Provenance::Generated);
            assert!(settings.admin_password.expose_secret().len() >= 16);
            assert_eq!(settings.proxy_timeout, Some(Duration::from_secs(30)));
            assert_eq!(
                settings.llm_response_timeout,
                Some(Duration::from_secs(600))
            );
            assert_eq!(settings.max_retries, 2);
            assert_eq!(settings.key_cooldown, Duration::from_secs(60));
            assert_eq!(settings.proxy_public_base_url, "http://localhost:8000");
            assert_eq!(settings.cors, CorsPolicy::default());
            Ok(())
        });
    }

    #[test]
    fn a_zero_response_timeout_means_no_limit() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("PROXY_TIMEOUT", "0");
            jail.set_env("LLM_RESPONSE_TIMEOUT", "0");
            let settings = load().unwrap();
            assert_eq!(settings.proxy_timeout, None);
            assert_eq!(settings.llm_response_timeout, None);
            Ok(())
        });
    }

    #[test]
    fn environment_beats_dotenv_which_beats_the_config_file() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.create_file(
                "config.toml",
                "BACKEND_PORT = 7000\nproxy_max_retries = 5\nLOG_LEVEL = \"warn\"",
            )?;
            jail.create_file(".env", "BACKEND_PORT=7100\nLOG_LEVEL=debug\n")?;
            jail.set_env("BACKEND_PORT", "7200");
            let settings = load().unwrap();
            assert_eq!(settings.port, 7200);
            assert_eq!(settings.log_level, "debug");
            assert_eq!(settings.max_retries, 5);
            Ok(())
        });
    }

    #[test]
    fn secrets_keep_their_exact_text() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("GLOBAL_PROXY_KEYS", "0012, key-b ,,");
            jail.set_env("ADMIN_PASSWORD", "007");
            let settings = load().unwrap();
            let keys: Vec<&str> = settings
                .proxy_keys
                .iter()
                .map(|k| k.expose_secret())
                .collect();
            assert_eq!(keys, ["0012", "key-b"]);
            assert_eq!(settings.admin_password.expose_secret(), "007");
            assert_eq!(settings.proxy_keys_provenance, Provenance::Configured);
            Ok(())
        });
    }

    #[test]
    fn every_invalid_value_names_its_variable() {
        let cases = [
            ("BACKEND_PORT", "eighty"),
            ("BACKEND_PORT", "70000"),
            ("DB_TYPE", "oracle"),
            ("CACHE_TYPE", "memcached"),
            ("REDIS_URL", "not a url"),
            ("DATABASE_URL", "oracle://x/y"),
            ("PROXY_TIMEOUT", "soon"),
            ("LLM_RESPONSE_TIMEOUT", "-1"),
            ("MAX_BODY_BYTES", "-1"),
            ("CLIENT_BODY_TIMEOUT", "0"),
            ("UPSTREAM_IDLE_SECONDS", "0"),
            ("METRICS_PER_KEY_LIMIT", "1001"),
            ("METRICS_PER_KEY_LIMIT", "all"),
            ("BODY_BUFFER_BUDGET_BYTES", "1024"),
            ("RESET_DB_TABLES", "maybe"),
            ("LOG_FORMAT", "xml"),
            ("PROXY_PUBLIC_BASE_URL", "ftp://x"),
            ("ROTATION_BLOCK_SIZE", "0"),
            ("ROTATION_BLOCK_SIZE", "10001"),
            ("ROTATION_BLOCK_SIZE", "many"),
            ("ENCRYPTION_KEY", "secret"),
            ("NEW_ENCRYPTION_KEY", "00"),
            ("CORS_ALLOWED_ORIGINS", "chat.example.com"),
            ("CORS_ADMIN_ALLOWED_ORIGINS", "https://x.example/path"),
        ];
        for (variable, value) in cases {
            Jail::expect_with(|jail| {
                clear_env(jail);
                jail.set_env(variable, value);
                let err = load().unwrap_err();
                assert_eq!(err.variable, variable, "{value:?}: {err}");
                assert!(err.to_string().contains(variable));
                Ok(())
            });
        }
    }

    #[test]
    fn encryption_keys_are_32_random_bytes_and_never_echoed() {
        let hex = "3f1c9a7be2d4056817ac93e0b5f24d6e81a7c3b9d0e5f2a4c6b8d1e3f5a7c9e2";
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("ENCRYPTION_KEY", hex);
            let settings = load().unwrap();
            assert!(settings.encryption_key.is_some());
            assert!(settings.new_encryption_key.is_none());
            assert!(
                !format!("{settings:?}").contains(&hex[..8]),
                "Debug hides it"
            );
            Ok(())
        });
        for (value, why) in [
            (&hex[..40], "openssl rand -hex 32"),
            ("correct horse battery staple", "openssl rand -hex 32"),
            (&"ab".repeat(32), "too weak"),
        ] {
            Jail::expect_with(|jail| {
                clear_env(jail);
                jail.set_env("ENCRYPTION_KEY", value);
                let err = load().unwrap_err();
                assert_eq!(err.variable, "ENCRYPTION_KEY");
                let message = err.to_string();
                assert!(message.contains(why), "{message}");
                assert!(!message.contains(value), "{message}");
                Ok(())
            });
        }
    }

    #[test]
    fn postgres_is_chosen_by_its_url_or_by_db_type_with_its_own_defaults() {
        for url in [
            "postgres://akr:pw@pg.internal:5433/akr?sslmode=require",
            "postgresql://akr:pw@pg.internal:5433/akr?sslmode=require",
        ] {
            Jail::expect_with(|jail| {
                clear_env(jail);
                jail.set_env("DATABASE_URL", url);
                // The original's MySQL selectors do not override an explicit URL.
                jail.set_env("DB_HOST", "mysql.internal");
                let StorageBackend::Postgres { url: chosen } = load().unwrap().storage else {
                    panic!("{url} selects PostgreSQL")
                };
                assert_eq!(chosen.expose(), url);
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("DB_TYPE", "Postgres");
            jail.set_env("DB_HOST", "pg.internal");
            jail.set_env("DB_PASSWORD", "s3cret");
            let StorageBackend::Postgres { url } = load().unwrap().storage else {
                panic!("DB_TYPE=postgres selects PostgreSQL")
            };
            assert_eq!(
                url.expose(),
                "postgres://postgres:s3cret@pg.internal:5432/api_key_rotator"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("DB_TYPE", "postgresql");
            let StorageBackend::Postgres { url } = load().unwrap().storage else {
                panic!("DB_TYPE=postgresql selects PostgreSQL")
            };
            assert_eq!(
                url.expose(),
                "postgres://postgres@127.0.0.1:5432/api_key_rotator"
            );
            Ok(())
        });
    }

    #[test]
    fn a_url_of_one_engine_and_a_db_type_of_another_are_refused() {
        for (db_type, url) in [
            ("postgres", "mysql://root@db:3306/akr"),
            ("mysql", "postgres://postgres@db/akr"),
        ] {
            Jail::expect_with(|jail| {
                clear_env(jail);
                jail.set_env("DB_TYPE", db_type);
                jail.set_env("DATABASE_URL", url);
                let err = load().unwrap_err();
                assert_eq!(err.variable, "DATABASE_URL");
                assert!(err.to_string().contains("make them agree"), "{err}");
                Ok(())
            });
        }
    }

    #[test]
    fn mysql_and_redis_are_chosen_automatically_like_the_original() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("DB_HOST", "db.internal");
            jail.set_env("DB_PASSWORD", "s3cret");
            jail.set_env("REDIS_HOST", "cache.internal");
            let settings = load().unwrap();
            let StorageBackend::Mysql { url } = &settings.storage else {
                panic!("expected mysql")
            };
            assert_eq!(
                url.expose(),
                "mysql://root:s3cret@db.internal:3306/api_key_rotator"
            );
            assert!(
                !format!("{url:?}").contains("s3cret"),
                "Debug hides the password"
            );
            let CacheBackend::Redis {
                url,
                namespace,
                rotation_block_size,
                ..
            } = &settings.cache
            else {
                panic!("expected redis")
            };
            assert_eq!(url.expose(), "redis://cache.internal:6379/0");
            assert_eq!(namespace, "akr");
            assert_eq!(*rotation_block_size, 1, "exact fairness unless asked");
            Ok(())
        });
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("REDIS_URL", "redis://cache.internal:6379/0");
            jail.set_env("ROTATION_BLOCK_SIZE", "32");
            let settings = load().unwrap();
            assert!(matches!(
                settings.cache,
                CacheBackend::Redis {
                    rotation_block_size: 32,
                    ..
                }
            ));
            Ok(())
        });
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("DATABASE_URL", "mysql://u:p@h:3307/d");
            jail.set_env("DB_TYPE", "sqlite");
            jail.set_env("DATABASE_PATH", "/tmp/x.db");
            let settings = load().unwrap();
            assert_eq!(
                settings.storage,
                StorageBackend::Sqlite {
                    path: "/tmp/x.db".into()
                },
                "DB_TYPE wins"
            );
            Ok(())
        });
    }

    #[test]
    fn the_originals_go_dsn_selects_mysql_in_its_full_form() {
        for dsn in [
            "appdb:p@ss:w0rd@tcp(db.internal:3307)/rotator?charset=utf8mb4&parseTime=True&loc=Local",
            "mysql://appdb:p@ss:w0rd@tcp(db.internal:3307)/rotator?charset=utf8mb4&parseTime=True&loc=Local",
        ] {
            Jail::expect_with(|jail| {
                clear_env(jail);
                jail.set_env("DATABASE_URL", dsn);
                let settings = load().unwrap();
                let StorageBackend::Mysql { url } = &settings.storage else {
                    panic!("expected mysql for {dsn}")
                };
                assert_eq!(
                    url.expose(),
                    "mysql://appdb:p%40ss%3Aw0rd@db.internal:3307/rotator"
                );
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("DATABASE_URL", "root@tcp(localhost)/akr?parseTime=True");
            let StorageBackend::Mysql { url } = load().unwrap().storage else {
                panic!("expected mysql")
            };
            assert_eq!(url.expose(), "mysql://root@localhost:3306/akr");
            Ok(())
        });
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("DATABASE_URL", "root@tcp(localhost:3306)/");
            assert_eq!(load().unwrap_err().variable, "DATABASE_URL");
            Ok(())
        });
    }

    #[test]
    fn redis_cluster_sentinel_and_tls_urls_are_taken_as_written() {
        for url in [
            "redis-cluster://app:pw@10.0.0.1:7000?node=10.0.0.2:7000&node=10.0.0.3:7000",
            "rediss-cluster://app:pw@cache.internal:7000",
            "redis-sentinel://app:pw@s1.internal:26379/0?sentinelServiceName=main&node=s2.internal:26379",
            "rediss://app:pw@cache.internal:6380/0",
        ] {
            Jail::expect_with(|jail| {
                clear_env(jail);
                jail.set_env("REDIS_URL", url);
                let CacheBackend::Redis {
                    url: parsed,
                    tls_ca_cert_file,
                    ..
                } = load().unwrap().cache
                else {
                    panic!("{url} selects redis")
                };
                assert_eq!(parsed.expose(), url);
                assert_eq!(tls_ca_cert_file, None);
                Ok(())
            });
        }
    }

    #[test]
    fn a_redis_ca_file_needs_a_tls_url() {
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env(
                "REDIS_URL",
                "rediss-sentinel://s1:26379/0?sentinelServiceName=m",
            );
            jail.set_env("REDIS_TLS_CA_CERT_FILE", "/etc/akr/redis-ca.pem");
            let CacheBackend::Redis {
                tls_ca_cert_file, ..
            } = load().unwrap().cache
            else {
                panic!("expected redis")
            };
            assert_eq!(tls_ca_cert_file, Some("/etc/akr/redis-ca.pem".into()));
            jail.set_env("REDIS_URL", "redis://cache:6379/0");
            assert_eq!(load().unwrap_err().variable, "REDIS_TLS_CA_CERT_FILE");
            Ok(())
        });
    }

    #[test]
    fn sentinel_passwords_are_hidden_too() {
        let url = SecretUrl(
            "redis-sentinel://app:pw1@s1:26379/0?sentinelServiceName=m&sentinelPassword=pw2"
                .to_owned(),
        );
        let shown = format!("{url:?}");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
        assert!(shown.contains("sentinelServiceName=m"), "{shown}");
    }

    #[test]
    fn any_variable_the_original_checked_selects_mysql_or_redis() {
        for (variable, value, host) in [
            ("DB_USER", "appdb", "127.0.0.1"),
            ("MYSQL_HOST", "mysql.internal", "mysql.internal"),
            ("MYSQL_DB_HOST", "db2.internal", "db2.internal"),
        ] {
            Jail::expect_with(|jail| {
                clear_env(jail);
                jail.set_env(variable, value);
                let StorageBackend::Mysql { url } = load().unwrap().storage else {
                    panic!("{variable} alone selects mysql")
                };
                let parsed = url::Url::parse(url.expose()).unwrap();
                assert_eq!(parsed.host_str(), Some(host), "{variable}");
                assert_eq!(parsed.port(), Some(3306));
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            clear_env(jail);
            jail.set_env("REDIS_PORT", "6380");
            let CacheBackend::Redis { url, .. } = load().unwrap().cache else {
                panic!("REDIS_PORT alone selects redis")
            };
            assert_eq!(url.expose(), "redis://127.0.0.1:6380/0");
            Ok(())
        });
        Jail::expect_with(|jail| {
            clear_env(jail);
            let settings = load().unwrap();
            assert!(matches!(settings.storage, StorageBackend::Sqlite { .. }));
            assert_eq!(settings.cache, CacheBackend::Memory);
            Ok(())
        });
    }
}
