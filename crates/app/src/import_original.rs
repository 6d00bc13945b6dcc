//! `api-key-rotator import-original <sqlite path | mysql URL>` (SPEC §11): brings the configs
//! and keys of the original Go backend's database into the configured store, and prints what it
//! did: counts, renumbered ids, and every refused row with its id and the reason.
//!
//! When the source is the configured database itself (the operator pointed the new server at
//! the old file), the database is upgraded in place: the original tables are kept under backup
//! names, ours are created and the rows imported, in one transaction. Run again, either way
//! imports nothing twice: configs are matched by slug and keys by fingerprint.

use std::{fmt::Write as _, path::Path};

use domain::{ImportReport, OriginalTables};

use crate::{
    config::{self, SecretUrl, Settings, StorageBackend},
    wiring::{self, WiringError},
};

/// Why an import did not run.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The source argument is neither a SQLite path nor a MySQL URL or DSN.
    #[error("the import source {0}")]
    Source(String),
    /// The source or the store could not be used.
    #[error(transparent)]
    Wiring(#[from] WiringError),
}

/// Reads the command's argument: a `mysql://`/`mariadb://` URL or the original's Go DSN
/// (`user:pass@tcp(host:3306)/db?...`) is a MySQL database; anything else (optionally
/// `sqlite://`-prefixed) is the path of a SQLite file.
///
/// # Errors
/// [`ImportError::Source`] for a MySQL URL or DSN that cannot be read.
pub fn parse_source(text: &str) -> Result<StorageBackend, ImportError> {
    let text = text.trim();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Err(ImportError::Source(
            "is a PostgreSQL URL, but the original backend ran on SQLite or MySQL only; give \
             its SQLite path or MySQL URL (a PostgreSQL store is the target: DATABASE_URL)"
                .to_owned(),
        ));
    }
    let looks_like_mysql = text.starts_with("mysql://")
        || text.starts_with("mariadb://")
        || text.contains("@tcp(")
        || text.contains("@/");
    if looks_like_mysql {
        let url = config::parse_database_url(text).map_err(|e| ImportError::Source(e.message))?;
        return Ok(StorageBackend::Mysql {
            url: SecretUrl::new(&url),
        });
    }
    let path = text.strip_prefix("sqlite://").unwrap_or(text);
    Ok(StorageBackend::Sqlite { path: path.into() })
}

/// Whether `source` is the database `configured` names: the same SQLite file, or the same MySQL
/// host, port and database.
pub fn is_configured_store(source: &StorageBackend, configured: &StorageBackend) -> bool {
    match (source, configured) {
        (StorageBackend::Sqlite { path: a }, StorageBackend::Sqlite { path: b }) => same_file(a, b),
        (StorageBackend::Mysql { url: a }, StorageBackend::Mysql { url: b }) => {
            let database = |url: &SecretUrl| {
                url::Url::parse(url.expose()).ok().map(|url| {
                    (
                        url.host_str().map(str::to_ascii_lowercase),
                        url.port().unwrap_or(3306),
                        url.path().trim_matches('/').to_owned(),
                    )
                })
            };
            database(a).is_some() && database(a) == database(b)
        }
        _ => false,
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Runs the import from `source` into the store of `settings` and returns the report to print.
///
/// # Errors
/// The source or the store cannot be opened, read or written; nothing is imported then.
pub async fn run(settings: &Settings, source_text: &str) -> Result<String, ImportError> {
    let source = parse_source(source_text)?;
    let (tables, data) = wiring::read_original(&source).await?;
    let in_place =
        tables == OriginalTables::InPlace && is_configured_store(&source, &settings.storage);
    let report = if in_place {
        wiring::upgrade_original(settings).await?
    } else {
        wiring::import_original(settings, &data).await?
    };
    Ok(render(&report, in_place))
}

/// The report as the command prints it: one summary line, then one line per renumbered config
/// and per refused row.
pub fn render(report: &ImportReport, in_place: bool) -> String {
    let mut text = String::new();
    if in_place {
        text.push_str(
            "upgraded in place: the original tables are kept as proxy_configs_original and \
             api_keys_original\n",
        );
    }
    let _ = writeln!(
        text,
        "configs: {} imported, {} already present; keys: {} imported, {} already present; \
         refused rows: {}",
        report.configs_imported,
        report.configs_already_present,
        report.keys_imported,
        report.keys_already_present,
        report.refused.len()
    );
    for (original, new) in &report.configs_renumbered {
        let _ = writeln!(
            text,
            "config {original} was imported as config {new}: its id was taken"
        );
    }
    if report.keys_renumbered > 0 {
        let _ = writeln!(
            text,
            "{} keys got new ids: theirs were taken",
            report.keys_renumbered
        );
    }
    for row in &report.refused {
        let _ = writeln!(
            text,
            "refused {} row {}: {}",
            row.table.as_str(),
            row.id,
            row.reason
        );
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use domain::{OriginalTable, RefusedRow};

    use super::*;

    #[test]
    fn sources_are_mysql_urls_go_dsns_or_sqlite_paths() {
        let mysql = parse_source("root:pw@tcp(127.0.0.1:3306)/old?parseTime=True").unwrap();
        let StorageBackend::Mysql { url } = mysql else {
            panic!("a Go DSN is MySQL")
        };
        assert_eq!(url.expose(), "mysql://root:pw@127.0.0.1:3306/old");
        assert!(matches!(
            parse_source("mysql://root@db:3306/old").unwrap(),
            StorageBackend::Mysql { .. }
        ));
        assert_eq!(
            parse_source("./data/old.db").unwrap(),
            StorageBackend::Sqlite {
                path: "./data/old.db".into()
            }
        );
        assert!(parse_source("mysql://root@tcp(db:3306)/").is_err());
        assert!(matches!(
            parse_source("postgres://postgres@db/old"),
            Err(ImportError::Source(message)) if message.contains("SQLite or MySQL only")
        ));
    }

    #[test]
    fn the_same_mysql_database_is_recognised_whatever_the_credentials() {
        let a = parse_source("mysql://root@DB:3306/akr").unwrap();
        let b = parse_source("appuser:pw@tcp(db)/akr?charset=utf8mb4").unwrap();
        let other = parse_source("mysql://root@db:3306/other").unwrap();
        assert!(is_configured_store(&a, &b));
        assert!(!is_configured_store(&a, &other));
    }

    #[test]
    fn the_report_names_every_refused_row_and_renumbered_config() {
        let report = ImportReport {
            configs_imported: 2,
            configs_renumbered: vec![(3, 7)],
            keys_imported: 5,
            keys_already_present: 1,
            refused: vec![RefusedRow {
                table: OriginalTable::ApiKeys,
                id: 12,
                reason: "its key value is blank".into(),
            }],
            ..ImportReport::default()
        };
        let text = render(&report, false);
        assert!(text.starts_with(
            "configs: 2 imported, 0 already present; keys: 5 imported, 1 already present; refused rows: 1\n"
        ));
        assert!(text.contains("config 3 was imported as config 7"));
        assert!(text.contains("refused api_keys row 12: its key value is blank"));
    }
}
