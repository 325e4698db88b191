//! Signing the JWT handed to the browser, and verifying tokens for
//! introspection.
//!
//! Registered claims (`iss`, `sub`, `aud`, `iat`, `exp`, `jti`, `idp`,
//! `openid`, `unionid`) are always ours: extra claims from a trusted backend
//! can add fields but never override them.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::config::{JwtAlg, Settings};
use crate::ticket::{Identity, IssuedToken, now_ms};

/// Claims that are ours alone.
pub const REGISTERED: &[&str] = &[
    "iss", "sub", "aud", "iat", "exp", "nbf", "jti", "idp", "openid", "unionid",
];

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("key: {0}")]
    Key(String),
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Why a token does not verify.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerifyError(pub String);

pub struct Tokens {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    ttl: u64,
}

impl Tokens {
    /// Keys and claims from settings. In development without a secret, a
    /// random one (tokens then stop verifying at restart, which is fine for
    /// trying the service out).
    pub fn from_settings(settings: &Settings) -> Result<Self, TokenError> {
        if settings.jwt_alg != JwtAlg::Hs256 {
            return Err(TokenError::Key(format!(
                "{:?} is not supported yet",
                settings.jwt_alg
            )));
        }
        let secret = match &settings.jwt_secret {
            Some(s) if s.len() >= 32 => s.clone().into_bytes(),
            Some(_) => {
                return Err(TokenError::Key(
                    "QRLOGIN_JWT_SECRET must be at least 32 bytes".into(),
                ));
            }
            None => {
                tracing::warn!(
                    "QRLOGIN_JWT_SECRET is unset: signing with a random key that changes at restart"
                );
                let mut key = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut key);
                key.to_vec()
            }
        };
        use sha2::Digest;
        let kid = hex::encode(&sha2::Sha256::digest(&secret)[..8]);
        Ok(Self {
            alg: Algorithm::HS256,
            kid,
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            issuer: settings
                .jwt_issuer
                .clone()
                .unwrap_or_else(|| settings.public_url()),
            audience: settings.jwt_audience.clone(),
            ttl: settings.jwt_ttl,
        })
    }

    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// A signed token for `subject`, with `extra` claims that may not
    /// override registered ones.
    pub fn issue(
        &self,
        subject: &Identity,
        extra: Option<&Map<String, Value>>,
    ) -> Result<IssuedToken, TokenError> {
        let now = now_ms() / 1000;
        let mut claims = Map::new();
        if let Some(extra) = extra {
            for (k, v) in extra {
                if !REGISTERED.contains(&k.as_str()) {
                    claims.insert(k.clone(), v.clone());
                }
            }
        }
        claims.insert("iss".into(), self.issuer.clone().into());
        claims.insert("sub".into(), subject.sub.clone().into());
        claims.insert("aud".into(), self.audience.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + self.ttl).into());
        claims.insert(
            "jti".into(),
            crate::ticket::TicketId::generate().to_string().into(),
        );
        claims.insert("idp".into(), subject.idp.clone().into());
        if let Some(openid) = &subject.openid {
            claims.insert("openid".into(), openid.clone().into());
        }
        if let Some(unionid) = &subject.unionid {
            claims.insert("unionid".into(), unionid.clone().into());
        }
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok(IssuedToken {
            token,
            expires_in: self.ttl,
        })
    }

    /// The claims of a token we issued and that is still valid.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        let mut validation = Validation::new(self.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["iss", "aud", "exp", "iat", "sub", "jti"]);
        validation.leeway = 30;
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| VerifyError(e.to_string()))
    }

    /// The public keys as a JWKS, or `None` for HS256 (never published).
    pub fn jwks(&self) -> Option<Value> {
        None
    }
}
