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
