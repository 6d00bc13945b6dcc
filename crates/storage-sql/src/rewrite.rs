//! Stored key values moving between plain text and encryption (SPEC §9): the census the server
//! checks at start-up ([`SqlStore::key_census`]) and the batched rewrite behind the
//! `keys encrypt`, `keys decrypt` and `keys rotate-encryption` commands
//! ([`SqlStore::rewrite_key_values`]).
//!
//! A rewrite walks `api_keys` in id order, a batch at a time. Each row's mode is read from its
//! value alone (plain, or `v1:<key id>:…`), so a row already in the target mode is left alone
//! and a run that was interrupted (even killed between two statements) simply carries on when
//! started again: each batch commits in one transaction, each row's value and hash change in
//! one `UPDATE`, nothing is inserted or deleted, so no key is lost or doubled. An `UPDATE` only
//! applies while the row still holds the value that was read, so a concurrent writer is
//! counted, never overwritten.

use std::ops::ControlFlow;

use domain::{Error, Result};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use zeroize::Zeroizing;

use crate::{
    KeyCipher, SqlStore, StoredKey,
    cipher::{ENCRYPTED_PREFIX, KEYED_PREFIX_LEN, StoredForm, stored_form},
    convert::{self, Violation},
    entity::api_key,
};

/// How many stored key values are in which mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCensus {
    /// Every row of `api_keys`.
    pub total: u64,
    /// Rows holding a ciphertext, whatever key wrote it.
    pub encrypted: u64,
    /// Rows encrypted by each of the ciphers asked about, in the order given.
    pub by_cipher: Vec<u64>,
}

impl KeyCensus {
    /// Rows holding a plain value.
    pub fn plain(&self) -> u64 {
        self.total.saturating_sub(self.encrypted)
    }

    /// Rows encrypted by none of the ciphers asked about.
    pub fn under_other_keys(&self) -> u64 {
        self.encrypted
            .saturating_sub(self.by_cipher.iter().sum::<u64>())
    }
}

/// Where a rewrite takes every stored value, and what it may find on the way.
#[derive(Debug, Clone)]
pub struct KeyRewrite {
    /// The mode every row ends in: encrypted by this cipher, or plain text (`None`).
    target: Option<KeyCipher>,
    /// The ciphers rows may be encrypted with now, besides the target (plain rows are always
    /// readable).
    sources: Vec<KeyCipher>,
    /// Rows per transaction.
    batch_size: u64,
}

impl KeyRewrite {
    /// Rows per transaction unless told otherwise: small enough to keep each write transaction
    /// short beside a live database, large enough that commits do not dominate.
    pub const DEFAULT_BATCH_SIZE: u64 = 500;

    /// Encrypts every plain row with `key`.
    pub fn encrypt(key: KeyCipher) -> Self {
        Self::new(Some(key), Vec::new())
    }

    /// Decrypts every row encrypted with `key` back to plain text.
    pub fn decrypt(key: KeyCipher) -> Self {
        Self::new(None, vec![key])
    }

    /// Re-encrypts every row encrypted with `from` (and any plain row) with `to`.
    pub fn rotate(from: KeyCipher, to: KeyCipher) -> Self {
        Self::new(Some(to), vec![from])
    }

    fn new(target: Option<KeyCipher>, sources: Vec<KeyCipher>) -> Self {
        KeyRewrite {
            target,
            sources,
            batch_size: Self::DEFAULT_BATCH_SIZE,
        }
    }

    /// The same rewrite with `rows` per transaction (at least one).
    pub fn with_batch_size(mut self, rows: u64) -> Self {
        self.batch_size = Ord::max(rows, 1);
        self
    }

    /// The stored columns `stored` must change to, or `None` when it is already in the
    /// target mode.
    fn rewritten(&self, id: i64, stored: &str) -> Result<Option<StoredKey>, RewriteError> {
        let form = stored_form(stored);
        match (&self.target, form) {
            (None, StoredForm::Plain) => return Ok(None),
            (Some(target), StoredForm::Encrypted { key_id }) if key_id == target.key_id() => {
                return Ok(None);
            }
            _ => {}
        }
        let plain = match form {
            StoredForm::Plain => Zeroizing::new(stored.to_owned()),
            StoredForm::Encrypted { key_id } => self
                .sources
                .iter()
                .find(|source| source.key_id() == key_id)
                .ok_or(RewriteError::UnknownKey { key_id: id })?
                .decrypt(stored)
                .map_err(|_| RewriteError::Corrupt { key_id: id })?,
        };
        convert::stored_columns(&plain, self.target.as_ref())
            .map(Some)
            .map_err(|_| {
                RewriteError::Store(Error::Internal(
                    "a key value could not be encrypted: no random nonce".to_owned(),
                ))
            })
    }
}

/// What a rewrite did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteProgress {
    /// Rows read.
    pub examined: u64,
    /// Rows changed to the target mode.
    pub rewritten: u64,
    /// Rows found in the target mode already.
    pub already_done: u64,
    /// Rows another writer changed or deleted between the read and the update; left alone.
    pub changed_meanwhile: u64,
    /// Whether every row was examined (`false` when the caller stopped the run early).
    pub complete: bool,
}

/// Why a rewrite stopped. Batches committed before it stay committed.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// A row is encrypted by a key the rewrite was not given.
    #[error("api key {key_id} is encrypted with a key this run was not given")]
    UnknownKey {
        /// The row's id.
        key_id: i64,
    },
    /// A row names a key the rewrite has, but does not decrypt with it.
    #[error("api key {key_id} does not decrypt: its stored value is corrupt")]
    Corrupt {
        /// The row's id.
        key_id: i64,
    },
    /// Rewriting a row's hash collides with another row of its config: the same value is
    /// stored twice, once in each mode.
    #[error(
        "api key {key_id} holds the same value as another key of its config; delete one of them and run again"
    )]
    Duplicate {
        /// The row's id.
        key_id: i64,
    },
}

impl SqlStore {
    /// Counts the stored key values by mode: plain, encrypted, and encrypted by each of
    /// `ciphers`. Three to four `COUNT` queries; no value leaves the database.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be reached.
    pub async fn key_census(&self, ciphers: &[&KeyCipher]) -> Result<KeyCensus> {
        let count = |condition: Option<Expr>| {
            let mut query = api_key::Entity::find();
            if let Some(condition) = condition {
                query = query.filter(condition);
            }
            async move { query.count(&self.db).await.map_err(|err| self.error(err)) }
        };
        let total = count(None).await?;
        // The same rule as `cipher::stored_form`: `v1:`, the key id, `:`, then the ciphertext.
        let longer_than_prefix = || Expr::cust(format!("LENGTH(key_value) > {KEYED_PREFIX_LEN}"));
        let encrypted = count(Some(
            Expr::cust(format!("SUBSTR(key_value, 1, {})", ENCRYPTED_PREFIX.len()))
                .eq(ENCRYPTED_PREFIX)
                .and(Expr::cust(format!("SUBSTR(key_value, {KEYED_PREFIX_LEN}, 1)")).eq(":"))
                .and(longer_than_prefix()),
        ))
        .await?;
        let mut by_cipher = Vec::with_capacity(ciphers.len());
        for cipher in ciphers {
            let under_cipher = Expr::cust(format!("SUBSTR(key_value, 1, {KEYED_PREFIX_LEN})"))
                .eq(cipher.value_prefix())
                .and(longer_than_prefix());
            by_cipher.push(count(Some(under_cipher)).await?);
        }
        Ok(KeyCensus {
            total,
            encrypted,
            by_cipher,
        })
    }

    /// Rewrites every stored key value into the mode `plan` asks for, one batch per
    /// transaction, calling `after_batch` with the running totals after each commit; it stops
    /// early (with `complete: false`) when that returns `Break`. Running it again after any
    /// interruption finishes the job.
    ///
    /// On SQLite each batch runs with `secure_delete` on, so the old values are overwritten
    /// in the file rather than left in free pages; call [`SqlStore::compact`] at the end.
    ///
    /// # Errors
    /// [`RewriteError`]: the database failed, or a row cannot be read with the keys given.
    pub async fn rewrite_key_values(
        &self,
        plan: &KeyRewrite,
        mut after_batch: impl FnMut(&RewriteProgress) -> ControlFlow<()>,
    ) -> Result<RewriteProgress, RewriteError> {
        let mut progress = RewriteProgress::default();
        let mut after_id = i64::MIN;
        loop {
            let rows: Vec<(i64, String)> = api_key::Entity::find()
                .select_only()
                .column(api_key::Column::Id)
                .column(api_key::Column::KeyValue)
                .filter(api_key::Column::Id.gt(after_id))
                .order_by_asc(api_key::Column::Id)
                .limit(plan.batch_size)
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(|err| self.error(err))?;
            let Some(&(last_id, _)) = rows.last() else {
                progress.complete = true;
                return Ok(progress);
            };
            let mut changes = Vec::new();
            for (id, stored) in rows {
                progress.examined += 1;
                match plan.rewritten(id, &stored)? {
                    Some(columns) => changes.push((id, stored, columns)),
                    None => progress.already_done += 1,
                }
            }
            self.apply_rewrites(changes, &mut progress).await?;
            after_id = last_id;
            if after_batch(&progress).is_break() {
                return Ok(progress);
            }
        }
    }

    /// Writes one batch of rewritten rows in one transaction.
    async fn apply_rewrites(
        &self,
        changes: Vec<(i64, String, StoredKey)>,
        progress: &mut RewriteProgress,
    ) -> Result<(), RewriteError> {
        if changes.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write().await?;
        if self.backend == DbBackend::Sqlite {
            txn.execute_unprepared("PRAGMA secure_delete = ON")
                .await
                .map_err(|err| self.error(err))?;
        }
        let mut applied = RewriteProgress::default();
        for (id, old_value, columns) in changes {
            let result = api_key::Entity::update_many()
                .col_expr(api_key::Column::KeyValue, Expr::val(columns.key_value))
                .col_expr(api_key::Column::KeyHash, Expr::val(columns.key_hash))
                .filter(api_key::Column::Id.eq(id))
                .filter(api_key::Column::KeyValue.eq(old_value))
                .exec(&txn)
                .await
                .map_err(|err| match convert::violation(&err) {
                    Some(Violation::Unique) => RewriteError::Duplicate { key_id: id },
                    _ => RewriteError::Store(self.error(err)),
                })?;
            if result.rows_affected == 1 {
                applied.rewritten += 1;
            } else {
                applied.changed_meanwhile += 1;
            }
        }
        self.commit(txn).await?;
        progress.rewritten += applied.rewritten;
        progress.changed_meanwhile += applied.changed_meanwhile;
        Ok(())
    }

    /// Leaves no stale copy of rewritten values in the database files. SQLite: folds the
    /// write-ahead log into the file and truncates it, then `VACUUM`s (rebuilding every page)
    /// and truncates the log again. PostgreSQL keeps every old row version until a vacuum, so
    /// `api_keys` is rewritten into new files with `VACUUM FULL` (it holds the table's
    /// exclusive lock for the seconds that takes). MySQL keeps no such copies in its tables;
    /// binary logs, write-ahead logs and older backups are the operator's to rotate
    /// (`docs/operations.md`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn compact(&self) -> Result<()> {
        let statements: &[&str] = match self.backend {
            DbBackend::Sqlite => &[
                "PRAGMA wal_checkpoint(TRUNCATE)",
                "VACUUM",
                "PRAGMA wal_checkpoint(TRUNCATE)",
            ],
            DbBackend::Postgres => &["VACUUM FULL api_keys"],
            _ => &[],
        };
        for statement in statements {
            self.db
                .execute_unprepared(statement)
                .await
                .map_err(|err| self.error(err))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::EncryptionKey;

    fn cipher(first: char) -> KeyCipher {
        let hex = format!("{first}f1c9a7be2d4056817ac93e0b5f24d6e81a7c3b9d0e5f2a4c6b8d1e3f5a7c9e2");
        KeyCipher::new(&EncryptionKey::parse(&hex).unwrap())
    }

    #[test]
    fn rows_in_the_target_mode_are_left_alone() {
        let (a, b) = (cipher('3'), cipher('4'));
        let under_a = a.encrypt("sk-1").unwrap();
        assert!(
            KeyRewrite::encrypt(a.clone())
                .rewritten(1, &under_a)
                .unwrap()
                .is_none()
        );
        assert!(
            KeyRewrite::decrypt(a.clone())
                .rewritten(1, "sk-1")
                .unwrap()
                .is_none()
        );
        let under_b = b.encrypt("sk-1").unwrap();
        let rotate = KeyRewrite::rotate(a.clone(), b.clone());
        assert!(rotate.rewritten(1, &under_b).unwrap().is_none());
    }

    #[test]
    fn each_plan_reads_what_it_may_find_and_writes_its_target() {
        let (a, b) = (cipher('3'), cipher('4'));
        let encrypted = KeyRewrite::encrypt(a.clone())
            .rewritten(1, "sk-1")
            .unwrap()
            .unwrap();
        assert_eq!(a.decrypt(&encrypted.key_value).unwrap().as_str(), "sk-1");
        assert_eq!(encrypted.key_hash, a.fingerprint("sk-1"));

        let rotated = KeyRewrite::rotate(a.clone(), b.clone())
            .rewritten(2, &encrypted.key_value)
            .unwrap()
            .unwrap();
        assert_eq!(b.decrypt(&rotated.key_value).unwrap().as_str(), "sk-1");
        assert_eq!(rotated.key_hash, b.fingerprint("sk-1"));

        let plain = KeyRewrite::decrypt(b.clone())
            .rewritten(3, &rotated.key_value)
            .unwrap()
            .unwrap();
        assert_eq!(plain.key_value, "sk-1");
    }

    #[test]
    fn a_row_under_an_unknown_key_or_corrupt_is_named_by_id() {
        let (a, b) = (cipher('3'), cipher('4'));
        let under_b = b.encrypt("sk-1").unwrap();
        assert!(matches!(
            KeyRewrite::encrypt(a.clone()).rewritten(7, &under_b),
            Err(RewriteError::UnknownKey { key_id: 7 })
        ));
        let truncated = &a.encrypt("sk-1").unwrap()[..20];
        assert!(matches!(
            KeyRewrite::decrypt(a).rewritten(8, truncated),
            Err(RewriteError::Corrupt { key_id: 8 })
        ));
    }
}
