//! Provider adapters behind the [`mdc_core::ports::Provider`] trait: one
//! per vendor, each mapping its errors to whether a retry can succeed.
//! Routing between them is the dispatcher's; the simulators have their own
//! crate (`mdc-simulators`).

pub mod aws;
pub mod config;
pub mod error;
pub mod kaleyra;
mod mime;
pub mod ses;
pub mod smtp;
pub mod sns;

pub use error::{BuildError, ConfigError};
