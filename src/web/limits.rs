//! Abuse limits per client IP: ticket creation, WebSocket connects,
//! long-polls, the WeChat code paths (both callbacks and the `wechat-web`
//! redemption), WeChat event pushes, Mini Program calls and QR renders, each
//! a GCRA quota (governor). The trusted API is limited only
//! by its key. Over a limit: 429 `rate_limited` with `Retry-After`. Every
//! per-IP count keys its client with `ip::ip_key` (an IPv6 client is its /64).
//!
//! Waiting clients (open sockets, waiting long-polls) are admitted by
//! `Admission`, capped in total, per IP and per ticket; and no request may
//! take longer than the request timeout to send its body.
//!
//! Limits are per instance. Behind a load balancer an attacker's budget is
//! the quota times the number of instances, which still bounds the damage
//! (tickets are capped in total and expire); a shared Redis counter would
//! add a Redis round trip to every ticket for little gain.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::lang::page_lang;
use super::render::{Message, message_page};
use super::{AppState, client_ip};
use crate::config::Settings;
use crate::engine::Error as DomainError;
use crate::error::Error;
use crate::ip::ip_key;
use crate::providers::wechat::oauth::{OAUTH_CALLBACK, WEB_CALLBACK, WEB_REDEEM_SUFFIX};
use crate::ticket::TicketId;

/// One per-IP quota; `None` when its setting is 0 (off).
struct Limit {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    checks: AtomicU32,
}

impl Limit {
    fn per_minute(n: u32) -> Self {
        let limiter = NonZeroU32::new(n).map(|n| {
            // A burst of a sixth of the minute's quota: a page reload or a
            // few tabs pass, a loop does not.
            let burst = NonZeroU32::new((n.get() / 6).max(1)).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(n).allow_burst(burst))
        });
        Self {
            limiter,
            checks: AtomicU32::new(0),
        }
    }

    /// Ok, or the seconds to wait.
    fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // Forget idle IPs now and then, so the table tracks active clients only.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter.check_key(&ip_key(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

pub struct Limits {
    tickets: Limit,
    sockets: Limit,
    polls: Limit,
    wechat: Limit,
    /// `/wechat/events`: each push costs a signature check (and in safe mode
    /// a decryption) before it can be refused.
    events: Limit,
    /// `/api/v1/miniprogram/…`: each call may cost a WeChat `code2session`.
    miniprogram: Limit,
    /// QR images rendered (not served from the cache); drawn on by the
    /// image handler, which alone knows a cache miss.
    renders: Limit,
    /// Open WebSockets and waiting long-polls: in total, per IP and per
    /// ticket.
    pub waiting: Arc<Admission>,
}

/// What waits for a ticket's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Socket,
    Poll,
}

/// The caps on waiting clients, checked and counted in one step under one
/// lock: a cap checked before and counted after (the socket cap was checked
/// before the upgrade and counted when the socket registered) lets
/// concurrent requests all pass the check. Sockets and polls of one ticket
/// count together against the per-ticket cap.
pub struct Admission {
    counts: Mutex<Counts>,
    max_sockets: usize,
    max_polls: usize,
    max_sockets_per_ip: u32,
    max_polls_per_ip: u32,
    max_per_ticket: u32,
    /// Tickets are counted under a keyed hash of their id, so a `Pass` (held
    /// by every waiting browser) is a few words with no allocation. Only
    /// live tickets are counted (`watch` found them first): ids of ours.
    hasher: crate::ticket::IdHasher,
}

#[derive(Default)]
struct Counts {
    sockets: usize,
    polls: usize,
    /// Sockets and polls per IP key.
    per_ip: HashMap<IpAddr, (u32, u32)>,
    /// Sockets and polls together, per ticket.
    per_ticket: HashMap<u64, u32, crate::ticket::IdHasher>,
}

impl Admission {
    pub fn new(settings: &Settings) -> Self {
        Self {
            counts: Mutex::default(),
            max_sockets: settings.limits.max_sockets,
            max_polls: settings.limits.max_polls,
            max_sockets_per_ip: settings.limits.max_sockets_per_ip,
            max_polls_per_ip: settings.limits.max_polls_per_ip,
            max_per_ticket: u32::try_from(settings.limits.max_sockets_per_ticket)
                .unwrap_or(u32::MAX),
            hasher: crate::ticket::IdHasher::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Every critical section leaves the counts whole.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more `kind` from `ip` on `ticket`, or the error to
    /// answer: 503 over the instance's total, 429 over the IP's or the
    /// ticket's cap. Counted as soon as it is granted; the `Pass` gives the
    /// place back when dropped.
    pub fn admit(
        self: &Arc<Self>,
        kind: Kind,
        ticket: &TicketId,
        ip: IpAddr,
    ) -> Result<Pass, Error> {
        use std::hash::BuildHasher;
        let ip = ip_key(ip);
        let ticket = self.hasher.hash_one(ticket);
        let mut counts = self.lock();
        let (total, max_total, max_per_ip, busy) = match kind {
            Kind::Socket => (
                counts.sockets,
                self.max_sockets,
                self.max_sockets_per_ip,
                "too many open sockets, retry shortly",
            ),
            Kind::Poll => (
                counts.polls,
                self.max_polls,
                self.max_polls_per_ip,
                "too many long-polls waiting, retry shortly",
            ),
        };
        if total >= max_total {
            return Err(DomainError::OverCapacity(busy).into());
        }
        let (ip_sockets, ip_polls) = counts.per_ip.get(&ip).copied().unwrap_or_default();
        let from_ip = match kind {
            Kind::Socket => ip_sockets,
            Kind::Poll => ip_polls,
        };
        if from_ip >= max_per_ip {
            return Err(DomainError::RateLimited {
                message: "too many open connections from this address",
                retry_after: 10,
            }
            .into());
        }
        if counts.per_ticket.get(&ticket).copied().unwrap_or(0) >= self.max_per_ticket {
            return Err(DomainError::RateLimited {
                message: "too many sockets and long-polls for this ticket",
                retry_after: 5,
            }
            .into());
        }
        match kind {
            Kind::Socket => counts.sockets += 1,
            Kind::Poll => counts.polls += 1,
        }
        let at_ip = counts.per_ip.entry(ip).or_default();
        match kind {
            Kind::Socket => at_ip.0 += 1,
            Kind::Poll => at_ip.1 += 1,
        }
        *counts.per_ticket.entry(ticket).or_default() += 1;
        Ok(Pass {
            admission: self.clone(),
            kind,
            ip,
            ticket,
        })
    }

    /// Open sockets and waiting polls of this instance.
    pub fn in_use(&self) -> (usize, usize) {
        let counts = self.lock();
        (counts.sockets, counts.polls)
    }
}

/// One admitted socket or poll; dropping it gives the place back.
pub struct Pass {
    admission: Arc<Admission>,
    kind: Kind,
    ip: IpAddr,
    ticket: u64,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        match self.kind {
            Kind::Socket => counts.sockets = counts.sockets.saturating_sub(1),
            Kind::Poll => counts.polls = counts.polls.saturating_sub(1),
        }
        // Entries, not a lookup and then a removal: one hash of each key.
        if let Entry::Occupied(mut at_ip) = counts.per_ip.entry(self.ip) {
            let (sockets, polls) = at_ip.get_mut();
            match self.kind {
                Kind::Socket => *sockets = sockets.saturating_sub(1),
                Kind::Poll => *polls = polls.saturating_sub(1),
            }
            if *at_ip.get() == (0, 0) {
                at_ip.remove();
            }
        }
        if let Entry::Occupied(mut n) = counts.per_ticket.entry(self.ticket) {
            *n.get_mut() = n.get().saturating_sub(1);
            if *n.get() == 0 {
                n.remove();
            }
        }
    }
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        Self {
            tickets: Limit::per_minute(settings.limits.rate_tickets),
            sockets: Limit::per_minute(settings.limits.rate_sockets),
            polls: Limit::per_minute(settings.limits.rate_polls),
            wechat: Limit::per_minute(settings.limits.rate_wechat),
            events: Limit::per_minute(settings.limits.rate_events),
            miniprogram: Limit::per_minute(settings.limits.rate_miniprogram),
            renders: Limit::per_minute(settings.limits.rate_renders),
            waiting: Arc::new(Admission::new(settings)),
        }
    }
}

/// Which quota a request draws on, if any.
fn quota_of<'a>(
    limits: &'a Limits,
    method: &Method,
    path: &str,
) -> Option<(&'a Limit, &'static str)> {
    let ticket_path = path.strip_prefix("/api/v1/tickets/");
    match *method {
        Method::POST if path == "/api/v1/tickets" => Some((&limits.tickets, "tickets")),
        // Each authorization stores its request as a ticket does.
        _ if path == "/oauth2/authorize" => Some((&limits.tickets, "tickets")),
        // The OpenID login page's tickets are tickets too.
        Method::POST if path.starts_with("/oauth2/authorize/") && path.ends_with("/tickets") => {
            Some((&limits.tickets, "tickets"))
        }
        Method::GET if ticket_path.is_some_and(|p| p.ends_with("/ws")) => {
            Some((&limits.sockets, "sockets"))
        }
        Method::POST if ticket_path.is_some_and(|p| p.ends_with("/poll")) => {
            Some((&limits.polls, "polls"))
        }
        Method::POST if ticket_path.is_some_and(|p| p.ends_with(WEB_REDEEM_SUFFIX)) => {
            Some((&limits.wechat, "wechat"))
        }
        Method::GET if path == OAUTH_CALLBACK || path == WEB_CALLBACK => {
            Some((&limits.wechat, "wechat"))
        }
        _ if path == super::wechat_events::EVENTS => Some((&limits.events, "events")),
        Method::POST if path.starts_with("/api/v1/miniprogram/") => {
            Some((&limits.miniprogram, "miniprogram"))
        }
        _ => None,
    }
}

impl Limits {
    /// Draw one QR render for `ip`: the image handler calls this on a cache
    /// miss only, so reloading one image is free while asking for ever new
    /// `?size=` variants (each a render) is bounded.
    pub fn check_render(&self, ip: IpAddr) -> Result<(), Error> {
        self.renders.check(ip).map_err(|retry_after| {
            metrics::counter!("qrlogin_rate_limited_total", "limit" => "renders").increment(1);
            Error::from(DomainError::RateLimited {
                message: "too many QR images from this address, slow down",
                retry_after,
            })
        })
    }
}

/// Every request's limits, as one service around the router: first the
/// per-IP quota ([`refused_by_quota`]), then the time limits. A plain tower
/// service, not a `from_fn` middleware: those clone and box the services
/// inside them on every request (measured per confirm in
/// docs/performance.md).
#[derive(Clone)]
pub struct Limited<S> {
    app: AppState,
    inner: S,
}

impl<S> Limited<S> {
    pub fn new(app: AppState, inner: S) -> Self {
        Self { app, inner }
    }
}

impl<S> tower::Service<Request> for Limited<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// Requests other than WebSockets and long-polls must finish in time; a
    /// stuck upstream (WeChat) or store answers 503 rather than hanging. The
    /// body of every request, long-polls included, must arrive within the
    /// same time: only a long-poll's wait and a socket's life are exempt,
    /// never the reading of client input (a poll trickling its body a byte
    /// at a time would otherwise hold a connection forever, uncounted).
    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(refused) = refused_by_quota(&self.app, &request) {
            return Box::pin(std::future::ready(Ok(refused)));
        }
        let limit = self.app.settings.http.request_timeout;
        let request = with_body_deadline(request, tokio::time::Instant::now() + limit);
        let path = request.uri().path();
        let waits = path.ends_with("/ws") || path.ends_with("/poll");
        let answer = self.inner.call(request);
        if waits {
            return Box::pin(answer);
        }
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(response) => response,
                Err(_) => Ok(Error::Timeout.into_response()),
            }
        })
    }
}

/// The answer to a request over its per-IP quota, if it is.
fn refused_by_quota(app: &AppState, request: &Request) -> Option<Response> {
    if let Some((limit, name)) = quota_of(&app.limits, request.method(), request.uri().path()) {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let ip = client_ip(peer, request.headers(), &app.settings.http.trusted_proxies);
        if let Err(retry_after) = limit.check(ip) {
            metrics::counter!("qrlogin_rate_limited_total", "limit" => name).increment(1);
            let error = Error::from(DomainError::RateLimited {
                message: "too many requests from this address, slow down",
                retry_after,
            });
            // WeChat's callbacks are read by a person: a page, not JSON.
            if name == "wechat" && request.method() == Method::GET {
                return Some(rate_limited_page(app, request, error));
            }
            return Some(error.into_response());
        }
    }
    None
}

/// The 429 of a page: the "try again" page, with the error's status and
/// `Retry-After`.
fn rate_limited_page(app: &AppState, request: &Request, error: Error) -> Response {
    let json = error.into_response();
    let mut page = message_page(
        app,
        page_lang(None, request.headers()),
        Message::Retry,
        None,
    );
    *page.status_mut() = json.status();
    if let Some(retry) = json.headers().get(axum::http::header::RETRY_AFTER) {
        page.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, retry.clone());
    }
    page
}

/// `request` with a body that fails once `deadline` passes. A request
/// without a body is left alone (no timer for the many GETs).
fn with_body_deadline(request: Request, deadline: tokio::time::Instant) -> Request {
    use axum::body::{Body, HttpBody};
    if request.body().is_end_stream() {
        return request;
    }
    request.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline,
            timer: None,
        })
    })
}

/// A request body with a deadline for its last byte. The timer is made
/// only when the client keeps the server waiting, so a body that is already
/// there costs no timer.
struct DeadlineBody {
    inner: axum::body::Body,
    deadline: tokio::time::Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// The error a body read gets past its deadline (see `body_timed_out`).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// Whether a failed body read failed on its deadline.
pub fn body_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl axum::body::HttpBody for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                metrics::counter!("qrlogin_slow_bodies_total").increment(1);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refuses_past_its_burst_and_tells_how_long() {
        let limit = Limit::per_minute(60);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            assert!(limit.check(ip).is_ok());
        }
        let wait = limit.check(ip).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(
            limit.check("192.0.2.2".parse().unwrap()).is_ok(),
            "other IPs unaffected"
        );
    }

    fn settings(tweak: impl FnOnce(&mut Settings)) -> Settings {
        let mut s = Settings::parse(&crate::config::Args::from_flags([]).unwrap()).unwrap();
        tweak(&mut s);
        s
    }

    #[test]
    fn admission_caps_in_total_per_ip_and_per_ticket_and_gives_back_on_drop() {
        let admission = Arc::new(Admission::new(&settings(|s| {
            (
                s.limits.max_sockets,
                s.limits.max_sockets_per_ip,
                s.limits.max_sockets_per_ticket,
            ) = (3, 2, 2);
            (s.limits.max_polls, s.limits.max_polls_per_ip) = (3, 1);
        })));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let (t, u, v) = (
            TicketId::generate(),
            TicketId::generate(),
            TicketId::generate(),
        );
        let s1 = admission.admit(Kind::Socket, &t, a).unwrap();
        let _s2 = admission.admit(Kind::Socket, &u, a).unwrap();
        assert!(matches!(
            admission.admit(Kind::Socket, &v, a),
            Err(Error::Domain(DomainError::RateLimited { .. }))
        ));
        let _s3 = admission.admit(Kind::Socket, &t, b).unwrap();
        assert!(matches!(
            admission.admit(Kind::Socket, &v, b),
            Err(Error::Domain(DomainError::OverCapacity(_)))
        ));
        // Ticket t holds two sockets: a poll on it is over the ticket's cap,
        // a poll elsewhere is not; polls per IP are capped apart.
        assert!(matches!(
            admission.admit(Kind::Poll, &t, b),
            Err(Error::Domain(DomainError::RateLimited { .. }))
        ));
        let p = admission.admit(Kind::Poll, &v, b).unwrap();
        assert!(matches!(
            admission.admit(Kind::Poll, &u, b),
            Err(Error::Domain(DomainError::RateLimited { .. }))
        ));
        assert_eq!(admission.in_use(), (3, 1));
        drop((s1, p));
        assert_eq!(admission.in_use(), (2, 0));
        assert!(admission.admit(Kind::Socket, &v, a).is_ok());
        assert!(admission.admit(Kind::Poll, &t, b).is_ok());
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        let key = |s: &str| ip_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(
            key("2001:db8:1:2::1"),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        let limit = Limit::per_minute(6);
        assert!(limit.check(key("2001:db8::1")).is_ok());
        assert!(
            limit.check("2001:db8::2".parse().unwrap()).is_err(),
            "a second address of the same /64 draws on the same quota"
        );
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limit = Limit::per_minute(0);
        for _ in 0..10_000 {
            assert!(limit.check("192.0.2.1".parse().unwrap()).is_ok());
        }
    }
}
