//! `mdc compact`: gives the embedded data directory's files back the space
//! retention freed in them, while no server has them open.

use anyhow::bail;

/// The files of an embedded data directory, in the order compacted.
const FILES: [&str; 2] = [mdc_embedded::STORE_FILE, mdc_simulators::LEDGER_FILE];

/// `bytes` in B, KB, MB or GB (powers of ten), one decimal.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} KB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

/// Whether `config` keeps anything in its data directory: an embedded
/// backend, or a route through a simulator (its ledger).
fn keeps_files(config: &crate::Config) -> bool {
    use crate::backends::{QueueBackend, RetryBackend, StoreBackend};
    let backends = &config.backends;
    matches!(backends.queue, QueueBackend::Embedded)
        || matches!(backends.store, StoreBackend::Embedded)
        || matches!(backends.retry, RetryBackend::Embedded)
        || config.uses_simulators()
}

/// Compacts each data file found in `config`'s data directory, printing
/// its size before and after. The first file that cannot be compacted
/// (one a running server holds, above all) ends the run: the files before
/// it stay compacted, those after it are left as they were.
pub fn compact(config: &crate::Config) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    let present: Vec<_> = FILES
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.is_file())
        .collect();
    if present.is_empty() {
        if !keeps_files(config) {
            println!(
                "nothing to compact: this configuration keeps nothing in {} (no embedded backend, no simulated vendor)",
                dir.display()
            );
            return Ok(());
        }
        bail!(
            "{} holds no MDC data files ({}): check --data-dir or the config's data_dir",
            dir.display(),
            FILES.join(", ")
        );
    }
    for path in present {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!("{name}: compacting {} ...", size(before));
        let compacted = match mdc_embedded::compact_file(&path) {
            Ok(compacted) => compacted,
            Err(e @ mdc_embedded::CompactError::InUse(_)) => {
                bail!("{e}: is mdc serve running on it? Stop it first")
            }
            Err(e) => return Err(e.into()),
        };
        println!(
            "{name}: {} -> {} ({} given back)",
            size(compacted.before),
            size(compacted.after),
            size(compacted.before.saturating_sub(compacted.after))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_in_the_unit_that_fits() {
        assert_eq!(super::size(0), "0 B");
        assert_eq!(super::size(999), "999 B");
        assert_eq!(super::size(1_000), "1.0 KB");
        assert_eq!(super::size(65_536), "65.5 KB");
        assert_eq!(super::size(233_300_000), "233.3 MB");
        assert_eq!(super::size(12_345_000_000), "12.3 GB");
    }
}
