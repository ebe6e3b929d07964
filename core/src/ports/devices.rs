use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;
use crate::Timestamp;

/// A mobile push platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Apns,
    ApnsSandbox,
    Fcm,
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "apns" => Ok(Platform::Apns),
            "apns_sandbox" => Ok(Platform::ApnsSandbox),
            "fcm" => Ok(Platform::Fcm),
            _ => Err("must be one of: apns, apns_sandbox, fcm".into()),
        }
    }
}

/// A registered device: where a user's push notifications go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `dev_` followed by a ULID.
    pub id: String,
    pub user_id: String,
    pub platform: Platform,
    pub token: String,
    /// The vendor's handle for the device (an SNS endpoint ARN), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// False once the vendor reported the device gone (`EndpointDisabled`).
    pub active: bool,
    /// The service whose key registered it; only it (or an admin) may
    /// change or delete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Device {
    pub fn new(user_id: &str, platform: Platform, token: &str) -> Self {
        let now = crate::now();
        Self {
            id: format!("dev_{}", ulid::Ulid::new()),
            user_id: user_id.to_owned(),
            platform,
            token: token.to_owned(),
            endpoint: None,
            active: true,
            service: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The device registry. Tokens are unique: registering a known token updates
/// that device (new user, platform, endpoint; active again) and keeps its id,
/// when the same service registered it.
#[async_trait]
pub trait DeviceRegistry: Send + Sync + 'static {
    /// Stores the device, or updates the one with the same token if it is
    /// `device.service`'s; returns the stored device and whether it was new.
    /// Another service's device with the token is returned as it is: the
    /// check and the write are one, so two services registering a token at
    /// once leave it with one of them.
    async fn register(&self, device: &Device) -> Result<(Device, bool), StoreError>;

    async fn get(&self, id: &str) -> Result<Option<Device>, StoreError>;

    async fn by_token(&self, token: &str) -> Result<Option<Device>, StoreError>;

    /// The device whose vendor endpoint (an SNS endpoint ARN) is `endpoint`.
    async fn by_endpoint(&self, endpoint: &str) -> Result<Option<Device>, StoreError>;

    /// The user's active devices.
    async fn for_user(&self, user_id: &str) -> Result<Vec<Device>, StoreError>;

    /// Deletes the device; false when there was none.
    async fn remove(&self, id: &str) -> Result<bool, StoreError>;

    /// Marks the device with this token inactive; false when unknown.
    async fn deactivate(&self, token: &str) -> Result<bool, StoreError>;
}
