use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use mdc_core::ports::{Fleet, StoreError};
use redis::aio::ConnectionManager;

/// The dispatchers alive, in one sorted set shared by every process: each
/// member scored by the time its last beat counts it alive until, by
/// Redis's clock (so the hosts' clocks need not agree). A beat adds or
/// moves its member, drops the members whose time has run out and counts
/// the rest, in one script.
pub struct RedisFleet {
    connection: ConnectionManager,
    key: String,
}

/// KEYS[1] the set; ARGV[1] the member, ARGV[2] how long it is alive (ms),
/// ARGV[3] how long the set is kept after this beat (ms).
static BEAT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
",
    )
});

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.into())
}

/// The set itself goes once no member has beaten for this long past its
/// time: a deployment that stopped leaves nothing behind.
const LINGER: Duration = Duration::from_secs(60);

impl RedisFleet {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection = ConnectionManager::new(client).await.map_err(unavailable)?;
        Ok(Self {
            connection,
            key: format!("{prefix}:dispatchers"),
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Fleet for RedisFleet {
    async fn beat(&self, member: &str, alive_for: Duration) -> Result<usize, StoreError> {
        let mut connection = self.connection.clone();
        let alive: usize = BEAT
            .key(&self.key)
            .arg(member)
            .arg(millis(alive_for))
            .arg(millis(alive_for.saturating_add(LINGER)))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(alive.max(1))
    }

    async fn leave(&self, member: &str) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("ZREM")
            .arg(&self.key)
            .arg(member)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }
}
