//! Provider adapters behind the [`mdc_core::ports::Provider`] trait, and the
//! vendor simulators used in development, tests and benchmarks.

pub mod aws;
pub mod breaker;
pub mod config;
pub mod error;
pub mod kaleyra;
mod mime;
pub mod ratelimit;
pub mod router;
pub mod ses;
pub mod simulator;
pub mod smtp;
pub mod sns;

pub use error::{BuildError, ConfigError};
pub use simulator::{Ledger, Magic, Simulator, SimulatorConfig};
