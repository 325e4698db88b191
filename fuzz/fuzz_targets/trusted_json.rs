//! The trusted API's JSON bodies exactly as `/scan` and `/confirm` take
//! them (`parse_trusted`: JSON of the type, then the handler's limits), and
//! for an accepted confirm, the token it leads to: signed, verified, the
//! backend's extra claims kept and the registered ones ours.
//!
//! Input: a JSON body (tried as both bodies).
#![no_main]

use std::sync::OnceLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use qrlogin::config::Cli;
use qrlogin::error::Error;
use qrlogin::token::{REGISTERED, Tokens};
use qrlogin::web::trusted_api::{ConfirmBody, MAX_CLAIMS, ScanBody, parse_trusted};

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let cli = Cli::try_parse_from([
            "qrlogin",
            "--jwt-secret",
            "fuzzing-secret-fuzzing-secret-fuzzing",
        ])
        .unwrap();
        Tokens::load(&cli.args.key_settings(), cli.args.public_url()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    match parse_trusted::<ScanBody>(data) {
        Ok(_) | Err(Error::BadRequest(_)) => {}
        Err(other) => panic!("scan body: {other:?}"),
    }
    let body = match parse_trusted::<ConfirmBody>(data) {
        Ok(body) => body,
        Err(Error::BadRequest(_)) => return,
        Err(other) => panic!("confirm body: {other:?}"),
    };
    let subject = body.subject();
    assert!(!subject.sub.is_empty() && subject.sub.len() <= 256);
    if let Some(claims) = body.claims() {
        assert!(serde_json::to_vec(claims).unwrap().len() <= MAX_CLAIMS);
    }
    let issued = tokens().issue(&subject, body.claims()).unwrap();
    let claims = tokens().verify(&issued.token).unwrap();
    assert_eq!(claims["sub"], subject.sub.as_str());
    assert_eq!(claims["idp"], "app");
    for (k, v) in body.claims().into_iter().flatten() {
        if !REGISTERED.contains(&k.as_str()) {
            assert_eq!(claims.get(k), Some(v), "claim {k:?}");
        }
    }
});
