//! The queue's own file of earlier versions, `queue.redb`. The queue now
//! lives in the store's file; when it opens, the records an earlier
//! version left waiting move there, and the old file is removed.

use std::path::Path;

use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle,
};

use crate::db::{repair_progress, Db, DbError, SMALL_CACHE_BYTES};

/// Records moved per commit: a large backlog moves in steps, not in one
/// transaction held in memory.
const PER_COMMIT: u64 = 10_000;

type QueueTable<'a> = TableDefinition<'a, (u32, u64), &'static [u8]>;

/// Moves every record of the queue tables (`queue.*`) of the file at
/// `earlier` into the same tables, at the same keys, of `file`, then
/// removes `earlier`. Nothing to do when there is no such file; an empty
/// one (an earlier version stopped while creating it) is removed.
///
/// A crash before the removal moves the same records again to the same
/// places on the next start: nothing is doubled. When `file` already
/// holds a different record at the place of one to move, the two files
/// disagree: the move stops before writing anything, with an error.
pub(crate) fn move_records(file: &Db, earlier: &Path) -> Result<u64, DbError> {
    move_records_by(file, earlier, PER_COMMIT)
}

fn move_records_by(file: &Db, earlier: &Path, per_commit: u64) -> Result<u64, DbError> {
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
        agree(file, &read, &tables).map_err(|e| named(&e))?;
        let mut waiting = 0;
        for name in &tables {
            let table = read
                .open_table(QueueTable::new(name))
                .map_err(|e| named(&e))?;
            waiting += table.len().map_err(|e| named(&e))?;
        }
        tracing::info!(
            file = %earlier.display(),
            records = waiting,
            "Moving the records waiting in the queue's earlier file into the store's file before serving"
        );
        let mut moved = 0;
        for name in &tables {
            moved += copy_table(file, &read, QueueTable::new(name), per_commit)
                .map_err(|e| named(&format!("moving its records into the store's file: {e}")))?;
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

/// Checks, before anything is written, that `file` holds no record that
/// differs from one of `read`'s at the same place.
fn agree(file: &Db, read: &ReadTransaction, tables: &[String]) -> Result<(), DbError> {
    let held = file.read()?;
    for name in tables {
        let table = QueueTable::new(name);
        let to = match held.open_table(table) {
            Ok(to) => to,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in read.open_table(table)?.iter()? {
            let (key, value) = entry?;
            let key = key.value();
            if to
                .get(key)?
                .is_some_and(|there| there.value() != value.value())
            {
                return Err(DbError::Storage(format!(
                    "its record at partition {} offset {} of {name} differs from the one the store's file holds there; nothing was moved. Run the version that wrote it until its queue has drained, then remove it",
                    key.0, key.1
                )));
            }
        }
    }
    Ok(())
}

/// Copies `table` of `read` into `file`, `per_commit` records a commit.
fn copy_table(
    file: &Db,
    read: &ReadTransaction,
    table: QueueTable<'_>,
    per_commit: u64,
) -> Result<u64, DbError> {
    let from = read.open_table(table)?;
    let mut entries = from.iter()?;
    let mut moved = 0;
    loop {
        let step = file.write_now(|txn| {
            let mut to = txn.open_table(table)?;
            let mut step = 0;
            while step < per_commit {
                let Some(entry) = entries.next() else { break };
                let (key, value) = entry?;
                to.insert(key.value(), value.value())?;
                step += 1;
            }
            Ok(step)
        })?;
        moved += step;
        if step < per_commit {
            return Ok(moved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: QueueTable<'static> = TableDefinition::new("queue.sms.normal");

    fn earlier_with(dir: &Path, records: u64) -> std::path::PathBuf {
        let path = dir.join("queue.redb");
        let database = redb::Database::create(&path).expect("create");
        let txn = database.begin_write().expect("write");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            for offset in 0..records {
                table
                    .insert((0, offset), offset.to_le_bytes().as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
        path
    }

    /// The (offset, record) pairs `file` holds in the table.
    fn held(file: &Db) -> Vec<(u64, Vec<u8>)> {
        let read = file.read().expect("read");
        let table = read.open_table(TABLE).expect("table");
        table
            .iter()
            .expect("iter")
            .map(|entry| {
                let (key, value) = entry.expect("entry");
                (key.value().1, value.value().to_vec())
            })
            .collect()
    }

    /// Every record moves with a step of three, also when their number
    /// is a multiple of it (the last step then finds nothing).
    #[test]
    fn records_move_in_steps_and_none_is_left() {
        for records in [0, 1, 6, 7, 9] {
            let dir = tempfile::tempdir().expect("tempdir");
            let earlier = earlier_with(dir.path(), records);
            let file = Db::open(&dir.path().join("store.redb")).expect("open");
            let moved = move_records_by(&file, &earlier, 3).expect("move");
            assert_eq!(moved, records);
            let expected: Vec<_> = (0..records)
                .map(|offset| (offset, offset.to_le_bytes().to_vec()))
                .collect();
            assert_eq!(held(&file), expected);
            assert!(!earlier.exists());
        }
    }

    /// A disagreement found at the last record still writes nothing.
    #[test]
    fn a_disagreement_moves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let earlier = earlier_with(dir.path(), 7);
        let file = Db::open(&dir.path().join("store.redb")).expect("open");
        file.write_now(|txn| {
            txn.open_table(TABLE)?.insert((0, 6), b"other".as_slice())?;
            Ok(())
        })
        .expect("write");
        let error = move_records_by(&file, &earlier, 3).expect_err("refused");
        assert!(error.to_string().contains("offset 6"), "{error}");
        assert!(error.to_string().contains("queue.redb"), "{error}");
        assert_eq!(
            held(&file),
            vec![(6, b"other".to_vec())],
            "nothing was moved"
        );
        assert!(earlier.exists());
    }
}
