//! The `ProxyStore` port on MySQL 8 or MariaDB 10.11+, for the enterprise edition:
//! [`MysqlStore`], opened from [`MysqlOptions`].
//!
//! This crate owns only what is particular to MySQL: the URL, the `utf8mb4` session and the pool
//! shape. Schema, queries and error mapping are `storage-sql`'s, shared with the SQLite adapter.
//! Several instances may start against one database at once: migrations run under a MySQL named
//! lock, one instance at a time.

use std::{fmt, str::FromStr, time::Duration};

use domain::{Error, ImportReport, OriginalData, OriginalTables, Result};
use sea_orm::{
    DatabaseConnection, DbBackend, DbErr, RuntimeErr, SqlxMySqlConnector,
    sqlx::{
        self, ConnectOptions as _,
        mysql::{MySqlConnectOptions, MySqlPoolOptions},
    },
};
use storage_sql::{KeyCipher, SqlStore};

/// How to open a [`MysqlStore`].
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlOptions {
    /// `mysql://user:password@host:port/database`; never printed, it holds the password.
    pub url: String,
    /// Drop and recreate the store's tables at start-up (`RESET_DB_TABLES`); deletes every row.
    pub reset_tables: bool,
    /// Most open connections; at least two (start-up holds one for the migration lock).
    pub max_connections: u32,
    /// How long to wait for a connection, when opening and whenever the pool is exhausted,
    /// before failing with `Unavailable`.
    pub connect_timeout: Duration,
    /// Encrypt key values with this cipher (`ENCRYPTION_KEY`); `None` stores them as they are.
    pub key_cipher: Option<KeyCipher>,
}

impl MysqlOptions {
    /// Default connections per instance.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// The default settings for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        MysqlOptions {
            url: url.into(),
            reset_tables: false,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            key_cipher: None,
        }
    }
}

impl fmt::Debug for MysqlOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlOptions")
            .field("url", &"<redacted>")
            .field("reset_tables", &self.reset_tables)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("key_cipher", &self.key_cipher)
            .finish()
    }
}

/// The `ProxyStore` on MySQL or MariaDB. Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct MysqlStore {
    inner: SqlStore,
}

storage_sql::forward_proxy_store!(MysqlStore => inner);
storage_sql::forward_request_log!(MysqlStore => inner);
storage_sql::forward_client_key_store!(MysqlStore => inner);

impl MysqlStore {
    /// Connects with a `utf8mb4` session and brings the schema up to date (after dropping the
    /// tables when `reset_tables` is set).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the URL is malformed, the server cannot be reached in time or
    /// refuses the credentials or the database; [`Error::Internal`] when the schema cannot be
    /// created.
    pub async fn connect(options: MysqlOptions) -> Result<MysqlStore> {
        let db = open_pool(&options).await?;
        let inner = SqlStore::open(db, options.reset_tables)
            .await?
            .with_key_cipher(options.key_cipher);
        Ok(MysqlStore { inner })
    }

    /// Upgrades, in place, a database the original backend wrote: its tables are kept under
    /// backup names, this store's are created and the rows imported (see
    /// `storage_sql::original`; MySQL commits DDL by itself, so a failed import is undone by
    /// dropping the new tables and renaming the original ones back).
    ///
    /// # Errors
    /// As [`MysqlStore::connect`]; [`Error::Internal`] when the database holds no original
    /// tables.
    pub async fn upgrade_original(options: MysqlOptions) -> Result<(MysqlStore, ImportReport)> {
        let db = open_pool(&options).await?;
        let (inner, report) = SqlStore::upgrade_original(db, options.key_cipher).await?;
        Ok((MysqlStore { inner }, report))
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

/// A `utf8mb4` connection pool to `options`' database; no schema work.
async fn open_pool(options: &MysqlOptions) -> Result<DatabaseConnection> {
    let connect = MySqlConnectOptions::from_str(&options.url)
        .map_err(|_| {
            Error::database(
                "the MySQL URL is malformed; expected mysql://user:password@host:port/database",
            )
        })?
        .charset("utf8mb4")
        .disable_statement_logging();
    let pool = MySqlPoolOptions::new()
        .max_connections(options.max_connections.max(2))
        .acquire_timeout(options.connect_timeout)
        .connect_with(connect)
        .await
        .map_err(|err| connect_error(err, options.connect_timeout))?;
    Ok(SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
}

/// Reads every config and key of a database the original backend wrote (or one upgraded in
/// place, from its backup tables), for `import-original`, and where they were found.
///
/// # Errors
/// [`Error::Unavailable`] when the database cannot be reached; [`Error::Internal`] when it holds
/// no tables of the original backend.
pub async fn read_original(url: &str) -> Result<(OriginalTables, OriginalData)> {
    let db = open_pool(&MysqlOptions::new(url)).await?;
    let tables = storage_sql::original::find_original_tables(&db)
        .await
        .map_err(|err| storage_sql::db_error(DbBackend::MySql, &err))?
        .ok_or_else(|| {
            Error::Internal("this MySQL database holds no tables of the original backend".into())
        })?;
    let data = storage_sql::original::read_original(&db, tables).await;
    let _ = db.close().await;
    Ok((tables, data?))
}

fn connect_error(err: sqlx::Error, timeout: Duration) -> Error {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => Error::database(format!(
            "cannot reach the MySQL server within {} s; check the database host and port and \
             that the server is running",
            timeout.as_secs_f32()
        )),
        other => {
            let err = DbErr::Conn(RuntimeErr::SqlxError(other.into()));
            storage_sql::db_error(DbBackend::MySql, &err)
        }
    }
}
