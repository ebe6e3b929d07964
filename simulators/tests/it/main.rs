//! The Kaleyra adapter against the Kaleyra simulator on loopback.

mod kaleyra;
