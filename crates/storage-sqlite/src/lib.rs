//! The `ProxyStore` port on SQLite, for the lightweight edition: [`SqliteStore`], opened from
//! [`SqliteOptions`].
//!
//! This crate owns only what is particular to SQLite: the file (its parent directory is
//! created), write-ahead logging, the busy timeout, foreign keys, `secure_delete` and the pool
//! shape. Schema, queries and error mapping are `storage-sql`'s, shared with the MySQL and
//! PostgreSQL adapters.
//!
//! **Concurrency:** WAL lets readers run beside the one writer; every write transaction starts
//! `IMMEDIATE` and waits up to the busy timeout for the write lock, so concurrent admin writes
//! queue instead of failing with "database is locked". The request log is written through a
//! connection of its own, whose page cache stays warm from batch to batch.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use domain::{Error, ImportReport, OriginalData, OriginalTables, Result};
use sea_orm::{
    DatabaseConnection, DbBackend, DbErr, RuntimeErr, SqlxSqliteConnector,
    sqlx::{
        ConnectOptions as _,
        sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    },
};
use storage_sql::{KeyCipher, SqlStore};

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlitePath {
    /// A database file, created (with its parent directory) when missing.
    File(PathBuf),
    /// A private in-memory database that lives as long as the store; for tests and trials.
    InMemory,
}

impl SqlitePath {
    /// Reads a `DATABASE_PATH`-style value: `:memory:` means in memory, anything else is a file.
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            ":memory:" => SqlitePath::InMemory,
            path => SqlitePath::File(PathBuf::from(path)),
        }
    }
}

impl From<&str> for SqlitePath {
    fn from(text: &str) -> Self {
        SqlitePath::parse(text)
    }
}

impl From<PathBuf> for SqlitePath {
    fn from(path: PathBuf) -> Self {
        SqlitePath::File(path)
    }
}

impl From<&Path> for SqlitePath {
    fn from(path: &Path) -> Self {
        SqlitePath::File(path.to_owned())
    }
}

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The database file, or in memory.
    pub path: SqlitePath,
    /// Drop and recreate the store's tables at start-up (`RESET_DB_TABLES`); deletes every row.
    pub reset_tables: bool,
    /// Most open connections (readers run in parallel; writes take turns). An in-memory
    /// database always uses one.
    pub max_connections: u32,
    /// How long a statement waits for another connection's write lock before failing with
    /// `Unavailable`; waiting for a free pooled connection is allowed five seconds more.
    pub busy_timeout: Duration,
    /// Encrypt key values with this cipher (`ENCRYPTION_KEY`); `None` stores them as they are.
    pub key_cipher: Option<KeyCipher>,
}

impl SqliteOptions {
    /// Default connections: enough readers for the admin API beside the usage flusher.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;
    /// Default busy timeout.
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

    /// A database file with the default settings.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SqliteOptions::new(SqlitePath::File(path.into()))
    }

    /// An in-memory database with the default settings.
    pub fn in_memory() -> Self {
        SqliteOptions::new(SqlitePath::InMemory)
    }

    /// The default settings at `path`.
    pub fn new(path: SqlitePath) -> Self {
        SqliteOptions {
            path,
            reset_tables: false,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
            key_cipher: None,
        }
    }
}

/// The `ProxyStore` on SQLite. Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: SqlStore,
}

storage_sql::forward_proxy_store!(SqliteStore => inner);
storage_sql::forward_request_log!(SqliteStore => inner);
storage_sql::forward_client_key_store!(SqliteStore => inner);

impl SqliteStore {
    /// Opens (creating when missing) the database, turns on WAL, foreign keys, the busy timeout
    /// and `secure_delete` (deleted and rewritten values are overwritten in the file, so a
    /// deleted key or a key encrypted since leaves no copy behind) on every connection, and brings the schema up to date (after dropping the tables
    /// when `reset_tables` is set).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the directory or the file cannot be created or opened;
    /// [`Error::Internal`] when the schema cannot be created, or when the file holds the
    /// original backend's tables (see [`SqliteStore::upgrade_original`]).
    pub async fn connect(options: SqliteOptions) -> Result<SqliteStore> {
        let db = open_pool(&options).await?;
        let inner = SqlStore::open(db, options.reset_tables)
            .await?
            .with_key_cipher(options.key_cipher.clone());
        Ok(SqliteStore {
            inner: with_log_writer(inner, &options).await?,
        })
    }

    /// Opens a database file the original backend wrote and upgrades it in place, in one
    /// transaction: its tables are kept under backup names, this store's are created and the
    /// rows imported (see `storage_sql::original`).
    ///
    /// # Errors
    /// As [`SqliteStore::connect`]; [`Error::Internal`] when the file holds no original tables.
    pub async fn upgrade_original(options: SqliteOptions) -> Result<(SqliteStore, ImportReport)> {
        let db = open_pool(&options).await?;
        let (inner, report) = SqlStore::upgrade_original(db, options.key_cipher.clone()).await?;
        let inner = with_log_writer(inner, &options).await?;
        Ok((SqliteStore { inner }, report))
    }

    /// The shared SQL store this adapter wraps.
    pub fn sql_store(&self) -> &SqlStore {
        &self.inner
    }

    /// Closes every connection, checkpointing the write-ahead log into the file.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when closing fails.
    pub async fn close(self) -> Result<()> {
        self.inner.close().await
    }
}

/// A file database's store with the request log written through a connection of its own (see
/// [`SqlStore::with_log_writer`]); an in-memory one has a single connection already.
async fn with_log_writer(store: SqlStore, options: &SqliteOptions) -> Result<SqlStore> {
    match options.path {
        SqlitePath::File(_) => Ok(store.with_log_writer(open_log_writer(options).await?)),
        SqlitePath::InMemory => Ok(store),
    }
}

/// The request log's writer: one connection, kept open. Its page cache keeps SQLite's default
/// (2 MiB): the cache fills with every page the growing log writes, so a larger one is held for
/// good (32 MiB put 20 MiB on the lightweight server's peak RSS), and with the cache kept warm
/// by this connection alone a 100 000-key pool at ~30 000 requests/s dropped no record.
async fn open_log_writer(options: &SqliteOptions) -> Result<DatabaseConnection> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None);
    connect_pool(pool, file_options(options)?, options).await
}

/// The connection options every connection to a file database shares.
fn file_options(options: &SqliteOptions) -> Result<SqliteConnectOptions> {
    let SqlitePath::File(path) = &options.path else {
        return Err(Error::Internal("not a SQLite file".to_owned()));
    };
    Ok(with_common_pragmas(SqliteConnectOptions::new(), options)
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal))
}

/// Foreign keys, `secure_delete` and the busy timeout, on every connection.
fn with_common_pragmas(
    connect: SqliteConnectOptions,
    options: &SqliteOptions,
) -> SqliteConnectOptions {
    connect
        .foreign_keys(true)
        .pragma("secure_delete", "ON")
        .busy_timeout(options.busy_timeout)
        .disable_statement_logging()
}

/// The connection pool of `options`' database: WAL, foreign keys and the busy timeout on every
/// connection; no schema work.
async fn open_pool(options: &SqliteOptions) -> Result<DatabaseConnection> {
    let mut pool = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .test_before_acquire(false);
    let connect = match &options.path {
        SqlitePath::File(path) => {
            create_parent_directory(path)?;
            file_options(options)?
        }
        SqlitePath::InMemory => {
            // One connection that is never recycled: the database lives as long as it does.
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
            let memory = SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(|_| Error::Internal("in-memory SQLite options rejected".to_owned()))?;
            with_common_pragmas(memory, options)
        }
    };
    connect_pool(pool, connect, options).await
}

async fn connect_pool(
    pool: SqlitePoolOptions,
    connect: SqliteConnectOptions,
    options: &SqliteOptions,
) -> Result<DatabaseConnection> {
    let pool = pool
        .acquire_timeout(options.busy_timeout.saturating_add(Duration::from_secs(5)))
        .connect_with(connect)
        .await
        .map_err(connect_error)?;
    Ok(SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// The store's error for a pool that could not connect.
fn connect_error(err: sea_orm::sqlx::Error) -> Error {
    let err = DbErr::Conn(RuntimeErr::SqlxError(err.into()));
    storage_sql::db_error(DbBackend::Sqlite, &err)
}

/// Reads every config and key of a database file the original backend wrote (or one upgraded
/// in place, from its backup tables), for `import-original`, and where they were found. The file is opened read-only and
/// must exist.
///
/// # Errors
/// [`Error::Unavailable`] when the file cannot be opened; [`Error::Internal`] when it holds no
/// tables of the original backend.
pub async fn read_original(path: &Path) -> Result<(OriginalTables, OriginalData)> {
    if !path.is_file() {
        return Err(Error::database(format!(
            "{} is not a file; give the path of the original backend's SQLite database",
            path.display()
        )));
    }
    let connect = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .disable_statement_logging();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(connect)
        .await
        .map_err(connect_error)?;
    let db = SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
    let tables = storage_sql::original::find_original_tables(&db)
        .await
        .map_err(|err| storage_sql::db_error(DbBackend::Sqlite, &err))?
        .ok_or_else(|| {
            Error::Internal(format!(
                "{} holds no tables of the original backend",
                path.display()
            ))
        })?;
    let data = storage_sql::original::read_original(&db, tables).await;
    let _ = db.close().await;
    Ok((tables, data?))
}

fn create_parent_directory(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|_| {
                Error::database(format!(
                    "cannot create the directory {} for the SQLite database; check DATABASE_PATH and its permissions",
                    parent.display()
                ))
            })
        }
        _ => Ok(()),
    }
}
