//! The MongoDB store against a real MongoDB-protocol server started by
//! scripts/test-services, each test in its own collections.

use std::sync::Arc;

use mdc_core::ports::Store;
use mdc_mongodb::{MongoConfig, MongoStore};

/// Settings for collections of a test's own (a new prefix).
fn fresh_config() -> MongoConfig {
    MongoConfig {
        url: std::env::var("MDC_TEST_MONGODB_URL")
            .expect("MDC_TEST_MONGODB_URL is not set: run the tests with ./scripts/test"),
        database: "mdc_test".into(),
        prefix: format!("t{}_", ulid::Ulid::new()),
        majority_writes: false,
        records_ttl: None,
    }
}

async fn fresh() -> MongoStore {
    MongoStore::connect(&fresh_config()).await.expect("connect")
}

/// [`fresh`], and the database its collections are in with the prefix of
/// their names, for a test that looks at them directly.
async fn fresh_in() -> (MongoStore, mongodb::Database, String) {
    let config = fresh_config();
    let store = MongoStore::connect(&config).await.expect("connect");
    let database = mongodb::Client::with_uri_str(&config.url)
        .await
        .expect("client")
        .database(&config.database);
    (store, database, config.prefix)
}

mod store {
    use super::*;
    mdc_core::store_contract!(async { Arc::new(fresh().await) as Arc<dyn Store> });
}

mod devices {
    use super::*;
    use mdc_core::ports::DeviceRegistry;
    mdc_core::devices_contract!(async {
        Arc::new(fresh().await.devices().await.expect("devices")) as Arc<dyn DeviceRegistry>
    });
}

mod suppression {
    use super::*;
    use mdc_core::ports::SuppressionList;
    mdc_core::suppression_contract!(async {
        Arc::new(fresh().await.suppressions().await.expect("suppressions"))
            as Arc<dyn SuppressionList>
    });
}

mod webhooks {
    use super::*;
    use mdc_core::ports::Webhooks;
    mdc_core::webhooks_contract!(async {
        Arc::new(fresh().await.webhooks().await.expect("webhooks")) as Arc<dyn Webhooks>
    });
}

mod keys {
    use super::*;
    use mdc_core::ports::ApiKeys;
    mdc_core::keys_contract!(async { Arc::new(fresh().await.keys()) as Arc<dyn ApiKeys> });
}

mod checkpoint {
    use super::*;
    use mdc_core::ports::Checkpoints;
    mdc_core::checkpoint_contract!(async {
        Arc::new(fresh().await.checkpoints()) as Arc<dyn Checkpoints>
    });
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = MongoConfig {
        url: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
        database: "x".into(),
        prefix: "x".into(),
        majority_writes: false,
        records_ttl: None,
    };
    let err = MongoStore::connect(&config).await.err().expect("must fail");
    assert!(
        matches!(err, mdc_core::ports::StoreError::Unavailable(_)),
        "{err}"
    );
}

/// 2,500 messages walked 100 at a time while as many more arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_walks_every_message_once_while_more_arrive() {
    mdc_core::contract::store::walk_while_creating(
        Arc::new(fresh().await) as Arc<dyn Store>,
        2_500,
    )
    .await;
}

/// The TTL index follows `records_ttl`: created with its expiry, replaced
/// when the expiry changes, dropped when retention is off.
#[tokio::test]
async fn the_ttl_index_follows_the_records_retention() {
    let url = std::env::var("MDC_TEST_MONGODB_URL")
        .expect("MDC_TEST_MONGODB_URL is not set: run the tests with ./scripts/test");
    let prefix = format!("t{}_", ulid::Ulid::new());
    let connect = |ttl: Option<u64>| {
        let config = MongoConfig {
            url: url.clone(),
            database: "mdc_test".into(),
            prefix: prefix.clone(),
            majority_writes: false,
            records_ttl: ttl.map(std::time::Duration::from_secs),
        };
        async move { MongoStore::connect(&config).await.expect("connect") }
    };
    let client = mongodb::Client::with_uri_str(&url).await.expect("client");
    let collection = |name: &str| {
        client
            .database("mdc_test")
            .collection::<mongodb::bson::Document>(&format!("{prefix}{name}"))
    };
    // A message collection's, and the idempotency keys'.
    let ttl_of = |name: &'static str| async move {
        let mut found = None;
        let mut cursor = collection(name).list_indexes().await.expect("list indexes");
        while cursor.advance().await.expect("next") {
            let index = cursor.deserialize_current().expect("index");
            let options = index.options.unwrap_or_default();
            if options.name.as_deref() == Some("created_date_ttl") {
                found = Some(options.expire_after.map(|d| d.as_secs()));
            }
        }
        found
    };

    for name in ["messages_sms", "message_keys"] {
        connect(Some(30 * 86400)).await;
        assert_eq!(ttl_of(name).await, Some(Some(30 * 86400)), "{name}");
        connect(Some(30 * 86400)).await;
        assert_eq!(
            ttl_of(name).await,
            Some(Some(30 * 86400)),
            "{name}: unchanged on restart"
        );
        connect(Some(7 * 86400)).await;
        assert_eq!(
            ttl_of(name).await,
            Some(Some(7 * 86400)),
            "{name}: replaced"
        );
        connect(None).await;
        assert_eq!(ttl_of(name).await, None, "{name}: dropped");
    }
}

/// A store whose driver counts the `find` commands sent to each collection.
async fn counting_finds(
    prefix: &str,
) -> (
    MongoStore,
    Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    use mongodb::event::{command::CommandEvent, EventHandler};
    let url = std::env::var("MDC_TEST_MONGODB_URL")
        .expect("MDC_TEST_MONGODB_URL is not set: run the tests with ./scripts/test");
    let finds = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let mut options = mongodb::options::ClientOptions::parse(&url)
        .await
        .expect("options");
    let counter = finds.clone();
    options.command_event_handler = Some(EventHandler::callback(move |event: CommandEvent| {
        if let CommandEvent::Started(started) = event {
            if started.command_name == "find" {
                let collection = started.command.get_str("find").unwrap_or("").to_owned();
                *counter
                    .lock()
                    .expect("counter")
                    .entry(collection)
                    .or_default() += 1;
            }
        }
    }));
    let config = MongoConfig {
        url,
        database: "mdc_test".into(),
        prefix: prefix.to_owned(),
        majority_writes: false,
        records_ttl: None,
    };
    let store = MongoStore::connect_with(options, &config)
        .await
        .expect("connect");
    (store, finds)
}

/// The `find` commands counted since the last call, by collection.
fn take(
    finds: &std::sync::Mutex<std::collections::HashMap<String, usize>>,
) -> std::collections::HashMap<String, usize> {
    std::mem::take(&mut *finds.lock().expect("counter"))
}

/// A message's reads and writes query its channel's collection alone once
/// the store knows where it is: created by this store, told by the caller,
/// or found by its provider's id (another process's store knows nothing of
/// it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_message_is_looked_up_in_its_own_collection_only() {
    use mdc_core::ports::Transition;
    use mdc_core::{Channel, Event, MessageRecord, Status};
    let prefix = format!("t{}_", ulid::Ulid::new());
    // Push: the last collection looked in when the store does not know.
    let push = format!("{prefix}messages_push");
    let only_push = |n: usize| std::collections::HashMap::from([(push.clone(), n)]);
    let (creator, created_finds) = counting_finds(&prefix).await;
    let now = mdc_core::now();
    let lease = now + chrono::Duration::seconds(30);
    let new = || {
        let mut message = mdc_core::contract::sample_message("device-1");
        message.content = mdc_core::message::Content::Push {
            target: mdc_core::message::PushTarget::DeviceToken("device-1".into()),
            title: None,
            body: "Your parcel is on its way".into(),
            data: serde_json::Map::new(),
        };
        MessageRecord::new(
            message,
            Status::Queued,
            Event::new("ingest", "accepted").status(Status::Queued),
        )
    };

    // Created here: the claim and the update look in one collection.
    let a = new();
    creator.create(&a).await.expect("create");
    take(&created_finds);
    assert!(matches!(
        creator
            .claim(&a.message.id, now, lease, "t")
            .await
            .expect("claim"),
        mdc_core::ports::Claim::Claimed { .. }
    ));
    assert_eq!(take(&created_finds), only_push(1));

    // Another process, told the channel (a dispatcher has the message, a
    // report handler the cached entry): the claim looks in one collection,
    // and so do the writes after it.
    let b = new();
    creator.create(&b).await.expect("create");
    let (dispatcher, finds) = counting_finds(&prefix).await;
    take(&finds);
    dispatcher.remember_channel(&b.message.id, Channel::Push);
    assert!(matches!(
        dispatcher
            .claim(&b.message.id, now, lease, "t")
            .await
            .expect("claim"),
        mdc_core::ports::Claim::Claimed { .. }
    ));
    let sent = Transition::Sent {
        attempt: 1,
        provider: "sim".into(),
        provider_message_id: "p-b".into(),
        event: Event::new("dispatcher", "sent"),
    };
    dispatcher
        .update(&b.message.id, sent)
        .await
        .expect("update");
    assert_eq!(take(&finds), only_push(2));

    // A third process finds it by its provider's id (each collection in
    // turn), then reads and writes it in its own.
    let (handler, finds) = counting_finds(&prefix).await;
    let id = handler
        .find_by_provider_message_id("sim", "p-b")
        .await
        .expect("find")
        .expect("known");
    assert_eq!(id, b.message.id);
    take(&finds);
    let delivered = Transition::to(Status::Delivered, Event::new("report", "delivered"));
    handler.update(&id, delivered).await.expect("update");
    handler
        .get_recent(&id, 0)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(take(&finds), only_push(2));

    // Unknown to a store: looked for in each collection, then known.
    let (reader, finds) = counting_finds(&prefix).await;
    take(&finds);
    let got = reader
        .get(&a.message.id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(got.status, Status::Sending);
    assert_eq!(take(&finds).values().sum::<usize>(), Channel::ALL.len());
    reader.get(&a.message.id).await.expect("get");
    assert_eq!(take(&finds), only_push(1));
}

/// A key document whose message is gone without it (the TTL index removed
/// the message first, or a discard stopped between its two deletes) holds
/// the key for nothing: the next create under the key, on any channel,
/// removes it and stores its own message.
#[tokio::test]
async fn a_key_whose_message_is_gone_is_taken_again() {
    use mdc_core::ports::Created;
    use mdc_core::{Event, MessageRecord, Status};
    let (store, database, prefix) = fresh_in().await;
    let keyed = |to: &str| {
        let mut message = mdc_core::contract::sample_message(to);
        message.service = Some("billing".into());
        message.idempotency_key = "order-21".into();
        MessageRecord::new(
            message,
            Status::Queued,
            Event::new("ingest", "accepted").status(Status::Queued),
        )
    };
    let sms = keyed("+14155550131");
    assert_eq!(store.create(&sms).await.expect("create"), Created::New);

    let doc = mongodb::bson::doc! { "_id": sms.message.id.as_str() };
    let removed = database
        .collection::<mongodb::bson::Document>(&format!("{prefix}messages_sms"))
        .delete_one(doc)
        .await
        .expect("delete");
    assert_eq!(removed.deleted_count, 1);
    assert_eq!(
        store.key_holder(&sms.message).await.expect("holder"),
        None,
        "a key document whose message is gone names no holder"
    );

    let mut email = keyed("ana@example.com");
    email.message.content = mdc_core::message::Content::Email {
        from: "noreply@example.com".into(),
        subject: "Hi".into(),
        text: Some("Hello".into()),
        html: None,
        attachments: Vec::new(),
    };
    assert_eq!(store.create(&email).await.expect("create"), Created::New);
    assert_eq!(
        store.key_holder(&sms.message).await.expect("holder"),
        Some(email.message.id.clone())
    );
    let keys = database
        .collection::<mongodb::bson::Document>(&format!("{prefix}message_keys"))
        .count_documents(mongodb::bson::doc! {})
        .await
        .expect("count");
    assert_eq!(keys, 1, "the stale document is replaced, not kept beside");
}

/// Discard and retention remove a message's key document with it.
#[tokio::test]
async fn key_documents_leave_with_their_messages() {
    use mdc_core::contract::store::aged_record;
    use mdc_core::{Event, MessageRecord, Status};
    let (store, database, prefix) = fresh_in().await;
    let store: Arc<dyn Store> = Arc::new(store);
    let keys = database.collection::<mongodb::bson::Document>(&format!("{prefix}message_keys"));
    let count = || async {
        keys.count_documents(mongodb::bson::doc! {})
            .await
            .expect("count")
    };
    let keyed = |to: &str, key: &str| {
        let mut message = mdc_core::contract::sample_message(to);
        message.idempotency_key = key.into();
        MessageRecord::new(
            message,
            Status::Queued,
            Event::new("ingest", "accepted").status(Status::Queued),
        )
    };

    let discarded = keyed("+14155550132", "order-22");
    store.create(&discarded).await.expect("create");
    assert_eq!(count().await, 1);
    assert!(store.discard(&discarded).await.expect("discard"));
    assert_eq!(count().await, 0, "discarded with its message");

    let old = aged_record(
        &store,
        keyed("+14155550133", "order-23"),
        chrono::Duration::days(40),
        Status::Delivered,
    )
    .await;
    let kept = keyed("+14155550134", "order-24");
    store.create(&kept).await.expect("create");
    assert_eq!(count().await, 2);
    let before = Some(mdc_core::now() - chrono::Duration::days(30));
    let expired = store.expire(before, None, 100).await.expect("expire");
    assert_eq!(expired.removed, 1);
    assert!(store.get(&old.message.id).await.expect("get").is_none());
    assert_eq!(count().await, 1, "removed with its message, the other kept");
    assert_eq!(
        store.key_holder(&kept.message).await.expect("holder"),
        Some(kept.message.id.clone())
    );
}
