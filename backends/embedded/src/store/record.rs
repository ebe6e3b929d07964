//! A stored message in two parts: the message (recipient, content, the
//! caller's data), written once when it is created, and its small changing
//! [`State`], the only part a status change reads and writes. Rewriting
//! and recompressing the whole record on every claim, `sent` and report
//! cost the store writer time and touched more pages than the change
//! itself.
//!
//! A record written before the parts were kept apart is whole in the
//! messages table and has no state row; it is read as it is and split by
//! its next change.

use chrono::DateTime;
use mdc_core::{Channel, Message, MessageId, MessageRecord, Status, Timestamp};
use redb::ReadableTable;

use super::{codec, rows_of, Tables};
use crate::db::DbError;

/// Everything of a record that changes after it is created, stored in a
/// binary layout ([`State::encode`]): a few dozen bytes and the trail's
/// newest events (at most about 1 KiB), no parsing.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct State {
    pub status: Status,
    pub updated_at: Timestamp,
    /// The message's, kept here for the index keys a change moves.
    pub created_at: Timestamp,
    pub attempts: u32,
    pub lease_until: Option<Timestamp>,
    pub next_attempt_at: Option<Timestamp>,
    pub verify_before_send: bool,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    /// The next trail row's number, so that appending to the trail needs
    /// no lookup of its last row; none in states written before it was
    /// kept (and by [`Tables::put_parts`]), then it is looked up
    /// ([`next_event_seq`]).
    pub next_event: Option<u32>,
    /// The trail's newest events, stored form ([`event_codec`]), after its
    /// rows: a message's usual few events are kept here rather than a row
    /// each, as writing a row cost the store writer about as much as the
    /// state itself ([`super::trail_rows::Trail`] says when they move).
    pub trail: Vec<Vec<u8>>,
    /// The message's channel, so that what a change hands out for an
    /// outcome's metrics ([`mdc_core::ports::Brief`]) needs no decoding of
    /// the message; none in states written before it was kept.
    pub channel: Option<Channel>,
}

/// The number after `id`'s last trail row (0 for none).
pub(super) fn next_event_seq(
    events: &impl ReadableTable<(u128, u32), &'static [u8]>,
    id: u128,
) -> Result<u32, DbError> {
    let last = events.range(rows_of(id))?.next_back().transpose()?;
    Ok(last.map_or(0, |(key, _)| key.value().1 + 1))
}

/// The layout's version, its first byte.
const STATE_V1: u8 = 1;
/// The layout of a state that keeps trail events: the same fields, then
/// the events. A reader that knows only the first layout refuses it
/// rather than rewriting the state without them.
const STATE_V2: u8 = 2;

/// Statuses by their stored code (the index). Fixed: codes on disk keep
/// their meaning; a new status takes the next code.
const STATUS_CODES: [Status; 9] = [
    Status::Accepted,
    Status::Queued,
    Status::Sending,
    Status::Sent,
    Status::Delivered,
    Status::Failed,
    Status::Expired,
    Status::Rejected,
    Status::Cancelled,
];

/// `status`'s stored code (in states and the status index's keys).
pub(super) fn status_code(status: Status) -> Result<u8, DbError> {
    STATUS_CODES
        .iter()
        .position(|s| *s == status)
        .map(|code| code as u8)
        .ok_or_else(|| DbError::Storage(format!("no stored code for {status}")))
}

/// The status stored as `code`.
pub(super) fn status_of(code: u8) -> Result<Status, DbError> {
    STATUS_CODES
        .get(code as usize)
        .copied()
        .ok_or_else(|| DbError::Storage(format!("unknown stored status code {code}")))
}

const HAS_LEASE: u8 = 1;
const HAS_NEXT_ATTEMPT: u8 = 1 << 1;
const VERIFY_BEFORE_SEND: u8 = 1 << 2;
const HAS_PROVIDER: u8 = 1 << 3;
const HAS_PROVIDER_MESSAGE_ID: u8 = 1 << 4;
/// The next trail row's number follows the texts (u32). Readers that
/// predate it stop before it.
const HAS_NEXT_EVENT: u8 = 1 << 5;
/// Trail events follow the next row's number (layout 2): their count
/// (u16), then each as its length (u32) and its stored form.
const HAS_TRAIL: u8 = 1 << 6;
/// The message's channel, a byte ([`CHANNEL_CODES`]), last, after the
/// trail: readers that predate it stop before it.
const HAS_CHANNEL: u8 = 1 << 7;

/// Channels by their stored code. Fixed, as [`STATUS_CODES`].
const CHANNEL_CODES: [Channel; 3] = [Channel::Sms, Channel::Email, Channel::Push];

pub(super) fn nanos(at: Timestamp) -> Result<[u8; 8], DbError> {
    at.timestamp_nanos_opt()
        .map(i64::to_le_bytes)
        .ok_or_else(|| DbError::Storage(format!("time {at} is outside 1677-2262")))
}

/// Reads a binary value's fields in order (a state's, a trail event's);
/// every read checks the length left.
pub(super) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DbError> {
        if self.0.len() < n {
            return Err(DbError::Storage("stored value is cut short".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn byte(&mut self) -> Result<u8, DbError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, DbError> {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(bytes))
    }

    pub fn time(&mut self) -> Result<Timestamp, DbError> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(DateTime::from_timestamp_nanos(i64::from_le_bytes(bytes)))
    }

    pub fn text(&mut self) -> Result<String, DbError> {
        let mut len = [0; 2];
        len.copy_from_slice(self.take(2)?);
        let bytes = self.take(u16::from_le_bytes(len) as usize)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| DbError::Storage("stored value holds text that is not UTF-8".into()))
    }
}

impl State {
    /// Version, status code, flags, update and creation time (ns), attempts,
    /// then what the flags say is there: lease end and next attempt (ns),
    /// provider and its message id (length and UTF-8), the next trail row.
    pub fn encode(&self) -> Result<Vec<u8>, DbError> {
        let code = status_code(self.status)?;
        let mut flags = 0;
        for (present, flag) in [
            (self.lease_until.is_some(), HAS_LEASE),
            (self.next_attempt_at.is_some(), HAS_NEXT_ATTEMPT),
            (self.verify_before_send, VERIFY_BEFORE_SEND),
            (self.provider.is_some(), HAS_PROVIDER),
            (self.provider_message_id.is_some(), HAS_PROVIDER_MESSAGE_ID),
            (self.next_event.is_some(), HAS_NEXT_EVENT),
            (!self.trail.is_empty(), HAS_TRAIL),
            (self.channel.is_some(), HAS_CHANNEL),
        ] {
            if present {
                flags |= flag;
            }
        }
        let trail_bytes: usize = self.trail.iter().map(|e| 4 + e.len()).sum();
        let mut out = Vec::with_capacity(64 + trail_bytes);
        let version = if self.trail.is_empty() {
            STATE_V1
        } else {
            STATE_V2
        };
        out.extend_from_slice(&[version, code, flags]);
        out.extend_from_slice(&nanos(self.updated_at)?);
        out.extend_from_slice(&nanos(self.created_at)?);
        out.extend_from_slice(&self.attempts.to_le_bytes());
        for at in [self.lease_until, self.next_attempt_at]
            .into_iter()
            .flatten()
        {
            out.extend_from_slice(&nanos(at)?);
        }
        for text in [&self.provider, &self.provider_message_id]
            .into_iter()
            .flatten()
        {
            let len = u16::try_from(text.len())
                .map_err(|_| DbError::Storage(format!("{} bytes of vendor id", text.len())))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        if let Some(next) = self.next_event {
            out.extend_from_slice(&next.to_le_bytes());
        }
        if !self.trail.is_empty() {
            if self.next_event.is_none() {
                return Err(DbError::Storage(
                    "a state keeping trail events needs its next row's number".into(),
                ));
            }
            let count = u16::try_from(self.trail.len())
                .map_err(|_| DbError::Storage(format!("{} events in a state", self.trail.len())))?;
            out.extend_from_slice(&count.to_le_bytes());
            for event in &self.trail {
                let len = u32::try_from(event.len())
                    .map_err(|_| DbError::Storage(format!("{} bytes of event", event.len())))?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(event);
            }
        }
        if let Some(channel) = self.channel {
            let code = CHANNEL_CODES
                .iter()
                .position(|c| *c == channel)
                .ok_or_else(|| DbError::Storage(format!("no stored code for {channel}")))?;
            out.push(code as u8);
        }
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DbError> {
        let mut r = Reader(bytes);
        let version = r.byte()?;
        if version != STATE_V1 && version != STATE_V2 {
            return Err(DbError::Storage(format!(
                "stored state has an unknown layout ({version})"
            )));
        }
        let status = status_of(r.byte()?)?;
        let flags = r.byte()?;
        let has = |flag: u8| flags & flag != 0;
        if has(HAS_TRAIL) != (version == STATE_V2) || (has(HAS_TRAIL) && !has(HAS_NEXT_EVENT)) {
            return Err(DbError::Storage(format!(
                "stored state of layout {version} has flags {flags:#x}"
            )));
        }
        let updated_at = r.time()?;
        let created_at = r.time()?;
        let attempts = r.u32()?;
        let lease_until = has(HAS_LEASE).then(|| r.time()).transpose()?;
        let next_attempt_at = has(HAS_NEXT_ATTEMPT).then(|| r.time()).transpose()?;
        let provider = has(HAS_PROVIDER).then(|| r.text()).transpose()?;
        let provider_message_id = has(HAS_PROVIDER_MESSAGE_ID).then(|| r.text()).transpose()?;
        let next_event = has(HAS_NEXT_EVENT).then(|| r.u32()).transpose()?;
        let mut trail = Vec::new();
        if has(HAS_TRAIL) {
            let mut count = [0; 2];
            count.copy_from_slice(r.take(2)?);
            for _ in 0..u16::from_le_bytes(count) {
                let len = r.u32()? as usize;
                trail.push(r.take(len)?.to_vec());
            }
            if trail.is_empty() {
                return Err(DbError::Storage("stored state has an empty trail".into()));
            }
        }
        let channel = match has(HAS_CHANNEL) {
            true => {
                let code = r.byte()?;
                let channel = CHANNEL_CODES.get(code as usize).copied().ok_or_else(|| {
                    DbError::Storage(format!("unknown stored channel code {code}"))
                })?;
                Some(channel)
            }
            false => None,
        };
        Ok(Self {
            status,
            updated_at,
            created_at,
            attempts,
            lease_until,
            next_attempt_at,
            verify_before_send: has(VERIFY_BEFORE_SEND),
            provider,
            provider_message_id,
            next_event,
            trail,
            channel,
        })
    }

    pub fn of(record: &MessageRecord) -> Self {
        Self {
            status: record.status,
            updated_at: record.updated_at,
            created_at: record.message.created_at,
            attempts: record.attempts,
            lease_until: record.lease_until,
            next_attempt_at: record.next_attempt_at,
            verify_before_send: record.verify_before_send,
            provider: record.provider.clone(),
            provider_message_id: record.provider_message_id.clone(),
            next_event: None,
            trail: Vec::new(),
            channel: Some(record.message.channel()),
        }
    }

    /// The record of `message` in this state, without its trail.
    pub fn with(self, message: Message) -> MessageRecord {
        MessageRecord {
            message,
            status: self.status,
            updated_at: self.updated_at,
            attempts: self.attempts,
            lease_until: self.lease_until,
            next_attempt_at: self.next_attempt_at,
            verify_before_send: self.verify_before_send,
            provider: self.provider,
            provider_message_id: self.provider_message_id,
            events: Vec::new(),
        }
    }

    /// A record in this state for the status rules (`apply_claim`,
    /// `apply_update`), which read and change only the state and append to
    /// the trail. Its message is a stand-in with only the id and creation
    /// time: a record that leaves the writer gets the real one first
    /// ([`message_bytes`], decoded outside the writer).
    pub fn stand_in(self, id: &MessageId) -> MessageRecord {
        let message = Message {
            id: id.clone(),
            priority: mdc_core::Priority::Normal,
            message_type: mdc_core::MessageType::Transactional,
            to: String::new(),
            sender: None,
            content: mdc_core::Content::Sms {
                body: String::new(),
                encoding: mdc_core::message::SmsEncoding::Gsm7,
                segments: 0,
                template_id: None,
            },
            idempotency_key: String::new(),
            created_at: self.created_at,
            deadline: self.created_at,
            reference: None,
            metadata: None,
            service: None,
            direct: false,
        };
        self.with(message)
    }
}

/// How `id` is stored: its state, and the whole record when it was written
/// before states were kept apart.
pub(super) enum Stored {
    Split(State),
    Whole(Box<MessageRecord>),
}

pub(super) fn stored(
    messages: &impl ReadableTable<u128, &'static [u8]>,
    states: &impl ReadableTable<u128, &'static [u8]>,
    id: u128,
) -> Result<Option<Stored>, DbError> {
    if let Some(state) = states.get(id)? {
        return Ok(Some(Stored::Split(State::decode(state.value())?)));
    }
    match messages.get(id)? {
        Some(whole) => Ok(Some(Stored::Whole(Box::new(codec::decode(whole.value())?)))),
        None => Ok(None),
    }
}

/// The message of a record whose state is stored apart.
pub(super) fn load_message(
    messages: &impl ReadableTable<u128, &'static [u8]>,
    id: u128,
) -> Result<Message, DbError> {
    let bytes = messages.get(id)?.ok_or_else(|| without_message(id))?;
    codec::decode(bytes.value())
}

fn without_message(id: u128) -> DbError {
    DbError::Storage(format!(
        "state of {} without its message",
        MessageId::from_bits(id)
    ))
}

/// The stored form of the message of a record whose state is stored
/// apart, to decode outside the writer.
pub(super) fn message_bytes(
    messages: &impl ReadableTable<u128, &'static [u8]>,
    id: u128,
) -> Result<Vec<u8>, DbError> {
    let bytes = messages.get(id)?.ok_or_else(|| without_message(id))?;
    Ok(bytes.value().to_vec())
}

/// The record of `id` without its trail.
pub(super) fn load(
    messages: &impl ReadableTable<u128, &'static [u8]>,
    states: &impl ReadableTable<u128, &'static [u8]>,
    id: u128,
) -> Result<Option<MessageRecord>, DbError> {
    Ok(match stored(messages, states, id)? {
        Some(Stored::Split(state)) => Some(state.with(load_message(messages, id)?)),
        Some(Stored::Whole(record)) => Some(*record),
        None => None,
    })
}

impl Tables<'_> {
    pub(super) fn load(&self, id: u128) -> Result<Option<MessageRecord>, DbError> {
        load(&self.messages, &self.states, id)
    }

    /// How many events the trail of a stored record holds: its rows and
    /// those kept in its state.
    pub(super) fn trail_len(&self, id: u128) -> Result<usize, DbError> {
        let (rows, in_state) = match stored(&self.messages, &self.states, id)? {
            Some(Stored::Split(state)) => (state.next_event, state.trail.len()),
            Some(Stored::Whole(_)) | None => (None, 0),
        };
        let rows = match rows {
            Some(rows) => rows,
            None => next_event_seq(&self.events, id)?,
        };
        Ok(rows as usize + in_state)
    }

    /// Writes both parts of a record stored whole, splitting it (its trail
    /// stays in its rows).
    pub(super) fn put_parts(&mut self, record: &MessageRecord) -> Result<(), DbError> {
        let id = record.message.id.bits();
        self.messages
            .insert(id, codec::encode(&record.message)?.as_slice())?;
        self.states
            .insert(id, State::of(record).encode()?.as_slice())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
