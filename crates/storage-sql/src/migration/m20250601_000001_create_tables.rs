//! The first schema: `proxy_configs` and `api_keys` with every SPEC §1 field, their unique
//! indexes and the cascading foreign key.
//!
//! Timestamps are `DATETIME(6)` on MySQL (microseconds, no time zone conversion, no 2038 limit),
//! `timestamp with time zone` on PostgreSQL (microseconds, UTC) and RFC 3339 text on SQLite;
//! MySQL tables use `utf8mb4` with the binary collation, so uniqueness means the same thing on
//! every backend: byte-exact (SQLite's default `BINARY` collation and PostgreSQL's
//! deterministic collations compare equal only what is byte-equal; slugs are lower case
//! already).
//!
//! PostgreSQL was added after this migration shipped; no PostgreSQL database predates it, so
//! its two PostgreSQL-only choices below changed no existing schema.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

/// Creates both tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProxyConfigs {
    Table,
    Id,
    Name,
    Slug,
    ConfigType,
    IsActive,
    ApiKeyLocation,
    ApiKeyName,
    Method,
    TargetUrl,
    TargetBaseUrl,
    ApiFormat,
    OutputFormat,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    ProxyConfigId,
    KeyValue,
    KeyHash,
    IsActive,
    Health,
    CooldownUntil,
    LastStatus,
    RequestCount,
    FailureCount,
    LastUsedAt,
    CreatedAt,
    UpdatedAt,
}

/// A timestamp column at microsecond precision.
pub(super) fn timestamp(backend: DbBackend, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match backend {
        DbBackend::MySql => def.custom(Alias::new("DATETIME(6)")),
        _ => def.timestamp_with_time_zone(),
    };
    def
}

/// The storage options of a new table: InnoDB and utf8mb4 with exact comparison on MySQL.
pub(super) fn table_options(backend: DbBackend, table: &mut TableCreateStatement) {
    if backend == DbBackend::MySql {
        table
            .engine("InnoDB")
            .character_set("utf8mb4")
            .collate("utf8mb4_bin");
    }
}

/// The 64 hex digits of a key's fingerprint. PostgreSQL gets `varchar`: its `char(n)` compares
/// with a text parameter only after a cast that keeps the index out of use.
fn key_hash(backend: DbBackend) -> ColumnDef {
    let mut def = ColumnDef::new(ApiKeys::KeyHash);
    match backend {
        DbBackend::Postgres => def.string_len(64),
        _ => def.char_len(64),
    };
    def.not_null().to_owned()
}

pub(super) fn id_column(column: impl IntoIden) -> ColumnDef {
    ColumnDef::new(column)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn create_proxy_configs(backend: DbBackend) -> TableCreateStatement {
    let mut table = Table::create();
    table
        .table(ProxyConfigs::Table)
        .col(id_column(ProxyConfigs::Id))
        .col(
            ColumnDef::new(ProxyConfigs::Name)
                .string_len(100)
                .not_null(),
        )
        .col(
            ColumnDef::new(ProxyConfigs::Slug)
                .string_len(100)
                .not_null(),
        )
        .col(
            ColumnDef::new(ProxyConfigs::ConfigType)
                .string_len(16)
                .not_null(),
        )
        .col(ColumnDef::new(ProxyConfigs::IsActive).boolean().not_null())
        .col(
            ColumnDef::new(ProxyConfigs::ApiKeyLocation)
                .string_len(16)
                .null(),
        )
        .col(
            ColumnDef::new(ProxyConfigs::ApiKeyName)
                .string_len(256)
                .null(),
        )
        .col(ColumnDef::new(ProxyConfigs::Method).string_len(16).null())
        .col(ColumnDef::new(ProxyConfigs::TargetUrl).text().null())
        .col(ColumnDef::new(ProxyConfigs::TargetBaseUrl).text().null())
        .col(
            ColumnDef::new(ProxyConfigs::ApiFormat)
                .string_len(32)
                .null(),
        )
        .col(
            ColumnDef::new(ProxyConfigs::OutputFormat)
                .string_len(32)
                .null(),
        )
        .col(timestamp(backend, ProxyConfigs::CreatedAt).not_null())
        .col(timestamp(backend, ProxyConfigs::UpdatedAt).not_null())
        .index(
            Index::create()
                .name(super::UNIQUE_CONFIG_NAME)
                .col(ProxyConfigs::Name)
                .unique(),
        )
        .index(
            Index::create()
                .name(super::UNIQUE_CONFIG_SLUG)
                .col(ProxyConfigs::Slug)
                .unique(),
        );
    table_options(backend, &mut table);
    table
}

fn create_api_keys(backend: DbBackend) -> TableCreateStatement {
    let mut table = Table::create();
    table
        .table(ApiKeys::Table)
        .col(id_column(ApiKeys::Id))
        .col(
            ColumnDef::new(ApiKeys::ProxyConfigId)
                .big_integer()
                .not_null(),
        )
        .col(ColumnDef::new(ApiKeys::KeyValue).text().not_null())
        .col(key_hash(backend))
        .col(ColumnDef::new(ApiKeys::IsActive).boolean().not_null())
        .col(
            ColumnDef::new(ApiKeys::Health)
                .string_len(16)
                .not_null()
                .default("ok"),
        )
        .col(timestamp(backend, ApiKeys::CooldownUntil).null())
        .col(ColumnDef::new(ApiKeys::LastStatus).integer().null())
        .col(
            ColumnDef::new(ApiKeys::RequestCount)
                .big_integer()
                .not_null()
                .default(0),
        )
        .col(
            ColumnDef::new(ApiKeys::FailureCount)
                .big_integer()
                .not_null()
                .default(0),
        )
        .col(timestamp(backend, ApiKeys::LastUsedAt).null())
        .col(timestamp(backend, ApiKeys::CreatedAt).not_null())
        .col(timestamp(backend, ApiKeys::UpdatedAt).not_null())
        .foreign_key(
            ForeignKey::create()
                .name("fk_api_keys_proxy_config")
                .from(ApiKeys::Table, ApiKeys::ProxyConfigId)
                .to(ProxyConfigs::Table, ProxyConfigs::Id)
                .on_delete(ForeignKeyAction::Cascade)
                .on_update(ForeignKeyAction::Cascade),
        )
        .index(
            Index::create()
                .name("uq_api_keys_config_hash")
                .col(ApiKeys::ProxyConfigId)
                .col(ApiKeys::KeyHash)
                .unique(),
        );
    table_options(backend, &mut table);
    table
}

/// Lists a config's keys in id order without a sort: SQLite appends the rowid and InnoDB the
/// primary key to every secondary index; PostgreSQL does not, so there the id is a column of
/// the index.
fn index_keys_by_config(backend: DbBackend) -> IndexCreateStatement {
    let mut index = Index::create();
    index
        .name("idx_api_keys_proxy_config_id")
        .table(ApiKeys::Table)
        .col(ApiKeys::ProxyConfigId);
    if backend == DbBackend::Postgres {
        index.col(ApiKeys::Id);
    }
    index
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction, so a failed run on SQLite or PostgreSQL leaves no half-made schema
    /// behind (MySQL commits each DDL statement by itself whatever we ask).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        manager.create_table(create_proxy_configs(backend)).await?;
        manager.create_table(create_api_keys(backend)).await?;
        manager.create_index(index_keys_by_config(backend)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).if_exists().to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(ProxyConfigs::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use sea_orm_migration::sea_query::{
        MysqlQueryBuilder, PostgresQueryBuilder, SqliteQueryBuilder,
    };

    use super::*;

    #[test]
    fn sqlite_schema_has_autoincrement_text_timestamps_and_cascade() {
        let configs = create_proxy_configs(DbBackend::Sqlite).to_string(SqliteQueryBuilder);
        assert!(
            configs.contains(r#""id" integer NOT NULL PRIMARY KEY AUTOINCREMENT"#),
            "{configs}"
        );
        let keys = create_api_keys(DbBackend::Sqlite).to_string(SqliteQueryBuilder);
        assert!(keys.contains("ON DELETE CASCADE"), "{keys}");
        assert!(
            keys.contains(r#""created_at" timestamp_with_timezone_text NOT NULL"#),
            "{keys}"
        );
    }

    #[test]
    fn mysql_schema_uses_microsecond_datetimes_and_utf8mb4() {
        let keys = create_api_keys(DbBackend::MySql).to_string(MysqlQueryBuilder);
        assert!(keys.contains("`last_used_at` DATETIME(6) NULL"), "{keys}");
        assert!(
            keys.ends_with("ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"),
            "{keys}"
        );
    }

    #[test]
    fn postgres_schema_uses_identity_ids_zoned_timestamps_and_a_covering_key_index() {
        let configs = create_proxy_configs(DbBackend::Postgres).to_string(PostgresQueryBuilder);
        assert!(
            configs
                .contains(r#""id" bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL PRIMARY KEY"#),
            "{configs}"
        );
        assert!(
            configs.contains(r#"CONSTRAINT "uq_proxy_configs_slug" UNIQUE ("slug")"#),
            "{configs}"
        );
        let keys = create_api_keys(DbBackend::Postgres).to_string(PostgresQueryBuilder);
        assert!(
            keys.contains(r#""cooldown_until" timestamp with time zone NULL"#),
            "{keys}"
        );
        assert!(
            keys.contains(r#""key_hash" varchar(64) NOT NULL"#),
            "{keys}"
        );
        let index = index_keys_by_config(DbBackend::Postgres).to_string(PostgresQueryBuilder);
        assert!(
            index.ends_with(r#"ON "api_keys" ("proxy_config_id", "id")"#),
            "{index}"
        );
    }
}
