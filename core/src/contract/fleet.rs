//! The [`Fleet`] contract.

use std::sync::Arc;
use std::time::Duration;

use crate::ports::fleet::Fleet;

const ALIVE: Duration = Duration::from_secs(10);

pub async fn counts_the_members_alive(fleet: Arc<dyn Fleet>) {
    assert_eq!(fleet.beat("a", ALIVE).await.expect("beat"), 1);
    assert_eq!(fleet.beat("b", ALIVE).await.expect("beat"), 2);
    assert_eq!(
        fleet.beat("a", ALIVE).await.expect("beat"),
        2,
        "a second beat of a member counts it once"
    );
}

pub async fn a_member_that_stopped_beating_drops_out(fleet: Arc<dyn Fleet>) {
    fleet
        .beat("a", Duration::from_millis(100))
        .await
        .expect("beat");
    // Waiting for the backend's clock to pass a's time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fleet.beat("b", ALIVE).await.expect("beat"),
        1,
        "a's time ran out before b's beat"
    );
    assert_eq!(
        fleet.beat("a", ALIVE).await.expect("beat"),
        2,
        "a counts again once it beats"
    );
}

pub async fn a_member_that_left_drops_out_at_once(fleet: Arc<dyn Fleet>) {
    fleet.beat("a", ALIVE).await.expect("beat");
    assert_eq!(fleet.beat("b", ALIVE).await.expect("beat"), 2);
    fleet.leave("a").await.expect("leave");
    assert_eq!(fleet.beat("b", ALIVE).await.expect("beat"), 1);
    fleet
        .leave("never-seen")
        .await
        .expect("leaving twice is fine");
}

#[macro_export]
macro_rules! fleet_contract {
    ($make:expr) => {
        $crate::__contract_cases!(
            fleet,
            $make,
            [
                counts_the_members_alive,
                a_member_that_stopped_beating_drops_out,
                a_member_that_left_drops_out_at_once
            ]
        );
    };
}
