//! A stand-in for SNS in tests: messages signed with a test key, and a
//! loopback server for the test certificate and subscription confirmations.
//! MDC trusts its URLs only with the test-only loopback setting.
//!
//! The key and certificate in `testdata/` were made with
//! `openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj /CN=sns.test.invalid`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::json;

use super::verify::SnsMessage;

/// The test signing certificate.
pub const CERT_PEM: &str = include_str!("../../testdata/sns-signing-cert.pem");
const KEY_PEM: &str = include_str!("../../testdata/sns-signing-key.pem");

/// A loopback server standing in for SNS's certificate and subscribe URLs.
pub struct FakeSns {
    pub addr: SocketAddr,
    confirmations: Arc<AtomicUsize>,
    server: actix_web::dev::ServerHandle,
}

impl FakeSns {
    /// Serves `/cert.pem` (the test certificate) and `/confirm` (counts
    /// subscription confirmations) on a free loopback port.
    pub fn start() -> std::io::Result<Self> {
        let confirmations = Arc::new(AtomicUsize::new(0));
        let counter = web::Data::from(confirmations.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(counter.clone())
                .route(
                    "/cert.pem",
                    web::get().to(|| async { HttpResponse::Ok().body(CERT_PEM) }),
                )
                .route(
                    "/confirm",
                    web::get().to(|counter: web::Data<AtomicUsize>| async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        HttpResponse::Ok().body("<ConfirmSubscriptionResponse/>")
                    }),
                )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| std::io::Error::other("no address bound"))?;
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            addr,
            confirmations,
            server: handle,
        })
    }

    pub fn cert_url(&self) -> String {
        format!("http://{}/cert.pem", self.addr)
    }

    pub fn subscribe_url(&self) -> String {
        format!("http://{}/confirm?Token=t", self.addr)
    }

    /// How many times `/confirm` was fetched.
    pub fn confirmations(&self) -> usize {
        self.confirmations.load(Ordering::SeqCst)
    }

    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

/// A notification of `topic` carrying `message`, unsigned.
pub fn notification(topic: &str, message: &str, cert_url: &str) -> SnsMessage {
    SnsMessage {
        kind: "Notification".into(),
        message_id: ulid::Ulid::new().to_string(),
        topic_arn: topic.into(),
        message: message.into(),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        signature_version: "2".into(),
        signature: String::new(),
        signing_cert_url: cert_url.into(),
        subject: None,
        subscribe_url: None,
        token: None,
    }
}

/// A subscription confirmation of `topic`, unsigned.
pub fn confirmation(topic: &str, subscribe_url: &str, cert_url: &str) -> SnsMessage {
    SnsMessage {
        kind: "SubscriptionConfirmation".into(),
        message: format!("You have chosen to subscribe to the topic {topic}."),
        subscribe_url: Some(subscribe_url.into()),
        token: Some("t".into()),
        ..notification(topic, "", cert_url)
    }
}

/// Signs `message` with the test key, SignatureVersion `version` (1 or 2).
pub fn sign(message: &mut SnsMessage, version: u8) {
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(KEY_PEM).expect("the test key parses");
    message.signature_version = version.to_string();
    let signed = message.string_to_sign().expect("a message of a known type");
    let signature = match version {
        1 => SigningKey::<sha1::Sha1>::new(key)
            .sign(signed.as_bytes())
            .to_vec(),
        _ => SigningKey::<rsa::sha2::Sha256>::new(key)
            .sign(signed.as_bytes())
            .to_vec(),
    };
    message.signature = base64::engine::general_purpose::STANDARD.encode(signature);
}

/// The body SNS would POST for `message`.
pub fn body(message: &SnsMessage) -> String {
    let mut body = json!({
        "Type": message.kind,
        "MessageId": message.message_id,
        "TopicArn": message.topic_arn,
        "Message": message.message,
        "Timestamp": message.timestamp,
        "SignatureVersion": message.signature_version,
        "Signature": message.signature,
        "SigningCertURL": message.signing_cert_url,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    });
    for (key, value) in [
        ("Subject", &message.subject),
        ("SubscribeURL", &message.subscribe_url),
        ("Token", &message.token),
    ] {
        if let Some(value) = value {
            body[key] = json!(value);
        }
    }
    body.to_string()
}
