//! The MDC client: what an internal service links to send SMS, email and
//! push through MDC, and to read what became of each message.
//!
//! ```no_run
//! use mdc_client::{Client, MessageType, Priority, Sms, SubmitError};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // MDC_URL, MDC_API_KEY (http) or MDC_TRANSPORT=direct, MDC_KAFKA_BROKERS,
//! // MDC_SERVICE (direct): see `Config::from_env`.
//! let client = Client::from_env().await?;
//! let sms = Sms::to("+14155550123")
//!     .body("Your code is 123456")
//!     .priority(Priority::Critical)
//!     .kind(MessageType::Otp);
//! match client.send(sms).await {
//!     Ok(sent) => println!("accepted as {}", sent.id),
//!     Err(SubmitError::Invalid(e)) => eprintln!("fix {}: {}", e.field, e.message),
//!     Err(e) => eprintln!("not sent, try again later: {e}"),
//! }
//! # Ok(()) }
//! ```
//!
//! Two transports, one cargo feature each (both on by default):
//! - `http`: `POST /v1/messages` to a running MDC with the service's API key;
//!   connection errors, 503 and 429 are retried with the same idempotency
//!   key, honouring `Retry-After`.
//! - `direct`: produce straight to MDC's priority topics on Kafka (needs
//!   librdkafka, built from source); MDC records each message as its
//!   dispatchers take it.
//!
//! Either way a message is validated here first, with the same rules and
//! warnings as MDC's API: an invalid one fails with the field named and
//! nothing is sent.

mod builders;
#[cfg(any(feature = "http", feature = "direct"))]
mod client;
mod config;
#[cfg(feature = "direct")]
mod direct;
mod enrich;
mod error;
#[cfg(feature = "http")]
mod http;
mod request;
mod status;
pub mod validate;

pub use builders::{Email, Push, Sms};
#[cfg(any(feature = "http", feature = "direct"))]
pub use client::{
    Client, Config, Transport, ENV_API_KEY, ENV_KAFKA_BROKERS, ENV_KAFKA_PREFIX, ENV_SERVICE,
    ENV_TRANSPORT, ENV_URL,
};
pub use config::{ClientConfig, LONGEST_DEADLINE};
pub use enrich::enrich;
pub use error::{Sent, StatusError, SubmitError, Submitted};
pub use mdc_core::{Channel, MessageId, MessageType, Priority, Status};
#[cfg(feature = "direct")]
pub use mdc_kafka::KafkaConfig;
pub use request::SubmitRequest;
pub use status::MessageStatus;
pub use validate::{ValidationError, Warning};
