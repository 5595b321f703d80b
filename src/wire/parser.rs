//! QEMU's JSON parser (QEMU qobject/json-parser.c), driven one token at a time.
//!
//! QEMU queues a message's tokens and runs a recursive-descent parser once the streamer
//! says the message is complete. The recursive descent reads tokens strictly in order and
//! reports only its first error, so the same result can be computed as the tokens arrive:
//! an explicit stack replaces the recursion, the first error is latched, and later tokens
//! are ignored. Nothing is queued, and a failed message frees its partial value at once.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;

use super::lexer::Token;
use super::utf8::{self, is_valid_code_point};
use super::value::{Object, Value};

/// QEMU formats parser messages into a 1024-byte buffer, so longer ones are cut.
const MESSAGE_BUFFER: usize = 1024;

/// Every parser error's desc starts so (`parse_error` in json-parser.c).
const PREFIX: &str = "JSON parse error, ";

/// Objects with more members than this get a hash index for the duplicate-key check.
const INDEX_FROM: usize = 16;

#[derive(Debug)]
pub(crate) struct Parser {
    stack: Vec<Frame>,
    result: Option<Value>,
    /// The first error, as the full desc text.
    error: Option<String>,
    hasher: RandomState,
}

impl Default for Parser {
    fn default() -> Self {
        Self {
            stack: Vec::new(),
            result: None,
            error: None,
            hasher: RandomState::new(),
        }
    }
}

#[derive(Debug)]
enum Frame {
    Array {
        items: Vec<Value>,
        expect: ArrayNext,
    },
    Object {
        object: Object,
        key: Option<String>,
        expect: ObjectNext,
        /// Hashes of the keys once the object is large (see `INDEX_FROM`).
        index: Option<HashSet<u64>>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrayNext {
    /// Right after `[`: a value or `]`.
    FirstOrEnd,
    /// After a value: `,` or `]`.
    Separator,
    /// After `,`: a value.
    Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ObjectNext {
    /// Right after `{`: a key or `}`.
    FirstOrEnd,
    /// After `,`: a key.
    Key,
    Colon,
    Value,
    /// After a member: `,` or `}`.
    Separator,
}

impl Parser {
    /// Takes the next token of the current message. Error and oversized tokens never get
    /// here: the streamer handles them.
    pub(crate) fn push(&mut self, token: Token, text: &[u8]) {
        if self.error.is_some() || self.result.is_some() {
            return;
        }
        let wants_value = match self.stack.last_mut() {
            None => true,
            Some(Frame::Array { expect, .. }) => match *expect {
                ArrayNext::FirstOrEnd if token == Token::RSquare => return self.close(),
                ArrayNext::FirstOrEnd | ArrayNext::Value => true,
                ArrayNext::Separator => {
                    match token {
                        Token::Comma => *expect = ArrayNext::Value,
                        Token::RSquare => self.close(),
                        _ => self.fail("expected separator in list"),
                    }
                    false
                }
            },
            Some(Frame::Object { expect, .. }) => match *expect {
                ObjectNext::FirstOrEnd if token == Token::RCurly => return self.close(),
                ObjectNext::FirstOrEnd | ObjectNext::Key | ObjectNext::Value => true,
                ObjectNext::Colon => {
                    if token == Token::Colon {
                        *expect = ObjectNext::Value;
                    } else {
                        self.fail("missing : in object pair");
                    }
                    false
                }
                ObjectNext::Separator => {
                    match token {
                        Token::Comma => *expect = ObjectNext::Key,
                        Token::RCurly => self.close(),
                        _ => self.fail("expected separator in dict"),
                    }
                    false
                }
            },
        };
        if wants_value {
            self.value(token, text);
        }
    }

    /// Ends the message: its value, or the first error as the full desc text.
    pub(crate) fn finish(&mut self) -> Result<Value, String> {
        let outcome = match (self.error.take(), self.result.take()) {
            (Some(desc), _) => Err(desc),
            (None, Some(value)) => Ok(value),
            // Unreachable through the streamer, which only ends a message on a token that
            // completes it or on one the parser rejects; kept as QEMU's own wording.
            (None, None) => Err(format!("{PREFIX}premature EOI")),
        };
        self.stack.clear();
        outcome
    }

    pub(crate) fn reset(&mut self) {
        self.stack.clear();
        self.result = None;
        self.error = None;
    }

    /// A token where a value must start (QEMU's `parse_value`).
    fn value(&mut self, token: Token, text: &[u8]) {
        match token {
            Token::LCurly => self.stack.push(Frame::Object {
                object: Object::new(),
                key: None,
                expect: ObjectNext::FirstOrEnd,
                index: None,
            }),
            Token::LSquare => self.stack.push(Frame::Array {
                items: Vec::new(),
                expect: ArrayNext::FirstOrEnd,
            }),
            Token::String => match decode_string(text) {
                Ok(s) => self.complete(Value::String(s)),
                Err(message) => self.fail_with(message),
            },
            Token::Integer => self.complete(integer(text)),
            Token::Float => self.complete(Value::Float(double(text))),
            Token::Keyword => match text {
                b"true" => self.complete(Value::Bool(true)),
                b"false" => self.complete(Value::Bool(false)),
                b"null" => self.complete(Value::Null),
                _ => {
                    let mut message = b"invalid keyword '".to_vec();
                    // Only the part that fits QEMU's message buffer matters.
                    message.extend_from_slice(&text[..text.len().min(MESSAGE_BUFFER)]);
                    message.push(b'\'');
                    self.fail_with(message);
                }
            },
            _ => self.fail("expecting value"),
        }
    }

    /// A value is complete: hand it to the enclosing container, or make it the result.
    fn complete(&mut self, value: Value) {
        let Some(frame) = self.stack.last_mut() else {
            self.result = Some(value);
            return;
        };
        match frame {
            Frame::Array { items, expect } => {
                items.push(value);
                *expect = ArrayNext::Separator;
            }
            Frame::Object {
                object,
                key,
                expect,
                index,
            } => match *expect {
                ObjectNext::FirstOrEnd | ObjectNext::Key => match value {
                    Value::String(s) => {
                        *key = Some(s);
                        *expect = ObjectNext::Colon;
                    }
                    _ => self.fail("key is not a string in object"),
                },
                _ => {
                    let name = key.take().unwrap_or_default();
                    if is_duplicate(object, index, &self.hasher, &name) {
                        self.fail("duplicate key");
                    } else {
                        object.push_new(name, value);
                        *expect = ObjectNext::Separator;
                    }
                }
            },
        }
    }

    fn close(&mut self) {
        let value = match self.stack.pop() {
            Some(Frame::Array { items, .. }) => Value::Array(items),
            Some(Frame::Object { object, .. }) => Value::Object(object),
            None => return,
        };
        self.complete(value);
    }

    /// Latches the first error (a fixed text) and frees the partial value.
    fn fail(&mut self, message: &str) {
        let mut desc = String::with_capacity(PREFIX.len() + message.len());
        desc.push_str(PREFIX);
        desc.push_str(message);
        self.error = Some(desc);
        self.stack.clear();
    }

    /// Latches the first error, a text built from input bytes: cut to QEMU's buffer and
    /// quoted as the writer will print it.
    fn fail_with(&mut self, mut message: Vec<u8>) {
        message.truncate(MESSAGE_BUFFER - 1);
        self.error = Some(utf8::c_string_lossy_between(PREFIX, &message, ""));
        self.stack.clear();
    }
}

/// QEMU's `qdict_haskey` during parsing; large objects use an index of key hashes so a
/// message of half a million members does not take quadratic time.
fn is_duplicate(
    object: &Object,
    index: &mut Option<HashSet<u64>>,
    hasher: &RandomState,
    name: &str,
) -> bool {
    if object.len() < INDEX_FROM {
        return object.contains_key(name);
    }
    let index = index.get_or_insert_with(|| object.keys().map(|k| hasher.hash_one(k)).collect());
    // A hash already seen is confirmed by comparing keys, so a collision is never an error.
    !index.insert(hasher.hash_one(name)) && object.contains_key(name)
}

/// QEMU's `parse_string`: the token, quotes included, to its text or an error message.
fn decode_string(token: &[u8]) -> Result<String, Vec<u8>> {
    // QEMU walks a NUL-terminated copy of the token; reading past it yields NUL here too.
    let at = |i: usize| token.get(i).copied().unwrap_or(0);
    let quote = at(0);
    // The text is never longer than the token without its quotes.
    let mut out = String::with_capacity(token.len().saturating_sub(2));
    let mut i = 1;
    loop {
        let byte = at(i);
        if byte == quote || byte == 0 {
            return Ok(out);
        }
        if byte == b'\\' {
            let begin = i;
            let escaped = at(i + 1);
            i += 2;
            let c = match escaped {
                b'"' => '"',
                b'\'' => '\'',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let mut cp = hex4(token, i);
                    i += 4;
                    if (0xD800..=0xDBFF).contains(&cp) && at(i) == b'\\' && at(i + 1) == b'u' {
                        cp = 0x1_0000 + ((cp & 0x3FF) << 10);
                        let trailing = hex4(token, i + 2);
                        if (0xDC00..=0xDFFF).contains(&trailing) {
                            cp |= trailing & 0x3FF;
                            i += 6;
                        } else {
                            cp = -1;
                        }
                    }
                    match u32::try_from(cp)
                        .ok()
                        .filter(|&c| is_valid_code_point(c))
                        .and_then(char::from_u32)
                    {
                        Some(c) => c,
                        None => {
                            // "%.*s" of the escape text as far as the parser got.
                            let end = i.min(token.len());
                            let mut message = token[begin..end].to_vec();
                            message.extend_from_slice(b" is not a valid Unicode character");
                            return Err(message);
                        }
                    }
                }
                _ => return Err(b"invalid escape sequence in string".to_vec()),
            };
            out.push(c);
        } else if byte < 0x80 {
            let rest = &token[i..];
            let run = rest
                .iter()
                .position(|&b| b >= 0x80 || b == quote || b == b'\\' || b == 0)
                .unwrap_or(rest.len());
            out.push_str(std::str::from_utf8(&rest[..run]).unwrap_or_default());
            i += run;
        } else {
            let (cp, used) = utf8::decode(&token[i..]);
            match cp.and_then(char::from_u32) {
                Some(c) => out.push(c),
                None => return Err(b"invalid UTF-8 sequence in string".to_vec()),
            }
            i += used;
        }
    }
}

/// QEMU's `cvt4hex`: four hex digits at `at`, or -1.
fn hex4(token: &[u8], at: usize) -> i32 {
    let mut cp = 0i32;
    for i in 0..4 {
        match token.get(at + i).and_then(|&b| char::from(b).to_digit(16)) {
            Some(d) => cp = (cp << 4) | d as i32,
            None => return -1,
        }
    }
    cp
}

/// An integer token: int64 if it fits, else uint64 if it is not negative and fits, else a
/// double (QEMU's `parse_literal`).
fn integer(text: &[u8]) -> Value {
    let s = std::str::from_utf8(text).unwrap_or_default();
    if let Ok(i) = s.parse::<i64>() {
        return Value::Int(i);
    }
    if !s.starts_with('-') {
        if let Ok(u) = s.parse::<u64>() {
            return Value::UInt(u);
        }
    }
    Value::Float(double(text))
}

/// `strtod` on a number token. Rust's conversion is correctly rounded like glibc's, and
/// overflows to infinity and underflows to zero the same way.
fn double(text: &[u8]) -> f64 {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::plain(br#""abc""#, Ok("abc"))]
    #[case::single_quoted(br#"'a"b'"#, Ok("a\"b"))]
    #[case::escapes(br#""\"\'\\\/\b\f\n\r\t""#, Ok("\"'\\/\u{8}\u{c}\n\r\t"))]
    #[case::u_escape(br#""guest-\u0070ing""#, Ok("guest-ping"))]
    #[case::u_nul(br#""a\u0000b""#, Ok("a\0b"))]
    #[case::modified_nul(b"\"a\xC0\x80b\"", Ok("a\0b"))]
    #[case::pair(br#""\uD83D\uDE00""#, Ok("\u{1F600}"))]
    #[case::raw_utf8(
        b"\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"",
        Ok("\u{E9}\u{20AC}\u{1F600}")
    )]
    #[case::bad_escape(br#""a\xb""#, Err("invalid escape sequence in string"))]
    #[case::short_u(br#""\u12""#, Err("\\u12\" is not a valid Unicode character"))]
    #[case::very_short_u(br#""\u1""#, Err("\\u1\" is not a valid Unicode character"))]
    #[case::bad_hex(br#""\uZZZZ""#, Err("\\uZZZZ is not a valid Unicode character"))]
    #[case::lone_high(br#""\ud800""#, Err("\\ud800 is not a valid Unicode character"))]
    #[case::lone_low(br#""\udc00""#, Err("\\udc00 is not a valid Unicode character"))]
    #[case::unpaired(br#""\ud800\u0041""#, Err("\\ud800 is not a valid Unicode character"))]
    #[case::noncharacter(br#""\uFFFF""#, Err("\\uFFFF is not a valid Unicode character"))]
    #[case::noncharacter_pair(
        br#""\uDBFF\uDFFF""#,
        Err("\\uDBFF\\uDFFF is not a valid Unicode character")
    )]
    #[case::bad_utf8(b"\"\xC3(\"", Err("invalid UTF-8 sequence in string"))]
    #[case::overlong(b"\"\xC0\xAF\"", Err("invalid UTF-8 sequence in string"))]
    #[case::surrogate_utf8(b"\"\xED\xA0\x80\"", Err("invalid UTF-8 sequence in string"))]
    #[case::lone_continuation(b"\"\x80\"", Err("invalid UTF-8 sequence in string"))]
    fn strings(#[case] token: &[u8], #[case] expected: Result<&str, &str>) {
        let got = decode_string(token).map_err(|m| utf8::c_string_lossy_between("", &m, ""));
        assert_eq!(got.as_deref(), expected.map_err(str::to_owned).as_deref());
    }

    #[rstest]
    #[case::zero("0", Value::Int(0))]
    #[case::minus_zero("-0", Value::Int(0))]
    #[case::i64_max("9223372036854775807", Value::Int(i64::MAX))]
    #[case::i64_min("-9223372036854775808", Value::Int(i64::MIN))]
    #[case::above_i64("9223372036854775808", Value::UInt(9223372036854775808))]
    #[case::u64_max("18446744073709551615", Value::UInt(u64::MAX))]
    #[case::above_u64("18446744073709551616", Value::Float(18446744073709551616.0))]
    #[case::below_i64("-9223372036854775809", Value::Float(-9223372036854775808.0))]
    #[case::huge("99999999999999999999999", Value::Float(1e23))]
    fn integers(#[case] text: &str, #[case] expected: Value) {
        assert_eq!(integer(text.as_bytes()), expected);
    }

    #[rstest]
    #[case("1.5", 1.5)]
    #[case("1e3", 1000.0)]
    #[case("1E400", f64::INFINITY)]
    #[case("-1E400", f64::NEG_INFINITY)]
    #[case("1e-400", 0.0)]
    #[case("1e+2", 100.0)]
    #[case("1e99999999999999999999999", f64::INFINITY)]
    #[case("0.1", 0.1)]
    fn doubles(#[case] text: &str, #[case] expected: f64) {
        assert_eq!(double(text.as_bytes()), expected);
    }

    #[test]
    fn minus_zero_double_keeps_its_sign() {
        assert!(double(b"-0.0").is_sign_negative());
    }
}
