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
    /// `{"iss":…,"aud":…,` as JSON: every payload starts with it.
    payload_head: String,
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
        let payload_head = format!(
            r#"{{"iss":{},"aud":{},"#,
            Value::from(issuer.as_str()),
            Value::from(audience.as_str())
        );
        Ok(Self {
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
            payload_head,
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
        let payload = self
            .payload(subject, now, jti.as_str(), extra)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        let mut token = String::with_capacity(self.header.len() + payload.len() * 4 / 3 + 360);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        Ok(IssuedToken {
            token: self.signed(token)?,
            expires_in: self.ttl,
        })
    }

    /// The claims of [`Tokens::issue`] as JSON text, written by hand: through
    /// serde (a struct with a flattened map) they cost 2,300 instructions
    /// of a confirm's 69,000, a fifth of that here (docs/performance.md).
    /// `tests::the_payload_written_by_hand_is_what_serde_writes` holds it to
    /// serde's text. Extra claims follow ours, without the registered ones:
    /// a second `sub` in one object would be read differently by different
    /// parsers.
    fn payload(
        &self,
        subject: &Identity,
        now: u64,
        jti: &str,
        extra: Option<&Map<String, Value>>,
    ) -> serde_json::Result<String> {
        use crate::json::{string, unsigned};
        let mut out = String::with_capacity(self.payload_head.len() + 200);
        out.push_str(&self.payload_head);
        out.push_str(r#""sub":"#);
        string(&mut out, &subject.sub)?;
        out.push_str(r#","iat":"#);
        unsigned(&mut out, now);
        out.push_str(r#","exp":"#);
        unsigned(&mut out, now + self.ttl);
        out.push_str(r#","jti":"#);
        string(&mut out, jti)?;
        out.push_str(r#","idp":"#);
        string(&mut out, &subject.idp)?;
        for (name, value) in [("openid", &subject.openid), ("unionid", &subject.unionid)] {
            if let Some(value) = value {
                out.push_str(",\"");
                out.push_str(name);
                out.push_str("\":");
                string(&mut out, value)?;
            }
        }
        let extra = extra.into_iter().flatten();
        for (name, value) in extra.filter(|(k, _)| !REGISTERED.contains(&k.as_str())) {
            out.push(',');
            string(&mut out, name)?;
            out.push(':');
            out.push_str(&serde_json::to_string(value)?);
        }
        out.push('}');
        Ok(out)
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
    use proptest::prelude::*;

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

    /// What `Tokens::payload` writes by hand, as serde writes it.
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        aud: &'a str,
        sub: &'a str,
        iat: u64,
        exp: u64,
        jti: &'a str,
        idp: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        openid: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        unionid: Option<&'a str>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    }

    /// Claim values as they come: plain, and everything JSON escapes.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9_.:/-]{0,40}",
            "\\PC{0,20}",
            "[\"\\\\\\x00-\\x1f\\x7f a\u{e9}\u{2028}]{0,12}"
        ]
    }

    proptest! {
        #[test]
        fn the_payload_written_by_hand_is_what_serde_writes(
            issuer in any_text(),
            audience in any_text(),
            sub in any_text(),
            idp in any_text(),
            openid in proptest::option::of(any_text()),
            unionid in proptest::option::of(any_text()),
            now in 0u64..u64::MAX / 2,
            extra in proptest::option::of(proptest::collection::btree_map(
                prop_oneof![any_text(), proptest::sample::select(REGISTERED).prop_map(str::to_owned)],
                prop_oneof![
                    any_text().prop_map(Value::from),
                    any::<i64>().prop_map(Value::from),
                    any::<bool>().prop_map(Value::from),
                    proptest::collection::vec(any_text(), 0..3).prop_map(Value::from),
                ],
                0..5,
            )),
        ) {
            let t = Tokens::new(SigningKey::from_secret(&[9; 32]).unwrap(), vec![], issuer.clone(), audience.clone(), 60).unwrap();
            let subject = Identity { sub: sub.clone(), idp: idp.clone(), openid: openid.clone(), unionid: unionid.clone() };
            let extra: Option<Map<String, Value>> = extra.map(|m| m.into_iter().collect());
            let by_hand = t.payload(&subject, now, "jti-1", extra.as_ref()).unwrap();
            let ours = extra.iter().flatten().filter(|(k, _)| !REGISTERED.contains(&k.as_str()));
            let by_serde = serde_json::to_string(&Claims {
                iss: &issuer,
                aud: &audience,
                sub: &sub,
                iat: now,
                exp: now + 60,
                jti: "jti-1",
                idp: &idp,
                openid: openid.as_deref(),
                unionid: unionid.as_deref(),
                extra: ours.map(|(k, v)| (k.clone(), v.clone())).collect(),
            }).unwrap();
            prop_assert_eq!(&by_hand, &by_serde);
            let _: Value = serde_json::from_str(&by_hand).unwrap();
        }
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
