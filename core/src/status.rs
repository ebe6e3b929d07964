use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a message is in its life. Statuses only move forward; see
/// [`Status::can_move_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Accepted,
    Queued,
    Sending,
    Sent,
    Delivered,
    Failed,
    Expired,
    Rejected,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 9] = [
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

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Delivered
                | Status::Failed
                | Status::Expired
                | Status::Rejected
                | Status::Cancelled
        )
    }

    /// Whether a message in `self` may move to `next`.
    ///
    /// The graph is acyclic apart from `sending → sending` (a new attempt or a
    /// scheduled retry), so a late `sent` never overwrites `delivered` and
    /// nothing leaves a terminal status.
    pub fn can_move_to(self, next: Status) -> bool {
        use Status::*;
        match self {
            Accepted => matches!(
                next,
                Queued | Sending | Failed | Expired | Rejected | Cancelled
            ),
            Queued => matches!(next, Sending | Failed | Expired | Cancelled),
            Sending => matches!(next, Sending | Sent | Delivered | Failed | Expired),
            Sent => matches!(next, Delivered | Failed),
            Delivered | Failed | Expired | Rejected | Cancelled => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Rejected => "rejected",
            Status::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown status `{0}`")]
pub struct UnknownStatus(String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::Status::{self, *};

    #[test]
    fn terminal_statuses_never_move() {
        for from in Status::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in Status::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn late_sent_never_overwrites_delivered_and_nothing_goes_back() {
        assert!(!Delivered.can_move_to(Sent));
        assert!(!Sent.can_move_to(Sending));
        assert!(!Sending.can_move_to(Queued));
        assert!(!Queued.can_move_to(Accepted));
        assert!(Sending.can_move_to(Delivered));
        assert!(Sent.can_move_to(Failed));
        assert!(
            !Sent.can_move_to(Expired),
            "a sent message can no longer expire"
        );
    }

    #[test]
    fn the_graph_is_acyclic_apart_from_sending_retries() {
        // Depth-first search for a cycle of length > 1.
        fn reaches(from: Status, target: Status, seen: &mut Vec<Status>) -> bool {
            for next in Status::ALL {
                if next == from || !from.can_move_to(next) || seen.contains(&next) {
                    continue;
                }
                if next == target {
                    return true;
                }
                seen.push(next);
                if reaches(next, target, seen) {
                    return true;
                }
            }
            false
        }
        for s in Status::ALL {
            assert!(!reaches(s, s, &mut Vec::new()), "cycle through {s}");
        }
    }

    #[test]
    fn parses_its_own_names() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().ok(), Some(s));
        }
        assert!("done".parse::<Status>().is_err());
    }
}
