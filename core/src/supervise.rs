//! Long-running tasks that must not stall silently: a task that panics is
//! logged, counted and started again; the count is shown by `/healthz`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Pause before a panicked task starts again, so a task that panics at
/// once does not spin.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Restarts of this process's supervised tasks.
#[derive(Debug, Default)]
pub struct TaskHealth {
    restarts: AtomicU64,
    last: Mutex<Option<String>>,
    parked_reports: AtomicU64,
    mismatched_reports: AtomicU64,
    /// Tasks that panicked and are not running again yet.
    down: Mutex<std::collections::BTreeSet<String>>,
}

impl TaskHealth {
    pub fn restarted(&self, task: &str, why: &str) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(format!("{task}: {why}"));
    }

    /// How many times a task panicked and was started again.
    /// The tasks not running now (between a panic and their restart).
    pub fn down(&self) -> Vec<String> {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn mark(&self, task: &str, running: bool) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if running {
            down.remove(task);
        } else {
            down.insert(task.to_owned());
        }
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Counts a vendor report parked because it could not be applied.
    pub fn report_parked(&self) {
        self.parked_reports.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a vendor report that named a message not sent through its
    /// provider under its id.
    pub fn report_mismatched(&self) {
        self.mismatched_reports.fetch_add(1, Ordering::Relaxed);
    }

    pub fn mismatched_reports(&self) -> u64 {
        self.mismatched_reports.load(Ordering::Relaxed)
    }

    /// Vendor reports this process parked since it started.
    pub fn parked_reports(&self) -> u64 {
        self.parked_reports.load(Ordering::Relaxed)
    }

    /// The task and panic of the latest restart.
    pub fn last(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs the task `start` makes until it returns, making and running a new
/// one each time it panics. Only tasks whose work survives a restart (queue
/// records not acknowledged, timers kept in a backend) belong here.
pub async fn supervise<F, Fut>(task: &str, health: &TaskHealth, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let running = tokio::spawn(start());
        health.mark(task, true);
        match running.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let why = panic_text(e.into_panic());
                tracing::error!(task, panic = %why, "A task panicked; starting it again");
                health.restarted(task, &why);
                health.mark(task, false);
                tokio::time::sleep(RESTART_PAUSE).await;
            }
            Err(e) => {
                tracing::error!(task, error = %e, "A task was cancelled");
                return;
            }
        }
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_counted_and_started_again() {
        let health = TaskHealth::default();
        let runs = Arc::new(AtomicU32::new(0));
        supervise("test", &health, || {
            let runs = runs.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(health.restarts(), 2);
        assert_eq!(health.last().as_deref(), Some("test: boom"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_is_down_between_its_panic_and_its_restart() {
        let health = Arc::new(TaskHealth::default());
        let runs = Arc::new(AtomicU32::new(0));
        let supervisor = {
            let (health, runs) = (health.clone(), runs.clone());
            tokio::spawn(async move {
                supervise("lane critical", &health, || {
                    let runs = runs.clone();
                    async move {
                        if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                            panic!("boom");
                        }
                        std::future::pending::<()>().await;
                    }
                })
                .await;
            })
        };
        tokio::time::sleep(RESTART_PAUSE / 2).await;
        assert_eq!(health.down(), vec!["lane critical".to_owned()]);
        tokio::time::sleep(RESTART_PAUSE).await;
        assert!(health.down().is_empty(), "running again");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        supervisor.abort();
    }
}
