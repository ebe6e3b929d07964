//! The simulated vendor's own memory, durable like a real vendor's: which
//! messages it accepted (so a resend shows up as a duplicate and a status
//! lookup works after MDC restarts) and which reports it still owes.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mdc_core::{MessageId, Timestamp};
use mdc_embedded::{Db, DbError};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

mod layout;
use layout::{decode, encode, migrate, SENDS};

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
        let moved = db.write_now(|txn| {
            let moved = migrate(txn)?;
            txn.open_table(SENDS)?;
            Ok(moved)
        })?;
        if moved > 0 {
            tracing::info!(moved, "Moved the simulator ledger to its binary layout");
        }
        Ok(Self { db })
    }

    /// Applies `f` to the reference's entry, durably, and returns its result.
    pub async fn update<T: Send + 'static>(
        &self,
        reference: &MessageId,
        f: impl FnOnce(&mut Entry) -> T + Send + 'static,
    ) -> Result<T, DbError> {
        let key = reference.bits();
        self.db
            .write(true, move |txn| {
                let mut table = txn.open_table(SENDS)?;
                let mut entry: Entry = match table.get(key)? {
                    Some(v) => decode(v.value())?,
                    None => Entry::default(),
                };
                let out = f(&mut entry);
                table.insert(key, encode(&entry)?.as_slice())?;
                Ok(out)
            })
            .await
    }

    /// Marks the report as sent. Not fsynced: a lost mark means the report is
    /// sent again after a restart, and duplicate reports are harmless.
    pub async fn report_sent(&self, reference: &MessageId) -> Result<(), DbError> {
        let key = reference.bits();
        self.db
            .write(false, move |txn| {
                let mut table = txn.open_table(SENDS)?;
                let entry: Option<Entry> = match table.get(key)? {
                    Some(v) => Some(decode(v.value())?),
                    None => None,
                };
                if let Some(mut entry) = entry {
                    entry.report_pending = false;
                    table.insert(key, encode(&entry)?.as_slice())?;
                }
                Ok(())
            })
            .await
    }

    /// Removes the entries of messages created before `before` (their ids
    /// begin with their creation time) whose report is not owed, at most
    /// `limit` of them; returns how many went.
    pub async fn trim(&self, before: Timestamp, limit: usize) -> Result<usize, DbError> {
        let Ok(ms) = u64::try_from(before.timestamp_millis()) else {
            return Ok(0);
        };
        if limit == 0 {
            return Ok(0);
        }
        // The smallest id of that millisecond: every older id sorts before it.
        let bound = ulid::Ulid::from_parts(ms, 0).0;
        self.db
            .write(false, move |txn| {
                let mut table = txn.open_table(SENDS)?;
                let mut old = Vec::new();
                for row in table.range(..bound)? {
                    let (key, value) = row?;
                    if !decode(value.value())?.report_pending {
                        old.push(key.value());
                        if old.len() == limit {
                            break;
                        }
                    }
                }
                for key in &old {
                    table.remove(key)?;
                }
                Ok(old.len())
            })
            .await
    }

    /// Trims ([`Ledger::trim`]) entries older than `keep` every `interval`
    /// (the first time right away), `batch` at a time, until shut down: a
    /// long-running server on simulated vendors keeps its ledger as long as
    /// its message records, not forever.
    pub async fn keep_for(
        self: Arc<Self>,
        keep: Duration,
        interval: Duration,
        batch: usize,
        shutdown: CancellationToken,
    ) {
        loop {
            let before = chrono::Duration::from_std(keep)
                .ok()
                .and_then(|keep| mdc_core::now().checked_sub_signed(keep));
            let batch = batch.max(1);
            let mut removed = 0;
            if let Some(before) = before {
                loop {
                    match self.trim(before, batch).await {
                        Ok(n) => {
                            removed += n;
                            if n < batch {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Could not trim the simulator ledger; trying again later");
                            break;
                        }
                    }
                    tokio::task::yield_now().await;
                }
            }
            if removed > 0 {
                tracing::info!(removed, "Trimmed the simulator ledger");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// The entries whose report is still owed, by reference.
    pub fn owed(&self) -> Result<Vec<(String, Entry)>, DbError> {
        let txn = self.db.read()?;
        let table = txn.open_table(SENDS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let entry = decode(value.value())?;
            if entry.report_pending {
                out.push((MessageId::from_bits(key.value()).as_str().to_owned(), entry));
            }
        }
        Ok(out)
    }

    pub fn get(&self, reference: &MessageId) -> Result<Option<Entry>, DbError> {
        let txn = self.db.read()?;
        let table = txn.open_table(SENDS)?;
        match table.get(reference.bits())? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries in reference order, those after `after` or
    /// from the first.
    pub fn page(
        &self,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<(String, Entry)>, DbError> {
        let txn = self.db.read()?;
        let table = txn.open_table(SENDS)?;
        let from = match after {
            Some(after) => Bound::Excluded(after.bits()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for row in table.range::<u128>((from, Bound::Unbounded))?.take(limit) {
            let (key, value) = row?;
            out.push((
                MessageId::from_bits(key.value()).as_str().to_owned(),
                decode(value.value())?,
            ));
        }
        Ok(out)
    }
}
