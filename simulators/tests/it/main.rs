//! The simulators: the Kaleyra adapter against the Kaleyra simulator on
//! loopback, and the simulated vendors' ledger on its file.

mod kaleyra;
mod ledger;
