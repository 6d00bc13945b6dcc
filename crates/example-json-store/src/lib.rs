//! An example of a downstream adapter: the `domain::ProxyStore` and `domain::ClientKeyStore`
//! ports on one JSON file, written
//! against the `domain` crate alone (no database driver, no HTTP framework, no async runtime).
//!
//! It is the worked example of `docs/extending.md`: a team that keeps its configs somewhere we
//! do not support implements the port the same way, then proves it with the domain's contract
//! suite (`domain::contract::proxy_store`, feature `contract-tests`), as `tests/contract.rs` here
//! does.
//!
//! The whole file is loaded at [`JsonFileStore::open`] and kept in memory behind a mutex; every
//! write changes the memory copy and then replaces the file atomically (write a temporary file
//! in the same directory, flush it to disk, rename it over the old one), so a crash leaves
//! either the old or the new file, never half of one. A write that cannot be saved is rolled
//! back from the file. A batch import writes the file once, whatever its size.
//!
//! File I/O happens inline, under the lock: fine for an example and for small deployments, but
//! a production adapter on a blocking medium would hand it to its runtime's blocking pool.

mod convert;

use std::{
    collections::HashSet,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use domain::{
    ApiKey, ApiKeyId, ConfigSnapshot, Entity, Error, HealthState, InsertedKeys, KeyCount,
    KeyHealth, KeyRange, KeySecret, ProxyConfig, ProxyConfigId, ProxyConfigSpec, ProxyStore,
    Result, Slug, UsageDelta,
};

use crate::convert::{ClientKeyRecord, ConfigRecord, KeyRecord, Tables, io_error};

/// The `ProxyStore` port on one JSON file.
#[derive(Debug)]
pub struct JsonFileStore {
    path: PathBuf,
    tables: Mutex<Tables>,
}

impl JsonFileStore {
    /// Opens the store at `path`, creating an empty one (and its directory) when the file does
    /// not exist yet.
    ///
    /// # Errors
    /// `Error::Unavailable` when the file cannot be read or created; `Error::Internal` when it
    /// is not a store file.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let tables = match load(&path)? {
            Some(tables) => tables,
            None => {
                let empty = Tables {
                    next_config_id: 1,
                    next_key_id: 1,
                    next_client_key_id: 1,
                    ..Tables::default()
                };
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).map_err(|e| io_error("created", &e))?;
                }
                save(&path, &empty)?;
                empty
            }
        };
        Ok(JsonFileStore {
            path,
            tables: Mutex::new(tables),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves the memory copy as the file has it or ahead of
        // it by one unsaved change; the next write saves or rolls back, so the data stays usable.
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a read.
    fn read<T>(&self, f: impl FnOnce(&Tables) -> Result<T>) -> Result<T> {
        f(&self.lock())
    }

    /// Runs a write and saves the file once. `f` checks everything before it changes anything;
    /// when saving fails the memory copy is reloaded from the file, which still holds the last
    /// saved state.
    fn write<T>(&self, f: impl FnOnce(&mut Tables) -> Result<T>) -> Result<T> {
        let mut tables = self.lock();
        let result = f(&mut tables)?;
        if let Err(error) = save(&self.path, &tables) {
            if let Ok(Some(saved)) = load(&self.path) {
                *tables = saved;
            }
            return Err(error);
        }
        Ok(result)
    }
}

/// The current time at microsecond precision, like the SQL stores.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Reads the file; `None` when it does not exist.
fn load(path: &Path) -> Result<Option<Tables>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", &e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Internal(format!("the JSON store file is not a store: {e}")))
}

/// Replaces the file atomically: temporary file in the same directory, fsync, rename.
fn save(path: &Path, tables: &Tables) -> Result<()> {
    let bytes = serde_json::to_vec(tables)
        .map_err(|e| Error::Internal(format!("the store cannot be serialised: {e}")))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let written = fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(&bytes)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&temporary, path)) {
        let _ = fs::remove_file(&temporary);
        return Err(io_error("written", &e));
    }
    Ok(())
}

fn config_index(tables: &Tables, id: ProxyConfigId) -> Result<usize> {
    tables
        .configs
        .binary_search_by_key(&id.0, |c| c.id)
        .map_err(|_| Error::config_not_found(id))
}

fn key_index(tables: &Tables, id: ApiKeyId) -> Result<usize> {
    tables
        .keys
        .binary_search_by_key(&id.0, |k| k.id)
        .map_err(|_| Error::key_not_found(id))
}

/// A conflict when another config than `except` has this name or slug.
fn check_unique(tables: &Tables, spec: &ProxyConfigSpec, except: Option<i64>) -> Result<()> {
    let others = tables.configs.iter().filter(|c| Some(c.id) != except);
    for other in others {
        let field = if other.name == spec.name.as_str() {
            "name"
        } else if other.slug == spec.slug.as_str() {
            "slug"
        } else {
            continue;
        };
        return Err(Error::Conflict {
            entity: Entity::ProxyConfig,
            field,
        });
    }
    Ok(())
}

fn keys_of(tables: &Tables, config: ProxyConfigId) -> impl Iterator<Item = &KeyRecord> {
    tables
        .keys
        .iter()
        .filter(move |k| k.proxy_config_id == config.0)
}

#[async_trait]
impl ProxyStore for JsonFileStore {
    async fn create_config(&self, spec: ProxyConfigSpec) -> Result<ProxyConfig> {
        self.write(|tables| {
            check_unique(tables, &spec, None)?;
            let id = tables.next_config_id;
            let at = now();
            tables.configs.push(ConfigRecord::new(id, &spec, at));
            tables.next_config_id += 1;
            Ok(ProxyConfig::from_spec(ProxyConfigId(id), spec, at, at))
        })
    }

    async fn list_configs(&self) -> Result<Vec<ProxyConfig>> {
        self.read(|tables| tables.configs.iter().map(ConfigRecord::to_domain).collect())
    }

    async fn get_config(&self, id: ProxyConfigId) -> Result<ProxyConfig> {
        self.read(|tables| tables.configs[config_index(tables, id)?].to_domain())
    }

    async fn replace_config(
        &self,
        id: ProxyConfigId,
        spec: ProxyConfigSpec,
    ) -> Result<ProxyConfig> {
        self.write(|tables| {
            let index = config_index(tables, id)?;
            check_unique(tables, &spec, Some(id.0))?;
            let record = &mut tables.configs[index];
            record.set_spec(&spec);
            record.updated_at = now().max(record.updated_at);
            Ok(ProxyConfig::from_spec(
                id,
                spec,
                record.created_at,
                record.updated_at,
            ))
        })
    }

    async fn set_config_active(&self, id: ProxyConfigId, is_active: bool) -> Result<ProxyConfig> {
        self.write(|tables| {
            let index = config_index(tables, id)?;
            let record = &mut tables.configs[index];
            record.is_active = is_active;
            record.updated_at = now().max(record.updated_at);
            record.to_domain()
        })
    }

    async fn delete_config(&self, id: ProxyConfigId) -> Result<ProxyConfig> {
        self.write(|tables| {
            let index = config_index(tables, id)?;
            let deleted = tables.configs[index].to_domain()?;
            tables.configs.remove(index);
            tables.keys.retain(|k| k.proxy_config_id != id.0);
            Ok(deleted)
        })
    }

    async fn list_keys(&self, config: ProxyConfigId) -> Result<Vec<ApiKey>> {
        self.read(|tables| {
            config_index(tables, config)?;
            keys_of(tables, config).map(KeyRecord::to_domain).collect()
        })
    }

    async fn list_key_range(&self, config: ProxyConfigId, range: KeyRange) -> Result<Vec<ApiKey>> {
        self.read(|tables| {
            config_index(tables, config)?;
            // Keys are kept ordered by id, so the range starts at a binary search.
            let start = range
                .after
                .map_or(0, |after| tables.keys.partition_point(|k| k.id <= after.0));
            tables.keys[start..]
                .iter()
                .filter(|k| k.proxy_config_id == config.0)
                .filter(|k| range.is_active.is_none_or(|active| k.is_active == active))
                .take(range.limit)
                .map(KeyRecord::to_domain)
                .collect()
        })
    }

    async fn count_keys(&self, now: DateTime<Utc>) -> Result<Vec<KeyCount>> {
        self.read(|tables| {
            let mut counts: std::collections::BTreeMap<(i64, HealthState, bool), u64> =
                std::collections::BTreeMap::new();
            for key in &tables.keys {
                let health = HealthState::of(key.to_domain()?.health, now);
                *counts
                    .entry((key.proxy_config_id, health, key.is_active))
                    .or_default() += 1;
            }
            Ok(counts
                .into_iter()
                .map(|((config, health, is_active), count)| KeyCount {
                    config: ProxyConfigId(config),
                    health,
                    is_active,
                    count,
                })
                .collect())
        })
    }

    async fn get_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        self.read(|tables| tables.keys[key_index(tables, id)?].to_domain())
    }

    async fn add_key(
        &self,
        config: ProxyConfigId,
        key: KeySecret,
        is_active: bool,
    ) -> Result<ApiKey> {
        self.write(|tables| {
            config_index(tables, config)?;
            if keys_of(tables, config).any(|k| k.key_value == key.expose()) {
                return Err(Error::Conflict {
                    entity: Entity::ApiKey,
                    field: "key_value",
                });
            }
            let record = KeyRecord::new(tables.next_key_id, config, &key, is_active, now());
            tables.next_key_id += 1;
            let key = record.to_domain()?;
            tables.keys.push(record);
            Ok(key)
        })
    }

    async fn add_keys(
        &self,
        config: ProxyConfigId,
        keys: Vec<KeySecret>,
        is_active: bool,
    ) -> Result<InsertedKeys> {
        self.write(|tables| {
            config_index(tables, config)?;
            let existing: HashSet<&str> = keys_of(tables, config)
                .map(|k| k.key_value.as_str())
                .collect();
            let (new, old): (Vec<KeySecret>, Vec<KeySecret>) = keys
                .into_iter()
                .partition(|k| !existing.contains(k.expose()));
            let at = now();
            let first = tables.next_key_id;
            tables.keys.extend(
                new.iter()
                    .zip(first..)
                    .map(|(key, id)| KeyRecord::new(id, config, key, is_active, at)),
            );
            tables.next_key_id += i64::try_from(new.len()).unwrap_or(i64::MAX);
            Ok(InsertedKeys {
                inserted: new.len() as u64,
                skipped: old.len() as u64,
            })
        })
    }

    async fn clear_keys(&self, config: ProxyConfigId) -> Result<u64> {
        self.write(|tables| {
            config_index(tables, config)?;
            let before = tables.keys.len();
            tables.keys.retain(|k| k.proxy_config_id != config.0);
            Ok((before - tables.keys.len()) as u64)
        })
    }

    async fn set_key_active(&self, id: ApiKeyId, is_active: bool) -> Result<ApiKey> {
        self.write(|tables| {
            let index = key_index(tables, id)?;
            let record = &mut tables.keys[index];
            record.is_active = is_active;
            record.updated_at = now().max(record.updated_at);
            record.to_domain()
        })
    }

    async fn delete_key(&self, id: ApiKeyId) -> Result<ApiKey> {
        self.write(|tables| {
            let index = key_index(tables, id)?;
            let deleted = tables.keys[index].to_domain()?;
            tables.keys.remove(index);
            Ok(deleted)
        })
    }

    async fn active_config_by_slug(&self, slug: &Slug) -> Result<Option<ConfigSnapshot>> {
        self.read(|tables| {
            let Some(record) = tables
                .configs
                .iter()
                .find(|c| c.is_active && c.slug == slug.as_str())
            else {
                return Ok(None);
            };
            let config = record.to_domain()?;
            let keys = keys_of(tables, config.id)
                .map(|k| k.to_domain().map(Arc::new))
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(ConfigSnapshot::new(config, keys)))
        })
    }

    async fn apply_usage(&self, deltas: &[UsageDelta]) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        self.write(|tables| {
            for delta in deltas {
                if let Ok(index) = key_index(tables, delta.key_id) {
                    let record = &mut tables.keys[index];
                    let mut usage = record.usage();
                    usage.apply(delta);
                    record.set_usage(usage);
                }
            }
            Ok(())
        })
    }

    async fn set_key_health(&self, id: ApiKeyId, health: KeyHealth) -> Result<()> {
        self.write(|tables| {
            if let Ok(index) = key_index(tables, id) {
                tables.keys[index].set_health(health);
            }
            Ok(())
        })
    }

    async fn ping(&self) -> Result<()> {
        match fs::metadata(&self.path) {
            Ok(_) => Ok(()),
            Err(e) => Err(io_error("found", &e)),
        }
    }
}

fn client_key_index(tables: &Tables, id: domain::ClientKeyId) -> Result<usize> {
    tables
        .client_keys
        .iter()
        .position(|k| k.id == id.0)
        .ok_or_else(|| Error::NotFound {
            entity: Entity::ClientKey,
            id: id.to_string(),
        })
}

fn check_client_key_unique(
    tables: &Tables,
    name: &str,
    digest: Option<&domain::SecretDigest>,
    except: Option<i64>,
) -> Result<()> {
    let others = tables.client_keys.iter().filter(|k| Some(k.id) != except);
    for other in others {
        if other.name == name {
            return Err(Error::Conflict {
                entity: Entity::ClientKey,
                field: "name",
            });
        }
        if digest.is_some_and(|d| d.to_hex() == other.secret_hash) {
            return Err(Error::Conflict {
                entity: Entity::ClientKey,
                field: "secret",
            });
        }
    }
    Ok(())
}

#[async_trait]
impl domain::ClientKeyStore for JsonFileStore {
    async fn create_client_key(
        &self,
        spec: domain::ClientKeySpec,
        secret: domain::IssuedSecret,
    ) -> Result<domain::ClientKey> {
        self.write(|tables| {
            check_client_key_unique(tables, spec.name.as_str(), Some(&secret.digest), None)?;
            // Files written before client keys existed have no next id yet.
            let id = tables.next_client_key_id.max(1);
            tables.next_client_key_id = id + 1;
            let record = ClientKeyRecord::new(id, &spec, &secret, now());
            let key = record.to_domain()?;
            tables.client_keys.push(record);
            Ok(key)
        })
    }

    async fn list_client_keys(&self) -> Result<Vec<domain::ClientKey>> {
        self.read(|tables| {
            tables
                .client_keys
                .iter()
                .map(ClientKeyRecord::to_domain)
                .collect()
        })
    }

    async fn get_client_key(&self, id: domain::ClientKeyId) -> Result<domain::ClientKey> {
        self.read(|tables| tables.client_keys[client_key_index(tables, id)?].to_domain())
    }

    async fn replace_client_key(
        &self,
        id: domain::ClientKeyId,
        spec: domain::ClientKeySpec,
    ) -> Result<domain::ClientKey> {
        self.write(|tables| {
            let index = client_key_index(tables, id)?;
            check_client_key_unique(tables, spec.name.as_str(), None, Some(id.0))?;
            let record = &mut tables.client_keys[index];
            record.set_spec(&spec);
            record.updated_at = now().max(record.updated_at);
            record.to_domain()
        })
    }

    async fn rotate_client_key(
        &self,
        id: domain::ClientKeyId,
        secret: domain::IssuedSecret,
    ) -> Result<domain::ClientKey> {
        self.write(|tables| {
            let index = client_key_index(tables, id)?;
            let name = tables.client_keys[index].name.clone();
            check_client_key_unique(tables, &name, Some(&secret.digest), Some(id.0))?;
            let record = &mut tables.client_keys[index];
            record.set_secret(&secret);
            record.updated_at = now().max(record.updated_at);
            record.to_domain()
        })
    }

    async fn delete_client_key(&self, id: domain::ClientKeyId) -> Result<domain::ClientKey> {
        self.write(|tables| {
            let index = client_key_index(tables, id)?;
            tables.client_keys.remove(index).to_domain()
        })
    }

    async fn apply_client_usage(&self, deltas: &[domain::ClientUsageDelta]) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        self.write(|tables| {
            for delta in deltas {
                // Usage of a key deleted meanwhile goes with it.
                if let Some(record) = tables
                    .client_keys
                    .iter_mut()
                    .find(|k| k.id == delta.key_id.0)
                {
                    let mut usage = record.usage();
                    usage.apply(delta);
                    record.set_usage(usage);
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use domain::ProxyConfigInput;

    use super::*;

    fn spec(slug: &str) -> ProxyConfigSpec {
        ProxyConfigInput {
            name: Some(format!("Weather {slug}")),
            slug: Some(slug.into()),
            config_type: Some("GENERIC".into()),
            method: Some("GET".into()),
            target_url: Some("https://api.weather.example/v1".into()),
            api_key_location: Some("query".into()),
            api_key_name: Some("appid".into()),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        // The port's futures never wait on I/O readiness, so polling once completes them.
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => unreachable!("the store never waits"),
        }
    }

    #[test]
    fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/store.json");
        let store = JsonFileStore::open(&path).unwrap();
        let config = block_on(store.create_config(spec("weather"))).unwrap();
        let keys = vec![
            KeySecret::parse("k-1").unwrap(),
            KeySecret::parse("k-2").unwrap(),
        ];
        block_on(store.add_keys(config.id, keys, true)).unwrap();
        drop(store);

        let reopened = JsonFileStore::open(&path).unwrap();
        let configs = block_on(reopened.list_configs()).unwrap();
        assert_eq!(configs, std::slice::from_ref(&config));
        let keys = block_on(reopened.list_keys(config.id)).unwrap();
        assert_eq!(keys.len(), 2);
        let next = block_on(reopened.create_config(spec("other"))).unwrap();
        assert!(next.id > config.id, "ids are not reused");
        assert!(!dir.path().join("nested/store.json.tmp").exists());
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        fs::write(&path, b"[1, 2, 3]").unwrap();
        assert!(matches!(
            JsonFileStore::open(&path),
            Err(Error::Internal(_))
        ));
    }

    #[test]
    fn a_failed_save_rolls_the_memory_copy_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let store = JsonFileStore::open(&path).unwrap();
        block_on(store.create_config(spec("kept"))).unwrap();
        // A directory where the temporary file goes makes the next save fail.
        fs::create_dir(dir.path().join("store.json.tmp")).unwrap();
        let failed = block_on(store.create_config(spec("lost")));
        assert!(
            matches!(failed, Err(Error::Unavailable { .. })),
            "{failed:?}"
        );
        let slugs: Vec<String> = block_on(store.list_configs())
            .unwrap()
            .iter()
            .map(|c| c.slug.to_string())
            .collect();
        assert_eq!(slugs, ["kept"]);
    }
}
