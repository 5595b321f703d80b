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

#[derive(Debug, Default)]
struct Framing {
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
        let Streamer { lexer, framing } = self;
        lexer.feed(bytes, &mut |token, text| framing.token(token, text, sink));
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
    fn token(&mut self, token: Token, text: &[u8], sink: &mut impl FnMut(Parsed)) {
        match token {
            Token::LCurly => self.braces += 1,
            Token::RCurly => self.braces -= 1,
            Token::LSquare => self.brackets += 1,
            Token::RSquare => self.brackets -= 1,
            Token::Error => {
                // The desc is a C string: it ends at a NUL, and the writer prints each
                // invalid UTF-8 sequence as U+FFFD.
                let desc = utf8::c_string_lossy_between("JSON parse error, stray '", text, "'");
                return self.abandon(desc, sink);
            }
            _ => {}
        }
        // The limits are checked before the token joins the message, with the counters
        // already updated; breaking one drops the message and this token.
        if self.message_bytes + text.len() + 1 > MAX_MESSAGE_BYTES {
            return self.abandon("JSON token size limit exceeded".to_owned(), sink);
        }
        if self.message_tokens + 1 > MAX_TOKEN_COUNT {
            return self.abandon("JSON token count limit exceeded".to_owned(), sink);
        }
        if self.braces + self.brackets > MAX_NESTING {
            return self.abandon("JSON nesting depth limit exceeded".to_owned(), sink);
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
        sink(match outcome {
            Ok(value) => Parsed::Value(value),
            Err(desc) => Parsed::Error(desc),
        });
    }

    fn abandon(&mut self, desc: String, sink: &mut impl FnMut(Parsed)) {
        self.reset();
        sink(Parsed::Error(desc));
    }

    fn reset(&mut self) {
        self.braces = 0;
        self.brackets = 0;
        self.message_bytes = 0;
        self.message_tokens = 0;
        self.parser.reset();
    }
}
