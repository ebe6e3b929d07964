//! Provider adapters behind the [`mdc_core::ports::Provider`] trait, and the
//! vendor simulators used in development, tests and benchmarks.

pub mod simulator;

pub use simulator::{Ledger, Magic, Simulator, SimulatorConfig};
