//! Tokens sealed to a P-256 key: compact JWE (RFC 7516) with `alg`
//! `ECDH-ES` (direct key agreement, RFC 7518 §4.6) and `enc` `A256GCM`.
//!
//! Every token is sealed before it is stored, so the store never holds a
//! JWT a browser could present:
//! - to the browser's own key when it sent `seal` at ticket creation: the
//!   JWE itself goes out as `sealed_token` and only that browser opens it;
//! - otherwise, in a store other instances share (Redis), to an X25519 key
//!   (RFC 8037) derived from the ticket's secret, of which the ticket keeps
//!   only the public half: the service opens the JWE again only when the
//!   browser presents the secret (WebSocket or long-poll), and sends the
//!   plain `token`;
//! - otherwise, in a store that lives inside this process (memory), with
//!   AES-256-GCM under this process's own key, made at random at start and
//!   kept nowhere else (as bytes, not a JWE: it never leaves the process).
//!   Whoever can read that store can read the process, and with it the
//!   signing key, which is worth more than any one token: an X25519 seal would protect nothing more there, and its
//!   three scalar multiplications were most of a confirm's cost. No other
//!   process could open such a token, so a ticket sealed this way refuses
//!   to be serialised (`ticket::SealTo::Process`).
//!
//! The derived private key is HMAC-SHA256(secret, "qrlogin token at rest"),
//! not the secret's SHA-256 the store keeps, so the stored hash opens
//! nothing. X25519 rather than P-256 for it because every ticket creation
//! pays one base-point multiplication, which curve25519-dalek's precomputed
//! tables make cheap and the `p256` crate (no tables) does not (figures in
//! docs/performance.md, "Token sealing").
//!
//! Sealing uses ring (its P-256 and X25519 agreements and AES-GCM: a confirm
//! pays one ephemeral key and one agreement); opening with the derived key
//! uses curve25519-dalek, because ring's agreement keys are ephemeral only
//! and cannot be made from bytes.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use curve25519_dalek::montgomery::MontgomeryPoint;
use hmac::{Hmac, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::agreement::{self, ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The label of the at-rest key derivation (see the module docs).
const AT_REST_LABEL: &[u8] = b"qrlogin token at rest";
/// The only `enc` we speak; it is also the Concat KDF's AlgorithmID.
const ENC: &str = "A256GCM";
/// The additional data of a token sealed with the process's key: a label,
/// so that no other use of AES-GCM under that key could pass for one.
const PROCESS_AAD: &[u8] = b"qrlogin token in process";

/// Why a token could not be sealed or opened. Deliberately vague: which
/// step failed is of no use to a caller and of some to an attacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not a P-256 public JWK (kty EC, crv P-256, x and y of 32 bytes, on the curve)")]
    BadKey,
    #[error("the system random generator failed")]
    Random,
    #[error("the sealed token does not open with this key")]
    Unopenable,
}

/// A validated P-256 public key, stored and sent as a JWK.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct PublicJwk {
    x: [u8; 32],
    y: [u8; 32],
}

impl fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicJwk({})", URL_SAFE_NO_PAD.encode(&self.x[..6]))
    }
}

fn coordinate(jwk: &serde_json::Map<String, Value>, name: &str) -> Result<[u8; 32], SealError> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or(SealError::BadKey)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| SealError::BadKey)?;
    bytes.try_into().map_err(|_| SealError::BadKey)
}

impl PublicJwk {
    /// Accepts exactly a public P-256 JWK whose point is on the curve. A JWK
    /// carrying its private part (`d`) is refused too: the browser's key is
    /// meant to be non-extractable, and one that was sent is no secret.
    pub fn from_jwk(value: &Value) -> Result<Self, SealError> {
        let jwk = value.as_object().ok_or(SealError::BadKey)?;
        let is = |name: &str, want: &str| jwk.get(name).and_then(Value::as_str) == Some(want);
        if !is("kty", "EC") || !is("crv", "P-256") || jwk.contains_key("d") {
            return Err(SealError::BadKey);
        }
        let key = Self {
            x: coordinate(jwk, "x")?,
            y: coordinate(jwk, "y")?,
        };
        // Off-curve points (invalid-curve attacks) and the identity fail here.
        p256::PublicKey::from_sec1_bytes(&key.uncompressed()).map_err(|_| SealError::BadKey)?;
        Ok(key)
    }

    fn from_uncompressed(bytes: &[u8]) -> Result<Self, SealError> {
        match bytes {
            [4, rest @ ..] if rest.len() == 64 => {
                let mut x = [0u8; 32];
                let mut y = [0u8; 32];
                x.copy_from_slice(&rest[..32]);
                y.copy_from_slice(&rest[32..]);
                Ok(Self { x, y })
            }
            _ => Err(SealError::BadKey),
        }
    }

    /// SEC 1 uncompressed form: `04 || x || y`.
    fn uncompressed(&self) -> [u8; 65] {
        let mut out = [4u8; 65];
        out[1..33].copy_from_slice(&self.x);
        out[33..].copy_from_slice(&self.y);
        out
    }

    pub fn to_jwk(&self) -> Value {
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(self.x),
            "y": URL_SAFE_NO_PAD.encode(self.y),
        })
    }
}

impl TryFrom<Value> for PublicJwk {
    type Error = SealError;
    fn try_from(value: Value) -> Result<Self, SealError> {
        Self::from_jwk(&value)
    }
}

impl From<PublicJwk> for Value {
    fn from(key: PublicJwk) -> Self {
        key.to_jwk()
    }
}

/// Concat KDF (NIST SP 800-56A, as RFC 7518 §4.6.2 profiles it) for
/// `ECDH-ES` + `A256GCM` with empty `apu`/`apv`: one SHA-256 round gives
/// the 256-bit key.
fn concat_kdf(z: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    h.update((ENC.len() as u32).to_be_bytes());
    h.update(ENC.as_bytes());
    h.update(0u32.to_be_bytes()); // PartyUInfo: empty
    h.update(0u32.to_be_bytes()); // PartyVInfo: empty
    h.update(256u32.to_be_bytes()); // SuppPubInfo: keydatalen in bits
    h.finalize().into()
}

fn aes_key(cek: &[u8; 32]) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, cek)
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Random)
}

/// `plaintext` sealed to the browser's P-256 key `to` as a compact JWE.
pub fn seal(to: &PublicJwk, plaintext: &[u8]) -> Result<String, SealError> {
    let rng = SystemRandom::new();
    let ephemeral =
        EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| SealError::Random)?;
    let epk = ephemeral
        .compute_public_key()
        .map_err(|_| SealError::Random)
        .and_then(|k| PublicJwk::from_uncompressed(k.as_ref()))?;
    let peer = UnparsedPublicKey::new(&ECDH_P256, to.uncompressed());
    let cek =
        agreement::agree_ephemeral(ephemeral, &peer, concat_kdf).map_err(|_| SealError::BadKey)?;
    finish(&rng, epk.to_jwk(), &cek, plaintext)
}

/// `plaintext` sealed to a ticket's at-rest X25519 key `to`.
pub fn seal_at_rest(to: &RestKey, plaintext: &[u8]) -> Result<String, SealError> {
    let rng = SystemRandom::new();
    let ephemeral = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| SealError::Random)?;
    let epk = ephemeral
        .compute_public_key()
        .map_err(|_| SealError::Random)
        .and_then(|k| RestKey::from_slice(k.as_ref()))?;
    let peer = UnparsedPublicKey::new(&X25519, to.0);
    let cek =
        agreement::agree_ephemeral(ephemeral, &peer, concat_kdf).map_err(|_| SealError::BadKey)?;
    finish(&rng, epk.to_jwk(), &cek, plaintext)
}

/// The compact JWE of `plaintext` under `cek`, with `epk` in its header.
fn finish(
    rng: &SystemRandom,
    epk: Value,
    cek: &[u8; 32],
    plaintext: &[u8],
) -> Result<String, SealError> {
    let header = serde_json::json!({ "alg": "ECDH-ES", "enc": ENC, "epk": epk });
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let mut iv = [0u8; NONCE_LEN];
    rng.fill(&mut iv).map_err(|_| SealError::Random)?;
    let mut body = plaintext.to_vec();
    let tag = aes_key(cek)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(header.as_bytes()),
            &mut body,
        )
        .map_err(|_| SealError::Random)?;
    Ok(compact(&header, &iv, &body, tag.as_ref()))
}

/// This process's own token key (see the module docs). Its nonces are a
/// random prefix and a counter: unique for the key's life without asking
/// the system for randomness on every confirm.
struct ProcessKey {
    key: LessSafeKey,
    prefix: [u8; 4],
    counter: AtomicU64,
}

impl ProcessKey {
    fn get() -> Result<&'static ProcessKey, SealError> {
        static KEY: OnceLock<Result<ProcessKey, SealError>> = OnceLock::new();
        KEY.get_or_init(|| {
            let rng = SystemRandom::new();
            let mut bytes = [0u8; 32 + 4];
            rng.fill(&mut bytes).map_err(|_| SealError::Random)?;
            let (key, prefix) = bytes.split_at(32);
            let key = aes_key(key.try_into().map_err(|_| SealError::Random)?)?;
            let prefix = prefix.try_into().map_err(|_| SealError::Random)?;
            Ok(ProcessKey {
                key,
                prefix,
                counter: AtomicU64::new(0),
            })
        })
        .as_ref()
        .map_err(|e| *e)
    }

    fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut iv = [0u8; NONCE_LEN];
        iv[..4].copy_from_slice(&self.prefix);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        iv[4..].copy_from_slice(&n.to_be_bytes());
        iv
    }
}

/// `plaintext` sealed with this process's key, for a store inside this
/// process: nonce, ciphertext and tag (AES-256-GCM), as bytes. Not a compact
/// JWE: it never leaves the process, so nothing needs to read it as one, and
/// base64 both ways was most of what sealing and opening it cost a confirm
/// (docs/performance.md).
pub fn seal_in_process(plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let key = ProcessKey::get()?;
    let iv = key.nonce();
    let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    sealed.extend_from_slice(&iv);
    sealed.extend_from_slice(plaintext);
    let tag = key
        .key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(PROCESS_AAD),
            &mut sealed[NONCE_LEN..],
        )
        .map_err(|_| SealError::Random)?;
    sealed.extend_from_slice(tag.as_ref());
    Ok(sealed)
}

/// A compact JWE with no encrypted key (`alg` `dir` or `ECDH-ES`).
fn compact(header_b64: &str, iv: &[u8], body: &[u8], tag: &[u8]) -> String {
    let mut out = String::with_capacity(
        header_b64.len() + 4 + (iv.len() + body.len() + tag.len()).div_ceil(3) * 4,
    );
    out.push_str(header_b64);
    out.push_str("..");
    URL_SAFE_NO_PAD.encode_string(iv, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(body, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut out);
    out
}

/// The public half of a ticket's at-rest key: an X25519 point, stored as an
/// `OKP` JWK.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct RestKey([u8; 32]);

impl fmt::Debug for RestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RestKey({})", URL_SAFE_NO_PAD.encode(&self.0[..6]))
    }
}

impl RestKey {
    fn from_slice(bytes: &[u8]) -> Result<Self, SealError> {
        bytes.try_into().map(Self).map_err(|_| SealError::BadKey)
    }

    fn from_jwk(value: &Value) -> Result<Self, SealError> {
        let jwk = value.as_object().ok_or(SealError::BadKey)?;
        let is = |name: &str, want: &str| jwk.get(name).and_then(Value::as_str) == Some(want);
        if !is("kty", "OKP") || !is("crv", "X25519") {
            return Err(SealError::BadKey);
        }
        coordinate(jwk, "x").map(Self)
    }

    pub fn to_jwk(&self) -> Value {
        serde_json::json!({ "kty": "OKP", "crv": "X25519", "x": URL_SAFE_NO_PAD.encode(self.0) })
    }
}

impl TryFrom<Value> for RestKey {
    type Error = SealError;
    fn try_from(value: Value) -> Result<Self, SealError> {
        Self::from_jwk(&value)
    }
}

impl From<RestKey> for Value {
    fn from(key: RestKey) -> Self {
        key.to_jwk()
    }
}

/// The at-rest private key a ticket's secret stands for; made again from
/// the presented secret whenever a token sealed at rest must be opened.
pub struct Opener([u8; 32]);

impl Opener {
    /// The key derived from `secret` (any 32 bytes are an X25519 key).
    pub fn from_secret(secret: &str) -> Result<Self, SealError> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .map_err(|_| SealError::BadKey)?;
        mac.update(AT_REST_LABEL);
        Ok(Self(mac.finalize().into_bytes().into()))
    }

    /// The public half, which the ticket keeps so a confirm can seal to it.
    pub fn public(&self) -> RestKey {
        RestKey(MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }

    /// The plaintext of a compact JWE sealed to this key.
    pub fn open(&self, jwe: &str) -> Result<Vec<u8>, SealError> {
        open_with(jwe, |epk| {
            let epk = RestKey::from_jwk(epk).map_err(|_| SealError::Unopenable)?;
            let z = MontgomeryPoint(epk.0).mul_clamped(self.0).to_bytes();
            // A low-order `epk` gives an all-zero secret (RFC 7748 §6.1).
            if z == [0u8; 32] {
                return Err(SealError::Unopenable);
            }
            Ok(concat_kdf(&z))
        })
    }
}

/// What a browser does with its P-256 key, for tests and tools: the service
/// itself never holds a key that opens a token sealed to a browser.
#[doc(hidden)]
pub struct BrowserKey(p256::SecretKey);

#[doc(hidden)]
impl BrowserKey {
    /// A key named by `seed` (HMAC outputs that are not a scalar, about one
    /// in 2^32, are skipped by counting on).
    pub fn from_seed(seed: &str) -> Result<Self, SealError> {
        for counter in 0u8..=255 {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed.as_bytes())
                .map_err(|_| SealError::BadKey)?;
            mac.update(&[counter]);
            let bytes: [u8; 32] = mac.finalize().into_bytes().into();
            if let Ok(key) = p256::SecretKey::from_bytes(&bytes.into()) {
                return Ok(Self(key));
            }
        }
        Err(SealError::BadKey)
    }

    pub fn public(&self) -> Result<PublicJwk, SealError> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = self.0.public_key().to_encoded_point(false);
        PublicJwk::from_uncompressed(point.as_bytes())
    }

    pub fn open(&self, jwe: &str) -> Result<Vec<u8>, SealError> {
        open_with(jwe, |epk| {
            let epk = PublicJwk::from_jwk(epk).map_err(|_| SealError::Unopenable)?;
            let epk = p256::PublicKey::from_sec1_bytes(&epk.uncompressed())
                .map_err(|_| SealError::Unopenable)?;
            let z = p256::ecdh::diffie_hellman(self.0.to_nonzero_scalar(), epk.as_affine());
            Ok(concat_kdf(z.raw_secret_bytes()))
        })
    }
}

fn bad<E>(_: E) -> SealError {
    SealError::Unopenable
}

/// A compact JWE's parts: header, IV, ciphertext, tag. The encrypted key
/// must be empty (`dir` and `ECDH-ES` carry none).
fn split(jwe: &str) -> Result<(&str, &str, &str, &str), SealError> {
    let mut parts = jwe.split('.');
    let (Some(header), Some(""), Some(iv), Some(body), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(SealError::Unopenable);
    };
    Ok((header, iv, body, tag))
}

/// The plaintext of `body`, if `tag` authenticates it and `header_b64`
/// under `key`.
fn decrypt(
    key: &LessSafeKey,
    header_b64: &str,
    iv: &str,
    body: &str,
    tag: &str,
) -> Result<Vec<u8>, SealError> {
    let iv: [u8; NONCE_LEN] = URL_SAFE_NO_PAD
        .decode(iv)
        .map_err(bad)?
        .try_into()
        .map_err(|_| SealError::Unopenable)?;
    let mut buf = URL_SAFE_NO_PAD.decode(body).map_err(bad)?;
    URL_SAFE_NO_PAD.decode_vec(tag, &mut buf).map_err(bad)?;
    open_bytes(key, header_b64.as_bytes(), iv, buf)
}

/// `buf` (ciphertext, then tag) opened in place with `key`, nonce `iv` and
/// additional data `aad`: the one AES-GCM open of both forms.
fn open_bytes(
    key: &LessSafeKey,
    aad: &[u8],
    iv: [u8; NONCE_LEN],
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, SealError> {
    let len = key
        .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf)
        .map_err(bad)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// The plaintext of a token [`seal_in_process`] sealed in this process.
/// Anything else (another process's key, a bad tag, too short) does not
/// open.
pub fn open_in_process(sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let (iv, body) = sealed
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(SealError::Unopenable)?;
    open_bytes(&ProcessKey::get()?.key, PROCESS_AAD, *iv, body.to_vec())
}

/// Opens a compact `ECDH-ES`/`A256GCM` JWE given how to agree on the
/// content key from its `epk` JWK. Anything else (another `alg` or `enc`, an
/// encrypted key, a bad tag) does not open.
fn open_with(
    jwe: &str,
    agree: impl FnOnce(&Value) -> Result<[u8; 32], SealError>,
) -> Result<Vec<u8>, SealError> {
    let (header_b64, iv, body, tag) = split(jwe)?;
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).map_err(bad)?).map_err(bad)?;
    if header.get("alg").and_then(Value::as_str) != Some("ECDH-ES")
        || header.get("enc").and_then(Value::as_str) != Some(ENC)
    {
        return Err(SealError::Unopenable);
    }
    let cek = agree(header.get("epk").ok_or(SealError::Unopenable)?)?;
    decrypt(&aes_key(&cek)?, header_b64, iv, body, tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn browser(seed: &str) -> BrowserKey {
        BrowserKey::from_seed(seed).unwrap()
    }

    #[test]
    fn a_token_sealed_to_a_browser_opens_with_its_key_only() {
        let mine = browser("browser-1");
        let jwe = seal(&mine.public().unwrap(), b"header.payload.signature").unwrap();
        assert_eq!(mine.open(&jwe).unwrap(), b"header.payload.signature");
        assert_eq!(browser("browser-2").open(&jwe), Err(SealError::Unopenable));
        assert!(
            Opener::from_secret("browser-1")
                .unwrap()
                .open(&jwe)
                .is_err()
        );
        // Two seals of one plaintext share nothing but the header's shape.
        let again = seal(&mine.public().unwrap(), b"header.payload.signature").unwrap();
        assert_ne!(jwe, again);
    }

    #[test]
    fn a_token_sealed_at_rest_opens_with_its_secret_only() {
        let mine = Opener::from_secret("secret-1").unwrap();
        let jwe = seal_at_rest(&mine.public(), b"header.payload.signature").unwrap();
        assert_eq!(mine.open(&jwe).unwrap(), b"header.payload.signature");
        let other = Opener::from_secret("secret-2").unwrap();
        assert_eq!(other.open(&jwe), Err(SealError::Unopenable));
    }

    #[test]
    fn a_token_sealed_in_process_opens_here_only_and_never_twice_alike() {
        let sealed = seal_in_process(b"header.payload.signature").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"payload"), "{sealed:?}");
        assert_eq!(
            open_in_process(&sealed).unwrap(),
            b"header.payload.signature"
        );
        // The same token twice: another nonce, another ciphertext.
        let again = seal_in_process(b"header.payload.signature").unwrap();
        assert_ne!(again[..NONCE_LEN], sealed[..NONCE_LEN]);
        assert_ne!(again[NONCE_LEN..], sealed[NONCE_LEN..]);
        // Another key (another process's) opens nothing.
        let other = aes_key(&[7u8; 32]).unwrap();
        let (iv, body) = sealed.split_first_chunk::<NONCE_LEN>().unwrap();
        assert_eq!(
            open_bytes(&other, PROCESS_AAD, *iv, body.to_vec()),
            Err(SealError::Unopenable)
        );
        // A flipped bit anywhere (nonce, ciphertext, tag), a cut, nothing.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(
                open_in_process(&bad),
                Err(SealError::Unopenable),
                "byte {i}"
            );
        }
        assert!(open_in_process(&sealed[..sealed.len() - 1]).is_err());
        assert!(open_in_process(&sealed[..NONCE_LEN]).is_err());
        assert!(open_in_process(b"short").is_err());
        // Neither kind opens as the other.
        let opener = Opener::from_secret("s").unwrap();
        let at_rest = seal_at_rest(&opener.public(), b"payload").unwrap();
        assert!(open_in_process(at_rest.as_bytes()).is_err());
    }

    fn header_of(jwe: &str) -> Value {
        let parts: Vec<&str> = jwe.split('.').collect();
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[1], "", "ECDH-ES direct: no encrypted key");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap()
    }

    #[test]
    fn the_jwes_have_the_contract_shape() {
        let to_browser = header_of(&seal(&browser("s").public().unwrap(), b"x").unwrap());
        assert_eq!(to_browser["alg"], "ECDH-ES");
        assert_eq!(to_browser["enc"], "A256GCM");
        assert_eq!(to_browser["epk"]["crv"], "P-256");
        assert!(PublicJwk::from_jwk(&to_browser["epk"]).is_ok());
        let at_rest = Opener::from_secret("s").unwrap().public();
        let at_rest = header_of(&seal_at_rest(&at_rest, b"x").unwrap());
        assert_eq!(
            (&at_rest["alg"], &at_rest["enc"]),
            (&"ECDH-ES".into(), &"A256GCM".into())
        );
        assert_eq!(at_rest["epk"]["crv"], "X25519");
    }

    #[test]
    fn a_tampered_jwe_does_not_open() {
        let opener = Opener::from_secret("s").unwrap();
        let jwe = seal_at_rest(&opener.public(), b"payload").unwrap();
        let parts: Vec<&str> = jwe.split('.').collect();
        for i in [0, 2, 3, 4] {
            let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            let mut bytes = URL_SAFE_NO_PAD.decode(&p[i]).unwrap();
            bytes[0] ^= 1;
            p[i] = URL_SAFE_NO_PAD.encode(bytes);
            assert!(opener.open(&p.join(".")).is_err(), "part {i}");
        }
        assert!(opener.open("a.b.c").is_err());
        assert!(opener.open(&jwe.replacen("..", ".AAAA.", 1)).is_err());
        // A low-order point as epk (all-zero shared secret) opens nothing.
        let zero = serde_json::json!({ "alg": "ECDH-ES", "enc": "A256GCM",
            "epk": { "kty": "OKP", "crv": "X25519", "x": URL_SAFE_NO_PAD.encode([0u8; 32]) } });
        let forged = format!(
            "{}..{}",
            URL_SAFE_NO_PAD.encode(zero.to_string()),
            parts[2..].join(".")
        );
        assert_eq!(opener.open(&forged), Err(SealError::Unopenable));
    }

    #[test]
    fn the_key_follows_the_secret_not_its_stored_hash() {
        let a = Opener::from_secret("same").unwrap().public();
        assert_eq!(a, Opener::from_secret("same").unwrap().public());
        assert_ne!(a, Opener::from_secret("other").unwrap().public());
        let hash = hex::encode(Sha256::digest(b"same"));
        assert_ne!(a, Opener::from_secret(&hash).unwrap().public());
    }

    #[test]
    fn only_public_p256_jwks_are_accepted() {
        let good = browser("s").public().unwrap().to_jwk();
        assert!(PublicJwk::from_jwk(&good).is_ok());
        // WebCrypto's export adds members; they are fine.
        let mut webcrypto = good.clone();
        webcrypto["ext"] = Value::Bool(true);
        webcrypto["key_ops"] = serde_json::json!([]);
        assert!(PublicJwk::from_jwk(&webcrypto).is_ok());
        let with = |name: &str, v: Value| {
            let mut k = good.clone();
            k[name] = v;
            k
        };
        let y = good["y"].as_str().unwrap();
        let mut off_curve = URL_SAFE_NO_PAD.decode(y).unwrap();
        off_curve[31] ^= 1;
        let bad = [
            Value::Null,
            Value::String("EC".into()),
            serde_json::json!({}),
            with("kty", "RSA".into()),
            with("kty", "OKP".into()),
            with("crv", "P-384".into()),
            with("crv", "X25519".into()),
            with("x", "AAAA".into()),
            with("x", 7.into()),
            with("x", "not base64!".into()),
            with("y", URL_SAFE_NO_PAD.encode([0u8; 33]).into()),
            with("y", URL_SAFE_NO_PAD.encode(off_curve).into()),
            with("x", URL_SAFE_NO_PAD.encode([0u8; 32]).into()),
            with("d", URL_SAFE_NO_PAD.encode([1u8; 32]).into()),
        ];
        for jwk in bad {
            assert_eq!(PublicJwk::from_jwk(&jwk), Err(SealError::BadKey), "{jwk}");
        }
    }

    #[test]
    fn stored_keys_round_trip_through_json() {
        let key = browser("s").public().unwrap();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<PublicJwk>(&json).unwrap(), key);
        let rest = Opener::from_secret("s").unwrap().public();
        let json = serde_json::to_string(&rest).unwrap();
        assert_eq!(serde_json::from_str::<RestKey>(&json).unwrap(), rest);
    }
}
