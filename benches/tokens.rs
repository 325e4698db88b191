//! Signing cost per token, per algorithm: the full `Tokens::issue` (claims,
//! JSON, base64url, signature), as a confirm pays it.
//!
//! `nice cargo bench --bench tokens`. Budget: HS256 ≤ 20 µs, ES256 and
//! EdDSA ≤ 100 µs; RS256 (2048-bit) as measured.
//!
//! `seal/*`: what sealing adds. A confirm pays `to_browser_key` (one
//! ephemeral P-256 key, one agreement, AES-256-GCM of the JWT) or, for a
//! ticket without `seal`, `at_rest` (the same with X25519); budget ≤ 150 µs.
//! `derive_key` is what such a ticket pays at creation (its at-rest key from
//! the secret), `open` what the browser's read of it confirmed pays.
//! `in_process` / `open_in_process`: the same two for a ticket of the
//! memory store, sealed with the process's own key.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use qrlogin::ticket::Identity;
use qrlogin::token::{SigningKey, Tokens};

fn key(alg: Algorithm) -> SigningKey {
    match alg {
        Algorithm::HS256 => SigningKey::from_secret(&[7u8; 32]),
        other => SigningKey::generate(other),
    }
    .unwrap_or_else(|e| panic!("{alg:?} key: {e}"))
}

fn sign(c: &mut Criterion) {
    let subject = Identity {
        sub: "o6_bmjrPTlm6_2sgVt7hMZOPfL2M".into(),
        idp: "wechat".into(),
        openid: Some("o6_bmjrPTlm6_2sgVt7hMZOPfL2M".into()),
        unionid: None,
    };
    let mut group = c.benchmark_group("sign");
    group
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for (name, alg) in [
        ("HS256", Algorithm::HS256),
        ("ES256", Algorithm::ES256),
        ("EdDSA", Algorithm::EdDSA),
        ("RS256", Algorithm::RS256),
    ] {
        let tokens = Tokens::new(
            key(alg),
            vec![],
            "https://login.example.com".into(),
            "qrlogin".into(),
            3600,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        group.bench_function(name, |b| {
            b.iter(|| black_box(tokens.issue(black_box(&subject), None)))
        });
    }
    group.finish();
}

fn seal(c: &mut Criterion) {
    use qrlogin::token::seal::{
        BrowserKey, Opener, open_in_process, seal, seal_at_rest, seal_in_process,
    };
    let tokens = Tokens::new(
        key(Algorithm::ES256),
        vec![],
        "https://login.example.com".into(),
        "qrlogin".into(),
        3600,
    )
    .unwrap_or_else(|e| panic!("ES256: {e}"));
    let subject = Identity {
        sub: "o6_bmjrPTlm6_2sgVt7hMZOPfL2M".into(),
        idp: "wechat".into(),
        openid: Some("o6_bmjrPTlm6_2sgVt7hMZOPfL2M".into()),
        unionid: None,
    };
    let jwt = tokens
        .issue(&subject, None)
        .unwrap_or_else(|e| panic!("issue: {e}"))
        .token;
    let secret = "Zm9vYmFyYmF6cXV4cXV1eGZvb2JhcmJh";
    let browser = BrowserKey::from_seed("a browser")
        .and_then(|k| k.public())
        .unwrap_or_else(|e| panic!("browser key: {e}"));
    let at_rest = Opener::from_secret(secret)
        .unwrap_or_else(|e| panic!("derive: {e}"))
        .public();
    let sealed = seal_at_rest(&at_rest, jwt.as_bytes()).unwrap_or_else(|e| panic!("seal: {e}"));
    let mut group = c.benchmark_group("seal");
    group
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("to_browser_key", |b| {
        b.iter(|| black_box(seal(black_box(&browser), black_box(jwt.as_bytes()))))
    });
    group.bench_function("at_rest", |b| {
        b.iter(|| black_box(seal_at_rest(black_box(&at_rest), black_box(jwt.as_bytes()))))
    });
    group.bench_function("derive_key", |b| {
        b.iter(|| black_box(Opener::from_secret(black_box(secret)).map(|o| o.public())))
    });
    group.bench_function("open", |b| {
        b.iter(|| {
            black_box(
                Opener::from_secret(black_box(secret)).and_then(|o| o.open(black_box(&sealed))),
            )
        })
    });
    let in_process = seal_in_process(jwt.as_bytes()).unwrap_or_else(|e| panic!("seal: {e}"));
    group.bench_function("in_process", |b| {
        b.iter(|| black_box(seal_in_process(black_box(jwt.as_bytes()))))
    });
    group.bench_function("open_in_process", |b| {
        b.iter(|| black_box(open_in_process(black_box(&in_process))))
    });
    group.finish();
}

criterion_group!(benches, sign, seal);
criterion_main!(benches);
