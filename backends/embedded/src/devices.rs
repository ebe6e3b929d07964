use async_trait::async_trait;
use mdc_core::ports::{Device, DeviceRegistry, StoreError};
use redb::{ReadableTable, TableDefinition};

use crate::db::{Db, DbError};

/// id → device (JSON).
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// token → id (tokens are unique).
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("device_tokens");
/// endpoint → id (the vendor's handle for a device).
const ENDPOINTS: TableDefinition<&str, &str> = TableDefinition::new("device_endpoints");
/// (user id, device id) → ().
const BY_USER: TableDefinition<(&str, &str), ()> = TableDefinition::new("devices_by_user");

/// The device registry on the embedded database (the store's file).
pub struct EmbeddedDevices {
    db: Db,
}

fn load(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Device>, DbError> {
    match table.get(id)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
        None => Ok(None),
    }
}

impl EmbeddedDevices {
    pub fn open(db: Db) -> Result<Self, DbError> {
        db.write_now(|txn| {
            txn.open_table(DEVICES)?;
            txn.open_table(TOKENS)?;
            txn.open_table(ENDPOINTS)?;
            txn.open_table(BY_USER)?;
            Ok(())
        })?;
        Ok(Self { db })
    }
}

#[async_trait]
impl DeviceRegistry for EmbeddedDevices {
    async fn register(&self, device: &Device) -> Result<(Device, bool), StoreError> {
        let device = device.clone();
        Ok(self
            .db
            .write(true, move |txn| {
                let mut devices = txn.open_table(DEVICES)?;
                let mut tokens = txn.open_table(TOKENS)?;
                let mut by_user = txn.open_table(BY_USER)?;
                let mut endpoints = txn.open_table(ENDPOINTS)?;
                let existing_id = tokens
                    .get(device.token.as_str())?
                    .map(|v| v.value().to_owned());
                let existing = match existing_id {
                    Some(id) => load(&devices, &id)?,
                    None => None,
                };
                let (stored, new) = match existing {
                    // Another service's: handed back as it is.
                    Some(existing) if existing.service != device.service => {
                        return Ok((existing, false))
                    }
                    Some(mut existing) => {
                        by_user.remove((existing.user_id.as_str(), existing.id.as_str()))?;
                        if let (Some(old), Some(_)) = (&existing.endpoint, &device.endpoint) {
                            endpoints.remove(old.as_str())?;
                        }
                        existing.user_id = device.user_id.clone();
                        existing.platform = device.platform;
                        existing.endpoint = device.endpoint.clone().or(existing.endpoint);
                        existing.active = true;
                        existing.updated_at = device.updated_at;
                        (existing, false)
                    }
                    None => (device, true),
                };
                devices.insert(stored.id.as_str(), serde_json::to_vec(&stored)?.as_slice())?;
                tokens.insert(stored.token.as_str(), stored.id.as_str())?;
                by_user.insert((stored.user_id.as_str(), stored.id.as_str()), ())?;
                if let Some(endpoint) = &stored.endpoint {
                    endpoints.insert(endpoint.as_str(), stored.id.as_str())?;
                }
                Ok((stored, new))
            })
            .await?)
    }

    async fn get(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let txn = self.db.read()?;
        let devices = txn.open_table(DEVICES).map_err(DbError::from)?;
        Ok(load(&devices, id)?)
    }

    async fn by_token(&self, token: &str) -> Result<Option<Device>, StoreError> {
        let txn = self.db.read()?;
        let tokens = txn.open_table(TOKENS).map_err(DbError::from)?;
        let Some(id) = tokens
            .get(token)
            .map_err(DbError::from)?
            .map(|v| v.value().to_owned())
        else {
            return Ok(None);
        };
        let devices = txn.open_table(DEVICES).map_err(DbError::from)?;
        Ok(load(&devices, &id)?)
    }

    async fn by_endpoint(&self, endpoint: &str) -> Result<Option<Device>, StoreError> {
        let txn = self.db.read()?;
        let endpoints = txn.open_table(ENDPOINTS).map_err(DbError::from)?;
        let Some(id) = endpoints
            .get(endpoint)
            .map_err(DbError::from)?
            .map(|v| v.value().to_owned())
        else {
            return Ok(None);
        };
        let devices = txn.open_table(DEVICES).map_err(DbError::from)?;
        Ok(load(&devices, &id)?)
    }

    async fn for_user(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let txn = self.db.read()?;
        let by_user = txn.open_table(BY_USER).map_err(DbError::from)?;
        let devices = txn.open_table(DEVICES).map_err(DbError::from)?;
        let mut out = Vec::new();
        for entry in by_user
            .range((user_id, "")..=(user_id, "\u{10ffff}"))
            .map_err(DbError::from)?
        {
            let (key, _) = entry.map_err(DbError::from)?;
            if let Some(device) = load(&devices, key.value().1)? {
                if device.active {
                    out.push(device);
                }
            }
        }
        Ok(out)
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        Ok(self
            .db
            .write(true, move |txn| {
                let mut devices = txn.open_table(DEVICES)?;
                let Some(device) = load(&devices, &id)? else {
                    return Ok(false);
                };
                devices.remove(id.as_str())?;
                txn.open_table(TOKENS)?.remove(device.token.as_str())?;
                if let Some(endpoint) = &device.endpoint {
                    txn.open_table(ENDPOINTS)?.remove(endpoint.as_str())?;
                }
                txn.open_table(BY_USER)?
                    .remove((device.user_id.as_str(), id.as_str()))?;
                Ok(true)
            })
            .await?)
    }

    async fn deactivate(&self, token: &str) -> Result<bool, StoreError> {
        let token = token.to_owned();
        Ok(self
            .db
            .write(true, move |txn| {
                let Some(id) = txn
                    .open_table(TOKENS)?
                    .get(token.as_str())?
                    .map(|v| v.value().to_owned())
                else {
                    return Ok(false);
                };
                let mut devices = txn.open_table(DEVICES)?;
                let Some(mut device) = load(&devices, &id)? else {
                    return Ok(false);
                };
                device.active = false;
                device.updated_at = mdc_core::now();
                devices.insert(id.as_str(), serde_json::to_vec(&device)?.as_slice())?;
                Ok(true)
            })
            .await?)
    }
}
