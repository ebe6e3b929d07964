//! Bounds on a message's event trail. A message retried for days, or one a
//! vendor reports on again and again, would otherwise grow a trail without
//! end (and, on MongoDB, hit the 16 MB document limit, after which nothing
//! about it can be stored). Past [`MAX_TRAIL`] events, the oldest events
//! after the first few are folded into one summary event; the start of the
//! trail and its most recent events stay as they were.

use std::collections::BTreeMap;

use serde_json::json;

use crate::Event;

/// The most events a trail holds before it is compacted.
pub const MAX_TRAIL: usize = 200;
/// Events kept from the start of the trail (acceptance, first attempts).
pub const KEEP_FIRST: usize = 10;
/// Events kept from the end when compacting; a compacted trail has
/// `KEEP_FIRST + 1 + KEEP_LAST` events, so compaction runs once every
/// hundred or so events, not on every write.
pub const KEEP_LAST: usize = 89;

/// The component of summary events.
pub const SUMMARY_COMPONENT: &str = "trail";

/// Folds the middle of a trail longer than [`MAX_TRAIL`] into one summary
/// event; shorter trails come back unchanged. A summary from an earlier
/// compaction is folded into the new one, its counts kept.
pub fn compact(events: Vec<Event>) -> Vec<Event> {
    if events.len() <= MAX_TRAIL {
        return events;
    }
    let mut events = events;
    let last: Vec<Event> = events.split_off(events.len() - KEEP_LAST);
    let middle: Vec<Event> = events.split_off(KEEP_FIRST);
    let mut first = events;
    let mut total = 0u64;
    let mut by_component: BTreeMap<String, u64> = BTreeMap::new();
    for event in &middle {
        let folded = event
            .raw
            .as_ref()
            .filter(|_| event.component == SUMMARY_COMPONENT)
            .and_then(|raw| raw.get("summarised"));
        match folded {
            Some(summary) => {
                total += summary.get("events").and_then(|n| n.as_u64()).unwrap_or(0);
                if let Some(counts) = summary.get("by_component").and_then(|c| c.as_object()) {
                    for (component, n) in counts {
                        *by_component.entry(component.clone()).or_default() +=
                            n.as_u64().unwrap_or(0);
                    }
                }
            }
            None => {
                total += 1;
                *by_component.entry(event.component.clone()).or_default() += 1;
            }
        }
    }
    let (from, to) = match (middle.first(), middle.last()) {
        (Some(from), Some(to)) => (from.at, to.at),
        // Unreachable: the middle of an over-long trail is never empty.
        _ => return [first, last].concat(),
    };
    let counts: Vec<String> = by_component
        .iter()
        .map(|(component, n)| format!("{component} {n}"))
        .collect();
    let mut summary = Event::new(
        SUMMARY_COMPONENT,
        format!(
            "{total} events from {} to {} summarised ({})",
            from.to_rfc3339(),
            to.to_rfc3339(),
            counts.join(", ")
        ),
    )
    .raw(json!({ "summarised": { "events": total, "by_component": by_component } }));
    summary.at = to;
    first.push(summary);
    first.extend(last);
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let component = if i % 2 == 0 {
                    "dispatcher"
                } else {
                    "response-handler"
                };
                Event::new(component, format!("event {i}"))
            })
            .collect()
    }

    #[test]
    fn short_trails_are_left_alone() {
        let events = trail(MAX_TRAIL);
        assert_eq!(compact(events.clone()), events);
    }

    #[test]
    fn the_middle_of_a_long_trail_is_summarised() {
        let events = trail(MAX_TRAIL + 1);
        let compacted = compact(events.clone());
        assert_eq!(compacted.len(), KEEP_FIRST + 1 + KEEP_LAST);
        assert_eq!(compacted[..KEEP_FIRST], events[..KEEP_FIRST]);
        assert_eq!(
            compacted[KEEP_FIRST + 1..],
            events[events.len() - KEEP_LAST..]
        );
        let summary = &compacted[KEEP_FIRST];
        let folded = MAX_TRAIL + 1 - KEEP_FIRST - KEEP_LAST;
        assert_eq!(summary.component, SUMMARY_COMPONENT);
        assert!(
            summary
                .details
                .starts_with(&format!("{folded} events from")),
            "{}",
            summary.details
        );
        assert_eq!(summary.at, events[events.len() - KEEP_LAST - 1].at);
    }

    #[test]
    fn a_second_compaction_keeps_the_first_summary_counts() {
        let mut events = compact(trail(MAX_TRAIL + 1));
        let first_folded = MAX_TRAIL + 1 - KEEP_FIRST - KEEP_LAST;
        events.extend(trail(MAX_TRAIL + 1 - events.len()));
        let compacted = compact(events);
        let summary = &compacted[KEEP_FIRST];
        let raw = summary.raw.as_ref().expect("raw");
        // The first summary plus every event between it and the kept tail.
        let expected = first_folded + (MAX_TRAIL + 1 - KEEP_FIRST - KEEP_LAST - 1);
        assert_eq!(raw["summarised"]["events"], expected as u64);
        let by_component = raw["summarised"]["by_component"]
            .as_object()
            .expect("counts");
        let sum: u64 = by_component.values().filter_map(|n| n.as_u64()).sum();
        assert_eq!(sum, expected as u64);
        assert!(by_component.get(SUMMARY_COMPONENT).is_none());
    }
}
