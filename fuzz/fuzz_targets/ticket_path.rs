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

    // X-Forwarded-For, free-form: whatever the header says, a peer that is
    // not a trusted proxy is the client.
    let trusted: Vec<ipnet::IpNet> =
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
    let mut headers = HeaderMap::new();
    if let Some(value) = forwarded.and_then(|f| HeaderValue::from_str(f).ok()) {
        headers.append("x-forwarded-for", value.clone());
        headers.append("x-forwarded-for", value);
    }
    let proxy: IpAddr = "10.1.2.3".parse().unwrap();
    let _ = client_ip(proxy, &headers, &trusted);
    let outsider: IpAddr = "203.0.113.7".parse().unwrap();
    assert_eq!(client_ip(outsider, &headers, &trusted), outsider);

    // X-Forwarded-For, built from known hops: the same bytes choose a list
    // of addresses, which are written out with junk entries, spaces and a
    // second header line between them. The oracle never parses the header:
    // from the contract, the client is the rightmost hop outside the
    // trusted networks, else (every hop a proxy) the leftmost hop, else
    // (no hop at all) the peer.
    let hops = known_hops(forwarded.unwrap_or("").as_bytes());
    let mut lines = vec![String::new()];
    for (i, hop) in hops.iter().enumerate() {
        let line = lines.last_mut().unwrap();
        if !line.is_empty() {
            line.push(',');
        }
        match hop.seed % 8 {
            0 => line.push_str(" unknown ,"),
            1 => line.push('\t'),
            2 => line.push_str(",,"),
            _ => {}
        }
        line.push_str(&hop.text);
        if hop.seed % 5 == 0 && i + 1 < hops.len() {
            lines.push(String::new());
        }
    }
    let mut headers = HeaderMap::new();
    for line in &lines {
        headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
    }
    let outside = |ip: &IpAddr| !trusted.iter().any(|net| net.contains(ip));
    let expected = hops
        .iter()
        .rev()
        .map(|h| h.ip)
        .find(|ip| outside(ip))
        .or(hops.first().map(|h| h.ip))
        .unwrap_or(proxy);
    assert_eq!(
        client_ip(proxy, &headers, &trusted),
        expected,
        "X-Forwarded-For: {lines:?}"
    );
    assert_eq!(client_ip(outsider, &headers, &trusted), outsider);
    // The proxy as a dual-stack listener sees it (`::ffff:10.1.2.3`).
    let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
    assert_eq!(client_ip(mapped, &headers, &trusted), expected);

    // Languages: a query naming a language wins; anything else is harmless.
    let _ = Lang::choose(lang, accept_language);
    let _ = Lang::choose(None, accept_language);
    assert_eq!(Lang::choose(Some("zh-CN"), accept_language), Lang::ZhCn);
    assert_eq!(Lang::choose(Some("en"), accept_language), Lang::En);
});

/// One hop of a built header: the address the oracle expects and how it
/// is written.
struct Hop {
    ip: IpAddr,
    text: String,
    seed: u8,
}

/// Up to 16 hops from `bytes`, five bytes each: a kind, then the address.
/// Kinds cover proxies and clients in both families and IPv4 written as
/// IPv4-mapped IPv6 (which must count as the IPv4 address).
fn known_hops(bytes: &[u8]) -> Vec<Hop> {
    bytes
        .chunks_exact(5)
        .take(16)
        .map(|c| {
            let (kind, [a, b, x, y]) = (c[0], [c[1], c[2], c[3], c[4]]);
            let v6 = |first: u16| {
                std::net::Ipv6Addr::new(
                    first,
                    u16::from(a),
                    0,
                    0,
                    0,
                    u16::from(b),
                    u16::from(x),
                    u16::from(y),
                )
            };
            let (ip, text) = match kind % 6 {
                // A proxy of ours, IPv4.
                0 => {
                    let ip = std::net::Ipv4Addr::new(10, a, b, x);
                    (IpAddr::V4(ip), ip.to_string())
                }
                // Anyone, IPv4 (10.x.y.z included, by chance).
                1 => {
                    let ip = std::net::Ipv4Addr::new(a, b, x, y);
                    (IpAddr::V4(ip), ip.to_string())
                }
                // The same, written as IPv4-mapped IPv6.
                2 => {
                    let ip = std::net::Ipv4Addr::new(a, b, x, y);
                    (IpAddr::V4(ip), format!("::ffff:{ip}"))
                }
                // A proxy of ours, IPv6.
                3 => {
                    let ip = v6(0xfd00 | u16::from(a));
                    (IpAddr::V6(ip), ip.to_string())
                }
                // Anyone, IPv6, in upper case.
                4 => {
                    let ip = v6(0x2001);
                    (IpAddr::V6(ip), ip.to_string().to_uppercase())
                }
                // A proxy of ours in IPv4-mapped form.
                _ => {
                    let ip = std::net::Ipv4Addr::new(10, a, b, x);
                    (IpAddr::V4(ip), format!("::FFFF:{ip}"))
                }
            };
            Hop {
                ip,
                text,
                seed: kind / 6,
            }
        })
        .collect()
}
