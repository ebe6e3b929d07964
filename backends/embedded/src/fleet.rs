use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use mdc_core::ports::{Fleet, StoreError};
use tokio::time::Instant;

/// The dispatchers of one process: for deployments whose dispatchers share
/// no backend that could count them (the embedded backends run one
/// process).
#[derive(Default)]
pub struct LocalFleet {
    members: Mutex<HashMap<String, Instant>>,
}

impl LocalFleet {
    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Fleet for LocalFleet {
    async fn beat(&self, member: &str, alive_for: Duration) -> Result<usize, StoreError> {
        let now = Instant::now();
        let mut members = self.members();
        members.insert(member.to_owned(), now + alive_for);
        members.retain(|_, until| *until > now);
        Ok(members.len().max(1))
    }

    async fn leave(&self, member: &str) -> Result<(), StoreError> {
        self.members().remove(member);
        Ok(())
    }
}
