//! The `mdc` binary's library: configuration, the HTTP API, the command-line
//! client, and [`run`], which wires every role together.

pub mod accept;
pub mod api;
pub mod auth;
pub mod backends;
pub mod cli;
pub mod config;
mod devices_api;
pub mod idle;
pub(crate) mod keys_api;
mod messages_api;
pub mod openapi;
pub(crate) mod parked_api;
mod reports_api;
mod simulator_api;
mod submit_api;
mod suppressions_api;
mod webhooks_api;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::accept::Submitter;
use anyhow::Context;
use mdc_core::ports::{Provider, ReportSink};
use mdc_core::supervise::{supervise, TaskHealth};
use mdc_core::Channel;
use mdc_dispatcher::fleet::FleetShare;
use mdc_dispatcher::routing::Router;
use mdc_dispatcher::Dispatcher;
use mdc_handlers::{Feedback, Reconciler, ResponseHandler, Retention, RetryHandler};
use mdc_providers::config::Adapters;
use mdc_response_listener::kaleyra::KaleyraIntake;
use mdc_response_listener::ses_sqs::SesSqsIntake;
use mdc_response_listener::sns::verify::Verifier;
use mdc_response_listener::sns::SnsHttpIntake;
use mdc_response_listener::sns_sms_logs::SnsSmsLogsIntake;
use mdc_response_listener::{Intake, QueueReportSink};
use mdc_simulators::{Ledger, Simulator};
use tokio::task::JoinSet;
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
/// simulated vendors. Each role is built by its own function below; the
/// embedded files and the simulators' ledger are opened only when the
/// config uses them.
pub async fn run(config: Config, roles: Roles, shutdown: CancellationToken) -> anyhow::Result<()> {
    if roles != Roles::ALL {
        config
            .backends
            .shared()
            .map_err(|e| anyhow::anyhow!("--roles {}: {e}", roles.names().join(",")))?;
    }
    // Accepting an SMS needs the phone-number metadata: it loads while the
    // backends open, and requests are taken once it has.
    let metadata = roles
        .ingest
        .then(|| tokio::task::spawn_blocking(mdc_client::validate::load_phone_metadata));
    let ports = backends::connect(
        &config.backends,
        &config.data_dir,
        config.queue_layout(),
        config.retention.records,
    )
    .await?;
    let workers = CancellationToken::new();
    let health = Arc::new(TaskHealth::default());
    let mut vendors = Vendors::build(&config, &ports, workers.clone()).await?;

    let intakes = build_intakes(&config, &ports, &vendors).await?;
    let feedback = Arc::new(Feedback::new(
        ports.queue.clone(),
        ports.webhooks.clone(),
        ports.webhook_retry.clone(),
        config.webhooks.clone(),
    ));
    let mut tasks = JoinSet::new();
    // The simulated vendors' ledger is kept as long as message records, and
    // at least as long as a message can still be sent or verified with it.
    if let (Some(ledger), Some(records)) = (&vendors.ledger, config.retention.records) {
        let day = std::time::Duration::from_secs(24 * 3600);
        let keep = records.max(mdc_client::LONGEST_DEADLINE + day);
        let (ledger, token) = (ledger.clone(), workers.clone());
        let (interval, batch) = (config.retention.interval, config.retention.batch.min(1000));
        tasks.spawn(async move {
            ledger.keep_for(keep, interval, batch, token).await;
            Ok(())
        });
    }
    if roles.listener {
        // Intakes that poll a vendor (SES events on SQS) run until shutdown.
        for intake in intakes.iter().filter(|i| i.polls()) {
            tasks.spawn(intake.clone().run(workers.clone()));
        }
    }
    if roles.dispatcher {
        spawn_dispatcher(
            &config,
            &ports,
            vendors.routes.clone(),
            &health,
            &workers,
            &mut tasks,
        );
    } else {
        // A process that sends nothing shows no breaker or rate on /metrics.
        vendors.routes.clear();
    }
    if roles.handlers {
        // Outcomes that no endpoint wants are not written where webhook
        // delivery is their only reader (the embedded queue).
        ports.queue.set_webhook_interest(feedback.interest());
        let pullable = vendors
            .adapters
            .by_name
            .iter()
            .map(|(name, provider)| (name.clone(), provider.clone()))
            .collect();
        spawn_handlers(&config, &ports, pullable, &health, &workers, &mut tasks);
        let (token, health_of, feedback) = (workers.clone(), health.clone(), feedback.clone());
        tasks.spawn(async move {
            supervise("webhook delivery", &health_of, || {
                let (feedback, token) = (feedback.clone(), token.clone());
                async move {
                    if let Err(e) = feedback.run(token).await {
                        tracing::error!(error = %e, "Webhook delivery stopped");
                    }
                }
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
    let auth = Arc::new(if roles.ingest {
        auth::Auth::new(
            ports.keys.clone(),
            config.auth,
            config.listen,
            &config.services,
        )
        .await?
    } else {
        // Only vendor callbacks and probes: nothing that needs a key.
        auth::Auth::new(
            ports.keys.clone(),
            config::AuthMode::None,
            config.listen,
            &config.services,
        )
        .await?
    });
    if let Some(metadata) = metadata {
        // A load that panicked would panic again at the first number.
        let _ = metadata.await;
    }
    let server = api::server(
        http_state(&config, &ports, vendors, intakes, &health, feedback, auth),
        config.listen,
        roles,
    )
    .with_context(|| format!("listening on {}", config.listen))?;
    let handle = server.handle();
    let http = tokio::spawn(server);
    if let Some(metrics) = metrics_handle() {
        // Folds recorded histogram samples even when nobody scrapes.
        let stop = workers.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            while stop.run_until_cancelled(tick.tick()).await.is_some() {
                metrics.run_upkeep();
            }
        });
    }
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

type Workers = JoinSet<anyhow::Result<()>>;

/// The vendors this process sends through or hears from: the configured
/// adapters, the simulators when a route uses them, and one router per
/// channel.
pub struct Vendors {
    pub routes: HashMap<Channel, Arc<Router>>,
    pub adapters: Adapters,
    /// The simulators' ledger, when simulators are in use.
    pub ledger: Option<Arc<Ledger>>,
}

impl Vendors {
    pub async fn build(
        config: &Config,
        ports: &backends::Connected,
        workers: CancellationToken,
    ) -> anyhow::Result<Self> {
        let adapters = mdc_providers::config::build(
            &config.providers,
            config.dispatcher.send_timeout,
            ports.devices.clone(),
        )
        .await
        .context("invalid config")?;
        let (ledger, simulators) = if config.uses_simulators() {
            let ledger =
                Arc::new(Ledger::open(&config.data_dir).context("opening the simulator ledger")?);
            let reports: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(ports.queue.clone()));
            let simulators =
                Simulator::all(ledger.clone(), reports, config.simulator.clone(), workers);
            let owed = ledger.owed().context("reading the simulator ledger")?;
            for simulator in &simulators {
                let owed = simulator.resume(&owed);
                if owed > 0 {
                    tracing::info!(
                        provider = simulator.name(),
                        owed,
                        "Resuming delivery reports owed from before a restart"
                    );
                }
            }
            let simulators: Vec<Arc<dyn Provider>> = simulators
                .into_iter()
                .map(|s| s as Arc<dyn Provider>)
                .collect();
            (Some(ledger), simulators)
        } else {
            (None, Vec::new())
        };
        let routes = mdc_dispatcher::routing::config::build(
            &config.routes,
            &config.breaker,
            &adapters.by_name,
            &simulators,
            config.dispatcher.send_timeout,
        )
        .context("invalid config")?;
        for channel in Channel::ALL {
            match routes.get(channel) {
                Some(router) => {
                    let names: Vec<&str> =
                        router.members().iter().map(|m| m.provider.name()).collect();
                    tracing::info!(%channel, providers = ?names, "Route");
                }
                None => tracing::warn!(%channel, "No route: messages on this channel fail"),
            }
        }
        Ok(Self {
            routes,
            adapters,
            ledger,
        })
    }
}

/// The dispatcher role: lane consumers sending through `routes`.
fn spawn_dispatcher(
    config: &Config,
    ports: &backends::Connected,
    routes: HashMap<Channel, Arc<Router>>,
    health: &Arc<TaskHealth>,
    workers: &CancellationToken,
    tasks: &mut Workers,
) {
    let routes_shared: Vec<Arc<Router>> = routes.values().cloned().collect();
    let counted_on_redis = matches!(config.backends.retry, backends::RetryBackend::Redis { .. })
        || matches!(config.backends.cache, backends::CacheBackend::Redis { .. });
    if !counted_on_redis && matches!(config.backends.queue, backends::QueueBackend::Kafka(_)) {
        tracing::info!(
            "No Redis to count the dispatchers on: this process takes each route's whole rate limit (run one dispatcher process, or configure Redis)"
        );
    }
    let dispatcher = Dispatcher::new(
        ports.queue.clone(),
        ports.store.clone(),
        ports.retry.clone(),
        routes,
        ports.cache.clone(),
        config.dispatcher.clone(),
    )
    .with_health(health.clone())
    .with_suppressions(ports.suppressions.clone());
    let mut share = FleetShare::new(ports.fleet.clone(), routes_shared);
    let token = workers.clone();
    tasks.spawn(async move {
        // Counted before the first send (when the count answers), so it
        // does not start with the whole of a rate it shares.
        share.beat().await;
        let stop_sharing = CancellationToken::new();
        let sharing = tokio::spawn(share.run(stop_sharing.clone()));
        let sharing = tokio::spawn(async move {
            if let Err(e) = sharing.await {
                tracing::error!(error = %e, "The count of dispatchers stopped; the last share stands");
            }
        });
        let dispatched = Arc::new(dispatcher).run(token).await;
        // Counted until its sends have drained.
        stop_sharing.cancel();
        let _ = sharing.await;
        dispatched
    });
}

/// The handlers role: vendor reports, due retries, the reconciler and
/// retention.
fn spawn_handlers(
    config: &Config,
    ports: &backends::Connected,
    providers: HashMap<String, Arc<dyn Provider>>,
    health: &Arc<TaskHealth>,
    workers: &CancellationToken,
    tasks: &mut Workers,
) {
    let responses = ResponseHandler::new(
        ports.queue.clone(),
        ports.store.clone(),
        ports.cache.clone(),
    )
    .with_health(health.clone())
    .with_suppressions(ports.suppressions.clone());
    tasks.spawn(Arc::new(responses).run(config.responses.consumers, workers.clone()));
    // Their state lives in the backends: a panicked pass or firing is simply
    // started again.
    let sink: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(ports.queue.clone()));
    let reconciler = Arc::new(
        Reconciler::new(
            ports.store.clone(),
            ports.retry.clone(),
            ports.queue.clone(),
            config.reconciler.clone(),
        )
        .with_pull(providers, sink),
    );
    let (token, health_of) = (workers.clone(), health.clone());
    tasks.spawn(async move {
        supervise("reconciler", &health_of, || {
            reconciler.clone().run(token.clone())
        })
        .await;
        Ok(())
    });
    let retries = Arc::new(RetryHandler::new(
        ports.retry.clone(),
        ports.store.clone(),
        ports.queue.clone(),
    ));
    let (token, health_of) = (workers.clone(), health.clone());
    tasks.spawn(async move {
        supervise("retry handler", &health_of, || {
            retries.clone().run(token.clone())
        })
        .await;
        Ok(())
    });
    let retention = Arc::new(Retention::new(
        ports.store.clone(),
        config.retention.clone(),
    ));
    let (token, health_of) = (workers.clone(), health.clone());
    tasks.spawn(async move {
        supervise("retention", &health_of, || {
            retention.clone().run(token.clone())
        })
        .await;
        Ok(())
    });
}

/// Every vendor intake the config asks for: Kaleyra callbacks, the SQS
/// queue of each SES provider with `events_queue_url`, the delivery-status
/// logs of each SNS SMS provider with `delivery_status_log_group`, and the
/// HTTPS endpoint of providers with `events_topic_arns`.
async fn build_intakes(
    config: &Config,
    ports: &backends::Connected,
    vendors: &Vendors,
) -> anyhow::Result<Vec<Arc<dyn Intake>>> {
    let sink: Arc<dyn ReportSink> = Arc::new(QueueReportSink::new(ports.queue.clone()));
    let mut intakes: Vec<Arc<dyn Intake>> = vec![Arc::new(KaleyraIntake::new(
        vendors.adapters.kaleyra_tokens.clone(),
        sink.clone(),
    ))];
    let mut topics = HashMap::new();
    for (name, provider) in &config.providers {
        if let Some(aws) = provider.aws() {
            if !aws.events_topic_arns.is_empty() {
                topics.insert(
                    name.clone(),
                    aws.events_topic_arns
                        .iter()
                        .cloned()
                        .collect::<HashSet<_>>(),
                );
            }
        }
        if let mdc_providers::config::ProviderConfig::SnsSms(sns) = provider {
            if let Some(group) = &sns.delivery_status_log_group {
                let sdk = sns.aws.sdk_config(name).await.context("invalid config")?;
                intakes.push(Arc::new(SnsSmsLogsIntake::new(
                    name,
                    group,
                    &sdk,
                    sink.clone(),
                    ports.checkpoints.clone(),
                    sns.delivery_status_interval,
                )));
            }
        }
        if let mdc_providers::config::ProviderConfig::Ses(ses) = provider {
            if let Some(url) = &ses.events_queue_url {
                let sdk = ses.aws.sdk_config(name).await.context("invalid config")?;
                intakes.push(Arc::new(SesSqsIntake::new(
                    name,
                    url,
                    &sdk,
                    sink.clone(),
                    2,
                    std::time::Duration::from_secs(20),
                )));
            }
        }
    }
    if !topics.is_empty() {
        if config.callbacks.insecure_sns_loopback_urls {
            tracing::warn!("callbacks.insecure_sns_loopback_urls is set: SNS messages signed by anyone serving a certificate on loopback are trusted. Tests only.");
        }
        intakes.push(Arc::new(SnsHttpIntake::new(
            topics,
            Verifier::new().allowing_loopback(config.callbacks.insecure_sns_loopback_urls),
            sink.clone(),
            ports.devices.clone(),
            ports.suppressions.clone(),
        )));
    }
    Ok(intakes)
}

/// The process's Prometheus recorder, installed on first use (one per
/// process: tests that run MDC in-process share it).
fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(PrometheusBuilder::install_recorder);
            match builder {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "Metrics are not recorded");
                    None
                }
            }
        })
        .clone()
}

/// What the HTTP roles (ingest, listener) serve from.
fn http_state(
    config: &Config,
    ports: &backends::Connected,
    vendors: Vendors,
    intakes: Vec<Arc<dyn Intake>>,
    health: &Arc<TaskHealth>,
    feedback: Arc<Feedback>,
    auth: Arc<auth::Auth>,
) -> api::State {
    let routes = vendors.routes.clone();
    api::State {
        submitter: Submitter::new(
            ports.store.clone(),
            ports.queue.clone(),
            config.client.clone(),
        )
        .with_suppressions(ports.suppressions.clone()),
        suppressions: ports.suppressions.clone(),
        store: ports.store.clone(),
        queue: ports.queue.clone(),
        ledger: vendors.ledger,
        intakes,
        devices: ports.devices.clone(),
        push_endpoints: vendors.adapters.push_endpoints,
        max_body_bytes: config.max_body_bytes,
        health: health.clone(),
        webhooks: ports.webhooks.clone(),
        feedback,
        auth,
        retry: ports.retry.clone(),
        cache: ports.cache.clone(),
        routes,
        metrics: metrics_handle(),
    }
}
