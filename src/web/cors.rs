//! CORS: tower-http's rules, asked only of requests they can concern.

use std::task::{Context, Poll};

use axum::http::{Method, Request, Response, header};
use futures_util::future::Either;

use super::{note_refused_origin, origin_in, same_host, trace};
use crate::config::Settings;

/// CORS for product pages on other origins: only the listed ones (empty:
/// same origin only, so no CORS headers at all).
pub fn layer(settings: &Settings) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = &settings.http.allowed_origins;
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // The list was normalised at start; the request's Origin is
        // normalised the same way (what the WebSocket check does too).
        let origins = origins.clone();
        AllowOrigin::predicate(move |origin, parts| {
            let origin = origin.to_str().unwrap_or("");
            let allowed = origin_in(&origins, origin);
            if !allowed && !same_host(origin, &parts.headers) {
                note_refused_origin(origin);
            }
            allowed
        })
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers([trace::REQUEST_ID])
        .max_age(std::time::Duration::from_secs(600))
}

/// tower-http's CORS around `S`, stepped over for a request no CORS rule
/// concerns: one without an `Origin` header whose answer no cache keeps
/// for another request (not GET or HEAD) and that is not an OPTIONS (which
/// keeps the layer's answer, with or without `Origin`). Browsers send
/// `Origin` with every request whose answer a page on another origin may
/// read (`null` when the page's origin is hidden, which takes the CORS
/// path too); the POSTs some older browsers sent without it are same-origin
/// or form posts, whose answers no other origin reads. So such a request's
/// answer needs no `Access-Control-*` header, and no `Vary` either, since
/// nothing serves a POST's answer to another request. The
/// trusted confirm is such a request: stepping over saves it ~3.5 k
/// instructions and 120 bytes of headers (docs/performance.md).
#[derive(Clone)]
pub struct Cors<S>(pub tower_http::cors::Cors<S>);

/// Whether the CORS rules can concern this request (see [`Cors`]).
fn concerns<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::ORIGIN)
        || matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        )
}

impl<S, B, ResBody> tower::Service<Request<B>> for Cors<S>
where
    S: tower::Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<tower_http::cors::ResponseFuture<S::Future>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if concerns(&request) {
            Either::Left(self.0.call(request))
        } else {
            Either::Right(self.0.get_mut().call(request))
        }
    }
}
