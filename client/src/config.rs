use mdc_core::InvalidSetting;
use std::collections::HashMap;
use std::time::Duration;

use mdc_core::{MessageType, Priority};
use serde::{Deserialize, Serialize};

/// The longest deadline a config can give a message (30 days): no message
/// is sent, or asked after at its vendor, later than this after its creation.
pub const LONGEST_DEADLINE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What enrichment and validation need to know; part of `mdc`'s config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Sender id (SMS) per message type, used when a request names none.
    pub senders: HashMap<MessageType, String>,
    /// How long a message of each type may wait before it expires.
    #[serde(with = "mdc_core::durations::map")]
    pub deadlines: HashMap<MessageType, Duration>,
    /// Caps the deadline per priority (e.g. bulk may wait longer than critical).
    #[serde(with = "mdc_core::durations::map")]
    pub priority_deadline_caps: HashMap<Priority, Duration>,
    /// Longest SMS accepted, in segments.
    pub sms_max_segments: u32,
    /// Largest email body (text plus HTML), in bytes.
    pub email_max_body_bytes: usize,
    /// Largest total size of an email's attachments (decoded), in bytes.
    pub email_max_attachment_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            senders: HashMap::from([
                (MessageType::Otp, "MDCOTP".to_owned()),
                (MessageType::Transactional, "MDC".to_owned()),
                (MessageType::Marketing, "MDCPROMO".to_owned()),
            ]),
            deadlines: HashMap::from([
                (MessageType::Otp, Duration::from_secs(10 * 60)),
                (MessageType::Transactional, Duration::from_secs(24 * 3600)),
                (MessageType::Marketing, Duration::from_secs(72 * 3600)),
            ]),
            priority_deadline_caps: HashMap::new(),
            sms_max_segments: 10,
            email_max_body_bytes: 5 * 1024 * 1024,
            email_max_attachment_bytes: 10 * 1024 * 1024,
        }
    }
}

impl ClientConfig {
    /// The deadline of a message of this type and priority, from its creation.
    pub fn deadline(&self, message_type: MessageType, priority: Priority) -> Duration {
        let by_type = self
            .deadlines
            .get(&message_type)
            .copied()
            .unwrap_or(Duration::from_secs(24 * 3600));
        match self.priority_deadline_caps.get(&priority) {
            Some(&cap) => by_type.min(cap),
            None => by_type,
        }
    }

    /// Errors name the config key at fault.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.sms_max_segments == 0 {
            return Err(InvalidSetting::new(
                "client.sms_max_segments",
                "must be at least 1",
            ));
        }
        let month = LONGEST_DEADLINE;
        for (kind, deadline) in &self.deadlines {
            mdc_core::setting::duration_within(
                &format!("client.deadlines.{kind}"),
                *deadline,
                Duration::ZERO,
                month,
            )?;
            if deadline.is_zero() {
                return Err(InvalidSetting::new(
                    format!("client.deadlines.{kind}"),
                    "must be longer than zero",
                ));
            }
        }
        for (priority, cap) in &self.priority_deadline_caps {
            mdc_core::setting::duration_within(
                &format!("client.priority_deadline_caps.{priority}"),
                *cap,
                Duration::from_secs(1),
                month,
            )?;
        }
        for (kind, sender) in &self.senders {
            if sender.is_empty()
                || sender.len() > 11 && !sender.chars().all(|c| c.is_ascii_digit() || c == '+')
            {
                return Err(InvalidSetting::new(
                    format!("client.senders.{kind}"),
                    format!("must be 1-11 letters/digits or a phone number, got {sender:?}"),
                ));
            }
        }
        Ok(())
    }
}
