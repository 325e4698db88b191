//! The HTTP edge: routers, shared state and the extractors that turn raw
//! requests into domain values (ticket ids, client IPs, JSON bodies) with the
//! contract's errors.

pub mod browser_api;
pub mod cors;
pub mod headers;
pub mod lang;
pub mod limits;
pub mod miniprogram;
pub mod oidc;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod phone;
pub mod poll;
pub mod qr_cache;
pub mod render;
pub mod serve;
pub mod static_files;
pub mod tokens_api;
pub mod trace;
pub mod trusted_api;
pub mod view;
pub mod wechat;
pub mod wechat_events;
pub mod ws;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::config::Settings;
use crate::engine::Engine;
use crate::engine::Error as DomainError;
use crate::error::Error;
use crate::templates::Templates;
use crate::ticket::TicketId;

/// Request bodies larger than this get 413.
pub const MAX_BODY: usize = 64 * 1024;

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

pub struct Shared {
    pub settings: Settings,
    pub engine: Engine,
    pub templates: Templates,
    pub metrics: crate::telemetry::MetricsHandle,
    /// Flips to true when the service stops: sockets close with 1012.
    pub shutdown: watch::Receiver<bool>,
    /// The phone pages' CSRF MAC, keyed once at start (see `phone`).
    pub page_mac: hmac::Hmac<sha2::Sha256>,
    pub qr_cache: qr_cache::QrCache,
    /// WeChat's HTTP client (one connection pool for every WeChat flow).
    pub wechat: crate::providers::wechat::WechatClient,
    pub limits: limits::Limits,
    /// The OpenID Provider, when clients are configured.
    pub oidc: Option<Arc<crate::oidc::Provider>>,
}

impl Shared {
    /// What the providers work with.
    pub fn providers(&self) -> crate::providers::Context<'_> {
        crate::providers::Context {
            engine: &self.engine,
            wechat: &self.wechat,
            settings: &self.settings,
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Whether `origin` names the host the request was sent to (the service's
/// own pages: never a refusal worth telling).
pub fn same_host(origin: &str, headers: &axum::http::HeaderMap) -> bool {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(host))
}

/// How often one refused origin is logged.
const REFUSED_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Origins remembered at most (a flood of made-up ones forgets, not grows).
const REFUSED_KEPT: usize = 1024;

/// Logs, at warn and at most once a minute per origin, a browser request
/// refused for its Origin: the page itself only sees a failed request, so
/// this is where an operator learns which origin to allow.
pub fn note_refused_origin(origin: &str) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static SEEN: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashMap::new()));
    let Ok(mut seen) = seen.lock() else { return };
    if refused_is_news(&mut seen, origin, Instant::now()) {
        tracing::warn!(
            origin = %origin.chars().take(200).collect::<String>(),
            "refused a browser request from an origin not in QRLOGIN_ALLOWED_ORIGINS"
        );
    }
}

/// Whether `origin`'s refusal at `now` is to be logged (none in the last
/// `REFUSED_EVERY`), remembering it if so.
fn refused_is_news(
    seen: &mut std::collections::HashMap<String, std::time::Instant>,
    origin: &str,
    now: std::time::Instant,
) -> bool {
    if seen
        .get(origin)
        .is_some_and(|at| now.duration_since(*at) < REFUSED_EVERY)
    {
        return false;
    }
    if seen.len() >= REFUSED_KEPT {
        seen.retain(|_, at| now.duration_since(*at) < REFUSED_EVERY);
        if seen.len() >= REFUSED_KEPT {
            seen.clear();
        }
    }
    seen.insert(origin.to_owned(), now);
    true
}

/// Whether the request Origin `origin` is one of `allowed` (normalised at
/// start by `config::normalize_origin`).
pub fn origin_in(allowed: &[String], origin: &str) -> bool {
    crate::config::normalize_origin(origin).is_some_and(|o| allowed.contains(&o))
}

/// The services inside the trace (see [`router`]): axum requests in, axum
/// responses out, never failing (errors are answers).
pub trait Stack:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Stack for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The service's HTTP stack: the routes inside the body limit, the per-IP
/// and time limits, CORS and the trace, each applied once around the whole
/// router. Not `Router::layer`, which wraps every route, so that each
/// request cloned its route's chain of boxed services (5 k instructions a
/// confirm, docs/performance.md).
pub fn router(state: AppState) -> trace::Traced<impl Stack> {
    use tower::Layer;
    let cors = cors::layer(&state.settings);
    let metrics_here = state.settings.http.metrics_bind.is_none();
    let routes = Router::new()
        .merge(browser_api::router())
        .merge(trusted_api::router())
        .merge(tokens_api::router())
        .merge(static_files::router())
        .merge(pages::router())
        .merge(ops::router(metrics_here))
        .merge(wechat::router())
        .merge(wechat_events::router())
        .merge(miniprogram::router())
        .merge(oidc::router())
        .fallback(|| async { Error::from(DomainError::NotFound) })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .with_state(state.clone());
    let body_limited = axum::extract::DefaultBodyLimit::max(MAX_BODY).layer(routes);
    // `CorsLayer::layer` checks its rules as it builds: a combination it
    // cannot serve stops the start, not a request.
    trace::Traced::new(cors::Cors(
        cors.layer(limits::Limited::new(state, body_limited)),
    ))
}

/// A ticket id from the path. An id that cannot be a ticket is simply an
/// unknown ticket (404), whatever it contains.
pub struct TicketPath(pub TicketId);

impl<S: Send + Sync> FromRequestParts<S> for TicketPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| DomainError::TicketNotFound)?;
        raw.parse()
            .map(TicketPath)
            .map_err(|_| DomainError::TicketNotFound.into())
    }
}

/// A JSON body whose rejections use the contract's error shape. Read as
/// bytes and parsed by [`json_body`], the one UTF-8 check every JSON body
/// goes through (`axum::Json` lets serde_json skip the unchecked bytes of
/// fields a type keeps as raw values or ignores).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        if !is_json_content_type(req.headers()) {
            return Err(
                DomainError::Invalid("expected Content-Type: application/json".into()).into(),
            );
        }
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        json_body(&bytes).map(Json)
    }
}

/// `application/json` or `application/…+json`, parameters allowed (what
/// `axum::Json` accepted before).
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    // Compared without a lowercased copy: every JSON request passes here.
    let json_suffix = sub.len() >= 5
        && sub.is_char_boundary(sub.len() - 5)
        && sub[sub.len() - 5..].eq_ignore_ascii_case("+json");
    kind.eq_ignore_ascii_case("application") && (sub.eq_ignore_ascii_case("json") || json_suffix)
}

/// A query string parsed strictly, with the contract's `bad_request` as its
/// rejection (axum's `Query` answers text/plain). A repeated parameter is
/// refused rather than first- or last-wins: two readers of one URL (a proxy
/// log, a cache, this service) must not see different values.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        query_of(&parts.uri).map(Query)
    }
}

/// The query string of `uri` as `T`, each parameter at most once.
pub fn query_of<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, Error> {
    let raw = uri.query().unwrap_or("");
    let mut seen = std::collections::HashSet::new();
    for (name, _) in url::form_urlencoded::parse(raw.as_bytes()) {
        if !seen.insert(name.clone()) {
            let shown: String = name.chars().take(40).collect();
            return Err(DomainError::Invalid(format!(
                "query parameter {shown:?} is given more than once"
            ))
            .into());
        }
    }
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|axum::extract::Query(v)| v)
        .map_err(|e| {
            DomainError::Invalid(format!("invalid query string: {}", e.body_text())).into()
        })
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A raw request body whose rejections (too large, unreadable) use the
/// contract's error shape. For endpoints where an empty body is allowed.
pub struct RawBody(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match bytes::Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) if limits::body_timed_out(&e) => Err(Error::Timeout),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Error::PayloadTooLarge),
            Err(e) => {
                Err(DomainError::Invalid(format!("unreadable body: {}", e.body_text())).into())
            }
        }
    }
}

impl RawBody {
    /// `T::default()` for an empty body, else the body parsed as JSON.
    pub fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, Error> {
        if self.0.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        json_body(&self.0)
    }
}

/// A JSON body, which RFC 8259 says is UTF-8: checked whole, because
/// serde_json skips the strings of fields a type ignores without looking
/// at their bytes (the poll_body fuzzer sent one with a stray 0xFE).
pub fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| DomainError::Invalid(format!("invalid JSON body: not UTF-8 ({e})")))?;
    serde_json::from_str(text)
        .map_err(|e| DomainError::Invalid(format!("invalid JSON body: {e}")).into())
}

/// The client's address: the peer, or the first untrusted hop of
/// `X-Forwarded-For` when the peer is a configured proxy.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(ClientIp(client_ip(
            peer,
            &parts.headers,
            &state.settings.http.trusted_proxies,
        )))
    }
}

/// Walk `X-Forwarded-For` from the right while hops are trusted proxies.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    // On a dual-stack listener an IPv4 proxy arrives as `::ffff:a.b.c.d`:
    // compared in its IPv4 form, so `127.0.0.1/32` still names it.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        client = hop;
        if !is_trusted(&hop) {
            break;
        }
    }
    client
}

/// The value of `Authorization: Bearer …`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The page `User-Agent`, bounded so a hostile header does not bloat a ticket.
pub fn user_agent(headers: &HeaderMap) -> String {
    let ua = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ua.chars().take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_are_application_json_or_a_json_suffix_in_any_case() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_str(v).unwrap(),
            );
            is_json_content_type(&h)
        };
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "APPLICATION/LD+JSON ;x=y",
        ] {
            assert!(with(yes), "{yes} refused");
        }
        for no in [
            "text/json",
            "application/jsonx",
            "application/xjson",
            "application/json+xml",
            "application/",
            "json",
            "",
        ] {
            assert!(!with(no), "{no} accepted");
        }
        assert!(!is_json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn a_refused_origin_is_logged_once_a_minute_and_the_memory_stays_bounded() {
        let mut seen = std::collections::HashMap::new();
        let t0 = std::time::Instant::now();
        assert!(refused_is_news(&mut seen, "http://localhost:3000", t0));
        let soon = t0 + std::time::Duration::from_secs(59);
        assert!(!refused_is_news(&mut seen, "http://localhost:3000", soon));
        assert!(refused_is_news(&mut seen, "http://127.0.0.1:3000", soon));
        let later = t0 + REFUSED_EVERY;
        assert!(refused_is_news(&mut seen, "http://localhost:3000", later));
        for i in 0..3 * REFUSED_KEPT {
            refused_is_news(&mut seen, &format!("http://h{i}.example"), later);
        }
        assert!(seen.len() <= REFUSED_KEPT);
    }

    fn any_ip() -> impl proptest::strategy::Strategy<Value = IpAddr> {
        use proptest::prelude::*;
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
            (0u8..4).prop_map(|last| IpAddr::from([10, 0, 0, last])),
        ]
    }

    proptest::proptest! {
        #[test]
        fn client_ip_is_the_peer_or_a_listed_hop(
            peer in any_ip(),
            hops in proptest::collection::vec(any_ip(), 0..6),
            junk in "\\PC{0,30}",
        ) {
            proptest::prop_assume!(junk.split(',').all(|s| s.trim().parse::<IpAddr>().is_err()));
            let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
            let mut value: Vec<String> = hops.iter().map(IpAddr::to_string).collect();
            value.push(junk);
            let mut headers = HeaderMap::new();
            if let Ok(v) = value.join(", ").parse() {
                headers.insert("x-forwarded-for", v);
            }
            let client = client_ip(peer, &headers, &trusted);
            let (peer, hops): (IpAddr, Vec<IpAddr>) =
                (peer.to_canonical(), hops.iter().map(IpAddr::to_canonical).collect());
            proptest::prop_assert!(client == peer || hops.contains(&client));
            if !trusted[0].contains(&peer) {
                proptest::prop_assert_eq!(client, peer);
            }
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 10.1.1.1".parse().unwrap());
        assert_eq!(
            client_ip("10.0.0.1".parse().unwrap(), &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip("198.51.100.1".parse().unwrap(), &headers, &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
    }

    /// A dual-stack listener sees an IPv4 proxy as `::ffff:a.b.c.d`.
    #[test]
    fn an_ipv4_proxy_on_a_dual_stack_listener_is_still_trusted() {
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert_eq!(
            client_ip("::ffff:127.0.0.1".parse().unwrap(), &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn bearer_reads_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
