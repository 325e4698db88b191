//! Signing keys: read from PEM (PKCS#8 for every type; PKCS#1 for RSA;
//! SEC1 for EC, as `openssl` writes them), generated for `qrlogin keygen`,
//! and parsed once so that signing a token costs one signature and nothing
//! else.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding, PrivateKeyInfo};
use rsa::rand_core::{OsRng, RngCore};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::jwk::{PublicKey, secret_thumbprint};

/// The shortest RSA modulus we sign with.
const MIN_RSA_BITS: usize = 2048;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file is not a private key we can use; the text says why.
    #[error("{0}")]
    Format(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

fn format_error(message: impl Into<String>) -> KeyError {
    KeyError::Format(message.into())
}

/// The JWT signing algorithms a deployment may choose (`QRLOGIN_JWT_ALG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    Hs256,
    Rs256,
    Es256,
    EdDsa,
}

impl JwtAlg {
    /// Every algorithm with its JWS name, as operators write it.
    pub const NAMES: [(&'static str, JwtAlg); 4] = [
        ("HS256", JwtAlg::Hs256),
        ("RS256", JwtAlg::Rs256),
        ("ES256", JwtAlg::Es256),
        ("EdDSA", JwtAlg::EdDsa),
    ];

    /// The JWS algorithm.
    pub fn algorithm(self) -> Algorithm {
        match self {
            JwtAlg::Hs256 => Algorithm::HS256,
            JwtAlg::Rs256 => Algorithm::RS256,
            JwtAlg::Es256 => Algorithm::ES256,
            JwtAlg::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// The key settings as given (a secret, key file paths) and the claims
/// every token carries. Only [`load`] and [`check`] read the files, so a
/// key that `check-config` accepts is the key that signs.
#[derive(Debug, Clone)]
pub struct KeySettings {
    pub alg: JwtAlg,
    pub secret: Option<String>,
    pub key_file: Option<PathBuf>,
    pub previous_key_files: Vec<PathBuf>,
    /// `iss`; unset: the public URL.
    pub issuer: Option<String>,
    pub audience: String,
    pub ttl: Duration,
}

/// Why the key settings cannot sign, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    pub variable: &'static str,
    pub message: String,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

const SECRET: &str = "QRLOGIN_JWT_SECRET";
const KEY_FILE: &str = "QRLOGIN_JWT_KEY_FILE";
const PREVIOUS: &str = "QRLOGIN_JWT_PREVIOUS_KEY_FILES";

fn problem(variable: &'static str, message: String) -> KeyProblem {
    KeyProblem { variable, message }
}

/// Every problem of `settings`, each key file read and parsed, so that a
/// bad key is found before a deploy is. `production` refuses a missing
/// HS256 secret (elsewhere a random one signs).
pub fn check(settings: &KeySettings, production: bool) -> Vec<KeyProblem> {
    let mut problems = Vec::new();
    match (settings.alg, &settings.secret) {
        (JwtAlg::Hs256, Some(s)) if s.len() < 32 => problems.push(problem(
            SECRET,
            format!("is {} bytes; HS256 needs at least 32", s.len()),
        )),
        (JwtAlg::Hs256, None) if production => problems.push(problem(
            SECRET,
            "must be set in production (at least 32 bytes)".into(),
        )),
        (JwtAlg::Hs256, _) => {}
        (alg, _) => {
            if settings.key_file.is_none() {
                problems.push(no_key_file(alg));
            }
        }
    }
    if settings.alg == JwtAlg::Hs256 && !settings.previous_key_files.is_empty() {
        problems.push(hs256_previous());
    }
    let signing = settings
        .key_file
        .iter()
        .filter(|_| settings.alg != JwtAlg::Hs256);
    for path in signing {
        if let Err(p) = read_signing_key(settings.alg, path) {
            problems.push(p);
        }
    }
    for path in &settings.previous_key_files {
        if let Err(p) = read_key(PREVIOUS, path) {
            problems.push(p);
        }
    }
    problems
}

/// The signing key and the previous keys of `settings`; the first problem
/// [`check`] would report stops it.
pub fn load(settings: &KeySettings) -> Result<(SigningKey, Vec<SigningKey>), KeyProblem> {
    let signer = match settings.alg {
        JwtAlg::Hs256 => {
            if !settings.previous_key_files.is_empty() {
                return Err(hs256_previous());
            }
            hs256_key(settings.secret.as_deref())?
        }
        alg => {
            let path = settings
                .key_file
                .as_deref()
                .ok_or_else(|| no_key_file(alg))?;
            read_signing_key(alg, path)?
        }
    };
    let previous = settings
        .previous_key_files
        .iter()
        .map(|path| read_key(PREVIOUS, path))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((signer, previous))
}

fn no_key_file(alg: JwtAlg) -> KeyProblem {
    problem(KEY_FILE, format!("{alg:?} needs a PEM private key file"))
}

fn hs256_previous() -> KeyProblem {
    problem(
        PREVIOUS,
        "key files are for RS256, ES256 and EdDSA; HS256 has one secret".into(),
    )
}

fn hs256_key(secret: Option<&str>) -> Result<SigningKey, KeyProblem> {
    let secret = match secret {
        Some(s) if s.len() >= 32 => Zeroizing::new(s.as_bytes().to_vec()),
        Some(s) => {
            return Err(problem(
                SECRET,
                format!("is {} bytes; HS256 needs at least 32", s.len()),
            ));
        }
        None => {
            tracing::warn!(
                "QRLOGIN_JWT_SECRET is unset: signing with a random key that changes at restart"
            );
            let mut key = Zeroizing::new(vec![0u8; 32]);
            OsRng.fill_bytes(key.as_mut_slice());
            key
        }
    };
    SigningKey::from_secret(&secret).map_err(|e| problem(SECRET, e.to_string()))
}

/// The key of `QRLOGIN_JWT_KEY_FILE`, which must be of `alg`.
fn read_signing_key(alg: JwtAlg, path: &Path) -> Result<SigningKey, KeyProblem> {
    let key = read_key(KEY_FILE, path)?;
    if key.algorithm() != alg.algorithm() {
        return Err(problem(
            KEY_FILE,
            format!(
                "{} holds a {:?} key but QRLOGIN_JWT_ALG is {alg:?}",
                path.display(),
                key.algorithm(),
            ),
        ));
    }
    Ok(key)
}

fn read_key(variable: &'static str, path: &Path) -> Result<SigningKey, KeyProblem> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| problem(variable, format!("cannot read {}: {e}", path.display())))?;
    SigningKey::from_pem(&pem).map_err(|e| problem(variable, format!("{}: {e}", path.display())))
}

/// A private key, parsed and ready to sign.
pub struct SigningKey {
    inner: Inner,
    kid: String,
}

enum Inner {
    /// The keyed HMAC state, cloned per token (the key schedule is done once).
    /// ring's HMAC: its SHA-256 is assembly with the CPU's SHA or vector
    /// extensions, where RustCrypto's falls back to portable code under
    /// instruction counting (see docs/performance.md).
    Hs256(ring::hmac::Key, Zeroizing<Vec<u8>>),
    Rs256(Box<rsa::pkcs1v15::SigningKey<Sha256>>, PublicKey),
    Es256(Box<P256Key>, PublicKey),
    EdDsa(Box<ed25519_dalek::SigningKey>, PublicKey),
}

/// A P-256 key twice: RustCrypto's for encoding it (key files), ring's for
/// signing, which is several times faster (precomputed base-point tables)
/// and is already built for TLS.
pub struct P256Key {
    secret: p256::ecdsa::SigningKey,
    signer: ring::signature::EcdsaKeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.algorithm())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An HS256 key from a shared secret.
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        Ok(Self {
            inner: Inner::Hs256(mac, Zeroizing::new(secret.to_vec())),
            kid: secret_thumbprint(secret),
        })
    }

    /// A private key from PEM text, of whichever type it is. A file may hold
    /// other blocks (OpenSSL puts `EC PARAMETERS` before a SEC1 key); the
    /// first private-key block is used.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, block) = private_block(pem)?;
        match label {
            "RSA PRIVATE KEY" => rsa_key(
                rsa::RsaPrivateKey::from_pkcs1_pem(block)
                    .map_err(|e| format_error(format!("unreadable PKCS#1 RSA key: {e}")))?,
            ),
            "EC PRIVATE KEY" => p256_key(p256::SecretKey::from_sec1_pem(block).map_err(|_| {
                format_error("unreadable SEC1 EC key (ES256 needs a key on the P-256 curve)")
            })?),
            _ => pkcs8_key(block),
        }
    }

    /// A new random key for `alg` (not HS256: a secret is not a key file).
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        match alg {
            Algorithm::RS256 => rsa_key(
                rsa::RsaPrivateKey::new(&mut OsRng, MIN_RSA_BITS)
                    .map_err(|e| format_error(format!("RSA key generation failed: {e}")))?,
            ),
            Algorithm::ES256 => p256_key(p256::SecretKey::random(&mut OsRng)),
            Algorithm::EdDSA => {
                let mut seed = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(seed.as_mut());
                Ok(ed25519_key(ed25519_dalek::SigningKey::from_bytes(&seed)))
            }
            other => Err(format_error(format!(
                "cannot generate a key file for {other:?} (RS256, ES256 or EdDSA)"
            ))),
        }
    }

    /// The key as unencrypted PKCS#8 PEM, the format every JOSE library
    /// and OpenSSL read.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let pem = match &self.inner {
            Inner::Hs256(..) => return Err(format_error("an HS256 secret has no PEM form")),
            Inner::Rs256(key, _) => {
                let private: &rsa::RsaPrivateKey = key.as_ref().as_ref();
                private.to_pkcs8_pem(LineEnding::LF)
            }
            Inner::Es256(key, _) => {
                p256::SecretKey::from(key.secret.as_nonzero_scalar()).to_pkcs8_pem(LineEnding::LF)
            }
            // PKCS#8 v1 (no public key inside): OpenSSL 3.0 refuses the v2
            // form ed25519-dalek writes by default.
            Inner::EdDsa(key, _) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF),
        };
        pem.map_err(|e| format_error(format!("PEM encoding failed: {e}")))
    }

    /// A 32-byte key for another job (`label` names it), derived from this
    /// key's private part: the same on every instance that holds the key,
    /// unguessable to anyone who does not.
    pub fn derive(&self, label: &[u8]) -> Result<[u8; 32], KeyError> {
        let material: Zeroizing<Vec<u8>> = match &self.inner {
            Inner::Hs256(_, secret) => secret.clone(),
            _ => Zeroizing::new(self.to_pkcs8_pem()?.as_bytes().to_vec()),
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&material)
            .map_err(|_| format_error("an empty key derives nothing"))?;
        mac.update(label);
        Ok(mac.finalize().into_bytes().into())
    }

    pub fn algorithm(&self) -> Algorithm {
        match &self.inner {
            Inner::Hs256(..) => Algorithm::HS256,
            Inner::Rs256(..) => Algorithm::RS256,
            Inner::Es256(..) => Algorithm::ES256,
            Inner::EdDsa(..) => Algorithm::EdDSA,
        }
    }

    /// The RFC 7638 thumbprint of the key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, or `None` for an HS256 secret (never published).
    pub fn public_key(&self) -> Option<&PublicKey> {
        match &self.inner {
            Inner::Hs256(..) => None,
            Inner::Rs256(_, public) | Inner::Es256(_, public) | Inner::EdDsa(_, public) => {
                Some(public)
            }
        }
    }

    /// The key that verifies this key's signatures.
    pub fn decoding_key(&self) -> Result<DecodingKey, KeyError> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let key = match &self.inner {
            Inner::Hs256(_, secret) => Ok(DecodingKey::from_secret(secret)),
            Inner::Rs256(_, PublicKey::Rsa { n, e }) => {
                Ok(DecodingKey::from_rsa_raw_components(n, e))
            }
            Inner::Es256(_, PublicKey::P256 { x, y }) => {
                DecodingKey::from_ec_components(&b64(x), &b64(y))
            }
            Inner::EdDsa(_, PublicKey::Ed25519 { x }) => DecodingKey::from_ed_components(&b64(x)),
            _ => return Err(format_error("key and public key disagree")),
        };
        key.map_err(|e| format_error(e.to_string()))
    }

    /// The JWS signature of `message` (raw bytes: r‖s for ES256).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(match &self.inner {
            Inner::Hs256(mac, _) => ring::hmac::sign(mac, message).as_ref().to_vec(),
            // Randomized: RSA blinding, so signing time says nothing about
            // the key.
            Inner::Rs256(key, _) => key
                .try_sign_with_rng(&mut OsRng, message)
                .map_err(|e| KeyError::Sign(e.to_string()))?
                .to_vec(),
            // ring's fixed encoding is the JWS form, r‖s.
            Inner::Es256(key, _) => key
                .signer
                .sign(&ring::rand::SystemRandom::new(), message)
                .map_err(|_| KeyError::Sign("P-256 signing failed".into()))?
                .as_ref()
                .to_vec(),
            Inner::EdDsa(key, _) => key.sign(message).to_bytes().to_vec(),
        })
    }
}

/// The first private-key block of a PEM file, with its label.
fn private_block(pem: &str) -> Result<(&str, &str), KeyError> {
    let mut rest = pem;
    while let Some(at) = rest.find("-----BEGIN ") {
        let block = &rest[at..];
        let label_end = block[11..]
            .find("-----")
            .ok_or_else(|| format_error("a PEM BEGIN line without its closing dashes"))?;
        let label = &block[11..11 + label_end];
        let end_line = format!("-----END {label}-----");
        let end = block
            .find(&end_line)
            .ok_or_else(|| format_error(format!("PEM block {label} has no END line")))?;
        let whole = &block[..end + end_line.len()];
        match label {
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => return Ok((label, whole)),
            "ENCRYPTED PRIVATE KEY" => {
                return Err(format_error(
                    "the key is encrypted; store it unencrypted (openssl pkcs8 -topk8 -nocrypt) and protect the file instead",
                ));
            }
            _ => rest = &block[whole.len()..],
        }
    }
    Err(format_error(
        "no private key in the file (expected a PEM block BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY; a public key or certificate cannot sign)",
    ))
}

fn pkcs8_key(block: &str) -> Result<SigningKey, KeyError> {
    let (_, der) = rsa::pkcs8::der::pem::decode_vec(block.as_bytes())
        .map_err(|e| format_error(format!("unreadable PEM: {e}")))?;
    let der = Zeroizing::new(der);
    let info = PrivateKeyInfo::try_from(der.as_slice())
        .map_err(|e| format_error(format!("unreadable PKCS#8 key: {e}")))?;
    let oid = info.algorithm.oid.to_string();
    match oid.as_str() {
        OID_RSA => rsa_key(
            rsa::RsaPrivateKey::from_pkcs8_der(&der)
                .map_err(|e| format_error(format!("unreadable PKCS#8 RSA key: {e}")))?,
        ),
        OID_EC => p256_key(p256::SecretKey::from_pkcs8_der(&der).map_err(|_| {
            format_error("the EC key is not on the P-256 curve (the only one ES256 uses)")
        })?),
        OID_ED25519 => Ok(ed25519_key(
            ed25519_dalek::SigningKey::from_pkcs8_der(&der)
                .map_err(|e| format_error(format!("unreadable PKCS#8 Ed25519 key: {e}")))?,
        )),
        other => Err(format_error(format!(
            "unsupported key type (algorithm OID {other}); use RSA, EC P-256 or Ed25519"
        ))),
    }
}

fn rsa_key(key: rsa::RsaPrivateKey) -> Result<SigningKey, KeyError> {
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format_error(format!(
            "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
        )));
    }
    key.validate()
        .map_err(|e| format_error(format!("inconsistent RSA key: {e}")))?;
    let public = PublicKey::Rsa {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    };
    Ok(SigningKey {
        kid: public.thumbprint(),
        inner: Inner::Rs256(Box::new(rsa::pkcs1v15::SigningKey::new(key)), public),
    })
}

fn p256_key(secret: p256::SecretKey) -> Result<SigningKey, KeyError> {
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(format_error("the EC public key is the point at infinity"));
    };
    let signer = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &secret.to_bytes(),
        point.as_bytes(),
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|_| format_error("the P-256 key pair is inconsistent"))?;
    let public = PublicKey::P256 {
        x: x.to_vec(),
        y: y.to_vec(),
    };
    Ok(SigningKey {
        kid: public.thumbprint(),
        inner: Inner::Es256(
            Box::new(P256Key {
                secret: p256::ecdsa::SigningKey::from(secret),
                signer,
            }),
            public,
        ),
    })
}

fn ed25519_key(key: ed25519_dalek::SigningKey) -> SigningKey {
    let public = PublicKey::Ed25519 {
        x: key.verifying_key().to_bytes().to_vec(),
    };
    SigningKey {
        kid: public.thumbprint(),
        inner: Inner::EdDsa(Box::new(key), public),
    }
}

#[cfg(test)]
mod tests {
    //! The fixtures in `testdata/` were written by OpenSSL 3
    //! (`genpkey`, `genrsa -traditional`, `ecparam -genkey`, `pkey`), so
    //! these tests read the formats operators actually have.

    use super::*;
    use jsonwebtoken::Validation;

    const RSA_PKCS8: &str = include_str!("testdata/rsa_pkcs8.pem");
    const RSA_PKCS1: &str = include_str!("testdata/rsa_pkcs1.pem");
    const EC_PKCS8: &str = include_str!("testdata/ec_pkcs8.pem");
    const EC_SEC1: &str = include_str!("testdata/ec_sec1.pem");
    const ED_PKCS8: &str = include_str!("testdata/ed25519_pkcs8.pem");
    const EC_P384: &str = include_str!("testdata/ec_p384_pkcs8.pem");
    const ENCRYPTED: &str = include_str!("testdata/ec_encrypted.pem");
    const RSA_1024: &str = include_str!("testdata/rsa_1024_pkcs8.pem");
    const EC_PUBLIC: &str = include_str!("testdata/ec_public.pem");

    /// A token signed by `key` verifies with jsonwebtoken's own verifier
    /// fed with our published public key.
    fn signs_verifiably(key: &SigningKey) {
        let header = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"{}"}}"#,
            super::super::jwk::jwk_alg(key.algorithm())
        ));
        let claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"s","exp":4102444800}"#);
        let message = format!("{header}.{claims}");
        let signature = URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).unwrap());
        let token = format!("{message}.{signature}");
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(key.public_key().unwrap().to_jwk()).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(key.algorithm());
        validation.validate_aud = false;
        jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
    }

    #[test]
    fn reads_rsa_pkcs8_and_pkcs1_as_the_same_key() {
        let pkcs8 = SigningKey::from_pem(RSA_PKCS8).unwrap();
        let pkcs1 = SigningKey::from_pem(RSA_PKCS1).unwrap();
        assert_eq!(pkcs8.algorithm(), Algorithm::RS256);
        assert_eq!(pkcs8.kid(), pkcs1.kid(), "same key, same kid");
        signs_verifiably(&pkcs1);
    }

    #[test]
    fn reads_ec_pkcs8_and_sec1_with_its_parameters_block() {
        let pkcs8 = SigningKey::from_pem(EC_PKCS8).unwrap();
        let sec1 = SigningKey::from_pem(EC_SEC1).unwrap();
        assert!(EC_SEC1.contains("BEGIN EC PARAMETERS"));
        assert_eq!(sec1.algorithm(), Algorithm::ES256);
        assert_eq!(pkcs8.kid(), sec1.kid());
        signs_verifiably(&sec1);
    }

    #[test]
    fn reads_ed25519_pkcs8() {
        let key = SigningKey::from_pem(ED_PKCS8).unwrap();
        assert_eq!(key.algorithm(), Algorithm::EdDSA);
        signs_verifiably(&key);
    }

    #[test]
    fn refuses_unusable_keys_saying_why() {
        let why = |pem: &str| SigningKey::from_pem(pem).unwrap_err().to_string();
        assert!(why(EC_P384).contains("P-256"), "{}", why(EC_P384));
        assert!(why(ENCRYPTED).contains("encrypted"));
        assert!(why(RSA_1024).contains("2048"), "{}", why(RSA_1024));
        assert!(why(EC_PUBLIC).contains("no private key"));
        assert!(why("not a pem").contains("no private key"));
        assert!(
            why("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .contains("PKCS#8")
        );
    }

    #[test]
    fn generated_keys_round_trip_through_pkcs8_pem() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let key = SigningKey::generate(alg).unwrap();
            let pem = key.to_pkcs8_pem().unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let again = SigningKey::from_pem(&pem).unwrap();
            assert_eq!(again.kid(), key.kid(), "{alg:?}");
            assert_eq!(again.algorithm(), alg);
            signs_verifiably(&again);
        }
        assert!(SigningKey::generate(Algorithm::HS256).is_err());
    }

    #[test]
    fn ed25519_keys_are_written_as_pkcs8_v1_which_openssl_reads() {
        let pem = SigningKey::generate(Algorithm::EdDSA)
            .unwrap()
            .to_pkcs8_pem()
            .unwrap();
        let (_, der) = rsa::pkcs8::der::pem::decode_vec(pem.as_bytes()).unwrap();
        // RFC 8410: version 0, the Ed25519 OID, the 32-byte seed; 48 bytes.
        assert_eq!(der.len(), 48, "{}", pem.as_str());
        assert_eq!(
            PrivateKeyInfo::try_from(der.as_slice()).unwrap().public_key,
            None
        );
    }

    #[test]
    fn a_secret_signs_hs256_with_a_thumbprint_kid() {
        let key = SigningKey::from_secret(&[1; 32]).unwrap();
        assert_eq!(key.algorithm(), Algorithm::HS256);
        assert!(key.public_key().is_none());
        assert_eq!(key.kid(), secret_thumbprint(&[1; 32]));
    }
}
