//! The byte level of the agent protocol: QEMU's streaming JSON lexer, streamer and parser
//! (framing by brace balance, 0xFF recovery, limits), and a writer that produces the exact
//! bytes qemu-ga writes.

mod value;

pub use value::{Object, Value};

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

/// QEMU's JSON message parser: lexer + streamer + parser, fed bytes in any chunking.
#[derive(Debug, Default)]
pub struct Streamer {
    _todo: (),
}

impl Streamer {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `sink` once per finished value or error, in input order.
    pub fn feed(&mut self, bytes: &[u8], sink: &mut impl FnMut(Parsed)) {
        let _ = (bytes, sink);
        todo!("wire streamer")
    }
}

/// Appends `value` to `out` exactly as qemu-ga's writer would (no trailing newline).
pub fn write_json(value: &Value, out: &mut Vec<u8>) {
    let _ = (value, out);
    todo!("wire writer")
}
