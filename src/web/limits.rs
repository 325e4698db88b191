//! Abuse limits per client IP: ticket creation, WebSocket connects and
//! long-polls, each a GCRA quota (governor). The trusted API is limited only
//! by its key. Over a limit: 429 `rate_limited` with `Retry-After`.
//!
//! Limits are per instance. Behind a load balancer an attacker's budget is
//! the quota times the number of instances, which still bounds the damage
//! (tickets are capped in total and expire); a shared Redis counter would
//! add a Redis round trip to every ticket for little gain.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{AppState, client_ip};
use crate::config::Settings;
use crate::error::Error;

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
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

pub struct Limits {
    tickets: Limit,
    sockets: Limit,
    polls: Limit,
    /// Open WebSockets, in total and per IP.
    pub open_sockets: Arc<Slots>,
    /// Long-polls waiting, in total.
    pub waiting_polls: Arc<Slots>,
}

/// Counted places (open sockets, waiting polls) with a cap in total and per
/// IP; a `Slot` gives its place back when dropped.
pub struct Slots {
    total: AtomicUsize,
    max_total: usize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    max_per_ip: u32,
}

impl Slots {
    pub fn new(max_total: usize, max_per_ip: u32) -> Self {
        Self {
            total: AtomicUsize::new(0),
            max_total,
            per_ip: Mutex::default(),
            max_per_ip,
        }
    }

    fn ips(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for `ip`, or the error to answer.
    pub fn take(self: &Arc<Self>, ip: IpAddr, what: &'static str) -> Result<Slot, Error> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::OverCapacity(what));
        }
        {
            let mut ips = self.ips();
            let n = ips.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(ips);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Error::RateLimited {
                    message: "too many open connections from this address",
                    retry_after: 10,
                });
            }
            *n += 1;
        }
        Ok(Slot {
            slots: self.clone(),
            ip,
        })
    }

    pub fn in_use(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

pub struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut ips = self.slots.ips();
        if let Some(n) = ips.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                ips.remove(&self.ip);
            }
        }
        drop(ips);
        self.slots.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        Self {
            tickets: Limit::per_minute(settings.rate_tickets),
            sockets: Limit::per_minute(settings.rate_sockets),
            polls: Limit::per_minute(settings.rate_polls),
            open_sockets: Arc::new(Slots::new(
                settings.max_sockets,
                settings.max_sockets_per_ip,
            )),
            waiting_polls: Arc::new(Slots::new(settings.max_polls, u32::MAX)),
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
        _ => None,
    }
}

pub async fn limit_requests(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if let Some((limit, name)) = quota_of(&app.limits, request.method(), request.uri().path()) {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let ip = client_ip(peer, request.headers(), &app.settings.trusted_proxies);
        if let Err(retry_after) = limit.check(ip) {
            metrics::counter!("qrlogin_rate_limited_total", "limit" => name).increment(1);
            return Error::RateLimited {
                message: "too many requests from this address, slow down",
                retry_after,
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// Requests other than WebSockets and long-polls must finish in time; a
/// stuck upstream (WeChat) or store answers 503 rather than hanging.
pub async fn limit_duration(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.ends_with("/ws") || path.ends_with("/poll") {
        return next.run(request).await;
    }
    let limit = std::time::Duration::from_secs(app.settings.request_timeout);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::Timeout.into_response(),
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

    #[test]
    fn slots_cap_in_total_and_per_ip_and_give_back_on_drop() {
        let slots = Arc::new(Slots::new(3, 2));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let s1 = slots.take(a, "x").unwrap();
        let _s2 = slots.take(a, "x").unwrap();
        assert!(matches!(slots.take(a, "x"), Err(Error::RateLimited { .. })));
        let _s3 = slots.take(b, "x").unwrap();
        assert!(matches!(slots.take(b, "x"), Err(Error::OverCapacity(_))));
        drop(s1);
        assert_eq!(slots.in_use(), 2);
        assert!(slots.take(a, "x").is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limit = Limit::per_minute(0);
        for _ in 0..10_000 {
            assert!(limit.check("192.0.2.1".parse().unwrap()).is_ok());
        }
    }
}
