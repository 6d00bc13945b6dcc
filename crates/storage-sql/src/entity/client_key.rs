//! The `client_keys` table: client keys (SPEC §7) with the hash of their secret, their scope,
//! limits and usage totals.

use sea_orm::entity::prelude::*;

/// A row of `client_keys`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "client_keys")]
pub struct Model {
    /// Store identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unique display name.
    pub name: String,
    /// The first characters of the secret.
    pub key_prefix: String,
    /// Hex SHA-256 (or HMAC) of the secret; unique.
    pub secret_hash: String,
    /// The admin's switch.
    pub is_active: bool,
    /// When the key stops working.
    pub expires_at: Option<DateTimeUtc>,
    /// Comma-separated config ids; empty = every config.
    pub allowed_config_ids: String,
    /// Requests per minute.
    pub rpm: Option<i32>,
    /// Tokens per minute.
    pub tpm: Option<i64>,
    /// Requests in flight.
    pub max_concurrency: Option<i32>,
    /// Tokens per budget period.
    pub token_budget: Option<i64>,
    /// `day`, `month` or `total`.
    pub budget_period: Option<String>,
    /// Requests made.
    pub request_count: i64,
    /// Tokens used.
    pub token_count: i64,
    /// Tokens used in the period starting at `budget_period_start`.
    pub budget_used: i64,
    /// Start of that period.
    pub budget_period_start: Option<DateTimeUtc>,
    /// Last use.
    pub last_used_at: Option<DateTimeUtc>,
    /// Set by the store on insert.
    pub created_at: DateTimeUtc,
    /// Set by the store on every write.
    pub updated_at: DateTimeUtc,
}

/// `client_keys` has no relation the store navigates through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
