//! The `ProxyStore` port on PostgreSQL, for the enterprise edition: [`PostgresStore`], opened
//! from [`PostgresOptions`].
//!
//! This crate owns only what is particular to PostgreSQL: the URL, the session settings and the
//! pool shape. Schema, queries and error mapping are `storage-sql`'s, shared with the SQLite
//! and MySQL adapters. Several instances may start against one database at once: migrations
//! run in one transaction holding a PostgreSQL advisory lock, one instance at a time, and a
//! failed run leaves no half-made schema (PostgreSQL's DDL is transactional).

use std::{fmt, str::FromStr, time::Duration};

use domain::{Error, ImportReport, Result};
use sea_orm::{
    DatabaseConnection, DbBackend, DbErr, RuntimeErr, SqlxPostgresConnector,
    sqlx::{
        self, ConnectOptions as _,
        postgres::{PgConnectOptions, PgPoolOptions},
    },
};
use storage_sql::{KeyCipher, SqlStore};

/// How to open a [`PostgresStore`].
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database` (or `postgresql://`), with libpq's URL
    /// parameters (`sslmode`, `sslrootcert`, `options`, ...); never printed, it holds the
    /// password.
    pub url: String,
    /// Drop and recreate the store's tables at start-up (`RESET_DB_TABLES`); deletes every row.
    pub reset_tables: bool,
    /// Most open connections.
    pub max_connections: u32,
    /// How long to wait for a connection, when opening and whenever the pool is exhausted,
    /// before failing with `Unavailable`.
    pub connect_timeout: Duration,
    /// Encrypt key values with this cipher (`ENCRYPTION_KEY`); `None` stores them as they are.
    pub key_cipher: Option<KeyCipher>,
}

impl PostgresOptions {
    /// Default connections per instance: PostgreSQL runs one server process per connection,
    /// so a fleet of instances should stay well under its `max_connections` (100 by default).
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The default settings for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            reset_tables: false,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            key_cipher: None,
        }
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"<redacted>")
            .field("reset_tables", &self.reset_tables)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("key_cipher", &self.key_cipher)
            .finish()
    }
}

/// The `ProxyStore` on PostgreSQL. Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: SqlStore,
}

storage_sql::forward_proxy_store!(PostgresStore => inner);
storage_sql::forward_request_log!(PostgresStore => inner);
storage_sql::forward_client_key_store!(PostgresStore => inner);

impl PostgresStore {
    /// Connects and brings the schema up to date (after dropping the tables when
    /// `reset_tables` is set).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the URL is malformed, the server cannot be reached in time or
    /// refuses the credentials or the database; [`Error::Internal`] when the schema cannot be
    /// created.
    pub async fn connect(options: PostgresOptions) -> Result<PostgresStore> {
        let db = open_pool(&options).await?;
        let inner = SqlStore::open(db, options.reset_tables)
            .await?
            .with_key_cipher(options.key_cipher);
        Ok(PostgresStore { inner })
    }

    /// Upgrades, in place, a database holding the original backend's tables (see
    /// `storage_sql::original`): they are kept under backup names, this store's are created
    /// and the rows imported, all in one transaction.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`]; [`Error::Internal`] when the database holds no original
    /// tables.
    pub async fn upgrade_original(
        options: PostgresOptions,
    ) -> Result<(PostgresStore, ImportReport)> {
        let db = open_pool(&options).await?;
        let (inner, report) = SqlStore::upgrade_original(db, options.key_cipher).await?;
        Ok((PostgresStore { inner }, report))
    }

    /// The shared SQL store this adapter wraps.
    pub fn sql_store(&self) -> &SqlStore {
        &self.inner
    }

    /// Closes every connection.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when closing fails.
    pub async fn close(self) -> Result<()> {
        self.inner.close().await
    }
}

/// A connection pool to `options`' database; no schema work.
async fn open_pool(options: &PostgresOptions) -> Result<DatabaseConnection> {
    let connect = PgConnectOptions::from_str(&options.url)
        .map_err(|_| {
            Error::database(
                "the PostgreSQL URL is malformed; expected \
                 postgres://user:password@host:port/database",
            )
        })?
        // Shown in `pg_stat_activity`, so a DBA can tell the gateway's sessions apart.
        .application_name("api-key-rotator")
        .disable_statement_logging();
    // Migrations hold their lock inside the transaction that runs them: one connection is
    // enough to start.
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.connect_timeout)
        .connect_with(connect)
        .await
        .map_err(|err| connect_error(err, options.connect_timeout))?;
    Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
}

fn connect_error(err: sqlx::Error, timeout: Duration) -> Error {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => Error::database(format!(
            "cannot reach the PostgreSQL server within {} s; check the database host and port \
             and that the server is running",
            timeout.as_secs_f32()
        )),
        other => {
            let err = DbErr::Conn(RuntimeErr::SqlxError(other.into()));
            storage_sql::db_error(DbBackend::Postgres, &err)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn options_never_print_the_url() {
        let options = PostgresOptions::new("postgres://akr:hunter2@db/akr");
        assert!(!format!("{options:?}").contains("hunter2"));
    }

    #[test]
    fn an_unreachable_server_names_the_wait() {
        match connect_error(sqlx::Error::PoolTimedOut, Duration::from_secs(2)) {
            Error::Unavailable { message, .. } => {
                assert!(message.contains("cannot reach the PostgreSQL server within 2 s"))
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}
