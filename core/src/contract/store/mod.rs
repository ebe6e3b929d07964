//! The [`Store`] contract, its cases by theme.

use std::sync::Arc;

use chrono::Duration;

use super::sample_message;
use crate::message::Content;
use crate::ports::store::{Brief, Claim, Created, ListFilter, Store, Transition, Updated, Verify};
use crate::{Channel, Event, MessageId, MessageRecord, Status};

mod claims;
mod keys;
mod reads;
mod reports;
mod retention;

pub use claims::*;
pub use keys::*;
pub use reads::*;
pub use reports::*;
pub use retention::*;

fn record(to: &str) -> MessageRecord {
    MessageRecord::new(
        sample_message(to),
        Status::Queued,
        Event::new("ingest", "accepted").status(Status::Queued),
    )
}

/// A queued email to `to`.
fn email_record(to: &str) -> MessageRecord {
    let mut email = record(to);
    email.message.content = Content::Email {
        from: "noreply@example.com".into(),
        subject: "Hi".into(),
        text: Some("Hello".into()),
        html: None,
        attachments: Vec::new(),
    };
    email
}

async fn stored(store: &Arc<dyn Store>, to: &str) -> MessageRecord {
    let record = record(to);
    assert_eq!(store.create(&record).await.expect("create"), Created::New);
    record
}

/// A new message stored and claimed for its first attempt (a 30 s lease).
async fn stored_and_claimed(store: &Arc<dyn Store>, to: &str) -> MessageRecord {
    let record = stored(store, to).await;
    let now = crate::now();
    store
        .claim(&record.message.id, now, now + Duration::seconds(30), "t")
        .await
        .expect("claim");
    record
}

/// Expands to one test per case of the store contract. `$make` is an
/// expression yielding a future of a fresh `Arc<dyn Store>`.
#[macro_export]
macro_rules! store_contract {
    ($make:expr) => {
        $crate::__contract_cases!(
            store,
            $make,
            [
                create_then_get_round_trips,
                a_message_created_from_its_json_reads_back_whole,
                same_idempotency_key_returns_the_existing_message,
                idempotency_keys_are_per_service,
                the_key_holder_is_the_message_stored_under_the_key,
                concurrent_claims_yield_one_owner,
                a_claim_by_message_hands_out_the_callers_message,
                sent_and_terminal_messages_are_not_claimed,
                a_message_s_channel_told_in_advance_finds_it,
                expired_lease_is_taken_over_with_verification,
                pending_retry_is_claimed_only_when_due,
                statuses_only_move_forward,
                stale_attempt_outcomes_are_ignored,
                finds_messages_by_provider_message_id,
                lists_by_filters_newest_first,
                counts_messages_by_status,
                pages_walk_every_message_once_in_each_order,
                discarding_removes_only_messages_nothing_has_touched,
                a_create_racing_its_key_holders_discard_stores_or_finds,
                a_key_holds_one_message_across_channels,
                a_key_freed_in_one_channel_is_free_in_all,
                creates_on_two_channels_under_one_key_keep_one_message,
                a_lease_is_extended_only_by_its_attempt,
                a_long_trail_is_compacted,
                a_report_applies_only_to_its_providers_message,
                an_unconfirmed_send_is_settled_by_its_providers_report,
                a_report_settles_a_message_no_attempt_is_sending,
                only_the_attempt_in_flight_ends_its_message,
                retention_removes_old_records_and_clears_old_bodies,
                retention_works_in_bounded_steps,
                retention_takes_bodies_kept_longer_than_records,
                recent_events_are_the_last_of_the_trail,
                an_applied_update_hands_out_the_record_it_left,
                an_applied_update_hands_out_the_brief_it_left,
            ]
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_cases {
    ($suite:ident, $make:expr, [$($case:ident),+ $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $make.await;
                $crate::contract::$suite::$case(backend).await;
            }
        )+
    };
}
