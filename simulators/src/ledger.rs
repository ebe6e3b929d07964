//! The simulated vendor's own memory, durable like a real vendor's: which
//! messages it accepted (so a resend shows up as a duplicate and a status
//! lookup works after MDC restarts) and which reports it still owes.

use std::collections::BTreeMap;
use std::path::Path;

use mdc_core::MessageId;
use mdc_embedded::{Db, DbError};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// reference (MDC message id) → entry (JSON).
const SENDS: TableDefinition<&str, &[u8]> = TableDefinition::new("simulator_sends");

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Which simulator (`sim-sms`, ...) saw it.
    pub provider: String,
    /// Send calls for this reference, refused ones included.
    pub calls: u32,
    /// Sends the vendor accepted: more than one is a duplicate send.
    pub accepted: u32,
    pub provider_message_id: Option<String>,
    /// The outcome the vendor will report.
    pub report: Option<mdc_core::ReportOutcome>,
    /// The delivery report is still owed.
    pub report_pending: bool,
}

/// The ledger's file in the data directory.
pub const LEDGER_FILE: &str = "simulator.redb";

pub struct Ledger {
    db: Db,
}

impl Ledger {
    /// Opens [`LEDGER_FILE`] in `dir`.
    pub fn open(dir: &Path) -> Result<Self, DbError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DbError::Open(format!("{}: {e}", dir.display())))?;
        // Each entry is written at a send and read back at its report, within
        // seconds: a small cache holds those.
        let db = Db::with_cache(&dir.join(LEDGER_FILE), mdc_embedded::SMALL_CACHE_BYTES)?;
        db.write_now(|txn| {
            txn.open_table(SENDS)?;
            Ok(())
        })?;
        Ok(Self { db })
    }

    /// Applies `f` to the reference's entry, durably, and returns its result.
    pub async fn update<T: Send + 'static>(
        &self,
        reference: &MessageId,
        f: impl FnOnce(&mut Entry) -> T + Send + 'static,
    ) -> Result<T, DbError> {
        let key = reference.as_str().to_owned();
        self.db
            .write(true, move |txn| {
                let mut table = txn.open_table(SENDS)?;
                let mut entry: Entry = match table.get(key.as_str())? {
                    Some(v) => serde_json::from_slice(v.value())?,
                    None => Entry::default(),
                };
                let out = f(&mut entry);
                table.insert(key.as_str(), serde_json::to_vec(&entry)?.as_slice())?;
                Ok(out)
            })
            .await
    }

    /// Marks the report as sent. Not fsynced: a lost mark means the report is
    /// sent again after a restart, and duplicate reports are harmless.
    pub async fn report_sent(&self, reference: &MessageId) -> Result<(), DbError> {
        let key = reference.as_str().to_owned();
        self.db
            .write(false, move |txn| {
                let mut table = txn.open_table(SENDS)?;
                let entry: Option<Entry> = match table.get(key.as_str())? {
                    Some(v) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                };
                if let Some(mut entry) = entry {
                    entry.report_pending = false;
                    table.insert(key.as_str(), serde_json::to_vec(&entry)?.as_slice())?;
                }
                Ok(())
            })
            .await
    }

    pub fn get(&self, reference: &MessageId) -> Result<Option<Entry>, DbError> {
        let txn = self.db.read()?;
        let table = txn.open_table(SENDS)?;
        match table.get(reference.as_str())? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every entry, by reference.
    pub fn entries(&self) -> Result<BTreeMap<String, Entry>, DbError> {
        let txn = self.db.read()?;
        let table = txn.open_table(SENDS)?;
        let mut out = BTreeMap::new();
        for row in table.iter()? {
            let (key, value) = row?;
            out.insert(
                key.value().to_owned(),
                serde_json::from_slice(value.value())?,
            );
        }
        Ok(out)
    }
}
