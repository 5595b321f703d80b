//! The byte level of the agent protocol: QEMU's streaming JSON lexer, streamer and parser
//! (framing by brace balance, 0xFF recovery, limits), and a writer that produces the exact
//! bytes qemu-ga writes.
//!
//! - [`Streamer`] takes bytes in any chunking and yields one [`Parsed`] item per reply
//!   qemu-ga would send for them: a finished top-level value, or an error desc. Framing is
//!   by `{}`/`[]` balance, never by newline; a top-level number waits for one more byte.
//!   Any byte that cannot continue a token (0xFF, 0xFE, control bytes, ...) gives one
//!   `stray` error, drops the pending message, and skips input up to a structural or
//!   control byte. Limits: 64 MiB per token and per message, 2 Mi tokens, nesting 1024.
//! - [`write_json`] prints a value exactly as qemu-ga does: `": "` and `", "`, pure ASCII
//!   with uppercase `\uXXXX` escapes, `%.17g` doubles, members in QDict order
//!   ([`Object::iter_qdict_order`]).
//! - [`Value`] and [`Object`] model QEMU's QObject: int64, uint64 and double numbers, and
//!   objects that remember insertion order, which decides the QDict order.

mod lexer;
mod parser;
mod streamer;
mod utf8;
mod value;
mod writer;

#[cfg(test)]
mod tests;

pub use streamer::{ItemSpan, Streamer};
pub use value::{Object, Value};
#[cfg(test)]
pub(crate) use writer::qdict_bucket;
pub use writer::write_json;
// The wire fuzz oracle models which object keys the writer prints as themselves.
#[cfg(feature = "fuzzing")]
pub(crate) use utf8::is_valid_code_point;

/// What the streamer produced from the input: one finished top-level value, or one error.
///
/// Each item becomes exactly one reply line in qemu-ga.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// A complete top-level JSON value.
    Value(Value),
    /// A lexer, parser or limit error: the full `desc` text, e.g.
    /// `JSON parse error, stray '\u{FFFD}'` or `JSON token size limit exceeded`.
    Error(String),
}
