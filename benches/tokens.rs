//! Signing cost per token, per algorithm: the full `Tokens::issue` (claims,
//! JSON, base64url, signature), as a confirm pays it.
//!
//! `nice cargo bench --bench tokens`. Budget: HS256 ≤ 20 µs, ES256 and
//! EdDSA ≤ 100 µs; RS256 (2048-bit) as measured.
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

criterion_group!(benches, sign);
criterion_main!(benches);
