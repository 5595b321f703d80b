//! The byte level of the agent protocol: QEMU's streaming JSON lexer, streamer and parser
//! (framing by brace balance, 0xFF recovery, limits), and a writer that produces the exact
//! bytes qemu-ga writes.

mod lexer;
mod parser;
mod streamer;
mod utf8;
mod value;
mod writer;

#[cfg(test)]
mod tests;

pub use streamer::Streamer;
pub use value::{Object, Value};
pub use writer::{qdict_bucket, write_json};

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
