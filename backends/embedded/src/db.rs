use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use tokio::sync::oneshot;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database: {0}")]
    Open(String),
    #[error("database error: {0}")]
    Storage(String),
    #[error("database writer has stopped")]
    Closed,
}

impl From<redb::Error> for DbError {
    fn from(e: redb::Error) -> Self {
        DbError::Storage(e.to_string())
    }
}

macro_rules! storage_error_from {
    ($($t:ty),+) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                DbError::Storage(e.to_string())
            }
        }
    )+};
}
storage_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    serde_json::Error
);

/// Runs after the commit with its outcome.
pub(crate) type Completer = Box<dyn FnOnce(Result<(), DbError>) + Send>;
/// A write: applied to the shared transaction, returns its completer.
pub(crate) type Job = Box<dyn FnOnce(&WriteTransaction) -> Completer + Send>;

struct Request {
    job: Job,
    durable: bool,
}

/// Memory for a database's page cache, unless opened with another
/// ([`Db::with_cache`]). redb's default, 1 GiB, let a busy server's memory
/// grow with its data; hot pages (queue heads, recent messages, the
/// indexes' upper levels) fit in a few MiB and older ones are read through
/// the system's file cache. Measured (docs/benchmarks.md): 48, 8, 4 and
/// 2 MiB gave the same ingest throughput, the smaller ones a cheaper store
/// writer (a smaller LRU is cheaper to keep) and less memory.
pub const CACHE_BYTES: usize = 2 * 1024 * 1024;

/// The page cache of a database whose pages are mostly written once and
/// rarely read again (the simulators' ledger).
pub const SMALL_CACHE_BYTES: usize = 1024 * 1024;

/// Writes waiting for the one job of the next commit that will apply them
/// all (the store's and the queue's gathered writes). Each write holds its
/// caller's answer, so a write dropped unapplied answers "closed".
pub(crate) type Waiting<T> = Arc<Mutex<Vec<T>>>;

/// The claim of a queued job on the writes [`Waiting`] for it. If the job
/// is dropped without running (the writer could not begin a transaction,
/// or stopped), the list is emptied: its writes fail instead of waiting
/// for ever, and the next write queues a new job rather than joining one
/// that will never run.
pub(crate) struct Taker<T> {
    waiting: Option<Waiting<T>>,
}

impl<T> Taker<T> {
    pub(crate) fn new(waiting: &Waiting<T>) -> Self {
        Self {
            waiting: Some(waiting.clone()),
        }
    }

    /// Every write waiting now; later ones queue the next job.
    pub(crate) fn take(mut self) -> Vec<T> {
        self.waiting
            .take()
            .map(|waiting| std::mem::take(&mut *lock(&waiting)))
            .unwrap_or_default()
    }
}

impl<T> Drop for Taker<T> {
    fn drop(&mut self) {
        if let Some(waiting) = self.waiting.take() {
            lock(&waiting).clear();
        }
    }
}

/// Adds a write to `waiting`; true when it is the first, whose caller
/// queues the job that will take them.
pub(crate) fn wait_with<T>(waiting: &Waiting<T>, write: T) -> bool {
    let mut list = lock(waiting);
    list.push(write);
    list.len() == 1
}

/// A panic while the list was held leaves it as it was: still valid.
fn lock<T>(waiting: &Waiting<T>) -> std::sync::MutexGuard<'_, Vec<T>> {
    waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Largest number of writes sharing one transaction.
const MAX_BATCH: usize = 2048;

/// How long a writer waits with nothing to write before it runs the idle
/// hook ([`on_writer_idle`]).
const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

static WRITER_IDLE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what a database writer thread runs once it has had nothing to
/// write for a second (the server hands its allocator's thread cache
/// back); the first call wins.
pub fn on_writer_idle(hook: fn()) {
    let _ = WRITER_IDLE.set(hook);
}

/// A database's own work for a writer with nothing else to write
/// ([`Db::when_idle`]): a job to commit (without an fsync of its own), if
/// there is one now.
pub(crate) type IdleWork = Box<dyn Fn() -> Option<Job> + Send>;

type IdleSlot = Arc<Mutex<Option<IdleWork>>>;

/// The next request; after [`IDLE_AFTER`] without one, the database's idle
/// work if it has some, else the idle hook, run once before waiting on.
/// None when every sender is gone.
fn next_request(receiver: &mpsc::Receiver<Request>, idle: &IdleSlot) -> Option<Request> {
    match receiver.recv_timeout(IDLE_AFTER) {
        Ok(request) => Some(request),
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let work = idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .and_then(|work| work());
            if let Some(job) = work {
                return Some(Request {
                    job,
                    durable: false,
                });
            }
            if let Some(hook) = WRITER_IDLE.get() {
                hook();
            }
            receiver.recv().ok()
        }
    }
}

/// A redb database with one writer thread that commits concurrent writes
/// together (group commit). Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    database: Arc<Database>,
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    idle: IdleSlot,
}

/// Logs the check of a file a process left without closing it (killed,
/// or its machine stopped), at every tenth of the way: redb reads every
/// page of it before the file opens, which takes a while for a large one.
pub(crate) fn repair_progress(path: &Path) -> impl Fn(&mut redb::RepairSession) + 'static {
    let file = path.display().to_string();
    let logged = std::cell::Cell::new(None::<u32>);
    move |session| {
        let tenth = (session.progress() * 10.0).floor() as u32;
        if logged.get() != Some(tenth) {
            logged.set(Some(tenth));
            tracing::warn!(
                file = %file,
                percent_done = tenth * 10,
                "Checking a database file that was not closed cleanly"
            );
        }
    }
}

impl Db {
    /// Opens (or creates) the database at `path` with a page cache of
    /// [`CACHE_BYTES`].
    pub fn open(path: &Path) -> Result<Self, DbError> {
        Self::with_cache(path, CACHE_BYTES)
    }

    /// Opens (or creates) the database at `path` with a page cache of
    /// `cache_bytes`.
    pub fn with_cache(path: &Path, cache_bytes: usize) -> Result<Self, DbError> {
        let database = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .set_repair_callback(repair_progress(path))
            .create(path)
            .map_err(|e| DbError::Open(format!("{}: {e}", path.display())))?;
        let database = Arc::new(database);
        let (sender, receiver) = mpsc::channel::<Request>();
        let writer_db = database.clone();
        let idle = IdleSlot::default();
        let writer_idle = idle.clone();
        let writer = std::thread::Builder::new()
            // Named after its file, so per-thread profiles tell them apart.
            .name(format!(
                "db-{}",
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ))
            .spawn(move || write_loop(&writer_db, &receiver, &writer_idle))
            .map_err(|e| DbError::Open(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                database,
                sender: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
                idle,
            }),
        })
    }

    /// Runs `f` in a transaction of its own, outside the group commit; for
    /// start-up work such as creating tables.
    pub fn write_now<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let txn = self.inner.database.begin_write()?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }

    /// Sets what the writer does once it has had nothing to write for a
    /// second: `work` is asked for a job each time, and the writer waits
    /// on when it has none. `work` must not hold this `Db` (the writer
    /// would then never stop).
    pub(crate) fn when_idle(&self, work: IdleWork) {
        *self
            .inner
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(work);
    }

    pub fn read(&self) -> Result<ReadTransaction, DbError> {
        Ok(self.inner.database.begin_read()?)
    }

    /// Queues `job` for the next group commit; its completer gets the
    /// commit's outcome.
    pub(crate) fn submit(&self, durable: bool, job: Job) -> Result<(), DbError> {
        let sender = self.inner.sender.lock().map_err(|_| DbError::Closed)?;
        let sender = sender.as_ref().ok_or(DbError::Closed)?;
        sender
            .send(Request { job, durable })
            .map_err(|_| DbError::Closed)
    }

    /// Applies `f` in the next group commit and returns its result once the
    /// commit is done. With `durable`, the commit is fsynced before returning;
    /// without, it becomes durable with the next durable commit.
    pub async fn write<T, F>(&self, durable: bool, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, DbError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let result = f(txn);
            Box::new(move |commit: Result<(), DbError>| {
                let _ = tx.send(commit.and(result));
            })
        });
        self.submit(durable, job)?;
        rx.await.map_err(|_| DbError::Closed)?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        if let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = writer.join();
        }
    }
}

fn write_loop(database: &Database, receiver: &mpsc::Receiver<Request>, idle: &IdleSlot) {
    while let Some(first) = next_request(receiver, idle) {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|r| r.durable);
        let mut completers = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), DbError> {
            let mut txn = database.begin_write()?;
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })?;
            for request in batch {
                completers.push((request.job)(&txn));
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "Database commit failed; the writes of this batch are lost and reported as errors");
        }
        for completer in completers {
            completer(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTableMetadata, TableDefinition};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static IDLE_RUNS: AtomicUsize = AtomicUsize::new(0);

    fn idle() {
        IDLE_RUNS.fetch_add(1, Ordering::SeqCst);
    }

    /// A writer with nothing to write runs the idle hook, once, then goes
    /// on writing.
    #[tokio::test]
    async fn an_idle_writer_runs_the_idle_hook_once() {
        const T: TableDefinition<u64, u64> = TableDefinition::new("t");
        on_writer_idle(idle);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.redb")).expect("open");
        let before = IDLE_RUNS.load(Ordering::SeqCst);
        db.write(true, |txn| {
            txn.open_table(T)?.insert(1, 1)?;
            Ok(())
        })
        .await
        .expect("write");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while IDLE_RUNS.load(Ordering::SeqCst) == before {
            assert!(std::time::Instant::now() < deadline, "the hook never ran");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        db.write(true, |txn| {
            txn.open_table(T)?.insert(2, 2)?;
            Ok(())
        })
        .await
        .expect("a write after the idle hook");
        let txn = db.read().expect("read");
        assert_eq!(txn.open_table(T).expect("table").len().expect("len"), 2);
    }
}
