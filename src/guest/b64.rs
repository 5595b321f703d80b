//! Base64 as qemu-ga does it: QEMU's `qbase64_decode` checks the characters, then glib's
//! lenient decoder runs (QEMU util/base64.c, glib gbase64.c).

use base64::Engine;

/// glib's `g_base64_encode`: standard alphabet, with padding.
pub(crate) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// QEMU's `qbase64_decode` on a C string: the input ends at the first NUL (QEMU takes
/// `strlen`), every character must be in the alphabet, `=` or a newline; glib then
/// decodes each complete group of four, treats `=` as zero bits that drop output bytes,
/// and ignores a trailing incomplete group.
pub(crate) fn decode_qemu(input: &str) -> Result<Vec<u8>, String> {
    let bytes = input.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let bytes = &bytes[..end];
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\n'))
    {
        return Err("Base64 data contains invalid characters".to_owned());
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut n = 0;
    let mut last0 = 0u8;
    let mut last1: u8;
    for &c in bytes {
        let rank = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => 0,
            _ => continue, // newline: skipped by glib
        };
        last1 = last0;
        last0 = c;
        acc = (acc << 6) | u32::from(rank);
        n += 1;
        if n == 4 {
            out.push((acc >> 16) as u8);
            if last1 != b'=' {
                out.push((acc >> 8) as u8);
            }
            if last0 != b'=' {
                out.push(acc as u8);
            }
            n = 0;
            acc = 0;
        }
    }
    Ok(out)
}

/// Strict standard base64, for profile files.
pub(crate) fn decode_strict(input: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(input).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_glib_quirks() {
        assert_eq!(encode(b"hello from host\n"), "aGVsbG8gZnJvbSBob3N0Cg==");
        assert_eq!(
            decode_qemu("aGVsbG8gZnJvbSBob3N0Cg==").unwrap(),
            b"hello from host\n"
        );
        // An incomplete last group is dropped, newlines are skipped.
        assert_eq!(decode_qemu("aGk").unwrap(), b"");
        assert_eq!(decode_qemu("aG\nkK").unwrap(), b"hi\n");
        // The C string ends at NUL.
        assert_eq!(decode_qemu("aGkK\u{0}!!").unwrap(), b"hi\n");
        assert_eq!(decode_qemu("").unwrap(), b"");
        assert_eq!(
            decode_qemu("a b").unwrap_err(),
            "Base64 data contains invalid characters"
        );
        assert_eq!(decode_strict("aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_strict("a"), None);
    }
}
