//! The `mdc` binary's library: configuration, the HTTP API, the command-line
//! client, and [`run`], which wires every role together.

pub mod api;
pub mod backends;
pub mod cli;
pub mod config;

use std::sync::Arc;

use anyhow::Context;
use mdc_client::Submitter;
use mdc_core::ports::{Provider, Queue, ReportSink};
use mdc_core::supervise::{supervise, TaskHealth};
use mdc_core::Channel;
use mdc_dispatcher::Dispatcher;
use mdc_embedded::Embedded;
use mdc_handlers::{Reconciler, ResponseHandler, RetryHandler};
use mdc_providers::{Ledger, Simulator};
use mdc_response_listener::kaleyra::KaleyraIntake;
use mdc_response_listener::QueueReportSink;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The parts of MDC one process runs. Production runs them as separate
/// processes on shared backends (Kafka, MongoDB, Redis) and scales each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API for services and support staff: submit, status, lists,
    /// devices.
    Ingest,
    /// Consumes the priority topics and sends through the providers.
    Dispatcher,
    /// Vendor callback endpoints, feeding the responses topic.
    Listener,
    /// Applies vendor responses and fires retries when they are due.
    Handlers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub ingest: bool,
    pub dispatcher: bool,
    pub listener: bool,
    pub handlers: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        ingest: true,
        dispatcher: true,
        listener: true,
        handlers: true,
    };

    /// The named roles; none named means all.
    pub fn of(roles: &[Role]) -> Roles {
        if roles.is_empty() {
            return Roles::ALL;
        }
        Roles {
            ingest: roles.contains(&Role::Ingest),
            dispatcher: roles.contains(&Role::Dispatcher),
            listener: roles.contains(&Role::Listener),
            handlers: roles.contains(&Role::Handlers),
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.ingest, "ingest"),
            (self.dispatcher, "dispatcher"),
            (self.listener, "listener"),
            (self.handlers, "handlers"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Runs the chosen roles in this process until `shutdown` is cancelled; then
/// stops taking requests, lets the workers drain, and returns. With the
/// default config that is every role on the embedded backends and
/// simulated vendors.
pub async fn run(config: Config, roles: Roles, shutdown: CancellationToken) -> anyhow::Result<()> {
    if roles != Roles::ALL {
        config
            .backends
            .shared()
            .map_err(|e| anyhow::anyhow!("--roles {}: {e}", roles.names().join(",")))?;
    }
    let embedded = Embedded::open(&config.data_dir, config.queue_layout())
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let queue: Arc<dyn Queue> =
        backends::connect_queue(&config.backends.queue, config.queue_layout(), &embedded).await?;
    let backends::Connected {
        cache,
        store,
        devices,
        retry,
    } = backends::connect(&config.backends, &embedded).await?;

    let workers = CancellationToken::new();
    let ledger = Arc::new(Ledger::open(&config.data_dir).context("opening the simulator ledger")?);
    let reports: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(queue.clone()));
    let simulators = Simulator::all(
        ledger.clone(),
        reports.clone(),
        config.simulator.clone(),
        workers.clone(),
    );
    for simulator in &simulators {
        let owed = simulator
            .resume()
            .await
            .context("resuming simulator reports")?;
        if owed > 0 {
            tracing::info!(
                provider = simulator.name(),
                owed,
                "Resuming delivery reports owed from before a restart"
            );
        }
    }
    let built = mdc_providers::config::build(
        &config.providers,
        &config.routes,
        &config.breaker,
        &simulators,
        config.dispatcher.send_timeout,
        devices.clone(),
    )
    .await
    .context("invalid config")?;
    for channel in Channel::ALL {
        match built.routes.get(channel) {
            Some(router) => {
                let names: Vec<&str> = router.members().iter().map(|m| m.provider.name()).collect();
                tracing::info!(%channel, providers = ?names, "Route");
            }
            None => tracing::warn!(%channel, "No route: messages on this channel fail"),
        }
    }
    let kaleyra = Arc::new(KaleyraIntake {
        tokens: built.kaleyra_tokens,
        sink: reports,
    });

    let health = Arc::new(TaskHealth::default());
    let dispatcher = Arc::new(
        Dispatcher::new(
            queue.clone(),
            store.clone(),
            retry.clone(),
            built.routes,
            cache.clone(),
            config.dispatcher.clone(),
        )
        .with_health(health.clone()),
    );
    let responses = Arc::new(
        ResponseHandler::new(queue.clone(), store.clone(), cache).with_health(health.clone()),
    );
    let reconciler = Arc::new(Reconciler::new(
        store.clone(),
        retry.clone(),
        queue.clone(),
        config.reconciler.clone(),
    ));
    let retries = Arc::new(RetryHandler::new(retry, store.clone(), queue.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    if roles.dispatcher {
        tasks.spawn(dispatcher.run(workers.clone()));
    }
    if roles.handlers {
        // Their state lives in the backends: a panicked pass or firing is
        // simply started again.
        let (token, health_of) = (workers.clone(), health.clone());
        tasks.spawn(async move {
            supervise("reconciler", &health_of, || {
                reconciler.clone().run(token.clone())
            })
            .await;
            Ok(())
        });
        tasks.spawn(responses.run(config.responses.consumers, workers.clone()));
        let (token, health_of) = (workers.clone(), health.clone());
        tasks.spawn(async move {
            supervise("retry handler", &health_of, || {
                retries.clone().run(token.clone())
            })
            .await;
            Ok(())
        });
    }
    if tasks.is_empty() {
        // Nothing but HTTP: park a task so the loop below waits for shutdown.
        let parked = workers.clone();
        tasks.spawn(async move {
            parked.cancelled().await;
            Ok(())
        });
    }

    let state = api::State {
        submitter: Submitter::new(store.clone(), queue, config.client.clone()),
        store,
        ledger,
        kaleyra,
        devices,
        push_endpoints: built.push_endpoints,
        max_body_bytes: config.max_body_bytes,
        health: health.clone(),
    };
    let server = api::server(state, config.listen, roles)
        .with_context(|| format!("listening on {}", config.listen))?;
    let handle = server.handle();
    let http = tokio::spawn(server);
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), roles = ?roles.names(), "MDC is serving");

    // A worker that ends before the shutdown leaves work undone: stop the
    // process with an error, so a supervisor restarts it and it is seen.
    let mut stopped = None;
    tokio::select! {
        _ = shutdown.cancelled() => tracing::info!("Shutting down: no new requests; draining in-flight work"),
        result = tasks.join_next() => {
            tracing::error!(?result, "A worker stopped unexpectedly; shutting down");
            stopped = Some(match result {
                Some(Ok(Err(e))) => format!("{e:#}"),
                Some(Err(e)) => e.to_string(),
                _ => "it returned".to_owned(),
            });
        }
    }
    handle.stop(true).await;
    let _ = http.await;
    workers.cancel();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "Worker failed"),
            Err(e) => tracing::error!(error = %e, "Worker panicked"),
        }
    }
    if let Some(why) = stopped {
        anyhow::bail!("a worker stopped unexpectedly: {why}");
    }
    tracing::info!("MDC stopped cleanly");
    Ok(())
}
