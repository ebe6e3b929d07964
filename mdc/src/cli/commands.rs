//! The client commands: `send`, `status`, `webhooks` and `keys` over a
//! running server's HTTP API, `keys --direct` in the configured store, and
//! `topics create`.

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::{KeysCommand, SendCommand, ServerArg, WebhooksCommand};

impl SendCommand {
    fn body(&self) -> anyhow::Result<Value> {
        let (mut body, common) = match self {
            SendCommand::Sms {
                to,
                body,
                from,
                common,
            } => (
                json!({"channel": "sms", "to": to, "body": body, "from": from}),
                common,
            ),
            SendCommand::Email {
                to,
                from,
                subject,
                body,
                html,
                common,
            } => (
                json!({"channel": "email", "to": to, "from": from, "subject": subject, "body": body, "html": html}),
                common,
            ),
            SendCommand::Push {
                to,
                title,
                body,
                data,
                common,
            } => {
                let data: Option<Value> = match data {
                    Some(text) => {
                        Some(serde_json::from_str(text).context("--data must be a JSON object")?)
                    }
                    None => None,
                };
                (
                    json!({"channel": "push", "to": to, "title": title, "body": body, "data": data}),
                    common,
                )
            }
        };
        body["priority"] = json!(common.priority);
        body["type"] = json!(common.message_type);
        body["idempotency_key"] = json!(common.idempotency_key);
        if let Value::Object(map) = &mut body {
            map.retain(|_, v| !v.is_null());
        }
        Ok(body)
    }
}

fn client(server: &ServerArg) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &server.api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("--api-key holds characters a header cannot")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .default_headers(headers)
        .build()?)
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = &body["error"];
        let field = error["field"]
            .as_str()
            .map(|f| format!("{f}: "))
            .unwrap_or_default();
        bail!(
            "{status}: {field}{}",
            error["message"].as_str().unwrap_or("request failed")
        );
    }
    Ok(body)
}

pub async fn send(message: &SendCommand, server: &ServerArg) -> anyhow::Result<()> {
    let url = format!("{}/v1/messages", server.server.trim_end_matches('/'));
    let response = client(server)?
        .post(&url)
        .json(&message.body()?)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let body = answer(response).await?;
    for warning in body["warnings"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: {}: {}",
            warning["field"].as_str().unwrap_or(""),
            warning["message"].as_str().unwrap_or("")
        );
    }
    println!("{}", body["id"].as_str().unwrap_or_default());
    Ok(())
}

pub async fn status(id: &str, server: &ServerArg) -> anyhow::Result<()> {
    let url = format!("{}/v1/messages/{id}", server.server.trim_end_matches('/'));
    let response = client(server)?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let body = answer(response).await?;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    println!(
        "{}  {}  {} {} to {}",
        text(&body["id"]),
        text(&body["status"]).to_uppercase(),
        text(&body["priority"]),
        text(&body["channel"]),
        text(&body["to"])
    );
    for event in body["events"].as_array().into_iter().flatten() {
        let mut line = format!(
            "  {}  {:<17} {}",
            text(&event["at"]),
            text(&event["component"]),
            text(&event["details"])
        );
        if let Some(provider) = event["provider"].as_str() {
            line.push_str(&format!("  [{provider}"));
            if let Some(id) = event["provider_message_id"].as_str() {
                line.push_str(&format!(" {id}"));
            }
            line.push(']');
        }
        if let Some(error) = event["error"].as_str() {
            line.push_str(&format!("  error: {error}"));
        }
        println!("{line}");
    }
    Ok(())
}

/// `mdc webhooks …`: the webhook API, printed for people.
pub async fn webhooks(action: &WebhooksCommand, server: &ServerArg) -> anyhow::Result<()> {
    let base = format!("{}/v1/webhooks", server.server.trim_end_matches('/'));
    let http = client(server)?;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    match action {
        WebhooksCommand::List => {
            let body = answer(
                http.get(&base)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {base}"))?,
            )
            .await?;
            for endpoint in body["webhooks"].as_array().into_iter().flatten() {
                let state = if endpoint["enabled"] == true {
                    "enabled".to_owned()
                } else {
                    format!("disabled ({})", text(&endpoint["disabled"]["reason"]))
                };
                println!(
                    "{}  {}  {}  events={} channels={}",
                    text(&endpoint["id"]),
                    text(&endpoint["url"]),
                    state,
                    endpoint["events"],
                    endpoint["channels"]
                );
            }
        }
        WebhooksCommand::Create {
            url,
            events,
            channels,
            description,
        } => {
            let body = answer(
                http.post(&base)
                    .json(&json!({
                        "url": url, "events": events, "channels": channels, "description": description
                    }))
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {base}"))?,
            )
            .await?;
            println!("{}", text(&body["id"]));
            println!("secret: {} (shown only now)", text(&body["secret"]));
        }
        WebhooksCommand::Attempts { id, limit } => {
            let url = format!("{base}/{id}/attempts?limit={limit}");
            let body = answer(
                http.get(&url)
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {url}"))?,
            )
            .await?;
            for attempt in body["attempts"].as_array().into_iter().flatten() {
                let outcome = match attempt["status"].as_u64() {
                    Some(status) => status.to_string(),
                    None => format!("error: {}", text(&attempt["error"])),
                };
                println!(
                    "{}  {}  try {}  {}  {} ms",
                    text(&attempt["at"]),
                    text(&attempt["event_id"]),
                    attempt["attempt"],
                    outcome,
                    attempt["latency_ms"]
                );
            }
        }
    }
    Ok(())
}

/// `mdc topics create`: creates the queue's topics on Kafka.
pub async fn create_topics(config: &crate::Config) -> anyhow::Result<()> {
    let crate::backends::QueueBackend::Kafka(kafka) = &config.backends.queue else {
        bail!("backends.queue is not kafka: the embedded queue needs no topics");
    };
    let outcomes = mdc_kafka::create_topics(kafka, &config.queue_layout())
        .await
        .context("creating the Kafka topics")?;
    for outcome in outcomes {
        println!("{outcome}");
    }
    Ok(())
}

fn print_key(key: &Value) {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let scopes: Vec<String> = key["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let state = match key["revoked_at"].as_str() {
        Some(at) => format!("revoked {at}"),
        None => "active".to_owned(),
    };
    println!(
        "{}  {}  {}  {}  created {}  {}",
        text(&key["id"]),
        text(&key["service"]),
        scopes.join(","),
        state,
        text(&key["created_at"]),
        key["description"].as_str().unwrap_or_default()
    );
}

/// `mdc keys …` through a running server's `/v1/keys`.
pub async fn keys(action: &KeysCommand, server: &ServerArg) -> anyhow::Result<()> {
    let base = format!("{}/v1/keys", server.server.trim_end_matches('/'));
    let http = client(server)?;
    let reach = || format!("cannot reach {base}");
    match action {
        KeysCommand::Create {
            service,
            scopes,
            description,
        } => {
            let scopes =
                crate::auth::parse_scopes(scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let body = answer(
                http.post(&base)
                    .json(
                        &json!({"service": service, "scopes": scopes, "description": description}),
                    )
                    .send()
                    .await
                    .with_context(reach)?,
            )
            .await?;
            print_created(&body["id"], &body["secret"]);
        }
        KeysCommand::List => {
            let body = answer(http.get(&base).send().await.with_context(reach)?).await?;
            for key in body["keys"].as_array().into_iter().flatten() {
                print_key(key);
            }
        }
        KeysCommand::Revoke { id } => {
            let url = format!("{base}/{id}");
            let response = http.delete(&url).send().await.with_context(reach)?;
            if response.status() == reqwest::StatusCode::NO_CONTENT {
                println!("revoked {id}");
            } else {
                answer(response).await?;
            }
        }
    }
    Ok(())
}

fn print_created(id: &Value, secret: &Value) {
    println!("{}", id.as_str().unwrap_or("-"));
    eprintln!("The key is shown only now; keep it in your secret store:");
    println!("{}", secret.as_str().unwrap_or("-"));
}

/// `mdc keys … --direct`: in the configured store, without a server.
pub async fn keys_direct(
    action: &KeysCommand,
    keys: std::sync::Arc<dyn mdc_core::ports::ApiKeys>,
) -> anyhow::Result<()> {
    match action {
        KeysCommand::Create {
            service,
            scopes,
            description,
        } => {
            let scopes =
                crate::auth::parse_scopes(scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let (key, secret) = crate::auth::issue(service, scopes, description)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            keys.create(&key).await.context("storing the key")?;
            print_created(&json!(key.id), &json!(secret));
        }
        KeysCommand::List => {
            for key in keys.list().await.context("reading the keys")? {
                print_key(&crate::keys_api::shown(&key));
            }
        }
        KeysCommand::Revoke { id } => {
            if !keys
                .revoke(id, mdc_core::now())
                .await
                .context("revoking the key")?
            {
                bail!("no active key {id}");
            }
            println!("revoked {id} (servers stop accepting it within 2 s)");
        }
    }
    Ok(())
}
