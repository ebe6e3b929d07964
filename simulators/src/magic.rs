//! Magic recipients: what a simulator does depends on who the message is for,
//! like the SES mailbox simulator. Everything else is delivered.
//!
//! | outcome | SMS | email | push token |
//! |---|---|---|---|
//! | refused at send (permanent) | `+14155550190` | `reject@sim.mdc.test` | `sim-reject…` |
//! | accepted, then reported failed | `+14155550191` | `bounce@sim.mdc.test` | `sim-bounce…` |
//! | first attempt times out after the vendor accepted it | `+14155550192` | `timeout@sim.mdc.test` | `sim-timeout…` |
//! | fails transiently N times (1-9), then delivered | `+1415555018N` | `transient-N@sim.mdc.test` | `sim-transient-N…` |

use mdc_core::Channel;

/// The simulator's behaviour for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    Deliver,
    Reject,
    Bounce,
    Timeout,
    Transient(u32),
}

/// The domain of the magic email addresses.
pub const EMAIL_DOMAIN: &str = "sim.mdc.test";

impl Magic {
    pub fn of(channel: Channel, to: &str) -> Magic {
        match channel {
            Channel::Sms => match to.strip_prefix("+141555501") {
                Some("90") => Magic::Reject,
                Some("91") => Magic::Bounce,
                Some("92") => Magic::Timeout,
                Some(rest) => match rest.strip_prefix('8').and_then(|n| n.parse().ok()) {
                    Some(n) if n > 0 => Magic::Transient(n),
                    _ => Magic::Deliver,
                },
                None => Magic::Deliver,
            },
            Channel::Email => match to.split_once('@') {
                Some((local, domain)) if domain.eq_ignore_ascii_case(EMAIL_DOMAIN) => {
                    Self::keyword(&local.to_ascii_lowercase())
                }
                _ => Magic::Deliver,
            },
            Channel::Push => match to.strip_prefix("sim-") {
                Some(rest) => Self::keyword(rest),
                None => Magic::Deliver,
            },
        }
    }

    fn keyword(word: &str) -> Magic {
        if word.starts_with("reject") {
            Magic::Reject
        } else if word.starts_with("bounce") {
            Magic::Bounce
        } else if word.starts_with("timeout") {
            Magic::Timeout
        } else if let Some(rest) = word.strip_prefix("transient-") {
            match rest.chars().next().and_then(|c| c.to_digit(10)) {
                Some(n) if n > 0 => Magic::Transient(n),
                _ => Magic::Deliver,
            }
        } else {
            Magic::Deliver
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_documented_recipients() {
        let cases = [
            (Channel::Sms, "+14155550123", Magic::Deliver),
            (Channel::Sms, "+14155550190", Magic::Reject),
            (Channel::Sms, "+14155550191", Magic::Bounce),
            (Channel::Sms, "+14155550192", Magic::Timeout),
            (Channel::Sms, "+14155550183", Magic::Transient(3)),
            (Channel::Sms, "+14155550180", Magic::Deliver),
            (Channel::Email, "reject@sim.mdc.test", Magic::Reject),
            (Channel::Email, "Bounce@SIM.mdc.test", Magic::Bounce),
            (
                Channel::Email,
                "transient-2@sim.mdc.test",
                Magic::Transient(2),
            ),
            (Channel::Email, "bounce@example.com", Magic::Deliver),
            (Channel::Push, "sim-timeout-device", Magic::Timeout),
            (Channel::Push, "sim-transient-1-device", Magic::Transient(1)),
            (Channel::Push, "a1b2c3d4e5f6a7b8", Magic::Deliver),
        ];
        for (channel, to, magic) in cases {
            assert_eq!(Magic::of(channel, to), magic, "{channel} {to}");
        }
    }
}
