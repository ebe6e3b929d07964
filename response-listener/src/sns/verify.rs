//! Authenticity of SNS messages delivered over HTTP(S).
//!
//! SNS signs each message with the key of a certificate it publishes at
//! `SigningCertURL`. A message is accepted only when that URL is https on a
//! host of the form `sns.<region>.amazonaws.com` (or `.amazonaws.com.cn`),
//! the certificate is within its validity period, and the signature
//! (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) matches the string to
//! sign built from the message's fields. Certificates are cached by URL.
//! `SubscribeURL` passes the same host check before MDC fetches it.
//!
//! The host check can let loopback URLs through
//! ([`Verifier::allowing_loopback`]), for tests only: a test signs with its
//! own key and serves the certificate on loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use serde::Deserialize;

/// Most certificates kept (SNS rotates them rarely; a handful per region).
const CACHED_CERTIFICATES: usize = 32;

/// The SNS message types MDC handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

/// An SNS message as it arrives in an HTTP(S) request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

impl SnsMessage {
    /// The message type, when MDC knows it.
    pub fn message_type(&self) -> Option<MessageType> {
        serde_json::from_value(serde_json::Value::String(self.kind.clone())).ok()
    }

    /// The string SNS signs: `Name\nValue\n` for each field of the type,
    /// in this order (Subject only when present).
    pub fn string_to_sign(&self) -> Result<String, Rejected> {
        let mut out = String::new();
        let mut add = |name: &str, value: &str| {
            out.push_str(name);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        };
        match self.message_type().ok_or(Rejected::UnknownType)? {
            MessageType::Notification => {
                add("Message", &self.message);
                add("MessageId", &self.message_id);
                if let Some(subject) = &self.subject {
                    add("Subject", subject);
                }
                add("Timestamp", &self.timestamp);
                add("TopicArn", &self.topic_arn);
                add("Type", &self.kind);
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                let missing = Rejected::Malformed("a confirmation needs SubscribeURL and Token");
                add("Message", &self.message);
                add("MessageId", &self.message_id);
                add(
                    "SubscribeURL",
                    self.subscribe_url.as_deref().ok_or(missing.clone())?,
                );
                add("Timestamp", &self.timestamp);
                add("Token", self.token.as_deref().ok_or(missing)?);
                add("TopicArn", &self.topic_arn);
                add("Type", &self.kind);
            }
        }
        Ok(out)
    }
}

/// Why a message is not taken as coming from SNS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("malformed SNS message: {0}")]
    Malformed(&'static str),
    #[error("unknown SNS message type")]
    UnknownType,
    #[error("unsupported SignatureVersion")]
    SignatureVersion,
    #[error("{0} is not an SNS URL MDC fetches")]
    UntrustedUrl(String),
    #[error("the signing certificate cannot be used: {0}")]
    Certificate(String),
    #[error("the signature does not match")]
    BadSignature,
    /// The certificate could not be fetched: SNS retries later.
    #[error("could not fetch the signing certificate: {0}")]
    Unreachable(String),
}

/// Whether MDC may fetch `url` on an SNS message's word: https on an SNS
/// host, or (tests only) any loopback URL.
pub fn trusted_url(url: &str, allow_loopback: bool) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    if allow_loopback {
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(host)) => host == "localhost",
            None => false,
        };
        if loopback && matches!(url.scheme(), "http" | "https") {
            return true;
        }
    }
    if url.scheme() != "https" || url.port().is_some_and(|port| port != 443) {
        return false;
    }
    let Some(url::Host::Domain(host)) = url.host() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    region.is_some_and(|region| {
        region.len() >= 3
            && region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// A certificate's public key (SPKI, DER) and when it expires (unix seconds).
type CachedKey = (Arc<Vec<u8>>, i64);

/// Checks SNS signatures, fetching and caching signing certificates.
pub struct Verifier {
    http: reqwest::Client,
    /// By certificate URL.
    keys: Mutex<HashMap<String, CachedKey>>,
    allow_loopback: bool,
}

impl Verifier {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a TLS backend is compiled in"),
            keys: Mutex::new(HashMap::new()),
            allow_loopback: false,
        }
    }

    /// Also trusts certificate and subscribe URLs on loopback: for tests,
    /// which sign with their own key. Never in production.
    pub fn allowing_loopback(mut self, allow: bool) -> Self {
        self.allow_loopback = allow;
        self
    }

    pub fn trusts(&self, url: &str) -> bool {
        trusted_url(url, self.allow_loopback)
    }

    /// Checks `message`'s signature; Ok when SNS sent it.
    pub async fn verify(&self, message: &SnsMessage) -> Result<(), Rejected> {
        let algorithm: &dyn signature::VerificationAlgorithm =
            match message.signature_version.as_str() {
                "1" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                "2" => &signature::RSA_PKCS1_2048_8192_SHA256,
                _ => return Err(Rejected::SignatureVersion),
            };
        let signed = message.string_to_sign()?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(message.signature.trim())
            .map_err(|_| Rejected::Malformed("Signature is not base64"))?;
        let key = self.public_key(&message.signing_cert_url).await?;
        UnparsedPublicKey::new(algorithm, key.as_slice())
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| Rejected::BadSignature)
    }

    /// Fetches `url` (a SubscribeURL) if it passes the host check.
    pub async fn confirm(&self, url: &str) -> Result<(), Rejected> {
        self.fetch(url, "SubscribeURL").await.map(drop)
    }

    /// GETs a URL that passed the host check; `what` names it in errors.
    async fn fetch(&self, url: &str, what: &str) -> Result<reqwest::Response, Rejected> {
        if !self.trusts(url) {
            return Err(Rejected::UntrustedUrl(url.to_owned()));
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| Rejected::Unreachable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(Rejected::Unreachable(format!(
                "{what} answered {}",
                response.status()
            )));
        }
        Ok(response)
    }

    async fn public_key(&self, url: &str) -> Result<Arc<Vec<u8>>, Rejected> {
        if !self.trusts(url) {
            return Err(Rejected::UntrustedUrl(url.to_owned()));
        }
        let now = chrono::Utc::now().timestamp();
        if let Some((key, until)) = self.lock().get(url) {
            if *until > now {
                return Ok(key.clone());
            }
        }
        let pem = self
            .fetch(url, "the certificate URL")
            .await?
            .bytes()
            .await
            .map_err(|e| Rejected::Unreachable(e.without_url().to_string()))?;
        let (key, until) = public_key_of(&pem)?;
        let key = Arc::new(key);
        let mut keys = self.lock();
        if keys.len() >= CACHED_CERTIFICATES {
            keys.clear();
        }
        keys.insert(url.to_owned(), (key.clone(), until));
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKey>> {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

/// The public key of a PEM certificate valid now, and when it expires.
fn public_key_of(pem: &[u8]) -> Result<(Vec<u8>, i64), Rejected> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| Rejected::Certificate("not a PEM certificate".into()))?;
    let certificate = pem
        .parse_x509()
        .map_err(|e| Rejected::Certificate(e.to_string()))?;
    if !certificate.validity().is_valid() {
        return Err(Rejected::Certificate("outside its validity period".into()));
    }
    Ok((
        certificate.public_key().raw.to_vec(),
        certificate.validity().not_after.timestamp(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_hosts_over_https_are_trusted() {
        let trusted = [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/cert.pem",
            "https://SNS.eu-west-1.amazonaws.com/cert.pem",
        ];
        for url in trusted {
            assert!(trusted_url(url, false), "{url}");
        }
        let untrusted = [
            "http://sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.a.amazonaws.com/cert.pem",
            "https://sns.us_east.amazonaws.com/cert.pem",
            "https://s3.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
            "https://user@evil.example/cert.pem",
            "not a url",
            "http://127.0.0.1:9000/cert.pem",
        ];
        for url in untrusted {
            assert!(!trusted_url(url, false), "{url}");
        }
        assert!(trusted_url("http://127.0.0.1:9000/cert.pem", true));
        assert!(trusted_url("http://localhost:9000/cert.pem", true));
        assert!(!trusted_url("http://10.0.0.1:9000/cert.pem", true));
    }

    #[test]
    fn the_string_to_sign_follows_the_message_type() {
        let mut message = SnsMessage {
            kind: "Notification".into(),
            message_id: "m".into(),
            topic_arn: "t".into(),
            message: "body".into(),
            timestamp: "ts".into(),
            signature_version: "1".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
            subject: None,
            subscribe_url: Some("ignored for notifications".into()),
            token: None,
        };
        assert_eq!(
            message.string_to_sign(),
            Ok(
                "Message\nbody\nMessageId\nm\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
                    .into()
            )
        );
        message.subject = Some("s".into());
        assert_eq!(
            message.string_to_sign(),
            Ok("Message\nbody\nMessageId\nm\nSubject\ns\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n".into())
        );
        message.kind = "SubscriptionConfirmation".into();
        message.subscribe_url = Some("u".into());
        message.token = Some("k".into());
        assert_eq!(
            message.string_to_sign(),
            Ok("Message\nbody\nMessageId\nm\nSubscribeURL\nu\nTimestamp\nts\nToken\nk\nTopicArn\nt\nType\nSubscriptionConfirmation\n".into())
        );
        message.token = None;
        assert!(matches!(
            message.string_to_sign(),
            Err(Rejected::Malformed(_))
        ));
        message.kind = "Teleport".into();
        assert_eq!(message.string_to_sign(), Err(Rejected::UnknownType));
    }
}
