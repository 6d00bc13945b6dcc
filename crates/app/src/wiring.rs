//! Turns the configured backends into ports: the only place where the editions' Cargo features
//! appear. A backend that was not compiled in stops start-up with a message naming the feature.

use std::sync::Arc;

use cache_memory::MemoryCache;
use domain::{
    ClientKeyStore, ClientLimiter, ConfigEvents, ImportReport, Leases, OriginalData,
    OriginalTables, ProxyStore, RequestLog, RotationState, UsageCounters,
};
use storage_sql::{ClientSecretHasher, KeyCipher, SqlStore};

use crate::{
    config::{CacheBackend, Settings, StorageBackend},
    key_migration::{self, StoreKeyMode},
};

/// The ports for one process.
pub struct Ports {
    /// Durable store.
    pub store: Arc<dyn ProxyStore>,
    /// Live rotation state.
    pub rotation: Arc<dyn RotationState>,
    /// Usage counters.
    pub usage: Arc<dyn UsageCounters>,
    /// Change notifications.
    pub events: Arc<dyn ConfigEvents>,
    /// Leases of background jobs that run on one instance at a time.
    pub leases: Arc<dyn Leases>,
    /// The request log (the store's database).
    pub request_log: Arc<dyn RequestLog>,
    /// Durable client keys (SPEC §7).
    pub client_keys: Arc<dyn ClientKeyStore>,
    /// Live client-key limits.
    pub client_limiter: Arc<dyn ClientLimiter>,
    /// How client-key secrets are hashed (keyed by `ENCRYPTION_KEY` when set).
    pub client_hasher: ClientSecretHasher,
    /// `lightweight` or `enterprise`, for logs.
    pub description: String,
}

/// Why the backends could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// The configuration asks for a backend this binary was built without.
    #[error(
        "{backend} was selected ({why}) but this binary was built without the `{feature}` feature; rebuild with `cargo build --release -p app --features {feature}` or configure {fallback}"
    )]
    NotCompiled {
        /// The backend.
        backend: &'static str,
        /// Which settings selected it.
        why: &'static str,
        /// The feature to enable.
        feature: &'static str,
        /// What to configure instead.
        fallback: &'static str,
    },
    /// A backend could not be reached or prepared.
    #[error("{backend} could not be opened: {source}")]
    Open {
        /// The backend.
        backend: &'static str,
        /// Why.
        source: domain::Error,
    },
    /// The stored key values are not in the mode `ENCRYPTION_KEY` asks for.
    #[error(transparent)]
    KeyMode(#[from] StoreKeyMode),
}

/// Connects the configured store and cache.
///
/// # Errors
/// A backend that was not compiled in, or that cannot be opened.
pub async fn connect(settings: &Settings) -> Result<Ports, WiringError> {
    let (store, request_log, client_keys) = connect_store(settings).await?;
    let (rotation, usage, events, leases, client_limiter, cache_name) =
        connect_cache(settings).await?;
    let client_hasher = settings
        .encryption_key
        .as_ref()
        .map_or_else(ClientSecretHasher::plain, ClientSecretHasher::keyed);
    let store_name = match settings.storage {
        StorageBackend::Sqlite { .. } => "sqlite",
        StorageBackend::Mysql { .. } => "mysql",
        StorageBackend::Postgres { .. } => "postgres",
    };
    Ok(Ports {
        store,
        rotation,
        usage,
        events,
        leases,
        request_log,
        client_keys,
        client_limiter,
        client_hasher,
        description: format!("{store_name} + {cache_name}"),
    })
}

/// Opens the store with the configured cipher and checks that its rows are in the mode
/// `ENCRYPTION_KEY` asks for, so a server never serves a half-migrated pool.
async fn connect_store(
    settings: &Settings,
) -> Result<
    (
        Arc<dyn ProxyStore>,
        Arc<dyn RequestLog>,
        Arc<dyn ClientKeyStore>,
    ),
    WiringError,
> {
    let cipher = settings.encryption_key.as_ref().map(KeyCipher::new);
    let (store, sql) = open_store(settings, cipher, settings.reset_db_tables).await?;
    let census = sql
        .key_census(&sql.key_cipher().into_iter().collect::<Vec<_>>())
        .await
        .map_err(|source| WiringError::Open {
            backend: store_name(settings),
            source,
        })?;
    key_migration::check_key_mode(&census, sql.key_cipher().is_some())?;
    // The request log and client keys live in the store's database, written once in
    // `storage-sql`; the SQL store shares the adapter's pool.
    let sql = Arc::new(sql);
    Ok((
        store,
        sql.clone() as Arc<dyn RequestLog>,
        sql as Arc<dyn ClientKeyStore>,
    ))
}

/// The SQL store for the key commands: migrated, without a cipher (a rewrite names its own
/// keys), without the key mode check (fixing the mode is the commands' job), never reset.
///
/// # Errors
/// A backend that was not compiled in, or that cannot be opened.
pub async fn open_sql_store(settings: &Settings) -> Result<SqlStore, WiringError> {
    Ok(open_store(settings, None, false).await?.1)
}

fn store_name(settings: &Settings) -> &'static str {
    match settings.storage {
        StorageBackend::Sqlite { .. } => "SQLite",
        StorageBackend::Mysql { .. } => "MySQL",
        StorageBackend::Postgres { .. } => "PostgreSQL",
    }
}

async fn open_store(
    settings: &Settings,
    key_cipher: Option<KeyCipher>,
    reset_tables: bool,
) -> Result<(Arc<dyn ProxyStore>, SqlStore), WiringError> {
    match &settings.storage {
        #[cfg(feature = "lightweight")]
        StorageBackend::Sqlite { path } => {
            let options = storage_sqlite::SqliteOptions {
                reset_tables,
                key_cipher,
                ..storage_sqlite::SqliteOptions::file(path.clone())
            };
            let store = storage_sqlite::SqliteStore::connect(options)
                .await
                .map_err(|source| WiringError::Open {
                    backend: "SQLite",
                    source,
                })?;
            let sql = store.sql_store().clone();
            Ok((Arc::new(store), sql))
        }
        #[cfg(not(feature = "lightweight"))]
        StorageBackend::Sqlite { .. } => Err(WiringError::NotCompiled {
            backend: "SQLite",
            why: "DB_TYPE=sqlite or no MySQL settings",
            feature: "lightweight",
            fallback: "DB_TYPE=mysql",
        }),
        #[cfg(feature = "enterprise")]
        StorageBackend::Mysql { url } => {
            let options = storage_mysql::MysqlOptions {
                reset_tables,
                key_cipher,
                ..storage_mysql::MysqlOptions::new(url.expose())
            };
            let store = storage_mysql::MysqlStore::connect(options)
                .await
                .map_err(|source| WiringError::Open {
                    backend: "MySQL",
                    source,
                })?;
            let sql = store.sql_store().clone();
            Ok((Arc::new(store), sql))
        }
        #[cfg(feature = "enterprise")]
        StorageBackend::Postgres { url } => {
            let options = storage_postgres::PostgresOptions {
                reset_tables,
                key_cipher,
                ..storage_postgres::PostgresOptions::new(url.expose())
            };
            let store = storage_postgres::PostgresStore::connect(options)
                .await
                .map_err(|source| WiringError::Open {
                    backend: "PostgreSQL",
                    source,
                })?;
            let sql = store.sql_store().clone();
            Ok((Arc::new(store), sql))
        }
        #[cfg(not(feature = "enterprise"))]
        storage @ (StorageBackend::Mysql { .. } | StorageBackend::Postgres { .. }) => {
            Err(not_compiled(storage))
        }
    }
}

/// Reads the original backend's rows from `source` for `import-original`, and where they were
/// found (the original tables, or the backup of an in-place upgrade).
///
/// # Errors
/// A backend that was not compiled in, or a source that cannot be read.
pub async fn read_original(
    source: &StorageBackend,
) -> Result<(OriginalTables, OriginalData), WiringError> {
    match source {
        #[cfg(feature = "lightweight")]
        StorageBackend::Sqlite { path } => {
            storage_sqlite::read_original(path)
                .await
                .map_err(|source| WiringError::Open {
                    backend: "the original SQLite database",
                    source,
                })
        }
        #[cfg(not(feature = "lightweight"))]
        StorageBackend::Sqlite { .. } => Err(WiringError::NotCompiled {
            backend: "SQLite",
            why: "a SQLite path as the import source",
            feature: "lightweight",
            fallback: "a mysql:// source",
        }),
        #[cfg(feature = "enterprise")]
        StorageBackend::Mysql { url } => {
            storage_mysql::read_original(url.expose())
                .await
                .map_err(|source| WiringError::Open {
                    backend: "the original MySQL database",
                    source,
                })
        }
        #[cfg(not(feature = "enterprise"))]
        StorageBackend::Mysql { .. } => Err(WiringError::NotCompiled {
            backend: "MySQL",
            why: "a MySQL URL as the import source",
            feature: "enterprise",
            fallback: "a SQLite path",
        }),
        // `import_original::parse_source` never yields one: the original never ran on it.
        StorageBackend::Postgres { .. } => Err(WiringError::Open {
            backend: "the original database",
            source: domain::Error::Internal(
                "the original backend never ran on PostgreSQL; give its SQLite path or MySQL URL"
                    .to_owned(),
            ),
        }),
    }
}

/// Imports the original backend's rows into the configured store.
///
/// # Errors
/// A backend that was not compiled in, or a store that cannot be opened or written.
pub async fn import_original(
    settings: &Settings,
    data: &OriginalData,
) -> Result<ImportReport, WiringError> {
    let import_error = |backend| move |source| WiringError::Open { backend, source };
    match &settings.storage {
        #[cfg(feature = "lightweight")]
        StorageBackend::Sqlite { path } => {
            let options = storage_sqlite::SqliteOptions::file(path.clone());
            let store = storage_sqlite::SqliteStore::connect(options)
                .await
                .map_err(import_error("SQLite"))?;
            let report = store.sql_store().import_original(data).await;
            let closed = store.close().await;
            let report = report.map_err(import_error("SQLite"))?;
            closed.map_err(import_error("SQLite"))?;
            Ok(report)
        }
        #[cfg(feature = "enterprise")]
        StorageBackend::Mysql { url } => {
            let options = storage_mysql::MysqlOptions::new(url.expose());
            let store = storage_mysql::MysqlStore::connect(options)
                .await
                .map_err(import_error("MySQL"))?;
            let report = store.sql_store().import_original(data).await;
            let _ = store.close().await;
            report.map_err(import_error("MySQL"))
        }
        #[cfg(feature = "enterprise")]
        StorageBackend::Postgres { url } => {
            let options = storage_postgres::PostgresOptions::new(url.expose());
            let store = storage_postgres::PostgresStore::connect(options)
                .await
                .map_err(import_error("PostgreSQL"))?;
            let report = store.sql_store().import_original(data).await;
            let _ = store.close().await;
            report.map_err(import_error("PostgreSQL"))
        }
        #[allow(
            unreachable_patterns,
            reason = "reached only in a build without one edition"
        )]
        _ => Err(not_compiled(&settings.storage)),
    }
}

/// Upgrades the configured store, which the original backend wrote, in place.
///
/// # Errors
/// A backend that was not compiled in, or a store that cannot be opened or upgraded.
pub async fn upgrade_original(settings: &Settings) -> Result<ImportReport, WiringError> {
    let upgrade_error = |backend| move |source| WiringError::Open { backend, source };
    match &settings.storage {
        #[cfg(feature = "lightweight")]
        StorageBackend::Sqlite { path } => {
            let options = storage_sqlite::SqliteOptions::file(path.clone());
            let (store, report) = storage_sqlite::SqliteStore::upgrade_original(options)
                .await
                .map_err(upgrade_error("SQLite"))?;
            store.close().await.map_err(upgrade_error("SQLite"))?;
            Ok(report)
        }
        #[cfg(feature = "enterprise")]
        StorageBackend::Mysql { url } => {
            let options = storage_mysql::MysqlOptions::new(url.expose());
            let (store, report) = storage_mysql::MysqlStore::upgrade_original(options)
                .await
                .map_err(upgrade_error("MySQL"))?;
            let _ = store.close().await;
            Ok(report)
        }
        #[cfg(feature = "enterprise")]
        StorageBackend::Postgres { url } => {
            let options = storage_postgres::PostgresOptions::new(url.expose());
            let (store, report) = storage_postgres::PostgresStore::upgrade_original(options)
                .await
                .map_err(upgrade_error("PostgreSQL"))?;
            let _ = store.close().await;
            Ok(report)
        }
        #[allow(
            unreachable_patterns,
            reason = "reached only in a build without one edition"
        )]
        _ => Err(not_compiled(&settings.storage)),
    }
}

/// The error for a configured store whose edition this binary lacks.
fn not_compiled(storage: &StorageBackend) -> WiringError {
    match storage {
        StorageBackend::Sqlite { .. } => WiringError::NotCompiled {
            backend: "SQLite",
            why: "DB_TYPE=sqlite or no MySQL settings",
            feature: "lightweight",
            fallback: "DB_TYPE=mysql",
        },
        StorageBackend::Mysql { .. } => WiringError::NotCompiled {
            backend: "MySQL",
            why: "DB_TYPE=mysql, DATABASE_URL or DB_HOST",
            feature: "enterprise",
            fallback: "DB_TYPE=sqlite",
        },
        StorageBackend::Postgres { .. } => WiringError::NotCompiled {
            backend: "PostgreSQL",
            why: "DB_TYPE=postgres or a postgres:// DATABASE_URL",
            feature: "enterprise",
            fallback: "DB_TYPE=sqlite",
        },
    }
}

type CachePorts = (
    Arc<dyn RotationState>,
    Arc<dyn UsageCounters>,
    Arc<dyn ConfigEvents>,
    Arc<dyn Leases>,
    Arc<dyn ClientLimiter>,
    &'static str,
);

async fn connect_cache(settings: &Settings) -> Result<CachePorts, WiringError> {
    match &settings.cache {
        CacheBackend::Memory => {
            let cache = Arc::new(MemoryCache::default());
            let leases = Arc::new(cache_memory::MemoryLeases::default());
            let limiter = Arc::new(cache_memory::MemoryClientLimiter::default());
            Ok((
                cache.clone(),
                cache.clone(),
                cache,
                leases,
                limiter,
                "memory",
            ))
        }
        #[cfg(feature = "enterprise")]
        CacheBackend::Redis {
            url,
            tls_ca_cert_file,
            namespace,
            rotation_block_size,
        } => {
            let options = cache_redis::RedisOptions {
                url: url.expose().to_owned(),
                tls_ca_cert_file: tls_ca_cert_file.clone(),
                namespace: namespace.clone(),
                rotation_block_size: *rotation_block_size,
                // A request waits at most this long on Redis before the local fallback serves it.
                command_timeout: std::time::Duration::from_millis(500),
                ..cache_redis::RedisOptions::default()
            };
            let cache = Arc::new(cache_redis::RedisCache::connect(options).await.map_err(
                |source| WiringError::Open {
                    backend: "Redis",
                    source,
                },
            )?);
            // Proxying must outlive a Redis outage: rotation falls back to this instance.
            let rotation = Arc::new(crate::resilience::FallbackRotation::new(cache.clone()));
            // Connected is not working: probe the shared-state operations now, so a cache that
            // answers PING but not them (a cluster node named by a standalone URL, an ACL user
            // that may not run scripts) is logged and reported by /ready from start-up on.
            let _ = rotation.ping().await;
            // Client-key limits are shared through Redis, and local while it is down.
            let limiter = Arc::new(crate::resilience::FallbackLimiter::new(cache.clone()));
            Ok((
                rotation,
                cache.clone(),
                cache.clone(),
                cache,
                limiter,
                "redis",
            ))
        }
        #[cfg(not(feature = "enterprise"))]
        CacheBackend::Redis { .. } => Err(WiringError::NotCompiled {
            backend: "Redis",
            why: "CACHE_TYPE=redis, REDIS_URL or REDIS_HOST",
            feature: "enterprise",
            fallback: "CACHE_TYPE=memory",
        }),
    }
}

/// The crate version and the edition, as `--version` prints them after the binary's name.
pub const VERSION_WITH_EDITION: &str = if cfg!(feature = "enterprise") {
    concat!(env!("CARGO_PKG_VERSION"), " (enterprise)")
} else {
    concat!(env!("CARGO_PKG_VERSION"), " (lightweight)")
};

/// The edition this binary was built as.
pub const fn edition() -> &'static str {
    if cfg!(feature = "enterprise") {
        "enterprise"
    } else {
        "lightweight"
    }
}
