//! The `proxy_configs` table: one row per upstream service.
//!
//! The columns of both config types live in one row; the ones of the other type are null.
//! `slug` is stored in lower case, so its unique index makes slugs unique case-insensitively.

use sea_orm::entity::prelude::*;

/// A row of `proxy_configs`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "proxy_configs")]
pub struct Model {
    /// Store identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unique display name.
    pub name: String,
    /// Unique path name, lower case.
    pub slug: String,
    /// `GENERIC` or `LLM`.
    pub config_type: String,
    /// Whether the proxy routes accept requests for it.
    pub is_active: bool,
    /// `header` or `query`; null for an LLM config that uses its format's own placement.
    pub api_key_location: Option<String>,
    /// The header or query parameter name; null together with `api_key_location`.
    pub api_key_name: Option<String>,
    /// Sent before the key (`Bearer `); null on rows written before the column existed, which
    /// read as the default prefix of their placement.
    pub api_key_prefix: Option<String>,
    /// GENERIC only: the one accepted HTTP method.
    pub method: Option<String>,
    /// GENERIC only: the target URL.
    pub target_url: Option<String>,
    /// LLM only: the upstream base URL.
    pub target_base_url: Option<String>,
    /// LLM only: the format the upstream speaks.
    pub api_format: Option<String>,
    /// LLM only: the format the clients speak.
    pub output_format: Option<String>,
    /// Retries after the first attempt; null = `PROXY_MAX_RETRIES`.
    pub max_retries: Option<i32>,
    /// Comma-separated failure classes re-sent to another key; null = the default set.
    pub retry_on: Option<String>,
    /// Response-head timeout in seconds, 0 = none; null = the environment's default.
    pub response_timeout_seconds: Option<i32>,
    /// Set by the store on insert.
    pub created_at: DateTimeUtc,
    /// Set by the store on every write.
    pub updated_at: DateTimeUtc,
}

/// `proxy_configs` has no relation the store navigates through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
