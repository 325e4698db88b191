//! Verifying tokens from their JWKS alone, as a product backend does: fetch
//! the service's `/.well-known/jwks.json` once, keep it, and fetch it again
//! only when a token names a key it does not hold (the service rotated) or
//! when the copy is older than `max_age` (so a removed key stops verifying).
//! Fetches are bounded: at most one per `min_refresh`, successful or not.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::verifier::{Verifier, VerifyError};

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

impl std::str::FromStr for JwksSource {
    type Err = std::convert::Infallible;

    /// `http(s)://…` is a URL, anything else a file path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s.starts_with("https://") || s.starts_with("http://") {
            JwksSource::Url(s.to_owned())
        } else {
            JwksSource::File(PathBuf::from(s))
        })
    }
}

/// The algorithm a published key may verify, from its own `alg`, which
/// must agree with its type. Symmetric (`oct`) keys are never taken from a
/// JWKS: whoever can read it could forge tokens.
fn pinned_algorithm(jwk: &Value) -> Option<Algorithm> {
    let field = |name| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return None;
    }
    match (field("alg")?, field("kty")?, field("crv")) {
        ("RS256", "RSA", _) => Some(Algorithm::RS256),
        ("ES256", "EC", Some("P-256")) => Some(Algorithm::ES256),
        ("EdDSA", "OKP", Some("Ed25519")) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// A verifier holding the usable keys of a JWKS document. Keys without a
/// `kid`, with another use, or of a type/algorithm pair we do not accept
/// are left out (a JWKS may carry keys meant for others).
pub fn verifier_from_jwks(
    jwks: &Value,
    issuer: &str,
    audience: &str,
) -> Result<Verifier, VerifyError> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| VerifyError::Keys("the JWKS has no \"keys\" array".into()))?;
    let mut verifier = Verifier::new(issuer, audience);
    for value in keys {
        let (Some(kid), Some(alg)) = (
            value.get("kid").and_then(Value::as_str),
            pinned_algorithm(value),
        ) else {
            continue;
        };
        let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            verifier.add_key(kid, alg, key);
        }
    }
    Ok(verifier)
}

struct Cached {
    verifier: Arc<Verifier>,
    fetched_at: Instant,
}

/// Verifies tokens against a cached JWKS; cheap to share behind an `Arc`.
pub struct JwksVerifier {
    source: JwksSource,
    issuer: String,
    audience: String,
    client: reqwest::Client,
    /// At most one fetch per this interval, whatever the tokens say: a
    /// flood of forged `kid`s (or of tokens while the JWKS is unreachable)
    /// must not become a flood of fetches.
    min_refresh: Duration,
    /// A copy older than this is refetched before use.
    max_age: Duration,
    cached: RwLock<Option<Cached>>,
    /// One fetch at a time (the others wait and use its result); it holds
    /// when the last fetch was tried, successful or not.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    fetches: AtomicU64,
}

impl JwksVerifier {
    /// Tokens must come from `issuer` for `audience` (the service's
    /// `QRLOGIN_JWT_ISSUER` and `QRLOGIN_JWT_AUDIENCE`).
    pub fn new(source: JwksSource, issuer: &str, audience: &str) -> Self {
        Self {
            source,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            min_refresh: Duration::from_secs(10),
            max_age: Duration::from_secs(300),
            cached: RwLock::new(None),
            last_attempt: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// How often the JWKS may be fetched at most, and how old a copy may
    /// get (default 10 s and 5 min, the service's `max-age`).
    pub fn with_refresh(mut self, min_refresh: Duration, max_age: Duration) -> Self {
        self.min_refresh = min_refresh;
        self.max_age = max_age;
        self
    }

    /// How many times the JWKS was fetched, or tried (to watch the cache work).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The claims of a valid token.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        let (verifier, fetched_at) = match self.current() {
            Some((verifier, at)) if at.elapsed() < self.max_age => (verifier, at),
            // Old: refetch, but keep verifying with the old copy if the
            // service cannot be reached right now.
            Some((verifier, at)) => self.refresh(Some(at)).await.unwrap_or((verifier, at)),
            None => self.refresh(None).await?,
        };
        match verifier.verify(token) {
            // The service may have rotated since: one more look, unless the
            // keys were fetched (or tried) too recently.
            Err(VerifyError::UnknownKid(kid)) => {
                let (newer, at) = self.refresh(Some(fetched_at)).await?;
                if at == fetched_at {
                    Err(VerifyError::UnknownKid(kid))
                } else {
                    newer.verify(token)
                }
            }
            result => result,
        }
    }

    fn current(&self) -> Option<(Arc<Verifier>, Instant)> {
        let cached = self.cached.read().ok()?;
        cached
            .as_ref()
            .map(|c| (Arc::clone(&c.verifier), c.fetched_at))
    }

    /// Fetch anew, unless another caller already replaced the copy fetched
    /// at `seen` while we waited for our turn, or a fetch was tried less
    /// than `min_refresh` ago (then the copy we have is the answer).
    async fn refresh(
        &self,
        seen: Option<Instant>,
    ) -> Result<(Arc<Verifier>, Instant), VerifyError> {
        let mut last_attempt = self.last_attempt.lock().await;
        let current = self.current();
        if let Some((verifier, at)) = &current {
            if Some(*at) != seen {
                return Ok((Arc::clone(verifier), *at));
            }
        }
        if let Some(tried) = *last_attempt {
            if tried.elapsed() < self.min_refresh {
                return current.ok_or_else(|| {
                    VerifyError::Keys("the last fetch of the JWKS failed; retrying later".into())
                });
            }
        }
        *last_attempt = Some(Instant::now());
        let jwks = self.fetch().await?;
        let verifier = Arc::new(verifier_from_jwks(&jwks, &self.issuer, &self.audience)?);
        let at = Instant::now();
        if let Ok(mut cached) = self.cached.write() {
            *cached = Some(Cached {
                verifier: Arc::clone(&verifier),
                fetched_at: at,
            });
        }
        Ok((verifier, at))
    }

    async fn fetch(&self) -> Result<Value, VerifyError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let keys_error = |e: &dyn std::fmt::Display| VerifyError::Keys(e.to_string());
        let bytes = match &self.source {
            JwksSource::Url(url) => {
                let response = self
                    .client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| keys_error(&e))?;
                if !response.status().is_success() {
                    return Err(VerifyError::Keys(format!(
                        "{url} answered {}",
                        response.status()
                    )));
                }
                response.bytes().await.map_err(|e| keys_error(&e))?.to_vec()
            }
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| VerifyError::Keys(format!("cannot read {}: {e}", path.display())))?,
        };
        serde_json::from_slice(&bytes).map_err(|e| keys_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn symmetric_and_mismatched_keys_are_never_taken_from_a_jwks() {
        let jwks = json!({"keys": [
            {"kty": "oct", "alg": "HS256", "kid": "s", "k": "c2VjcmV0"},
            {"kty": "EC", "alg": "RS256", "kid": "m", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "no-alg", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "alg": "ES256", "kid": "ok", "crv": "P-256", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        ]});
        let verifier = verifier_from_jwks(&jwks, "i", "a").unwrap();
        let kids: Vec<_> = verifier.kids().collect();
        assert_eq!(kids, vec!["ok"]);
    }

    #[test]
    fn a_document_without_keys_is_an_error() {
        assert!(verifier_from_jwks(&json!({"nope": 1}), "i", "a").is_err());
    }

    #[test]
    fn sources_are_urls_or_files() {
        assert_eq!(
            "https://x/.well-known/jwks.json"
                .parse::<JwksSource>()
                .unwrap(),
            JwksSource::Url("https://x/.well-known/jwks.json".into())
        );
        assert_eq!(
            "jwks.json".parse::<JwksSource>().unwrap(),
            JwksSource::File("jwks.json".into())
        );
    }
}
