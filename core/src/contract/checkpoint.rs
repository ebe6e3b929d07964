//! The [`Checkpoints`] contract.

use std::sync::Arc;

use serde_json::json;

use crate::ports::checkpoint::Checkpoints;

pub async fn keeps_the_last_value_per_name(checkpoints: Arc<dyn Checkpoints>) {
    assert_eq!(checkpoints.load("logs/a").await.expect("load"), None);
    let first = json!({"from_ms": 1, "seen": ["e1"]});
    checkpoints.save("logs/a", &first).await.expect("save");
    assert_eq!(checkpoints.load("logs/a").await.expect("load"), Some(first));
    let second = json!({"from_ms": 2, "seen": ["e2", "e3"]});
    checkpoints.save("logs/a", &second).await.expect("save");
    checkpoints
        .save("logs/b", &json!("another"))
        .await
        .expect("save");
    assert_eq!(
        checkpoints.load("logs/a").await.expect("load"),
        Some(second)
    );
    assert_eq!(
        checkpoints.load("logs/b").await.expect("load"),
        Some(json!("another"))
    );
}

/// Expands to one test per case of the checkpoint contract.
#[macro_export]
macro_rules! checkpoint_contract {
    ($make:expr) => {
        $crate::__contract_cases!(checkpoint, $make, [keeps_the_last_value_per_name,]);
    };
}
