//! Pre-emption between the priority lanes of one channel, with a floor.
//!
//! While a higher lane has a backlog, the lower lanes pause. A lane that
//! still has a backlog of its own is guaranteed its configured share of the
//! channel's recent sends (`dispatcher.min_share`): when it falls below it,
//! it may take a small batch even while pre-empted, so a steady trickle of
//! critical messages cannot starve bulk for ever.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use mdc_core::Priority;

/// Recent sends are counted with a decay: once the channel's total passes
/// this, every count is halved, so the share follows the last few hundred
/// sends rather than all history.
const WINDOW: f64 = 400.0;

pub(crate) fn rank(priority: Priority) -> usize {
    match priority {
        Priority::Critical => 0,
        Priority::Normal => 1,
        Priority::Bulk => 2,
    }
}

pub(crate) struct LaneGate {
    /// Consumers per lane whose last fetch returned records.
    busy: [AtomicU32; 3],
    /// Decayed count of records handled per lane.
    handled: Mutex<[f64; 3]>,
    /// The share of sends each lane is guaranteed while it has a backlog.
    min_share: [f64; 3],
}

impl LaneGate {
    /// `min_share` is per lane, as fractions (0.1 for 10 %).
    pub(crate) fn new(min_share: [f64; 3]) -> Self {
        Self {
            busy: Default::default(),
            handled: Mutex::new([0.0; 3]),
            min_share,
        }
    }

    /// Tracks whether one consumer of `priority` has work (`was` is that
    /// consumer's last state).
    pub(crate) fn set_busy(&self, priority: Priority, was: &mut bool, busy: bool) {
        if *was != busy {
            let counter = &self.busy[rank(priority)];
            if busy {
                counter.fetch_add(1, Ordering::AcqRel);
            } else {
                counter.fetch_sub(1, Ordering::AcqRel);
            }
            *was = busy;
        }
    }

    /// Whether a higher lane than `priority` has a backlog.
    pub(crate) fn pre_empted(&self, priority: Priority) -> bool {
        self.busy[..rank(priority)]
            .iter()
            .any(|n| n.load(Ordering::Acquire) > 0)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, [f64; 3]> {
        self.handled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts `n` records handled on `priority`'s lane.
    pub(crate) fn handled(&self, priority: Priority, n: usize) {
        let mut counts = self.counts();
        counts[rank(priority)] += n as f64;
        if counts.iter().sum::<f64>() > WINDOW {
            for count in counts.iter_mut() {
                *count /= 2.0;
            }
        }
    }

    /// How many records `priority`'s lane may take now although it is
    /// pre-empted, to get back to its share (0 when it has its share).
    pub(crate) fn owed(&self, priority: Priority) -> usize {
        let share = self.min_share[rank(priority)];
        if share <= 0.0 {
            return 0;
        }
        let counts = self.counts();
        let total: f64 = counts.iter().sum();
        let own = counts[rank(priority)];
        if total < 1.0 || own >= share * total {
            return 0;
        }
        // The smallest x with (own + x) / (total + x) >= share.
        let short = (share * total - own) / (1.0 - share).max(f64::EPSILON);
        short.ceil().max(1.0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_higher_backlog_pre_empts_lower_lanes_only() {
        let gate = LaneGate::new([0.0, 0.0, 0.0]);
        let mut critical = false;
        gate.set_busy(Priority::Critical, &mut critical, true);
        assert!(gate.pre_empted(Priority::Normal));
        assert!(gate.pre_empted(Priority::Bulk));
        assert!(!gate.pre_empted(Priority::Critical));
        gate.set_busy(Priority::Critical, &mut critical, false);
        assert!(!gate.pre_empted(Priority::Bulk));
    }

    #[test]
    fn a_starved_lane_is_owed_enough_to_reach_its_share() {
        let gate = LaneGate::new([0.0, 0.2, 0.1]);
        assert_eq!(gate.owed(Priority::Bulk), 0, "nothing sent yet");
        gate.handled(Priority::Critical, 90);
        // (0 + x) / (90 + x) >= 0.1  =>  x >= 10
        assert_eq!(gate.owed(Priority::Bulk), 10);
        // (0 + x) / (90 + x) >= 0.2  =>  x >= 22.5
        assert_eq!(gate.owed(Priority::Normal), 23);
        gate.handled(Priority::Bulk, 10);
        assert_eq!(gate.owed(Priority::Bulk), 0);
        assert_eq!(gate.owed(Priority::Critical), 0, "critical has no floor");
    }

    #[test]
    fn old_sends_fade() {
        let gate = LaneGate::new([0.0, 0.0, 0.1]);
        gate.handled(Priority::Bulk, 300);
        assert_eq!(gate.owed(Priority::Bulk), 0);
        // A long run of critical sends outweighs the old bulk ones.
        for _ in 0..40 {
            gate.handled(Priority::Critical, 100);
        }
        assert!(gate.owed(Priority::Bulk) > 0);
    }
}
