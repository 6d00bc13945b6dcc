//! Client keys on a running server (SPEC §7): the in-memory directory the hot path looks keys
//! up in (by the digest of the presented secret, never a store read), admission before any
//! upstream call (expired or disabled → 401, outside `allowed_config_ids` → 403, over a limit →
//! 429 with `Retry-After`), the concurrency slot an admitted exchange holds until its
//! [`Completion`] ends, the tokens each exchange reports charged to the limiter, and usage
//! aggregated in memory and flushed to the store in batches.
//!
//! The directory is rebuilt from the store after every client-key admin write (on this instance
//! before the write answers, on the others through the config-change notices), so a rotated or
//! deleted secret stops working at once.

use std::{
    collections::HashMap,
    hash::BuildHasherDefault,
    sync::{Arc, Mutex, RwLock},
};

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::{
    Admission, ClientKey, ClientKeyId, ClientKeyStore, ClientLimiter, ClientLimits,
    ClientUsageDelta, IssuedSecret, ProxyConfigId, SecretDigest, SlotId,
};
use storage_sql::ClientSecretHasher;

use crate::{
    completion::{Completion, ExchangeFacts, ExchangeObserver},
    errors::ApiError,
};

/// What the hot path knows of one client key.
#[derive(Debug, Clone)]
pub struct ClientEntry {
    /// The key.
    pub id: ClientKeyId,
    is_active: bool,
    expires_at: Option<DateTime<Utc>>,
    allowed: Box<[ProxyConfigId]>,
    /// Its limits.
    pub limits: ClientLimits,
    budget_used: u64,
    budget_period_start: Option<DateTime<Utc>>,
}

impl ClientEntry {
    fn new(key: &ClientKey) -> Self {
        ClientEntry {
            id: key.id,
            is_active: key.spec.is_active,
            expires_at: key.spec.expires_at,
            allowed: key.spec.allowed_config_ids.clone().into_boxed_slice(),
            limits: key.spec.limits,
            budget_used: key.usage.budget_used,
            budget_period_start: key.usage.budget_period_start,
        }
    }

    /// The budget the store had counted in the period `now` falls in when the directory was
    /// built: the floor of the live count.
    fn seed(&self, now: DateTime<Utc>) -> u64 {
        match (self.limits.budget, self.budget_period_start) {
            (Some(budget), Some(start)) if budget.period.start(now) == start => self.budget_used,
            _ => 0,
        }
    }
}

/// Who presented a proxy credential.
#[derive(Debug, Clone)]
pub enum Caller {
    /// One of `GLOBAL_PROXY_KEYS`: no limits.
    Global,
    /// A client key.
    Client(Arc<ClientEntry>),
}

/// Digests are uniformly random already: the map hashes their first bytes instead of SipHash.
#[derive(Default, Clone, Copy)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.0 = (self.0 ^ n.cast_unsigned()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Fast<K, V> = HashMap<K, V, BuildHasherDefault<DigestHasher>>;

#[derive(Default)]
struct Directory {
    by_digest: Fast<SecretDigest, Arc<ClientEntry>>,
    by_id: Fast<ClientKeyId, Arc<ClientEntry>>,
}

/// Client keys of this server: directory, admission, usage.
pub struct ClientKeys {
    store: Arc<dyn ClientKeyStore>,
    limiter: Arc<dyn ClientLimiter>,
    hasher: ClientSecretHasher,
    directory: RwLock<Arc<Directory>>,
    refreshing: tokio::sync::Mutex<()>,
    pending: Mutex<HashMap<ClientKeyId, ClientUsageDelta>>,
    unsaved: tokio::sync::Mutex<Vec<ClientUsageDelta>>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeys").finish_non_exhaustive()
    }
}

/// Length of the random part of a secret: 40 URL-safe characters, 240 bits.
const SECRET_CHARS: usize = 40;
/// Characters of the secret kept as its recognisable prefix (`akr-` and 8 more).
const PREFIX_CHARS: usize = 12;
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A fresh secret: `akr-` and 40 characters from the OS random generator.
///
/// # Errors
/// 503 when the operating system gives no random bytes.
pub fn new_secret() -> Result<String, ApiError> {
    let mut bytes = [0u8; SECRET_CHARS];
    getrandom::fill(&mut bytes).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency_unavailable",
            "the operating system gave no random bytes for a new secret; retry",
        )
    })?;
    let mut secret = String::with_capacity(4 + SECRET_CHARS);
    secret.push_str("akr-");
    // 256 is a multiple of 64, so every character is uniform.
    secret.extend(
        bytes
            .iter()
            .map(|b| char::from(URL_SAFE[usize::from(b & 63)])),
    );
    Ok(secret)
}

impl ClientKeys {
    /// Client keys over this store and limiter, hashing secrets with `hasher`. The directory is
    /// empty until [`ClientKeys::refresh`].
    pub fn new(
        store: Arc<dyn ClientKeyStore>,
        limiter: Arc<dyn ClientLimiter>,
        hasher: ClientSecretHasher,
    ) -> Self {
        ClientKeys {
            store,
            limiter,
            hasher,
            directory: RwLock::new(Arc::default()),
            refreshing: tokio::sync::Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
            unsaved: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// The store (admin routes).
    pub fn store(&self) -> &dyn ClientKeyStore {
        self.store.as_ref()
    }

    /// The limiter (readiness).
    pub fn limiter(&self) -> &dyn ClientLimiter {
        self.limiter.as_ref()
    }

    fn directory(&self) -> Arc<Directory> {
        self.directory
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Rebuilds the directory from the store. Rebuilds run one at a time, so a slower, older
    /// read never replaces a newer one.
    ///
    /// # Errors
    /// The store's error; the old directory stays.
    pub async fn refresh(&self) -> domain::Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let keys = self.store.list_client_keys().await?;
        let mut directory = Directory::default();
        for key in &keys {
            let entry = Arc::new(ClientEntry::new(key));
            directory.by_digest.insert(key.digest, entry.clone());
            directory.by_id.insert(key.id, entry);
        }
        *self
            .directory
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(directory);
        Ok(())
    }

    /// A new secret with its digest and prefix, as the store receives it.
    ///
    /// # Errors
    /// 503 when the operating system gives no random bytes.
    pub fn issue(&self) -> Result<(String, IssuedSecret), ApiError> {
        let secret = new_secret()?;
        let issued = IssuedSecret {
            digest: self.hasher.digest(&secret),
            prefix: secret.chars().take(PREFIX_CHARS).collect(),
        };
        Ok((secret, issued))
    }

    /// The client key whose secret is `presented`: `None` when no key has it; 401 when the key
    /// is switched off or expired.
    ///
    /// # Errors
    /// 401 `unauthorized` for a disabled or expired key.
    pub fn authenticate(&self, presented: &str) -> Option<Result<Arc<ClientEntry>, ApiError>> {
        let directory = self.directory();
        if directory.by_digest.is_empty() {
            return None;
        }
        let entry = directory
            .by_digest
            .get(&self.hasher.digest(presented))?
            .clone();
        if !entry.is_active {
            return Some(Err(ApiError::unauthorized("this client key is disabled")));
        }
        if entry.expires_at.is_some_and(|at| Utc::now() >= at) {
            return Some(Err(ApiError::unauthorized("this client key has expired")));
        }
        Some(Ok(entry))
    }

    /// Admits one exchange of `entry` to `config` before any upstream call; the concurrency slot
    /// it takes is handed to `completion`, which gives it back when the exchange ends.
    ///
    /// # Errors
    /// 403 `config_not_allowed`; 429 `client_rate_limited`, `client_budget_exhausted` or
    /// `client_concurrency_limit` with `Retry-After`; 503 when the limiter is unreachable.
    pub async fn admit(
        &self,
        entry: &ClientEntry,
        config: ProxyConfigId,
        completion: &mut Completion,
    ) -> Result<(), ApiError> {
        completion.set_client_key(entry.id);
        if !entry.allowed.is_empty() && entry.allowed.binary_search(&config).is_err() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "config_not_allowed",
                "this client key may not call this proxy config (allowed_config_ids)",
            ));
        }
        if entry.limits.is_unlimited() {
            return Ok(());
        }
        let now = Utc::now();
        match self
            .limiter
            .admit(entry.id, &entry.limits, entry.seed(now), now)
            .await?
        {
            Admission::Admitted(None) => Ok(()),
            Admission::Admitted(Some(slot)) => {
                completion.hold(Box::new(SlotGuard {
                    limiter: self.limiter.clone(),
                    key: entry.id,
                    slot,
                }));
                Ok(())
            }
            Admission::Refused(refusal) => {
                let message = match refusal.kind {
                    domain::LimitKind::Requests => "this client key is over its rpm limit",
                    domain::LimitKind::Tokens => "this client key is over its tpm limit",
                    domain::LimitKind::Budget => {
                        "this client key has used its token_budget for this budget_period"
                    }
                    domain::LimitKind::Concurrency => {
                        "this client key has max_concurrency requests in flight"
                    }
                };
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    refusal.kind.code(),
                    format!("{message}; retry after {} s", refusal.retry_after_seconds),
                )
                .with_retry_after(refusal.retry_after_seconds))
            }
        }
    }

    /// Usage not yet flushed for `id` (the admin API adds it to the stored totals).
    pub fn pending_usage(&self, id: ClientKeyId) -> Option<ClientUsageDelta> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    /// Moves the aggregated usage to the store in one batch; what a failed write leaves behind
    /// is merged into the next flush.
    pub async fn flush(&self) {
        let fresh: Vec<ClientUsageDelta> = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_values()
        .collect();
        let mut unsaved = self.unsaved.lock().await;
        for delta in fresh {
            match unsaved.iter_mut().find(|d| d.key_id == delta.key_id) {
                Some(existing) => existing.merge(&delta),
                None => unsaved.push(delta),
            }
        }
        if unsaved.is_empty() {
            return;
        }
        match self.store.apply_client_usage(&unsaved).await {
            Ok(()) => unsaved.clear(),
            Err(error) => {
                tracing::warn!(%error, keys = unsaved.len(), "client-key usage could not be saved; retrying at the next flush");
            }
        }
    }

    /// Flushes every `interval` until the task is dropped.
    pub async fn run_flush(self: Arc<Self>, interval: std::time::Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.flush().await;
        }
    }
}

impl ExchangeObserver for ClientKeys {
    fn exchange_finished(&self, facts: &ExchangeFacts) {
        let Some(id) = facts.client_key_id else {
            return;
        };
        let now = Utc::now();
        let tokens = facts.tokens.map_or(0, |usage| usage.total());
        let entry = self.directory().by_id.get(&id).cloned();
        let period = entry
            .as_ref()
            .and_then(|e| e.limits.budget)
            .map(|budget| budget.period.start(now));
        let delta = ClientUsageDelta {
            key_id: id,
            requests: 1,
            tokens,
            budget_tokens: if period.is_some() { tokens } else { 0 },
            budget_period_start: period,
            last_used_at: Some(now),
        };
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id)
            .and_modify(|d| d.merge(&delta))
            .or_insert(delta);
        let Some(entry) = entry else { return };
        if tokens == 0 || (entry.limits.tpm.is_none() && entry.limits.budget.is_none()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let limiter = self.limiter.clone();
        runtime.spawn(async move {
            let seed = entry.seed(now);
            if let Err(error) = limiter
                .record_tokens(entry.id, &entry.limits, tokens, seed, now)
                .await
            {
                tracing::warn!(client_key_id = %entry.id, %error, "tokens could not be charged to the client key's limits");
            }
        });
    }
}

/// A concurrency slot, given back when dropped (the completion drops it when the exchange ends).
struct SlotGuard {
    limiter: Arc<dyn ClientLimiter>,
    key: ClientKeyId,
    slot: SlotId,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (the process is stopping): a shared slot expires by itself.
            return;
        };
        let limiter = self.limiter.clone();
        let (key, slot) = (self.key, self.slot);
        runtime.spawn(async move {
            if let Err(error) = limiter.release(key, slot).await {
                tracing::warn!(client_key_id = %key, %error, "a concurrency slot could not be given back; it expires by itself");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secrets_are_akr_and_forty_url_safe_characters_each_new() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert!(a.starts_with("akr-"));
        assert_eq!(a.len(), 44);
        assert!(a[4..].bytes().all(|c| URL_SAFE.contains(&c)));
        assert_ne!(a, b);
    }
}
