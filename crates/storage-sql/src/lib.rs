//! The SQL store shared by the SQLite and MySQL adapters, written once: sea-orm entities, the
//! schema migrations, the `ProxyStore` repository ([`SqlStore`]) and the mapping between rows,
//! database errors and domain types (`convert`).
//!
//! An adapter crate opens a sea-orm connection with its driver's settings, hands it to
//! [`SqlStore::open`] (which runs the migrations) and exposes its own store type, implementing
//! the port with [`forward_proxy_store!`]. This crate enables no database driver itself: each
//! adapter turns on the one it needs, so a lightweight build carries no MySQL driver.
//!
//! Rows that the domain would reject (corrupt data) become `Error::Internal`, never a panic;
//! database errors never leak driver text into a domain error's message.

mod convert;
pub mod entity;
mod forward;
pub mod migration;
mod repository;

pub use convert::{db_error, key_fingerprint};
pub use repository::SqlStore;

#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use chrono;
    pub use domain;
}
