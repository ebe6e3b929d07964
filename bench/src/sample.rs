//! Memory, disk and CPU of a spawned server: its resident set (from /proc)
//! every half second, the size of its data directory, and CPU-seconds of a
//! process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Sampler {
    pid: u32,
    dir: PathBuf,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Report {
    pub rss: u64,
    pub peak_rss: u64,
    /// MDC's own files: store, queue and the rest.
    pub disk: u64,
    /// The simulated vendors' ledger: what a vendor keeps on its side,
    /// present only because the vendors are simulated in the same process.
    pub vendors: u64,
}

/// Resident set size in bytes (0 when the process is gone or /proc absent).
pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU-seconds (user and system) a process (a pid, or "self") has used,
/// from /proc (0 when it is gone). Linux counts them in USER_HZ ticks,
/// 100 a second on every architecture it runs on.
pub fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(Vec::new(), |(_, rest)| rest.split(' ').collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 11 and 12 after "(comm) ".
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes of `path`, a file or everything under a directory (allocated
/// size: what the disk holds).
pub fn disk(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(path) else {
        return std::fs::metadata(path).map_or(0, |m| m.blocks() * 512);
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => disk(&entry.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

impl Sampler {
    pub fn start(pid: u32, dir: PathBuf) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let peak = peak.clone();
            async move {
                loop {
                    peak.fetch_max(rss(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        Self {
            pid,
            dir,
            peak,
            task,
        }
    }

    /// The server's CPU-seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid.to_string())
    }

    pub fn rss_now(&self) -> u64 {
        rss(self.pid)
    }

    pub fn report(&self) -> Report {
        let now = rss(self.pid);
        let vendors = disk(&self.dir.join(mdc_simulators::LEDGER_FILE));
        Report {
            rss: now,
            peak_rss: self.peak.load(Ordering::Relaxed).max(now),
            disk: disk(&self.dir).saturating_sub(vendors),
            vendors,
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
