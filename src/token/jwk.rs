//! Public keys as JWKs, and their RFC 7638 thumbprints (our `kid`s).
//!
//! The thumbprint is computed here rather than by `jsonwebtoken`, whose
//! helper cannot describe Ed25519 keys: one rule for every key type keeps the
//! `kid` a pure function of the public key, so the same key file always
//! gets the same `kid`, on every instance and after every restart.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The public half of a signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RS256: modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// ES256: the affine coordinates of a P-256 point.
    P256 { x: Vec<u8>, y: Vec<u8> },
    /// EdDSA: the 32-byte Ed25519 public key.
    Ed25519 { x: Vec<u8> },
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl PublicKey {
    /// The one JWS algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::Rsa { .. } => Algorithm::RS256,
            PublicKey::P256 { .. } => Algorithm::ES256,
            PublicKey::Ed25519 { .. } => Algorithm::EdDSA,
        }
    }

    /// RFC 7638: SHA-256 over the required members in lexicographic order,
    /// without whitespace, base64url without padding. The values are
    /// base64url text, which never needs JSON escaping.
    pub fn thumbprint(&self) -> String {
        let canonical = match self {
            PublicKey::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n))
            }
            PublicKey::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            ),
            PublicKey::Ed25519 { x } => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x))
            }
        };
        b64(&Sha256::digest(canonical.as_bytes()))
    }

    /// The JWK published in the JWKS: public members only, with `alg` so
    /// verifiers can pin the algorithm per key, and `use: sig`.
    pub fn to_jwk(&self) -> Value {
        let alg = jwk_alg(self.algorithm());
        let kid = self.thumbprint();
        match self {
            PublicKey::Rsa { n, e } => json!({
                "kty": "RSA", "use": "sig", "alg": alg, "kid": kid,
                "n": b64(n), "e": b64(e),
            }),
            PublicKey::P256 { x, y } => json!({
                "kty": "EC", "use": "sig", "alg": alg, "kid": kid,
                "crv": "P-256", "x": b64(x), "y": b64(y),
            }),
            PublicKey::Ed25519 { x } => json!({
                "kty": "OKP", "use": "sig", "alg": alg, "kid": kid,
                "crv": "Ed25519", "x": b64(x),
            }),
        }
    }
}

/// The `kid` of an HS256 secret: the RFC 7638 thumbprint of its `oct` JWK.
/// It is a hash of a key of at least 32 bytes, so it reveals nothing a
/// token's own HMAC does not.
pub fn secret_thumbprint(secret: &[u8]) -> String {
    let canonical = format!(r#"{{"k":"{}","kty":"oct"}}"#, b64(secret));
    b64(&Sha256::digest(canonical.as_bytes()))
}

/// The JWA name of an algorithm, as written in `alg`: the verifier's own
/// table, so what we publish and what we check cannot disagree.
pub use qrlogin_verify::alg_name as jwk_alg;

#[cfg(test)]
mod tests {
    use super::*;

    fn unb64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    #[test]
    fn rsa_thumbprint_matches_rfc_7638_example() {
        // RFC 7638, section 3.1.
        let key = PublicKey::Rsa {
            n: unb64(
                "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            ),
            e: unb64("AQAB"),
        };
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn ed25519_thumbprint_matches_rfc_8037_example() {
        // RFC 8037, appendix A.3.
        let key = PublicKey::Ed25519 {
            x: unb64("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
        };
        assert_eq!(
            key.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn ec_thumbprint_agrees_with_jsonwebtoken() {
        // jsonwebtoken implements RFC 7638 correctly for EC keys: a second
        // opinion on the member order and the curve name.
        let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let key = PublicKey::P256 {
            x: unb64(x),
            y: unb64(y),
        };
        let theirs: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})).unwrap();
        assert_eq!(
            key.thumbprint(),
            theirs.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        );
    }

    #[test]
    fn the_published_jwk_holds_public_members_and_its_kid() {
        let key = PublicKey::Ed25519 { x: vec![7; 32] };
        let jwk = key.to_jwk();
        assert_eq!(jwk["kid"], key.thumbprint());
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert!(jwk.get("d").is_none());
    }
}
