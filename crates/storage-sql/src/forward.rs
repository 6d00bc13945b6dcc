//! [`forward_proxy_store!`](crate::forward_proxy_store) and
//! [`forward_request_log!`](crate::forward_request_log): implement `domain::ProxyStore` and
//! `domain::RequestLog` for an
//! adapter's store type by forwarding every call to the [`SqlStore`](crate::SqlStore) it wraps,
//! so neither adapter repeats the port's methods;
//! [`forward_client_key_store!`](crate::forward_client_key_store) does the same for
//! `domain::ClientKeyStore`.

/// Implements `domain::ProxyStore` for `$store` by forwarding to its `SqlStore` field `$field`.
///
/// ```ignore
/// pub struct SqliteStore { inner: storage_sql::SqlStore }
/// storage_sql::forward_proxy_store!(SqliteStore => inner);
/// ```
#[macro_export]
macro_rules! forward_proxy_store {
    ($store:ty => $field:ident) => {
        #[$crate::__private::async_trait]
        impl $crate::__private::domain::ProxyStore for $store {
            async fn create_config(
                &self,
                spec: $crate::__private::domain::ProxyConfigSpec,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ProxyConfig> {
                $crate::__private::domain::ProxyStore::create_config(&self.$field, spec).await
            }

            async fn list_configs(
                &self,
            ) -> $crate::__private::domain::Result<Vec<$crate::__private::domain::ProxyConfig>>
            {
                $crate::__private::domain::ProxyStore::list_configs(&self.$field).await
            }

            async fn get_config(
                &self,
                id: $crate::__private::domain::ProxyConfigId,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ProxyConfig> {
                $crate::__private::domain::ProxyStore::get_config(&self.$field, id).await
            }

            async fn replace_config(
                &self,
                id: $crate::__private::domain::ProxyConfigId,
                spec: $crate::__private::domain::ProxyConfigSpec,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ProxyConfig> {
                $crate::__private::domain::ProxyStore::replace_config(&self.$field, id, spec).await
            }

            async fn set_config_active(
                &self,
                id: $crate::__private::domain::ProxyConfigId,
                is_active: bool,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ProxyConfig> {
                $crate::__private::domain::ProxyStore::set_config_active(&self.$field, id, is_active)
                    .await
            }

            async fn delete_config(
                &self,
                id: $crate::__private::domain::ProxyConfigId,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ProxyConfig> {
                $crate::__private::domain::ProxyStore::delete_config(&self.$field, id).await
            }

            async fn list_keys(
                &self,
                config: $crate::__private::domain::ProxyConfigId,
            ) -> $crate::__private::domain::Result<Vec<$crate::__private::domain::ApiKey>> {
                $crate::__private::domain::ProxyStore::list_keys(&self.$field, config).await
            }

            async fn list_key_range(
                &self,
                config: $crate::__private::domain::ProxyConfigId,
                range: $crate::__private::domain::KeyRange,
            ) -> $crate::__private::domain::Result<Vec<$crate::__private::domain::ApiKey>> {
                $crate::__private::domain::ProxyStore::list_key_range(&self.$field, config, range)
                    .await
            }

            async fn count_keys(
                &self,
                now: $crate::__private::chrono::DateTime<$crate::__private::chrono::Utc>,
            ) -> $crate::__private::domain::Result<Vec<$crate::__private::domain::KeyCount>> {
                $crate::__private::domain::ProxyStore::count_keys(&self.$field, now).await
            }

            async fn get_key(
                &self,
                id: $crate::__private::domain::ApiKeyId,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ApiKey> {
                $crate::__private::domain::ProxyStore::get_key(&self.$field, id).await
            }

            async fn add_key(
                &self,
                config: $crate::__private::domain::ProxyConfigId,
                key: $crate::__private::domain::KeySecret,
                is_active: bool,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ApiKey> {
                $crate::__private::domain::ProxyStore::add_key(&self.$field, config, key, is_active)
                    .await
            }

            async fn add_keys(
                &self,
                config: $crate::__private::domain::ProxyConfigId,
                keys: Vec<$crate::__private::domain::KeySecret>,
                is_active: bool,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::InsertedKeys> {
                $crate::__private::domain::ProxyStore::add_keys(&self.$field, config, keys, is_active)
                    .await
            }

            async fn clear_keys(
                &self,
                config: $crate::__private::domain::ProxyConfigId,
            ) -> $crate::__private::domain::Result<u64> {
                $crate::__private::domain::ProxyStore::clear_keys(&self.$field, config).await
            }

            async fn set_key_active(
                &self,
                id: $crate::__private::domain::ApiKeyId,
                is_active: bool,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ApiKey> {
                $crate::__private::domain::ProxyStore::set_key_active(&self.$field, id, is_active)
                    .await
            }

            async fn delete_key(
                &self,
                id: $crate::__private::domain::ApiKeyId,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ApiKey> {
                $crate::__private::domain::ProxyStore::delete_key(&self.$field, id).await
            }

            async fn active_config_by_slug(
                &self,
                slug: &$crate::__private::domain::Slug,
            ) -> $crate::__private::domain::Result<
                Option<$crate::__private::domain::ConfigSnapshot>,
            > {
                $crate::__private::domain::ProxyStore::active_config_by_slug(&self.$field, slug)
                    .await
            }

            async fn apply_usage(
                &self,
                deltas: &[$crate::__private::domain::UsageDelta],
            ) -> $crate::__private::domain::Result<()> {
                $crate::__private::domain::ProxyStore::apply_usage(&self.$field, deltas).await
            }

            async fn set_key_health(
                &self,
                id: $crate::__private::domain::ApiKeyId,
                health: $crate::__private::domain::KeyHealth,
            ) -> $crate::__private::domain::Result<()> {
                $crate::__private::domain::ProxyStore::set_key_health(&self.$field, id, health)
                    .await
            }

            async fn ping(&self) -> $crate::__private::domain::Result<()> {
                $crate::__private::domain::ProxyStore::ping(&self.$field).await
            }
        }
    };
}

/// Implements `domain::RequestLog` for `$store` by forwarding to its `SqlStore` field `$field`.
///
/// ```ignore
/// storage_sql::forward_request_log!(SqliteStore => inner);
/// ```
#[macro_export]
macro_rules! forward_request_log {
    ($store:ty => $field:ident) => {
        #[$crate::__private::async_trait]
        impl $crate::__private::domain::RequestLog for $store {
            async fn append(
                &self,
                records: &[$crate::__private::domain::RequestRecord],
            ) -> $crate::__private::domain::Result<()> {
                $crate::__private::domain::RequestLog::append(&self.$field, records).await
            }

            async fn query(
                &self,
                query: &$crate::__private::domain::LogQuery,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::LogPage> {
                $crate::__private::domain::RequestLog::query(&self.$field, query).await
            }

            async fn stats(
                &self,
                query: &$crate::__private::domain::StatsQuery,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::UsageStats> {
                $crate::__private::domain::RequestLog::stats(&self.$field, query).await
            }

            async fn cap_edge(
                &self,
                max_rows: u64,
            ) -> $crate::__private::domain::Result<
                ::std::option::Option<$crate::__private::domain::LogCursor>,
            > {
                $crate::__private::domain::RequestLog::cap_edge(&self.$field, max_rows).await
            }

            async fn prune(
                &self,
                retention: &$crate::__private::domain::Retention,
            ) -> $crate::__private::domain::Result<u64> {
                $crate::__private::domain::RequestLog::prune(&self.$field, retention).await
            }
        }
    };
}

/// Implements `domain::ClientKeyStore` for `$store` by forwarding to its `SqlStore` field
/// `$field`.
#[macro_export]
macro_rules! forward_client_key_store {
    ($store:ty => $field:ident) => {
        #[$crate::__private::async_trait]
        impl $crate::__private::domain::ClientKeyStore for $store {
            async fn create_client_key(
                &self,
                spec: $crate::__private::domain::ClientKeySpec,
                secret: $crate::__private::domain::IssuedSecret,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ClientKey> {
                $crate::__private::domain::ClientKeyStore::create_client_key(
                    &self.$field,
                    spec,
                    secret,
                )
                .await
            }

            async fn list_client_keys(
                &self,
            ) -> $crate::__private::domain::Result<Vec<$crate::__private::domain::ClientKey>> {
                $crate::__private::domain::ClientKeyStore::list_client_keys(&self.$field).await
            }

            async fn get_client_key(
                &self,
                id: $crate::__private::domain::ClientKeyId,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ClientKey> {
                $crate::__private::domain::ClientKeyStore::get_client_key(&self.$field, id).await
            }

            async fn replace_client_key(
                &self,
                id: $crate::__private::domain::ClientKeyId,
                spec: $crate::__private::domain::ClientKeySpec,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ClientKey> {
                $crate::__private::domain::ClientKeyStore::replace_client_key(
                    &self.$field,
                    id,
                    spec,
                )
                .await
            }

            async fn rotate_client_key(
                &self,
                id: $crate::__private::domain::ClientKeyId,
                secret: $crate::__private::domain::IssuedSecret,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ClientKey> {
                $crate::__private::domain::ClientKeyStore::rotate_client_key(
                    &self.$field,
                    id,
                    secret,
                )
                .await
            }

            async fn delete_client_key(
                &self,
                id: $crate::__private::domain::ClientKeyId,
            ) -> $crate::__private::domain::Result<$crate::__private::domain::ClientKey> {
                $crate::__private::domain::ClientKeyStore::delete_client_key(&self.$field, id).await
            }

            async fn apply_client_usage(
                &self,
                deltas: &[$crate::__private::domain::ClientUsageDelta],
            ) -> $crate::__private::domain::Result<()> {
                $crate::__private::domain::ClientKeyStore::apply_client_usage(&self.$field, deltas)
                    .await
            }
        }
    };
}
