//! The MongoDB store against a real MongoDB-protocol server started by
//! scripts/test-services, each test in its own collections.

use std::sync::Arc;

use mdc_core::ports::Store;
use mdc_mongodb::{MongoConfig, MongoStore};

async fn fresh() -> MongoStore {
    let url = std::env::var("MDC_TEST_MONGODB_URL")
        .expect("MDC_TEST_MONGODB_URL is not set: run the tests with ./scripts/test");
    let config = MongoConfig {
        url,
        database: "mdc_test".into(),
        prefix: format!("t{}_", ulid::Ulid::new()),
        majority_writes: false,
        records_ttl: None,
    };
    MongoStore::connect(&config).await.expect("connect")
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
    let collection = client
        .database("mdc_test")
        .collection::<mongodb::bson::Document>(&format!("{prefix}messages_sms"));
    let ttl_of = || async {
        let mut found = None;
        let mut cursor = collection.list_indexes().await.expect("list indexes");
        while cursor.advance().await.expect("next") {
            let index = cursor.deserialize_current().expect("index");
            let options = index.options.unwrap_or_default();
            if options.name.as_deref() == Some("created_date_ttl") {
                found = Some(options.expire_after.map(|d| d.as_secs()));
            }
        }
        found
    };

    connect(Some(30 * 86400)).await;
    assert_eq!(ttl_of().await, Some(Some(30 * 86400)));
    connect(Some(30 * 86400)).await;
    assert_eq!(
        ttl_of().await,
        Some(Some(30 * 86400)),
        "unchanged on restart"
    );
    connect(Some(7 * 86400)).await;
    assert_eq!(ttl_of().await, Some(Some(7 * 86400)), "replaced");
    connect(None).await;
    assert_eq!(ttl_of().await, None, "dropped");
}
