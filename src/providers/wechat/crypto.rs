//! WeChat's message security, pure: the SHA-1 signatures over sorted
//! strings that prove a push came from WeChat, and the "safe mode"
//! AES-256-CBC envelope (`Encrypt`) around event XML and our replies.
//!
//! The envelope is Tencent's `WXBizMsgCrypt` scheme: key =
//! base64(EncodingAESKey + "="), IV = the key's first 16 bytes, plaintext =
//! random(16) ‖ len(xml) as big-endian u32 ‖ xml ‖ appid, PKCS#7-padded to
//! 32-byte blocks (not AES's 16, so the padding is done here by hand).

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::RngCore;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// WeChat pads to multiples of 32 bytes, whatever AES's block size.
const PAD_BLOCK: usize = 32;
/// random(16) ‖ length(4).
const HEADER: usize = 20;

/// Why an `Encrypt` value or a key was refused. Deliberately coarse: the
/// caller answers 4xx either way and must not become a padding oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the EncodingAESKey must be 43 characters of [A-Za-z0-9]")]
    BadKey,
    #[error("the encrypted message is malformed")]
    Malformed,
    #[error("the encrypted message is for another app id")]
    WrongAppId,
}

/// Lowercase hex SHA-1 of `parts` sorted as strings and joined: both
/// `signature` (token, timestamp, nonce) and `msg_signature` (plus Encrypt).
pub fn sorted_sha1(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let mut sha = Sha1::new();
    for part in sorted {
        sha.update(part.as_bytes());
    }
    hex::encode(sha.finalize())
}

/// The `signature` WeChat puts on the query of every push and check.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sorted_sha1(&[token, timestamp, nonce])
}

/// The safe-mode `msg_signature`, which also covers the `Encrypt` value.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1(&[token, timestamp, nonce, encrypt])
}

/// Constant-time comparison of a presented signature with the expected one
/// (case-insensitive hex, as some proxies upper-case query values).
pub fn signature_matches(expected: &str, presented: &str) -> bool {
    let presented = presented.to_ascii_lowercase();
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// Whether `presented` is the plain-mode signature of this push.
pub fn check_signature(token: &str, timestamp: &str, nonce: &str, presented: &str) -> bool {
    signature_matches(&signature(token, timestamp, nonce), presented)
}

/// Whether `presented` is the safe-mode signature of this `Encrypt`.
pub fn check_msg_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    presented: &str,
) -> bool {
    signature_matches(&msg_signature(token, timestamp, nonce, encrypt), presented)
}

/// The safe-mode cipher of one app: its AES key and the app id every
/// message must carry.
#[derive(Clone)]
pub struct MsgCrypt {
    key: [u8; 32],
    app_id: String,
}

impl std::fmt::Debug for MsgCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgCrypt")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl MsgCrypt {
    /// From the 43-character EncodingAESKey of the admin console.
    pub fn new(encoding_aes_key: &str, app_id: &str) -> Result<Self, CryptoError> {
        if encoding_aes_key.len() != 43
            || !encoding_aes_key.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(CryptoError::BadKey);
        }
        // 43 base64 characters + "=" carry 32 bytes; the last character's
        // low bits are not always zero in real keys, so decode leniently.
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let bytes = engine
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(Self {
            key,
            app_id: app_id.to_owned(),
        })
    }

    /// The XML inside a base64 `Encrypt` value, after checking its layout
    /// and that it names our app id.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, CryptoError> {
        let mut buf = STANDARD
            .decode(encrypt.trim())
            .map_err(|_| CryptoError::Malformed)?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(CryptoError::Malformed);
        }
        let iv: [u8; 16] = self.iv();
        let plain = cbc::Decryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| CryptoError::Malformed)?;
        let pad = usize::from(*plain.last().ok_or(CryptoError::Malformed)?);
        if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
            return Err(CryptoError::Malformed);
        }
        let content = &plain[..plain.len() - pad];
        if content.len() < HEADER {
            return Err(CryptoError::Malformed);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&content[16..HEADER]);
        let len = u32::from_be_bytes(len) as usize;
        let rest = &content[HEADER..];
        if len > rest.len() {
            return Err(CryptoError::Malformed);
        }
        let (xml, app_id) = rest.split_at(len);
        if !bool::from(app_id.ct_eq(self.app_id.as_bytes())) {
            return Err(CryptoError::WrongAppId);
        }
        String::from_utf8(xml.to_vec()).map_err(|_| CryptoError::Malformed)
    }

    /// `xml` in a fresh envelope (random prefix), base64.
    pub fn encrypt(&self, xml: &str) -> String {
        let mut random = [0u8; 16];
        rand::rng().fill_bytes(&mut random);
        self.encrypt_with(random, xml)
    }

    /// `xml` in an envelope with the given random prefix (for fixed tests).
    pub fn encrypt_with(&self, random: [u8; 16], xml: &str) -> String {
        let mut plain = Vec::with_capacity(HEADER + xml.len() + self.app_id.len() + PAD_BLOCK);
        plain.extend_from_slice(&random);
        // A reply longer than 4 GiB cannot exist (bodies are capped far lower).
        plain.extend_from_slice(&(xml.len() as u32).to_be_bytes());
        plain.extend_from_slice(xml.as_bytes());
        plain.extend_from_slice(self.app_id.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.resize(plain.len() + pad, pad as u8);
        let len = plain.len();
        let iv: [u8; 16] = self.iv();
        let cipher = cbc::Encryptor::<Aes256>::new(&self.key.into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        STANDARD.encode(cipher)
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Tencent's published safe-mode sample.
    const TOKEN: &str = "spamtest";
    const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APP_ID: &str = "wx2c2769f8efd9abc2";
    const TIMESTAMP: &str = "1409735669";
    const NONCE: &str = "1320562132";
    const MSG_SIGNATURE: &str = "5d197aaffba7e9b25a30732f161a50dee96bd5fa";
    const ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";

    #[test]
    fn server_check_signatures_match_the_published_vectors() {
        assert_eq!(
            signature("AAAAA", "1714036504", "1514711492"),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
        assert_eq!(
            signature("AAAAA", "1714037059", "486452656"),
            "899cf89e464efb63f54ddac96b0a0a235f53aa78"
        );
        assert!(check_signature(
            "AAAAA",
            "1714036504",
            "1514711492",
            "F464B24FC39322E44B38AA78F5EDD27BD1441696"
        ));
        assert!(!check_signature(
            "AAAAB",
            "1714036504",
            "1514711492",
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        ));
    }

    #[test]
    fn tencent_sample_msg_signature_matches() {
        assert_eq!(
            msg_signature(TOKEN, TIMESTAMP, NONCE, ENCRYPT),
            MSG_SIGNATURE
        );
        assert!(check_msg_signature(
            TOKEN,
            TIMESTAMP,
            NONCE,
            ENCRYPT,
            MSG_SIGNATURE
        ));
        assert!(!check_msg_signature(
            TOKEN,
            TIMESTAMP,
            "1",
            ENCRYPT,
            MSG_SIGNATURE
        ));
    }

    #[test]
    fn tencent_sample_decrypts_to_its_text_message() {
        let crypt = MsgCrypt::new(AES_KEY, APP_ID).unwrap();
        let xml = crypt.decrypt(ENCRYPT).unwrap();
        assert_eq!(xml.len(), 280);
        assert!(xml.contains("<ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"));
        assert!(
            xml.contains("<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>")
        );
        assert!(xml.contains("<CreateTime>1409735668</CreateTime>"));
        assert!(xml.contains("<Content><![CDATA[abcdteT]]></Content>"));
        assert!(xml.contains("<MsgId>6054768590064713728</MsgId>"));
    }

    #[test]
    fn tencent_sample_is_refused_for_another_app() {
        let crypt = MsgCrypt::new(AES_KEY, "wx0000000000000000").unwrap();
        assert_eq!(crypt.decrypt(ENCRYPT), Err(CryptoError::WrongAppId));
    }

    #[test]
    fn a_fixed_prefix_reproduces_a_fixed_envelope() {
        let crypt = MsgCrypt::new(AES_KEY, APP_ID).unwrap();
        let xml = crypt.decrypt(ENCRYPT).unwrap();
        // Re-encrypting with the sample's own random prefix gives back the
        // sample byte for byte: the layout and padding are WeChat's.
        let raw = STANDARD.decode(ENCRYPT).unwrap();
        let mut buf = raw.clone();
        let plain = cbc::Decryptor::<Aes256>::new(&crypt.key.into(), &crypt.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .unwrap();
        let random: [u8; 16] = plain[..16].try_into().unwrap();
        assert_eq!(crypt.encrypt_with(random, &xml), ENCRYPT);
    }

    #[test]
    fn bad_keys_are_refused() {
        for key in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}!", "a".repeat(42)),
        ] {
            assert_eq!(
                MsgCrypt::new(key, APP_ID).err(),
                Some(CryptoError::BadKey),
                "{key}"
            );
        }
    }

    #[test]
    fn garbage_envelopes_are_malformed_not_panics() {
        let crypt = MsgCrypt::new(AES_KEY, APP_ID).unwrap();
        for bad in [
            "",
            "!!!",
            "AAAA",
            &STANDARD.encode([0u8; 15]),
            &STANDARD.encode([0u8; 32]),
        ] {
            assert!(crypt.decrypt(bad).is_err(), "{bad}");
        }
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[A-Za-z0-9]{43}").unwrap()
    }

    proptest! {
        #[test]
        fn round_trips_any_xml(key in key_strategy(), app in "[a-z0-9]{0,32}", xml in any::<String>()) {
            let crypt = MsgCrypt::new(&key, &app).unwrap();
            let sealed = crypt.encrypt(&xml);
            let raw = STANDARD.decode(&sealed).unwrap();
            prop_assert_eq!(raw.len() % PAD_BLOCK, 0);
            prop_assert_eq!(crypt.decrypt(&sealed).unwrap(), xml);
        }

        #[test]
        fn another_key_never_opens_an_envelope(key in key_strategy(), other in key_strategy(), xml in ".{0,200}") {
            prop_assume!(key != other);
            let sealed = MsgCrypt::new(&key, "wxapp").unwrap().encrypt(&xml);
            // A wrong key yields noise: refused (or, vanishingly rarely, a
            // different message), never the original.
            let opened = MsgCrypt::new(&other, "wxapp").unwrap().decrypt(&sealed);
            prop_assert!(opened.as_deref() != Ok(xml.as_str()));
        }

        #[test]
        fn decrypt_never_panics(input in any::<String>(), bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let crypt = MsgCrypt::new(AES_KEY, APP_ID).unwrap();
            let _ = crypt.decrypt(&input);
            let _ = crypt.decrypt(&STANDARD.encode(&bytes));
        }

        #[test]
        fn signatures_ignore_order_and_catch_any_change(
            token in "[A-Za-z0-9]{1,32}", ts in "[0-9]{1,10}", nonce in "[0-9]{1,10}", other in "[0-9]{1,10}"
        ) {
            let s = signature(&token, &ts, &nonce);
            prop_assert_eq!(&s, &sorted_sha1(&[&nonce, &token, &ts]));
            prop_assert!(check_signature(&token, &ts, &nonce, &s));
            prop_assert!(check_signature(&token, &ts, &nonce, &s.to_uppercase()));
            let joined = |n: &str| {
                let mut v = [token.as_str(), ts.as_str(), n];
                v.sort_unstable();
                v.concat()
            };
            // Only a different joined string is a different message.
            if joined(&other) != joined(&nonce) {
                prop_assert!(!check_signature(&token, &ts, &other, &s));
            }
            prop_assert!(!check_signature(&token, &ts, &nonce, &s[1..]));
        }
    }
}
