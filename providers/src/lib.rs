//! Provider adapters behind the [`mdc_core::ports::Provider`] trait, and the
//! vendor simulators used in development, tests and benchmarks.

pub mod error;
mod mime;
pub mod simulator;
pub mod smtp;

pub use error::{BuildError, ConfigError};
pub use simulator::{Ledger, Magic, Simulator, SimulatorConfig};
