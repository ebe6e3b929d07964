use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mdc_core::ports::{RetryError, RetryItem, RetryScheduler};
use mdc_core::{Channel, MessageId, Priority};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RedisRetryConfig {
    pub url: String,
    /// Prefix of every key, so deployments (and tests) can share a server.
    pub prefix: String,
    /// How often the due set is swept when no expired event arrives.
    pub sweep_interval: Duration,
    /// An item handed out and not completed within this time is handed out
    /// again (its taker is presumed dead).
    pub in_flight_lease: Duration,
    /// Listen to `expired` events; off, only the sweep fires retries.
    pub subscribe: bool,
}

impl RedisRetryConfig {
    pub fn new(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            sweep_interval: Duration::from_millis(500),
            in_flight_lease: Duration::from_secs(30),
            subscribe: true,
        }
    }
}

/// Moves due items (and in-flight items whose lease ran out) to the
/// in-flight set and returns them: the one place an item is handed out.
const TAKE: &str = r"
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
end
return ids
";

/// Completes an item unless it was rescheduled since it was handed out.
const COMPLETE: &str = r"
local value = redis.call('GET', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if value and string.sub(value, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. '|' then
  redis.call('DEL', KEYS[1])
end
return 1
";

pub struct RedisRetry {
    connection: ConnectionManager,
    config: RedisRetryConfig,
    take: Script,
    complete: Script,
    expired: Arc<Notify>,
    shutdown: CancellationToken,
}

fn unavailable(e: redis::RedisError) -> RetryError {
    RetryError::Unavailable(e.into())
}

/// `due (RFC 3339, nanoseconds)|channel|priority`
fn encode(item: &RetryItem) -> String {
    format!("{}|{}|{}", due_text(item), item.channel, item.priority)
}

fn due_text(item: &RetryItem) -> String {
    item.due.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn decode(id: &str, value: &str) -> Option<RetryItem> {
    let mut parts = value.split('|');
    let due = chrono::DateTime::parse_from_rfc3339(parts.next()?)
        .ok()?
        .with_timezone(&chrono::Utc);
    let channel: Channel = parts.next()?.parse().ok()?;
    let priority: Priority = parts.next()?.parse().ok()?;
    Some(RetryItem {
        message_id: id.parse().ok()?,
        channel,
        priority,
        due,
    })
}

impl RedisRetry {
    /// Connects and, with `subscribe`, starts listening to expired events.
    pub async fn connect(config: RedisRetryConfig) -> Result<Self, RetryError> {
        let client = redis::Client::open(config.url.as_str()).map_err(unavailable)?;
        let connection = ConnectionManager::new(client.clone())
            .await
            .map_err(unavailable)?;
        let expired = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        if config.subscribe {
            let (subscribed, mut ready) = tokio::sync::watch::channel(false);
            tokio::spawn(listen(
                client,
                config.prefix.clone(),
                expired.clone(),
                subscribed,
                shutdown.clone(),
            ));
            // Timers set from here on fire by their event, not the sweep.
            let waited = tokio::time::timeout(SUBSCRIBE_WAIT, ready.wait_for(|ready| *ready));
            if !matches!(waited.await, Ok(Ok(_))) {
                tracing::warn!("Not yet subscribed to Redis expired events; the sweep fires retries until then");
            }
        }
        Ok(Self {
            connection,
            take: Script::new(TAKE),
            complete: Script::new(COMPLETE),
            config,
            expired,
            shutdown,
        })
    }

    fn key(&self, kind: &str) -> String {
        format!("{}:retry:{kind}", self.config.prefix)
    }

    fn item_key(&self, id: &str) -> String {
        format!("{}:retry:item:{id}", self.config.prefix)
    }

    fn timer_key(&self, id: &str) -> String {
        format!("{}:retry:timer:{id}", self.config.prefix)
    }

    async fn take_now(&self, max: usize) -> Result<Vec<RetryItem>, RetryError> {
        let now = mdc_core::now().timestamp_millis();
        let lease = now + self.config.in_flight_lease.as_millis() as i64;
        let mut connection = self.connection.clone();
        let ids: Vec<String> = self
            .take
            .key(self.key("due"))
            .key(self.key("inflight"))
            .arg(now)
            .arg(max)
            .arg(lease)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.item_key(id)).collect();
        let values: Vec<Option<String>> = connection.mget(&keys).await.map_err(unavailable)?;
        Ok(ids
            .iter()
            .zip(values)
            .filter_map(|(id, value)| {
                let item = value.as_deref().and_then(|v| decode(id, v));
                if item.is_none() {
                    tracing::warn!(message_id = %id, "Dropping a retry whose item is gone");
                }
                item
            })
            .collect())
    }
}

impl Drop for RedisRetry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How long `connect` waits for the expired-event subscription.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// Wakes `take_due` on every expired timer key of this prefix; reconnects
/// after a lost connection (events in between are lost: the sweep covers).
async fn listen(
    client: redis::Client,
    prefix: String,
    expired: Arc<Notify>,
    subscribed: tokio::sync::watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let marker = format!("{prefix}:retry:timer:");
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe("__keyevent@*__:expired").await?;
            subscribed.send_replace(true);
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let key: String = message.get_payload().unwrap_or_default();
                if key.starts_with(&marker) {
                    expired.notify_waiters();
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = session => result,
        };
        subscribed.send_replace(false);
        if let Err(e) = result {
            tracing::warn!(error = %e, "Lost the Redis expired-event subscription; the sweep covers until it is back");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[async_trait]
impl RetryScheduler for RedisRetry {
    async fn ready(&self) -> Result<(), RetryError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(RetryError::Unavailable(e.into())),
            Err(_) => Err(RetryError::Unavailable("no answer within 2 s".into())),
        }
    }

    async fn schedule(&self, item: RetryItem) -> Result<(), RetryError> {
        let id = item.message_id.as_str();
        let due = item.due.timestamp_millis();
        let ttl = (due - mdc_core::now().timestamp_millis()).max(1) as u64;
        let mut connection = self.connection.clone();
        redis::pipe()
            .atomic()
            .set(self.item_key(id), encode(&item))
            .zadd(self.key("due"), id, due)
            .zrem(self.key("inflight"), id)
            .pset_ex(self.timer_key(id), "", ttl)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn cancel(&self, message_id: &MessageId) -> Result<(), RetryError> {
        let id = message_id.as_str();
        let mut connection = self.connection.clone();
        redis::pipe()
            .atomic()
            .del(self.item_key(id))
            .del(self.timer_key(id))
            .zrem(self.key("due"), id)
            .zrem(self.key("inflight"), id)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn take_due(&self, max: usize) -> Result<Vec<RetryItem>, RetryError> {
        let deadline = tokio::time::Instant::now()
            + self.config.sweep_interval.max(Duration::from_millis(500));
        loop {
            let expired = self.expired.notified();
            tokio::pin!(expired);
            expired.as_mut().enable();
            let items = self.take_now(max).await?;
            if !items.is_empty() {
                return Ok(items);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let _ =
                tokio::time::timeout(self.config.sweep_interval.min(deadline - now), expired).await;
        }
    }

    async fn complete(&self, item: &RetryItem) -> Result<(), RetryError> {
        let id = item.message_id.as_str();
        let mut connection = self.connection.clone();
        self.complete
            .key(self.item_key(id))
            .key(self.key("inflight"))
            .arg(id)
            .arg(due_text(item))
            .invoke_async::<i64>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
