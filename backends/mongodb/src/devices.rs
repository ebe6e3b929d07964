use crate::{is_duplicate_key, other, unavailable};
use async_trait::async_trait;
use futures::TryStreamExt;
use mdc_core::ports::{Device, DeviceRegistry, StoreError};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};

/// How many times a registration tries a token whose device another
/// registration keeps inserting, or removing, between its upsert and the
/// read of the device.
const REGISTER_TRIES: usize = 3;

/// The device registry on MongoDB: one document per device, unique on the
/// token, indexed by user.
pub struct MongoDevices {
    devices: Collection<Document>,
}

fn decode(mut document: Document) -> Result<Device, StoreError> {
    document.remove("_id");
    bson::from_document(document).map_err(other)
}

impl MongoDevices {
    pub async fn open(database: &Database, prefix: &str) -> Result<Self, StoreError> {
        let devices = database.collection::<Document>(&format!("{prefix}devices"));
        devices
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "token": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
                IndexModel::builder().keys(doc! { "user_id": 1 }).build(),
                IndexModel::builder().keys(doc! { "endpoint": 1 }).build(),
                IndexModel::builder().keys(doc! { "id": 1 }).build(),
            ])
            .await
            .map_err(unavailable)?;
        Ok(Self { devices })
    }
}

#[async_trait]
impl DeviceRegistry for MongoDevices {
    async fn register(&self, device: &Device) -> Result<(Device, bool), StoreError> {
        let mut set = doc! {
            "user_id": &device.user_id,
            "platform": bson::to_bson(&device.platform).map_err(other)?,
            "active": true,
            "updated_at": bson::to_bson(&device.updated_at).map_err(other)?,
        };
        if let Some(endpoint) = &device.endpoint {
            set.insert("endpoint", endpoint.as_str());
        }
        let mut on_insert = doc! {
            "id": &device.id,
            "token": &device.token,
            "created_at": bson::to_bson(&device.created_at).map_err(other)?,
        };
        // The first registration's service owns the token.
        if let Some(service) = &device.service {
            on_insert.insert("service", service.as_str());
        }
        // One atomic upsert keyed by the token and its service: the first
        // registration creates the device, the same service's later ones
        // update it and keep its id. Another service's device does not
        // match, and the insert the upsert tries instead breaks the token's
        // unique index: that device is handed back as it is.
        let service = device.service.as_deref().map_or(Bson::Null, Bson::from);
        for _ in 0..REGISTER_TRIES {
            let upserted = self
                .devices
                .find_one_and_update(
                    doc! { "token": &device.token, "service": service.clone() },
                    doc! { "$set": set.clone(), "$setOnInsert": on_insert.clone() },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match upserted {
                Ok(Some(stored)) => {
                    let stored = decode(stored)?;
                    let new = stored.id == device.id;
                    return Ok((stored, new));
                }
                // Some servers answer a concurrent upsert with no document
                // (SecantusDB): tried again, it matches what the other made.
                Ok(None) => {}
                Err(e) if is_duplicate_key(&e) => {
                    match self.by_token(&device.token).await? {
                        Some(theirs) if theirs.service != device.service => {
                            return Ok((theirs, false))
                        }
                        // The same service's registration inserted it first:
                        // the upsert now matches it and updates it.
                        Some(_) => {}
                        // Removed meanwhile: the token is free again.
                        None => {}
                    }
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(
            "the token's device kept being registered and removed; try again".into(),
        ))
    }

    async fn get(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.devices
            .find_one(doc! { "id": id })
            .await
            .map_err(unavailable)?
            .map(decode)
            .transpose()
    }

    async fn by_token(&self, token: &str) -> Result<Option<Device>, StoreError> {
        self.devices
            .find_one(doc! { "token": token })
            .await
            .map_err(unavailable)?
            .map(decode)
            .transpose()
    }

    async fn by_endpoint(&self, endpoint: &str) -> Result<Option<Device>, StoreError> {
        self.devices
            .find_one(doc! { "endpoint": endpoint })
            .await
            .map_err(unavailable)?
            .map(decode)
            .transpose()
    }

    async fn for_user(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let documents: Vec<Document> = self
            .devices
            .find(doc! { "user_id": user_id, "active": true })
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        documents.into_iter().map(decode).collect()
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let result = self
            .devices
            .delete_one(doc! { "id": id })
            .await
            .map_err(unavailable)?;
        Ok(result.deleted_count == 1)
    }

    async fn deactivate(&self, token: &str) -> Result<bool, StoreError> {
        let now = bson::to_bson(&mdc_core::now()).map_err(other)?;
        let result = self
            .devices
            .update_one(
                doc! { "token": token },
                doc! { "$set": { "active": false, "updated_at": now } },
            )
            .await
            .map_err(unavailable)?;
        Ok(result.matched_count == 1)
    }
}
