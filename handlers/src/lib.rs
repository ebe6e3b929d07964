//! Handlers behind the queue: the response handler applies vendor reports to
//! stored messages; the retry handler puts messages back on their lane when
//! their next attempt is due; the reconciler reschedules messages whose
//! retry timer was lost; retention clears and removes old finished messages.

pub mod feedback;
pub mod parked;
mod reconcile;
mod response;
mod retention;
mod retry;

pub use feedback::{Feedback, FeedbackConfig};
pub use reconcile::{Reconciler, ReconcilerConfig};
pub use response::ResponseHandler;
pub use retention::{Retention, RetentionConfig};
pub use retry::RetryHandler;
