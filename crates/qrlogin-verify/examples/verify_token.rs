//! How a product backend verifies qrlogin tokens offline.
//!
//! ```text
//! cargo run -p qrlogin-verify --example verify_token -- \
//!     https://login.example.com/.well-known/jwks.json \
//!     https://login.example.com qrlogin  < tokens.txt
//! ```
//!
//! Arguments: the JWKS URL (or a file), the expected issuer
//! (`QRLOGIN_JWT_ISSUER`) and audience (`QRLOGIN_JWT_AUDIENCE`). Tokens are
//! read one per line on stdin; each line of output is the token's claims
//! or why it was rejected.
//!
//! The JWKS is fetched once and cached; a token naming an unknown `kid` (the
//! service rotated its key) refetches it, at most every 10 s; a copy older
//! than 5 minutes is refetched, so a removed key stops verifying. The
//! algorithm is pinned by the key (`none` and HS256-with-a-public-key are
//! refused), and `iss`, `aud`, `exp`, `iat`, `sub`, `jti` are all required.

use std::io::BufRead;
use std::process::ExitCode;

use qrlogin_verify::{JwksSource, JwksVerifier};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [jwks, issuer, audience] = args.as_slice() else {
        eprintln!("usage: verify_token <jwks url or file> <issuer> <audience>  < tokens");
        return ExitCode::from(2);
    };
    let source: JwksSource = match jwks.parse() {
        Ok(source) => source,
        Err(never) => match never {},
    };
    // One verifier for the whole process: it holds the cached keys.
    let verifier = JwksVerifier::new(source, issuer, audience);
    let mut all_valid = true;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let token = line.trim();
        if token.is_empty() {
            continue;
        }
        match verifier.verify(token).await {
            Ok(claims) => println!("valid: {}", serde_json::Value::Object(claims)),
            Err(e) => {
                all_valid = false;
                println!("rejected: {e}");
            }
        }
    }
    eprintln!("(JWKS fetched {} time(s))", verifier.fetches());
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
