//! Adapters against real servers started by scripts/test-services.

mod kaleyra;
mod services;
mod ses;
mod smtp;
mod sns;
