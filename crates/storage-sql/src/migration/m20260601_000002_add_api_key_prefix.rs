//! Adds `proxy_configs.api_key_prefix` (SPEC §11): the text sent before the upstream key, such
//! as `Bearer `. Existing rows keep NULL, which reads as the default prefix of their placement,
//! so an LLM config whose key header is `Authorization` starts sending `Bearer <key>`.

use sea_orm_migration::prelude::*;

/// Adds the column.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProxyConfigs {
    Table,
    ApiKeyPrefix,
}

fn add_prefix_column() -> TableAlterStatement {
    Table::alter()
        .table(ProxyConfigs::Table)
        .add_column(
            ColumnDef::new(ProxyConfigs::ApiKeyPrefix)
                .string_len(64)
                .null(),
        )
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(add_prefix_column()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ProxyConfigs::Table)
                    .drop_column(ProxyConfigs::ApiKeyPrefix)
                    .to_owned(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use sea_orm_migration::sea_query::{MysqlQueryBuilder, SqliteQueryBuilder};

    use super::*;

    #[test]
    fn the_prefix_column_is_nullable_text_on_both_backends() {
        let sqlite = add_prefix_column().to_string(SqliteQueryBuilder);
        assert!(
            sqlite.contains(r#"ADD COLUMN "api_key_prefix" varchar(64) NULL"#),
            "{sqlite}"
        );
        let mysql = add_prefix_column().to_string(MysqlQueryBuilder);
        assert!(
            mysql.contains("ADD COLUMN `api_key_prefix` varchar(64) NULL"),
            "{mysql}"
        );
    }
}
