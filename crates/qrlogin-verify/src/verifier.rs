//! Verifying a token against a set of keys, the one way both the service
//! (introspection, `qrlogin token verify`) and product backends (through
//! [`crate::JwksVerifier`]) do it.
//!
//! The rules, each closing a known hole:
//! - the header must name a known `kid`, and the token's `alg` must be the
//!   one pinned to that key: `none`, and HS256 "signed" with a public key,
//!   never reach a signature check;
//! - a `crit` header is refused (we understand no extensions);
//! - `iss`, `aud`, `exp`, `iat`, `sub` and `jti` are all required
//!   (`jsonwebtoken` itself requires only `exp` and checks neither `iat`
//!   nor `jti`, so those two are checked here);
//! - clocks may disagree by [`LEEWAY_SECS`], no more.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Allowed clock difference between the service and a verifier.
pub const LEEWAY_SECS: u64 = 30;

/// Longer tokens are refused unread (the service's are a few hundred bytes;
/// extra claims are capped at 8 KiB of JSON).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The claims every token must carry.
pub const REQUIRED_CLAIMS: &[&str] = &["iss", "aud", "exp", "iat", "sub", "jti"];

/// Why a token does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted")]
    ForbiddenAlgorithm(String),
    #[error("the token names no key (no kid in its header)")]
    MissingKid,
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    #[error("key {kid:?} signs with {expected}, but the token says {found}")]
    AlgorithmMismatch {
        kid: String,
        expected: &'static str,
        found: String,
    },
    #[error("the signature does not match")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("claim {claim}: {problem}")]
    Claim {
        claim: &'static str,
        problem: &'static str,
    },
    #[error("the keys could not be loaded: {0}")]
    Keys(String),
}

struct PinnedKey {
    alg: Algorithm,
    key: DecodingKey,
}

/// Keys by `kid`, each with the one algorithm it may verify, and the
/// expected issuer and audience.
pub struct Verifier {
    keys: HashMap<String, PinnedKey>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl Verifier {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            keys: HashMap::new(),
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: LEEWAY_SECS,
        }
    }

    /// Accept tokens with `kid` signed by `key` with `alg`, and only `alg`.
    pub fn add_key(&mut self, kid: impl Into<String>, alg: Algorithm, key: DecodingKey) {
        self.keys.insert(kid.into(), PinnedKey { alg, key });
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The `kid`s this verifier accepts.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The claims of a valid token.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed("longer than 16 KiB".into()));
        }
        let header = header_of(token)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| VerifyError::Malformed("the header has no alg".into()))?;
        if !matches!(alg, "HS256" | "RS256" | "ES256" | "EdDSA") {
            return Err(VerifyError::ForbiddenAlgorithm(alg.to_owned()));
        }
        if header.contains_key("crit") {
            return Err(VerifyError::Malformed(
                "critical header extensions are not supported".into(),
            ));
        }
        let kid = match header.get("kid") {
            Some(Value::String(kid)) => kid,
            Some(_) => return Err(VerifyError::Malformed("kid is not a string".into())),
            None => return Err(VerifyError::MissingKid),
        };
        let pinned = self
            .keys
            .get(kid)
            .ok_or_else(|| VerifyError::UnknownKid(kid.clone()))?;
        let expected = alg_name(pinned.alg);
        if alg != expected {
            return Err(VerifyError::AlgorithmMismatch {
                kid: kid.clone(),
                expected,
                found: alg.to_owned(),
            });
        }
        let mut validation = Validation::new(pinned.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(REQUIRED_CLAIMS);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &pinned.key, &validation)
            .map_err(|e| from_jsonwebtoken(e.kind()))?
            .claims;
        self.check_claims(&claims)?;
        Ok(claims)
    }

    /// What `jsonwebtoken` leaves unchecked.
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<(), VerifyError> {
        let bad = |claim, problem| Err(VerifyError::Claim { claim, problem });
        // An array `iss` passes jsonwebtoken when any member matches; ours
        // is always one string.
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return bad("iss", "is not the expected issuer");
        }
        match claims.get("iat").and_then(Value::as_f64) {
            None => return bad("iat", "is missing or not a number"),
            Some(iat) if iat > (now_secs() + self.leeway) as f64 => {
                return bad("iat", "is in the future");
            }
            Some(_) => {}
        }
        if claims
            .get("jti")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return bad("jti", "is missing or empty");
        }
        if claims
            .get("sub")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return bad("sub", "is missing or empty");
        }
        Ok(())
    }
}

/// The JWA name of an algorithm, as written in a header's or a JWK's `alg`.
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The header object, read before any key is chosen.
fn header_of(token: &str) -> Result<Map<String, Value>, VerifyError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "not three dot-separated parts".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| VerifyError::Malformed("the header is not base64url".into()))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(VerifyError::Malformed(
            "the header is not a JSON object".into(),
        )),
    }
}

fn from_jsonwebtoken(kind: &ErrorKind) -> VerifyError {
    let claim = |claim, problem| VerifyError::Claim { claim, problem };
    match kind {
        ErrorKind::InvalidSignature => VerifyError::Signature,
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::InvalidIssuer => claim("iss", "is not the expected issuer"),
        ErrorKind::InvalidAudience => claim("aud", "is not the expected audience"),
        ErrorKind::ImmatureSignature => claim("nbf", "is in the future"),
        ErrorKind::MissingRequiredClaim(name) => {
            let name = REQUIRED_CLAIMS
                .iter()
                .find(|c| **c == name)
                .copied()
                .unwrap_or("a registered claim");
            claim(name, "is missing")
        }
        ErrorKind::InvalidClaimFormat(_) => {
            VerifyError::Malformed("a claim has the wrong type".into())
        }
        other => VerifyError::Malformed(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier() -> Verifier {
        let mut v = Verifier::new("https://login.example", "app");
        v.add_key("k1", Algorithm::HS256, DecodingKey::from_secret(SECRET));
        v
    }

    fn sign(header: Value, claims: Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
        let sig = jsonwebtoken::crypto::sign(format!("{h}.{c}").as_bytes(), &key, Algorithm::HS256)
            .unwrap();
        format!("{h}.{c}.{sig}")
    }

    fn good_claims() -> Value {
        let now = now_secs();
        json!({"iss": "https://login.example", "aud": "app", "sub": "u", "jti": "j",
               "iat": now, "exp": now + 60})
    }

    #[test]
    fn a_well_formed_token_verifies() {
        let token = sign(json!({"alg": "HS256", "kid": "k1"}), good_claims());
        assert_eq!(verifier().verify(&token).unwrap()["sub"], "u");
    }

    #[test]
    fn every_required_claim_is_required() {
        for claim in REQUIRED_CLAIMS {
            let mut claims = good_claims();
            claims.as_object_mut().unwrap().remove(*claim);
            let token = sign(json!({"alg": "HS256", "kid": "k1"}), claims);
            match verifier().verify(&token) {
                Err(VerifyError::Claim { claim: c, .. }) => assert_eq!(c, *claim),
                other => panic!("{claim}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_future_iat_and_an_array_iss_are_refused() {
        let mut claims = good_claims();
        claims["iat"] = json!(now_secs() + 3600);
        let token = sign(json!({"alg": "HS256", "kid": "k1"}), claims);
        assert!(matches!(
            verifier().verify(&token),
            Err(VerifyError::Claim { claim: "iat", .. })
        ));
        let mut claims = good_claims();
        claims["iss"] = json!(["https://login.example", "evil"]);
        let token = sign(json!({"alg": "HS256", "kid": "k1"}), claims);
        assert!(verifier().verify(&token).is_err());
    }

    #[test]
    fn the_header_decides_nothing_but_the_key_lookup() {
        let v = verifier();
        let none = sign(json!({"alg": "none", "kid": "k1"}), good_claims());
        assert!(matches!(
            v.verify(&none),
            Err(VerifyError::ForbiddenAlgorithm(_))
        ));
        let no_kid = sign(json!({"alg": "HS256"}), good_claims());
        assert_eq!(v.verify(&no_kid), Err(VerifyError::MissingKid));
        let other_kid = sign(json!({"alg": "HS256", "kid": "k2"}), good_claims());
        assert!(matches!(
            v.verify(&other_kid),
            Err(VerifyError::UnknownKid(_))
        ));
        let crit = sign(
            json!({"alg": "HS256", "kid": "k1", "crit": ["x"]}),
            good_claims(),
        );
        assert!(matches!(v.verify(&crit), Err(VerifyError::Malformed(_))));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for junk in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "eyJhbGciOiJIUzI1NiJ9..",
            "\u{0}",
        ] {
            assert!(verifier().verify(junk).is_err(), "{junk:?}");
        }
        assert!(verifier().verify(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }
}
