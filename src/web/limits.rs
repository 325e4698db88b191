//! Abuse limits per client IP: ticket creation, WebSocket connects and
//! long-polls, each a GCRA quota (governor). The trusted API is limited only
//! by its key. Over a limit: 429 `rate_limited` with `Retry-After`.
//!
//! Limits are per instance. Behind a load balancer an attacker's budget is
//! the quota times the number of instances, which still bounds the damage
//! (tickets are capped in total and expire); a shared Redis counter would
//! add a Redis round trip to every ticket for little gain.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

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
}

impl Limits {
    pub fn new(settings: &Settings) -> Self {
        Self {
            tickets: Limit::per_minute(settings.rate_tickets),
            sockets: Limit::per_minute(settings.rate_sockets),
            polls: Limit::per_minute(settings.rate_polls),
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
    fn zero_turns_a_limit_off() {
        let limit = Limit::per_minute(0);
        for _ in 0..10_000 {
            assert!(limit.check("192.0.2.1".parse().unwrap()).is_ok());
        }
    }
}
