//! Safe-mode decryption on arbitrary input: as a base64 string, and as raw
//! cipher bytes (base64-encoded here so the fuzzer reaches the AES and
//! padding checks rather than stopping at base64). Never a panic; anything
//! that opens must be re-sealable and open again to the same XML.
//!
//! And from known parts: the same bytes choose a random prefix and an XML
//! text, which this target seals itself as Tencent's scheme describes
//! (with the AES crate, not the service's code); the service must open it
//! to exactly that text, and refuse it under another app id.
#![no_main]

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use libfuzzer_sys::fuzz_target;

#[path = "../../src/providers/wechat/crypto.rs"]
#[allow(dead_code)]
mod crypto;

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";

fuzz_target!(|data: &[u8]| {
    let crypt = crypto::MsgCrypt::new(KEY, APP_ID).expect("the sample key is valid");
    let as_text = String::from_utf8_lossy(data);
    let as_cipher = STANDARD.encode(data);
    for input in [as_text.as_ref(), as_cipher.as_str()] {
        if let Ok(xml) = crypt.decrypt(input) {
            let sealed = crypt.encrypt(&xml);
            assert_eq!(crypt.decrypt(&sealed).as_deref(), Ok(xml.as_str()));
        }
    }

    let mut random = [0u8; 16];
    let prefix = data.len().min(16);
    random[..prefix].copy_from_slice(&data[..prefix]);
    let xml = String::from_utf8_lossy(&data[prefix..]);
    let sealed = seal_as_specified(random, &xml, APP_ID);
    assert_eq!(crypt.decrypt(&sealed).as_deref(), Ok(xml.as_ref()));
    let other = crypto::MsgCrypt::new(KEY, "wx0000000000000000").expect("valid");
    assert_eq!(other.decrypt(&sealed), Err(crypto::CryptoError::WrongAppId));
});

/// Tencent's envelope: key = base64(EncodingAESKey + "="), IV = the key's
/// first 16 bytes, AES-256-CBC over random(16) ‖ len(xml) big-endian u32 ‖
/// xml ‖ appid, PKCS#7-padded to 32-byte blocks; base64 of the cipher.
fn seal_as_specified(random: [u8; 16], xml: &str, app_id: &str) -> String {
    let key = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    )
    .decode(format!("{KEY}="))
    .expect("43 characters and '=' are 32 bytes");
    let mut plain = random.to_vec();
    plain.extend_from_slice(&u32::try_from(xml.len()).expect("short").to_be_bytes());
    plain.extend_from_slice(xml.as_bytes());
    plain.extend_from_slice(app_id.as_bytes());
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let len = plain.len();
    let cipher = cbc::Encryptor::<Aes256>::new_from_slices(&key, &key[..16])
        .expect("a 32-byte key and a 16-byte IV")
        .encrypt_padded_mut::<NoPadding>(&mut plain, len)
        .expect("whole blocks");
    STANDARD.encode(cipher)
}
