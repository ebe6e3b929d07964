//! How the store writes messages, and trail events with a vendor payload
//! or an error (the others: `event_codec`): JSON compressed with zstd and
//! a dictionary built into the binary. A record is a few hundred
//! bytes of JSON whose keys, statuses and components repeat from message
//! to message; compressed alone it barely shrinks, with a dictionary of
//! those repeats it takes a fifth to a third of the space.
//!
//! The first byte says how a value is written: `{` is plain JSON (how
//! every value was written before, still read), [`ZSTD_V1`] a whole zstd
//! frame made with dictionary v1 (written before, still read),
//! [`ZSTD_V1_SHORT`] the same frame without its magic number and
//! dictionary id, 8 bytes that say nothing the tag does not (what is
//! written now). A dictionary, once values are written with it, never
//! changes: a better one is added as the next version and the old one kept
//! for reading.

use std::cell::RefCell;
use std::sync::LazyLock;

use serde::de::DeserializeOwned;
use serde::Serialize;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

use crate::db::DbError;

/// Tag of a value compressed with dictionary v1, a whole frame.
const ZSTD_V1: u8 = 1;
/// Tag of a value compressed with dictionary v1, its frame without the
/// magic number ([`MAGIC`]) and dictionary id.
const ZSTD_V1_SHORT: u8 = 2;
/// How every zstd frame begins.
const MAGIC: [u8; 4] = 0xFD2F_B528_u32.to_le_bytes();
/// Tag of a plain JSON value (its opening brace).
const JSON: u8 = b'{';

/// Dictionary v1, trained on generated records and events of every
/// channel and vendor (`write_dictionary` in the tests below made it).
static DICTIONARY_V1: &[u8] = include_bytes!("dictionary-v1.zstd");

/// zstd's level: with a dictionary and values this small, higher levels
/// gain a few bytes for much more time.
const LEVEL: i32 = 1;

/// The largest value a frame may claim to hold; a corrupt header cannot
/// make a read allocate more.
const MAX_DECODED: u64 = 256 * 1024 * 1024;

static ENCODER_V1: LazyLock<EncoderDictionary<'static>> =
    LazyLock::new(|| EncoderDictionary::copy(DICTIONARY_V1, LEVEL));
static DECODER_V1: LazyLock<DecoderDictionary<'static>> =
    LazyLock::new(|| DecoderDictionary::copy(DICTIONARY_V1));

thread_local! {
    // Contexts are reused: creating one costs more than compressing a record.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

fn io_error(what: &str, e: std::io::Error) -> DbError {
    DbError::Storage(format!("{what}: {e}"))
}

/// The stored form of `value`.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    let json = serde_json::to_vec(value)?;
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some(c) => c,
            None => {
                let mut compressor = Compressor::with_prepared_dictionary(&ENCODER_V1)
                    .map_err(|e| io_error("cannot start compressing", e))?;
                compressor
                    .set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))
                    .map_err(|e| io_error("cannot start compressing", e))?;
                slot.insert(compressor)
            }
        };
        // The frame goes after one byte kept for the tag; then its magic
        // number is cut off and the tag takes the place of its last byte.
        let mut out = vec![0; 4 + zstd::zstd_safe::compress_bound(json.len())];
        let written = compressor
            .compress_to_buffer(json.as_slice(), &mut out[1..])
            .map_err(|e| io_error("cannot compress a record", e))?;
        if out[1..5] != MAGIC {
            return Err(DbError::Storage(
                "compressed frame has no magic number".into(),
            ));
        }
        out.drain(..4);
        out[0] = ZSTD_V1_SHORT;
        out.truncate(1 + written - 4);
        Ok(out)
    })
}

/// A value as [`encode`] wrote it, or as plain JSON.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DbError> {
    match bytes.first() {
        Some(&JSON) => Ok(serde_json::from_slice(bytes)?),
        Some(&ZSTD_V1) => {
            let json = decompress(&bytes[1..])?;
            Ok(serde_json::from_slice(&json)?)
        }
        Some(&ZSTD_V1_SHORT) => {
            let mut frame = Vec::with_capacity(bytes.len() + 3);
            frame.extend_from_slice(&MAGIC);
            frame.extend_from_slice(&bytes[1..]);
            let json = decompress(&frame)?;
            Ok(serde_json::from_slice(&json)?)
        }
        Some(tag) => Err(DbError::Storage(format!(
            "stored value has an unknown encoding (first byte {tag:#04x})"
        ))),
        None => Err(DbError::Storage("stored value is empty".into())),
    }
}

fn decompress(frame: &[u8]) -> Result<Vec<u8>, DbError> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size <= MAX_DECODED => size as usize,
        _ => {
            return Err(DbError::Storage(
                "stored value is not a complete compressed frame".into(),
            ))
        }
    };
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(d) => d,
            None => slot.insert(
                Decompressor::with_prepared_dictionary(&DECODER_V1)
                    .map_err(|e| io_error("cannot start decompressing", e))?,
            ),
        };
        decompressor
            .decompress(frame, size)
            .map_err(|e| io_error("cannot decompress a stored value", e))
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use mdc_core::{Event, MessageRecord};

    #[test]
    fn records_and_events_come_back_as_written() {
        for record in samples::records(7, 200) {
            let bytes = encode(&record).expect("encodes");
            assert_eq!(bytes[0], ZSTD_V1_SHORT);
            assert_eq!(decode::<MessageRecord>(&bytes).expect("decodes"), record);
            for event in &record.events {
                assert_eq!(
                    decode::<Event>(&encode(event).expect("encodes")).expect("decodes"),
                    *event
                );
            }
        }
    }

    /// Values written before frames were shortened: tag 1 and a whole
    /// frame, dictionary id included.
    #[test]
    fn whole_frames_written_before_are_still_read() {
        let mut compressor =
            Compressor::with_prepared_dictionary(&ENCODER_V1).expect("compressor starts");
        for record in samples::records(4, 20) {
            let json = serde_json::to_vec(&record).expect("serialises");
            let mut bytes = vec![ZSTD_V1];
            bytes.extend(compressor.compress(&json).expect("compresses"));
            assert_eq!(&bytes[1..5], MAGIC);
            assert_eq!(decode::<MessageRecord>(&bytes).expect("decodes"), record);
            // The same value written now is 8 bytes shorter.
            assert_eq!(encode(&record).expect("encodes").len() + 8, bytes.len());
        }
    }

    #[test]
    fn plain_json_written_before_is_still_read() {
        let record = samples::records(3, 1).remove(0);
        let json = serde_json::to_vec(&record).expect("serialises");
        assert_eq!(decode::<MessageRecord>(&json).expect("decodes"), record);
    }

    /// Records the dictionary was not trained on (another seed) take at
    /// most a third of their JSON: the dictionary is in use and fits them.
    #[test]
    fn the_dictionary_shrinks_records_it_was_not_trained_on() {
        let (mut json, mut stored) = (0, 0);
        for record in samples::records(99, 500) {
            json += serde_json::to_vec(&record).expect("serialises").len();
            stored += encode(&record).expect("encodes").len();
            for event in &record.events {
                json += serde_json::to_vec(event).expect("serialises").len();
                stored += encode(event).expect("encodes").len();
            }
        }
        assert!(
            stored * 3 < json,
            "{stored} bytes stored for {json} bytes of JSON"
        );
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let record = samples::records(5, 1).remove(0);
        let bytes = encode(&record).expect("encodes");
        for broken in [
            &[][..],
            &[0xff, 1, 2][..],
            &[ZSTD_V1][..],
            &[ZSTD_V1_SHORT][..],
            &[ZSTD_V1_SHORT, 0xff, 0xff, 0xff, 0xff][..],
            &bytes[..bytes.len() / 2],
            &[ZSTD_V1, 0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff][..],
        ] {
            assert!(decode::<MessageRecord>(broken).is_err(), "{broken:?}");
        }
    }

    /// Version 1 is fixed: values on disk were written with it. A new
    /// dictionary is a new version (tag, file and decoder), never a new v1.
    #[test]
    fn dictionary_v1_is_unchanged() {
        assert_eq!(DICTIONARY_V1.len(), 16 * 1024);
        let digest = DICTIONARY_V1
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
        assert_eq!(digest, DICTIONARY_V1_FNV);
    }

    const DICTIONARY_V1_FNV: u64 = 9_181_157_492_922_050_026;

    /// Writes a dictionary trained on generated samples. Run by hand
    /// (`cargo test -p mdc-embedded write_dictionary -- --ignored`) only
    /// to make the next version; v1 must stay as it is.
    #[test]
    #[ignore = "makes a new dictionary file; only for a new version"]
    fn write_dictionary() {
        let mut values = Vec::new();
        for record in samples::records(1, 4000) {
            values.push(serde_json::to_vec(&record).expect("serialises"));
            for event in &record.events {
                values.push(serde_json::to_vec(event).expect("serialises"));
            }
        }
        let dictionary = zstd::dict::from_samples(&values, 16 * 1024).expect("dictionary trains");
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/dictionary-next.zstd");
        std::fs::write(&path, dictionary).expect("dictionary written");
        println!("wrote {}", path.display());
    }

    /// Records and trails of every channel, vendor and ending, with varied
    /// recipients, bodies and times, as the pipeline writes them.
    pub(in crate::store) mod samples {
        use chrono::{Duration, TimeZone, Utc};
        use mdc_core::message::{PushTarget, SmsEncoding};
        use mdc_core::{
            Content, Event, Message, MessageId, MessageRecord, MessageType, Priority, Status,
        };
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
            let ulid =
                ulid::Ulid::from_parts(created.timestamp_millis() as u64, rng.random::<u128>());
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
                    ulid::Ulid::from_parts(
                        created.timestamp_millis() as u64 + 5,
                        rng.random::<u128>()
                    )
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
                    ..Event::new("dispatcher", format!("attempt {attempt} started"))
                        .status(Status::Sending)
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
                1 if channel == mdc_core::Channel::Email => {
                    (Status::Failed, "bounced (vendor report)")
                }
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
    }
}
