//! The `request_logs` table: one row per proxied request (SPEC §10), with its time as integer
//! milliseconds since the epoch so every backend buckets it the same way.

use sea_orm::entity::prelude::*;

/// A row of `request_logs`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "request_logs")]
pub struct Model {
    /// Store identifier, increasing with inserts.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// When the exchange ended, milliseconds since the epoch.
    pub created_at: i64,
    /// The config.
    pub proxy_config_id: i64,
    /// The client key; null for a global proxy key.
    pub client_key_id: Option<i64>,
    /// The upstream key of the last attempt; null when none was tried.
    pub api_key_id: Option<i64>,
    /// HTTP method.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Status the client got.
    pub status: i32,
    /// Outcome class.
    pub outcome: String,
    /// Upstream attempts.
    pub attempts: i32,
    /// Milliseconds until the response head.
    pub head_latency_ms: i64,
    /// Milliseconds until the body ended.
    pub total_latency_ms: i64,
    /// The histogram bucket of `total_latency_ms` (`domain::request_log::latency_bucket`).
    pub latency_bucket: i16,
    /// Whether the response was an event stream.
    pub streamed: bool,
    /// Request body bytes.
    pub bytes_in: i64,
    /// Response body bytes.
    pub bytes_out: i64,
    /// Input tokens the upstream reported.
    pub tokens_in: Option<i64>,
    /// Output tokens the upstream reported.
    pub tokens_out: Option<i64>,
    /// The proxy's error code.
    pub error_code: Option<String>,
}

/// `request_logs` has no relation: a record outlives what it names.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
