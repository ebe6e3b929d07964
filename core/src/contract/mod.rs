//! Contract suites: the behaviour every implementation of a port must show.
//!
//! A backend crate runs a suite with the matching macro, which expands to one
//! `#[tokio::test]` per case, each on a fresh, isolated backend instance:
//!
//! ```ignore
//! mdc_core::store_contract!(async { Arc::new(MyStore::open_temp().await) as Arc<dyn Store> });
//! ```

pub mod cache;
pub mod checkpoint;
pub mod devices;
pub mod fleet;
pub mod keys;
pub mod queue;
pub mod retry;
pub mod store;
pub mod suppression;
pub mod webhooks;

use chrono::Duration;

use crate::message::{Content, SmsEncoding};
use crate::{Message, MessageId, MessageType, Priority};

/// A valid SMS message for `to`, as the client would produce it.
pub fn sample_message(to: &str) -> Message {
    let now = crate::now();
    let id = MessageId::generate();
    Message {
        idempotency_key: Message::own_idempotency_key(&id),
        id,
        priority: Priority::Normal,
        message_type: MessageType::Transactional,
        to: to.to_owned(),
        sender: Some("MDC".to_owned()),
        content: Content::Sms {
            body: "Your parcel is on its way".to_owned(),
            encoding: SmsEncoding::Gsm7,
            segments: 1,
            template_id: None,
        },
        created_at: now,
        deadline: now + Duration::minutes(10),
        reference: None,
        metadata: None,
        service: None,
        direct: false,
    }
}
