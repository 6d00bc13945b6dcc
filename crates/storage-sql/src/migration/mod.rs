//! The schema, as sea-orm migrations run by every adapter at start-up, and the reset that
//! `RESET_DB_TABLES` asks for.
//!
//! The migrator records what it applied in its own table, `akr_schema_migrations`, so a reset
//! drops exactly the tables this store owns and nothing else in the database.

mod m20250601_000001_create_tables;
mod m20260601_000002_add_api_key_prefix;
mod m20261206_000002_config_failover_policy;
mod m20261206_000004_request_log;
mod m20261206_000005_request_log_rollup;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use sea_orm_migration::{
    MigrationTrait, MigratorTrait,
    sea_query::{Alias, DynIden, IntoIden, Table},
};

/// The table names this store owns, children first (the order to drop them in).
const OWNED_TABLES: [&str; 4] = [
    "request_log_rollup",
    "request_logs",
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
            Box::new(m20261206_000004_request_log::Migration),
            Box::new(m20261206_000005_request_log_rollup::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new(MIGRATION_TABLE).into_iden()
    }
}

/// Where the migrator records the migrations it applied.
pub const MIGRATION_TABLE: &str = "akr_schema_migrations";

/// Brings the schema up to date; with `reset`, first drops the store's tables and its
/// migration record, so the tables are created anew and empty.
///
/// On MySQL the run holds a named lock (`GET_LOCK`) so instances starting together migrate one
/// at a time; the pool needs two connections for that.
///
/// # Errors
/// The database error of the failing statement.
pub async fn migrate(db: &DatabaseConnection, reset: bool) -> Result<(), DbErr> {
    match db.get_database_backend() {
        DbBackend::MySql => {
            let lock = MysqlLock::acquire(db).await?;
            let outcome = run(db, reset).await;
            lock.release().await;
            outcome
        }
        _ => run(db, reset).await,
    }
}

async fn run(db: &DatabaseConnection, reset: bool) -> Result<(), DbErr> {
    if reset {
        drop_owned_tables(db).await?;
    }
    Migrator::up(db, None).await
}

/// Drops the store's tables and its migration record, whatever state they are in (even tables
/// of another schema with the same names).
async fn drop_owned_tables(db: &DatabaseConnection) -> Result<(), DbErr> {
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

/// How long an instance waits for another one's migration run, in seconds.
const MYSQL_LOCK_WAIT_SECONDS: i32 = 60;
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
                [MYSQL_LOCK_NAME.into(), MYSQL_LOCK_WAIT_SECONDS.into()],
            ))
            .await?
            .and_then(|row| row.try_get::<Option<i64>>("", "acquired").ok().flatten());
        if acquired == Some(1) {
            Ok(MysqlLock { connection })
        } else {
            Err(DbErr::Migration(
                "another instance kept the schema migration lock too long".to_owned(),
            ))
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
