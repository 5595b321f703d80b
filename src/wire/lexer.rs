//! QEMU's JSON lexer (QEMU qobject/json-lexer.c), as a byte-driven state machine.
//!
//! The lexer is what makes a stray 0xFF useful: any byte that cannot start or continue a
//! token ends in an error token, and the lexer then skips input in a recovery state until a
//! structural character or a control byte, so a client can always resynchronise.
//!
//! Runs of bytes that stay in one state (string content, digits, letters, whitespace,
//! skipped garbage) are handled in bulk; the result is the same as feeding them one by one,
//! including where the token size limit cuts a token.

/// A single token may not grow past this many bytes (`MAX_TOKEN_SIZE`); the byte that makes
/// it longer forces it out, and the streamer rejects it.
pub(crate) const MAX_TOKEN_SIZE: usize = 64 << 20;

/// Token buffers above this capacity are released after use, so one huge token does not
/// keep its memory for the life of the agent.
const KEEP_CAPACITY: usize = 64 << 10;

/// What the lexer hands to the streamer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    String,
    /// A byte no token can start or continue with; the text includes that byte.
    Error,
    /// A token cut at `MAX_TOKEN_SIZE + 1` bytes while still incomplete. QEMU passes the
    /// lexer's state as its type; the streamer's size check always rejects it.
    Oversized,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    /// After an error: skip until a byte that can resynchronise.
    Recovery,
    DqString,
    DqEscape,
    SqString,
    SqEscape,
    /// A leading `0` (possibly after `-`): no more digits may follow.
    Zero,
    Digits,
    Sign,
    /// After the `.`: a digit must follow.
    Mantissa,
    MantissaDigits,
    /// After `e`/`E`: a sign or a digit must follow.
    ExpE,
    ExpSign,
    ExpDigits,
    Keyword,
}

#[derive(Debug)]
pub(crate) struct Lexer {
    state: State,
    token: Vec<u8>,
    /// Bytes fed so far: the position of the next byte in the lexer's whole input.
    fed: u64,
    /// Where the pending token (or the next one) starts in the whole input: tokens are
    /// contiguous, so a token's bytes are `token_start..token_start + text.len()`.
    token_start: u64,
}

impl Default for Lexer {
    fn default() -> Self {
        Self {
            state: State::Start,
            token: Vec::new(),
            fed: 0,
            token_start: 0,
        }
    }
}

impl Lexer {
    /// True in the start state with no partial token: the next byte is lexed as by a fresh
    /// lexer. The recovery state is not idle: it silently skips what a fresh lexer would not.
    pub(crate) fn is_idle(&self) -> bool {
        self.state == State::Start
    }

    pub(crate) fn reset(&mut self) {
        self.state = State::Start;
        self.clear_token();
    }

    /// Lexes `bytes`, calling `on_token` for each token in order, with the position of its
    /// first byte in everything fed to this lexer (a reset does not restart the count).
    pub(crate) fn feed(&mut self, bytes: &[u8], on_token: &mut impl FnMut(Token, &[u8], u64)) {
        let mut at = 0;
        while let Some(&byte) = bytes.get(at) {
            let rest = &bytes[at..];
            if self.token.is_empty() {
                // A token can only begin at a byte where none is pending.
                self.token_start = self.fed + at as u64;
            }
            at += match self.state {
                State::Start => self.start(byte, rest, on_token),
                State::Recovery => {
                    let skip = run_len(rest, stays_in_recovery);
                    if skip == 0 {
                        // Resynchronised: this byte is lexed again from the start state.
                        self.state = State::Start;
                    }
                    skip
                }
                State::DqString => self.string_content(b'"', State::DqEscape, rest, on_token),
                State::SqString => self.string_content(b'\'', State::SqEscape, rest, on_token),
                State::DqEscape => self.escaped(byte, State::DqString, on_token),
                State::SqEscape => self.escaped(byte, State::SqString, on_token),
                State::Zero => match byte {
                    b'0'..=b'9' => self.fail(byte, on_token),
                    b'.' => self.grow(byte, State::Mantissa, on_token),
                    _ => self.finish(Token::Integer, on_token),
                },
                State::Digits => match byte {
                    b'0'..=b'9' => self.grow_run(rest, u8::is_ascii_digit, on_token),
                    b'e' | b'E' => self.grow(byte, State::ExpE, on_token),
                    b'.' => self.grow(byte, State::Mantissa, on_token),
                    _ => self.finish(Token::Integer, on_token),
                },
                State::Sign => match byte {
                    b'0' => self.grow(byte, State::Zero, on_token),
                    b'1'..=b'9' => self.grow(byte, State::Digits, on_token),
                    _ => self.fail(byte, on_token),
                },
                State::Mantissa => match byte {
                    b'0'..=b'9' => self.grow(byte, State::MantissaDigits, on_token),
                    _ => self.fail(byte, on_token),
                },
                State::MantissaDigits => match byte {
                    b'0'..=b'9' => self.grow_run(rest, u8::is_ascii_digit, on_token),
                    b'e' | b'E' => self.grow(byte, State::ExpE, on_token),
                    _ => self.finish(Token::Float, on_token),
                },
                State::ExpE => match byte {
                    b'+' | b'-' => self.grow(byte, State::ExpSign, on_token),
                    b'0'..=b'9' => self.grow(byte, State::ExpDigits, on_token),
                    _ => self.fail(byte, on_token),
                },
                State::ExpSign => match byte {
                    b'0'..=b'9' => self.grow(byte, State::ExpDigits, on_token),
                    _ => self.fail(byte, on_token),
                },
                State::ExpDigits => match byte {
                    b'0'..=b'9' => self.grow_run(rest, u8::is_ascii_digit, on_token),
                    _ => self.finish(Token::Float, on_token),
                },
                State::Keyword => match byte {
                    b'a'..=b'z' => self.grow_run(rest, u8::is_ascii_lowercase, on_token),
                    _ => self.finish(Token::Keyword, on_token),
                },
            };
        }
        self.fed += bytes.len() as u64;
    }

    /// The start state; returns how many bytes were consumed.
    fn start(
        &mut self,
        byte: u8,
        rest: &[u8],
        on_token: &mut impl FnMut(Token, &[u8], u64),
    ) -> usize {
        let structural = match byte {
            b'{' => Token::LCurly,
            b'}' => Token::RCurly,
            b'[' => Token::LSquare,
            b']' => Token::RSquare,
            b':' => Token::Colon,
            b',' => Token::Comma,
            b' ' | b'\t' | b'\r' | b'\n' => return run_len(rest, is_json_whitespace),
            b'"' => return self.begin(byte, State::DqString),
            b'\'' => return self.begin(byte, State::SqString),
            b'0' => return self.begin(byte, State::Zero),
            b'1'..=b'9' => return self.begin(byte, State::Digits),
            b'-' => return self.begin(byte, State::Sign),
            b'a'..=b'z' => return self.begin(byte, State::Keyword),
            _ => return self.fail(byte, on_token),
        };
        on_token(structural, std::slice::from_ref(&byte), self.token_start);
        1
    }

    fn begin(&mut self, byte: u8, state: State) -> usize {
        self.append(&[byte]);
        self.state = state;
        1
    }

    /// Inside a string: copies the run of plain content bytes, or handles the one byte that
    /// ends the run (closing quote, backslash, or a byte not allowed in strings).
    fn string_content(
        &mut self,
        quote: u8,
        escape: State,
        rest: &[u8],
        on_token: &mut impl FnMut(Token, &[u8], u64),
    ) -> usize {
        let plain = |b: &u8| (0x20..=0xFD).contains(b) && *b != quote && *b != b'\\';
        match rest.first() {
            Some(&b) if b == quote => {
                self.append_last(b);
                self.finish(Token::String, on_token);
                1
            }
            Some(&b'\\') => self.grow(b'\\', escape, on_token),
            Some(b) if plain(b) => self.grow_run(rest, plain, on_token),
            Some(&b) => self.fail(b, on_token),
            None => 0,
        }
    }

    /// After a backslash: any byte a string may hold is taken; the parser validates it.
    fn escaped(
        &mut self,
        byte: u8,
        string: State,
        on_token: &mut impl FnMut(Token, &[u8], u64),
    ) -> usize {
        if (0x20..=0xFD).contains(&byte) {
            self.grow(byte, string, on_token)
        } else {
            self.fail(byte, on_token)
        }
    }

    /// Appends one byte that keeps the token going, then applies the size limit.
    fn grow(
        &mut self,
        byte: u8,
        state: State,
        on_token: &mut impl FnMut(Token, &[u8], u64),
    ) -> usize {
        self.append(&[byte]);
        self.state = state;
        self.enforce_size(on_token);
        1
    }

    /// Appends the run of bytes matching `stays` (at least one), stopping where the token
    /// would pass the size limit, exactly where byte-by-byte lexing would force it out.
    fn grow_run(
        &mut self,
        rest: &[u8],
        stays: impl Fn(&u8) -> bool,
        on_token: &mut impl FnMut(Token, &[u8], u64),
    ) -> usize {
        let room = MAX_TOKEN_SIZE + 1 - self.token.len().min(MAX_TOKEN_SIZE);
        let take = run_len(&rest[..rest.len().min(room)], stays).max(1);
        self.append(&rest[..take.min(rest.len())]);
        self.enforce_size(on_token);
        take
    }

    fn enforce_size(&mut self, on_token: &mut impl FnMut(Token, &[u8], u64)) {
        if self.token.len() > MAX_TOKEN_SIZE {
            on_token(Token::Oversized, &self.token, self.token_start);
            self.reset();
        }
    }

    /// Emits the pending token without consuming the current byte, which is then lexed
    /// again from the start state (QEMU's lookahead terminals). Returns 0 consumed bytes,
    /// except for the closing quote, whose caller accounts for it.
    fn finish(&mut self, token: Token, on_token: &mut impl FnMut(Token, &[u8], u64)) -> usize {
        on_token(token, &self.token, self.token_start);
        self.reset();
        0
    }

    /// `byte` cannot continue the token: it joins the error token, and recovery begins.
    fn fail(&mut self, byte: u8, on_token: &mut impl FnMut(Token, &[u8], u64)) -> usize {
        self.append_last(byte);
        on_token(Token::Error, &self.token, self.token_start);
        self.clear_token();
        self.state = State::Recovery;
        1
    }

    /// Appends to the token, growing the buffer geometrically but never past the largest
    /// token (64 MiB + 1), so a maximal token costs 64 MiB and not a doubled 128 MiB.
    fn append(&mut self, bytes: &[u8]) {
        let needed = self.token.len() + bytes.len();
        if needed > self.token.capacity() {
            let target = (self.token.capacity() * 2)
                .clamp(16, MAX_TOKEN_SIZE + 1)
                .max(needed);
            self.token.reserve_exact(target - self.token.len());
        }
        self.token.extend_from_slice(bytes);
    }

    /// Appends the byte that ends the token: room for exactly one more byte is enough, so a
    /// large token whose buffer is full does not double it for a single byte.
    fn append_last(&mut self, byte: u8) {
        self.token.reserve_exact(1);
        self.token.push(byte);
    }

    fn clear_token(&mut self) {
        if self.token.capacity() > KEEP_CAPACITY {
            self.token = Vec::new();
        } else {
            self.token.clear();
        }
    }
}

fn is_json_whitespace(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// Bytes the recovery state skips: 0x20..=0xFD except the structural characters, and TAB.
/// Other control bytes, 0xFE and 0xFF end recovery (QEMU's `IN_RECOVERY` row).
fn stays_in_recovery(byte: &u8) -> bool {
    match *byte {
        b'[' | b']' | b'{' | b'}' | b':' | b',' => false,
        b'\t' => true,
        b => (0x20..=0xFD).contains(&b),
    }
}

fn run_len(bytes: &[u8], stays: impl Fn(&u8) -> bool) -> usize {
    bytes.iter().position(|b| !stays(b)).unwrap_or(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(input: &[u8]) -> Vec<(Token, Vec<u8>)> {
        let mut lexer = Lexer::default();
        let mut out = Vec::new();
        lexer.feed(input, &mut |t, text, _| out.push((t, text.to_vec())));
        out
    }

    fn tokens(input: &[u8]) -> Vec<(Token, String)> {
        lex(input)
            .into_iter()
            .map(|(t, b)| (t, String::from_utf8_lossy(&b).into_owned()))
            .collect()
    }

    #[test]
    fn structural_and_scalars() {
        use Token::*;
        let got = tokens(br#"{"a":[1,-0.5e+3,true,'x']} "#);
        let want: Vec<(Token, std::string::String)> = [
            (LCurly, "{"),
            (String, "\"a\""),
            (Colon, ":"),
            (LSquare, "["),
            (Integer, "1"),
            (Comma, ","),
            (Float, "-0.5e+3"),
            (Comma, ","),
            (Keyword, "true"),
            (Comma, ","),
            (String, "'x'"),
            (RSquare, "]"),
            (RCurly, "}"),
        ]
        .into_iter()
        .map(|(t, s)| (t, s.to_owned()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn number_needs_lookahead() {
        assert!(lex(b"42").is_empty());
        assert_eq!(tokens(b"42\n"), vec![(Token::Integer, "42".into())]);
    }

    #[test]
    fn errors_and_recovery() {
        use Token::*;
        assert_eq!(
            tokens(b"007}"),
            vec![(Error, "00".into()), (RCurly, "}".into())]
        );
        assert_eq!(tokens(b"-{"), vec![(Error, "-{".into())]);
        assert_eq!(
            tokens(b"\xff\xff"),
            vec![(Error, "\u{FFFD}".into()), (Error, "\u{FFFD}".into())]
        );
        // TAB is skipped while recovering, LF ends recovery.
        assert_eq!(
            tokens(b"%a\tb\nc "),
            vec![(Error, "%".into()), (Keyword, "c".into())]
        );
    }

    #[test]
    fn oversized_token_is_cut_after_limit_plus_one() {
        let mut input = vec![b'"'];
        input.resize(MAX_TOKEN_SIZE + 3, b'A');
        let got = lex(&input);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, Token::Oversized);
        assert_eq!(got[0].1.len(), MAX_TOKEN_SIZE + 1);
        assert_eq!(got[1], (Token::Error, b"A".to_vec()));
    }
}
