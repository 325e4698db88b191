//! Safe-mode decryption on arbitrary input: as a base64 string, and as raw
//! cipher bytes (base64-encoded here so the fuzzer reaches the AES and
//! padding checks rather than stopping at base64). Never a panic; anything
//! that opens must be re-sealable and open again to the same XML.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

#[path = "../../src/providers/wechat/crypto.rs"]
#[allow(dead_code)]
mod crypto;

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";

fuzz_target!(|data: &[u8]| {
    let crypt = crypto::MsgCrypt::new(KEY, APP_ID).expect("the sample key is valid");
    let as_text = String::from_utf8_lossy(data);
    let as_cipher = base64::engine::general_purpose::STANDARD.encode(data);
    for input in [as_text.as_ref(), as_cipher.as_str()] {
        if let Ok(xml) = crypt.decrypt(input) {
            let sealed = crypt.encrypt(&xml);
            assert_eq!(crypt.decrypt(&sealed).as_deref(), Ok(xml.as_str()));
        }
    }
});
