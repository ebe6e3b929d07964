//! How the ledger keeps an entry: keyed by the message id's 128 bits, the
//! entry in a fixed binary layout. Both were text before (the id, JSON):
//! the ledger is written at every send and read at every report, and the
//! text cost its writer a third more. A ledger of that layout is moved
//! over when it opens ([`migrate`]).

use mdc_core::{MessageId, ReportOutcome};
use mdc_embedded::DbError;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction};

use super::Entry;

/// Message id bits → entry ([`encode`]).
pub(super) const SENDS: TableDefinition<u128, &[u8]> = TableDefinition::new("simulator_sends.2");
/// The first layout: message id text → entry as JSON.
const OLD_SENDS: TableDefinition<&str, &[u8]> = TableDefinition::new("simulator_sends");

/// The layout's version, its first byte (JSON begins with `{`).
const V1: u8 = 1;
const REPORT_PENDING: u8 = 1;
const HAS_PROVIDER_ID: u8 = 2;
const HAS_REPORT: u8 = 4;

/// An entry: version, flags, calls and accepted (u32, little-endian), the
/// provider (u8 length), its message id (u16 length) when there is one,
/// and the report, when there is one, as JSON to the end.
pub(super) fn encode(entry: &Entry) -> Result<Vec<u8>, DbError> {
    let provider = entry.provider.as_bytes();
    let provider_len =
        u8::try_from(provider.len()).map_err(|_| damaged("provider name over 255 bytes"))?;
    let mut flags = 0;
    if entry.report_pending {
        flags |= REPORT_PENDING;
    }
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(&[V1, 0]);
    out.extend_from_slice(&entry.calls.to_le_bytes());
    out.extend_from_slice(&entry.accepted.to_le_bytes());
    out.push(provider_len);
    out.extend_from_slice(provider);
    if let Some(id) = &entry.provider_message_id {
        flags |= HAS_PROVIDER_ID;
        let len = u16::try_from(id.len()).map_err(|_| damaged("provider id over 64 KiB"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(id.as_bytes());
    }
    if let Some(report) = &entry.report {
        flags |= HAS_REPORT;
        serde_json::to_writer(&mut out, report)?;
    }
    out[1] = flags;
    Ok(out)
}

/// An entry as [`encode`] wrote it, or as JSON (the first layout).
pub(super) fn decode(bytes: &[u8]) -> Result<Entry, DbError> {
    match bytes.first() {
        Some(&V1) => {}
        Some(b'{') => return Ok(serde_json::from_slice(bytes)?),
        _ => return Err(damaged("unknown layout")),
    }
    let mut reader = Reader { rest: &bytes[1..] };
    let flags = reader.take(1)?[0];
    let calls = u32::from_le_bytes(reader.array()?);
    let accepted = u32::from_le_bytes(reader.array()?);
    let provider_len = usize::from(reader.take(1)?[0]);
    let provider = reader.text(provider_len)?;
    let provider_message_id = if flags & HAS_PROVIDER_ID != 0 {
        let len = usize::from(u16::from_le_bytes(reader.array()?));
        Some(reader.text(len)?)
    } else {
        None
    };
    let report: Option<ReportOutcome> = if flags & HAS_REPORT != 0 {
        Some(serde_json::from_slice(reader.rest)?)
    } else if reader.rest.is_empty() {
        None
    } else {
        return Err(damaged("bytes after the entry"));
    };
    Ok(Entry {
        provider,
        calls,
        accepted,
        provider_message_id,
        report,
        report_pending: flags & REPORT_PENDING != 0,
    })
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DbError> {
        if self.rest.len() < n {
            return Err(damaged("cut short"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DbError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn text(&mut self, n: usize) -> Result<String, DbError> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| damaged("text is not UTF-8"))
    }
}

fn damaged(why: &str) -> DbError {
    DbError::Storage(format!("damaged simulator ledger entry: {why}"))
}

/// Moves the entries of a ledger of the first layout over, and drops its
/// table; entries whose key is no message id, or whose value cannot be
/// read, are left out with a warning. Returns how many moved.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<usize, DbError> {
    let old_exists = txn
        .list_tables()?
        .any(|table| table.name() == OLD_SENDS.name());
    if !old_exists {
        return Ok(0);
    }
    let mut moved = 0;
    {
        let old = txn.open_table(OLD_SENDS)?;
        let mut new = txn.open_table(SENDS)?;
        if old.len()? > 0 {
            for row in old.iter()? {
                let (key, value) = row?;
                let Ok(id) = key.value().parse::<MessageId>() else {
                    tracing::warn!(
                        key = key.value(),
                        "Left out a simulator ledger entry whose key is no message id"
                    );
                    continue;
                };
                let entry = match decode(value.value()) {
                    Ok(entry) => entry,
                    Err(e) => {
                        tracing::warn!(message_id = %id, error = %e, "Left out a damaged simulator ledger entry");
                        continue;
                    }
                };
                new.insert(id.bits(), encode(&entry)?.as_slice())?;
                moved += 1;
            }
        }
    }
    txn.delete_table(OLD_SENDS)?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        let mut all = vec![Entry::default()];
        for (report, pmid) in [
            (None, None),
            (Some(ReportOutcome::Delivered), Some("sim-01KB4Z3V6Q")),
            (
                Some(ReportOutcome::Failed {
                    reason: "mailbox full".into(),
                    suppress: true,
                }),
                Some(""),
            ),
            (
                Some(ReportOutcome::Noted {
                    details: "opened, \"twice\"".into(),
                    suppress: false,
                }),
                None,
            ),
        ] {
            for pending in [false, true] {
                all.push(Entry {
                    provider: "sim-sms".into(),
                    calls: 3,
                    accepted: u32::MAX,
                    provider_message_id: pmid.map(str::to_owned),
                    report: report.clone(),
                    report_pending: pending,
                });
            }
        }
        all
    }

    #[test]
    fn entries_come_back_as_written_smaller_than_json() {
        for entry in entries() {
            let bytes = encode(&entry).expect("encode");
            assert_eq!(decode(&bytes).expect("decode"), entry);
            let json = serde_json::to_vec(&entry).expect("json");
            assert!(
                bytes.len() < json.len(),
                "{} >= {}",
                bytes.len(),
                json.len()
            );
            assert_eq!(decode(&json).expect("json decodes"), entry, "first layout");
        }
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        for entry in entries() {
            let bytes = encode(&entry).expect("encode");
            for end in 0..bytes.len() {
                assert!(decode(&bytes[..end]).is_err(), "cut at {end} of {entry:?}");
            }
        }
        assert!(decode(&[9, 0]).is_err(), "unknown layout");
        let mut trailing = encode(&Entry::default()).expect("encode");
        trailing.push(0);
        assert!(decode(&trailing).is_err(), "bytes after the entry");
        let mut bad_text = encode(&entries()[1]).expect("encode");
        bad_text[11] = 0xFF;
        assert!(decode(&bad_text).is_err(), "provider not UTF-8");
        let long = Entry {
            provider: "p".repeat(256),
            ..Entry::default()
        };
        assert!(encode(&long).is_err(), "provider over 255 bytes");
    }
}
