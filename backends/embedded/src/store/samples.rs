//! Records and trails of every channel, vendor and ending, with varied
//! recipients, bodies and times, as the pipeline writes them: for the
//! tests of the codecs and for training the dictionary.

use chrono::{Duration, TimeZone, Utc};
use mdc_core::message::{PushTarget, SmsEncoding};
use mdc_core::{Content, Event, Message, MessageId, MessageRecord, MessageType, Priority, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const WORDS: &[&str] = &[
    "your",
    "order",
    "has",
    "shipped",
    "code",
    "is",
    "verification",
    "account",
    "payment",
    "received",
    "reminder",
    "appointment",
    "tomorrow",
    "at",
    "please",
    "confirm",
    "delivery",
    "password",
    "reset",
    "login",
    "new",
    "device",
    "balance",
    "invoice",
    "ready",
    "thank",
    "you",
    "for",
    "booking",
    "ticket",
    "expires",
    "in",
    "minutes",
    "do",
    "not",
    "share",
    "this",
    "with",
    "anyone",
    "welcome",
    "to",
    "subscription",
    "renewed",
    "statement",
    "available",
    "track",
    "parcel",
    "driver",
];
const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];
const DOMAINS: &[&str] = &["example.com", "mail.example.org", "corp.example.net"];

fn sentence(rng: &mut StdRng, words: std::ops::Range<usize>) -> String {
    let words = rng.random_range(words);
    let mut out: Vec<String> = (0..words)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())].to_owned())
        .collect();
    if rng.random_bool(0.5) {
        out.push(rng.random_range(1000..999_999).to_string());
    }
    out.join(" ")
}

fn phone(rng: &mut StdRng) -> String {
    let prefix = ["+1415", "+4479", "+9198", "+4915", "+3361", "+5511"];
    format!(
        "{}{:07}",
        prefix[rng.random_range(0..prefix.len())],
        rng.random_range(0..10_000_000)
    )
}

fn email(rng: &mut StdRng) -> String {
    format!(
        "{}.{}@{}",
        NAMES[rng.random_range(0..NAMES.len())],
        rng.random_range(1..9999),
        DOMAINS[rng.random_range(0..DOMAINS.len())]
    )
}

fn hex(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

pub fn records(seed: u64, count: usize) -> Vec<MessageRecord> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|_| record(&mut rng)).collect()
}

fn record(rng: &mut StdRng) -> MessageRecord {
    // Any time over a few years, so the dictionary holds no one date.
    let created = Utc
        .timestamp_millis_opt(rng.random_range(1_750_000_000_000..1_900_000_000_000))
        .single()
        .unwrap_or_else(Utc::now)
        + Duration::nanoseconds(rng.random_range(0..1_000_000));
    let ulid = ulid::Ulid::from_parts(created.timestamp_millis() as u64, rng.random::<u128>());
    let id: MessageId = format!("msg_{ulid}")
        .parse()
        .unwrap_or_else(|_| MessageId::generate());
    let priorities = [Priority::Critical, Priority::Normal, Priority::Bulk];
    let priority = priorities[rng.random_range(0..priorities.len())];
    let (to, content, provider, message_type) = match rng.random_range(0..3) {
        0 => {
            let body = sentence(rng, 3..25);
            let provider = ["kaleyra", "sns-sms", "sim-sms"][rng.random_range(0..3)];
            let message_type = [
                MessageType::Otp,
                MessageType::Transactional,
                MessageType::Marketing,
            ][rng.random_range(0..3)];
            let content = Content::Sms {
                segments: 1 + body.len() as u32 / 153,
                body,
                encoding: if rng.random_bool(0.9) {
                    SmsEncoding::Gsm7
                } else {
                    SmsEncoding::Ucs2
                },
                template_id: rng
                    .random_bool(0.3)
                    .then(|| rng.random_range(100_000..999_999).to_string()),
            };
            (phone(rng), content, provider, message_type)
        }
        1 => {
            let text = sentence(rng, 10..60);
            let html = rng
                .random_bool(0.5)
                .then(|| format!("<html><body><p>{text}</p></body></html>"));
            let provider = ["ses", "smtp", "sim-email"][rng.random_range(0..3)];
            let content = Content::Email {
                from: format!(
                    "notifications@{}",
                    DOMAINS[rng.random_range(0..DOMAINS.len())]
                ),
                subject: sentence(rng, 2..8),
                text: Some(text),
                html,
                attachments: Vec::new(),
            };
            (email(rng), content, provider, MessageType::Transactional)
        }
        _ => {
            let target = if rng.random_bool(0.5) {
                PushTarget::DeviceToken(hex(rng, 64))
            } else {
                PushTarget::UserId(format!("user-{}", rng.random_range(1..1_000_000)))
            };
            let mut data = serde_json::Map::new();
            if rng.random_bool(0.5) {
                data.insert("screen".into(), json!("orders"));
                data.insert("order_id".into(), json!(rng.random_range(1..9_999_999)));
            }
            let content = Content::Push {
                target,
                title: rng.random_bool(0.7).then(|| sentence(rng, 3..4)),
                body: sentence(rng, 4..20),
                data,
            };
            (
                String::new(),
                content,
                ["sns", "sim-push"][rng.random_range(0..2)],
                MessageType::Transactional,
            )
        }
    };
    let to = if to.is_empty() {
        format!("user-{}", rng.random_range(1..1_000_000))
    } else {
        to
    };
    let channel = content.channel();
    let key = if rng.random_bool(0.5) {
        format!("auto:{id}")
    } else {
        format!(
            "{}-{}",
            sentence(rng, 1..2),
            rng.random_range(1..99_999_999)
        )
    };
    let message = Message {
        id: id.clone(),
        priority,
        message_type,
        to,
        sender: (channel == mdc_core::Channel::Sms)
            .then(|| ["MDCOTP", "ACMEBK", "SHOPCO"][rng.random_range(0..3)].to_owned()),
        content,
        idempotency_key: key,
        created_at: created,
        deadline: created + Duration::minutes([10, 60, 1440][rng.random_range(0..3)]),
        reference: rng
            .random_bool(0.3)
            .then(|| format!("ref-{}", rng.random_range(1..9_999_999))),
        metadata: None,
        service: rng.random_bool(0.6).then(|| {
            ["billing", "auth", "shipping", "marketing"][rng.random_range(0..4)].to_owned()
        }),
        direct: false,
    };
    let pmid = match provider {
        "kaleyra" => format!("{}-{}", hex(rng, 8), rng.random_range(1..99_999)),
        "ses" | "sns" | "sns-sms" => format!(
            "{}-{}-{}-{}-{}",
            hex(rng, 8),
            hex(rng, 4),
            hex(rng, 4),
            hex(rng, 4),
            hex(rng, 12)
        ),
        "smtp" => format!("<{}@{}>", hex(rng, 24), DOMAINS[0]),
        _ => format!(
            "{provider}-{}",
            ulid::Ulid::from_parts(created.timestamp_millis() as u64 + 5, rng.random::<u128>())
        ),
    };
    let mut at = created;
    let mut tick = |rng: &mut StdRng| {
        at += Duration::microseconds(rng.random_range(1..300_000));
        at
    };
    let retry_at = |rng: &mut StdRng, attempt: u32| {
        created + Duration::seconds(2i64.pow(attempt) + rng.random_range(0..60))
    };
    let mut events = vec![
        Event {
            at: tick(rng),
            ..Event::new("ingest", "accepted").status(Status::Accepted)
        },
        Event {
            at: tick(rng),
            ..Event::new(
                "ingest",
                format!("queued on {}.{}", channel.as_str(), priority.as_str()),
            )
            .status(Status::Queued)
        },
    ];
    let attempts = rng.random_range(1..4);
    for attempt in 1..=attempts {
        events.push(Event {
            at: tick(rng),
            ..Event::new("dispatcher", format!("attempt {attempt} started")).status(Status::Sending)
        });
        if attempt < attempts {
            let error = [
                "connection reset by peer",
                "HTTP 503 Service Unavailable",
                "timed out after 10s",
                "throttled: rate exceeded",
            ][rng.random_range(0..4)];
            events.push(Event {
                at: tick(rng),
                ..Event::new(
                    "dispatcher",
                    format!(
                        "attempt {attempt} failed; next attempt at {}",
                        retry_at(rng, attempt).to_rfc3339()
                    ),
                )
                .provider(provider, None)
                .error(error)
            });
        }
    }
    events.push(Event {
        at: tick(rng),
        ..Event::new("dispatcher", "sent")
            .status(Status::Sent)
            .provider(provider, Some(&pmid))
            .raw(sent_raw(provider, &pmid))
    });
    let ending = rng.random_range(0..10);
    let (status, details) = match ending {
        0 => (Status::Failed, "failed (vendor report)"),
        1 if channel == mdc_core::Channel::Email => (Status::Failed, "bounced (vendor report)"),
        2 => (Status::Sent, ""),
        _ => (Status::Delivered, "delivered (vendor report)"),
    };
    if !details.is_empty() {
        let mut event = Event::new("response-handler", details)
            .status(status)
            .provider(provider, Some(&pmid))
            .raw(report_raw(rng, provider, &pmid, &id, status));
        event.at = tick(rng);
        if status != Status::Delivered {
            event = event.error(
                [
                    "number unreachable",
                    "mailbox does not exist",
                    "blocked by carrier",
                    "invalid token",
                ][rng.random_range(0..4)],
            );
        }
        events.push(event);
    }
    let updated_at = events.last().map_or(created, |e| e.at);
    MessageRecord {
        message,
        status,
        updated_at,
        attempts,
        lease_until: None,
        next_attempt_at: None,
        verify_before_send: false,
        provider: Some(provider.to_owned()),
        provider_message_id: Some(pmid),
        events,
    }
}

fn sent_raw(provider: &str, pmid: &str) -> serde_json::Value {
    match provider {
        "kaleyra" => {
            json!({"id": pmid, "type": "sms", "data": [{"message_id": pmid, "recipient": "redacted", "status": "ACCEPTED"}], "totalCount": 1})
        }
        "ses" | "sns" | "sns-sms" => json!({"MessageId": pmid}),
        "smtp" => json!({"code": "250", "reply": format!("2.0.0 Ok: queued as {pmid}")}),
        _ => json!({"id": pmid, "status": "ACCEPTED"}),
    }
}

fn report_raw(
    rng: &mut StdRng,
    provider: &str,
    pmid: &str,
    id: &MessageId,
    status: Status,
) -> serde_json::Value {
    match provider {
        "kaleyra" => {
            json!({"id": pmid, "status": if status == Status::Delivered { "DELIVRD" } else { "UNDELIV" }, "error_code": rng.random_range(0..999).to_string(), "sent_at": "1764921600", "delivered_at": "1764921601", "mobile": "redacted", "custom": id.as_str()})
        }
        "ses" => {
            json!({"eventType": if status == Status::Failed { "Bounce" } else { "Delivery" }, "mail": {"messageId": pmid, "timestamp": "2026-01-01T00:00:00.000Z", "source": "notifications@example.com", "destination": ["redacted"]}, "delivery": {"processingTimeMillis": rng.random_range(100..5000), "smtpResponse": "250 2.6.0 Message received", "reportingMTA": "a8-30.smtp-out.amazonses.com"}})
        }
        "sns-sms" => {
            json!({"notification": {"messageId": pmid, "timestamp": "2026-01-01 00:00:00.000"}, "delivery": {"destination": "redacted", "providerResponse": "Message has been accepted by phone carrier", "dwellTimeMs": rng.random_range(100..900), "priceInUSD": 0.00645}, "status": if status == Status::Delivered { "SUCCESS" } else { "FAILURE" }})
        }
        _ => {
            json!({"id": pmid, "status": if status == Status::Delivered { "DELIVERED" } else { "FAILED" }, "reference": id.as_str()})
        }
    }
}
