//! Shared vocabulary of MDC: the message model, its lifecycle, and the ports
//! (queue, store, retry scheduler, provider) that every backend implements.
//!
//! Nothing in this crate talks to the outside world. Backends live in their own
//! crates and prove themselves against the contract suites in [`contract`].

pub mod contract;
pub mod durations;
pub mod id;
pub mod mask;
pub mod message;
pub mod ports;
pub mod report;
pub mod status;

pub use id::MessageId;
pub use message::{Channel, Content, Event, Message, MessageRecord, MessageType, Priority};
pub use report::{DeliveryReport, ReportOutcome};
pub use status::Status;

/// Wall-clock time as MDC stores it everywhere.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// The current time; one place so every component agrees on the clock source.
pub fn now() -> Timestamp {
    chrono::Utc::now()
}
