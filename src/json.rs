//! JSON text written by hand on the hot paths (a confirm's token claims,
//! the browser's state frame), where serde_json's byte-at-a-time string
//! escaping and its map machinery were a visible part of a confirm's cost
//! (docs/performance.md). Each writer is held to serde's own output by a
//! property test next to it.

/// `s` as a JSON string: copied between quotes when it holds nothing JSON
/// escapes (a quote, a backslash, a control character; serde_json escapes
/// exactly these), else written by serde_json.
pub fn string(out: &mut String, s: &str) -> serde_json::Result<()> {
    // A fold without an early exit, so that it runs over whole vectors.
    let plain = !s.bytes().fold(false, |bad, b| {
        bad | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s)?);
    }
    Ok(())
}

/// `n` in decimal, as JSON writes an integer.
pub fn unsigned(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn strings_are_written_as_serde_writes_them(s in "\\PC{0,40}|[\"\\\\\\x00-\\x1f\\x7f a\u{e9}\u{2028}]{0,20}") {
            let mut out = String::new();
            super::string(&mut out, &s).unwrap();
            prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn numbers_are_written_as_serde_writes_them(n in any::<u64>()) {
            let mut out = String::new();
            super::unsigned(&mut out, n);
            prop_assert_eq!(out, serde_json::to_string(&n).unwrap());
        }
    }
}
