//! Kaleyra SMS (v1 API) over `reqwest`.
//!
//! Send: `POST {base_url}/v1/{sid}/messages` with the `api-key` header and a
//! form body: `to`, `sender`, `type` (OTP / TXN / MKT from the message type),
//! `body`, `template_id` (India DLT), `unicode` for UCS-2 text, `ref` (MDC's
//! message id) and `callback` (where Kaleyra reports delivery; the URL carries
//! a secret token). The answer lists one `message_id` per recipient.
//!
//! Status: `GET {base_url}/v1/{sid}/messages/status?message_ids=…`.
//!
//! Errors: 401/403 (bad key), 400/404/422 (bad request) are permanent; 429 is
//! transient with the vendor's `Retry-After`; 5xx and connection failures are
//! transient; a timeout once the request was sent is ambiguous.

mod adapter;

pub use adapter::{KaleyraConfig, KaleyraProvider, KaleyraSecrets};
