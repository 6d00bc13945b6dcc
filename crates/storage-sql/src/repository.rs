//! [`SqlStore`]: the `ProxyStore` port over any sea-orm connection, written once for SQLite,
//! MySQL and PostgreSQL.
//!
//! Writes that read before they write run in one transaction, started `IMMEDIATE` on SQLite so
//! two writers never meet in the middle (a deferred transaction that upgrades to a write fails
//! at once with "database is locked" instead of waiting for the busy timeout). Batch import and
//! usage flushes (a `CASE` per column, or an `UPDATE` joined to a `VALUES` list on PostgreSQL)
//! are a handful of multi-row statements, sized below every backend's
//! bound-parameter limit (SQLite 32 766, MySQL and PostgreSQL 65 535) and well below MySQL's
//! packet limit.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{
    ApiKey, ApiKeyId, ConfigSnapshot, Entity, Error, HealthState, InsertedKeys, KeyCount,
    KeyHealth, KeyRange, KeySecret, ProxyConfig, ProxyConfigId, ProxyConfigSpec, ProxyStore,
    Result, Slug, UsageDelta,
};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
    sea_query::{CaseStatement, Expr, ExprTrait, OnConflict, Query},
};

use crate::{
    KeyCipher,
    convert::{self, Violation},
    entity::{api_key, proxy_config},
    migration, stored_key,
};

/// Most bound parameters one statement may carry: under SQLite's 32 766 and the 65 535 of
/// MySQL and PostgreSQL (whose wire protocol counts parameters in 16 bits).
const MAX_PARAMETERS: usize = 30_000;
/// Keys read per statement when a whole pool is read ([`SqlStore::keys_of`]).
const KEYS_PAGE: usize = 1_000;
/// Most bytes of key data one insert statement may carry: well under MySQL's smallest default
/// `max_allowed_packet` (4 MiB on MySQL 5.7, 16 MiB on MariaDB, 64 MiB on MySQL 8).
const MAX_INSERT_BYTES: usize = 2 * 1024 * 1024;
/// Bound parameters per row of the batch key insert.
const INSERT_PARAMETERS_PER_KEY: usize = 6;
/// Bound parameters per key of the usage update (four `CASE` branches and the `IN` list).
const USAGE_PARAMETERS_PER_KEY: usize = 11;
/// Bound parameters per key of PostgreSQL's and SQLite's usage update (one `VALUES` row of
/// five).
const VALUES_USAGE_PARAMETERS_PER_KEY: usize = 5;

/// The `ProxyStore` over a sea-orm connection whose schema [`SqlStore::open`] brought up to date.
///
/// Cloning is cheap and shares the connection pool. With a [`KeyCipher`] it stores key values
/// encrypted and reads them back decrypted.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) db: DatabaseConnection,
    /// Where the request log's batches and prune steps are written: the pool itself, or a
    /// connection of their own ([`SqlStore::with_log_writer`]).
    pub(crate) log_writer: DatabaseConnection,
    pub(crate) backend: DbBackend,
    cipher: Option<KeyCipher>,
}

impl SqlStore {
    /// Runs the migrations (after dropping the store's tables when `reset_tables` is set) and
    /// wraps the connection. On MySQL the pool needs at least two connections: one holds the
    /// migration lock while another migrates (PostgreSQL migrates on the one that holds its
    /// lock).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be reached; [`Error::Internal`] when the
    /// database holds the original backend's tables (the message names `import-original`), or
    /// when the schema cannot be created, for example because tables of another schema are in
    /// the way (start once with `RESET_DB_TABLES=true` to recreate them, which deletes their
    /// rows).
    pub async fn open(db: DatabaseConnection, reset_tables: bool) -> Result<Self> {
        let backend = db.get_database_backend();
        let unavailable_or = |err: DbErr, otherwise: &str| match convert::db_error(backend, &err) {
            unavailable @ Error::Unavailable { .. } => unavailable,
            _ => Error::Internal(otherwise.to_owned()),
        };
        if !reset_tables {
            let original = crate::original::find_original_tables(&db)
                .await
                .map_err(|err| unavailable_or(err, "the database schema could not be read"))?;
            if original == Some(domain::OriginalTables::InPlace) {
                return Err(Error::Internal(
                    crate::original::ORIGINAL_DATABASE_MESSAGE.to_owned(),
                ));
            }
        }
        migration::migrate(&db, reset_tables).await.map_err(|err| {
            unavailable_or(
                err,
                "the database schema could not be created or upgraded; if the database holds \
                 tables of an older or foreign schema, start once with RESET_DB_TABLES=true \
                 to recreate them (this deletes their rows)",
            )
        })?;
        Ok(SqlStore::wrap(db))
    }

    /// Wraps a connection whose schema is known to be current.
    pub(crate) fn wrap(db: DatabaseConnection) -> Self {
        let backend = db.get_database_backend();
        SqlStore {
            log_writer: db.clone(),
            db,
            backend,
            cipher: None,
        }
    }

    /// Writes the request log through `writer` from now on (SQLite's adapter gives it one
    /// connection of its own). Its page cache then stays warm between batches: a pooled
    /// connection that another one wrote behind drops its whole cache at its next
    /// transaction, so batches spread over the pool re-read the log's index pages each time.
    #[must_use]
    pub fn with_log_writer(mut self, writer: DatabaseConnection) -> Self {
        self.log_writer = writer;
        self
    }

    /// Encrypts key values with `cipher` from now on (`None`: stores them as they are).
    ///
    /// Rows already stored are not touched: [`SqlStore::key_census`] tells whether they match,
    /// and [`SqlStore::rewrite_key_values`] migrates them.
    pub fn with_key_cipher(mut self, cipher: Option<KeyCipher>) -> Self {
        self.cipher = cipher;
        self
    }

    /// The cipher key values are stored with, if any.
    pub fn key_cipher(&self) -> Option<&KeyCipher> {
        self.cipher.as_ref()
    }

    /// The underlying connection pool.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Closes every connection of the pool.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when closing fails.
    pub async fn close(self) -> Result<()> {
        let backend = self.backend;
        // Closing a pool twice (the log writer is the pool itself by default) is harmless.
        let writer = self.log_writer.close().await;
        self.db
            .close()
            .await
            .and(writer)
            .map_err(|err| convert::db_error(backend, &err))
    }

    pub(crate) fn error(&self, err: DbErr) -> Error {
        convert::db_error(self.backend, &err)
    }

    fn key_from_row(&self, row: api_key::Model) -> Result<ApiKey> {
        convert::key_from_row(row, self.cipher.as_ref())
    }

    /// Starts a transaction that will write.
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction> {
        self.begin_write_on(&self.db).await
    }

    /// A write transaction on `db` (the pool or the log writer).
    pub(crate) async fn begin_write_on(
        &self,
        db: &DatabaseConnection,
    ) -> Result<DatabaseTransaction> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        db.begin_with_options(options)
            .await
            .map_err(|err| self.error(err))
    }

    pub(crate) async fn commit(&self, txn: DatabaseTransaction) -> Result<()> {
        txn.commit().await.map_err(|err| self.error(err))
    }

    async fn find_config<C: ConnectionTrait>(
        &self,
        db: &C,
        id: ProxyConfigId,
    ) -> Result<proxy_config::Model> {
        proxy_config::Entity::find_by_id(id.0)
            .one(db)
            .await
            .map_err(|err| self.error(err))?
            .ok_or_else(|| Error::config_not_found(id))
    }

    /// Reads a config inside a write transaction, locking its row on MySQL and PostgreSQL
    /// (SQLite's `IMMEDIATE` transaction already excludes other writers).
    async fn config_for_update(
        &self,
        txn: &DatabaseTransaction,
        id: ProxyConfigId,
    ) -> Result<proxy_config::Model> {
        proxy_config::Entity::find_by_id(id.0)
            .lock_exclusive()
            .one(txn)
            .await
            .map_err(|err| self.error(err))?
            .ok_or_else(|| Error::config_not_found(id))
    }

    /// Reads a key inside a write transaction, locking its row on MySQL and PostgreSQL.
    async fn key_for_update(
        &self,
        txn: &DatabaseTransaction,
        id: ApiKeyId,
    ) -> Result<api_key::Model> {
        api_key::Entity::find_by_id(id.0)
            .lock_exclusive()
            .one(txn)
            .await
            .map_err(|err| self.error(err))?
            .ok_or_else(|| Error::key_not_found(id))
    }

    /// Checks the config exists and, on MySQL and PostgreSQL, locks its row until the
    /// transaction ends, so it cannot be deleted under a batch insert.
    async fn lock_config(&self, txn: &DatabaseTransaction, id: ProxyConfigId) -> Result<()> {
        proxy_config::Entity::find_by_id(id.0)
            .select_only()
            .column(proxy_config::Column::Id)
            .lock_exclusive()
            .into_tuple::<i64>()
            .one(txn)
            .await
            .map_err(|err| self.error(err))?
            .map(|_| ())
            .ok_or_else(|| Error::config_not_found(id))
    }

    async fn find_key<C: ConnectionTrait>(&self, db: &C, id: ApiKeyId) -> Result<api_key::Model> {
        api_key::Entity::find_by_id(id.0)
            .one(db)
            .await
            .map_err(|err| self.error(err))?
            .ok_or_else(|| Error::key_not_found(id))
    }

    /// Every key of a config, ordered by id, read [`KEYS_PAGE`] rows at a time: only one page
    /// of raw rows is held beside the keys already converted, instead of the whole pool twice
    /// over (a 100 000-key pool read at once took 230 MiB on top of the keys).
    async fn keys_of<C: ConnectionTrait>(
        &self,
        db: &C,
        config: ProxyConfigId,
    ) -> Result<Vec<ApiKey>> {
        let mut keys: Vec<ApiKey> = Vec::new();
        loop {
            let range = KeyRange {
                after: keys.last().map(|key| key.id),
                limit: KEYS_PAGE,
                is_active: None,
            };
            let page = self.key_range_on(db, config, range).await?;
            let full = page.len() == KEYS_PAGE;
            keys.extend(page);
            if !full {
                return Ok(keys);
            }
        }
    }

    /// At most `range.limit` keys of a config with an id above `range.after` (and the switch
    /// `range.is_active` when given), ordered by id, read on `db`.
    async fn key_range_on<C: ConnectionTrait>(
        &self,
        db: &C,
        config: ProxyConfigId,
        range: KeyRange,
    ) -> Result<Vec<ApiKey>> {
        let mut select =
            api_key::Entity::find().filter(api_key::Column::ProxyConfigId.eq(config.0));
        if let Some(after) = range.after {
            select = select.filter(api_key::Column::Id.gt(after.0));
        }
        if let Some(is_active) = range.is_active {
            select = select.filter(api_key::Column::IsActive.eq(is_active));
        }
        select
            .order_by_asc(api_key::Column::Id)
            .limit(u64::try_from(range.limit).unwrap_or(u64::MAX))
            .all(db)
            .await
            .map_err(|err| self.error(err))?
            .into_iter()
            .map(|row| self.key_from_row(row))
            .collect()
    }

    /// Turns a failed config write into the error to report: a unique violation becomes a
    /// conflict naming the taken field. PostgreSQL names the violated index, which is the
    /// answer (and its transaction accepts no further statement after the failure); MySQL and
    /// SQLite do not, so there it is found by asking which field another config holds.
    async fn config_write_error<C: ConnectionTrait>(
        &self,
        db: &C,
        err: DbErr,
        spec: &ProxyConfigSpec,
        except: Option<ProxyConfigId>,
    ) -> Error {
        if convert::violation(&err) != Some(Violation::Unique) {
            return self.error(err);
        }
        match convert::violated_constraint(&err) {
            Some(migration::UNIQUE_CONFIG_NAME) => {
                return convert::conflict(Entity::ProxyConfig, "name");
            }
            Some(migration::UNIQUE_CONFIG_SLUG) => {
                return convert::conflict(Entity::ProxyConfig, "slug");
            }
            _ => {}
        }
        let mut same_name = proxy_config::Entity::find()
            .select_only()
            .column(proxy_config::Column::Id)
            .filter(proxy_config::Column::Name.eq(spec.name.as_str()));
        if let Some(id) = except {
            same_name = same_name.filter(proxy_config::Column::Id.ne(id.0));
        }
        match same_name.into_tuple::<i64>().one(db).await {
            Ok(Some(_)) => convert::conflict(Entity::ProxyConfig, "name"),
            Ok(None) => convert::conflict(Entity::ProxyConfig, "slug"),
            Err(err) => self.error(err),
        }
    }

    /// The multi-row insert of one chunk of keys, skipping the ones the config already has:
    /// `ON CONFLICT DO NOTHING` (SQLite, PostgreSQL) or `INSERT IGNORE` (MySQL). The affected
    /// row count is the number inserted.
    fn insert_keys_statement(
        &self,
        config: ProxyConfigId,
        keys: &[KeySecret],
        is_active: bool,
        at: DateTime<Utc>,
    ) -> Result<Statement> {
        use api_key::Column;
        let mut insert = Query::insert();
        insert.into_table(api_key::Entity).columns([
            Column::ProxyConfigId,
            Column::KeyValue,
            Column::KeyHash,
            Column::IsActive,
            Column::CreatedAt,
            Column::UpdatedAt,
        ]);
        for key in keys {
            let stored = stored_key(key, self.cipher.as_ref())?;
            insert
                .values([
                    Expr::val(config.0),
                    Expr::val(stored.key_value),
                    Expr::val(stored.key_hash),
                    Expr::val(is_active),
                    Expr::val(at),
                    Expr::val(at),
                ])
                .map_err(|_| Error::Internal("malformed batch insert".to_owned()))?;
        }
        if self.backend == DbBackend::MySql {
            let mut statement = self.backend.build(&insert);
            statement.sql = statement.sql.replacen("INSERT ", "INSERT IGNORE ", 1);
            Ok(statement)
        } else {
            insert.on_conflict(
                OnConflict::columns([Column::ProxyConfigId, Column::KeyHash])
                    .do_nothing()
                    .to_owned(),
            );
            Ok(self.backend.build(&insert))
        }
    }

    /// One `UPDATE` adding a chunk of usage deltas (MySQL's form): counters add up, and
    /// `last_status` and `last_used_at` move only when the delta is at least as recent as what
    /// is stored.
    fn usage_statement(&self, deltas: &[UsageDelta], at: DateTime<Utc>) -> Statement {
        use api_key::Column;
        let is_key = |id: ApiKeyId| Expr::col(Column::Id).eq(id.0);
        let mut requests = CaseStatement::new();
        let mut failures = CaseStatement::new();
        let mut status = CaseStatement::new();
        let mut used = CaseStatement::new();
        let mut any_use = false;
        for delta in deltas {
            requests = requests.case(
                is_key(delta.key_id),
                Expr::val(convert::counter(delta.requests)),
            );
            failures = failures.case(
                is_key(delta.key_id),
                Expr::val(convert::counter(delta.failures)),
            );
            if let Some(last_used) = delta.last_used_at {
                let last_used = convert::stored_time(last_used);
                let newer = is_key(delta.key_id).and(
                    Expr::col(Column::LastUsedAt)
                        .is_null()
                        .or(Expr::col(Column::LastUsedAt).lte(last_used)),
                );
                // As `KeyUsage::apply`: the latest use wins, keeping the old status when the
                // latest attempt had none.
                let new_status = match delta.last_status {
                    Some(code) => Expr::val(i32::from(code)),
                    None => Expr::col(Column::LastStatus),
                };
                status = status.case(newer.clone(), new_status);
                used = used.case(newer, Expr::val(last_used));
                any_use = true;
            }
        }
        let mut update = Query::update();
        update
            .table(api_key::Entity)
            .value(
                Column::RequestCount,
                Expr::col(Column::RequestCount).add(requests.finally(Expr::val(0_i64))),
            )
            .value(
                Column::FailureCount,
                Expr::col(Column::FailureCount).add(failures.finally(Expr::val(0_i64))),
            );
        if any_use {
            // MySQL evaluates assignments left to right with the new values: `last_status` must
            // come before `last_used_at`, whose old value it compares with. (SQLite and
            // PostgreSQL read every old value, so the order is harmless there.)
            update
                .value(
                    Column::LastStatus,
                    status.finally(Expr::col(Column::LastStatus)),
                )
                .value(
                    Column::LastUsedAt,
                    used.finally(Expr::col(Column::LastUsedAt)),
                );
        }
        update
            .value(Column::UpdatedAt, Expr::val(at))
            .and_where(Expr::col(Column::Id).is_in(deltas.iter().map(|d| d.key_id.0)));
        self.backend.build(&update)
    }

    /// The grouped count behind [`ProxyStore::count_keys`]: one row per config, switch and
    /// health, where a cooldown that has ended by `now` counts as ok. The health expression is
    /// grouped by its alias, which every supported database accepts; repeating the expression
    /// would bind `now` twice, and MySQL does not see two placeholders as one expression.
    fn count_keys_statement(&self, now: DateTime<Utc>) -> Statement {
        use api_key::Column;
        let cooling = || Expr::col(Column::Health).eq("cooling");
        let health = CaseStatement::new()
            .case(
                cooling().and(Expr::col(Column::CooldownUntil).gt(convert::stored_time(now))),
                Expr::val("cooling"),
            )
            .case(cooling(), Expr::val("ok"))
            .finally(Expr::col(Column::Health));
        let mut select = Query::select();
        select
            .from(api_key::Entity)
            .column(Column::ProxyConfigId)
            .column(Column::IsActive)
            .expr_as(health, "health_state")
            .expr_as(Expr::col(Column::Id).count(), "key_count")
            .group_by_col(Column::ProxyConfigId)
            .group_by_col(Column::IsActive)
            .group_by_col("health_state");
        self.backend.build(&select)
    }
}

/// Splits keys into runs that each fit one insert statement.
fn insert_chunks(keys: &[KeySecret]) -> Vec<&[KeySecret]> {
    let max_rows = MAX_PARAMETERS / INSERT_PARAMETERS_PER_KEY;
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, key) in keys.iter().enumerate() {
        // Value (encrypted or not), fingerprint and the fixed-size columns, with room for the
        // SQL text.
        let row_bytes = KeyCipher::encrypted_len(key.expose().len()) + 64 + 64;
        if i > start && (i - start >= max_rows || bytes + row_bytes > MAX_INSERT_BYTES) {
            chunks.push(&keys[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += row_bytes;
    }
    if start < keys.len() {
        chunks.push(&keys[start..]);
    }
    chunks
}

/// The key counts of SQLite's usage statements (see [`crate::chunks`]).
const SQLITE_USAGE_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// PostgreSQL's and SQLite's form of [`SqlStore::usage_statement`], with the same rules: one
/// `UPDATE` joined to a `VALUES` table of the deltas on the key id. Both evaluate the `CASE`
/// form branch by branch for every row, so its cost grows with the square of the keys flushed
/// (PostgreSQL: 10 000 keys took 80 s that way and take well under a second this way, see
/// `docs/operations.md`), and SQLite also compares every branch with every other when preparing
/// it: with a 100 000-key pool a flush held its write lock for seconds, and the request log's
/// writer waited behind it.
fn values_usage_statement(
    backend: DbBackend,
    deltas: &[UsageDelta],
    at: DateTime<Utc>,
) -> Statement {
    use std::fmt::Write as _;
    let postgres = backend == DbBackend::Postgres;
    let mut values: Vec<sea_orm::Value> =
        Vec::with_capacity(1 + deltas.len() * VALUES_USAGE_PARAMETERS_PER_KEY);
    let mut rows = String::with_capacity(deltas.len() * 96);
    for (i, delta) in deltas.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        if postgres {
            let n = 1 + i * VALUES_USAGE_PARAMETERS_PER_KEY;
            // The casts type the derived table even when a column is NULL in every row.
            let _ = write!(
                rows,
                "{separator}(${n}::bigint, ${}::bigint, ${}::bigint, ${}::integer, ${}::timestamptz)",
                n + 1,
                n + 2,
                n + 3,
                n + 4
            );
        } else {
            let _ = write!(rows, "{separator}(?, ?, ?, ?, ?)");
        }
        values.push(delta.key_id.0.into());
        values.push(convert::counter(delta.requests).into());
        values.push(convert::counter(delta.failures).into());
        values.push(delta.last_status.map(i32::from).into());
        values.push(delta.last_used_at.map(convert::stored_time).into());
    }
    // Last, as its placeholder comes last in the text.
    values.push(at.into());
    let updated_at = if postgres {
        format!("${}", values.len())
    } else {
        "?".to_owned()
    };
    // As `KeyUsage::apply`: the latest use wins, keeping the old status when the latest
    // attempt had none; every right-hand side reads the row's old values.
    let newer = "d.last_used_at IS NOT NULL \
                 AND (k.last_used_at IS NULL OR k.last_used_at <= d.last_used_at)";
    let sql = format!(
        "WITH d(id, requests, failures, last_status, last_used_at) AS (VALUES {rows}) \
         UPDATE api_keys AS k SET \
         request_count = k.request_count + d.requests, \
         failure_count = k.failure_count + d.failures, \
         last_status = CASE WHEN {newer} THEN COALESCE(d.last_status, k.last_status) \
         ELSE k.last_status END, \
         last_used_at = CASE WHEN {newer} THEN d.last_used_at ELSE k.last_used_at END, \
         updated_at = {updated_at} \
         FROM d WHERE k.id = d.id"
    );
    Statement::from_sql_and_values(backend, sql, values)
}

#[async_trait]
impl ProxyStore for SqlStore {
    async fn create_config(&self, spec: ProxyConfigSpec) -> Result<ProxyConfig> {
        let row = convert::new_config_row(&spec, convert::now());
        match row.insert(&self.db).await {
            Ok(model) => convert::config_from_row(model),
            Err(err) => Err(self.config_write_error(&self.db, err, &spec, None).await),
        }
    }

    async fn list_configs(&self) -> Result<Vec<ProxyConfig>> {
        proxy_config::Entity::find()
            .order_by_asc(proxy_config::Column::Id)
            .all(&self.db)
            .await
            .map_err(|err| self.error(err))?
            .into_iter()
            .map(convert::config_from_row)
            .collect()
    }

    async fn get_config(&self, id: ProxyConfigId) -> Result<ProxyConfig> {
        convert::config_from_row(self.find_config(&self.db, id).await?)
    }

    async fn replace_config(
        &self,
        id: ProxyConfigId,
        spec: ProxyConfigSpec,
    ) -> Result<ProxyConfig> {
        let txn = self.begin_write().await?;
        let existing = self.config_for_update(&txn, id).await?;
        let updated_at = convert::now_not_before(existing.updated_at);
        let mut row = existing.into_active_model();
        convert::set_config_columns(&mut row, &spec);
        row.updated_at = Set(updated_at);
        match row.update(&txn).await {
            Ok(model) => {
                self.commit(txn).await?;
                convert::config_from_row(model)
            }
            Err(err) => Err(self.config_write_error(&txn, err, &spec, Some(id)).await),
        }
    }

    async fn set_config_active(&self, id: ProxyConfigId, is_active: bool) -> Result<ProxyConfig> {
        let txn = self.begin_write().await?;
        let existing = self.config_for_update(&txn, id).await?;
        let updated_at = convert::now_not_before(existing.updated_at);
        let mut row = existing.into_active_model();
        row.is_active = Set(is_active);
        row.updated_at = Set(updated_at);
        let model = row.update(&txn).await.map_err(|err| self.error(err))?;
        self.commit(txn).await?;
        convert::config_from_row(model)
    }

    async fn delete_config(&self, id: ProxyConfigId) -> Result<ProxyConfig> {
        let txn = self.begin_write().await?;
        let config = convert::config_from_row(self.config_for_update(&txn, id).await?)?;
        // The foreign key's ON DELETE CASCADE removes the keys.
        proxy_config::Entity::delete_by_id(id.0)
            .exec(&txn)
            .await
            .map_err(|err| self.error(err))?;
        self.commit(txn).await?;
        Ok(config)
    }

    async fn list_keys(&self, config: ProxyConfigId) -> Result<Vec<ApiKey>> {
        let keys = self.keys_of(&self.db, config).await?;
        if keys.is_empty() {
            // No keys: tell an empty pool from an unknown config.
            self.find_config(&self.db, config).await?;
        }
        Ok(keys)
    }

    async fn list_key_range(&self, config: ProxyConfigId, range: KeyRange) -> Result<Vec<ApiKey>> {
        let keys = self.key_range_on(&self.db, config, range).await?;
        if keys.is_empty() {
            // No keys: tell an empty page from an unknown config.
            self.find_config(&self.db, config).await?;
        }
        Ok(keys)
    }

    async fn count_keys(&self, now: DateTime<Utc>) -> Result<Vec<KeyCount>> {
        let rows = self
            .db
            .query_all_raw(self.count_keys_statement(now))
            .await
            .map_err(|err| self.error(err))?;
        rows.iter()
            .map(|row| {
                let column = |err: DbErr| self.error(err);
                let config: i64 = row.try_get("", "proxy_config_id").map_err(column)?;
                let is_active: bool = row.try_get("", "is_active").map_err(column)?;
                let health: String = row.try_get("", "health_state").map_err(column)?;
                let count: i64 = row.try_get("", "key_count").map_err(column)?;
                let health = HealthState::ALL
                    .into_iter()
                    .find(|state| state.as_str() == health)
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "stored api keys of proxy config {config} have an invalid health"
                        ))
                    })?;
                Ok(KeyCount {
                    config: ProxyConfigId(config),
                    health,
                    is_active,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn get_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        self.key_from_row(self.find_key(&self.db, id).await?)
    }

    async fn add_key(
        &self,
        config: ProxyConfigId,
        key: KeySecret,
        is_active: bool,
    ) -> Result<ApiKey> {
        let stored = stored_key(&key, self.cipher.as_ref())?;
        let row = convert::new_key_row(config, stored, is_active, convert::now());
        match row.insert(&self.db).await {
            Ok(model) => self.key_from_row(model),
            Err(err) => Err(match convert::violation(&err) {
                Some(Violation::Unique) => convert::conflict(Entity::ApiKey, "key_value"),
                Some(Violation::ForeignKey) => Error::config_not_found(config),
                None => self.error(err),
            }),
        }
    }

    async fn add_keys(
        &self,
        config: ProxyConfigId,
        keys: Vec<KeySecret>,
        is_active: bool,
    ) -> Result<InsertedKeys> {
        let txn = self.begin_write().await?;
        self.lock_config(&txn, config).await?;
        let at = convert::now();
        let mut inserted = 0_u64;
        for chunk in insert_chunks(&keys) {
            let statement = self.insert_keys_statement(config, chunk, is_active, at)?;
            let result = txn
                .execute_raw(statement)
                .await
                .map_err(|err| self.error(err))?;
            inserted += result.rows_affected();
        }
        self.commit(txn).await?;
        let total = keys.len() as u64;
        Ok(InsertedKeys {
            inserted,
            skipped: total.saturating_sub(inserted),
        })
    }

    async fn clear_keys(&self, config: ProxyConfigId) -> Result<u64> {
        let txn = self.begin_write().await?;
        self.lock_config(&txn, config).await?;
        let deleted = api_key::Entity::delete_many()
            .filter(api_key::Column::ProxyConfigId.eq(config.0))
            .exec(&txn)
            .await
            .map_err(|err| self.error(err))?
            .rows_affected;
        self.commit(txn).await?;
        Ok(deleted)
    }

    async fn set_key_active(&self, id: ApiKeyId, is_active: bool) -> Result<ApiKey> {
        let txn = self.begin_write().await?;
        let existing = self.key_for_update(&txn, id).await?;
        let updated_at = convert::now_not_before(existing.updated_at);
        let mut row = existing.into_active_model();
        row.is_active = Set(is_active);
        row.updated_at = Set(updated_at);
        let model = row.update(&txn).await.map_err(|err| self.error(err))?;
        self.commit(txn).await?;
        self.key_from_row(model)
    }

    async fn delete_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        let txn = self.begin_write().await?;
        let key = self.key_from_row(self.key_for_update(&txn, id).await?)?;
        api_key::Entity::delete_by_id(id.0)
            .exec(&txn)
            .await
            .map_err(|err| self.error(err))?;
        self.commit(txn).await?;
        Ok(key)
    }

    async fn active_config_by_slug(&self, slug: &Slug) -> Result<Option<ConfigSnapshot>> {
        // One read transaction: the config and its keys as of one moment.
        let txn = self.db.begin().await.map_err(|err| self.error(err))?;
        let row = proxy_config::Entity::find()
            .filter(proxy_config::Column::Slug.eq(slug.as_str()))
            .filter(proxy_config::Column::IsActive.eq(true))
            .one(&txn)
            .await
            .map_err(|err| self.error(err))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let config = convert::config_from_row(row)?;
        let keys = self.keys_of(&txn, config.id).await?;
        self.commit(txn).await?;
        Ok(Some(ConfigSnapshot::new(
            config,
            keys.into_iter().map(Arc::new).collect(),
        )))
    }

    async fn apply_usage(&self, deltas: &[UsageDelta]) -> Result<()> {
        let deltas = UsageDelta::merged_by_key(deltas.iter().copied());
        let at = convert::now();
        let statements: Vec<Statement> = match self.backend {
            // Fixed chunk sizes, so SQLite prepares each statement once.
            DbBackend::Sqlite => crate::chunks::fixed_chunks(&deltas, &SQLITE_USAGE_SIZES)
                .map(|chunk| values_usage_statement(DbBackend::Sqlite, chunk, at))
                .collect(),
            DbBackend::Postgres => deltas
                .chunks(MAX_PARAMETERS / VALUES_USAGE_PARAMETERS_PER_KEY)
                .map(|chunk| values_usage_statement(DbBackend::Postgres, chunk, at))
                .collect(),
            _ => deltas
                .chunks(MAX_PARAMETERS / USAGE_PARAMETERS_PER_KEY)
                .map(|chunk| self.usage_statement(chunk, at))
                .collect(),
        };
        let mut statements = statements.into_iter();
        match (statements.next(), statements.next()) {
            (None, _) => Ok(()),
            (Some(only), None) => {
                self.db
                    .execute_raw(only)
                    .await
                    .map_err(|err| self.error(err))?;
                Ok(())
            }
            (Some(first), Some(second)) => {
                let txn = self.begin_write().await?;
                for statement in [first, second].into_iter().chain(statements) {
                    txn.execute_raw(statement)
                        .await
                        .map_err(|err| self.error(err))?;
                }
                self.commit(txn).await
            }
        }
    }

    async fn set_key_health(&self, id: ApiKeyId, health: KeyHealth) -> Result<()> {
        let (state, cooldown_until) = convert::health_columns(health);
        api_key::Entity::update_many()
            .col_expr(api_key::Column::Health, Expr::val(state))
            .col_expr(api_key::Column::CooldownUntil, Expr::val(cooldown_until))
            .col_expr(api_key::Column::UpdatedAt, Expr::val(convert::now()))
            .filter(api_key::Column::Id.eq(id.0))
            .exec(&self.db)
            .await
            .map_err(|err| self.error(err))?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.db.ping().await.map_err(|err| match self.error(err) {
            unavailable @ Error::Unavailable { .. } => unavailable,
            _ => Error::database("the database does not answer; check that it is running"),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use chrono::TimeDelta;

    use super::*;

    fn keys(count: usize, len: usize) -> Vec<KeySecret> {
        (0..count)
            .map(|i| KeySecret::parse(&format!("{i:0>len$}")).unwrap())
            .collect()
    }

    #[test]
    fn insert_chunks_respect_the_parameter_budget() {
        let keys = keys(100_000, 20);
        let chunks = insert_chunks(&keys);
        assert!(
            chunks
                .iter()
                .all(|c| c.len() * INSERT_PARAMETERS_PER_KEY <= MAX_PARAMETERS)
        );
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 100_000);
        assert_eq!(chunks.len(), 20, "5 000 keys per statement");
    }

    #[test]
    fn insert_chunks_respect_the_byte_budget_for_long_keys() {
        let keys = keys(2_000, 4_000);
        let chunks = insert_chunks(&keys);
        assert!(chunks.len() > 1);
        let row_bytes = KeyCipher::encrypted_len(4_000) + 128;
        assert!(
            chunks
                .iter()
                .all(|c| c.len() * row_bytes <= MAX_INSERT_BYTES)
        );
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 2_000);
        assert!(insert_chunks(&[]).is_empty());
    }

    #[test]
    fn repeated_deltas_for_one_key_are_merged() {
        let at = Utc::now();
        let delta = |requests, seconds, status| UsageDelta {
            key_id: ApiKeyId(1),
            requests,
            failures: 0,
            last_status: Some(status),
            last_used_at: Some(at + TimeDelta::seconds(seconds)),
        };
        let merged = UsageDelta::merged_by_key([delta(2, 5, 429), delta(3, 1, 200)]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].requests, 5);
        assert_eq!(merged[0].last_status, Some(429), "the latest use wins");
    }
}
