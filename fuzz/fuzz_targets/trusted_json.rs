//! The trusted API's JSON bodies exactly as `/scan` and `/confirm` take
//! them (`parse_trusted`: JSON of the type, then the handler's limits), and
//! for an accepted confirm, the token it leads to: signed, verified, the
//! backend's extra claims kept and the registered ones ours. The token is
//! read twice: by the service's own verifier, and by this target alone
//! (the HS256 signature checked with the `hmac` crate, the payload decoded
//! by hand), so a verifier that agreed with a wrong signer would not hide it.
//!
//! Input: a JSON body (tried as both bodies).
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use qrlogin::config::Args;
use qrlogin::engine::Error as DomainError;
use qrlogin::error::Error;
use qrlogin::token::{REGISTERED, Tokens};
use qrlogin::web::trusted_api::{ConfirmBody, MAX_CLAIMS, ScanBody, parse_trusted};
use serde_json::{Map, Value};

const SECRET: &str = "fuzzing-secret-fuzzing-secret-fuzzing";

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let args = Args::from_flags(["--jwt-secret", SECRET]).unwrap();
        Tokens::load(&args.key_settings(), args.public_url()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    match parse_trusted::<ScanBody>(data) {
        Ok(_) | Err(Error::Domain(DomainError::Invalid(_))) => {}
        Err(other) => panic!("scan body: {other:?}"),
    }
    let body = match parse_trusted::<ConfirmBody>(data) {
        Ok(body) => body,
        Err(Error::Domain(DomainError::Invalid(_))) => return,
        Err(other) => panic!("confirm body: {other:?}"),
    };
    let subject = body.subject();
    assert!(!subject.sub.is_empty() && subject.sub.len() <= 256);
    if let Some(claims) = body.claims() {
        assert!(serde_json::to_vec(claims).unwrap().len() <= MAX_CLAIMS);
    }
    let issued = tokens().issue(&subject, body.claims()).unwrap();
    let claims = tokens().verify(&issued.token).unwrap();
    assert_eq!(
        claims,
        read_hs256(&issued.token),
        "the verifier and the oracle differ"
    );
    assert_eq!(claims["sub"], subject.sub.as_str());
    assert_eq!(claims["idp"], "app");
    for (k, v) in body.claims().into_iter().flatten() {
        if !REGISTERED.contains(&k.as_str()) {
            assert_eq!(claims.get(k), Some(v), "claim {k:?}");
        }
    }
});

/// The claims of an HS256 JWS signed with `SECRET`, checked without the
/// service's code: the header names HS256, the signature is
/// HMAC-SHA256(secret, header.payload), the payload a JSON object.
fn read_hs256(token: &str) -> Map<String, Value> {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS has three parts");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
        .expect("the signature is HMAC-SHA256 of header.payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}
