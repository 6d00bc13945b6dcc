//! Every crossing between the database and the domain, in one place: rows into validated
//! domain types (a row that fails is corrupt data, reported as `Error::Internal`), domain values
//! into column values, the key fingerprint, and database errors into `domain::Error`.
//!
//! Error messages built here never carry driver text, SQL or stored values: only categories, our
//! own sentences and, for unexpected database errors, the numeric error code.

use chrono::{DateTime, SubsecRound, Utc};
use domain::{
    ApiFormat, ApiKey, ApiKeyId, ConfigKind, ConfigName, ConfigType, Entity, Error, GenericTarget,
    HttpMethod, HttpUrl, KeyHealth, KeyLocation, KeyPlacement, KeySecret, KeyUsage, LlmTarget,
    OutputFormat, ProxyConfig, ProxyConfigId, ProxyConfigSpec, Slug,
    failover::{ConfigPolicy, RetryClass, RetryOn},
};
use domain::{ClientKeyId, LoggedRequest, RequestRecord, RequestRecordId};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnAcquireErr, DbBackend, DbErr, RuntimeErr, SqlErr, Value,
};
use sha2::{Digest, Sha256};

use crate::{
    cipher::{CipherError, KeyCipher, StoredForm, stored_form},
    entity::{api_key, proxy_config, request_log},
};

/// The two columns a key value is stored as: `key_value` (encrypted when a cipher is
/// configured) and `key_hash` (its fingerprint, unique per config).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// What `api_keys.key_value` holds: the plain value, or `v1:<key id>:<ciphertext>`.
    pub key_value: String,
    /// What `api_keys.key_hash` holds: lower-case hex, 64 characters.
    pub key_hash: String,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("key_hash", &self.key_hash)
            .finish_non_exhaustive()
    }
}

/// The one place a key value becomes its stored columns, for every writer of `api_keys` (the
/// repository, the encryption commands, importers).
///
/// With a cipher, the value is AES-256-GCM encrypted under a fresh nonce and the hash is the
/// cipher's HMAC-SHA256 fingerprint; without one, the value is stored as it is and the hash is
/// its plain SHA-256. Duplicate detection compares only hashes, so it works either way, and a
/// store must hold its keys in one mode at a time (the server refuses a mixed store).
///
/// # Errors
/// [`Error::Internal`] when the operating system gives no random nonce.
pub fn stored_key(value: &KeySecret, cipher: Option<&KeyCipher>) -> Result<StoredKey, Error> {
    stored_columns(value.expose(), cipher).map_err(|_| {
        Error::Internal("a key value could not be encrypted: no random nonce".to_owned())
    })
}

/// [`stored_key`] over a plain value already known to be valid.
pub(crate) fn stored_columns(
    plain: &str,
    cipher: Option<&KeyCipher>,
) -> Result<StoredKey, CipherError> {
    Ok(match cipher {
        Some(cipher) => StoredKey {
            key_value: cipher.encrypt(plain)?,
            key_hash: cipher.fingerprint(plain),
        },
        None => StoredKey {
            key_value: plain.to_owned(),
            key_hash: hex::encode(Sha256::digest(plain.as_bytes())),
        },
    })
}

/// The current time at the precision both backends store (microseconds), so what a write
/// returns equals what a later read gives.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The current time, but never before `previous`: `updated_at` only moves forward, even when
/// the clock steps back.
pub(crate) fn now_not_before(previous: DateTime<Utc>) -> DateTime<Utc> {
    std::cmp::max(now(), previous)
}

/// A timestamp cut to the stored precision.
pub(crate) fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

// ---------------------------------------------------------------------------------------------
// Configs

/// Sets every spec column of a config row.
pub(crate) fn set_config_columns(row: &mut proxy_config::ActiveModel, spec: &ProxyConfigSpec) {
    let placement = spec.kind.key_placement();
    row.name = Set(spec.name.as_str().to_owned());
    row.slug = Set(spec.slug.as_str().to_owned());
    row.config_type = Set(spec.kind.config_type().as_str().to_owned());
    row.is_active = Set(spec.is_active);
    row.api_key_location = Set(placement.map(|p| p.location.as_str().to_owned()));
    row.api_key_name = Set(placement.map(|p| p.name.to_string()));
    set_policy_columns(row, spec.policy);
    row.api_key_prefix = Set(placement.map(|p| p.prefix.to_string()));
    match &spec.kind {
        ConfigKind::Generic(target) => {
            row.method = Set(Some(target.method.as_str().to_owned()));
            row.target_url = Set(Some(target.target_url.as_str().to_owned()));
            row.target_base_url = Set(None);
            row.api_format = Set(None);
            row.output_format = Set(None);
        }
        ConfigKind::Llm(target) => {
            row.method = Set(None);
            row.target_url = Set(None);
            row.target_base_url = Set(Some(target.target_base_url.as_str().to_owned()));
            row.api_format = Set(Some(target.api_format.as_str().to_owned()));
            row.output_format = Set(Some(target.output_format.as_str().to_owned()));
        }
    }
}

/// The failover policy columns; null stands for "the environment's default".
fn set_policy_columns(row: &mut proxy_config::ActiveModel, policy: ConfigPolicy) {
    let number = |value: Option<u32>| value.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    row.max_retries = Set(number(policy.max_retries));
    row.retry_on = Set(policy.retry_on.map(|set| {
        set.classes()
            .map(RetryClass::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }));
    row.response_timeout_seconds = Set(number(policy.response_timeout_seconds));
}

/// Reads the failover policy columns back.
fn policy_from_row(
    row: &proxy_config::Model,
    corrupt: impl Fn(&str, &dyn std::fmt::Display) -> Error,
) -> Result<ConfigPolicy, Error> {
    let number = |field: &str, value: Option<i32>| {
        value
            .map(u32::try_from)
            .transpose()
            .map_err(|e| corrupt(field, &e))
    };
    let retry_on = match row.retry_on.as_deref() {
        None => None,
        Some(names) => {
            let classes = names
                .split(',')
                .filter(|name| !name.is_empty())
                .map(str::parse::<RetryClass>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| corrupt("retry_on", &e))?;
            Some(RetryOn::of(classes))
        }
    };
    Ok(ConfigPolicy {
        max_retries: number("max_retries", row.max_retries)?,
        retry_on,
        response_timeout_seconds: number("response_timeout_seconds", row.response_timeout_seconds)?,
    })
}

/// A new config row; the database assigns the id.
pub(crate) fn new_config_row(
    spec: &ProxyConfigSpec,
    at: DateTime<Utc>,
) -> proxy_config::ActiveModel {
    let mut row = proxy_config::ActiveModel {
        id: NotSet,
        created_at: Set(at),
        updated_at: Set(at),
        ..Default::default()
    };
    set_config_columns(&mut row, spec);
    row
}

/// Reads a config row back into the domain, rejecting anything the domain would not accept.
pub(crate) fn config_from_row(row: proxy_config::Model) -> Result<ProxyConfig, Error> {
    let id = row.id;
    let corrupt = |field: &str, why: &dyn std::fmt::Display| {
        Error::Internal(format!(
            "stored proxy config {id} has an invalid {field}: {why}"
        ))
    };
    let required = |field: &'static str, value: Option<String>| {
        value.ok_or_else(|| corrupt(field, &"is missing"))
    };

    let policy = policy_from_row(&row, corrupt)?;
    let name: ConfigName = row.name.parse().map_err(|e| corrupt("name", &e))?;
    let slug: Slug = row.slug.parse().map_err(|e| corrupt("slug", &e))?;
    let config_type: ConfigType = row
        .config_type
        .parse()
        .map_err(|e| corrupt("config_type", &e))?;
    let placement = match (row.api_key_location, row.api_key_name) {
        (None, None) => None,
        (Some(location), Some(name)) => {
            let location: KeyLocation = location
                .parse()
                .map_err(|e| corrupt("api_key_location", &e))?;
            let placement =
                KeyPlacement::new(location, &name).map_err(|e| corrupt("api_key_name", &e))?;
            // Rows written before the column existed hold NULL: they get the default a new
            // config of the same shape would get.
            let prefix = row.api_key_prefix.unwrap_or_else(|| {
                KeyPlacement::default_prefix(config_type, location, &name).to_owned()
            });
            Some(
                placement
                    .with_prefix(&prefix)
                    .map_err(|e| corrupt("api_key_prefix", &e))?,
            )
        }
        (None, Some(_)) => return Err(corrupt("api_key_location", &"is missing")),
        (Some(_), None) => return Err(corrupt("api_key_name", &"is missing")),
    };
    let kind = match config_type {
        ConfigType::Generic => ConfigKind::Generic(GenericTarget {
            method: required("method", row.method)?
                .parse::<HttpMethod>()
                .map_err(|e| corrupt("method", &e))?,
            target_url: required("target_url", row.target_url)?
                .parse::<HttpUrl>()
                .map_err(|e| corrupt("target_url", &e))?,
            key_placement: placement.ok_or_else(|| corrupt("api_key_location", &"is missing"))?,
        }),
        ConfigType::Llm => ConfigKind::Llm(LlmTarget {
            target_base_url: required("target_base_url", row.target_base_url)?
                .parse::<HttpUrl>()
                .map_err(|e| corrupt("target_base_url", &e))?,
            api_format: required("api_format", row.api_format)?
                .parse::<ApiFormat>()
                .map_err(|e| corrupt("api_format", &e))?,
            output_format: required("output_format", row.output_format)?
                .parse::<OutputFormat>()
                .map_err(|e| corrupt("output_format", &e))?,
            key_placement: placement,
        }),
    };
    Ok(ProxyConfig {
        id: ProxyConfigId(id),
        name,
        slug,
        is_active: row.is_active,
        kind,
        policy,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

// ---------------------------------------------------------------------------------------------
// Keys

/// The `health` and `cooldown_until` columns of a health.
pub(crate) fn health_columns(health: KeyHealth) -> (&'static str, Option<DateTime<Utc>>) {
    (health.as_str(), health.cooldown_until().map(stored_time))
}

/// A new, healthy, unused key row; the database assigns the id.
pub(crate) fn new_key_row(
    config: ProxyConfigId,
    stored: StoredKey,
    is_active: bool,
    at: DateTime<Utc>,
) -> api_key::ActiveModel {
    let (health, cooldown_until) = health_columns(KeyHealth::Ok);
    api_key::ActiveModel {
        id: NotSet,
        proxy_config_id: Set(config.0),
        key_value: Set(stored.key_value),
        key_hash: Set(stored.key_hash),
        is_active: Set(is_active),
        health: Set(health.to_owned()),
        cooldown_until: Set(cooldown_until),
        last_status: Set(None),
        request_count: Set(0),
        failure_count: Set(0),
        last_used_at: Set(None),
        created_at: Set(at),
        updated_at: Set(at),
    }
}

/// Reads a key row back into the domain, decrypting its value with `cipher`, and rejecting
/// anything the domain would not accept.
///
/// A value in the wrong mode (plain text while a cipher is configured, a ciphertext without
/// one or under another key) is refused as corrupt rather than sent upstream as it is.
pub(crate) fn key_from_row(
    row: api_key::Model,
    cipher: Option<&KeyCipher>,
) -> Result<ApiKey, Error> {
    let id = row.id;
    let corrupt = |field: &str, why: &dyn std::fmt::Display| {
        Error::Internal(format!("stored api key {id} has an invalid {field}: {why}"))
    };
    let key_value = match (cipher, stored_form(&row.key_value)) {
        (None, StoredForm::Plain) => KeySecret::parse(&row.key_value),
        (None, StoredForm::Encrypted { .. }) => {
            return Err(corrupt(
                "key_value",
                &"is encrypted but no encryption key is configured",
            ));
        }
        (Some(cipher), _) => {
            let plain = cipher
                .decrypt(&row.key_value)
                .map_err(|e| corrupt("key_value", &e))?;
            KeySecret::parse(&plain)
        }
    }
    .map_err(|e| corrupt("key_value", &e))?;
    let health = match (row.health.as_str(), row.cooldown_until) {
        ("ok", _) => KeyHealth::Ok,
        ("failed", _) => KeyHealth::Failed,
        ("cooling", Some(until)) => KeyHealth::Cooling { until },
        ("cooling", None) => return Err(corrupt("cooldown_until", &"is missing")),
        _ => return Err(corrupt("health", &"must be one of ok, cooling, failed")),
    };
    let count =
        |field: &str, value: i64| u64::try_from(value).map_err(|_| corrupt(field, &"is negative"));
    let usage = KeyUsage {
        request_count: count("request_count", row.request_count)?,
        failure_count: count("failure_count", row.failure_count)?,
        last_status: row
            .last_status
            .map(|status| {
                u16::try_from(status).map_err(|_| corrupt("last_status", &"is out of range"))
            })
            .transpose()?,
        last_used_at: row.last_used_at,
    };
    Ok(ApiKey {
        id: ApiKeyId(id),
        proxy_config_id: ProxyConfigId(row.proxy_config_id),
        key_value,
        is_active: row.is_active,
        health,
        usage,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A counter delta as a column value; deltas past `i64::MAX` cannot occur in practice and are
/// clamped rather than wrapped.
pub(crate) fn counter(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A constraint a failed write ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// A unique index already holds the value.
    Unique,
    /// The referenced row does not exist.
    ForeignKey,
}

/// The constraint behind a failed write, if that is what failed.
///
/// sea-orm tells it for the drivers compiled in; PostgreSQL's own SQLSTATEs (`23505`
/// unique_violation, `23503` foreign_key_violation) are read here too, so the answer does not
/// hang on which driver features the build unified.
pub(crate) fn violation(err: &DbErr) -> Option<Violation> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => return Some(Violation::Unique),
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => return Some(Violation::ForeignKey),
        _ => {}
    }
    match sqlstate(err).as_deref() {
        Some("23505") => Some(Violation::Unique),
        Some("23503") => Some(Violation::ForeignKey),
        _ => None,
    }
}

/// The driver error a statement failed with, if the database answered with one.
fn database_error_of(err: &DbErr) -> Option<&dyn sea_orm::sqlx::error::DatabaseError> {
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(sqlx))
        | DbErr::Exec(RuntimeErr::SqlxError(sqlx))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx)) => match &**sqlx {
            sea_orm::sqlx::Error::Database(db) => Some(db.as_ref()),
            _ => None,
        },
        _ => None,
    }
}

/// The code the database answered a failed statement with: a SQLSTATE on PostgreSQL and
/// MySQL, an extended result code on SQLite.
pub(crate) fn sqlstate(err: &DbErr) -> Option<String> {
    database_error_of(err)?.code().map(|code| code.into_owned())
}

/// The name of the constraint a failed write ran into, when the database reports it
/// (PostgreSQL does; MySQL and SQLite do not).
pub(crate) fn violated_constraint(err: &DbErr) -> Option<&str> {
    database_error_of(err)?.constraint()
}

/// A conflict on a unique field.
pub(crate) fn conflict(entity: Entity, field: &'static str) -> Error {
    Error::Conflict { entity, field }
}

const LOST: &str = "lost the connection to the database; check that it is running and reachable";
const POOL_TIMEOUT: &str =
    "timed out waiting for a free database connection; the database is overloaded or unreachable";
const BUSY: &str = "the database is busy with other writes; retry the request";

/// Maps a database error that no caller-specific rule handled; adapters use it for the errors
/// of opening their connection pool.
///
/// Connection trouble (I/O, TLS, a closed or exhausted pool, a crashed driver worker) and lock
/// contention that outlasted the busy timeout are [`Error::Unavailable`]; anything else is a
/// bug or corrupt data, [`Error::Internal`], with at most the database's numeric error code.
pub fn db_error(backend: DbBackend, err: &DbErr) -> Error {
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout) => Error::database(POOL_TIMEOUT),
        DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed) => {
            Error::database("the database connection pool is closed")
        }
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => {
            runtime_error(backend, runtime, matches!(err, DbErr::Conn(_)))
        }
        DbErr::TryIntoErr { .. } | DbErr::Type(_) | DbErr::Json(_) => {
            Error::Internal("a stored value has an unexpected type".to_owned())
        }
        DbErr::Migration(_) => Error::Internal("the schema migration failed".to_owned()),
        _ => Error::Internal("unexpected database error".to_owned()),
    }
}

fn runtime_error(backend: DbBackend, runtime: &RuntimeErr, connecting: bool) -> Error {
    use sea_orm::sqlx::Error as Sqlx;
    let RuntimeErr::SqlxError(sqlx) = runtime else {
        return if connecting {
            Error::database(LOST)
        } else {
            Error::Internal("unexpected database driver error".to_owned())
        };
    };
    match &**sqlx {
        Sqlx::Io(_) | Sqlx::Protocol(_) | Sqlx::WorkerCrashed => Error::database(LOST),
        Sqlx::Tls(_) => Error::database(
            "could not set up TLS with the database; check its certificate and TLS settings",
        ),
        Sqlx::PoolTimedOut => Error::database(POOL_TIMEOUT),
        Sqlx::PoolClosed => Error::database("the database connection pool is closed"),
        Sqlx::Configuration(_) => {
            Error::database("the database connection settings are invalid; check them")
        }
        Sqlx::Database(db) => database_error(backend, db.as_ref(), connecting),
        Sqlx::RowNotFound => Error::Internal("a row expected to exist was missing".to_owned()),
        Sqlx::TypeNotFound { .. }
        | Sqlx::ColumnIndexOutOfBounds { .. }
        | Sqlx::ColumnNotFound(_)
        | Sqlx::ColumnDecode { .. }
        | Sqlx::Decode(_) => Error::Internal("a stored value could not be decoded".to_owned()),
        Sqlx::Encode(_) => {
            Error::Internal("a value could not be encoded for the database".to_owned())
        }
        _ if connecting => Error::database(LOST),
        _ => Error::Internal("unexpected database driver error".to_owned()),
    }
}

fn database_error(
    backend: DbBackend,
    db: &dyn sea_orm::sqlx::error::DatabaseError,
    connecting: bool,
) -> Error {
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    match backend {
        DbBackend::Sqlite => {
            // Extended result codes carry the primary code in their low byte.
            let primary = code.parse::<i32>().map_or(-1, |c| c & 0xff);
            match primary {
                // SQLITE_BUSY, SQLITE_LOCKED: the busy timeout ran out.
                5 | 6 => Error::database(BUSY),
                // SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
                8 => Error::database("the database file is read-only; check its permissions"),
                10 => Error::database("the database file could not be read or written"),
                13 => Error::database("the disk holding the database is full"),
                14 => Error::database(
                    "the database file cannot be opened; check its path and permissions",
                ),
                // SQLITE_CORRUPT, SQLITE_NOTADB
                11 | 26 => Error::Internal("the database file is corrupt".to_owned()),
                _ => Error::Internal(format!("the database rejected a statement (code {code})")),
            }
        }
        DbBackend::Postgres => postgres_error(&code, connecting),
        _ => {
            // MySQL. SQLSTATE classes: 08 connection exception, 28 invalid authorization,
            // 40 transaction rollback (deadlock, serialization failure).
            let class = code.get(..2).unwrap_or_default();
            if class == "28" {
                Error::database(
                    "the database refused the credentials; check the database user and password",
                )
            } else if class == "08" {
                Error::database(LOST)
            } else if connecting {
                Error::database(
                    "the database server refused the connection; check the database name and the user's privileges",
                )
            } else if class == "40" || db.message().starts_with("Lock wait timeout") {
                Error::database(BUSY)
            } else {
                Error::Internal(format!(
                    "the database rejected a statement (SQLSTATE {code})"
                ))
            }
        }
    }
}

/// A PostgreSQL error by its SQLSTATE (appendix A of the PostgreSQL manual): trouble with the
/// server or the connection, and lock or statement timeouts, are `Unavailable`; anything else
/// is a statement the store should not have sent, `Internal`.
fn postgres_error(code: &str, connecting: bool) -> Error {
    let class = code.get(..2).unwrap_or_default();
    match (class, code) {
        // invalid_authorization_specification, invalid_password
        ("28", _) => Error::database(
            "the database refused the credentials; check the database user and password",
        ),
        // connection_exception
        ("08", _) => Error::database(LOST),
        // admin_shutdown, crash_shutdown, cannot_connect_now (starting up or in recovery)
        (_, "57P01" | "57P02" | "57P03") => Error::database(
            "the database server is shutting down or starting up; retry in a moment",
        ),
        // too_many_connections
        (_, "53300") => Error::database(
            "the database server has no free connection slot; raise its max_connections or lower the instances' pool sizes",
        ),
        // insufficient_resources: disk full, out of memory
        ("53", _) => Error::database("the database server is out of disk space or memory"),
        // read_only_sql_transaction: connected to a hot standby
        (_, "25006") => Error::database(
            "the database is read-only; point the database URL at the primary server",
        ),
        // invalid_catalog_name: the database does not exist
        (_, "3D000") => {
            Error::database("the database does not exist; create it or check the database name")
        }
        _ if connecting => Error::database(
            "the database server refused the connection; check the database name and the user's privileges",
        ),
        // transaction_rollback (serialization failure, deadlock), lock_not_available
        // (lock_timeout), query_canceled (statement_timeout)
        ("40", _) | (_, "55P03" | "57014") => Error::database(BUSY),
        _ => Error::Internal(format!(
            "the database rejected a statement (SQLSTATE {code})"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Request log

/// A request record as the columns of a new `request_logs` row, normalized (texts cut to their
/// bounds, time to the millisecond) and borrowing its texts from the record, so that building a
/// batch's statements copies each text once, into its bound value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogRow<'a> {
    pub created_at: i64,
    pub proxy_config_id: i64,
    pub client_key_id: Option<i64>,
    pub api_key_id: Option<i64>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: i32,
    pub outcome: &'a str,
    pub attempts: i32,
    pub head_latency_ms: i64,
    pub total_latency_ms: i64,
    pub latency_bucket: i16,
    pub streamed: bool,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub error_code: Option<&'a str>,
}

/// `record`'s row, as [`RequestRecord::normalized`] would store it.
pub(crate) fn log_row(record: &RequestRecord) -> LogRow<'_> {
    let texts = record.bounded_texts();
    LogRow {
        created_at: record.created_at.timestamp_millis(),
        proxy_config_id: record.proxy_config_id.0,
        client_key_id: record.client_key_id.map(|id| id.0),
        api_key_id: record.api_key_id.map(|id| id.0),
        method: texts.method,
        path: texts.path,
        status: i32::from(record.status),
        outcome: texts.outcome,
        attempts: i32::try_from(record.attempts).unwrap_or(i32::MAX),
        head_latency_ms: counter(record.head_latency_ms),
        total_latency_ms: counter(record.total_latency_ms),
        latency_bucket: i16::try_from(domain::request_log::latency_bucket(record.total_latency_ms))
            .unwrap_or(i16::MAX),
        streamed: record.streamed,
        bytes_in: counter(record.bytes_in),
        bytes_out: counter(record.bytes_out),
        tokens_in: record.tokens_in.map(counter),
        tokens_out: record.tokens_out.map(counter),
        error_code: texts.error_code,
    }
}

impl LogRow<'_> {
    /// The row's values in [`crate::request_log::INSERT_COLUMNS`] order.
    pub(crate) fn push_values(&self, values: &mut Vec<Value>) {
        let text = |text: &str| Value::String(Some(text.to_owned()));
        values.extend([
            Value::BigInt(Some(self.created_at)),
            Value::BigInt(Some(self.proxy_config_id)),
            Value::BigInt(self.client_key_id),
            Value::BigInt(self.api_key_id),
            text(self.method),
            text(self.path),
            Value::Int(Some(self.status)),
            text(self.outcome),
            Value::Int(Some(self.attempts)),
            Value::BigInt(Some(self.head_latency_ms)),
            Value::BigInt(Some(self.total_latency_ms)),
            Value::SmallInt(Some(self.latency_bucket)),
            Value::Bool(Some(self.streamed)),
            Value::BigInt(Some(self.bytes_in)),
            Value::BigInt(Some(self.bytes_out)),
            Value::BigInt(self.tokens_in),
            Value::BigInt(self.tokens_out),
            Value::String(self.error_code.map(str::to_owned)),
        ]);
    }
}

/// A `request_logs` row as the domain's record; a row no writer of this store produces (a
/// negative count, a status out of range) is `Error::Internal`.
pub(crate) fn request_from_row(row: request_log::Model) -> Result<LoggedRequest, Error> {
    let corrupt = || Error::Internal(format!("stored request log record {} is corrupt", row.id));
    let unsigned = |value: i64| u64::try_from(value).map_err(|_| corrupt());
    let record = RequestRecord {
        created_at: DateTime::from_timestamp_millis(row.created_at).ok_or_else(corrupt)?,
        proxy_config_id: ProxyConfigId(row.proxy_config_id),
        client_key_id: row.client_key_id.map(ClientKeyId),
        api_key_id: row.api_key_id.map(ApiKeyId),
        status: u16::try_from(row.status).map_err(|_| corrupt())?,
        attempts: u32::try_from(row.attempts).map_err(|_| corrupt())?,
        head_latency_ms: unsigned(row.head_latency_ms)?,
        total_latency_ms: unsigned(row.total_latency_ms)?,
        streamed: row.streamed,
        bytes_in: unsigned(row.bytes_in)?,
        bytes_out: unsigned(row.bytes_out)?,
        tokens_in: row.tokens_in.map(unsigned).transpose()?,
        tokens_out: row.tokens_out.map(unsigned).transpose()?,
        method: row.method.into(),
        path: row.path,
        outcome: row.outcome.into(),
        error_code: row.error_code.map(Into::into),
    };
    Ok(LoggedRequest {
        id: RequestRecordId(row.id),
        record,
    })
}

/// A new `client_keys` row from a spec and its first secret.
pub(crate) fn new_client_key_row(
    spec: &domain::ClientKeySpec,
    secret: &domain::IssuedSecret,
    at: DateTime<Utc>,
) -> crate::entity::client_key::ActiveModel {
    use crate::entity::client_key::ActiveModel;
    let mut row = ActiveModel {
        key_prefix: sea_orm::ActiveValue::Set(secret.prefix.clone()),
        secret_hash: sea_orm::ActiveValue::Set(secret.digest.to_hex()),
        request_count: sea_orm::ActiveValue::Set(0),
        token_count: sea_orm::ActiveValue::Set(0),
        budget_used: sea_orm::ActiveValue::Set(0),
        budget_period_start: sea_orm::ActiveValue::Set(None),
        last_used_at: sea_orm::ActiveValue::Set(None),
        created_at: sea_orm::ActiveValue::Set(at),
        updated_at: sea_orm::ActiveValue::Set(at),
        ..Default::default()
    };
    set_client_key_columns(&mut row, spec);
    row
}

/// Writes what the admin set into a `client_keys` row.
pub(crate) fn set_client_key_columns(
    row: &mut crate::entity::client_key::ActiveModel,
    spec: &domain::ClientKeySpec,
) {
    use sea_orm::ActiveValue::Set;
    let limits = &spec.limits;
    row.name = Set(spec.name.as_str().to_owned());
    row.is_active = Set(spec.is_active);
    row.expires_at = Set(spec.expires_at.map(stored_time));
    row.allowed_config_ids = Set(spec
        .allowed_config_ids
        .iter()
        .map(|id| id.0.to_string())
        .collect::<Vec<_>>()
        .join(","));
    row.rpm = Set(limits.rpm.and_then(|v| i32::try_from(v).ok()));
    row.tpm = Set(limits.tpm.and_then(|v| i64::try_from(v).ok()));
    row.max_concurrency = Set(limits.max_concurrency.and_then(|v| i32::try_from(v).ok()));
    row.token_budget = Set(limits.budget.and_then(|b| i64::try_from(b.tokens).ok()));
    row.budget_period = Set(limits.budget.map(|b| b.period.as_str().to_owned()));
}

/// A `client_keys` row as a validated client key; a row the admin API would refuse is
/// `Error::Internal`.
pub(crate) fn client_key_from_row(
    row: crate::entity::client_key::Model,
) -> Result<domain::ClientKey, Error> {
    use domain::{
        BudgetPeriod, ClientKeyId, ClientKeyUsage, ClientLimits, ProxyConfigId, TokenBudget,
    };
    let corrupt =
        |what: &str| Error::Internal(format!("client key {} has an invalid {what}", row.id));
    let name = row.name.parse().map_err(|_| corrupt("name"))?;
    let digest =
        domain::SecretDigest::from_hex(&row.secret_hash).ok_or_else(|| corrupt("secret_hash"))?;
    let mut allowed_config_ids = Vec::new();
    for part in row.allowed_config_ids.split(',').filter(|p| !p.is_empty()) {
        let id = part
            .trim()
            .parse::<i64>()
            .map_err(|_| corrupt("allowed_config_ids"))?;
        allowed_config_ids.push(ProxyConfigId(id));
    }
    allowed_config_ids.sort_unstable();
    allowed_config_ids.dedup();
    let positive_u32 = |v: Option<i32>, what: &str| -> Result<Option<u32>, Error> {
        v.map(|v| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| corrupt(what))
        })
        .transpose()
    };
    let positive_u64 = |v: Option<i64>, what: &str| -> Result<Option<u64>, Error> {
        v.map(|v| {
            u64::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| corrupt(what))
        })
        .transpose()
    };
    let budget = match (
        positive_u64(row.token_budget, "token_budget")?,
        row.budget_period.as_deref(),
    ) {
        (Some(tokens), Some(period)) => Some(TokenBudget {
            tokens,
            period: period
                .parse::<BudgetPeriod>()
                .map_err(|_| corrupt("budget_period"))?,
        }),
        (None, None) => None,
        _ => return Err(corrupt("token budget")),
    };
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(domain::ClientKey {
        id: ClientKeyId(row.id),
        spec: domain::ClientKeySpec {
            name,
            is_active: row.is_active,
            expires_at: row.expires_at,
            allowed_config_ids,
            limits: ClientLimits {
                rpm: positive_u32(row.rpm, "rpm")?,
                tpm: positive_u64(row.tpm, "tpm")?,
                max_concurrency: positive_u32(row.max_concurrency, "max_concurrency")?,
                budget,
            },
        },
        digest,
        key_prefix: row.key_prefix,
        usage: ClientKeyUsage {
            request_count: count(row.request_count),
            token_count: count(row.token_count),
            budget_used: count(row.budget_used),
            budget_period_start: row.budget_period_start,
            last_used_at: row.last_used_at,
        },
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chrono::TimeZone;

    use super::*;

    fn generic_row() -> proxy_config::Model {
        let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        proxy_config::Model {
            id: 7,
            name: "Items".into(),
            slug: "items".into(),
            config_type: "GENERIC".into(),
            is_active: true,
            api_key_location: Some("query".into()),
            api_key_name: Some("apikey".into()),
            api_key_prefix: Some(String::new()),
            method: Some("POST".into()),
            target_url: Some("https://api.example.com/v2".into()),
            target_base_url: None,
            api_format: None,
            output_format: None,
            max_retries: Some(1),
            retry_on: Some("rate_limited,timeout".into()),
            response_timeout_seconds: None,
            created_at: at,
            updated_at: at,
        }
    }

    fn key_row() -> api_key::Model {
        let at = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        api_key::Model {
            id: 3,
            proxy_config_id: 7,
            key_value: "sk-secret-value-1234567890".into(),
            key_hash: String::new(),
            is_active: true,
            health: "ok".into(),
            cooldown_until: None,
            last_status: Some(200),
            request_count: 4,
            failure_count: 1,
            last_used_at: Some(at),
            created_at: at,
            updated_at: at,
        }
    }

    fn cipher(hex_key: &str) -> KeyCipher {
        KeyCipher::new(&crate::EncryptionKey::parse(hex_key).unwrap())
    }

    const KEY_A: &str = "3f1c9a7be2d4056817ac93e0b5f24d6e81a7c3b9d0e5f2a4c6b8d1e3f5a7c9e2";
    const KEY_B: &str = "4f1c9a7be2d4056817ac93e0b5f24d6e81a7c3b9d0e5f2a4c6b8d1e3f5a7c9e2";

    #[test]
    fn without_a_cipher_the_value_is_kept_and_the_hash_is_hex_sha256() {
        let value = KeySecret::parse("abc").unwrap();
        let stored = stored_key(&value, None).unwrap();
        assert_eq!(stored.key_value, "abc");
        assert_eq!(
            stored.key_hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn with_a_cipher_the_value_is_encrypted_and_the_hash_keyed() {
        let cipher = cipher(KEY_A);
        let value = KeySecret::parse("sk-secret-value-1234567890").unwrap();
        let stored = stored_key(&value, Some(&cipher)).unwrap();
        let again = stored_key(&value, Some(&cipher)).unwrap();
        assert!(!stored.key_value.contains("sk-secret"));
        assert_ne!(stored.key_value, again.key_value, "fresh nonce");
        assert_eq!(stored.key_hash, again.key_hash, "duplicates still match");
        assert_ne!(stored.key_hash, stored_key(&value, None).unwrap().key_hash);
        assert!(!format!("{stored:?}").contains(&stored.key_value));

        let mut row = key_row();
        row.key_value = stored.key_value;
        let key = key_from_row(row, Some(&cipher)).unwrap();
        assert_eq!(key.key_value.expose(), "sk-secret-value-1234567890");
    }

    #[test]
    fn a_value_in_the_wrong_mode_is_refused_never_passed_on() {
        let (a, b) = (cipher(KEY_A), cipher(KEY_B));
        let value = KeySecret::parse("sk-secret-value-1234567890").unwrap();
        let sealed = stored_key(&value, Some(&a)).unwrap().key_value;
        let cases = [
            (sealed.clone(), None, "no encryption key"),
            (sealed, Some(&b), "another encryption key"),
            (
                "sk-secret-value-1234567890".to_owned(),
                Some(&a),
                "not encrypted",
            ),
        ];
        for (stored, cipher, why) in cases {
            let mut row = key_row();
            row.key_value = stored;
            match key_from_row(row, cipher) {
                Err(Error::Internal(message)) => {
                    assert!(message.contains(why), "{message}");
                    assert!(!message.contains("sk-secret"), "{message}");
                }
                other => panic!("expected internal error, got {other:?}"),
            }
        }
    }

    #[test]
    fn config_rows_round_trip_through_the_spec() {
        let config = config_from_row(generic_row()).unwrap();
        let mut row = new_config_row(&config.spec(), config.created_at);
        row.id = Set(7);
        let model = proxy_config::Model {
            id: 7,
            name: row.name.unwrap(),
            slug: row.slug.unwrap(),
            config_type: row.config_type.unwrap(),
            is_active: row.is_active.unwrap(),
            api_key_location: row.api_key_location.unwrap(),
            api_key_name: row.api_key_name.unwrap(),
            api_key_prefix: row.api_key_prefix.unwrap(),
            method: row.method.unwrap(),
            target_url: row.target_url.unwrap(),
            target_base_url: row.target_base_url.unwrap(),
            api_format: row.api_format.unwrap(),
            output_format: row.output_format.unwrap(),
            max_retries: row.max_retries.unwrap(),
            retry_on: row.retry_on.unwrap(),
            response_timeout_seconds: row.response_timeout_seconds.unwrap(),
            created_at: row.created_at.unwrap(),
            updated_at: row.updated_at.unwrap(),
        };
        assert_eq!(config_from_row(model).unwrap(), config);
    }

    #[test]
    fn rows_without_a_policy_follow_the_environment_and_bad_classes_are_corrupt() {
        let mut row = generic_row();
        row.max_retries = None;
        row.retry_on = None;
        let config = config_from_row(row).unwrap();
        assert_eq!(config.policy, domain::failover::ConfigPolicy::default());
        let mut row = generic_row();
        row.retry_on = Some("rate_limited,sometimes".into());
        assert!(matches!(config_from_row(row), Err(Error::Internal(_))));
    }

    #[test]
    fn rows_from_before_the_prefix_column_get_the_default_prefix() {
        let mut row = generic_row();
        row.config_type = "LLM".into();
        row.method = None;
        row.target_url = None;
        row.target_base_url = Some("https://api.openai.com/v1".into());
        row.api_format = Some("openai_compatible".into());
        row.output_format = Some("none".into());
        row.api_key_location = Some("header".into());
        row.api_key_name = Some("Authorization".into());
        row.api_key_prefix = None;
        let config = config_from_row(row.clone()).unwrap();
        assert_eq!(&*config.kind.key_placement().unwrap().prefix, "Bearer ");
        row.api_key_prefix = Some(String::new());
        let config = config_from_row(row).unwrap();
        assert_eq!(&*config.kind.key_placement().unwrap().prefix, "");
    }

    #[test]
    fn corrupt_config_rows_are_internal_errors_without_the_stored_value() {
        let mut row = generic_row();
        row.method = Some("TELEPORT".into());
        match config_from_row(row) {
            Err(Error::Internal(message)) => {
                assert!(message.contains("method"), "{message}");
                assert!(!message.contains("TELEPORT"), "{message}");
            }
            other => panic!("expected internal error, got {other:?}"),
        }
        let mut row = generic_row();
        row.target_url = None;
        assert!(matches!(config_from_row(row), Err(Error::Internal(_))));
        let mut row = generic_row();
        row.api_key_name = None;
        assert!(matches!(config_from_row(row), Err(Error::Internal(_))));
    }

    #[test]
    fn corrupt_key_rows_are_internal_errors_without_the_key() {
        let mut row = key_row();
        row.health = "cooling".into();
        assert!(matches!(key_from_row(row, None), Err(Error::Internal(_))));
        let mut row = key_row();
        row.request_count = -1;
        assert!(matches!(key_from_row(row, None), Err(Error::Internal(_))));
        let mut row = key_row();
        row.last_status = Some(70_000);
        assert!(matches!(key_from_row(row, None), Err(Error::Internal(_))));
        let mut row = key_row();
        row.key_value = "has space sk-secret".into();
        match key_from_row(row, None) {
            Err(Error::Internal(message)) => assert!(!message.contains("sk-secret"), "{message}"),
            other => panic!("expected internal error, got {other:?}"),
        }
    }

    #[test]
    fn key_rows_read_health_and_usage() {
        let mut row = key_row();
        let until = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        row.health = "cooling".into();
        row.cooldown_until = Some(until);
        let key = key_from_row(row, None).unwrap();
        assert_eq!(key.health, KeyHealth::Cooling { until });
        assert_eq!(key.usage.request_count, 4);
        assert_eq!(key.usage.last_status, Some(200));
    }

    #[test]
    fn postgres_sqlstates_tell_outages_and_contention_from_bugs() {
        let unavailable = |code: &str, connecting: bool| {
            matches!(postgres_error(code, connecting), Error::Unavailable { .. })
        };
        for code in [
            "28P01", "28000", "08006", "57P01", "57P03", "53300", "53100", "25006", "3D000",
        ] {
            assert!(unavailable(code, false), "{code}");
        }
        for code in ["40001", "40P01", "55P03", "57014"] {
            match postgres_error(code, false) {
                Error::Unavailable { message, .. } => assert_eq!(message, BUSY, "{code}"),
                other => panic!("{code}: expected busy, got {other:?}"),
            }
        }
        assert!(unavailable("42501", true), "a refused connection");
        match postgres_error("42P01", false) {
            Error::Internal(message) => assert!(message.contains("SQLSTATE 42P01"), "{message}"),
            other => panic!("expected internal, got {other:?}"),
        }
    }

    #[test]
    fn pool_and_connection_errors_are_unavailable() {
        let timeout = DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
        assert!(matches!(
            db_error(DbBackend::Sqlite, &timeout),
            Error::Unavailable { .. }
        ));
        let io = DbErr::Query(RuntimeErr::SqlxError(std::sync::Arc::new(
            sea_orm::sqlx::Error::Io(std::io::Error::other("secret driver text")),
        )));
        match db_error(DbBackend::MySql, &io) {
            Error::Unavailable { message, .. } => {
                assert!(!message.contains("secret driver text"), "{message}")
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
        let decode = DbErr::Type("raw text".into());
        assert!(matches!(
            db_error(DbBackend::MySql, &decode),
            Error::Internal(m) if !m.contains("raw text")
        ));
    }
}
