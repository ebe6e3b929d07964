//! Steps 4 and 5 of the dispatcher's path (see [`super`]): one attempt of
//! a claimed message under its lease, and the outcome stored, published
//! and, for a transient failure, scheduled for retry.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use mdc_core::ports::store::apply_update;
use mdc_core::ports::{
    AfterAmbiguous, CachedMessage, Lookup, ProviderError, Receipt, RetryItem, StoreError,
    Transition, Updated, Verify,
};
use mdc_core::{mask, Event, Message, MessageId, MessageRecord, Status, Timestamp};

use super::{later, Dispatcher, CACHE_TTL, COMPONENT, MAX_WRITE_BACKOFF};
use crate::retry::{next_attempt, Next};
use crate::routing::{Ask, Hold};

impl Dispatcher {
    /// Publishes the outcome of `transition`, which the store applied to
    /// the claimed `record` and which moved it to `status`. While the
    /// attempt held the message nothing else moved it, so the stored
    /// message is the claimed one with the transition applied: applied
    /// here too, it gives the outcome without reading the message back.
    /// Should it come out otherwise, the stored one is read.
    pub(super) async fn publish_applied(
        &self,
        record: &MessageRecord,
        transition: Transition,
        status: Status,
    ) {
        let mut now = record.clone();
        if apply_update(&mut now, transition) != (Updated::Applied { status }) {
            return Box::pin(self.publish_outcome(&record.message.id)).await;
        }
        self.until_published(|| mdc_core::outcome::publish_record(&*self.queue, &now, None))
            .await;
    }

    /// Puts the message's outcome on the outcomes topic.
    pub(super) async fn publish_outcome(&self, id: &MessageId) {
        self.until_published(|| {
            mdc_core::outcome::publish_current(&*self.store, &*self.queue, id, None)
        })
        .await;
    }

    /// Runs `publish` until the queue takes the outcome, with a growing
    /// pause between tries: the lane record is acknowledged only after.
    async fn until_published<F, Fut>(&self, mut publish: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, mdc_core::outcome::PublishError>>,
    {
        let mut pause = Duration::from_millis(100);
        while let Err(e) = publish().await {
            tracing::warn!(error = %e, retry_in = ?pause, "Could not publish an outcome; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_WRITE_BACKOFF);
        }
    }

    /// Extends the attempt's lease (`DispatcherConfig::lease_extension_every`)
    /// for as long as it is polled: the attempt is raced against it, so the lease covers every
    /// wait until the send returns and its outcome is stored. Never returns.
    /// `held` follows what the store confirmed: an extension the store
    /// refuses (another attempt took the message over) ends the hold, and
    /// one it cannot take leaves the hold to run out at the last confirmed
    /// time; the router sends nothing once it has.
    pub(super) async fn keep_lease(&self, message: &Message, attempt: u32, held: &Held) {
        let every = self.config.lease_extension_every();
        loop {
            tokio::time::sleep(every).await;
            let until = later(mdc_core::now(), self.config.lease);
            let extend = Transition::LeaseExtended { attempt, until };
            match self.store.update(&message.id, extend).await {
                Ok(Updated::Applied { .. }) => held.extend(until),
                Ok(_) => {
                    // Ended, or taken over: nothing more to keep. An outcome
                    // already stored ends the lease too; what is left of the
                    // attempt then only publishes.
                    held.end();
                    return std::future::pending().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Could not extend the lease of an attempt in flight");
                }
            }
        }
    }

    pub(super) async fn schedule(
        &self,
        message: &Message,
        due: Timestamp,
    ) -> Result<(), StoreError> {
        let item = RetryItem {
            message_id: message.id.clone(),
            channel: message.channel(),
            priority: message.priority,
            due,
        };
        self.retry
            .schedule(item)
            .await
            .map_err(|e| StoreError::Unavailable(e.into()))
    }

    /// One attempt of a claimed message, to a stored outcome.
    pub(super) async fn attempt(&self, record: MessageRecord, verify: Verify, held: &Held) {
        let message = &record.message;
        let attempt = record.attempts;
        let Some(router) = self.routes.get(&message.channel()).cloned() else {
            let event = Event::new(COMPONENT, "no provider is configured for this channel");
            let ended = Transition::Ended {
                attempt,
                status: Status::Failed,
                provider: None,
                event,
            };
            return Box::pin(self.store_outcome(&record, ended)).await;
        };
        // Resending after an attempt that may have reached the vendor is
        // decided here, and the trail says how.
        let mut resend_note = None;
        if verify.first() {
            let ask = match (verify, record.provider.as_deref()) {
                (Verify::Provider, Some(provider)) => Ask::Only(provider),
                (_, last) => Ask::Every { last },
            };
            let looked = Box::pin(router.lookup(ask, &message.id)).await;
            let asked = looked.provider;
            let outcome = match looked.result {
                Ok(Lookup::Found(receipt)) => {
                    let details = "vendor already had it from an earlier attempt; not resent";
                    self.sent(&record, &asked, receipt, details).await
                }
                Ok(Lookup::NotFound) => {
                    tracing::info!("Vendor does not have the message; sending");
                    None
                }
                Ok(Lookup::CannotTell) => match looked.after_ambiguous {
                    AfterAmbiguous::WaitForReport => {
                        tracing::info!(provider = %asked, "Vendor cannot tell whether it has the message; waiting for its report");
                        Some(Transition::SentUnconfirmed {
                            attempt,
                            provider: asked.clone(),
                            event: Event::new(
                                COMPONENT,
                                format!("an earlier attempt may have reached {asked}, which cannot be asked; not resent, waiting for its report (after_ambiguous = wait_for_report)"),
                            )
                            .provider(&asked, None),
                        })
                    }
                    AfterAmbiguous::Resend => {
                        resend_note = Some(format!(
                            "; {asked} cannot tell whether an earlier attempt reached it, so it was sent again (after_ambiguous = resend)"
                        ));
                        None
                    }
                },
                Err(error) => {
                    Some(self.failed(&record, &asked, error, Some(looked.after_ambiguous)))
                }
            };
            if let Some(transition) = outcome {
                return Box::pin(self.store_outcome(&record, transition)).await;
            }
        }
        // Past the deadline (also when asking took it there) an attempt only
        // found out whether an earlier one reached a vendor; it sends nothing.
        if mdc_core::now() > message.deadline {
            let ended = Transition::Ended {
                attempt,
                status: Status::Expired,
                provider: None,
                event: Event::new(
                    COMPONENT,
                    format!(
                        "deadline passed before the message could be sent{}",
                        match (verify.first(), &resend_note) {
                            (false, _) => "",
                            (true, None) => "; no vendor has it from an earlier attempt",
                            (true, Some(_)) => {
                                "; the vendor cannot tell whether an earlier attempt reached it (after_ambiguous = resend)"
                            }
                        }
                    ),
                ),
            };
            return Box::pin(self.store_outcome(&record, ended)).await;
        }
        // The router bounds each provider call by the send timeout and waits
        // for a rate-limit token when every provider is at its limit; the
        // lease is kept alive meanwhile.
        let started = std::time::Instant::now();
        metrics::gauge!("mdc_sends_in_flight").increment(1.0);
        // A call starts only with a whole send's time left on the lease, and
        // the allowance for clocks that differ: it then ends (at
        // send_timeout) before anyone can take the message over, whether or
        // not the store takes the extensions meanwhile. With less left, it
        // waits for the next extension.
        let call = self.config.call_needs();
        let routed = router.send(message, || held.for_call(call)).await;
        metrics::gauge!("mdc_sends_in_flight").decrement(1.0);
        let stopped = routed.lease_lost();
        let late = routed.past_deadline();
        let outcome = match &routed.result {
            // The provider named was not called (calls before it that
            // failed over are counted below): not a vendor's error.
            Err(_) if stopped => "stopped",
            Err(_) if late => "late",
            Ok(_) => "sent",
            Err(ProviderError::Permanent { .. }) => "refused",
            Err(ProviderError::Transient { .. }) => "transient",
            Err(ProviderError::Ambiguous { .. }) => "ambiguous",
        };
        metrics::counter!("mdc_sends_total", "provider" => routed.provider.clone(), "outcome" => outcome)
            .increment(1);
        for provider in &routed.failed_over {
            metrics::counter!("mdc_sends_total", "provider" => provider.clone(), "outcome" => "transient")
                .increment(1);
        }
        if !stopped && !late {
            metrics::histogram!("mdc_send_seconds", "provider" => routed.provider.clone())
                .record(started.elapsed().as_secs_f64());
        }
        let failover: Vec<String> = routed
            .skipped
            .iter()
            .filter(|(provider, _)| *provider != routed.provider)
            .map(|(provider, reason)| format!("{provider}: {reason}"))
            .collect();
        for line in &failover {
            tracing::info!(skipped = %line, "Failed over to the next provider");
        }
        let transition = match routed.result {
            Ok(receipt) => {
                let mut details = if failover.is_empty() {
                    "sent".to_owned()
                } else {
                    format!("sent after failing over ({})", failover.join("; "))
                };
                details.push_str(resend_note.as_deref().unwrap_or_default());
                self.sent(&record, &routed.provider, receipt, &details)
                    .await
            }
            Err(error) if routed.lease_lost() => {
                Some(self.stopped(&record, &routed.provider, error))
            }
            // Whatever attempts are left: nothing was sent, and nothing
            // may be sent any more.
            Err(error) if late => {
                let mut details = "deadline passed before the message could be sent".to_owned();
                if !failover.is_empty() {
                    details.push_str(&format!(" (after {})", failover.join("; ")));
                }
                details.push_str(resend_note.as_deref().unwrap_or_default());
                // The stop's own words: no vendor's error ("transient: …"),
                // as a webhook's reason reads them.
                let why = match error {
                    ProviderError::Transient { message, .. } => message,
                    other => other.to_string(),
                };
                Some(Transition::Ended {
                    attempt: record.attempts,
                    status: Status::Expired,
                    provider: None,
                    event: Event::new(COMPONENT, details)
                        .provider(&routed.provider, None)
                        .error(why),
                })
            }
            Err(error) => {
                let unsure = matches!(error, ProviderError::Ambiguous { .. })
                    .then(|| router.after_ambiguous(&routed.provider));
                Some(self.failed(&record, &routed.provider, error, unsure))
            }
        };
        if let Some(transition) = transition {
            Box::pin(self.store_outcome(&record, transition)).await;
        }
    }

    async fn sent(
        &self,
        record: &MessageRecord,
        provider: &str,
        receipt: Receipt,
        details: &str,
    ) -> Option<Transition> {
        let message = &record.message;
        let cached = CachedMessage {
            message_id: message.id.clone(),
            channel: message.channel(),
        };
        // Only a shortcut for vendor reports: the store's index is the truth.
        if let Err(e) = self
            .cache
            .put(provider, &receipt.provider_message_id, cached, CACHE_TTL)
            .await
        {
            tracing::warn!(error = %e, "Could not cache the vendor message id");
        }
        let event = Event::new(COMPONENT, details)
            .provider(provider, Some(&receipt.provider_message_id))
            .raw(receipt.raw);
        Some(Transition::Sent {
            attempt: record.attempts,
            provider: provider.to_owned(),
            provider_message_id: receipt.provider_message_id,
            event,
        })
    }

    /// The transition of an attempt that lost its lease before calling a
    /// vendor. Nothing was sent, so it does not end the message however
    /// many attempts came before: the next comes after the first retry
    /// delay, unless that is past the deadline. When another attempt has
    /// taken the message over, the store ignores it.
    fn stopped(&self, record: &MessageRecord, provider: &str, error: ProviderError) -> Transition {
        let attempt = record.attempts;
        let delay = self
            .config
            .retry_schedule
            .first()
            .copied()
            .unwrap_or(Duration::from_secs(1));
        let due = later(mdc_core::now(), delay);
        let event = |details: String| {
            Event::new(COMPONENT, details)
                .provider(provider, None)
                .error(error.to_string())
        };
        if due > record.message.deadline {
            return Transition::Ended {
                attempt,
                status: Status::Expired,
                provider: None,
                event: event(format!("attempt {attempt} stopped before the send (its lease was lost) and the next would be after the deadline")),
            };
        }
        Transition::AttemptFailed {
            attempt,
            provider: provider.to_owned(),
            next_attempt_at: due,
            verify_first: false,
            event: event(format!(
                "attempt {attempt} stopped before the send (its lease was lost); next attempt at {}",
                due.to_rfc3339()
            )),
        }
    }

    /// The transition after a failed attempt; sets the retry timer when
    /// there is a next attempt. `unsure` holds the provider's policy when
    /// it may have the message (the send was ambiguous, or asking it about
    /// an earlier one failed): the next attempt asks first, and with no next
    /// attempt a vendor that reports back leaves the message sent,
    /// unconfirmed, for its report to settle.
    fn failed(
        &self,
        record: &MessageRecord,
        provider: &str,
        error: ProviderError,
        unsure: Option<AfterAmbiguous>,
    ) -> Transition {
        let message = &record.message;
        let attempt = record.attempts;
        let now = mdc_core::now();
        let next = next_attempt(
            attempt,
            &error,
            &self.config.retry_schedule,
            message.deadline,
            now,
        );
        let ended = |status: Status, details: String| Transition::Ended {
            attempt,
            status,
            provider: Some(provider.to_owned()),
            event: Event::new(COMPONENT, details)
                .provider(provider, None)
                .error(error.to_string()),
        };
        match next {
            Next::GaveUp | Next::PastDeadline if unsure == Some(AfterAmbiguous::WaitForReport) => {
                tracing::info!(
                    provider,
                    "Last attempt ambiguous; waiting for the vendor's report"
                );
                Transition::SentUnconfirmed {
                    attempt,
                    provider: provider.to_owned(),
                    event: Event::new(
                        COMPONENT,
                        format!("attempt {attempt} may have reached {provider}, which cannot be asked; no attempt is left, so it counts as sent, waiting for its report (after_ambiguous = wait_for_report)"),
                    )
                    .provider(provider, None)
                    .error(error.to_string()),
                }
            }
            Next::Refused => {
                tracing::info!(to = %mask::recipient(&message.to), error = %mask::scrub(&error.to_string()), "Vendor refused the message");
                ended(Status::Failed, format!("attempt {attempt} refused"))
            }
            Next::GaveUp => ended(
                Status::Failed,
                format!("attempt {attempt} failed; giving up after {attempt} attempts"),
            ),
            Next::PastDeadline => ended(
                Status::Expired,
                format!("attempt {attempt} failed and the next would be after the deadline"),
            ),
            Next::RetryAt(due) => Transition::AttemptFailed {
                attempt,
                provider: provider.to_owned(),
                next_attempt_at: due,
                verify_first: unsure.is_some(),
                event: Event::new(
                    COMPONENT,
                    format!(
                        "attempt {attempt} failed; next attempt at {}",
                        due.to_rfc3339()
                    ),
                )
                .provider(provider, None)
                .error(error.to_string()),
            },
        }
    }

    /// Stores an attempt's outcome. What the vendor answered is never
    /// forgotten: a failed write is tried again (with a growing pause) until
    /// the store takes it, and the send is never repeated for it. The retry
    /// timer of a failed attempt is set first; if it cannot be, the attempt
    /// is still recorded with its due time and the reconciler sets the timer
    /// once the retry backend is back.
    pub(super) async fn store_outcome(&self, record: &MessageRecord, mut transition: Transition) {
        let message = &record.message;
        if let Transition::AttemptFailed {
            next_attempt_at,
            event,
            ..
        } = &mut transition
        {
            if let Err(e) = self.schedule(message, *next_attempt_at).await {
                tracing::warn!(error = %e, "Could not set the retry timer; the reconciler will schedule the retry");
                event.details.push_str(&format!(
                    " (the retry timer could not be set: {e}; the reconciler will set it)"
                ));
            }
        }
        let mut pause = Duration::from_millis(100);
        loop {
            match self.store.update(&message.id, transition.clone()).await {
                Ok(Updated::Applied { status }) => {
                    if mdc_core::outcome::is_outcome(status) {
                        Box::pin(self.publish_applied(record, transition, status)).await;
                    }
                    return;
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?pause, "Could not store an attempt's outcome; trying the write again (not the send)");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_WRITE_BACKOFF);
                }
            }
        }
    }
}

/// The lease of an attempt in flight as far as the store has confirmed it:
/// the attempt may start a provider call only while it holds for the
/// call's whole time.
pub(super) struct Held {
    /// Milliseconds since the epoch; `i64::MIN` once the store refused it.
    until: AtomicI64,
}

impl Held {
    pub(super) fn new(until: Timestamp) -> Self {
        Self {
            until: AtomicI64::new(until.timestamp_millis()),
        }
    }

    fn extend(&self, until: Timestamp) {
        self.until
            .fetch_max(until.timestamp_millis(), Ordering::SeqCst);
    }

    fn end(&self) {
        self.until.store(i64::MIN, Ordering::SeqCst);
    }

    /// Whether a call taking up to `time` may start: the lease holds for
    /// that long from now, holds for less (wait for its extension), or has
    /// run out.
    pub(super) fn for_call(&self, time: std::time::Duration) -> Hold {
        let time = i64::try_from(time.as_millis()).unwrap_or(i64::MAX);
        let now = mdc_core::now().timestamp_millis();
        let until = self.until.load(Ordering::SeqCst);
        if now >= until {
            Hold::Lost
        } else if now.saturating_add(time) < until {
            Hold::Ready
        } else {
            Hold::Wait
        }
    }
}
