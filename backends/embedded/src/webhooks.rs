use async_trait::async_trait;
use mdc_core::ports::webhooks::{PendingDelivery, WebhookAttempt, WebhookEndpoint, Webhooks};
use mdc_core::ports::StoreError;
use mdc_core::{MessageId, Timestamp};
use redb::{ReadableTable, TableDefinition};

use crate::db::{Db, DbError};

/// id → endpoint (JSON); ids are `wh_` + ULID, so key order is creation order.
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
/// (endpoint id, time key) → attempt (JSON); the time key sorts by the
/// attempt's time, then by recording order.
const ATTEMPTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("webhook_attempts");
/// timer key → pending delivery (JSON).
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_pending");

/// Webhook endpoints on the embedded database (the store's file).
pub struct EmbeddedWebhooks {
    db: Db,
}

fn time_key(at: Timestamp) -> String {
    format!("{:016x}{}", at.timestamp_millis().max(0), ulid::Ulid::new())
}

impl EmbeddedWebhooks {
    pub fn open(db: Db) -> Result<Self, DbError> {
        db.write_now(|txn| {
            txn.open_table(ENDPOINTS)?;
            txn.open_table(ATTEMPTS)?;
            txn.open_table(PENDING)?;
            Ok(())
        })?;
        Ok(Self { db })
    }
}

#[async_trait]
impl Webhooks for EmbeddedWebhooks {
    async fn create(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        let (id, bytes) = (
            endpoint.id.clone(),
            serde_json::to_vec(endpoint).map_err(DbError::from)?,
        );
        Ok(self
            .db
            .write(true, move |txn| {
                txn.open_table(ENDPOINTS)?
                    .insert(id.as_str(), bytes.as_slice())?;
                Ok(())
            })
            .await?)
    }

    async fn get(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        let txn = self.db.read()?;
        let table = txn.open_table(ENDPOINTS).map_err(DbError::from)?;
        let found = table.get(id).map_err(DbError::from)?;
        Ok(match found {
            Some(bytes) => Some(serde_json::from_slice(bytes.value()).map_err(DbError::from)?),
            None => None,
        })
    }

    async fn list(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let txn = self.db.read()?;
        let table = txn.open_table(ENDPOINTS).map_err(DbError::from)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(DbError::from)? {
            let (_, value) = entry.map_err(DbError::from)?;
            out.push(serde_json::from_slice(value.value()).map_err(DbError::from)?);
        }
        Ok(out)
    }

    async fn update(&self, endpoint: &WebhookEndpoint) -> Result<bool, StoreError> {
        let (id, bytes) = (
            endpoint.id.clone(),
            serde_json::to_vec(endpoint).map_err(DbError::from)?,
        );
        Ok(self
            .db
            .write(true, move |txn| {
                let mut table = txn.open_table(ENDPOINTS)?;
                if table.get(id.as_str())?.is_none() {
                    return Ok(false);
                }
                table.insert(id.as_str(), bytes.as_slice())?;
                Ok(true)
            })
            .await?)
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        Ok(self
            .db
            .write(true, move |txn| {
                let existed = txn.open_table(ENDPOINTS)?.remove(id.as_str())?.is_some();
                let mut attempts = txn.open_table(ATTEMPTS)?;
                let keys: Vec<String> = attempts
                    .range((id.as_str(), "")..=(id.as_str(), "\u{10ffff}"))?
                    .map(|entry| entry.map(|(key, _)| key.value().1.to_owned()))
                    .collect::<Result<_, _>>()?;
                for key in keys {
                    attempts.remove((id.as_str(), key.as_str()))?;
                }
                let mut pending = txn.open_table(PENDING)?;
                let mut stale = Vec::new();
                for entry in pending.iter()? {
                    let (key, value) = entry?;
                    let delivery: PendingDelivery = serde_json::from_slice(value.value())?;
                    if delivery.endpoint_id == id {
                        stale.push(key.value().to_owned());
                    }
                }
                for key in stale {
                    pending.remove(key.as_str())?;
                }
                Ok(existed)
            })
            .await?)
    }

    async fn record_attempt(&self, attempt: &WebhookAttempt) -> Result<(), StoreError> {
        let (endpoint, key, bytes) = (
            attempt.endpoint_id.clone(),
            time_key(attempt.at),
            serde_json::to_vec(attempt).map_err(DbError::from)?,
        );
        // A lost attempt record loses history, not a delivery: not fsynced
        // on its own.
        Ok(self
            .db
            .write(false, move |txn| {
                txn.open_table(ATTEMPTS)?
                    .insert((endpoint.as_str(), key.as_str()), bytes.as_slice())?;
                Ok(())
            })
            .await?)
    }

    async fn attempts(
        &self,
        endpoint_id: &str,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<WebhookAttempt>, StoreError> {
        let txn = self.db.read()?;
        let table = txn.open_table(ATTEMPTS).map_err(DbError::from)?;
        let from = since.map_or_else(String::new, |at| {
            format!("{:016x}", at.timestamp_millis().max(0))
        });
        let mut out = Vec::new();
        for entry in table
            .range((endpoint_id, from.as_str())..=(endpoint_id, "\u{10ffff}"))
            .map_err(DbError::from)?
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (_, value) = entry.map_err(DbError::from)?;
            out.push(serde_json::from_slice(value.value()).map_err(DbError::from)?);
        }
        Ok(out)
    }

    async fn prune_attempts(&self, before: Timestamp) -> Result<u64, StoreError> {
        let cutoff = format!("{:016x}", before.timestamp_millis().max(0));
        Ok(self
            .db
            .write(false, move |txn| {
                let mut table = txn.open_table(ATTEMPTS)?;
                let mut old = Vec::new();
                for entry in table.iter()? {
                    let (key, _) = entry?;
                    let (endpoint, time) = key.value();
                    if time < cutoff.as_str() {
                        old.push((endpoint.to_owned(), time.to_owned()));
                    }
                }
                for (endpoint, time) in &old {
                    table.remove((endpoint.as_str(), time.as_str()))?;
                }
                Ok(old.len() as u64)
            })
            .await?)
    }

    async fn save_pending(&self, pending: &PendingDelivery) -> Result<(), StoreError> {
        let (key, bytes) = (
            pending.key.as_str().to_owned(),
            serde_json::to_vec(pending).map_err(DbError::from)?,
        );
        Ok(self
            .db
            .write(true, move |txn| {
                txn.open_table(PENDING)?
                    .insert(key.as_str(), bytes.as_slice())?;
                Ok(())
            })
            .await?)
    }

    async fn pending(&self, key: &MessageId) -> Result<Option<PendingDelivery>, StoreError> {
        let txn = self.db.read()?;
        let table = txn.open_table(PENDING).map_err(DbError::from)?;
        let found = table.get(key.as_str()).map_err(DbError::from)?;
        Ok(match found {
            Some(bytes) => Some(serde_json::from_slice(bytes.value()).map_err(DbError::from)?),
            None => None,
        })
    }

    async fn remove_pending(&self, key: &MessageId) -> Result<(), StoreError> {
        let key = key.as_str().to_owned();
        Ok(self
            .db
            .write(true, move |txn| {
                txn.open_table(PENDING)?.remove(key.as_str())?;
                Ok(())
            })
            .await?)
    }
}
