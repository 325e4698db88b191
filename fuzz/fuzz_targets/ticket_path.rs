//! Ticket ids and the rest of what a request's path and headers carry
//! before any handler runs: `TicketId::from_str` (every `{ticket}` path
//! segment), `loggable_path` (every request's log line), `client_ip`
//! (`X-Forwarded-For` behind trusted proxies) and `Lang::choose`
//! (`?lang=` and `Accept-Language`).
//!
//! Input: UTF-8 lines — path, X-Forwarded-For, Accept-Language, ?lang=.
#![no_main]

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use qrlogin::templates::Lang;
use qrlogin::ticket::TicketId;
use qrlogin::web::client_ip;
use qrlogin::web::trace::loggable_path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("");
    let forwarded = lines.next();
    let accept_language = lines.next();
    let lang = lines.next();

    // Ticket ids: accepted exactly when 1 to 32 ASCII alphanumerics, and
    // then they round-trip through text and JSON unchanged.
    for candidate in std::iter::once(path).chain(path.split('/')) {
        let valid = !candidate.is_empty()
            && candidate.len() <= 32
            && candidate.bytes().all(|b| b.is_ascii_alphanumeric());
        match candidate.parse::<TicketId>() {
            Ok(id) => {
                assert!(valid, "accepted {candidate:?}");
                assert_eq!(id.as_str(), candidate);
                assert!(candidate.starts_with(id.short()));
                let json = serde_json::to_string(&id).unwrap();
                assert_eq!(serde_json::from_str::<TicketId>(&json).unwrap(), id);
            }
            Err(_) => {
                assert!(!valid, "refused {candidate:?}");
                let json = serde_json::to_string(candidate).unwrap();
                assert!(serde_json::from_str::<TicketId>(&json).is_err());
            }
        }
    }

    // Log paths: same segments, and no long id-like segment survives whole.
    let logged = loggable_path(path);
    assert_eq!(logged.split('/').count(), path.split('/').count());
    for seg in logged.split('/') {
        assert!(
            !(seg.len() > 12 && seg.bytes().all(|b| b.is_ascii_alphanumeric())),
            "{seg:?} logged whole from {path:?}"
        );
    }

    // X-Forwarded-For: the answer is the peer or one of the listed hops,
    // and never a hop when the peer is not a trusted proxy.
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
    let mut headers = HeaderMap::new();
    if let Some(value) = forwarded.and_then(|f| HeaderValue::from_str(f).ok()) {
        headers.append("x-forwarded-for", value.clone());
        headers.append("x-forwarded-for", value);
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let proxy: IpAddr = "10.1.2.3".parse().unwrap();
    let client = client_ip(proxy, &headers, &trusted);
    assert!(client == proxy || hops.contains(&client));
    let outsider: IpAddr = "203.0.113.7".parse().unwrap();
    assert_eq!(client_ip(outsider, &headers, &trusted), outsider);

    // Languages: a query naming a language wins; anything else is harmless.
    let _ = Lang::choose(lang, accept_language);
    let _ = Lang::choose(None, accept_language);
    assert_eq!(Lang::choose(Some("zh-CN"), accept_language), Lang::ZhCn);
    assert_eq!(Lang::choose(Some("en"), accept_language), Lang::En);
});
