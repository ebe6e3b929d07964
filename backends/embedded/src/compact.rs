//! Gives a database file back to the file system's free space: retention
//! frees the pages of removed messages, new messages reuse them, but the
//! file keeps its largest size. Compacting moves the pages in use to the
//! front and cuts the file after them. It needs the file to itself, so it
//! runs while no server has it open.

use std::path::Path;

use crate::db::DbError;

/// A file's size before and after [`compact_file`], in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub before: u64,
    pub after: u64,
}

fn size(path: &Path) -> Result<u64, DbError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| DbError::Open(format!("{}: {e}", path.display())))
}

/// Compacts the database at `path`, which must exist and not be open in
/// any process (a running server's file is refused, not waited for).
/// Interrupted, the file stays whole: the compaction's moves are
/// committed as it goes, and the next open repairs what the last one left
/// unfinished.
pub fn compact_file(path: &Path) -> Result<Compacted, DbError> {
    let before = size(path)?;
    let mut database = redb::Database::open(path)
        .map_err(|e| DbError::Open(format!("{}: {e}", path.display())))?;
    database
        .compact()
        .map_err(|e| DbError::Storage(format!("compacting {}: {e}", path.display())))?;
    drop(database);
    Ok(Compacted {
        before,
        after: size(path)?,
    })
}

#[cfg(test)]
mod tests {
    use redb::{ReadableDatabase, TableDefinition};

    use super::*;
    use crate::db::Db;

    const ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("rows");

    #[test]
    fn compacting_gives_back_the_space_of_removed_rows_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let value = vec![7u8; 1024];
        {
            let db = Db::open(&path).expect("open");
            db.write_now(|txn| {
                let mut rows = txn.open_table(ROWS)?;
                for id in 0..10_000u64 {
                    rows.insert(id, value.as_slice())?;
                }
                Ok(())
            })
            .expect("fill");
            db.write_now(|txn| {
                let mut rows = txn.open_table(ROWS)?;
                for id in 100..10_000u64 {
                    rows.remove(id)?;
                }
                Ok(())
            })
            .expect("remove");
        }
        let compacted = compact_file(&path).expect("compact");
        assert!(
            compacted.after * 4 < compacted.before,
            "{compacted:?}: most of the file was free"
        );
        let database = redb::Database::open(&path).expect("reopen");
        let read = database.begin_read().expect("read");
        let rows = read.open_table(ROWS).expect("table");
        for id in 0..100u64 {
            let row = rows.get(id).expect("get").expect("kept row");
            assert_eq!(row.value(), value.as_slice());
        }
        assert!(rows.get(100).expect("get").is_none());
    }

    #[test]
    fn an_open_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("queue.redb");
        let _open = Db::open(&path).expect("open");
        let error = compact_file(&path).expect_err("the file is in use");
        assert!(error.to_string().contains("queue.redb"), "{error}");
    }
}
