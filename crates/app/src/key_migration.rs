//! Stored upstream keys and `ENCRYPTION_KEY` (SPEC §9): the start-up check that the store's
//! rows are in the configured mode ([`check_key_mode`]), and the commands that change the mode,
//! `keys encrypt`, `keys decrypt` and `keys rotate-encryption` ([`run`]).
//!
//! The commands run with every server stopped. Each reads its keys from the configuration
//! (`ENCRYPTION_KEY`, and `NEW_ENCRYPTION_KEY` for a rotation: environment, `.env` or the config
//! file, never the command line), refuses up front when the store holds rows it could not read,
//! rewrites the rows in batches through `storage_sql` (each batch one transaction; a rerun after
//! any interruption, `kill -9` included, carries on where the last committed batch ended),
//! prints a line per batch and a summary, and on SQLite compacts the file (on PostgreSQL
//! rewrites `api_keys` with `VACUUM FULL`) so no stale copy of the old values stays in the
//! tables. Ctrl-C stops it after the current batch.

use std::{
    io::Write,
    ops::ControlFlow,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use clap::{Args, Subcommand};
use storage_sql::{KeyCensus, KeyCipher, KeyRewrite, RewriteError, RewriteProgress};

use crate::{
    config::{Settings, StorageBackend},
    wiring::{self, WiringError},
};

/// `api-key-rotator keys ...`: moves the stored upstream keys in or out of encryption.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Encrypt every plain-text key value with ENCRYPTION_KEY (stop every server first).
    Encrypt(RewriteArgs),
    /// Re-encrypt every key value from ENCRYPTION_KEY to NEW_ENCRYPTION_KEY (stop every server
    /// first; afterwards start them with the new key as ENCRYPTION_KEY).
    RotateEncryption(RewriteArgs),
    /// Store every key value encrypted with ENCRYPTION_KEY in plain text again (stop every
    /// server first; afterwards start them without ENCRYPTION_KEY).
    Decrypt(RewriteArgs),
}

/// Options shared by the key commands.
#[derive(Debug, Clone, Copy, Args)]
pub struct RewriteArgs {
    /// Keys rewritten per transaction.
    #[arg(long, default_value_t = KeyRewrite::DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
}

/// The store's key values are not in the mode the configuration asks for; each message names
/// the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreKeyMode {
    /// Rows encrypted with a key that is not `ENCRYPTION_KEY`.
    #[error(
        "the database holds {count} upstream keys encrypted with another ENCRYPTION_KEY; set ENCRYPTION_KEY to the key they were encrypted with, or finish the rotation with `api-key-rotator keys rotate-encryption` (old key in ENCRYPTION_KEY, new key in NEW_ENCRYPTION_KEY)"
    )]
    OtherKey {
        /// How many.
        count: u64,
    },
    /// Plain rows while `ENCRYPTION_KEY` is set.
    #[error(
        "the database holds {count} upstream keys in plain text but ENCRYPTION_KEY is set; stop every instance and run `api-key-rotator keys encrypt` to encrypt them"
    )]
    PlainWithKey {
        /// How many.
        count: u64,
    },
    /// Encrypted rows while `ENCRYPTION_KEY` is not set.
    #[error(
        "the database holds {count} encrypted upstream keys but ENCRYPTION_KEY is not set; set it to the key they were encrypted with, or run `api-key-rotator keys decrypt` with it set to store them in plain text"
    )]
    EncryptedWithoutKey {
        /// How many.
        count: u64,
    },
}

/// Refuses a store whose rows do not all match the configuration: with `ENCRYPTION_KEY`
/// (`key_configured`), every row must be encrypted with it (`census` asked about its cipher);
/// without it, every row must be plain.
///
/// # Errors
/// The first mismatch, naming the command that fixes it.
pub fn check_key_mode(census: &KeyCensus, key_configured: bool) -> Result<(), StoreKeyMode> {
    if !key_configured {
        return match census.encrypted {
            0 => Ok(()),
            count => Err(StoreKeyMode::EncryptedWithoutKey { count }),
        };
    }
    match (census.under_other_keys(), census.plain()) {
        (0, 0) => Ok(()),
        (0, count) => Err(StoreKeyMode::PlainWithKey { count }),
        (count, _) => Err(StoreKeyMode::OtherKey { count }),
    }
}

/// Why a key command stopped.
#[derive(Debug, thiserror::Error)]
pub enum KeysCommandError {
    /// A key the command needs is not configured, or the configuration forbids the command.
    #[error("{0}")]
    Configuration(&'static str),
    /// The store could not be opened.
    #[error(transparent)]
    Wiring(#[from] WiringError),
    /// The store holds rows this command could not read; nothing was changed.
    #[error(
        "{count} stored upstream keys are encrypted with a key this command was not given ({which}); nothing was changed"
    )]
    UnreadableRows {
        /// How many.
        count: u64,
        /// Which keys the command was given.
        which: &'static str,
    },
    /// The rewrite stopped; batches committed before stay committed, and a rerun goes on.
    #[error("{0}; the keys rewritten so far stay rewritten, run the command again to go on")]
    Rewrite(#[from] RewriteError),
    /// The store failed outside the rewrite.
    #[error("the database failed: {0}")]
    Store(#[from] domain::Error),
    /// The report could not be written.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// What one command does, in words for its report.
struct Plan {
    name: &'static str,
    rewrite: KeyRewrite,
    /// The ciphers the store may hold rows of; a row under any other key stops the command.
    readable: Vec<KeyCipher>,
    which_keys: &'static str,
    /// Past participle for the report: "encrypted", "re-encrypted", "decrypted".
    done: &'static str,
    /// What the operator does next.
    next_step: &'static str,
}

fn plan(command: &KeysCommand, settings: &Settings) -> Result<Plan, KeysCommandError> {
    if settings.reset_db_tables {
        return Err(KeysCommandError::Configuration(
            "RESET_DB_TABLES=true would delete every key; unset it to run this command",
        ));
    }
    let current = settings.encryption_key.as_ref().map(KeyCipher::new);
    let new = settings.new_encryption_key.as_ref().map(KeyCipher::new);
    let batch_size = match command {
        KeysCommand::Encrypt(args)
        | KeysCommand::RotateEncryption(args)
        | KeysCommand::Decrypt(args) => args.batch_size,
    };
    let plan = match (command, current, new) {
        (KeysCommand::Encrypt(_), Some(key), _) => Plan {
            name: "keys encrypt",
            rewrite: KeyRewrite::encrypt(key.clone()),
            readable: vec![key],
            which_keys: "ENCRYPTION_KEY",
            done: "encrypted",
            next_step: "start the servers with this ENCRYPTION_KEY",
        },
        (KeysCommand::Decrypt(_), Some(key), _) => Plan {
            name: "keys decrypt",
            rewrite: KeyRewrite::decrypt(key.clone()),
            readable: vec![key],
            which_keys: "ENCRYPTION_KEY",
            done: "decrypted",
            next_step: "unset ENCRYPTION_KEY before starting the servers",
        },
        (KeysCommand::RotateEncryption(_), Some(old), Some(new)) if old == new => {
            return Err(KeysCommandError::Configuration(
                "NEW_ENCRYPTION_KEY equals ENCRYPTION_KEY; set NEW_ENCRYPTION_KEY to a new key generated with `openssl rand -hex 32`",
            ));
        }
        (KeysCommand::RotateEncryption(_), Some(old), Some(new)) => Plan {
            name: "keys rotate-encryption",
            rewrite: KeyRewrite::rotate(old.clone(), new.clone()),
            readable: vec![old, new],
            which_keys: "ENCRYPTION_KEY or NEW_ENCRYPTION_KEY",
            done: "re-encrypted",
            next_step: "set ENCRYPTION_KEY to the value of NEW_ENCRYPTION_KEY, unset NEW_ENCRYPTION_KEY, then start the servers",
        },
        (KeysCommand::RotateEncryption(_), Some(_), None) => {
            return Err(KeysCommandError::Configuration(
                "NEW_ENCRYPTION_KEY must be set to the new key (in the environment, never on the command line); generate one with `openssl rand -hex 32`",
            ));
        }
        (KeysCommand::Encrypt(_), None, _) => {
            return Err(KeysCommandError::Configuration(
                "ENCRYPTION_KEY must be set to the key to encrypt with; generate one with `openssl rand -hex 32`",
            ));
        }
        (KeysCommand::Decrypt(_) | KeysCommand::RotateEncryption(_), None, _) => {
            return Err(KeysCommandError::Configuration(
                "ENCRYPTION_KEY must be set to the key the stored values are encrypted with",
            ));
        }
    };
    Ok(Plan {
        rewrite: plan.rewrite.with_batch_size(batch_size),
        ..plan
    })
}

/// Runs one key command against the configured store, writing its report to `out`; it stops
/// after the current batch once `stop` is set (Ctrl-C).
///
/// # Errors
/// [`KeysCommandError`], one line saying what to do.
pub async fn run(
    command: &KeysCommand,
    settings: &Settings,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> Result<RewriteProgress, KeysCommandError> {
    let plan = plan(command, settings)?;
    let store = wiring::open_sql_store(settings).await?;
    let census = store
        .key_census(&plan.readable.iter().collect::<Vec<_>>())
        .await?;
    if census.under_other_keys() > 0 {
        return Err(KeysCommandError::UnreadableRows {
            count: census.under_other_keys(),
            which: plan.which_keys,
        });
    }
    writeln!(
        out,
        "{}: {} keys stored: {} in plain text, {} encrypted",
        plan.name,
        census.total,
        census.plain(),
        census.encrypted
    )?;
    if census.total == 0 {
        writeln!(
            out,
            "{}: the database holds no keys; if that is unexpected, check DATABASE_PATH or DATABASE_URL",
            plan.name
        )?;
    }
    out.flush()?;
    let total = census.total;
    let mut report_error = None;
    let progress = store
        .rewrite_key_values(&plan.rewrite, |progress| {
            let line = writeln!(
                out,
                "{}: {}/{} keys examined, {} {}",
                plan.name, progress.examined, total, progress.rewritten, plan.done
            )
            .and_then(|()| out.flush());
            if let Err(error) = line {
                report_error = Some(error);
                return ControlFlow::Break(());
            }
            if stop.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
    if let Some(error) = report_error {
        return Err(error.into());
    }
    if !progress.complete {
        writeln!(
            out,
            "{}: interrupted after {} of {} keys ({} {}); run it again to finish",
            plan.name, progress.examined, total, progress.rewritten, plan.done
        )?;
        return Ok(progress);
    }
    store.compact().await?;
    summarize(&plan, &progress, settings, out)?;
    Ok(progress)
}

fn summarize(
    plan: &Plan,
    progress: &RewriteProgress,
    settings: &Settings,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: done: {} keys examined, {} {}, {} already were, {} changed by another writer meanwhile (left alone)",
        plan.name,
        progress.examined,
        progress.rewritten,
        plan.done,
        progress.already_done,
        progress.changed_meanwhile
    )?;
    if matches!(settings.storage, StorageBackend::Sqlite { .. }) {
        writeln!(
            out,
            "{}: SQLite file compacted (secure_delete, VACUUM, write-ahead log truncated): it holds no old copy of the values",
            plan.name
        )?;
    } else if matches!(settings.storage, StorageBackend::Postgres { .. }) {
        writeln!(
            out,
            "{}: api_keys rewritten with VACUUM FULL; the write-ahead log, WAL archives and backups taken before this run still hold the old values; rotate them (docs/operations.md)",
            plan.name
        )?;
    } else {
        writeln!(
            out,
            "{}: MySQL binary logs and backups taken before this run still hold the old values; rotate them (docs/operations.md)",
            plan.name
        )?;
    }
    writeln!(out, "{}: next: {}", plan.name, plan.next_step)?;
    out.flush()
}

/// Sets the returned flag on the first Ctrl-C (SIGINT), so a command stops after its current
/// batch instead of mid-way.
pub fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    stop
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn census(total: u64, encrypted: u64, mine: u64) -> KeyCensus {
        KeyCensus {
            total,
            encrypted,
            by_cipher: vec![mine],
        }
    }

    #[test]
    fn a_store_in_the_configured_mode_passes() {
        assert_eq!(check_key_mode(&census(0, 0, 0), true), Ok(()));
        assert_eq!(check_key_mode(&census(5, 5, 5), true), Ok(()));
        let plain = KeyCensus {
            total: 5,
            encrypted: 0,
            by_cipher: vec![],
        };
        assert_eq!(check_key_mode(&plain, false), Ok(()));
    }

    #[test]
    fn each_mismatch_names_the_command_that_fixes_it() {
        let cases = [
            (census(5, 2, 2), true, "keys encrypt"),
            (census(5, 5, 3), true, "keys rotate-encryption"),
            (census(5, 4, 0), true, "keys rotate-encryption"),
            (
                KeyCensus {
                    total: 5,
                    encrypted: 1,
                    by_cipher: vec![],
                },
                false,
                "keys decrypt",
            ),
        ];
        for (census, configured, command) in cases {
            let message = check_key_mode(&census, configured).unwrap_err().to_string();
            assert!(message.contains(command), "{message}");
            assert_eq!(message.lines().count(), 1);
        }
    }

    #[test]
    fn the_commands_are_parsed_with_a_bounded_batch_size() {
        use clap::Parser;

        use crate::cli::{Cli, Command};
        let cli = Cli::try_parse_from(["akr", "keys", "encrypt", "--batch-size", "50"]).unwrap();
        assert!(matches!(
            cli.command_or_serve(),
            Command::Keys(KeysCommand::Encrypt(RewriteArgs { batch_size: 50 }))
        ));
        let cli = Cli::try_parse_from(["akr", "keys", "rotate-encryption"]).unwrap();
        assert!(matches!(
            cli.command_or_serve(),
            Command::Keys(KeysCommand::RotateEncryption(RewriteArgs {
                batch_size: 500
            }))
        ));
        assert!(Cli::try_parse_from(["akr", "keys", "decrypt", "--batch-size", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["akr", "keys", "rotate-encryption", "--new-key", "x"]).is_err(),
            "the new key never comes from argv"
        );
    }
}
