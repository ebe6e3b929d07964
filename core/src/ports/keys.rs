use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;
use crate::Timestamp;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Submit and cancel the service's own messages; register its devices;
    /// manage its own webhooks.
    #[serde(rename = "send")]
    Send,
    /// Read the service's own messages, recipients and bodies masked.
    #[serde(rename = "read")]
    Read,
    /// As `read`, with recipients and bodies in clear (OTP bodies never are).
    #[serde(rename = "read:pii")]
    ReadPii,
    /// Every service's messages, devices and webhooks; keys; suppressions.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Send, Scope::Read, Scope::ReadPii, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::ReadPii => "read:pii",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}: use send, read, read:pii or admin"))
    }
}

/// An API key as stored: never the secret itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// `key_` and a ULID; also the visible part of the secret.
    pub id: String,
    /// The internal service the key speaks for.
    pub service: String,
    pub scopes: Vec<Scope>,
    /// Lower-case hex SHA-256 of the secret part.
    pub secret_hash: String,
    #[serde(default)]
    pub description: String,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// Where API keys are kept (beside the messages).
#[async_trait]
pub trait ApiKeys: Send + Sync + 'static {
    /// Stores a new key (its id is new).
    async fn create(&self, key: &ApiKey) -> Result<(), StoreError>;

    async fn get(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Every key, revoked ones too, oldest first.
    async fn list(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Marks the key revoked at `at`; false when it is unknown or was
    /// already revoked (the first revocation time is kept).
    async fn revoke(&self, id: &str, at: Timestamp) -> Result<bool, StoreError>;
}
