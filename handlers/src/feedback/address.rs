//! Where MDC may deliver webhooks: `https` URLs whose host resolves only to
//! public addresses. Loopback, private, link-local (the cloud metadata
//! service), shared, multicast and unspecified addresses are refused, at
//! creation and on every connection (a resolver that filters them), unless
//! the setting for local development and tests allows them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether MDC must not connect to `ip`.
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                || a == 0
                // Shared address space (carrier-grade NAT).
                || (a == 100 && (64..128).contains(&b))
                // Benchmarking, reserved.
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return internal(IpAddr::V4(v4));
            }
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                // Unique local fc00::/7, link-local fe80::/10.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a webhook URL: its syntax, scheme and (for an address written
/// out) host; then, for a name, every address it resolves to.
pub async fn check(url: &str, allow_private: bool) -> Result<url::Url, String> {
    let parsed = syntax(url, allow_private)?;
    if !allow_private {
        if let Some(url::Host::Domain(host)) = parsed.host() {
            let port = parsed.port_or_known_default().unwrap_or(443);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("{host} does not resolve: {e}"))?
                .collect();
            if addrs.is_empty() || addrs.iter().any(|a| internal(a.ip())) {
                return Err(format!(
                    "{host} resolves to an internal address; webhooks go to public https URLs"
                ));
            }
        }
    }
    Ok(parsed)
}

/// The checks that need no lookup.
pub fn syntax(url: &str, allow_private: bool) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials".into());
    }
    match parsed.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err("must be an https URL".into()),
    }
    let ip = match parsed.host() {
        None => return Err("must name a host".into()),
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
    };
    if !allow_private && ip.is_some_and(internal) {
        return Err("must not point at a loopback, private or link-local address".into());
    }
    Ok(parsed)
}

/// Resolves names for webhook deliveries, dropping internal addresses, so
/// a name that changes its answer after the endpoint was created (DNS
/// rebinding) still cannot reach inside.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| !internal(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    format!("{} resolves only to internal addresses", name.as_str()).into(),
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for deliveries: no redirects, bounded time, and (unless
/// private addresses are allowed) the filtering resolver.
pub fn client(timeout: std::time::Duration, allow_private: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .user_agent(concat!("mdc-webhooks/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().expect("a TLS backend is compiled in")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_what_could_reach_inside() {
        let refused = [
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://172.16.0.1/x",
            "https://192.168.1.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://user:pw@hooks.example.com/x",
            "ftp://hooks.example.com/x",
            "not a url",
        ];
        for url in refused {
            assert!(syntax(url, false).is_err(), "{url}");
        }
        assert!(
            syntax("https://203.0.113.9/x", false).is_err(),
            "documentation range"
        );
        assert!(syntax("https://hooks.example.com/x", false).is_ok());
        assert!(syntax("https://8.8.8.8/x", false).is_ok());
        assert!(
            syntax("http://127.0.0.1:9000/x", true).is_ok(),
            "allowed for tests"
        );
        // A name that resolves to loopback passes the syntax, not the lookup.
        assert!(syntax("https://localhost:8443/x", false).is_ok());
        let refused = check("https://localhost:8443/x", false)
            .await
            .expect_err("localhost resolves to loopback");
        assert!(refused.contains("internal address"), "{refused}");
        assert!(check("https://localhost:8443/x", true).await.is_ok());
    }
}
