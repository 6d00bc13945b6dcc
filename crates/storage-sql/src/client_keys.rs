//! The `ClientKeyStore` port of [`SqlStore`]: client keys (SPEC §7) in the `client_keys` table.
//! Writes that read first run in one write transaction, like the config writes; a usage flush
//! is one transaction over the (few) keys that were used since the last one.

use async_trait::async_trait;
use domain::{
    ClientKey, ClientKeyId, ClientKeySpec, ClientKeyStore, ClientUsageDelta, Entity, Error,
    IssuedSecret, Result,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
};

use crate::{
    SqlStore,
    convert::{self, Violation},
    entity::client_key,
};

fn not_found(id: ClientKeyId) -> Error {
    Error::NotFound {
        entity: Entity::ClientKey,
        id: id.to_string(),
    }
}

impl SqlStore {
    async fn client_key_row<C: ConnectionTrait>(
        &self,
        db: &C,
        id: ClientKeyId,
        lock: bool,
    ) -> Result<client_key::Model> {
        let mut query = client_key::Entity::find_by_id(id.0);
        if lock && self.backend != sea_orm::DbBackend::Sqlite {
            query = query.lock_exclusive();
        }
        query
            .one(db)
            .await
            .map_err(|err| self.error(err))?
            .ok_or_else(|| not_found(id))
    }

    /// A unique violation on a client-key write: the name, or (astronomically unlikely) the
    /// secret hash.
    async fn client_key_write_error<C: ConnectionTrait>(
        &self,
        db: &C,
        err: DbErr,
        name: &str,
        except: Option<ClientKeyId>,
    ) -> Error {
        if convert::violation(&err) != Some(Violation::Unique) {
            return self.error(err);
        }
        let mut same_name = client_key::Entity::find()
            .select_only()
            .column(client_key::Column::Id)
            .filter(client_key::Column::Name.eq(name));
        if let Some(id) = except {
            same_name = same_name.filter(client_key::Column::Id.ne(id.0));
        }
        match same_name.into_tuple::<i64>().one(db).await {
            Ok(Some(_)) => convert::conflict(Entity::ClientKey, "name"),
            Ok(None) => convert::conflict(Entity::ClientKey, "secret"),
            Err(err) => self.error(err),
        }
    }
}

#[async_trait]
impl ClientKeyStore for SqlStore {
    async fn create_client_key(
        &self,
        spec: ClientKeySpec,
        secret: IssuedSecret,
    ) -> Result<ClientKey> {
        let row = convert::new_client_key_row(&spec, &secret, convert::now());
        match row.insert(&self.db).await {
            Ok(model) => convert::client_key_from_row(model),
            Err(err) => Err(self
                .client_key_write_error(&self.db, err, spec.name.as_str(), None)
                .await),
        }
    }

    async fn list_client_keys(&self) -> Result<Vec<ClientKey>> {
        client_key::Entity::find()
            .order_by_asc(client_key::Column::Id)
            .all(&self.db)
            .await
            .map_err(|err| self.error(err))?
            .into_iter()
            .map(convert::client_key_from_row)
            .collect()
    }

    async fn get_client_key(&self, id: ClientKeyId) -> Result<ClientKey> {
        convert::client_key_from_row(self.client_key_row(&self.db, id, false).await?)
    }

    async fn replace_client_key(&self, id: ClientKeyId, spec: ClientKeySpec) -> Result<ClientKey> {
        let txn = self.begin_write().await?;
        let existing = self.client_key_row(&txn, id, true).await?;
        let updated_at = convert::now_not_before(existing.updated_at);
        let mut row = existing.into_active_model();
        convert::set_client_key_columns(&mut row, &spec);
        row.updated_at = Set(updated_at);
        match row.update(&txn).await {
            Ok(model) => {
                self.commit(txn).await?;
                convert::client_key_from_row(model)
            }
            Err(err) => Err(self
                .client_key_write_error(&txn, err, spec.name.as_str(), Some(id))
                .await),
        }
    }

    async fn rotate_client_key(&self, id: ClientKeyId, secret: IssuedSecret) -> Result<ClientKey> {
        let txn = self.begin_write().await?;
        let existing = self.client_key_row(&txn, id, true).await?;
        let updated_at = convert::now_not_before(existing.updated_at);
        let name = existing.name.clone();
        let mut row = existing.into_active_model();
        row.secret_hash = Set(secret.digest.to_hex());
        row.key_prefix = Set(secret.prefix);
        row.updated_at = Set(updated_at);
        match row.update(&txn).await {
            Ok(model) => {
                self.commit(txn).await?;
                convert::client_key_from_row(model)
            }
            Err(err) => Err(self
                .client_key_write_error(&txn, err, &name, Some(id))
                .await),
        }
    }

    async fn delete_client_key(&self, id: ClientKeyId) -> Result<ClientKey> {
        let txn = self.begin_write().await?;
        let key = convert::client_key_from_row(self.client_key_row(&txn, id, true).await?)?;
        client_key::Entity::delete_by_id(id.0)
            .exec(&txn)
            .await
            .map_err(|err| self.error(err))?;
        self.commit(txn).await?;
        Ok(key)
    }

    async fn apply_client_usage(&self, deltas: &[ClientUsageDelta]) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write().await?;
        for delta in deltas {
            let Some(existing) = client_key::Entity::find_by_id(delta.key_id.0)
                .one(&txn)
                .await
                .map_err(|err| self.error(err))?
            else {
                // Deleted since the request: its usage goes with it.
                continue;
            };
            let mut usage = convert::client_key_from_row(existing.clone())?.usage;
            usage.apply(delta);
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            let mut row = existing.into_active_model();
            row.request_count = Set(clamp(usage.request_count));
            row.token_count = Set(clamp(usage.token_count));
            row.budget_used = Set(clamp(usage.budget_used));
            row.budget_period_start = Set(usage.budget_period_start.map(convert::stored_time));
            row.last_used_at = Set(usage.last_used_at.map(convert::stored_time));
            row.update(&txn).await.map_err(|err| self.error(err))?;
        }
        self.commit(txn).await
    }
}
