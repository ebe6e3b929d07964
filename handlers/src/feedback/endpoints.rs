//! The webhook endpoints as the feedback handler last read them, and what
//! they tell the publishers of outcome events: which events some endpoint
//! wants ([`OutcomeInterest`]). On the embedded queue, where webhook
//! delivery is the only reader of outcomes, the rest are not written.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mdc_core::outcome::{OutcomeEvent, OutcomeInterest};
use mdc_core::ports::{StoreError, WebhookEndpoint};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a read of the endpoints is used before the next.
const FRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Endpoints {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every change ([`Endpoints::invalidate`]) and by the start
    /// and end of each [`Endpoints::changing`]: a read begun before one is
    /// not kept after it.
    generation: u64,
    /// Changes under way: until they end, every event is wanted.
    changing: usize,
    /// A queue has asked what is wanted ([`Endpoints::want`]): only then is
    /// the view kept fresh ([`Endpoints::keep_fresh`]).
    asked: bool,
    read: Option<(Instant, Arc<Vec<WebhookEndpoint>>)>,
}

/// A change to the endpoints under way ([`Endpoints::changing`]); ends
/// when dropped.
pub struct Changing {
    endpoints: Arc<Endpoints>,
}

impl Drop for Changing {
    fn drop(&mut self) {
        let mut state = self.endpoints.lock();
        state.changing -= 1;
        state.generation += 1;
        state.read = None;
    }
}

impl Endpoints {
    /// The endpoints, read with `load` again when the last read is older
    /// than [`FRESH`] or an endpoint changed since.
    pub(super) async fn get(
        &self,
        load: impl Future<Output = Result<Vec<WebhookEndpoint>, StoreError>>,
    ) -> Result<Arc<Vec<WebhookEndpoint>>, StoreError> {
        {
            let state = self.lock();
            if let Some((at, endpoints)) = &state.read {
                if at.elapsed() < FRESH {
                    return Ok(endpoints.clone());
                }
            }
        }
        self.reload(load).await
    }

    /// Once a queue asks what is wanted, reads the endpoints every half
    /// [`FRESH`] until `shutdown`, so the view it asks stays fresh between
    /// the outcome events that would read it: once it went stale, every
    /// outcome was written (and handled) until the next event read it
    /// again. A queue that never asks (one whose outcomes others may read)
    /// costs no reads. A failed read is tried again at the next turn;
    /// meanwhile the view goes stale and every event is wanted, as before.
    pub(super) async fn keep_fresh<F, L>(&self, load: L, shutdown: CancellationToken)
    where
        L: Fn() -> F,
        F: Future<Output = Result<Vec<WebhookEndpoint>, StoreError>>,
    {
        loop {
            if self.lock().asked {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    read = self.reload(load()) => if let Err(e) = read {
                        tracing::debug!(error = %e, "Could not read the webhook endpoints; trying again shortly");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(FRESH / 2) => {}
            }
        }
    }

    /// Reads the endpoints with `load` and keeps the read, unless a change
    /// came while it was under way.
    async fn reload(
        &self,
        load: impl Future<Output = Result<Vec<WebhookEndpoint>, StoreError>>,
    ) -> Result<Arc<Vec<WebhookEndpoint>>, StoreError> {
        let generation = self.lock().generation;
        let endpoints = Arc::new(load.await?);
        let mut state = self.lock();
        if state.generation == generation {
            state.read = Some((Instant::now(), endpoints.clone()));
        }
        Ok(endpoints)
    }

    /// An endpoint changed: the next event reads them again, and until
    /// then every event is wanted.
    pub(super) fn invalidate(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.read = None;
    }

    /// Begins a change to the endpoints (made by the caller while it holds
    /// the guard): from now until it ends, every event is wanted, and no
    /// read begun meanwhile (which may or may not see the change) is kept.
    pub(super) fn changing(self: &Arc<Self>) -> Changing {
        let mut state = self.lock();
        state.changing += 1;
        state.generation += 1;
        state.read = None;
        Changing {
            endpoints: self.clone(),
        }
    }

    /// False only when the endpoints, read less than [`FRESH`] ago and
    /// unchanged since, include none that wants `event`.
    pub(super) fn want(&self, event: &OutcomeEvent) -> bool {
        self.fresh()
            .is_none_or(|endpoints| endpoints.iter().any(|endpoint| wants(endpoint, event)))
    }

    /// False only when the endpoints, read less than [`FRESH`] ago and
    /// unchanged since, include none enabled: none wants any event.
    pub(super) fn want_any(&self) -> bool {
        self.fresh()
            .is_none_or(|endpoints| endpoints.iter().any(|endpoint| endpoint.disabled.is_none()))
    }

    /// The endpoints as last read, when that read is fresh and no change
    /// came or is under way since.
    fn fresh(&self) -> Option<Arc<Vec<WebhookEndpoint>>> {
        let mut state = self.lock();
        state.asked = true;
        match &state.read {
            Some((at, endpoints)) if state.changing == 0 && at.elapsed() < FRESH => {
                Some(endpoints.clone())
            }
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The interest a queue asks before it writes an outcome
/// ([`mdc_core::ports::Queue::set_webhook_interest`]). The view of the
/// endpoints, not the handler: the queue keeping it holds no port.
impl OutcomeInterest for Endpoints {
    fn wants(&self, event: &OutcomeEvent) -> bool {
        self.want(event)
    }

    fn wants_any(&self) -> bool {
        self.want_any()
    }
}

/// Whether `endpoint` gets `event`: its service's messages (or any event
/// not about a message), enabled, and matching its filters.
pub(super) fn wants(endpoint: &WebhookEndpoint, event: &OutcomeEvent) -> bool {
    let owned = match (&endpoint.service, &event.message_id) {
        (Some(service), Some(_)) => event.service.as_ref() == Some(service),
        _ => true,
    };
    owned
        && endpoint.disabled.is_none()
        && (endpoint.events.is_empty() || endpoint.events.contains(&event.kind))
        && (endpoint.channels.is_empty() || endpoint.channels.contains(&event.channel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdc_core::ports::Disabled;
    use mdc_core::{Channel, MessageId};

    fn endpoint(service: Option<&str>, events: &[&str], channels: &[Channel]) -> WebhookEndpoint {
        WebhookEndpoint {
            id: "wh_1".into(),
            service: service.map(str::to_owned),
            url: "https://hooks.example.com/mdc".into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            channels: channels.to_vec(),
            description: String::new(),
            secrets: Vec::new(),
            disabled: None,
            failing_since: None,
            created_at: mdc_core::now(),
            updated_at: mdc_core::now(),
        }
    }

    fn event(kind: &str, channel: Channel, service: Option<&str>) -> OutcomeEvent {
        OutcomeEvent {
            schema: mdc_core::outcome::SCHEMA.to_owned(),
            event_id: format!("evt_{kind}"),
            kind: kind.to_owned(),
            message_id: Some(MessageId::generate()),
            reference: None,
            metadata: None,
            service: service.map(str::to_owned),
            status: None,
            channel,
            provider: None,
            reason: None,
            recipient: None,
            vendor_at: None,
            at: mdc_core::now(),
        }
    }

    async fn read(endpoints: &Endpoints, list: Vec<WebhookEndpoint>) {
        endpoints.get(async { Ok(list) }).await.expect("read");
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_wanted_until_the_endpoints_are_read() {
        let endpoints = Endpoints::default();
        let sent = event("message.sent", Channel::Sms, None);
        assert!(endpoints.want(&sent), "unknown endpoints: every event");
        assert!(endpoints.want_any());
        read(&endpoints, Vec::new()).await;
        assert!(!endpoints.want(&sent), "no endpoint: no event");
        assert!(!endpoints.want_any());
        tokio::time::advance(FRESH).await;
        assert!(endpoints.want(&sent), "a stale read decides nothing");
        assert!(endpoints.want_any());
    }

    /// Kept fresh once asked, the view never goes stale between events: no
    /// endpoint means no event wanted at every moment, not only in the
    /// second after an event read the endpoints. Nothing is read before a
    /// queue asks; a read that fails lets the view go stale (every event
    /// wanted) until one succeeds.
    #[tokio::test(start_paused = true)]
    async fn a_view_kept_fresh_does_not_go_stale() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let endpoints = Arc::new(Endpoints::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let keeper = tokio::spawn({
            let (endpoints, reads, failing, shutdown) = (
                endpoints.clone(),
                reads.clone(),
                failing.clone(),
                shutdown.clone(),
            );
            async move {
                let load = || {
                    reads.fetch_add(1, Ordering::SeqCst);
                    let failing = failing.load(Ordering::SeqCst);
                    async move {
                        if failing {
                            Err(StoreError::Unavailable("down".into()))
                        } else {
                            Ok(Vec::new())
                        }
                    }
                };
                endpoints.keep_fresh(load, shutdown).await;
            }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(FRESH * 5).await;
        tokio::task::yield_now().await;
        assert_eq!(reads.load(Ordering::SeqCst), 0, "no read until asked");
        assert!(endpoints.want_any(), "never read: every event");
        tokio::time::advance(FRESH / 2).await;
        tokio::task::yield_now().await;
        for step in 0..50 {
            assert!(!endpoints.want_any(), "stale after {} ms", step * 100);
            tokio::time::advance(Duration::from_millis(100)).await;
            tokio::task::yield_now().await;
        }
        assert_eq!(
            reads.load(Ordering::SeqCst),
            11,
            "one read every half second"
        );

        failing.store(true, Ordering::SeqCst);
        tokio::time::advance(FRESH + FRESH / 2).await;
        tokio::task::yield_now().await;
        assert_eq!(reads.load(Ordering::SeqCst), 12, "the failed read was made");
        assert!(endpoints.want_any(), "no read for a second: every event");
        failing.store(false, Ordering::SeqCst);
        tokio::time::advance(FRESH / 2).await;
        tokio::task::yield_now().await;
        assert!(!endpoints.want_any(), "read again");

        shutdown.cancel();
        keeper.await.expect("stops");
    }

    /// A stop while a read hangs (a store that does not answer) ends the
    /// reader at once; it does not wait for the read.
    #[tokio::test(start_paused = true)]
    async fn a_stop_during_a_hanging_read_ends_the_reader() {
        let endpoints = Arc::new(Endpoints::default());
        assert!(endpoints.want_any(), "asked, so the reader reads");
        let (began, mut reading) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let keeper = tokio::spawn({
            let (endpoints, shutdown) = (endpoints.clone(), shutdown.clone());
            async move {
                let load = || {
                    began.send(()).ok();
                    std::future::pending::<Result<Vec<WebhookEndpoint>, StoreError>>()
                };
                endpoints.keep_fresh(load, shutdown).await;
            }
        });
        reading.recv().await.expect("a read began");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_millis(1), keeper)
            .await
            .expect("the reader ended without waiting for the read")
            .expect("stops");
    }

    /// While an endpoint is being changed every event is wanted, and a read
    /// made meanwhile (before or after the store write) is not kept.
    #[tokio::test(start_paused = true)]
    async fn events_are_wanted_while_an_endpoint_changes() {
        let endpoints = Arc::new(Endpoints::default());
        let sent = event("message.sent", Channel::Sms, None);
        read(&endpoints, Vec::new()).await;
        assert!(!endpoints.want(&sent));
        assert!(!endpoints.want_any());
        let change = endpoints.changing();
        assert!(endpoints.want(&sent), "a change under way: every event");
        assert!(endpoints.want_any());
        read(&endpoints, Vec::new()).await;
        assert!(
            endpoints.want(&sent),
            "a read during the change decides nothing"
        );
        drop(change);
        assert!(endpoints.want(&sent), "nor after it");
        read(&endpoints, Vec::new()).await;
        assert!(!endpoints.want(&sent), "a read after the change does");
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_is_wanted_when_one_endpoint_takes_it() {
        let endpoints = Endpoints::default();
        let mut disabled = endpoint(None, &[], &[]);
        disabled.disabled = Some(Disabled {
            reason: "410".into(),
            at: mdc_core::now(),
        });
        read(
            &endpoints,
            vec![
                endpoint(None, &["message.delivered"], &[Channel::Email]),
                endpoint(Some("billing"), &[], &[]),
                disabled,
            ],
        )
        .await;
        assert!(endpoints.want(&event("message.delivered", Channel::Email, None)));
        assert!(endpoints.want(&event("message.sent", Channel::Sms, Some("billing"))));
        assert!(!endpoints.want(&event("message.delivered", Channel::Sms, None)));
        assert!(!endpoints.want(&event("message.sent", Channel::Email, Some("shop"))));
    }

    /// Some event is wanted while one endpoint is enabled, whatever its
    /// filters; disabled endpoints want none.
    #[tokio::test(start_paused = true)]
    async fn some_event_is_wanted_while_an_endpoint_is_enabled() {
        let endpoints = Endpoints::default();
        let mut disabled = endpoint(None, &[], &[]);
        disabled.disabled = Some(Disabled {
            reason: "410".into(),
            at: mdc_core::now(),
        });
        read(&endpoints, vec![disabled.clone()]).await;
        assert!(!endpoints.want_any(), "only a disabled endpoint");
        endpoints.invalidate();
        read(
            &endpoints,
            vec![
                disabled,
                endpoint(Some("billing"), &["message.failed"], &[Channel::Push]),
            ],
        )
        .await;
        assert!(endpoints.want_any(), "an enabled endpoint, however narrow");
    }

    /// A change makes every event wanted at once, and a read begun before
    /// it (which may miss a new endpoint) is not kept.
    #[tokio::test(start_paused = true)]
    async fn a_change_outdates_reads_begun_before_it() {
        let endpoints = Arc::new(Endpoints::default());
        let sent = event("message.sent", Channel::Sms, None);
        read(&endpoints, Vec::new()).await;
        assert!(!endpoints.want(&sent));

        let (release, released) = tokio::sync::oneshot::channel::<()>();
        tokio::time::advance(FRESH).await;
        let reading = tokio::spawn({
            let endpoints = endpoints.clone();
            async move {
                endpoints
                    .get(async {
                        released.await.expect("released");
                        Ok(Vec::new())
                    })
                    .await
                    .expect("read")
            }
        });
        tokio::task::yield_now().await;
        endpoints.invalidate();
        assert!(endpoints.want(&sent), "a change: every event");
        release.send(()).expect("reader waits");
        assert!(reading.await.expect("read").is_empty());
        assert!(
            endpoints.want(&sent),
            "the read begun before the change is not kept"
        );
        read(&endpoints, Vec::new()).await;
        assert!(!endpoints.want(&sent), "a read after it is");
    }
}
