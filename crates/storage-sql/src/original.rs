//! The original Go backend's database (SPEC §11): recognising it, reading its rows, importing
//! them into this store, and upgrading such a database in place.
//!
//! The original's GORM tables have the same names as ours (`proxy_configs`, `api_keys`) but no
//! `key_hash` column and no migration record, which is how they are recognised. Its rows are
//! read with every column cast to text, so whatever types GORM chose on SQLite or MySQL (and
//! whichever columns an older version lacked) read the same way; `domain::plan_import` then
//! validates them. Keys are written through [`convert::new_key_row`], the one place a value
//! becomes its stored `(key_value, key_hash)`.
//!
//! The in-place upgrade renames the original tables to [`BACKUP_CONFIGS`] and [`BACKUP_KEYS`],
//! creates ours and imports, in one transaction on SQLite and PostgreSQL. MySQL commits every
//! DDL statement by itself, so there the renames and the schema come first and the import is
//! one transaction; if it fails, the new tables are dropped and the original ones renamed back.
//!
//! The original never ran on PostgreSQL, but a PostgreSQL store is a common target of an
//! import: ids kept from the original are written explicitly, which PostgreSQL's identity
//! sequences do not see, so every import ends by moving them past the largest id.

use chrono::{DateTime, NaiveDateTime, Utc};
use domain::{
    ApiKeyId, Error, ImportPlan, ImportReport, OriginalConfigRow, OriginalData, OriginalKeyRow,
    OriginalTable, OriginalTables, PlannedConfig, ProxyConfigId, RefusedRow, Result, plan_import,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, QueryFilter, QuerySelect, Statement,
};
use sea_orm_migration::MigratorTrait;

use crate::{
    KeyCipher, SqlStore, convert,
    entity::{api_key, proxy_config},
    migration::{MIGRATION_TABLE, Migrator},
};

/// The name the in-place upgrade gives the original `proxy_configs` table.
pub const BACKUP_CONFIGS: &str = "proxy_configs_original";
/// The name the in-place upgrade gives the original `api_keys` table.
pub const BACKUP_KEYS: &str = "api_keys_original";

/// The columns of the original `proxy_configs` (SPEC §11), read when present.
const CONFIG_COLUMNS: [&str; 14] = [
    "id",
    "name",
    "slug",
    "config_type",
    "api_key_location",
    "api_key_name",
    "is_active",
    "created_at",
    "updated_at",
    "method",
    "target_url",
    "target_base_url",
    "api_format",
    "output_format",
];
/// The columns of the original `api_keys`.
const KEY_COLUMNS: [&str; 4] = ["id", "key_value", "is_active", "proxy_config_id"];

/// The one-line answer of a server started on an original database.
pub const ORIGINAL_DATABASE_MESSAGE: &str = "this database holds the tables of the original Go \
     backend; stop and run `api-key-rotator import-original <its DATABASE_PATH or DATABASE_URL>` \
     once, which upgrades it in place and keeps the original tables as proxy_configs_original \
     and api_keys_original";

/// The `(configs, keys)` table names of `tables`.
fn names(tables: OriginalTables) -> (&'static str, &'static str) {
    match tables {
        OriginalTables::InPlace => ("proxy_configs", "api_keys"),
        OriginalTables::Backup => (BACKUP_CONFIGS, BACKUP_KEYS),
    }
}

/// The column names of `table`, empty when it does not exist.
async fn columns_of<C: ConnectionTrait>(db: &C, table: &str) -> Result<Vec<String>, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::MySql => {
            "SELECT CAST(COLUMN_NAME AS CHAR) AS name FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?"
        }
        // The schema unqualified names resolve to; `sql_identifier` cast to plain text.
        DbBackend::Postgres => {
            "SELECT CAST(column_name AS TEXT) AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
        _ => "SELECT name FROM pragma_table_info(?)",
    };
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [table.into()]))
        .await?;
    rows.iter()
        .map(|row| row.try_get::<String>("", "name"))
        .collect()
}

/// Which original tables `db` holds, if any: the original names when `api_keys` has the
/// original's `key_value` but not our `key_hash`, else the backup names when they exist.
///
/// # Errors
/// The database error of the catalogue query.
pub async fn find_original_tables<C: ConnectionTrait>(
    db: &C,
) -> Result<Option<OriginalTables>, DbErr> {
    let keys = columns_of(db, "api_keys").await?;
    let has = |name: &str| keys.iter().any(|c| c.eq_ignore_ascii_case(name));
    if has("key_value") && !has("key_hash") {
        return Ok(Some(OriginalTables::InPlace));
    }
    if !columns_of(db, BACKUP_KEYS).await?.is_empty() {
        return Ok(Some(OriginalTables::Backup));
    }
    Ok(None)
}

/// `SELECT` of `wanted` columns of `table`, each cast to text; a column the table lacks reads
/// as NULL.
fn select_as_text(backend: DbBackend, table: &str, present: &[String], wanted: &[&str]) -> String {
    let text_type = if backend == DbBackend::MySql {
        "CHAR"
    } else {
        "TEXT"
    };
    let quote = |name: &str| match backend {
        DbBackend::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    };
    let columns: Vec<String> = wanted
        .iter()
        .map(|column| {
            if present.iter().any(|c| c.eq_ignore_ascii_case(column)) {
                format!(
                    "CAST({} AS {text_type}) AS {}",
                    quote(column),
                    quote(column)
                )
            } else {
                format!("NULL AS {}", quote(column))
            }
        })
        .collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        columns.join(", "),
        quote(table),
        quote("id")
    )
}

fn text(row: &sea_orm::QueryResult, column: &str) -> Option<String> {
    row.try_get::<Option<String>>("", column).ok().flatten()
}

/// GORM's booleans: `1`/`0` (SQLite numeric, MySQL tinyint) or `true`/`false`.
fn flag(row: &sea_orm::QueryResult, column: &str) -> Option<bool> {
    match text(row, column)?.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" => Some(true),
        "0" | "false" | "f" => Some(false),
        _ => None,
    }
}

/// GORM's timestamps: RFC 3339, Go's `2006-01-02 15:04:05.999999999-07:00` (SQLite), a
/// PostgreSQL `timestamptz` as text (`2025-03-01 02:00:00.123+00`) or a MySQL `DATETIME`
/// without a zone (read as UTC).
fn timestamp(row: &sea_orm::QueryResult, column: &str) -> Option<DateTime<Utc>> {
    let value = text(row, column)?;
    parse_timestamp(value.trim())
}

fn parse_timestamp(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .or_else(|_| DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .or_else(|_| DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|at| at.and_utc())
        })
}

fn row_id(row: &sea_orm::QueryResult, table: &str) -> Result<i64> {
    text(row, "id")
        .and_then(|id| id.trim().parse().ok())
        .ok_or_else(|| Error::Internal(format!("a row of {table} has no readable id")))
}

/// Reads every config and key of the original tables `tables` of `db`.
///
/// # Errors
/// `Unavailable` when the database cannot be read; `Internal` for a row without an id.
pub async fn read_original<C: ConnectionTrait>(
    db: &C,
    tables: OriginalTables,
) -> Result<OriginalData> {
    let backend = db.get_database_backend();
    let error = |err: DbErr| convert::db_error(backend, &err);
    let (configs_table, keys_table) = names(tables);
    let config_columns = columns_of(db, configs_table).await.map_err(error)?;
    let key_columns = columns_of(db, keys_table).await.map_err(error)?;
    let config_rows = db
        .query_all_raw(Statement::from_string(
            backend,
            select_as_text(backend, configs_table, &config_columns, &CONFIG_COLUMNS),
        ))
        .await
        .map_err(error)?;
    let key_rows = db
        .query_all_raw(Statement::from_string(
            backend,
            select_as_text(backend, keys_table, &key_columns, &KEY_COLUMNS),
        ))
        .await
        .map_err(error)?;
    let mut data = OriginalData::default();
    for row in &config_rows {
        data.configs.push(OriginalConfigRow {
            id: row_id(row, configs_table)?,
            name: text(row, "name"),
            slug: text(row, "slug"),
            config_type: text(row, "config_type"),
            api_key_location: text(row, "api_key_location"),
            api_key_name: text(row, "api_key_name"),
            is_active: flag(row, "is_active"),
            created_at: timestamp(row, "created_at"),
            updated_at: timestamp(row, "updated_at"),
            method: text(row, "method"),
            target_url: text(row, "target_url"),
            target_base_url: text(row, "target_base_url"),
            api_format: text(row, "api_format"),
            output_format: text(row, "output_format"),
        });
    }
    for row in &key_rows {
        data.keys.push(OriginalKeyRow {
            id: row_id(row, keys_table)?,
            proxy_config_id: text(row, "proxy_config_id").and_then(|id| id.trim().parse().ok()),
            key_value: text(row, "key_value"),
            is_active: flag(row, "is_active"),
        });
    }
    Ok(data)
}

/// A config or key that waits for a free id until every row that keeps its own id is in.
enum Deferred {
    Config(Box<PlannedConfig>),
    Key(ProxyConfigId, domain::PlannedKey),
}

/// Applies an import plan on one connection (a transaction): every config whose slug the
/// store lacks is created, every key its config lacks is added, ids are kept where free.
struct Importer<'c, C> {
    db: &'c C,
    backend: DbBackend,
    cipher: Option<&'c KeyCipher>,
    report: ImportReport,
    deferred: Vec<Deferred>,
}

impl<'c, C: ConnectionTrait> Importer<'c, C> {
    fn error(&self, err: DbErr) -> Error {
        convert::db_error(self.backend, &err)
    }

    async fn run(mut self, plan: ImportPlan) -> Result<ImportReport> {
        self.report.refused = plan.refused;
        for config in plan.configs {
            self.config(config, false).await?;
        }
        // A renumbered config's own keys may be deferred in turn, hence the loop; the second
        // round renumbers, so it defers nothing but those keys.
        while !self.deferred.is_empty() {
            for deferred in std::mem::take(&mut self.deferred) {
                match deferred {
                    Deferred::Config(config) => self.config(*config, true).await?,
                    Deferred::Key(config, key) => self.key(config, key, true).await?,
                }
            }
        }
        self.report
            .refused
            .sort_by_key(|row| (row.table == OriginalTable::ApiKeys, row.id));
        Ok(self.report)
    }

    fn refuse_with_keys(&mut self, config: &PlannedConfig, reason: String) {
        let id = config.original_id.0;
        self.report.refused.push(RefusedRow {
            table: OriginalTable::ProxyConfigs,
            id,
            reason,
        });
        for key in &config.keys {
            self.report.refused.push(RefusedRow {
                table: OriginalTable::ApiKeys,
                id: key.original_id.0,
                reason: format!("its config {id} was refused"),
            });
        }
    }

    async fn config(&mut self, config: PlannedConfig, renumber: bool) -> Result<()> {
        let existing = |column: proxy_config::Column, value: &str| {
            proxy_config::Entity::find()
                .select_only()
                .column(proxy_config::Column::Id)
                .filter(column.eq(value))
                .into_tuple::<i64>()
                .one(self.db)
        };
        let by_slug = existing(proxy_config::Column::Slug, config.spec.slug.as_str())
            .await
            .map_err(|err| self.error(err))?;
        if let Some(id) = by_slug {
            self.report.configs_already_present += 1;
            for key in config.keys {
                self.key(ProxyConfigId(id), key, false).await?;
            }
            return Ok(());
        }
        let by_name = existing(proxy_config::Column::Name, config.spec.name.as_str())
            .await
            .map_err(|err| self.error(err))?;
        if let Some(other) = by_name {
            let reason = format!("its name is taken by config {other}, which has another slug");
            self.refuse_with_keys(&config, reason);
            return Ok(());
        }
        let original = config.original_id;
        let id_free = proxy_config::Entity::find_by_id(original.0)
            .one(self.db)
            .await
            .map_err(|err| self.error(err))?
            .is_none();
        if !id_free && !renumber {
            self.deferred.push(Deferred::Config(Box::new(config)));
            return Ok(());
        }
        let now = convert::now();
        let created_at = config.created_at.map_or(now, convert::stored_time);
        let mut row = convert::new_config_row(&config.spec, created_at);
        row.updated_at = Set(config
            .updated_at
            .map_or(now, convert::stored_time)
            .max(created_at));
        if id_free {
            row.id = Set(original.0);
        }
        let inserted = row.insert(self.db).await.map_err(|err| self.error(err))?;
        self.report.configs_imported += 1;
        if !id_free {
            self.report
                .configs_renumbered
                .push((original.0, inserted.id));
        }
        for key in config.keys {
            self.key(ProxyConfigId(inserted.id), key, false).await?;
        }
        Ok(())
    }

    async fn key(
        &mut self,
        config: ProxyConfigId,
        key: domain::PlannedKey,
        renumber: bool,
    ) -> Result<()> {
        let stored = convert::stored_key(&key.secret, self.cipher)?;
        let present = api_key::Entity::find()
            .select_only()
            .column(api_key::Column::Id)
            .filter(api_key::Column::ProxyConfigId.eq(config.0))
            .filter(api_key::Column::KeyHash.eq(stored.key_hash.as_str()))
            .into_tuple::<i64>()
            .one(self.db)
            .await
            .map_err(|err| self.error(err))?;
        if present.is_some() {
            self.report.keys_already_present += 1;
            return Ok(());
        }
        let original: ApiKeyId = key.original_id;
        let id_free = api_key::Entity::find_by_id(original.0)
            .one(self.db)
            .await
            .map_err(|err| self.error(err))?
            .is_none();
        if !id_free && !renumber {
            self.deferred.push(Deferred::Key(config, key));
            return Ok(());
        }
        let mut row = convert::new_key_row(config, stored, key.is_active, convert::now());
        if id_free {
            row.id = Set(original.0);
        }
        row.insert(self.db).await.map_err(|err| self.error(err))?;
        self.report.keys_imported += 1;
        if !id_free {
            self.report.keys_renumbered += 1;
        }
        Ok(())
    }
}

impl SqlStore {
    /// An importer writing on `db` (this store's transaction), with this store's key cipher.
    fn importer<'c, C>(&'c self, db: &'c C) -> Importer<'c, C> {
        Importer {
            db,
            backend: self.backend,
            cipher: self.key_cipher(),
            report: ImportReport::default(),
            deferred: Vec::new(),
        }
    }

    /// Imports an original database's rows (read with [`read_original`]) in one transaction:
    /// configs by slug (an existing slug means already imported), keys by fingerprint within
    /// their config, ids kept where free. Running it again imports nothing twice.
    ///
    /// # Errors
    /// `Unavailable` when the store cannot be written; nothing is imported then.
    pub async fn import_original(&self, data: &OriginalData) -> Result<ImportReport> {
        let txn = self.begin_write().await?;
        let report = self.importer(&txn).run(plan_import(data)).await?;
        self.sync_id_sequences(&txn).await?;
        self.commit(txn).await?;
        Ok(report)
    }

    /// On PostgreSQL, moves the id sequences of both tables past their largest id, so rows
    /// inserted with explicit ids are not handed out again; other databases derive the next id
    /// from the table itself.
    async fn sync_id_sequences<C: ConnectionTrait>(&self, db: &C) -> Result<()> {
        if self.backend != DbBackend::Postgres {
            return Ok(());
        }
        for table in ["proxy_configs", "api_keys"] {
            // `is_called = false`: the next value handed out is exactly MAX(id) + 1.
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 COALESCE(MAX(id), 0) + 1, false) FROM \"{table}\""
            );
            db.execute_unprepared(&sql)
                .await
                .map_err(|err| self.error(err))?;
        }
        Ok(())
    }

    /// Upgrades a database the original backend wrote into this store, in place: its tables
    /// are renamed to [`BACKUP_CONFIGS`] and [`BACKUP_KEYS`], this store's schema is created and
    /// their rows imported. On SQLite and PostgreSQL all of it is one transaction; on MySQL
    /// (whose DDL commits by itself) a failed import drops the new tables and renames the
    /// original ones back.
    ///
    /// # Errors
    /// `Internal` when `db` holds no original tables or the backup names are taken;
    /// `Unavailable` when the database cannot be written.
    pub async fn upgrade_original(
        db: DatabaseConnection,
        cipher: Option<KeyCipher>,
    ) -> Result<(SqlStore, ImportReport)> {
        let backend = db.get_database_backend();
        let error = |err: DbErr| convert::db_error(backend, &err);
        if find_original_tables(&db).await.map_err(error)? != Some(OriginalTables::InPlace) {
            return Err(Error::Internal(
                "this database holds no tables of the original backend to upgrade".to_owned(),
            ));
        }
        if !columns_of(&db, BACKUP_CONFIGS)
            .await
            .map_err(error)?
            .is_empty()
        {
            return Err(Error::Internal(format!(
                "{BACKUP_CONFIGS} already exists; rename or drop it before upgrading in place"
            )));
        }
        let store = SqlStore::wrap(db).with_key_cipher(cipher);
        let report = match backend {
            DbBackend::MySql => store.upgrade_mysql().await?,
            _ => store.upgrade_in_one_transaction().await?,
        };
        Ok((store, report))
    }

    async fn upgrade_in_one_transaction(&self) -> Result<ImportReport> {
        let txn = self.begin_write().await?;
        crate::migration::lock_schema(&txn)
            .await
            .map_err(|err| self.error(err))?;
        for statement in rename_statements(self.backend, OriginalTables::InPlace) {
            txn.execute_unprepared(&statement)
                .await
                .map_err(|err| self.error(err))?;
        }
        Migrator::up(&txn, None)
            .await
            .map_err(|err| self.error(err))?;
        let data = read_original(&txn, OriginalTables::Backup).await?;
        let report = self.importer(&txn).run(plan_import(&data)).await?;
        self.sync_id_sequences(&txn).await?;
        self.commit(txn).await?;
        Ok(report)
    }

    async fn upgrade_mysql(&self) -> Result<ImportReport> {
        for statement in rename_statements(self.backend, OriginalTables::InPlace) {
            self.db
                .execute_unprepared(&statement)
                .await
                .map_err(|err| self.error(err))?;
        }
        let outcome = match crate::migration::migrate(&self.db, false).await {
            Ok(()) => {
                let data = read_original(&self.db, OriginalTables::Backup).await?;
                self.import_original(&data).await
            }
            Err(err) => Err(self.error(err)),
        };
        if outcome.is_err() {
            self.undo_mysql_upgrade().await;
        }
        outcome
    }

    /// Best effort: drops what the failed upgrade created and gives the original tables their
    /// names back, so the database is as the original left it.
    async fn undo_mysql_upgrade(&self) {
        for table in ["api_keys", "proxy_configs", MIGRATION_TABLE] {
            let _ = self
                .db
                .execute_unprepared(&format!("DROP TABLE IF EXISTS `{table}`"))
                .await;
        }
        for statement in rename_statements(self.backend, OriginalTables::Backup) {
            let _ = self.db.execute_unprepared(&statement).await;
        }
    }
}

/// The statements that move the original tables from `from` to the other pair of names.
fn rename_statements(backend: DbBackend, from: OriginalTables) -> Vec<String> {
    let (configs, keys) = names(from);
    let (to_configs, to_keys) = match from {
        OriginalTables::InPlace => names(OriginalTables::Backup),
        OriginalTables::Backup => names(OriginalTables::InPlace),
    };
    match backend {
        // One statement: both renames happen together or not at all.
        DbBackend::MySql => vec![format!(
            "RENAME TABLE `{keys}` TO `{to_keys}`, `{configs}` TO `{to_configs}`"
        )],
        // SQLite rewrites the foreign key of the keys table to the renamed configs table;
        // PostgreSQL's foreign keys follow the table, not its name.
        _ => vec![
            format!("ALTER TABLE \"{keys}\" RENAME TO \"{to_keys}\""),
            format!("ALTER TABLE \"{configs}\" RENAME TO \"{to_configs}\""),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_columns_read_as_null_and_present_ones_as_text() {
        let present = vec!["id".to_owned(), "Name".to_owned()];
        let sql = select_as_text(
            DbBackend::Sqlite,
            "proxy_configs",
            &present,
            &["id", "name", "output_format"],
        );
        assert_eq!(
            sql,
            r#"SELECT CAST("id" AS TEXT) AS "id", CAST("name" AS TEXT) AS "name", NULL AS "output_format" FROM "proxy_configs" ORDER BY "id""#
        );
        let sql = select_as_text(DbBackend::MySql, "api_keys", &present, &["id"]);
        assert_eq!(
            sql,
            "SELECT CAST(`id` AS CHAR) AS `id` FROM `api_keys` ORDER BY `id`"
        );
    }

    #[test]
    fn timestamps_read_in_every_form_an_original_or_a_cast_writes() {
        let expected = "2025-03-01T02:00:00.123Z";
        for value in [
            "2025-03-01T10:00:00.123+08:00",
            "2025-03-01 10:00:00.123+08:00",
            "2025-03-01 02:00:00.123+00",
            "2025-03-01 02:00:00.123",
        ] {
            let at = parse_timestamp(value).unwrap_or_else(|| panic!("{value} parses"));
            assert_eq!(
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                expected,
                "{value}"
            );
        }
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn mysql_renames_both_tables_in_one_statement() {
        assert_eq!(
            rename_statements(DbBackend::MySql, OriginalTables::InPlace),
            [
                "RENAME TABLE `api_keys` TO `api_keys_original`, `proxy_configs` TO `proxy_configs_original`"
            ]
        );
        assert_eq!(
            rename_statements(DbBackend::Sqlite, OriginalTables::Backup)[1],
            r#"ALTER TABLE "proxy_configs_original" RENAME TO "proxy_configs""#
        );
    }
}
