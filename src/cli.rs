//! The subcommands that are not serving: `keygen` and `token verify`. Thin
//! on purpose: the work is done by `qrlogin::token`, which the tests call.

use std::io::Write;
use std::process::ExitCode;

use qrlogin::config::{Args, KeygenAlg};
use qrlogin::token::{JwtAlg, SigningKey, Tokens};
use qrlogin_verify::{JwksSource, JwksVerifier};

/// `qrlogin keygen --alg …`: a new private key as PKCS#8 PEM on stdout.
pub fn keygen(alg: KeygenAlg) -> ExitCode {
    let alg = match alg {
        KeygenAlg::Es256 => jsonwebtoken::Algorithm::ES256,
        KeygenAlg::Rs256 => jsonwebtoken::Algorithm::RS256,
        KeygenAlg::EdDsa => jsonwebtoken::Algorithm::EdDSA,
    };
    let pem = match SigningKey::generate(alg).and_then(|key| key.to_pkcs8_pem()) {
        Ok(pem) => pem,
        Err(e) => {
            eprintln!("qrlogin keygen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::io::stdout().lock().write_all(pem.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qrlogin keygen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `qrlogin token verify <jwt> [--jwks …]`: the claims as JSON on stdout,
/// or the reason on stderr and exit 1.
pub async fn verify_token(
    args: &Args,
    jwt: &str,
    jwks: Option<&str>,
    issuer: Option<String>,
    audience: Option<String>,
) -> ExitCode {
    let issuer = issuer
        .or_else(|| args.jwt_issuer.clone())
        .unwrap_or_else(|| args.public_url());
    let audience = audience.unwrap_or_else(|| args.jwt_audience.clone());
    let jwt = jwt.trim();
    let result = match jwks {
        Some(source) => {
            let source: JwksSource = match source.parse() {
                Ok(source) => source,
                Err(never) => match never {},
            };
            JwksVerifier::new(source, &issuer, &audience)
                .verify(jwt)
                .await
        }
        None => {
            if args.jwt_alg == JwtAlg::Hs256 && args.jwt_secret.is_none() {
                eprintln!(
                    "qrlogin token verify: QRLOGIN_JWT_SECRET is unset; give --jwks or the configured keys"
                );
                return ExitCode::FAILURE;
            }
            let mut keys = args.key_settings();
            keys.audience = audience;
            match Tokens::load(&keys, issuer) {
                Ok(tokens) => tokens.verify(jwt),
                Err(e) => {
                    eprintln!("qrlogin token verify: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match result {
        Ok(claims) => {
            let text = serde_json::to_string_pretty(&claims).unwrap_or_default();
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("token rejected: {e}");
            ExitCode::FAILURE
        }
    }
}
