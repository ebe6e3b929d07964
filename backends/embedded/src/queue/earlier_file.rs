//! The queue's own file of earlier versions, `queue.redb`. The queue now
//! lives in the store's file; when it opens, the records an earlier
//! version left waiting move there, and the old file is removed.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use crate::db::{repair_progress, Db, DbError, SMALL_CACHE_BYTES};

/// Records moved per commit: a large backlog moves in steps, not in one
/// transaction held in memory.
const PER_COMMIT: u64 = 10_000;

/// Moves every record of the queue tables (`queue.*`) of the file at
/// `earlier` into the same tables, at the same keys, of `file`, then
/// removes `earlier`. Nothing to do when there is no such file; an empty
/// one (an earlier version stopped while creating it) is removed.
///
/// A crash before the removal moves the same records again to the same
/// places on the next start: nothing is doubled. A record of `file` that
/// differs from the one moved to its place stops the move with an error:
/// the two files disagree, and neither is changed further.
pub(crate) fn move_records(file: &Db, earlier: &Path) -> Result<u64, DbError> {
    let named = |e: &dyn std::fmt::Display| DbError::Open(format!("{}: {e}", earlier.display()));
    let size = match std::fs::metadata(earlier) {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        Ok(_) => return Err(named(&"not a file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(named(&e)),
    };
    let moved = if size == 0 {
        0
    } else {
        let database = redb::Builder::new()
            .set_cache_size(SMALL_CACHE_BYTES)
            .set_repair_callback(repair_progress(earlier))
            .open(earlier)
            .map_err(|e| named(&e))?;
        let read = database.begin_read().map_err(|e| named(&e))?;
        let tables: Vec<String> = read
            .list_tables()
            .map_err(|e| named(&e))?
            .map(|table| table.name().to_owned())
            .filter(|name| name.starts_with("queue."))
            .collect();
        let mut moved = 0;
        for name in &tables {
            let table = TableDefinition::<(u32, u64), &[u8]>::new(name);
            let from = read.open_table(table).map_err(|e| named(&e))?;
            let mut entries = from.iter().map_err(|e| named(&e))?;
            loop {
                let step = file.write_now(|txn| {
                    let mut to = txn.open_table(table)?;
                    let mut step = 0;
                    while step < PER_COMMIT {
                        let Some(entry) = entries.next() else { break };
                        let (key, value) = entry.map_err(|e| named(&e))?;
                        let (key, value) = (key.value(), value.value());
                        if let Some(held) = to.insert(key, value)? {
                            if held.value() != value {
                                return Err(named(&format!(
                                    "its record at partition {} offset {} of {name} differs from the one the store's file holds there; start the version that wrote it to deliver what it holds, or move it away",
                                    key.0, key.1
                                )));
                            }
                        }
                        step += 1;
                    }
                    Ok(step)
                })?;
                moved += step;
                if step < PER_COMMIT {
                    break;
                }
            }
        }
        moved
    };
    std::fs::remove_file(earlier).map_err(|e| named(&e))?;
    // The removal must outlast a power loss: a file that came back would
    // move records acknowledged since, to be delivered again.
    if let Some(dir) = earlier.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| named(&e))?;
    }
    tracing::info!(
        file = %earlier.display(),
        records = moved,
        "Moved the records waiting in the queue's earlier file into the store's file, and removed it"
    );
    Ok(moved)
}
