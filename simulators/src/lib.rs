//! In-process vendor simulators, one per channel, sharing one durable
//! [`Ledger`]. Each accepts, refuses or fails a send according to the
//! recipient ([`Magic`]) and reports the outcome after a short delay through
//! a [`ReportSink`], as a vendor's delivery-report callback would.

pub mod kaleyra;
mod ledger;
mod magic;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mdc_core::ports::{Lookup, Provider, ProviderError, Receipt, ReportSink};
use mdc_core::{Channel, DeliveryReport, Message, MessageId, ReportOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use ledger::{Entry, Ledger, LEDGER_FILE};
pub use magic::{Magic, EMAIL_DOMAIN};

impl SimulatorConfig {
    /// Errors name the config key at fault.
    pub fn validate(&self) -> Result<(), mdc_core::InvalidSetting> {
        let minute = Duration::from_secs(60);
        mdc_core::setting::duration_within(
            "simulator.report_delay",
            self.report_delay,
            Duration::ZERO,
            minute,
        )?;
        mdc_core::setting::duration_within(
            "simulator.send_latency",
            self.send_latency,
            Duration::ZERO,
            minute,
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Delay before the delivery report.
    #[serde(with = "humantime_serde")]
    pub report_delay: Duration,
    /// Added to every send, to imitate a vendor's response time.
    #[serde(with = "humantime_serde")]
    pub send_latency: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            report_delay: Duration::from_millis(50),
            send_latency: Duration::ZERO,
        }
    }
}

/// One simulated vendor for one channel.
pub struct Simulator {
    name: String,
    channel: Channel,
    ledger: Arc<Ledger>,
    reports: Arc<dyn ReportSink>,
    config: SimulatorConfig,
    shutdown: CancellationToken,
}

/// What the vendor decided about one send call.
enum Verdict {
    Accepted {
        provider_message_id: String,
        report: ReportOutcome,
        then: Option<ProviderError>,
    },
    Refused(ProviderError),
}

impl Simulator {
    /// Simulators for every channel over one ledger. Reports owed from before
    /// a restart are sent again (`resume`).
    pub fn all(
        ledger: Arc<Ledger>,
        reports: Arc<dyn ReportSink>,
        config: SimulatorConfig,
        shutdown: CancellationToken,
    ) -> Vec<Arc<Simulator>> {
        Channel::ALL
            .iter()
            .map(|&channel| {
                Arc::new(Simulator {
                    name: format!("sim-{channel}"),
                    channel,
                    ledger: ledger.clone(),
                    reports: reports.clone(),
                    config: config.clone(),
                    shutdown: shutdown.clone(),
                })
            })
            .collect()
    }

    /// Sends the reports the vendor still owes, e.g. after a crash: those of
    /// `owed` ([`Ledger::owed`], read once for every simulator) that are its.
    pub fn resume(&self, owed: &[(String, Entry)]) -> usize {
        let mut resumed = 0;
        for (reference, entry) in owed {
            if entry.provider != self.name {
                continue;
            }
            let (Ok(reference), Some(pmid)) = (
                reference.parse::<MessageId>(),
                entry.provider_message_id.clone(),
            ) else {
                continue;
            };
            let outcome = entry.report.clone().unwrap_or(ReportOutcome::Delivered);
            self.report_later(reference, pmid, outcome);
            resumed += 1;
        }
        resumed
    }

    fn report_later(
        &self,
        reference: MessageId,
        provider_message_id: String,
        outcome: ReportOutcome,
    ) {
        let name = self.name.clone();
        let ledger = self.ledger.clone();
        let reports = self.reports.clone();
        let delay = self.config.report_delay;
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let status = match &outcome {
                ReportOutcome::Delivered => "DELIVERED",
                ReportOutcome::Failed { .. } => "UNDELIVERED",
                ReportOutcome::Noted { .. } => "SENT",
            };
            let report = DeliveryReport {
                vendor_at: None,
                provider: name,
                provider_message_id: provider_message_id.clone(),
                reference: Some(reference.clone()),
                outcome,
                at: mdc_core::now(),
                raw: json!({ "id": provider_message_id, "status": status, "reference": reference.as_str() }),
                note: None,
            };
            // Like a vendor, keep trying until the report is taken.
            let mut backoff = Duration::from_millis(100);
            loop {
                match reports.submit(report.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(message_id = %reference, error = %e, "Simulator could not deliver its report; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            if let Err(e) = ledger.report_sent(&reference).await {
                tracing::warn!(message_id = %reference, error = %e, "Simulator could not record a sent report");
            }
        });
    }
}

fn decide(magic: Magic, entry: &mut Entry, provider: &str, channel: Channel, to: &str) -> Verdict {
    entry.provider = provider.to_owned();
    entry.calls += 1;
    let accept = |entry: &mut Entry, report: &ReportOutcome| {
        entry.accepted += 1;
        let mut ulid = [0; ulid::ULID_LEN];
        let id = [provider, "-", ulid::Ulid::new().array_to_str(&mut ulid)].concat();
        entry.provider_message_id = Some(id.clone());
        entry.report = Some(report.clone());
        entry.report_pending = true;
        id
    };
    match magic {
        Magic::Reject => Verdict::Refused(ProviderError::Permanent {
            code: "REJECTED".into(),
            // Vendors echo the recipient; so does the simulator, so tests
            // see that logs do not.
            message: format!("simulated rejection: recipient {to} refused"),
        }),
        Magic::Transient(n) if entry.calls <= n => Verdict::Refused(ProviderError::Transient {
            message: format!("simulated throttling ({} of {n})", entry.calls),
            retry_after: None,
            throttled: false,
        }),
        Magic::Bounce => {
            // An email bounce is permanent, like SES's: the address is
            // suppressed.
            let report = ReportOutcome::Failed {
                reason: "simulated bounce: unknown subscriber".into(),
                suppress: channel == Channel::Email,
            };
            Verdict::Accepted {
                provider_message_id: accept(entry, &report),
                report,
                then: None,
            }
        }
        Magic::Timeout if entry.accepted == 0 => Verdict::Accepted {
            provider_message_id: accept(entry, &ReportOutcome::Delivered),
            report: ReportOutcome::Delivered,
            then: Some(ProviderError::Ambiguous {
                message: "simulated timeout after the vendor accepted the message".into(),
            }),
        },
        Magic::Deliver | Magic::Timeout | Magic::Transient(_) => Verdict::Accepted {
            provider_message_id: accept(entry, &ReportOutcome::Delivered),
            report: ReportOutcome::Delivered,
            then: None,
        },
    }
}

#[async_trait]
impl Provider for Simulator {
    fn name(&self) -> &str {
        &self.name
    }

    fn channel(&self) -> Channel {
        self.channel
    }

    async fn send(&self, message: &Message) -> Result<Receipt, ProviderError> {
        if !self.config.send_latency.is_zero() {
            tokio::time::sleep(self.config.send_latency).await;
        }
        let magic = Magic::of(self.channel, &message.to);
        let name = self.name.clone();
        let channel = self.channel;
        let to = message.to.clone();
        let verdict = self
            .ledger
            .update(&message.id, move |entry| {
                decide(magic, entry, &name, channel, &to)
            })
            .await
            .map_err(|e| ProviderError::Transient {
                message: format!("simulator storage: {e}"),
                retry_after: None,
                throttled: false,
            })?;
        match verdict {
            Verdict::Refused(error) => Err(error),
            Verdict::Accepted {
                provider_message_id,
                report,
                then,
            } => {
                self.report_later(message.id.clone(), provider_message_id.clone(), report);
                match then {
                    Some(error) => Err(error),
                    None => Ok(Receipt {
                        raw: json!({ "id": provider_message_id, "status": "ACCEPTED" }),
                        provider_message_id,
                    }),
                }
            }
        }
    }

    /// The simulators can be asked by MDC's id: their ledger answers.
    async fn lookup(&self, reference: &MessageId) -> Result<Lookup, ProviderError> {
        let entry = self
            .ledger
            .get(reference)
            .map_err(|e| ProviderError::Transient {
                message: format!("simulator storage: {e}"),
                retry_after: None,
                throttled: false,
            })?;
        Ok(entry
            .filter(|e| e.accepted > 0 && e.provider == self.name)
            .and_then(|e| {
                e.provider_message_id.map(|id| Receipt {
                    raw: json!({ "id": id, "status": "ACCEPTED" }),
                    provider_message_id: id,
                })
            })
            .map_or(Lookup::NotFound, Lookup::Found))
    }
}
