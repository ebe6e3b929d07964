//! The dispatcher: consumes the priority lanes, claims each message in the
//! store before calling the vendor (so a redelivery never sends twice), drops
//! what is past its deadline, sends through the channel's provider and records
//! every attempt. Transient failures go to the retry scheduler on a schedule
//! kept as data; permanent ones fail the message. [`worker`] walks through
//! one record's path in order.

mod config;
pub mod fleet;
mod lanes;
pub mod retry;
pub mod routing;
pub mod worker;

pub use config::{DispatcherConfig, DEFAULT_RETRY_SCHEDULE};
pub use worker::{Dispatcher, NOT_STORED_GRACE};
