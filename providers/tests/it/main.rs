//! Adapters against real servers started by scripts/test-services.

mod services;
mod smtp;
