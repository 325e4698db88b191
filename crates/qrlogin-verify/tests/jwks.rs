//! The verifier as a product backend runs it: against a JWKS served over
//! HTTP (a tiny server on loopback that counts its requests), with tokens
//! signed by `jsonwebtoken` from key files written by OpenSSL.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use qrlogin_verify::{JwksSource, JwksVerifier, VerifyError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ISSUER: &str = "https://login.test";
const AUDIENCE: &str = "qrlogin";

struct Key {
    kid: &'static str,
    alg: Algorithm,
    pem: &'static str,
    jwk: &'static str,
}

const ES: Key = Key {
    kid: "es-1",
    alg: Algorithm::ES256,
    pem: include_str!("testdata/es256.pem"),
    jwk: include_str!("testdata/es256.jwk.json"),
};
const RS: Key = Key {
    kid: "rs-1",
    alg: Algorithm::RS256,
    pem: include_str!("testdata/rs256.pem"),
    jwk: include_str!("testdata/rs256.jwk.json"),
};
const ED: Key = Key {
    kid: "ed-1",
    alg: Algorithm::EdDSA,
    pem: include_str!("testdata/eddsa.pem"),
    jwk: include_str!("testdata/eddsa.jwk.json"),
};

impl Key {
    /// The JWK as the service publishes it.
    fn public(&self) -> Value {
        let mut jwk: Value = serde_json::from_str(self.jwk).unwrap();
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(qrlogin_verify::alg_name(self.alg));
        jwk["use"] = json!("sig");
        jwk
    }

    fn encoding(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.pem.as_bytes()),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(self.pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(self.pem.as_bytes()),
            other => panic!("{other:?}"),
        }
        .unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.into());
        jsonwebtoken::encode(&header, claims, &self.encoding()).unwrap()
    }
}

fn jwks(keys: &[&Key]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public()).collect::<Vec<_>>() })
}

fn claims() -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "jti": "j1",
            "iat": now, "exp": now + 60, "idp": "app" })
}

/// A token with any header, signed over its two first parts.
fn forge(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let sig = jsonwebtoken::crypto::sign(format!("{h}.{c}").as_bytes(), key, alg).unwrap();
    format!("{h}.{c}.{sig}")
}

/// Serves `body` (or a 503 while it is `None`) at every path, counting
/// the requests.
struct JwksServer {
    url: String,
    body: Arc<Mutex<Option<String>>>,
    requests: Arc<AtomicU32>,
}

impl JwksServer {
    async fn start(jwks: &Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let body = Arc::new(Mutex::new(Some(jwks.to_string())));
        let requests = Arc::new(AtomicU32::new(0));
        let (served, counted) = (Arc::clone(&body), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (served, counted) = (Arc::clone(&served), Arc::clone(&counted));
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    let response = match body {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\
                                 connection: close\r\n\r\n"
                            .to_owned(),
                    };
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self {
            url,
            body,
            requests,
        }
    }

    fn serve(&self, jwks: Option<&Value>) {
        *self.body.lock().unwrap() = jwks.map(Value::to_string);
    }

    fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }

    fn verifier(&self, min_refresh: Duration) -> JwksVerifier {
        JwksVerifier::new(JwksSource::Url(self.url.clone()), ISSUER, AUDIENCE)
            .with_refresh(min_refresh, Duration::from_secs(3600))
    }
}

#[tokio::test]
async fn a_rotation_across_algorithms_costs_one_fetch_on_the_unknown_kid() {
    let server = JwksServer::start(&jwks(&[&ES])).await;
    let verifier = server.verifier(Duration::ZERO);
    let old = ES.sign(&claims());
    assert_eq!(verifier.verify(&old).await.unwrap()["sub"], "user-42");
    assert_eq!(verifier.verify(&old).await.unwrap()["sub"], "user-42");
    assert_eq!(server.requests(), 1, "fetched once, then cached");

    // The service moves from ES256 to RS256 and publishes an EdDSA key too;
    // the ES256 key stays published as a previous key.
    server.serve(Some(&jwks(&[&RS, &ED, &ES])));
    let rs = RS.sign(&claims());
    assert_eq!(verifier.verify(&rs).await.unwrap()["sub"], "user-42");
    assert_eq!(server.requests(), 2, "one refetch for the unknown kid");
    let ed = ED.sign(&claims());
    assert_eq!(verifier.verify(&ed).await.unwrap()["sub"], "user-42");
    verifier.verify(&old).await.unwrap();
    verifier.verify(&rs).await.unwrap();
    assert_eq!(server.requests(), 2, "the new copy holds every key");
    assert_eq!(verifier.fetches(), 2);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let server = JwksServer::start(&jwks(&[&ES])).await;
    let verifier = Arc::new(server.verifier(Duration::from_millis(300)));
    verifier.verify(&ES.sign(&claims())).await.unwrap();

    // Within the interval: unknown kids are refused without a fetch.
    let mut forged = Header::new(Algorithm::ES256);
    forged.kid = Some("nobody".into());
    let token = jsonwebtoken::encode(&forged, &claims(), &ES.encoding()).unwrap();
    assert!(matches!(
        verifier.verify(&token).await,
        Err(VerifyError::UnknownKid(_))
    ));
    assert_eq!(server.requests(), 1);

    // After it: a hundred concurrent tokens, each naming another unknown
    // kid, make one fetch between them.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let verifier = Arc::clone(&verifier);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(format!("forged-{i}"));
        let token = jsonwebtoken::encode(&header, &claims(), &ES.encoding()).unwrap();
        tasks.push(tokio::spawn(async move { verifier.verify(&token).await }));
    }
    for task in tasks {
        assert!(matches!(
            task.await.unwrap(),
            Err(VerifyError::UnknownKid(_))
        ));
    }
    assert_eq!(server.requests(), 2, "one refetch for the whole flood");
}

#[tokio::test]
async fn an_unreachable_jwks_is_not_hammered_either() {
    let server = JwksServer::start(&jwks(&[&ES])).await;
    server.serve(None);
    let verifier = server.verifier(Duration::from_secs(60));
    let token = ES.sign(&claims());
    for _ in 0..20 {
        assert!(matches!(
            verifier.verify(&token).await,
            Err(VerifyError::Keys(_))
        ));
    }
    assert_eq!(server.requests(), 1, "failed fetches are bounded too");
}

#[tokio::test]
async fn the_algorithm_comes_from_the_key_never_from_the_token() {
    let mut published = jwks(&[&ES, &RS]);
    // A symmetric key in a JWKS would let any reader sign: never taken.
    published["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "alg": "HS256", "use": "sig", "kid": "hs", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}));
    let server = JwksServer::start(&published).await;
    let verifier = server.verifier(Duration::from_secs(60));
    verifier.verify(&ES.sign(&claims())).await.unwrap();

    // `alg: none`, with or without a signature.
    let h = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": ES.kid}).to_string());
    let c = URL_SAFE_NO_PAD.encode(claims().to_string());
    for none in [format!("{h}.{c}."), format!("{h}.{c}.AAAA")] {
        assert!(matches!(
            verifier.verify(&none).await,
            Err(VerifyError::ForbiddenAlgorithm(_))
        ));
    }
    // HS256 "signed" with the public key, as text and as its JWK.
    for secret in [ES.jwk.as_bytes(), RS.public().to_string().as_bytes()] {
        for kid in [ES.kid, RS.kid] {
            let token = forge(
                &json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
                &claims(),
                &EncodingKey::from_secret(secret),
                Algorithm::HS256,
            );
            assert!(
                matches!(
                    verifier.verify(&token).await,
                    Err(VerifyError::AlgorithmMismatch { .. })
                ),
                "HS256 with {kid}"
            );
        }
    }
    // Another asymmetric algorithm than the key's.
    let es_as_rs = forge(
        &json!({"alg": "ES256", "kid": RS.kid}),
        &claims(),
        &ES.encoding(),
        Algorithm::ES256,
    );
    assert!(matches!(
        verifier.verify(&es_as_rs).await,
        Err(VerifyError::AlgorithmMismatch { .. })
    ));
    // The JWKS's own symmetric key verifies nothing.
    let hs = forge(
        &json!({"alg": "HS256", "kid": "hs"}),
        &claims(),
        &EncodingKey::from_secret(b"secret-secret-secret-secret-secret"),
        Algorithm::HS256,
    );
    assert!(matches!(
        verifier.verify(&hs).await,
        Err(VerifyError::UnknownKid(_))
    ));
    // A signature by another key under a published kid.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(ES.kid.into());
    let wrong_key = jsonwebtoken::encode(&header, &claims(), &ED.encoding()).unwrap();
    assert!(verifier.verify(&wrong_key).await.is_err());
}

#[tokio::test]
async fn expired_foreign_or_incomplete_tokens_are_refused() {
    let server = JwksServer::start(&jwks(&[&ES])).await;
    let verifier = server.verifier(Duration::from_secs(60));
    let now = jsonwebtoken::get_current_timestamp();
    let with = |name: &str, value: Value| {
        let mut c = claims();
        c[name] = value;
        ES.sign(&c)
    };
    assert_eq!(
        verifier
            .verify(&with("exp", json!(now - 120)))
            .await
            .unwrap_err(),
        VerifyError::Expired
    );
    let refused_claim = |result: Result<_, VerifyError>| match result {
        Err(VerifyError::Claim { claim, .. }) => claim,
        other => panic!("{other:?}"),
    };
    let wrong_aud = verifier.verify(&with("aud", json!("another-app"))).await;
    assert_eq!(refused_claim(wrong_aud), "aud");
    let wrong_iss = verifier
        .verify(&with("iss", json!("https://evil.test")))
        .await;
    assert_eq!(refused_claim(wrong_iss), "iss");
    let in_the_future = verifier.verify(&with("iat", json!(now + 3600))).await;
    assert_eq!(refused_claim(in_the_future), "iat");
    for claim in ["iss", "aud", "exp", "iat", "sub", "jti"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(claim);
        let result = verifier.verify(&ES.sign(&c)).await;
        assert_eq!(refused_claim(result), claim, "without {claim}");
    }
    // Still within the 30 s leeway: accepted.
    verifier.verify(&with("exp", json!(now - 5))).await.unwrap();
    assert_eq!(server.requests(), 1);
}
