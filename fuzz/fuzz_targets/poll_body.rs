//! The long-poll request as `POST /api/v1/tickets/{ticket}/poll` reads it:
//! the query string through axum's `Query` (`?wait=`), the optional JSON
//! body through `RawBody::json_or_default::<PollBody>` and the status it
//! names (`PollRequest::parse`).
//!
//! Input: the query string, a newline, then the body.
#![no_main]

use axum::extract::Query;
use axum::http::Uri;
use libfuzzer_sys::fuzz_target;
use qrlogin::engine::Error as DomainError;
use qrlogin::error::Error;
use qrlogin::web::RawBody;
use qrlogin::web::poll::{DEFAULT_WAIT, PollQuery, PollRequest};

const MAX_WAIT: u64 = 60;

#[derive(serde::Deserialize)]
struct Sent {
    status: String,
}

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let query = match std::str::from_utf8(query)
        .ok()
        .and_then(|q| format!("/p?{q}").parse::<Uri>().ok())
        .map(|uri| Query::<PollQuery>::try_from_uri(&uri))
    {
        Some(Ok(Query(q))) => q,
        _ => PollQuery { wait: None },
    };
    let body = RawBody(body.to_vec().into());
    match PollRequest::parse(&query, &body, MAX_WAIT) {
        Ok(request) => {
            assert!(request.wait <= MAX_WAIT);
            match query.wait.as_deref() {
                None => assert_eq!(request.wait, DEFAULT_WAIT.min(MAX_WAIT)),
                Some(w) => assert_eq!(request.wait, w.parse::<u64>().unwrap().min(MAX_WAIT)),
            }
            if let Some(status) = request.seen {
                // Read only `status`: other fields may hold JSON a `Value`
                // cannot (numbers beyond f64), which the service ignores.
                let sent: Sent = serde_json::from_slice(&body.0).unwrap();
                assert_eq!(sent.status, status.as_str());
            }
        }
        Err(Error::Domain(DomainError::Invalid(_))) => {
            // A refusal needs a reason: a wait that is not whole seconds, or
            // a body that says something (a blank one is no body).
            let wait_ok = query.wait.as_deref().is_none_or(|w| {
                !w.is_empty() && w.len() <= 19 && w.bytes().all(|b| b.is_ascii_digit())
            });
            let blank = body
                .0
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c));
            assert!(
                !(wait_ok && blank),
                "refused a whole-seconds wait with no body"
            );
        }
        Err(other) => panic!("{other:?}"),
    }
});
