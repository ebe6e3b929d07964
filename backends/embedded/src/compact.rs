//! Gives a database file back to the file system's free space: retention
//! frees the pages of removed messages, new messages reuse them, but the
//! file keeps its largest size. Compacting moves the pages in use towards
//! the front and cuts the file after the last one. It needs the file to
//! itself, so it runs while no server has it open.

use std::path::Path;

use crate::db::repair_progress;

/// Page cache while compacting: compaction walks the whole file on each
/// pass, and redb's default (1 GiB) would let it grow towards that.
const COMPACT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// A file's size before and after [`compact_file`], in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub before: u64,
    pub after: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Another process (a running server) has the file open.
    #[error("{0} is open in another process")]
    InUse(String),
    #[error("cannot compact {file}: {error}")]
    Failed { file: String, error: String },
}

fn size(path: &Path) -> Result<u64, CompactError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| failed(path, e))
}

fn failed(path: &Path, error: impl std::fmt::Display) -> CompactError {
    CompactError::Failed {
        file: path.display().to_string(),
        error: error.to_string(),
    }
}

/// Compacts the database at `path`, which must exist and not be open in
/// any process (a running server's file is refused, not waited for).
/// A file a killed server left is checked first, as a server's start
/// would, with its progress logged. Interrupted, the file stays whole
/// (each step of the compaction is a commit), but the next open checks
/// it again before anything else.
pub fn compact_file(path: &Path) -> Result<Compacted, CompactError> {
    let before = size(path)?;
    let mut database = redb::Builder::new()
        .set_cache_size(COMPACT_CACHE_BYTES)
        .set_repair_callback(repair_progress(path))
        .open(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                CompactError::InUse(path.display().to_string())
            }
            e => failed(path, e),
        })?;
    database.compact().map_err(|e| failed(path, e))?;
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
    fn an_open_file_is_refused_as_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let open = Db::open(&path).expect("open");
        let error = compact_file(&path).expect_err("the file is in use");
        assert!(
            matches!(&error, CompactError::InUse(file) if file.ends_with("store.redb")),
            "{error}"
        );
        drop(open);
        compact_file(&path).expect("free once closed");
    }

    #[test]
    fn a_file_that_is_no_database_is_a_failure_not_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        std::fs::write(&path, b"not a database").expect("write");
        let error = compact_file(&path).expect_err("not a database");
        assert!(matches!(error, CompactError::Failed { .. }), "{error}");
    }
}
