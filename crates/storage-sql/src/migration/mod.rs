//! The schema, as sea-orm migrations run by every adapter at start-up, and the reset that
//! `RESET_DB_TABLES` asks for.
//!
//! The migrator records what it applied in its own table, `akr_schema_migrations`, so a reset
//! drops exactly the tables this store owns and nothing else in the database.
//!
//! Several instances may start against one database at once, so a run is serialised by a lock
//! of the database itself: a MySQL named lock held on a pinned connection, or on PostgreSQL a
//! transaction-scoped advisory lock, with the reset and every pending migration inside that one
//! transaction (PostgreSQL's DDL is transactional, so a failed run leaves nothing behind). Any
//! sea-orm schema-builder migration runs under either; on PostgreSQL one that asks for its own
//! transaction gets a savepoint inside the outer one.

mod m20250601_000001_create_tables;
mod m20260601_000002_add_api_key_prefix;
mod m20261206_000002_config_failover_policy;
mod m20261206_000003_client_keys;
mod m20261206_000004_request_log;
mod m20261206_000005_request_log_rollup;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use sea_orm_migration::{
    MigrationTrait, MigratorTrait,
    sea_query::{Alias, DynIden, IntoIden, Table},
};

/// The table names this store owns, children first (the order to drop them in).
const OWNED_TABLES: [&str; 5] = [
    "request_log_rollup",
    "request_logs",
    "client_keys",
    "api_keys",
    "proxy_configs",
];

/// The migrations of the store, oldest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250601_000001_create_tables::Migration),
            Box::new(m20260601_000002_add_api_key_prefix::Migration),
            Box::new(m20261206_000002_config_failover_policy::Migration),
            Box::new(m20261206_000003_client_keys::Migration),
            Box::new(m20261206_000004_request_log::Migration),
            Box::new(m20261206_000005_request_log_rollup::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new(MIGRATION_TABLE).into_iden()
    }
}

/// The unique index on `proxy_configs.name`, as a database that names the violated index in
/// its error (PostgreSQL) reports it.
pub(crate) const UNIQUE_CONFIG_NAME: &str = "uq_proxy_configs_name";
/// The unique index on `proxy_configs.slug`.
pub(crate) const UNIQUE_CONFIG_SLUG: &str = "uq_proxy_configs_slug";

/// Where the migrator records the migrations it applied.
pub const MIGRATION_TABLE: &str = "akr_schema_migrations";

/// Brings the schema up to date; with `reset`, first drops the store's tables and its
/// migration record, so the tables are created anew and empty.
///
/// On MySQL the run holds a named lock (`GET_LOCK`) so instances starting together migrate one
/// at a time; the pool needs two connections for that. On PostgreSQL the whole run is one
/// transaction holding an advisory lock ([`lock_schema`]).
///
/// # Errors
/// The database error of the failing statement.
pub async fn migrate(db: &DatabaseConnection, reset: bool) -> Result<(), DbErr> {
    match db.get_database_backend() {
        DbBackend::MySql => {
            let lock = MysqlLock::acquire(db).await?;
            let outcome = run(db.into(), reset).await;
            lock.release().await;
            outcome
        }
        DbBackend::Postgres => {
            use sea_orm::TransactionTrait;
            let txn = db.begin().await?;
            let outcome = match lock_schema(&txn).await {
                Ok(()) => run((&txn).into(), reset).await,
                Err(err) => Err(err),
            };
            match outcome {
                Ok(()) => txn.commit().await,
                Err(err) => {
                    // Undone at once, releasing the lock for the next instance.
                    let _ = txn.rollback().await;
                    Err(err)
                }
            }
        }
        _ => run(db.into(), reset).await,
    }
}

async fn run(db: sea_orm::DatabaseExecutor<'_>, reset: bool) -> Result<(), DbErr> {
    if reset {
        drop_owned_tables(&db).await?;
    }
    Migrator::up(db, None).await
}

/// How long an instance waits for another one's migration run, in seconds.
const LOCK_WAIT_SECONDS: i32 = 60;

/// The PostgreSQL advisory lock key of schema changes: the first eight bytes of
/// SHA-256("api_key_rotator_schema_migrations"), so it cannot collide by accident with another
/// application's small integer keys in the same database.
const POSTGRES_LOCK_KEY: i64 = 0x3a6f_55e1_7c0b_9d42;

/// On PostgreSQL, takes the schema advisory lock for the rest of transaction `txn`, waiting at
/// most [`LOCK_WAIT_SECONDS`] for another instance to finish; a no-op on other databases (the
/// MySQL lock is taken around the whole run by [`migrate`]).
///
/// The wait bound (`lock_timeout`) also bounds the wait of every later statement of the
/// transaction for a table lock, so a migration never queues for long behind a live query
/// while holding up every other instance's start.
///
/// # Errors
/// [`DbErr::Migration`] when another instance held the lock for longer than the wait bound;
/// the database error otherwise.
pub async fn lock_schema(txn: &sea_orm::DatabaseTransaction) -> Result<(), DbErr> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    txn.execute_unprepared(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'"))
        .await?;
    let locked = txn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [POSTGRES_LOCK_KEY.into()],
        ))
        .await;
    match locked {
        Ok(_) => Ok(()),
        Err(err) if crate::convert::sqlstate(&err).as_deref() == Some(LOCK_NOT_AVAILABLE) => {
            Err(lock_kept_too_long())
        }
        Err(err) => Err(err),
    }
}

/// PostgreSQL's SQLSTATE `lock_not_available`, raised when `lock_timeout` runs out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

fn lock_kept_too_long() -> DbErr {
    DbErr::Migration("another instance kept the schema migration lock too long".to_owned())
}

/// Drops the store's tables and its migration record, whatever state they are in (even tables
/// of another schema with the same names).
async fn drop_owned_tables<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    for table in OWNED_TABLES.into_iter().chain([MIGRATION_TABLE]) {
        let statement = Table::drop()
            .table(Alias::new(table))
            .if_exists()
            .to_owned();
        db.execute(&statement).await?;
    }
    Ok(())
}

/// A MySQL named lock held on one pooled connection for the length of a migration run.
struct MysqlLock {
    connection: sea_orm::DatabaseTransaction,
}

const MYSQL_LOCK_NAME: &str = "api_key_rotator_schema_migrations";

impl MysqlLock {
    async fn acquire(db: &DatabaseConnection) -> Result<Self, DbErr> {
        use sea_orm::TransactionTrait;
        // A transaction pins one connection of the pool; the lock belongs to that session.
        let connection = db.begin().await?;
        let acquired = connection
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::MySql,
                "SELECT GET_LOCK(?, ?) AS acquired",
                [MYSQL_LOCK_NAME.into(), LOCK_WAIT_SECONDS.into()],
            ))
            .await?
            .and_then(|row| row.try_get::<Option<i64>>("", "acquired").ok().flatten());
        if acquired == Some(1) {
            Ok(MysqlLock { connection })
        } else {
            Err(lock_kept_too_long())
        }
    }

    async fn release(self) {
        // Best effort: the lock also goes away with the session.
        let _ = self
            .connection
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::MySql,
                "SELECT RELEASE_LOCK(?)",
                [MYSQL_LOCK_NAME.into()],
            ))
            .await;
        let _ = self.connection.rollback().await;
    }
}
