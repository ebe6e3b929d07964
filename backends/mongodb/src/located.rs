//! Which channel's collection a message is in, for messages the store has
//! recently created, found or been told about, so that their reads and
//! writes query one collection instead of each in turn.

use std::collections::HashMap;
use std::sync::Mutex;

use mdc_core::{Channel, MessageId};

/// Messages remembered at most; the map is emptied when it is full (a
/// forgotten message is looked for in each collection again). About 100
/// bytes an entry.
const CAPACITY: usize = 65_536;

#[derive(Default)]
pub(crate) struct Located {
    channels: Mutex<HashMap<MessageId, Channel>>,
}

impl Located {
    /// The channel `id` is known to be in. A message never changes channel,
    /// so a message not in that channel's collection is in none.
    pub(crate) fn get(&self, id: &MessageId) -> Option<Channel> {
        self.channels.lock().ok()?.get(id).copied()
    }

    pub(crate) fn note(&self, id: &MessageId, channel: Channel) {
        let Ok(mut channels) = self.channels.lock() else {
            return;
        };
        if channels.len() >= CAPACITY && !channels.contains_key(id) {
            channels.clear();
        }
        channels.insert(id.clone(), channel);
    }

    pub(crate) fn forget(&self, id: &MessageId) {
        if let Ok(mut channels) = self.channels.lock() {
            channels.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_starts_over_and_keeps_the_newest() {
        let located = Located::default();
        let first = MessageId::generate();
        located.note(&first, Channel::Email);
        for _ in 1..CAPACITY {
            located.note(&MessageId::generate(), Channel::Sms);
        }
        assert_eq!(located.get(&first), Some(Channel::Email));
        // Noting a known message again does not empty the map.
        located.note(&first, Channel::Email);
        assert_eq!(located.channels.lock().expect("lock").len(), CAPACITY);
        let newest = MessageId::generate();
        located.note(&newest, Channel::Push);
        assert_eq!(located.get(&first), None);
        assert_eq!(located.get(&newest), Some(Channel::Push));
        assert_eq!(located.channels.lock().expect("lock").len(), 1);
        located.forget(&newest);
        assert_eq!(located.get(&newest), None);
    }
}
