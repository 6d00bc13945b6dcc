//! The `api_keys` table: the key pool of every config, with health and usage.
//!
//! `key_hash` is the fingerprint of the value (see [`crate::stored_key`]: plain SHA-256, or an HMAC keyed from `ENCRYPTION_KEY`); the unique index
//! on `(proxy_config_id, key_hash)` keeps a key once per config even when `key_value` is stored
//! encrypted.

use sea_orm::entity::prelude::*;

/// A row of `api_keys`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// Store identifier.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The owning config; deleting it deletes the key.
    pub proxy_config_id: i64,
    /// The key value, or its ciphertext `v1:<key id>:<base64>` when encryption is on.
    pub key_value: String,
    /// Hex fingerprint of the value, unique per config.
    pub key_hash: String,
    /// The admin's switch.
    pub is_active: bool,
    /// `ok`, `cooling` or `failed`.
    pub health: String,
    /// End of the cooldown when `health` is `cooling`.
    pub cooldown_until: Option<DateTimeUtc>,
    /// Last upstream status seen.
    pub last_status: Option<i32>,
    /// Requests sent with the key.
    pub request_count: i64,
    /// Failed requests.
    pub failure_count: i64,
    /// Last use.
    pub last_used_at: Option<DateTimeUtc>,
    /// Set by the store on insert.
    pub created_at: DateTimeUtc,
    /// Set by the store on every write.
    pub updated_at: DateTimeUtc,
}

/// `api_keys` has no relation the store navigates through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
