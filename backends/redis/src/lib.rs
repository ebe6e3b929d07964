//! Redis backends: durable retry timing, the message cache (vendor
//! message id → message, with a TTL) and the count of dispatchers alive.
//!
//! Retry timing follows the design: each pending retry is a key with a TTL
//! whose `expired` keyspace event triggers the next attempt promptly, and a
//! sorted set of due times is swept periodically as the backstop (expired
//! events are fire-and-forget: a subscriber offline for a moment loses them,
//! and under many TTL keys Redis expires them late). Whichever path notices
//! first, an item is handed out by one atomic script that moves it from the
//! due set to the in-flight set, so each retry fires once.

mod cache;
mod fleet;
mod retry;

pub use cache::RedisCache;
pub use fleet::RedisFleet;
pub use retry::{RedisRetry, RedisRetryConfig};
