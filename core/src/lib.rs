//! Shared vocabulary of MDC: the message model, its lifecycle, and the ports
//! (queue, store, retry scheduler, provider) that every backend implements.
//!
//! Nothing in this crate talks to the outside world. Backends live in their own
//! crates and prove themselves against the contract suites in [`contract`].

#[cfg(feature = "testing")]
pub mod contract;
pub mod durations;
pub mod id;
pub mod mask;
#[cfg(feature = "testing")]
pub mod memory;
pub mod message;
pub mod outcome;
pub mod ports;
pub mod report;
pub mod rfc3339;
pub mod setting;
pub mod status;
pub mod supervise;
pub mod trail;

pub use id::MessageId;
pub use message::{Channel, Content, Event, Message, MessageRecord, MessageType, Priority};
pub use report::{DeliveryReport, ReportOutcome};
pub use setting::InvalidSetting;
pub use status::Status;

/// Wall-clock time as MDC stores it everywhere.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// The current time; one place so every component agrees on the clock source.
///
/// Built with the `testing` feature, it is the wall clock at the first call
/// plus the time tokio's clock has advanced since, so tests on paused time
/// (`tokio::time::pause`) move MDC's clock too.
pub fn now() -> Timestamp {
    #[cfg(feature = "testing")]
    {
        use std::sync::OnceLock;
        static ANCHOR: OnceLock<(Timestamp, tokio::time::Instant)> = OnceLock::new();
        let (wall, instant) =
            *ANCHOR.get_or_init(|| (chrono::Utc::now(), tokio::time::Instant::now()));
        let elapsed = tokio::time::Instant::now().saturating_duration_since(instant);
        wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
    #[cfg(not(feature = "testing"))]
    {
        chrono::Utc::now()
    }
}
