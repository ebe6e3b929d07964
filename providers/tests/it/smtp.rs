use std::path::Path;
use std::time::Duration;

use mdc_core::message::Attachment;
use mdc_core::ports::{Provider, ProviderError};
use mdc_core::{Content, Message};
use mdc_providers::smtp::{Security, SmtpConfig, SmtpProvider};

use crate::services::env;

fn provider(port_override: Option<u16>) -> SmtpProvider {
    let addr = env("MDC_TEST_SMTP_ADDR");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let config = SmtpConfig {
        host: host.to_owned(),
        port: Some(port_override.unwrap_or_else(|| port.parse().expect("port"))),
        security: Security::None,
        username: None,
        password_env: None,
        pool_size: 2,
        timeout: Duration::from_secs(5),
        after_ambiguous: None,
    };
    SmtpProvider::new("smtp-test", &config, None).expect("provider")
}

fn email(to: &str, attachments: Vec<Attachment>) -> Message {
    let mut message = mdc_core::contract::sample_message(to);
    message.content = Content::Email {
        from: "noreply@example.com".into(),
        subject: "Your receipt".into(),
        text: Some("Thanks for your order.".into()),
        html: Some("<p>Thanks for your order.</p>".into()),
        attachments,
    };
    message
}

/// The Maildir file whose content mentions `needle`.
fn received(needle: &str) -> String {
    let dir = Path::new(&env("MDC_TEST_SMTP_MAILDIR")).join("new");
    for _ in 0..100 {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                if text.contains(needle) {
                    return text;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no mail containing {needle} arrived in {}", dir.display());
}

#[tokio::test]
async fn sends_text_html_and_attachments_through_a_real_smtp_server() {
    let smtp = provider(None);
    let message = email(
        "alice@example.com",
        vec![Attachment {
            filename: "invoice.txt".into(),
            content_type: "text/plain".into(),
            content_base64: "SW52b2ljZSAjNDI=".into(),
        }],
    );
    let receipt = smtp.send(&message).await.expect("sent");
    assert_eq!(receipt.provider_message_id, format!("<{}@mdc>", message.id));

    let mail = received(message.id.as_str());
    assert!(mail.contains("Subject: Your receipt"), "{mail}");
    assert!(mail.contains("To: alice@example.com"), "{mail}");
    assert!(
        mail.contains(&format!("X-MDC-Message-Id: {}", message.id)),
        "{mail}"
    );
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("text/html"), "{mail}");
    assert!(mail.contains("filename=\"invoice.txt\""), "{mail}");
    assert!(mail.contains("Invoice #42"), "{mail}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let smtp = provider(Some(port));
    match smtp.send(&email("bob@example.com", Vec::new())).await {
        Err(ProviderError::Transient { .. }) => {}
        other => panic!("expected a transient error, got {other:?}"),
    }
}
