//! The MDC client: what an internal service links to send a message.
//!
//! [`Submitter::submit`] validates a [`SubmitRequest`] (phone numbers, email
//! addresses, push targets, sizes and SMS segments), enriches it (id, times,
//! sender id, idempotency key, deadline) and produces it to its priority topic.
//! It returns `Ok` only once the message is durable in the queue.

mod config;
mod enrich;
mod request;
mod submit;
pub mod validate;

pub use config::ClientConfig;
pub use enrich::enrich;
pub use request::SubmitRequest;
pub use submit::{SubmitError, Submitted, Submitter};
pub use validate::{ValidationError, Warning};
