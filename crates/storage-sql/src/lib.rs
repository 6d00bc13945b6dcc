//! The SQL store shared by the SQLite, MySQL and PostgreSQL adapters, written once: sea-orm entities, the
//! schema migrations, the `ProxyStore` and `RequestLog` repository ([`SqlStore`]) and the mapping between rows,
//! database errors and domain types (`convert`).
//!
//! An adapter crate opens a sea-orm connection with its driver's settings, hands it to
//! [`SqlStore::open`] (which runs the migrations) and exposes its own store type, implementing
//! the port with [`forward_proxy_store!`]. This crate enables no database driver itself: each
//! adapter turns on the one it needs, so a lightweight build carries no network database driver.
//!
//! With a [`KeyCipher`] (from `ENCRYPTION_KEY`), key values are encrypted on every write and
//! decrypted on every read, so the snapshot a proxy caches holds plain values and a proxied
//! request never decrypts; [`stored_key`] is the one place a value becomes its stored columns.
//! [`SqlStore::key_census`] and [`SqlStore::rewrite_key_values`] back the start-up check and
//! the `keys encrypt|decrypt|rotate-encryption` commands.
//! [`original`] reads a database of the original Go backend and imports it, or upgrades it in
//! place; [`SqlStore::open`] refuses such a database with a message naming the command.
//!
//! Rows that the domain would reject (corrupt data) become `Error::Internal`, never a panic;
//! database errors never leak driver text into a domain error's message.

mod chunks;
pub mod cipher;
mod client_keys;
mod convert;
#[cfg(feature = "encryption-tests")]
pub mod encryption_suite;
pub mod entity;
mod forward;
pub mod migration;
pub mod original;
mod repository;
mod request_log;
mod rewrite;
mod rollup;

pub use cipher::{ClientSecretHasher, EncryptionKey, EncryptionKeyError, KeyCipher};
pub use convert::{StoredKey, db_error, stored_key};
pub use repository::SqlStore;
pub use request_log::RECORDS_PER_INSERT;
pub use rewrite::{KeyCensus, KeyRewrite, RewriteError, RewriteProgress};

#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use chrono;
    pub use domain;
}
