//! API keys: issuing them, checking them, and who a request speaks for.
//!
//! A key reads `mdc_sk_<ULID>_<secret>`. The ULID names the stored key
//! (`key_<ULID>`); only the SHA-256 of the secret is stored, and it is
//! compared in constant time. Keys are never logged.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use base64::Engine as _;
use futures::future::LocalBoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use mdc_core::ports::{ApiKey, ApiKeys, Scope};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::config::{AuthMode, ServiceConfig};

const TOKEN_PREFIX: &str = "mdc_sk_";

/// How long a process trusts what it read of a key. A key revoked through
/// this process stops at once; other processes see it within this time.
const KEY_CACHE: Duration = Duration::from_secs(2);

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A service name: what keys, messages, devices and webhooks record.
pub fn check_service(service: &str) -> Result<(), String> {
    let ok = !service.is_empty()
        && service.len() <= 64
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && service.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(
            "a service name is 1 to 64 of a-z, 0-9, - and _, starting with a letter or digit"
                .into(),
        )
    }
}

/// Parses `send,read` (spaces allowed); none is an error.
pub fn parse_scopes(text: &str) -> Result<Vec<Scope>, String> {
    let mut scopes: Vec<Scope> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err("give at least one scope: send, read, read:pii or admin".into());
    }
    Ok(scopes)
}

/// A new key for `service`: what to store, and the secret to hand out once.
pub fn issue(
    service: &str,
    scopes: Vec<Scope>,
    description: &str,
) -> Result<(ApiKey, String), String> {
    check_service(service)?;
    if scopes.is_empty() {
        return Err("give at least one scope: send, read, read:pii or admin".into());
    }
    if description.len() > 200 {
        return Err("a description is at most 200 bytes".into());
    }
    let ulid = ulid::Ulid::new();
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let key = ApiKey {
        id: format!("key_{ulid}"),
        service: service.to_owned(),
        scopes,
        secret_hash: hash(&secret),
        description: description.to_owned(),
        created_at: mdc_core::now(),
        revoked_at: None,
    };
    Ok((key, format!("{TOKEN_PREFIX}{ulid}_{secret}")))
}

/// `mdc_sk_<ULID>_<secret>` → (`key_<ULID>`, secret).
fn parse_token(token: &str) -> Option<(String, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (ulid, secret) = rest.split_once('_')?;
    let ulid: ulid::Ulid = ulid.parse().ok()?;
    (!secret.is_empty()).then(|| (format!("key_{ulid}"), secret))
}

/// Who a request speaks for.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's service; none on an API without keys.
    pub service: Option<String>,
    pub key_id: Option<String>,
    scopes: Vec<Scope>,
}

impl Caller {
    /// A request to an API without keys: it may do everything.
    fn open() -> Self {
        Self {
            service: None,
            key_id: None,
            scopes: Scope::ALL.to_vec(),
        }
    }

    /// `admin` grants every scope, `read:pii` grants `read`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
            || self.scopes.contains(&Scope::Admin)
            || (scope == Scope::Read && self.scopes.contains(&Scope::ReadPii))
    }

    /// 403 unless the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this API key lacks the {scope} scope"),
        )
        .rule("scope"))
    }

    pub fn is_admin(&self) -> bool {
        self.has(Scope::Admin)
    }

    /// Whether recipients and bodies are shown in clear.
    pub fn sees_pii(&self) -> bool {
        self.has(Scope::ReadPii)
    }

    /// Whether this caller may see or touch what `owner` created: its own
    /// things, or anything with `admin`.
    pub fn owns(&self, owner: Option<&str>) -> bool {
        self.is_admin() || self.service.as_deref() == owner
    }

    /// The service a list is limited to: none for admins (all services).
    pub fn scope_filter(&self) -> Option<String> {
        if self.is_admin() {
            None
        } else {
            self.service.clone()
        }
    }
}

/// Checks API keys and per-service submit rates for the HTTP API.
pub struct Auth {
    keys: Arc<dyn ApiKeys>,
    mode: AuthMode,
    /// False while the API is open: `auth = "none"`, or on loopback while
    /// no key exists. Turns true when a key is created.
    enforcing: AtomicBool,
    last_check: Mutex<Instant>,
    cache: Mutex<HashMap<String, (Option<ApiKey>, Instant)>>,
    limits: HashMap<String, DefaultDirectRateLimiter>,
    /// A hash to compare against when the key id is unknown, so an unknown
    /// id takes as long as a wrong secret.
    decoy: String,
}

impl Auth {
    /// Decides whether the API is open. With `auth = "keys"` and no key, it
    /// stays open on a loopback address (with a warning) and refuses to
    /// start on any other.
    pub async fn new(
        keys: Arc<dyn ApiKeys>,
        mode: AuthMode,
        listen: SocketAddr,
        services: &BTreeMap<String, ServiceConfig>,
    ) -> anyhow::Result<Self> {
        let enforcing = match mode {
            AuthMode::None => {
                tracing::warn!(%listen, "auth = \"none\": the API accepts every request without a key");
                false
            }
            AuthMode::Keys => {
                let any = keys
                    .list()
                    .await
                    .map_err(|e| anyhow::anyhow!("reading the API keys: {e}"))?
                    .iter()
                    .any(ApiKey::is_active);
                if !any && !listen.ip().is_loopback() {
                    anyhow::bail!(
                        "no API key exists and {listen} is not a loopback address: anyone who can reach it could send on the company's bill. Create a key first (mdc keys create --direct --service ops --scopes admin), or set auth = \"none\" if a gateway in front authenticates"
                    );
                }
                if !any {
                    tracing::warn!(%listen, "No API key exists: the API is open on this loopback address until one is created (mdc keys create)");
                }
                any
            }
        };
        let limits = services
            .iter()
            .filter_map(|(name, service)| {
                let rate = NonZeroU32::new(service.rate_per_second)?;
                let burst = service.burst.and_then(NonZeroU32::new).unwrap_or(rate);
                Some((
                    name.clone(),
                    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
                ))
            })
            .collect();
        Ok(Self {
            keys,
            mode,
            enforcing: AtomicBool::new(enforcing),
            last_check: Mutex::new(Instant::now()),
            cache: Mutex::new(HashMap::new()),
            limits,
            decoy: hash("decoy"),
        })
    }

    pub fn keys(&self) -> &Arc<dyn ApiKeys> {
        &self.keys
    }

    /// A key was created: from now on every request needs one.
    pub fn key_created(&self) {
        if self.mode == AuthMode::Keys {
            self.enforcing.store(true, Ordering::SeqCst);
        }
    }

    /// A key was revoked: this process stops trusting it at once.
    pub fn forget(&self, id: &str) {
        lock(&self.cache).remove(id);
    }

    /// Who `authorization` (the header's value) speaks for: 401 for a
    /// missing, malformed, unknown or revoked key.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        if self.mode == AuthMode::None {
            return Ok(Caller::open());
        }
        let Some(header) = authorization else {
            if self.is_open().await? {
                return Ok(Caller::open());
            }
            return Err(unauthorized(
                "an API key is required: send Authorization: Bearer mdc_sk_…",
            ));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer <API key>"))?;
        let Some((id, secret)) = parse_token(token) else {
            return Err(unauthorized("not an MDC API key (they start with mdc_sk_)"));
        };
        let key = self.lookup(&id).await?;
        let presented = hash(secret);
        let expected = key.as_ref().map_or(&self.decoy, |k| &k.secret_hash);
        let matches: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
        match key {
            Some(key) if matches && key.is_active() => Ok(Caller {
                service: Some(key.service),
                key_id: Some(key.id),
                scopes: key.scopes,
            }),
            Some(key) if matches => Err(unauthorized(&format!(
                "this API key was revoked at {}",
                key.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            ))),
            _ => Err(unauthorized("unknown API key")),
        }
    }

    /// While no key exists on a loopback API, requests need none. Looks
    /// again (at most every couple of seconds) for a key another process
    /// created.
    async fn is_open(&self) -> Result<bool, ApiError> {
        if self.enforcing.load(Ordering::SeqCst) {
            return Ok(false);
        }
        {
            let mut last = lock(&self.last_check);
            if last.elapsed() < KEY_CACHE {
                return Ok(true);
            }
            *last = Instant::now();
        }
        let any = self
            .keys
            .list()
            .await
            .map_err(crate::api::unavailable)?
            .iter()
            .any(ApiKey::is_active);
        if any {
            self.enforcing.store(true, Ordering::SeqCst);
        }
        Ok(!any)
    }

    async fn lookup(&self, id: &str) -> Result<Option<ApiKey>, ApiError> {
        if let Some((key, at)) = lock(&self.cache).get(id) {
            if at.elapsed() < KEY_CACHE {
                return Ok(key.clone());
            }
        }
        let key = self.keys.get(id).await.map_err(crate::api::unavailable)?;
        let mut cache = lock(&self.cache);
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.to_owned(), (key.clone(), Instant::now()));
        Ok(key)
    }

    /// 429 with `Retry-After` when `service` submits faster than its
    /// configured rate.
    pub fn check_rate(&self, service: Option<&str>) -> Result<(), ApiError> {
        let Some(limiter) = service.and_then(|s| self.limits.get(s)) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "service {} is over its submit rate; retry in {seconds} s",
                    service.unwrap_or_default()
                ),
            )
            .rule("rate_limited")
            .retry_after(seconds.max(1))
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message).rule("unauthenticated")
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let auth = req
            .app_data::<web::Data<crate::api::State>>()
            .map(|state| state.auth.clone());
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        Box::pin(async move {
            let auth = auth.ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no authentication set up",
                )
            })?;
            let header = match header {
                Some(Ok(value)) => Some(value),
                Some(Err(_)) => return Err(unauthorized("the Authorization header is not text")),
                None => None,
            };
            auth.authenticate(header.as_deref()).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_key_parses_back_to_its_id_and_hash() {
        let (key, token) = issue("billing", vec![Scope::Send], "").expect("issue");
        assert!(token.starts_with("mdc_sk_"));
        let (id, secret) = parse_token(&token).expect("parses");
        assert_eq!(id, key.id);
        assert_eq!(hash(secret), key.secret_hash);
        assert!(!key.secret_hash.contains(secret));
        assert!(parse_token("mdc_sk_notaulid_x").is_none());
        assert!(parse_token(&token.replace("mdc_sk_", "sk_")).is_none());
    }

    #[test]
    fn service_names_and_scopes_are_checked() {
        assert!(issue("Billing", vec![Scope::Send], "").is_err());
        assert!(issue("", vec![Scope::Send], "").is_err());
        assert!(issue("billing", vec![], "").is_err());
        assert_eq!(
            parse_scopes("read, send,read").expect("valid"),
            vec![Scope::Send, Scope::Read]
        );
        assert!(parse_scopes("write")
            .expect_err("unknown")
            .contains("write"));
        assert!(parse_scopes(" , ").is_err());
    }

    #[test]
    fn admin_grants_everything_and_pii_grants_read() {
        let caller = |scopes: &[Scope]| Caller {
            service: Some("billing".into()),
            key_id: None,
            scopes: scopes.to_vec(),
        };
        assert!(caller(&[Scope::ReadPii]).has(Scope::Read));
        assert!(!caller(&[Scope::Read]).has(Scope::ReadPii));
        assert!(!caller(&[Scope::Send]).has(Scope::Read));
        assert!(caller(&[Scope::Admin]).owns(Some("shipping")));
        assert!(!caller(&[Scope::Send]).owns(Some("shipping")));
        assert!(caller(&[Scope::Send]).owns(Some("billing")));
    }
}
