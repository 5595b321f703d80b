//! QEMU's "modified UTF-8" rules (QEMU util/unicode.c).
//!
//! QEMU keeps strings as NUL-terminated C strings, so it encodes U+0000 as the overlong pair
//! `C0 80`, and it rejects noncharacters (U+FDD0..U+FDEF and U+xFFFE/U+xFFFF) as well as
//! surrogates. Both the parser (which rejects invalid sequences) and the writer (which prints
//! them as `\uFFFD`) decode with the same function, ported here.

/// The smallest code point each sequence length may encode; anything below is overlong.
const MIN_CODE_POINT: [u32; 5] = [0x80, 0x800, 0x1_0000, 0x20_0000, 0x400_0000];

/// Whether QEMU accepts `cp` as a character (`is_valid_codepoint`).
pub(crate) fn is_valid_code_point(cp: u32) -> bool {
    cp <= 0x10_FFFF
        && !(0xFDD0..=0xFDEF).contains(&cp)
        && (cp & 0xFFFE) != 0xFFFE
        && !(0xD800..=0xDFFF).contains(&cp)
}

/// Decodes one character at the start of `s` as `mod_utf8_codepoint` does.
///
/// Returns the code point (`None` for an invalid sequence) and how many bytes were consumed.
/// Bytes past the end of `s` read as NUL, like the terminator of a C string; a NUL (or an
/// empty slice) consumes nothing. An invalid sequence consumes its lead byte and every
/// continuation byte that was present, so one `\uFFFD` stands for all of them.
pub(crate) fn decode(s: &[u8]) -> (Option<u32>, usize) {
    let lead = match s.first() {
        None | Some(0) => return (None, 0),
        Some(&b) => b,
    };
    if lead < 0x80 {
        return (Some(u32::from(lead)), 1);
    }
    if lead >= 0xFE || lead & 0x40 == 0 {
        return (None, 1);
    }
    let len = lead.leading_ones() as usize; // 2..=6 here
    let mut cp = u32::from(lead) & (0x7F >> len);
    for i in 1..len {
        let byte = s.get(i).copied().unwrap_or(0);
        if byte & 0xC0 != 0x80 {
            return (None, i);
        }
        cp = (cp << 6) | u32::from(byte & 0x3F);
    }
    let overlong = cp < MIN_CODE_POINT[len - 2] && !(cp == 0 && len == 2);
    if !is_valid_code_point(cp) || overlong {
        return (None, len);
    }
    (Some(cp), len)
}

/// Converts bytes from a C string to the text qemu-ga's writer effectively prints for them
/// (cut at the first NUL, every valid character kept with `C0 80` as U+0000, every invalid
/// sequence replaced by U+FFFD), between a prefix and a suffix. The result is allocated
/// once at its exact size: a stray token can be 64 MiB, and a doubling buffer would cost
/// twice that.
pub(crate) fn c_string_lossy_between(prefix: &str, bytes: &[u8], suffix: &str) -> String {
    let bytes = match bytes.iter().position(|&b| b == 0) {
        Some(nul) => &bytes[..nul],
        None => bytes,
    };
    let mut size = prefix.len() + suffix.len();
    walk(bytes, |piece| {
        size += match piece {
            Piece::Ascii(run) => run.len(),
            Piece::Char(c) => c.len_utf8(),
        }
    });
    let mut out = String::with_capacity(size);
    out.push_str(prefix);
    walk(bytes, |piece| match piece {
        Piece::Ascii(run) => out.push_str(run),
        Piece::Char(c) => out.push(c),
    });
    out.push_str(suffix);
    out
}

enum Piece<'a> {
    Ascii(&'a str),
    Char(char),
}

/// Splits NUL-free bytes into ASCII runs and single decoded characters (U+FFFD for each
/// invalid sequence).
fn walk<'a>(bytes: &'a [u8], mut each: impl FnMut(Piece<'a>)) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let ascii = rest.iter().position(|&b| b >= 0x80).unwrap_or(rest.len());
        if ascii > 0 {
            // An ASCII run is valid UTF-8 as it is.
            each(Piece::Ascii(
                std::str::from_utf8(&rest[..ascii]).unwrap_or_default(),
            ));
            rest = &rest[ascii..];
            continue;
        }
        let (cp, used) = decode(rest);
        each(Piece::Char(
            cp.and_then(char::from_u32).unwrap_or('\u{FFFD}'),
        ));
        rest = &rest[used.max(1)..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ascii(b"a", Some(0x61), 1)]
    #[case::two_bytes(b"\xC3\xA9", Some(0xE9), 2)]
    #[case::three_bytes(b"\xE2\x82\xAC", Some(0x20AC), 3)]
    #[case::four_bytes(b"\xF0\x9F\x98\x80", Some(0x1F600), 4)]
    #[case::modified_nul(b"\xC0\x80", Some(0), 2)]
    #[case::overlong_slash(b"\xC0\xAF", None, 2)]
    #[case::surrogate(b"\xED\xA0\x80", None, 3)]
    #[case::noncharacter_ffff(b"\xEF\xBF\xBF", None, 3)]
    #[case::noncharacter_fdd0(b"\xEF\xB7\x90", None, 3)]
    #[case::noncharacter_10ffff(b"\xF4\x8F\xBF\xBF", None, 4)]
    #[case::above_unicode(b"\xF4\x90\x80\x80", None, 4)]
    #[case::five_bytes(b"\xF8\x88\x80\x80\x80", None, 5)]
    #[case::six_bytes(b"\xFC\x84\x80\x80\x80\x80", None, 6)]
    #[case::lone_continuation(b"\x80", None, 1)]
    #[case::fe(b"\xFE", None, 1)]
    #[case::ff(b"\xFF", None, 1)]
    #[case::truncated_at_end(b"\xE2\x82", None, 2)]
    #[case::truncated_by_ascii(b"\xC3(", None, 1)]
    #[case::nul(b"\0", None, 0)]
    #[case::empty(b"", None, 0)]
    fn decode_matches_qemu(#[case] input: &[u8], #[case] cp: Option<u32>, #[case] used: usize) {
        assert_eq!(decode(input), (cp, used));
    }

    #[rstest]
    #[case::plain(b"abc", "abc")]
    #[case::ff(b"\xFF", "\u{FFFD}")]
    #[case::cut_at_nul(b"ab\0cd", "ab")]
    #[case::nul_first(b"\0", "")]
    #[case::one_replacement_per_sequence(b"\xF0\x9F\x98(", "\u{FFFD}(")]
    #[case::each_stray_continuation(b"\x80\x80", "\u{FFFD}\u{FFFD}")]
    #[case::modified_nul_kept(b"a\xC0\x80b", "a\0b")]
    #[case::valid_kept(b"\"guest-pi\xC3\xA9", "\"guest-pi\u{E9}")]
    fn lossy_like_the_writer(#[case] input: &[u8], #[case] expected: &str) {
        assert_eq!(c_string_lossy_between("", input, ""), expected);
    }
}
