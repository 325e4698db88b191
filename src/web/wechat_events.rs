//! `/wechat/events`: where WeChat checks our server (GET) and pushes the
//! Official Account's events (POST). Handlers only; the flow is in
//! `providers::wechat::mp`.
//!
//! WeChat gives up after 5 s and then retries, so every push is answered
//! within a budget well under that: past it the answer is `success`, which
//! WeChat takes as "nothing to say".

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AppState, Query, RawBody};
use crate::error::{Error, Result};
use crate::providers::wechat::mp::{self, PushQuery, SUCCESS};

pub const EVENTS: &str = "/wechat/events";

/// Everything a push does must fit in this, far inside WeChat's 5 s.
const PUSH_BUDGET: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new().route(EVENTS, get(check_wechat_server).post(receive_wechat_push))
}

/// An unparsable query (or one naming a parameter twice) is a query
/// without signature (refused below).
fn query_of(query: Result<Query<PushQuery>, Error>) -> PushQuery {
    query.map(|Query(q)| q).unwrap_or_default()
}

async fn check_wechat_server(
    State(app): State<AppState>,
    query: Result<Query<PushQuery>, Error>,
) -> Result<Response> {
    let echostr = mp::check_server(&app.providers(), &query_of(query)).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        echostr,
    )
        .into_response())
}

async fn receive_wechat_push(
    State(app): State<AppState>,
    query: Result<Query<PushQuery>, Error>,
    RawBody(body): RawBody,
) -> Result<Response> {
    let query = query_of(query);
    let reply = match tokio::time::timeout(
        PUSH_BUDGET,
        mp::handle_push(&app.providers(), &query, &body),
    )
    .await
    {
        Ok(reply) => reply?,
        Err(_) => {
            tracing::warn!("a WeChat push took too long; answered success");
            mp::Reply(SUCCESS.to_owned())
        }
    };
    let content_type = if reply.is_xml() {
        "application/xml; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    Ok(([(header::CONTENT_TYPE, content_type)], reply.0).into_response())
}
