//! The load generator's submit: one kept-alive HTTP/1.1 connection per
//! worker, posting a body already rendered to bytes (before the latency
//! clock starts). The server shares the machine's cores with the generator,
//! so what a request costs the generator is taken from the server; a
//! general-purpose client (its pool, header maps, serialising the body)
//! cost about 20 µs more per request here. Plain http:// only.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one request may take before its connection is given up.
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Poster {
    /// `host:port` of the server.
    authority: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Poster {
    /// For a base URL such as `http://127.0.0.1:8080`; connects on first use.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let authority = url
            .strip_prefix("http://")
            .context("the load generator speaks plain http:// only")?
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            authority,
            sender: None,
        })
    }

    /// POSTs a JSON body to `path` and reads the whole answer; its status
    /// and body. A failed or timed-out connection is opened again on the
    /// next call.
    pub async fn post(&mut self, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let result = match tokio::time::timeout(TIMEOUT, self.try_post(path, body)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("no answer within {TIMEOUT:?}")),
        };
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_post(&mut self, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let sender = match &mut self.sender {
            Some(sender) => sender,
            None => {
                let stream = TcpStream::connect(&self.authority).await?;
                stream.set_nodelay(true)?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                self.sender.insert(sender)
            }
        };
        sender.ready().await?;
        let request = Request::post(path)
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
