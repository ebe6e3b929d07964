//! The traits every backend implements. Each has a contract suite in
//! [`crate::contract`] that all implementations must pass.

/// The cause a port error carries: the driver's own error, kept for the
/// error chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub mod cache;
pub mod checkpoint;
pub mod devices;
pub mod fleet;
pub mod keys;
pub mod provider;
pub mod queue;
pub mod retry;
pub mod store;
pub mod suppression;
pub mod webhooks;

pub use cache::{CachedMessage, MessageCache};
pub use checkpoint::Checkpoints;
pub use devices::{Device, DeviceRegistry, Platform};
pub use fleet::Fleet;
pub use keys::{ApiKey, ApiKeys, Scope};
pub use provider::{AfterAmbiguous, Lookup, Provider, ProviderError, Receipt};
pub use queue::{ConsumerSpec, Delivery, Queue, QueueConsumer, QueueError, QueueLayout, Topic};
pub use retry::{RetryError, RetryItem, RetryScheduler};
pub use store::{
    Brief, Claim, Created, Expired, ListFilter, SortOrder, Store, StoreError, Transition, Updated,
    Verify,
};
pub use suppression::{Suppression, SuppressionList};
pub use webhooks::{
    Disabled, PendingDelivery, WebhookAttempt, WebhookEndpoint, WebhookSecret, Webhooks,
};

/// Where normalised vendor reports go: the response listener's output.
#[async_trait::async_trait]
pub trait ReportSink: Send + Sync + 'static {
    /// Returns once the report is durable (on the responses topic).
    async fn submit(&self, report: crate::DeliveryReport) -> Result<(), QueueError>;
}
