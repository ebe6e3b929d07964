//! Pre-emption between the priority lanes of one channel, with a floor.
//!
//! While a higher lane has a backlog, the lower lanes pause. A lane has a
//! backlog while its last fetch came back full (as many records as it asked
//! for, so more may be waiting). A steady trickle that each fetch empties
//! is sent as it comes, and the lower lanes keep going beside it in smaller
//! batches. A lane that
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

/// What one consumer's last fetch found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Found {
    #[default]
    Nothing,
    /// Fewer records than it asked for: the lane is drained.
    Some,
    /// As many as it asked for: more may be waiting.
    Full,
}

/// Where a lane stands against the higher lanes of its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// No higher lane has anything: full batches.
    Free,
    /// A higher lane is sending what arrives: smaller batches, so its
    /// records do not wait behind a large batch's writes.
    Sharing,
    /// A higher lane has a backlog: paused, but for the owed share.
    PreEmpted,
}

/// While a higher lane is sharing the channel, a lower lane fetches this
/// fraction of `dispatcher.batch_size`.
pub(crate) const SHARING_DIVISOR: usize = 8;

/// What one lane consumer's last fetch found, counted in its gate. Its
/// count is taken back when it is dropped, so a consumer that panics (and
/// is started again with a new slot) or is cancelled leaves nothing
/// behind that would hold the lower lanes back for ever.
pub(crate) struct LaneSlot<'a> {
    gate: &'a LaneGate,
    priority: Priority,
    found: Found,
}

impl LaneSlot<'_> {
    pub(crate) fn set(&mut self, now: Found) {
        self.gate.found(self.priority, &mut self.found, now);
    }
}

impl Drop for LaneSlot<'_> {
    fn drop(&mut self) {
        self.set(Found::Nothing);
    }
}

pub(crate) struct LaneGate {
    /// Consumers per lane whose last fetch came back full.
    full: [AtomicU32; 3],
    /// Consumers per lane whose last fetch returned records.
    active: [AtomicU32; 3],
    /// Decayed count of records handled per lane.
    handled: Mutex<[f64; 3]>,
    /// The share of sends each lane is guaranteed while it has a backlog.
    min_share: [f64; 3],
}

fn count(counter: &AtomicU32, was: bool, now: bool) {
    match (was, now) {
        (false, true) => {
            counter.fetch_add(1, Ordering::AcqRel);
        }
        (true, false) => {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
        _ => {}
    }
}

impl LaneGate {
    /// `min_share` is per lane, as fractions (0.1 for 10 %).
    pub(crate) fn new(min_share: [f64; 3]) -> Self {
        Self {
            full: Default::default(),
            active: Default::default(),
            handled: Mutex::new([0.0; 3]),
            min_share,
        }
    }

    /// One consumer's place in `priority`'s counts, for as long as the
    /// consumer runs.
    pub(crate) fn slot(&self, priority: Priority) -> LaneSlot<'_> {
        LaneSlot {
            gate: self,
            priority,
            found: Found::Nothing,
        }
    }

    /// Records what one consumer of `priority` found (`was` is what its
    /// fetch before found).
    fn found(&self, priority: Priority, was: &mut Found, now: Found) {
        if *was != now {
            let lane = rank(priority);
            count(&self.full[lane], *was == Found::Full, now == Found::Full);
            count(
                &self.active[lane],
                *was != Found::Nothing,
                now != Found::Nothing,
            );
            *was = now;
        }
    }

    /// Where `priority`'s lane stands against the higher lanes.
    pub(crate) fn standing(&self, priority: Priority) -> Standing {
        let higher = ..rank(priority);
        let any = |counters: &[AtomicU32]| counters.iter().any(|n| n.load(Ordering::Acquire) > 0);
        if any(&self.full[higher]) {
            Standing::PreEmpted
        } else if any(&self.active[higher]) {
            Standing::Sharing
        } else {
            Standing::Free
        }
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
        let mut critical = gate.slot(Priority::Critical);
        critical.set(Found::Full);
        assert_eq!(gate.standing(Priority::Normal), Standing::PreEmpted);
        assert_eq!(gate.standing(Priority::Bulk), Standing::PreEmpted);
        assert_eq!(gate.standing(Priority::Critical), Standing::Free);
        critical.set(Found::Nothing);
        assert_eq!(gate.standing(Priority::Bulk), Standing::Free);
    }

    #[test]
    fn a_drained_higher_lane_shares_and_any_backlog_pre_empts() {
        let gate = LaneGate::new([0.0, 0.0, 0.0]);
        let (mut first, mut second) =
            (gate.slot(Priority::Critical), gate.slot(Priority::Critical));
        first.set(Found::Some);
        assert_eq!(gate.standing(Priority::Bulk), Standing::Sharing);
        second.set(Found::Full);
        assert_eq!(gate.standing(Priority::Bulk), Standing::PreEmpted);
        second.set(Found::Some);
        assert_eq!(gate.standing(Priority::Bulk), Standing::Sharing);
        first.set(Found::Nothing);
        assert_eq!(
            gate.standing(Priority::Bulk),
            Standing::Sharing,
            "one still sends"
        );
        second.set(Found::Nothing);
        assert_eq!(gate.standing(Priority::Bulk), Standing::Free);
        // A normal-lane backlog pre-empts bulk, not critical.
        let mut normal = gate.slot(Priority::Normal);
        normal.set(Found::Full);
        assert_eq!(gate.standing(Priority::Bulk), Standing::PreEmpted);
        assert_eq!(gate.standing(Priority::Critical), Standing::Free);
    }

    #[test]
    fn a_dropped_slot_leaves_no_count_behind() {
        let gate = LaneGate::new([0.0, 0.0, 0.0]);
        let mut full = gate.slot(Priority::Critical);
        full.set(Found::Full);
        let mut some = gate.slot(Priority::Normal);
        some.set(Found::Some);
        assert_eq!(gate.standing(Priority::Bulk), Standing::PreEmpted);
        drop(full);
        assert_eq!(gate.standing(Priority::Bulk), Standing::Sharing);
        drop(some);
        assert_eq!(gate.standing(Priority::Bulk), Standing::Free);
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
