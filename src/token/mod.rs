//! The JWT handed to the browser: signing it, verifying it (introspection,
//! `qrlogin token verify`), and publishing the public keys as a JWKS.
//!
//! - [`keys`]: PEM key files, key generation, signing with parsed keys.
//! - [`jwk`]: public keys as JWKs and their RFC 7638 thumbprints (`kid`).
//! - [`Verifier`] (the `qrlogin-verify` crate): the verification rules
//!   (pinned algorithm per `kid`, every registered claim required), the
//!   same a product backend runs over the published JWKS.
//!
//! Rotation: the key of `QRLOGIN_JWT_KEY_FILE` signs; the keys of
//! `QRLOGIN_JWT_PREVIOUS_KEY_FILES` are published and still verify but never
//! sign; a key in neither is gone, and its tokens stop verifying.
//!
//! Registered claims (`iss`, `sub`, `aud`, `iat`, `exp`, `jti`, `idp`,
//! `openid`, `unionid`) are always ours: extra claims from a trusted backend
//! can add fields but never override them.

pub mod jwk;
pub mod keys;
pub mod seal;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use crate::ticket::{Identity, IssuedToken, now_ms};

pub use keys::{JwtAlg, KeyError, KeyProblem, KeySettings, SigningKey};
pub use qrlogin_verify::{Verifier, VerifyError};

/// A token's payload, written straight to JSON: building a `Map` of owned
/// strings first allocated and copied every claim on each confirm
/// (measured in docs/performance.md).
#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
    idp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    openid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unionid: Option<&'a str>,
    #[serde(flatten)]
    extra: ExtraClaims<'a>,
}

/// A trusted backend's extra claims, without the registered ones (which
/// are ours, and a second `sub` in one JSON object would be ambiguous).
struct ExtraClaims<'a>(Option<&'a Map<String, Value>>);

impl serde::Serialize for ExtraClaims<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in self.0.into_iter().flatten() {
            if !REGISTERED.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// Claims that are ours alone.
pub const REGISTERED: &[&str] = &[
    "iss", "sub", "aud", "iat", "exp", "nbf", "jti", "idp", "openid", "unionid",
];

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A key setting is unusable; the text names the variable.
    #[error("{0}")]
    Key(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

pub struct Tokens {
    signer: SigningKey,
    /// The encoded header, the same for every token of this signer.
    header: String,
    verifier: Verifier,
    jwks: Option<Value>,
    issuer: String,
    audience: String,
    ttl: u64,
}

impl Tokens {
    /// Keys and claims as configured, the keys read and checked by
    /// [`keys::load`] (the checks `check-config` runs too). HS256 in
    /// development without a secret: a random one (tokens then stop
    /// verifying at restart, which is fine for trying the service out).
    /// `issuer` is `iss` (the configured one, else the public URL).
    pub fn load(settings: &KeySettings, issuer: String) -> Result<Self, TokenError> {
        let (signer, previous) =
            keys::load(settings).map_err(|p| TokenError::Key(p.to_string()))?;
        Self::new(
            signer,
            previous,
            issuer,
            settings.audience.clone(),
            settings.ttl.as_secs(),
        )
    }

    /// `signer` signs; it and every `previous` key verify and (when
    /// asymmetric) are published. Previous keys may be of another algorithm
    /// than the signer, so that a move from RS256 to ES256 is a rotation too.
    pub fn new(
        signer: SigningKey,
        previous: Vec<SigningKey>,
        issuer: String,
        audience: String,
        ttl: u64,
    ) -> Result<Self, TokenError> {
        let mut verifier = Verifier::new(issuer.clone(), audience.clone());
        let mut published = Vec::new();
        for key in std::iter::once(&signer).chain(&previous) {
            if verifier.has_kid(key.kid()) {
                continue;
            }
            let decoding = key
                .decoding_key()
                .map_err(|e| TokenError::Key(e.to_string()))?;
            verifier.add_key(key.kid(), key.algorithm(), decoding);
            if let Some(public) = key.public_key() {
                published.push(public.to_jwk());
            }
        }
        let header = json!({
            "alg": jwk::jwk_alg(signer.algorithm()),
            "typ": "JWT",
            "kid": signer.kid(),
        });
        Ok(Self {
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            jwks: (signer.algorithm() != Algorithm::HS256).then(|| json!({ "keys": published })),
            signer,
            verifier,
            issuer,
            audience,
            ttl,
        })
    }

    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The `kid` of the key that signs new tokens.
    pub fn kid(&self) -> &str {
        self.signer.kid()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.signer.algorithm()
    }

    /// A signed token for `subject`, with `extra` claims that may not
    /// override registered ones.
    pub fn issue(
        &self,
        subject: &Identity,
        extra: Option<&Map<String, Value>>,
    ) -> Result<IssuedToken, TokenError> {
        let now = now_ms() / 1000;
        let jti = crate::ticket::TicketId::generate();
        let claims = Claims {
            iss: &self.issuer,
            sub: &subject.sub,
            aud: &self.audience,
            iat: now,
            exp: now + self.ttl,
            jti: jti.as_str(),
            idp: &subject.idp,
            openid: subject.openid.as_deref(),
            unionid: subject.unionid.as_deref(),
            extra: ExtraClaims(extra),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| TokenError::Sign(e.to_string()))?;
        let mut token = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 360);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        Ok(IssuedToken {
            token: self.signed(token)?,
            expires_in: self.ttl,
        })
    }

    /// A JWS of `claims` with header `typ`, signed by the signing key: the
    /// OpenID provider's ID tokens (`JWT`) and access tokens (`at+jwt`,
    /// RFC 9068), which carry claims of their own.
    pub fn sign_claims(
        &self,
        typ: &str,
        claims: &impl serde::Serialize,
    ) -> Result<String, TokenError> {
        let header = json!({
            "alg": jwk::jwk_alg(self.signer.algorithm()),
            "typ": typ,
            "kid": self.signer.kid(),
        });
        let payload = serde_json::to_vec(claims).map_err(|e| TokenError::Sign(e.to_string()))?;
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        self.signed(token)
    }

    /// `header.payload` with its signature appended: the JWS.
    fn signed(&self, mut token: String) -> Result<String, TokenError> {
        let signature = self
            .signer
            .sign(token.as_bytes())
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }

    /// The key that signs (its public half verifies what `sign_claims` made).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signer
    }

    /// The claims of a token one of our keys signed and that is still valid.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        self.verifier.verify(token)
    }

    /// The public keys as a JWKS, or `None` for HS256 (never published).
    pub fn jwks(&self) -> Option<&Value> {
        self.jwks.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(signer: SigningKey, previous: Vec<SigningKey>) -> Tokens {
        Tokens::new(signer, previous, "https://i".into(), "a".into(), 60).unwrap()
    }

    fn subject() -> Identity {
        Identity {
            sub: "u1".into(),
            idp: "app".into(),
            ..Identity::default()
        }
    }

    #[test]
    fn issued_tokens_verify_and_name_the_signing_kid() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA] {
            let t = tokens(SigningKey::generate(alg).unwrap(), vec![]);
            let token = t.issue(&subject(), None).unwrap().token;
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(t.kid()));
            assert_eq!(header.alg, alg);
            assert_eq!(t.verify(&token).unwrap()["sub"], "u1");
        }
    }

    #[test]
    fn previous_keys_verify_and_are_published_but_never_sign() {
        let old = SigningKey::generate(Algorithm::ES256).unwrap();
        let old_kid = old.kid().to_owned();
        let before = tokens(
            SigningKey::from_pem(&old.to_pkcs8_pem().unwrap()).unwrap(),
            vec![],
        );
        let old_token = before.issue(&subject(), None).unwrap().token;
        let after = tokens(SigningKey::generate(Algorithm::EdDSA).unwrap(), vec![old]);
        assert_ne!(after.kid(), old_kid);
        assert!(after.verify(&old_token).is_ok(), "signed before rotation");
        let kids: Vec<_> = after.jwks().unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids, vec![after.kid().to_owned(), old_kid]);
    }

    #[test]
    fn hs256_publishes_nothing() {
        let t = tokens(SigningKey::from_secret(&[9; 32]).unwrap(), vec![]);
        assert!(t.jwks().is_none());
    }

    #[test]
    fn extra_claims_never_override_registered_ones() {
        let t = tokens(SigningKey::from_secret(&[9; 32]).unwrap(), vec![]);
        let extra = json!({"sub": "evil", "exp": 1, "nbf": 9e9, "role": "admin"});
        let token = t.issue(&subject(), extra.as_object()).unwrap().token;
        let claims = t.verify(&token).unwrap();
        assert_eq!(claims["sub"], "u1");
        assert_ne!(claims["exp"], 1);
        assert!(claims.get("nbf").is_none());
        assert_eq!(claims["role"], "admin");
        // Each claim once in the payload itself: a parser that keeps the
        // first of two keys must read the same claims as one that keeps the last.
        let payload = token.split('.').nth(1).unwrap();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(payload.matches("\"sub\"").count(), 1, "{payload}");
        assert_eq!(payload.matches("\"exp\"").count(), 1, "{payload}");
    }
}
