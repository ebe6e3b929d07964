use std::time::Duration;

use async_trait::async_trait;
use mdc_core::ports::{CachedMessage, MessageCache, StoreError};
use mdc_core::Channel;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

/// The message cache on Redis: one key per vendor message id with a TTL,
/// shared by every process.
pub struct RedisCache {
    connection: ConnectionManager,
    prefix: String,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.into())
}

impl RedisCache {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection = ConnectionManager::new(client).await.map_err(unavailable)?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    fn key(&self, provider: &str, provider_message_id: &str) -> String {
        format!("{}:msgcache:{provider}:{provider_message_id}", self.prefix)
    }
}

#[async_trait]
impl MessageCache for RedisCache {
    async fn ready(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Unavailable(e.into())),
            Err(_) => Err(StoreError::Unavailable("no answer within 2 s".into())),
        }
    }

    async fn put(
        &self,
        provider: &str,
        provider_message_id: &str,
        entry: CachedMessage,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let value = format!("{}|{}", entry.channel, entry.message_id);
        let mut connection = self.connection.clone();
        connection
            .pset_ex::<_, _, ()>(
                self.key(provider, provider_message_id),
                value,
                ttl.as_millis().max(1) as u64,
            )
            .await
            .map_err(unavailable)
    }

    async fn get(
        &self,
        provider: &str,
        provider_message_id: &str,
    ) -> Result<Option<CachedMessage>, StoreError> {
        let mut connection = self.connection.clone();
        let value: Option<String> = connection
            .get(self.key(provider, provider_message_id))
            .await
            .map_err(unavailable)?;
        Ok(value.and_then(|v| {
            let (channel, id) = v.split_once('|')?;
            Some(CachedMessage {
                channel: channel.parse::<Channel>().ok()?,
                message_id: id.parse().ok()?,
            })
        }))
    }
}
