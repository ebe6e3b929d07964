use async_trait::async_trait;

use crate::ports::StoreError;

/// Where a polling intake keeps its place in a vendor's stream (a log
/// cursor), so a restart neither loses nor replays what it read. One JSON
/// value per name; each writer owns its names.
#[async_trait]
pub trait Checkpoints: Send + Sync + 'static {
    async fn load(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError>;

    /// Replaces the value; durable when it returns.
    async fn save(&self, name: &str, value: &serde_json::Value) -> Result<(), StoreError>;
}
