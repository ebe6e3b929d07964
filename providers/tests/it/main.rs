//! Adapters against real servers started by scripts/test-services.

mod services;
mod ses;
mod smtp;
mod sns;
