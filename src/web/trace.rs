//! One log line per request (DEBUG when answered, INFO when refused, WARN
//! when failed; of the 503s, which come in floods while the store is down,
//! one line a second saying how many it stands for), under a request id:
//! `x-request-id` honoured when sent (and sane), generated when not, echoed
//! back. Paths are logged
//! with ticket ids shortened and without query strings, which carry WeChat
//! codes and one-time keys: those never reach a log.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, Uri};
use axum::response::Response;
use futures_util::future::BoxFuture;
use rand::Rng;
use tracing::Instrument;

use crate::throttle::Throttle;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id from the client, if it is short and printable.
fn sane(value: &HeaderValue) -> Option<HeaderValue> {
    let b = value.as_bytes();
    (!b.is_empty() && b.len() <= 64 && b.iter().all(u8::is_ascii_graphic)).then(|| value.clone())
}

/// 16 hex digits: 64 random bits, plenty to tell requests apart, from one
/// draw of the thread's generator instead of one per character, written
/// without `format!` (every request without an id of its own comes here).
fn generate() -> HeaderValue {
    let mut hex = [0u8; 16];
    let bits = rand::rng().random::<u64>();
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(bits >> (60 - 4 * i)) as usize & 0xf];
    }
    HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("0"))
}

/// The path as logs may show it: long id-like segments cut to 6 characters.
pub fn loggable_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.len() > 12 && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'%') {
                format!("{}…", &seg[..6])
            } else if seg.len() > 64 {
                format!("{}…", seg.chars().take(12).collect::<String>())
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The outermost service: every request gets its id and its log line here,
/// whatever answers it inside (CORS preflights and quota refusals too). The
/// body becomes axum's once, for everything within.
#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S> Traced<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> tower::Service<axum::http::Request<B>> for Traced<S>
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let mut request = request.map(axum::body::Body::new);
        let id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(sane)
            .unwrap_or_else(generate);
        // One value for the request (handlers log under it) and the answer.
        request.headers_mut().insert(REQUEST_ID, id.clone());
        let method = request.method().clone();
        // Kept whole (a cheap clone) and shortened only for a line that is
        // written: at INFO, answered requests write none.
        let uri = request.uri().clone();
        let span = tracing::info_span!("request", request_id = %id.to_str().unwrap_or(""));
        let started = Instant::now();
        // What the services inside do before their first await (the quota,
        // the CORS origin check) logs under the request's span too.
        let answer = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let Ok(mut response) = answer.instrument(span.clone()).await;
            log(&span, &method, &uri, response.status().as_u16(), started);
            response.headers_mut().insert(REQUEST_ID, id);
            Ok(response)
        })
    }
}

/// A request's one line, under its span.
fn log(span: &tracing::Span, method: &Method, uri: &Uri, status: u16, started: Instant) {
    let micros = started.elapsed().as_micros() as u64;
    // Answered requests are DEBUG: at full load a line per request is a
    // tenth of the CPU, and what operators follow at INFO is the tickets'
    // changes (logged under this request's span). Refusals are INFO,
    // failures WARN.
    span.in_scope(|| {
        let path = || loggable_path(uri.path());
        if status == 503 {
            // Unavailable (the store is down) or over capacity: while it
            // lasts every request says the same, so one line a second,
            // with how many it stands for.
            static LOGGED: Throttle = Throttle::new(std::time::Duration::from_secs(1));
            if let Some(held_back) = LOGGED.pass() {
                tracing::warn!(%method, path = path(), status, micros, held_back, "request");
            }
        } else if status >= 500 {
            tracing::warn!(%method, path = path(), status, micros, "request");
        } else if status >= 400 {
            tracing::info!(%method, path = path(), status, micros, "request");
        } else {
            tracing::debug!(%method, path = path(), status, micros, "request");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn logged_paths_keep_their_segments_and_cut_long_ids(
            path in "(/([A-Za-z0-9%]{0,40}|\\PC{0,80}))*",
        ) {
            let logged = loggable_path(&path);
            proptest::prop_assert_eq!(logged.split('/').count(), path.split('/').count());
            for seg in logged.split('/') {
                proptest::prop_assert!(
                    !(seg.len() > 12 && seg.bytes().all(|b| b.is_ascii_alphanumeric())),
                    "{:?} logged whole", seg
                );
            }
        }
    }

    #[test]
    fn ticket_ids_are_shortened_in_logged_paths() {
        assert_eq!(
            loggable_path("/api/v1/tickets/AbCdEfGhIjKlMnOpQrStUvWx/ws"),
            "/api/v1/tickets/AbCdEf…/ws"
        );
        assert_eq!(loggable_path("/m/AbCdEfGhIjKlMnOpQrStUvWx"), "/m/AbCdEf…");
        assert_eq!(loggable_path("/healthz"), "/healthz");
    }

    #[test]
    fn generated_request_ids_are_16_hex_digits_and_differ() {
        let (a, b) = (generate(), generate());
        for id in [&a, &b] {
            let s = id.to_str().unwrap();
            assert_eq!(s.len(), 16, "{s}");
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{s}"
            );
        }
        assert_ne!(a, b);
        // The digits are the draw's, most significant first: all 16 of them
        // take part (a shift gone wrong would leave a digit fixed).
        let ids: Vec<String> = (0..64)
            .map(|_| generate().to_str().unwrap().to_owned())
            .collect();
        for i in 0..16 {
            let digits: std::collections::HashSet<u8> =
                ids.iter().map(|s| s.as_bytes()[i]).collect();
            assert!(digits.len() > 1, "digit {i} never changes");
        }
    }

    #[test]
    fn only_sane_request_ids_are_honoured() {
        assert_eq!(
            sane(&HeaderValue::from_static("abc-123")),
            Some(HeaderValue::from_static("abc-123"))
        );
        assert_eq!(sane(&HeaderValue::from_static("a b")), None);
        assert_eq!(sane(&HeaderValue::from_str(&"x".repeat(65)).unwrap()), None);
    }
}
