//! The admin use cases of SPEC §2: validate, write through the store, overlay live key health,
//! and announce every change so each instance drops its cached snapshot.

use std::sync::Arc;

use crate::{
    clock::{Clock, SystemClock},
    command::{BatchImportReport, BatchKeysInput, NewKeyInput, ProxyConfigInput},
    error::Result,
    key_page::{
        HealthState, KeyCursor, KeyPage, KeyPageQuery, KeyRange, KeyTally, MAX_SCANNED_KEYS,
    },
    model::{ApiKey, ApiKeyId, ConfigChange, KeyHealth, ProxyConfig, ProxyConfigId, Slug},
    ports::{ConfigEvents, ProxyStore, RotationState},
};

/// Called with every change right after the write, before the admin call returns, so this
/// instance's very next proxy request sees it even before the published notice arrives.
pub type LocalChangeHook = Arc<dyn Fn(&ConfigChange) + Send + Sync>;

/// The admin use cases.
#[derive(Clone)]
pub struct AdminService {
    store: Arc<dyn ProxyStore>,
    rotation: Arc<dyn RotationState>,
    events: Arc<dyn ConfigEvents>,
    local_hook: Option<LocalChangeHook>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService").finish_non_exhaustive()
    }
}

impl AdminService {
    /// The service over these ports.
    pub fn new(
        store: Arc<dyn ProxyStore>,
        rotation: Arc<dyn RotationState>,
        events: Arc<dyn ConfigEvents>,
    ) -> Self {
        AdminService {
            store,
            rotation,
            events,
            local_hook: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads time from `clock` (the system clock by default), to tell ended cooldowns.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds the hook run on this instance for every change.
    #[must_use]
    pub fn with_local_hook(mut self, hook: LocalChangeHook) -> Self {
        self.local_hook = Some(hook);
        self
    }

    /// Creates a config.
    ///
    /// # Errors
    /// Invalid fields; a taken name or slug; an unavailable store.
    pub async fn create_config(&self, input: &ProxyConfigInput) -> Result<ProxyConfig> {
        let spec = input.validate()?;
        let config = self.store.create_config(spec).await?;
        self.announce(&config, None).await;
        Ok(config)
    }

    /// Every config.
    ///
    /// # Errors
    /// An unavailable store.
    pub async fn list_configs(&self) -> Result<Vec<ProxyConfig>> {
        self.store.list_configs().await
    }

    /// One config.
    ///
    /// # Errors
    /// An unknown id; an unavailable store.
    pub async fn get_config(&self, id: ProxyConfigId) -> Result<ProxyConfig> {
        self.store.get_config(id).await
    }

    /// Replaces a config.
    ///
    /// # Errors
    /// Invalid fields; an unknown id; a taken name or slug; an unavailable store.
    pub async fn replace_config(
        &self,
        id: ProxyConfigId,
        input: &ProxyConfigInput,
    ) -> Result<ProxyConfig> {
        let spec = input.validate()?;
        let before = self.store.get_config(id).await?;
        let config = self.store.replace_config(id, spec).await?;
        self.announce(&config, Some(before.slug)).await;
        Ok(config)
    }

    /// Switches a config on or off.
    ///
    /// # Errors
    /// An unknown id; an unavailable store.
    pub async fn set_config_active(
        &self,
        id: ProxyConfigId,
        is_active: bool,
    ) -> Result<ProxyConfig> {
        let config = self.store.set_config_active(id, is_active).await?;
        self.announce(&config, None).await;
        Ok(config)
    }

    /// Deletes a config with its keys, and their rotation state.
    ///
    /// # Errors
    /// An unknown id; an unavailable store.
    pub async fn delete_config(&self, id: ProxyConfigId) -> Result<ProxyConfig> {
        let keys = self.store.list_keys(id).await?;
        let config = self.store.delete_config(id).await?;
        self.announce(&config, None).await;
        self.forget_best_effort(keys.iter().map(|k| k.id).collect())
            .await;
        Ok(config)
    }

    /// Every key of a config, with live health from the rotation state when it answers. Its cost
    /// grows with the pool: for jobs that must see every key; the admin API pages with
    /// [`AdminService::list_key_page`].
    ///
    /// # Errors
    /// An unknown config; an unavailable store.
    pub async fn list_keys(&self, config: ProxyConfigId) -> Result<Vec<ApiKey>> {
        let mut keys = self.store.list_keys(config).await?;
        self.overlay_live_health(&mut keys).await;
        Ok(keys)
    }

    /// One page of a config's keys, ordered by id, with live health. Memory is bounded by the
    /// page: the store reads `limit + 1` keys (the extra one tells whether a page follows), and
    /// a health filter, which the store cannot apply since live health is not stored, reads on
    /// in pages of the largest size until the page is full, the pool ends, or
    /// [`MAX_SCANNED_KEYS`] keys were read; then the cursor continues after the last key read.
    ///
    /// # Errors
    /// An unknown config; an unavailable store.
    pub async fn list_key_page(
        &self,
        config: ProxyConfigId,
        query: &KeyPageQuery,
    ) -> Result<KeyPage> {
        let limit = query.limit.get();
        let batch = match query.health {
            None => limit + 1,
            Some(_) => crate::key_page::MAX_PAGE_LIMIT + 1,
        };
        let mut items: Vec<ApiKey> = Vec::with_capacity(limit);
        let mut after = query.after;
        let mut scanned = 0;
        loop {
            let range = KeyRange {
                after,
                limit: batch,
                is_active: query.is_active,
            };
            let mut keys = self.store.list_key_range(config, range).await?;
            let exhausted = keys.len() < batch;
            self.overlay_live_health(&mut keys).await;
            let now = self.clock.now();
            for key in keys {
                if items.len() == limit {
                    // A key follows the full page.
                    let next_cursor = items.last().map(|k| KeyCursor::after(k.id));
                    return Ok(KeyPage { items, next_cursor });
                }
                after = Some(key.id);
                scanned += 1;
                if query
                    .health
                    .is_none_or(|wanted| HealthState::of(key.health, now) == wanted)
                {
                    items.push(key);
                }
            }
            if exhausted {
                return Ok(KeyPage {
                    items,
                    next_cursor: None,
                });
            }
            if scanned >= MAX_SCANNED_KEYS {
                return Ok(KeyPage {
                    items,
                    next_cursor: after.map(KeyCursor::after),
                });
            }
        }
    }

    /// Every config's keys counted by switch and stored health, from one grouped store query
    /// whatever the pools hold. Configs without keys are left out.
    ///
    /// # Errors
    /// An unavailable store.
    pub async fn key_tallies(&self) -> Result<std::collections::BTreeMap<ProxyConfigId, KeyTally>> {
        let counts = self.store.count_keys(self.clock.now()).await?;
        Ok(KeyTally::per_config(&counts))
    }

    /// One key, with live health.
    ///
    /// # Errors
    /// An unknown key; an unavailable store.
    pub async fn get_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        let mut key = self.store.get_key(id).await?;
        if let Ok(states) = self.rotation.key_states(&[id]).await
            && let [health] = states[..]
        {
            key.health = health;
        }
        Ok(key)
    }

    /// Adds one key.
    ///
    /// # Errors
    /// An invalid value; an unknown config; a key the config already has; an unavailable store.
    pub async fn add_key(&self, config: ProxyConfigId, input: &NewKeyInput) -> Result<ApiKey> {
        let (secret, is_active) = input.validate()?;
        let key = self.store.add_key(config, secret, is_active).await?;
        self.announce_config(config).await;
        Ok(key)
    }

    /// Imports many keys: blanks ignored, repeats and keys already present skipped, invalid
    /// values reported masked.
    ///
    /// # Errors
    /// An unknown config; an unavailable store.
    pub async fn import_keys(
        &self,
        config: ProxyConfigId,
        input: &BatchKeysInput,
    ) -> Result<BatchImportReport> {
        let batch = input.prepare();
        let inserted = if batch.keys.is_empty() {
            self.store.get_config(config).await?;
            Default::default()
        } else {
            self.store
                .add_keys(config, batch.keys, batch.is_active)
                .await?
        };
        if inserted.inserted > 0 {
            self.announce_config(config).await;
        }
        Ok(BatchImportReport {
            success_count: inserted.inserted,
            failed_count: batch.failed_keys.len() as u64,
            skipped_count: inserted.skipped + batch.duplicates_in_batch,
            failed_keys: batch.failed_keys,
        })
    }

    /// Deletes every key of a config; returns how many.
    ///
    /// # Errors
    /// An unknown config; an unavailable store.
    pub async fn clear_keys(&self, config: ProxyConfigId) -> Result<u64> {
        let keys = self.store.list_keys(config).await?;
        let deleted = self.store.clear_keys(config).await?;
        self.announce_config(config).await;
        self.forget_best_effort(keys.iter().map(|k| k.id).collect())
            .await;
        Ok(deleted)
    }

    /// Switches a key on or off. Switching a key on also puts a failed key back in rotation:
    /// that is the admin's way to re-enable it (SPEC §3).
    ///
    /// # Errors
    /// An unknown key; an unavailable store or rotation state.
    pub async fn set_key_active(&self, id: ApiKeyId, is_active: bool) -> Result<ApiKey> {
        let mut key = self.store.set_key_active(id, is_active).await?;
        if is_active {
            self.rotation.mark_ok(id).await?;
            self.store.set_key_health(id, KeyHealth::Ok).await?;
            key.health = KeyHealth::Ok;
        }
        self.announce_config(key.proxy_config_id).await;
        Ok(key)
    }

    /// Deletes one key.
    ///
    /// # Errors
    /// An unknown key; an unavailable store.
    pub async fn delete_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        let key = self.store.delete_key(id).await?;
        self.announce_config(key.proxy_config_id).await;
        self.forget_best_effort(vec![id]).await;
        Ok(key)
    }

    async fn announce_config(&self, id: ProxyConfigId) {
        match self.store.get_config(id).await {
            Ok(config) => self.announce(&config, None).await,
            // The write succeeded; without the slug, tell every instance to resync instead.
            Err(_) => {
                self.publish(ConfigChange {
                    config_id: id,
                    slugs: Vec::new(),
                })
                .await
            }
        }
    }

    async fn announce(&self, config: &ProxyConfig, previous_slug: Option<Slug>) {
        let mut slugs = vec![config.slug.clone()];
        slugs.extend(previous_slug.filter(|s| *s != config.slug));
        self.publish(ConfigChange {
            config_id: config.id,
            slugs,
        })
        .await;
    }

    /// A failed publish must not turn a successful write into an error the client would retry:
    /// the local hook has already run, and other instances resync when their subscription
    /// reconnects.
    async fn publish(&self, change: ConfigChange) {
        if let Some(hook) = &self.local_hook {
            hook(&change);
        }
        let _ = self.events.publish(change).await;
    }

    /// Replaces the stored health of `keys` with the live one, as of now (an ended cooldown reads
    /// ok). The stored health is a fallback when the rotation state does not answer: it lags the
    /// live state by one write at most.
    async fn overlay_live_health(&self, keys: &mut [ApiKey]) {
        if keys.is_empty() {
            return;
        }
        let ids: Vec<ApiKeyId> = keys.iter().map(|k| k.id).collect();
        if let Ok(states) = self.rotation.key_states(&ids).await
            && states.len() == keys.len()
        {
            for (key, health) in keys.iter_mut().zip(states) {
                key.health = health;
            }
        }
        let now = self.clock.now();
        for key in keys {
            key.health = key.health.at(now);
        }
    }

    /// Rotation state of deleted keys is only memory; leaving it behind is harmless.
    async fn forget_best_effort(&self, keys: Vec<ApiKeyId>) {
        if !keys.is_empty() {
            let _ = self.rotation.forget(&keys).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Mutex;

    use chrono::Utc;
    use mockall::predicate::eq;

    use super::*;
    use crate::{
        Error,
        model::{KeySecret, KeyUsage, ProxyConfigSpec},
        ports::{InsertedKeys, MockConfigEvents, MockProxyStore, MockRotationState},
    };

    fn input(name: &str, slug: &str) -> ProxyConfigInput {
        ProxyConfigInput {
            name: Some(name.into()),
            slug: Some(slug.into()),
            config_type: Some("LLM".into()),
            target_base_url: Some("https://api.example.com/v1".into()),
            ..Default::default()
        }
    }

    fn stored(id: i64, spec: ProxyConfigSpec) -> ProxyConfig {
        ProxyConfig::from_spec(ProxyConfigId(id), spec, Utc::now(), Utc::now())
    }

    fn key(id: i64, config: i64) -> ApiKey {
        ApiKey {
            id: ApiKeyId(id),
            proxy_config_id: ProxyConfigId(config),
            key_value: KeySecret::parse("sk-test-key-000").unwrap(),
            is_active: true,
            health: KeyHealth::Ok,
            usage: KeyUsage::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn recording_events() -> (MockConfigEvents, Arc<Mutex<Vec<ConfigChange>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut events = MockConfigEvents::new();
        events.expect_publish().returning(move |change| {
            sink.lock().unwrap().push(change);
            Ok(())
        });
        (events, seen)
    }

    #[tokio::test]
    async fn invalid_input_never_reaches_the_store() {
        let mut store = MockProxyStore::new();
        store.expect_create_config().never();
        let service = AdminService::new(
            Arc::new(store),
            Arc::new(MockRotationState::new()),
            Arc::new(MockConfigEvents::new()),
        );
        let err = service
            .create_config(&ProxyConfigInput::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Invalid(ref e) if e.fields().len() == 3),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn renaming_a_slug_announces_old_and_new_slug_and_runs_the_local_hook() {
        let mut store = MockProxyStore::new();
        let old = input("Old", "old").validate().unwrap();
        store
            .expect_get_config()
            .returning(move |id| Ok(stored(id.0, old.clone())));
        store
            .expect_replace_config()
            .returning(|id, spec| Ok(stored(id.0, spec)));
        let (events, seen) = recording_events();
        let hooked = Arc::new(Mutex::new(0));
        let counter = hooked.clone();
        let service = AdminService::new(
            Arc::new(store),
            Arc::new(MockRotationState::new()),
            Arc::new(events),
        )
        .with_local_hook(Arc::new(move |_| *counter.lock().unwrap() += 1));
        service
            .replace_config(ProxyConfigId(4), &input("New", "new"))
            .await
            .unwrap();
        let seen = seen.lock().unwrap();
        let slugs: Vec<&str> = seen[0].slugs.iter().map(Slug::as_str).collect();
        assert_eq!(slugs, ["new", "old"]);
        assert_eq!(*hooked.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn batch_import_counts_inserted_skipped_and_failed() {
        let mut store = MockProxyStore::new();
        store
            .expect_add_keys()
            .withf(|config, keys, active| *config == ProxyConfigId(1) && keys.len() == 3 && *active)
            .returning(|_, _, _| {
                Ok(InsertedKeys {
                    inserted: 2,
                    skipped: 1,
                })
            });
        store
            .expect_get_config()
            .returning(|id| Ok(stored(id.0, input("A", "a").validate().unwrap())));
        let (events, seen) = recording_events();
        let service = AdminService::new(
            Arc::new(store),
            Arc::new(MockRotationState::new()),
            Arc::new(events),
        );
        let batch = BatchKeysInput {
            keys: ["k1", "k2", "k3", "k1", "", "bad key"]
                .map(String::from)
                .to_vec(),
            is_active: None,
        };
        let report = service.import_keys(ProxyConfigId(1), &batch).await.unwrap();
        assert_eq!(
            (
                report.success_count,
                report.skipped_count,
                report.failed_count
            ),
            (2, 2, 1)
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn listing_keys_overlays_live_health() {
        let mut store = MockProxyStore::new();
        store
            .expect_list_keys()
            .returning(|config| Ok(vec![key(1, config.0), key(2, config.0)]));
        let mut rotation = MockRotationState::new();
        rotation
            .expect_key_states()
            .returning(|_| Ok(vec![KeyHealth::Ok, KeyHealth::Failed]));
        let service = AdminService::new(
            Arc::new(store),
            Arc::new(rotation),
            Arc::new(MockConfigEvents::new()),
        );
        let keys = service.list_keys(ProxyConfigId(3)).await.unwrap();
        assert_eq!(keys[1].health, KeyHealth::Failed);
    }

    fn page_store(pool: i64) -> MockProxyStore {
        let mut store = MockProxyStore::new();
        store
            .expect_list_key_range()
            .returning(move |config, range| {
                let from = range.after.map_or(1, |after| after.0 + 1);
                let to = (from + range.limit as i64).min(pool + 1);
                Ok((from..to).map(|id| key(id, config.0)).collect())
            });
        store
    }

    fn failed_every(nth: i64) -> MockRotationState {
        let mut rotation = MockRotationState::new();
        rotation.expect_key_states().returning(move |ids| {
            Ok(ids
                .iter()
                .map(|id| {
                    if id.0 % nth == 0 {
                        KeyHealth::Failed
                    } else {
                        KeyHealth::Ok
                    }
                })
                .collect())
        });
        rotation
    }

    fn query(limit: usize, health: Option<HealthState>) -> KeyPageQuery {
        KeyPageQuery {
            limit: crate::key_page::PageLimit::new(limit).unwrap(),
            health,
            ..KeyPageQuery::default()
        }
    }

    #[tokio::test]
    async fn a_page_reads_one_key_more_than_its_limit_to_find_the_next_one() {
        let mut store = MockProxyStore::new();
        store
            .expect_list_key_range()
            .withf(|_, range| range.limit == 4 && range.after == Some(ApiKeyId(10)))
            .times(1)
            .returning(|config, _| Ok((11..15).map(|id| key(id, config.0)).collect()));
        let service = AdminService::new(
            Arc::new(store),
            Arc::new(failed_every(1_000)),
            Arc::new(MockConfigEvents::new()),
        );
        let page = service
            .list_key_page(
                ProxyConfigId(1),
                &KeyPageQuery {
                    after: Some(ApiKeyId(10)),
                    ..query(3, None)
                },
            )
            .await
            .unwrap();
        let ids: Vec<i64> = page.items.iter().map(|k| k.id.0).collect();
        assert_eq!(ids, [11, 12, 13]);
        assert_eq!(page.next_cursor, Some(KeyCursor::after(ApiKeyId(13))));
    }

    #[tokio::test]
    async fn the_last_page_has_no_cursor() {
        let service = AdminService::new(
            Arc::new(page_store(5)),
            Arc::new(failed_every(1_000)),
            Arc::new(MockConfigEvents::new()),
        );
        let page = service
            .list_key_page(ProxyConfigId(1), &query(5, None))
            .await
            .unwrap();
        assert_eq!(page.items.len(), 5);
        assert_eq!(page.next_cursor, None);
    }

    #[tokio::test]
    async fn a_health_filter_matches_live_health_across_store_reads() {
        // Every 700th key failed: 3 failed keys need three store reads of 1 001 keys.
        let service = AdminService::new(
            Arc::new(page_store(5_000)),
            Arc::new(failed_every(700)),
            Arc::new(MockConfigEvents::new()),
        );
        let page = service
            .list_key_page(ProxyConfigId(1), &query(3, Some(HealthState::Failed)))
            .await
            .unwrap();
        let ids: Vec<i64> = page.items.iter().map(|k| k.id.0).collect();
        assert_eq!(ids, [700, 1_400, 2_100]);
        assert!(page.items.iter().all(|k| k.health == KeyHealth::Failed));
        assert_eq!(page.next_cursor, Some(KeyCursor::after(ApiKeyId(2_100))));
    }

    #[tokio::test]
    async fn a_health_filter_stops_after_the_scan_budget_with_a_cursor() {
        let service = AdminService::new(
            Arc::new(page_store(50_000)),
            Arc::new(failed_every(1_000_000)),
            Arc::new(MockConfigEvents::new()),
        );
        let page = service
            .list_key_page(ProxyConfigId(1), &query(10, Some(HealthState::Failed)))
            .await
            .unwrap();
        assert!(page.items.is_empty());
        let cursor = page.next_cursor.expect("the scan goes on from a cursor");
        let scanned = usize::try_from(cursor.last_seen().0).unwrap();
        assert!(
            (MAX_SCANNED_KEYS..MAX_SCANNED_KEYS + 1_001).contains(&scanned),
            "{scanned}"
        );
    }

    #[tokio::test]
    async fn an_ended_cooldown_lists_as_ok_when_the_live_state_is_down() {
        let mut store = MockProxyStore::new();
        store.expect_list_key_range().returning(|config, _| {
            let mut cooled = key(1, config.0);
            cooled.health = KeyHealth::Cooling {
                until: Utc::now() - chrono::TimeDelta::seconds(5),
            };
            Ok(vec![cooled])
        });
        let mut rotation = MockRotationState::new();
        rotation
            .expect_key_states()
            .returning(|_| Err(Error::cache("down")));
        let service = AdminService::new(
            Arc::new(store),
            Arc::new(rotation),
            Arc::new(MockConfigEvents::new()),
        );
        let page = service
            .list_key_page(ProxyConfigId(1), &query(10, Some(HealthState::Ok)))
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].health, KeyHealth::Ok);
    }

    #[tokio::test]
    async fn enabling_a_key_brings_a_failed_key_back_into_rotation() {
        let mut store = MockProxyStore::new();
        store.expect_set_key_active().returning(|id, _| {
            let mut k = key(id.0, 1);
            k.health = KeyHealth::Failed;
            Ok(k)
        });
        store
            .expect_set_key_health()
            .with(eq(ApiKeyId(5)), eq(KeyHealth::Ok))
            .times(1)
            .returning(|_, _| Ok(()));
        store
            .expect_get_config()
            .returning(|id| Ok(stored(id.0, input("A", "a").validate().unwrap())));
        let mut rotation = MockRotationState::new();
        rotation
            .expect_mark_ok()
            .with(eq(ApiKeyId(5)))
            .times(1)
            .returning(|_| Ok(()));
        let (events, _) = recording_events();
        let service = AdminService::new(Arc::new(store), Arc::new(rotation), Arc::new(events));
        let key = service.set_key_active(ApiKeyId(5), true).await.unwrap();
        assert_eq!(key.health, KeyHealth::Ok);
    }

    #[tokio::test]
    async fn deleting_a_config_forgets_its_keys_rotation_state() {
        let mut store = MockProxyStore::new();
        store
            .expect_list_keys()
            .returning(|c| Ok(vec![key(1, c.0), key(2, c.0)]));
        store
            .expect_delete_config()
            .returning(|id| Ok(stored(id.0, input("A", "a").validate().unwrap())));
        let mut rotation = MockRotationState::new();
        rotation
            .expect_forget()
            .withf(|keys| keys == [ApiKeyId(1), ApiKeyId(2)])
            .times(1)
            .returning(|_| Ok(()));
        let (events, seen) = recording_events();
        let service = AdminService::new(Arc::new(store), Arc::new(rotation), Arc::new(events));
        service.delete_config(ProxyConfigId(9)).await.unwrap();
        assert_eq!(seen.lock().unwrap()[0].config_id, ProxyConfigId(9));
    }
}
