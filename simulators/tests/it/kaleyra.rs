//! The Kaleyra adapter against the Kaleyra simulator on loopback: request
//! shape, error mapping, and the status pull API.

use std::time::Duration;

use mdc_core::ports::{Provider, ProviderError};
use mdc_providers::kaleyra::{KaleyraConfig, KaleyraProvider, KaleyraSecrets};
use mdc_simulators::kaleyra::{self as vendor, Faults, SimulatorSettings};
use secrecy::SecretString;

async fn simulator(faults: Faults, callback_delay: Duration) -> String {
    let settings = SimulatorSettings {
        api_key: "right-key".into(),
        callback_delay,
        faults,
        ..SimulatorSettings::default()
    };
    let (server, bound) =
        vendor::start(settings, "127.0.0.1:0".parse().expect("addr")).expect("simulator");
    tokio::spawn(server);
    format!("http://{bound}")
}

fn provider(base_url: &str, key: &str) -> KaleyraProvider {
    let config = KaleyraConfig {
        base_url: base_url.into(),
        sid: "HXSIM01".into(),
        api_key_env: "unused".into(),
        // Nothing listens here: callbacks fail, which the adapter never sees.
        callback_url: "http://127.0.0.1:9/v1/callbacks/kaleyra/k".into(),
        callback_token_env: "unused".into(),
        timeout: Duration::from_secs(2),
        after_ambiguous: None,
    };
    let secrets = KaleyraSecrets {
        api_key: SecretString::from(key),
        callback_token: SecretString::from("token"),
    };
    KaleyraProvider::new("kaleyra-test", &config, secrets).expect("provider")
}

fn sms() -> mdc_core::Message {
    mdc_core::contract::sample_message("+919876543210")
}

#[tokio::test]
async fn sends_and_pulls_the_status() {
    let base = simulator(Faults::default(), Duration::from_millis(50)).await;
    let kaleyra = provider(&base, "right-key");
    let receipt = kaleyra.send(&sms()).await.expect("sent");
    assert!(receipt.provider_message_id.ends_with(":1"));
    assert_eq!(
        receipt.raw["type"], "TXN",
        "the message type maps to Kaleyra's"
    );
    let mut status = String::new();
    for _ in 0..40 {
        let answer = kaleyra
            .status(&[receipt.provider_message_id.as_str()])
            .await
            .expect("status");
        status = answer["data"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if status == "Delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "Delivered");
}

#[tokio::test]
async fn maps_vendor_errors() {
    let base = simulator(Faults::default(), Duration::from_millis(50)).await;
    match provider(&base, "wrong-key").send(&sms()).await {
        Err(ProviderError::Permanent { code, .. }) => assert_eq!(code, "401"),
        other => panic!("a bad key is permanent: {other:?}"),
    }
    let mut refused = sms();
    refused.to = "+14155550190".into();
    assert!(matches!(
        provider(&base, "right-key").send(&refused).await,
        Err(ProviderError::Permanent { .. })
    ));

    let throttled = simulator(
        Faults {
            throttle_percent: 100,
            ..Faults::default()
        },
        Duration::ZERO,
    )
    .await;
    match provider(&throttled, "right-key").send(&sms()).await {
        Err(ProviderError::Transient { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)))
        }
        other => panic!("429 is transient with the vendor's Retry-After: {other:?}"),
    }
    let down = simulator(
        Faults {
            error_percent: 100,
            ..Faults::default()
        },
        Duration::ZERO,
    )
    .await;
    assert!(matches!(
        provider(&down, "right-key").send(&sms()).await,
        Err(ProviderError::Transient { .. })
    ));

    let dropping = simulator(
        Faults {
            drop_percent: 100,
            ..Faults::default()
        },
        Duration::ZERO,
    )
    .await;
    match provider(&dropping, "right-key").send(&sms()).await {
        Err(ProviderError::Ambiguous { .. }) => {}
        other => panic!("a cut connection after sending is ambiguous: {other:?}"),
    }
    let slow = simulator(
        Faults {
            latency: Duration::from_secs(5),
            ..Faults::default()
        },
        Duration::ZERO,
    )
    .await;
    match provider(&slow, "right-key").send(&sms()).await {
        Err(ProviderError::Ambiguous { .. }) => {}
        other => panic!("a timeout after sending is ambiguous: {other:?}"),
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    match provider(&format!("http://127.0.0.1:{port}"), "right-key")
        .send(&sms())
        .await
    {
        Err(ProviderError::Transient { .. }) => {}
        other => panic!("nothing listening is transient: {other:?}"),
    }
}
