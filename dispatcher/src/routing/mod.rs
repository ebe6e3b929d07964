//! Routing of one channel over its providers: ordered (first healthy one
//! wins) or weighted (random by weight among the healthy ones). Each member
//! has a circuit breaker and an optional adaptive rate limit. A transient
//! error, an open breaker or an exhausted rate limit moves the attempt on to
//! the next member; a permanent or ambiguous outcome ends it (resending after
//! an ambiguous one could send twice).

use std::sync::Arc;
use std::time::Duration;

use mdc_core::ports::{AfterAmbiguous, Lookup, Provider, ProviderError, Receipt};
use mdc_core::{Message, MessageId, Priority, Timestamp};
use rand::Rng;
use serde::{Deserialize, Serialize};

pub mod breaker;
pub mod config;
pub mod ratelimit;

use self::breaker::{Breaker, BreakerConfig};
use self::ratelimit::RateLimiter;

/// Why an attempt stopped before a provider call: another attempt may
/// hold the message now, so this one must not send it.
pub const LEASE_LOST: &str =
    "the attempt's lease ran out or was taken over before the send; not sent";

/// How often an attempt waiting for a rate limit's token asks whether it
/// still holds the message, and one waiting to hold it long enough for a
/// call whether it does.
const HOLD_CHECK: Duration = Duration::from_millis(100);

/// Whether an attempt may call a vendor now (see [`Router::send`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Held long enough for a whole call: it may start.
    Ready,
    /// Still held, not long enough for a whole call: wait for the hold to
    /// be extended (or to end).
    Wait,
    /// No longer held: nothing may be sent.
    Lost,
}

impl From<bool> for Hold {
    fn from(held: bool) -> Self {
        if held {
            Hold::Ready
        } else {
            Hold::Lost
        }
    }
}

/// Why a call may or may not start.
enum Go {
    Call,
    /// The hold is lost.
    Lost,
    /// The message's deadline has passed: no call starts after it.
    Late,
}

/// Waits while the hold says [`Hold::Wait`], but not past the message's
/// `deadline`: whether a call may start.
async fn ready<H: Into<Hold>>(held: &impl Fn() -> H, deadline: Timestamp) -> Go {
    loop {
        let hold = held().into();
        if hold == Hold::Lost {
            return Go::Lost;
        }
        if mdc_core::now() > deadline {
            return Go::Late;
        }
        if hold == Hold::Ready {
            return Go::Call;
        }
        tokio::time::sleep(HOLD_CHECK).await;
    }
}

/// The error of an attempt whose message's deadline passed before a call
/// could start.
const PAST_DEADLINE: &str = "the deadline passed before the call could start";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Ordered,
    Weighted,
}

pub struct Member {
    pub provider: Arc<dyn Provider>,
    pub weight: u32,
    /// None for the built-in simulators, whose errors are per recipient by
    /// design and say nothing about the vendor's health.
    pub breaker: Option<Breaker>,
    pub limiter: Option<RateLimiter>,
}

impl Member {
    pub fn new(
        provider: Arc<dyn Provider>,
        weight: u32,
        breaker: Option<BreakerConfig>,
        rate: Option<(f64, u32)>,
    ) -> Self {
        Self {
            provider,
            weight: weight.max(1),
            breaker: breaker.map(Breaker::new),
            limiter: rate.map(|(per_second, burst)| RateLimiter::new(per_second, burst)),
        }
    }

    fn is_open(&self) -> bool {
        self.breaker.as_ref().is_some_and(Breaker::is_open)
    }

    fn allow(&self) -> bool {
        self.breaker.as_ref().is_none_or(Breaker::allow)
    }

    fn record(&self, ok: bool) {
        if let Some(breaker) = &self.breaker {
            breaker.record(ok);
        }
    }
}

/// The answer to a lookup, which provider gave it, and that provider's
/// policy when it cannot tell.
pub struct LookedUp {
    pub provider: String,
    pub result: Result<Lookup, ProviderError>,
    pub after_ambiguous: AfterAmbiguous,
}

/// The outcome of one routed send: which provider had the last word.
pub struct Attempt {
    pub provider: String,
    pub result: Result<Receipt, ProviderError>,
    /// Providers tried before it, with why they were skipped.
    pub skipped: Vec<(String, String)>,
    /// Providers called before the last word whose call failed
    /// transiently, one entry per call (the last word's call is not here).
    pub failed_over: Vec<String>,
    /// Stopped before calling `provider` because the attempt no longer
    /// held the message.
    stopped: bool,
    /// Stopped before calling `provider` because the message's deadline
    /// passed (waiting for a rate limit's token or for the lease).
    late: bool,
}

impl Attempt {
    /// Whether it stopped before a provider call because the attempt no
    /// longer held the message: nothing was sent.
    pub fn lease_lost(&self) -> bool {
        self.stopped
    }

    /// Whether it stopped before a provider call because the message's
    /// deadline passed: the message expires.
    pub fn past_deadline(&self) -> bool {
        self.late
    }
}

pub struct Router {
    mode: Mode,
    members: Vec<Member>,
    /// Longest wait for one provider's answer; then the send is ambiguous.
    send_timeout: Duration,
}

/// A final outcome ends the send; a transient error becomes the last word
/// and the send moves on to the next member.
fn settle(
    name: &str,
    result: Result<Receipt, ProviderError>,
    last: &mut Option<(String, ProviderError)>,
    failed_over: &mut Vec<String>,
) -> Option<Result<Receipt, ProviderError>> {
    match result {
        Err(error @ ProviderError::Transient { .. }) => {
            failed_over.push(name.to_owned());
            *last = Some((name.to_owned(), error));
            None
        }
        result => Some(result),
    }
}

/// Why the last member was passed over, as the vendor put it.
fn last_reason(last: &Option<(String, ProviderError)>) -> String {
    match last {
        Some((_, ProviderError::Transient { message, .. })) => message.clone(),
        Some((_, error)) => error.to_string(),
        None => String::new(),
    }
}

impl Router {
    pub fn new(mode: Mode, members: Vec<Member>, send_timeout: Duration) -> Self {
        Self {
            mode,
            members,
            send_timeout,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Shares every member's rate limit among `dispatchers` processes.
    pub fn set_share(&self, dispatchers: usize) {
        for limiter in self.members.iter().filter_map(|m| m.limiter.as_ref()) {
            limiter.set_share(dispatchers);
        }
    }

    /// The order to try members in for one send.
    fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        if self.mode == Mode::Weighted && order.len() > 1 {
            // Weighted shuffle: repeatedly draw among the rest by weight.
            let mut rng = rand::rng();
            let mut drawn = Vec::with_capacity(order.len());
            while !order.is_empty() {
                let total: u32 = order.iter().map(|&i| self.members[i].weight).sum();
                let mut pick = rng.random_range(0..total);
                let position = order
                    .iter()
                    .position(|&i| {
                        let w = self.members[i].weight;
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                drawn.push(order.remove(position));
            }
            order = drawn;
        }
        order
    }

    /// Sends through the first member that can take it now; when every
    /// healthy member is only held back by its rate limit, waits for the
    /// first of them (backpressure: the backlog stays on the queue).
    /// `held` ([`Hold`], or a bool: held for a call or lost) is asked right
    /// before each provider call: while it says wait, the call waits; once
    /// it says lost (the attempt's lease ran out or was taken over), nothing
    /// more is sent and the attempt ends with a transient error. A wait for
    /// a rate limit's token ends only when the hold is lost. No call starts
    /// after the message's deadline ([`Attempt::past_deadline`]).
    pub async fn send<H: Into<Hold>>(&self, message: &Message, held: impl Fn() -> H) -> Attempt {
        let mut skipped = Vec::new();
        let mut last: Option<(String, ProviderError)> = None;
        let mut rate_limited = Vec::new();
        let mut failed_over = Vec::new();
        let ended = |provider, result, skipped, failed_over| Attempt {
            provider,
            result,
            skipped,
            failed_over,
            stopped: false,
            late: false,
        };
        let late = |provider, reason: &str, skipped, failed_over| Attempt {
            late: true,
            ..ended(
                provider,
                Err(ProviderError::transient(reason)),
                skipped,
                failed_over,
            )
        };
        let lost = |provider, skipped, failed_over| Attempt {
            stopped: true,
            ..ended(
                provider,
                Err(ProviderError::transient(LEASE_LOST)),
                skipped,
                failed_over,
            )
        };
        for index in self.order() {
            let member = &self.members[index];
            let name = member.provider.name().to_owned();
            if member.is_open() {
                skipped.push((name, "circuit breaker open".to_owned()));
                continue;
            }
            match ready(&held, message.deadline).await {
                Go::Call => {}
                Go::Lost => return lost(name, skipped, failed_over),
                Go::Late => return late(name, PAST_DEADLINE, skipped, failed_over),
            }
            if member.limiter.as_ref().is_some_and(|l| !l.try_acquire()) {
                rate_limited.push(index);
                skipped.push((name, "rate limit reached".to_owned()));
                continue;
            }
            match self.try_member(member, message).await {
                None => skipped.push((name, "circuit breaker open".to_owned())),
                Some(result) => match settle(&name, result, &mut last, &mut failed_over) {
                    Some(result) => return ended(name, result, skipped, failed_over),
                    None => skipped.push((name, last_reason(&last))),
                },
            }
        }
        for index in rate_limited {
            let member = &self.members[index];
            let name = member.provider.name().to_owned();
            if let Some(limiter) = &member.limiter {
                // Critical messages queue for the next token; the others
                // take a token only when none of them is waiting, so a
                // batch of bulk sends never holds the vendor's rate ahead
                // of an OTP. No message waits past its deadline.
                let token = async {
                    if message.priority == Priority::Critical {
                        limiter.acquire().await;
                    } else {
                        limiter.acquire_when_free().await;
                    }
                };
                let left = (message.deadline - mdc_core::now())
                    .to_std()
                    .unwrap_or_default();
                // An attempt that loses its hold meanwhile stops waiting
                // and takes no token (a critical send's reserved one goes
                // back if no wait was booked after it).
                let hold_lost = async {
                    while held().into() != Hold::Lost {
                        tokio::time::sleep(HOLD_CHECK).await;
                    }
                };
                tokio::select! {
                    biased;
                    waited = tokio::time::timeout(left, token) => {
                        if waited.is_err() {
                            return late(
                                name,
                                "the deadline passed while waiting for the rate limit",
                                skipped,
                                failed_over,
                            );
                        }
                    }
                    () = hold_lost => return lost(name, skipped, failed_over),
                }
            }
            match ready(&held, message.deadline).await {
                Go::Call => {}
                Go::Lost => return lost(name, skipped, failed_over),
                Go::Late => return late(name, PAST_DEADLINE, skipped, failed_over),
            }
            if let Some(result) = self.try_member(member, message).await {
                if let Some(result) = settle(&name, result, &mut last, &mut failed_over) {
                    return ended(name, result, skipped, failed_over);
                }
            }
        }
        if last.is_some() {
            // The last call failed over to nobody: its error is the last word.
            failed_over.pop();
        }
        let (provider, error) = last.unwrap_or_else(|| {
            // Every breaker is open: come back when the first one lets a probe through.
            let reopens = self
                .members
                .iter()
                .filter_map(|m| m.breaker.as_ref()?.open_remaining())
                .min();
            (
                self.members
                    .first()
                    .map(|m| m.provider.name().to_owned())
                    .unwrap_or_default(),
                ProviderError::Transient {
                    message: "no provider available: circuit breakers open".into(),
                    retry_after: reopens,
                    throttled: false,
                },
            )
        });
        ended(provider, Err(error), skipped, failed_over)
    }

    /// One send through one member, feeding its breaker and rate limiter;
    /// `None` when the breaker refused.
    async fn try_member(
        &self,
        member: &Member,
        message: &Message,
    ) -> Option<Result<Receipt, ProviderError>> {
        if !member.allow() {
            return None;
        }
        let result =
            match tokio::time::timeout(self.send_timeout, member.provider.send(message)).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError::Ambiguous {
                    message: format!("no answer within {:?}", self.send_timeout),
                }),
            };
        match &result {
            Ok(_) => {
                member.record(true);
                if let Some(limiter) = &member.limiter {
                    limiter.succeeded();
                }
            }
            Err(error) if error.is_throttled() => {
                // Throttling says "slower", not "broken".
                member.record(true);
                if let Some(limiter) = &member.limiter {
                    limiter.throttled();
                }
            }
            Err(ProviderError::Transient { .. } | ProviderError::Ambiguous { .. }) => {
                member.record(false)
            }
            // The message's fault, not the vendor's.
            Err(ProviderError::Permanent { .. }) => member.record(true),
        }
        Some(result)
    }

    /// What to do after an ambiguous send through `provider` (resend when
    /// it is no longer a member).
    pub fn after_ambiguous(&self, provider: &str) -> AfterAmbiguous {
        self.members
            .iter()
            .find(|m| m.provider.name() == provider)
            .map_or(AfterAmbiguous::Resend, |m| m.provider.after_ambiguous())
    }

    /// Asks whether a vendor already has the message: the member named by
    /// [`Ask::Only`], or every member ([`Ask::Every`], after a dispatcher
    /// died mid-send and may have routed or failed over anywhere). Of
    /// several answers, one that has the message wins; else a failed lookup
    /// (ask again later rather than resend); else one that cannot tell (it
    /// may have it). Between equal answers the provider the message was
    /// last stored with wins, then config order, so when no member can
    /// tell, that provider's `after_ambiguous` policy decides, as when it
    /// alone is asked.
    pub async fn lookup(&self, ask: Ask<'_>, reference: &MessageId) -> LookedUp {
        let (only, first) = match ask {
            Ask::Only(name) => (Some(name), Some(name)),
            Ask::Every { last } => (None, last),
        };
        let mut order: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| only.is_none_or(|name| name == m.provider.name()))
            .collect();
        if let Some(first) = first {
            order.sort_by_key(|m| m.provider.name() != first);
        }
        let rank = |l: &LookedUp| match l.result {
            Ok(Lookup::Found(_)) => 3,
            Err(_) => 2,
            Ok(Lookup::CannotTell) => 1,
            Ok(Lookup::NotFound) => 0,
        };
        let mut answer: Option<LookedUp> = None;
        for member in order {
            let looked = LookedUp {
                provider: member.provider.name().to_owned(),
                result: member.provider.lookup(reference).await,
                after_ambiguous: member.provider.after_ambiguous(),
            };
            if rank(&looked) == 3 {
                return looked;
            }
            if answer.as_ref().is_none_or(|a| rank(&looked) > rank(a)) {
                answer = Some(looked);
            }
        }
        answer.unwrap_or_else(|| LookedUp {
            provider: first
                .map(str::to_owned)
                .or_else(|| self.members.first().map(|m| m.provider.name().to_owned()))
                .unwrap_or_default(),
            result: Ok(Lookup::NotFound),
            after_ambiguous: AfterAmbiguous::Resend,
        })
    }
}

/// Whom [`Router::lookup`] asks.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// This provider alone: the last attempt ended unsure through it.
    Only(&'a str),
    /// Every member, `last` (the provider the message was last stored with)
    /// first.
    Every { last: Option<&'a str> },
}

#[cfg(test)]
mod tests;
