//! The dispatcher processes alive now. A route's rate limit is configured
//! for the whole deployment; each dispatcher takes an equal share of it, so
//! the vendor sees the configured rate however many are running.

use std::time::Duration;

use async_trait::async_trait;

use crate::ports::StoreError;

#[async_trait]
pub trait Fleet: Send + Sync + 'static {
    /// Counts `member` alive for `alive_for` from now, by the backend's
    /// clock (it drops out unless it beats again by then), and answers how
    /// many members are alive, itself included.
    async fn beat(&self, member: &str, alive_for: Duration) -> Result<usize, StoreError>;

    /// Takes `member` out of the count at once (a clean stop).
    async fn leave(&self, member: &str) -> Result<(), StoreError>;
}
