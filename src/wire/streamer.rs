//! QEMU's JSON message streamer (QEMU qobject/json-streamer.c): frames the token stream
//! into messages by brace and bracket balance, applies the per-message limits, and hands
//! each message to the parser.

use super::lexer::{Lexer, Token, MAX_TOKEN_SIZE};
use super::parser::Parser;
use super::utf8;
use super::Parsed;

/// Total bytes of the tokens of one message (`MAX_TOKEN_SIZE` in the streamer too).
const MAX_MESSAGE_BYTES: usize = MAX_TOKEN_SIZE;
/// Tokens in one message.
const MAX_TOKEN_COUNT: usize = 2 << 20;
/// Open braces plus open brackets.
const MAX_NESTING: i64 = 1 << 10;

/// QEMU's JSON message parser: lexer + streamer + parser, fed bytes in any chunking.
///
/// There is one per agent process, not per connection: partial input from one client is
/// completed by the next client's bytes, as in qemu-ga.
///
/// Memory stays bounded on any input: at most one token (64 MiB + 1 bytes) is buffered, and a
/// message is held only as its partial value, which the per-message limits bound (about
/// 100 MiB at worst). A stray-token error quotes its token: invalid UTF-8 bytes become
/// U+FFFD there, so that desc can reach 3 times the token's size, as qemu-ga's own does.
#[derive(Debug, Default)]
pub struct Streamer {
    lexer: Lexer,
    framing: Framing,
}

/// Where a finished item's bytes were in everything fed to the streamer (counted from its
/// creation; a reset does not restart the count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemSpan {
    /// The position of the item's first token byte (whitespace before it excluded).
    pub start: u64,
    /// One past its last byte: the byte that completed it (or, for an error, the stray one).
    pub end: u64,
    /// For a lexer error: the byte that made it (0xFF, 0xFE, a control character, a byte
    /// that cannot continue the token).
    pub stray: Option<u8>,
}

#[derive(Debug, Default)]
struct Framing {
    /// Where the open message's first token starts.
    message_start: Option<u64>,
    braces: i64,
    brackets: i64,
    message_bytes: usize,
    message_tokens: usize,
    parser: Parser,
}

impl Streamer {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `sink` once per finished value or error, in input order.
    pub fn feed(&mut self, bytes: &[u8], sink: &mut impl FnMut(Parsed)) {
        self.feed_spans(bytes, &mut |parsed, _| sink(parsed));
    }

    /// As [`Streamer::feed`], with where each item's bytes were in the whole input.
    pub fn feed_spans(&mut self, bytes: &[u8], sink: &mut impl FnMut(Parsed, ItemSpan)) {
        let Streamer { lexer, framing } = self;
        lexer.feed(bytes, &mut |token, text, start| {
            framing.token(token, text, start, sink)
        });
    }

    /// Drops everything pending, as a freshly started agent would have nothing pending.
    pub fn reset(&mut self) {
        self.lexer.reset();
        self.framing.reset();
    }

    /// True when nothing is pending: no open message, no partial token, no string, and not
    /// skipping input after an error. The next bytes are then parsed as by a new streamer.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.lexer.is_idle() && self.framing.message_tokens == 0
    }
}

impl Framing {
    /// `json_message_process_token`.
    fn token(
        &mut self,
        token: Token,
        text: &[u8],
        start: u64,
        sink: &mut impl FnMut(Parsed, ItemSpan),
    ) {
        let message_start = *self.message_start.get_or_insert(start);
        let mut span = ItemSpan {
            start: message_start,
            end: start + text.len() as u64,
            stray: None,
        };
        match token {
            Token::LCurly => self.braces += 1,
            Token::RCurly => self.braces -= 1,
            Token::LSquare => self.brackets += 1,
            Token::RSquare => self.brackets -= 1,
            Token::Error => {
                // The desc is a C string: it ends at a NUL, and the writer prints each
                // invalid UTF-8 sequence as U+FFFD.
                let desc = utf8::c_string_lossy_between("JSON parse error, stray '", text, "'");
                span.stray = text.last().copied();
                return self.abandon(desc, span, sink);
            }
            _ => {}
        }
        // The limits are checked before the token joins the message, with the counters
        // already updated; breaking one drops the message and this token.
        if self.message_bytes + text.len() + 1 > MAX_MESSAGE_BYTES {
            return self.abandon("JSON token size limit exceeded".to_owned(), span, sink);
        }
        if self.message_tokens + 1 > MAX_TOKEN_COUNT {
            return self.abandon("JSON token count limit exceeded".to_owned(), span, sink);
        }
        if self.braces + self.brackets > MAX_NESTING {
            return self.abandon("JSON nesting depth limit exceeded".to_owned(), span, sink);
        }
        self.message_bytes += text.len();
        self.message_tokens += 1;
        self.parser.push(token, text);
        let open = self.braces > 0 || self.brackets > 0;
        if open && self.braces >= 0 && self.brackets >= 0 {
            return;
        }
        let outcome = self.parser.finish();
        self.reset();
        let parsed = match outcome {
            Ok(value) => Parsed::Value(value),
            Err(desc) => Parsed::Error(desc),
        };
        sink(parsed, span);
    }

    fn abandon(&mut self, desc: String, span: ItemSpan, sink: &mut impl FnMut(Parsed, ItemSpan)) {
        self.reset();
        sink(Parsed::Error(desc), span);
    }

    fn reset(&mut self) {
        self.message_start = None;
        self.braces = 0;
        self.brackets = 0;
        self.message_bytes = 0;
        self.message_tokens = 0;
        self.parser.reset();
    }
}
