use std::process::ExitCode;

use clap::Parser;
use figment::providers::Serialized;
use figment::Figment;
use mdc::cli::{self, Cli, Command};
use mdc::Config;
use tokio_util::sync::CancellationToken;

/// jemalloc instead of glibc's allocator: under load, glibc's malloc and
/// free took about a tenth of the server's CPU; with jemalloc the server
/// uses about 18 % less CPU per message (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Hands the calling thread's jemalloc cache of freed blocks back to the
/// shared arenas, whose unused pages the background thread then returns to
/// the system ([`mdc::idle`]). Turning a thread's cache off flushes and
/// drops it; turned on again, it starts empty.
fn release_thread_cache() {
    use tikv_jemalloc_ctl::{Access, AsName};
    let enabled = b"thread.tcache.enabled\0".name();
    // A cache turned off (`_RJEM_MALLOC_CONF=tcache:false`, the prefixed
    // name this build's jemalloc reads) stays off.
    if enabled.read() == Ok(true) && enabled.write(false).is_ok() {
        let _ = enabled.write(true);
    }
}

/// Whether logs are coloured: only on a terminal, and not there either
/// with `NO_COLOR` set and not empty (https://no-color.org). A log file or a
/// journal gets plain text that grep and log pipelines read as it is.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    // Freed memory goes back to the system after jemalloc's decay time
    // (10 s) also while the server idles, not only on its next allocations.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    mdc::idle::set_release(release_thread_cache);
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,actix_server=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    match &cli.command {
        Command::Serve(args) if args.log_format == cli::LogFormat::Json => {
            logs.json().flatten_event(true).init()
        }
        _ => logs.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(mdc::idle::release_now_and_then)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let mut overrides = Figment::new();
            if let Some(listen) = &args.listen {
                overrides = overrides.merge(Serialized::default("listen", listen));
            }
            if let Some(dir) = &args.data_dir {
                overrides = overrides.merge(Serialized::default("data_dir", dir));
            }
            let config = Config::load(args.config.as_deref(), overrides)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signals(shutdown.clone()));
            mdc::run(config, mdc::Roles::of(&args.roles), shutdown).await
        }
        Command::Topics {
            action: cli::TopicsCommand::Create { config },
        } => {
            let config = Config::load(config.as_deref(), Figment::new())?;
            cli::create_topics(&config).await
        }
        Command::Send { message, server } => cli::send(&message, &server).await,
        Command::Simulate {
            vendor: cli::SimulateCommand::Kaleyra(args),
        } => simulate_kaleyra(args).await,
        Command::Status { id, server } => cli::status(&id, &server).await,
        Command::Webhooks { action, server } => cli::webhooks(&action, &server).await,
        Command::Keys {
            action,
            server,
            direct,
        } => {
            if !direct.direct {
                return cli::keys(&action, &server).await;
            }
            let mut overrides = Figment::new();
            if let Some(dir) = &direct.data_dir {
                overrides = overrides.merge(Serialized::default("data_dir", dir));
            }
            let config = Config::load(direct.config.as_deref(), overrides)?;
            let keys = mdc::backends::connect_keys(
                &config.backends,
                &config.data_dir,
                config.retention.records,
            )
            .await?;
            cli::keys_direct(&action, keys).await
        }
        Command::Compact { config, data_dir } => {
            let mut overrides = Figment::new();
            if let Some(dir) = &data_dir {
                overrides = overrides.merge(Serialized::default("data_dir", dir));
            }
            let config = Config::load(config.as_deref(), overrides)?;
            cli::compact(&config)
        }
    }
}

async fn simulate_kaleyra(args: cli::KaleyraSimArgs) -> anyhow::Result<()> {
    use mdc_simulators::kaleyra::{self as simulator, Faults, OutcomeMix, SimulatorSettings};
    let settings = SimulatorSettings {
        api_key: args.api_key,
        callback_delay: args.callback_delay,
        outcomes: OutcomeMix {
            delivered: args.delivered,
            failed: args.failed,
            undelivered: args.undelivered,
        },
        faults: Faults {
            latency: args.latency,
            error_percent: args.error_percent,
            throttle_percent: args.throttle_percent,
            drop_percent: args.drop_percent,
        },
        callbacks: !args.no_callbacks,
    };
    let (server, bound) = simulator::start(settings, args.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %bound, "Kaleyra simulator is serving");
    let handle = server.handle();
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let running = tokio::spawn(server);
    shutdown.cancelled().await;
    handle.stop(true).await;
    let _ = running.await;
    Ok(())
}

/// SIGTERM or Ctrl-C starts a graceful shutdown.
async fn signals(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikv_jemalloc_ctl::{Access, AsName};

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "NO_COLOR empty is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None), "a file or a journal: plain text");
        assert!(!colour(false, Some("1".into())));
    }

    fn cache_enabled() -> bool {
        b"thread.tcache.enabled\0"
            .name()
            .read()
            .expect("jemalloc answers")
    }

    /// The release turns a thread's cache off and on again; a cache the
    /// operator turned off stays off.
    #[test]
    fn the_release_leaves_a_thread_cache_as_it_found_it() {
        std::thread::spawn(|| {
            // On, unless the test runs with the caches turned off.
            let before = cache_enabled();
            release_thread_cache();
            assert_eq!(cache_enabled(), before);
            b"thread.tcache.enabled\0"
                .name()
                .write(false)
                .expect("jemalloc answers");
            release_thread_cache();
            assert!(!cache_enabled(), "a cache turned off was turned on");
        })
        .join()
        .expect("thread");
    }
}
