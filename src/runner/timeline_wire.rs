//! Reading a mock's transcript (JSON lines: every byte both ways, every connection and life
//! event, with timestamps) and reconstructing what crossed the wire: the client's requests,
//! framed as qemu-ga's parser frames them, and the agent's reply lines.
//!
//! The record format is the mock's: `{"t_us": N, "conn": C, "dir": "in"|"out", "text": ...}`
//! or `..."b64": ...` for bytes, `{"t_us": N, "conn"?: C, "event": E, "detail"?: D}` for
//! events. Unknown members and unknown record shapes are kept as events, never rejected:
//! the judge must survive any transcript.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead};
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

pub(crate) use crate::transcript::{excerpt, show_bytes};
use crate::transcript::{read_line_bounded, LineRead};

/// The largest request or reply kept whole for judging; longer ones keep their length and
/// an excerpt, so a hostile agent's endless reply cannot blow up the runner's memory.
const MAX_KEPT_BYTES: usize = 4 << 20;
/// The longest transcript line the runner reads; a longer one is skipped (and counted).
const MAX_RECORD_LINE: usize = 256 << 20;
/// Records summarised for excerpts; later ones are still analysed but not quotable.
const MAX_SUMMARIES: usize = 50_000;
/// Raw bytes of an item or reply kept for the report's timeline (the rest is counted).
pub const PREVIEW_BYTES: usize = 512;
/// Writes kept for the report's timeline; later ones are counted, not kept.
const MAX_WRITES: usize = 50_000;

/// Which way bytes went, seen from the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the agent.
    In,
    /// From the agent to the client.
    Out,
}

/// One transcript line, summarised for excerpts.
#[derive(Clone, Debug)]
pub struct RecordSummary {
    /// 1-based line number in the transcript file.
    pub line: usize,
    pub t_us: u64,
    pub conn: Option<u64>,
    /// `> bytes` (in), `< bytes` (out) or `* event detail`.
    pub text: String,
}

/// A life or connection event.
#[derive(Clone, Debug)]
pub struct Event {
    pub line: usize,
    pub t_us: u64,
    pub conn: Option<u64>,
    pub name: String,
    pub detail: Option<String>,
}

/// One item of the client's input, as qemu-ga's lexer and streamer would delimit it.
#[derive(Clone, Debug)]
pub struct Item {
    pub conn: u64,
    /// Transcript lines of the first and last byte of the item.
    pub lines: (usize, usize),
    /// When the item was complete.
    pub t_us: u64,
    pub kind: ItemKind,
    /// Offsets of its first byte and one past its last in its connection's input stream.
    pub span: (u64, u64),
    /// Its first [`PREVIEW_BYTES`] bytes, as they came.
    pub raw: Vec<u8>,
}

/// What an input item was.
#[derive(Clone, Debug)]
pub enum ItemKind {
    /// A JSON object (a request, well formed or not).
    Object(serde_json::Map<String, Value>),
    /// Another complete JSON value (qemu-ga answers "QMP input must be a JSON object").
    NotObject(String),
    /// A byte that resets qemu-ga's parser (0xFF, 0xFE, a control character).
    Flush(u8),
    /// Bytes that are not JSON, or a value too large to keep.
    Garbage(String),
}

impl Item {
    /// The `execute` member, when the item is an object with a string one.
    pub fn execute(&self) -> Option<&str> {
        match &self.kind {
            ItemKind::Object(map) => map.get("execute").and_then(Value::as_str),
            _ => None,
        }
    }

    /// The top-level `id` member, when there is one.
    pub fn id(&self) -> Option<&Value> {
        match &self.kind {
            ItemKind::Object(map) => map.get("id"),
            _ => None,
        }
    }

    /// The `arguments` member, when there is one.
    pub fn arguments(&self) -> Option<&Value> {
        match &self.kind {
            ItemKind::Object(map) => map.get("arguments"),
            _ => None,
        }
    }

    /// True for guest-sync and guest-sync-delimited.
    pub fn is_sync(&self) -> bool {
        matches!(self.execute(), Some("guest-sync" | "guest-sync-delimited"))
    }

    /// True for a request that is not a sync (a command the client wants answered).
    pub fn is_command(&self) -> bool {
        self.execute().is_some() && !self.is_sync()
    }

    /// The `arguments.id` of a sync.
    pub fn sync_id(&self) -> Option<&Value> {
        if self.is_sync() {
            self.arguments().and_then(|a| a.get("id"))
        } else {
            None
        }
    }

    /// A short display form.
    pub fn describe(&self) -> String {
        match &self.kind {
            ItemKind::Object(map) => excerpt(&Value::Object(map.clone()).to_string()),
            ItemKind::NotObject(text) | ItemKind::Garbage(text) => text.clone(),
            ItemKind::Flush(byte) => format!("0x{byte:02X} (parser flush)"),
        }
    }
}

/// One line the agent wrote (up to and including `\n`, or the unterminated rest).
#[derive(Clone, Debug)]
pub struct Reply {
    pub conn: u64,
    pub lines: (usize, usize),
    /// When the line was complete.
    pub t_us: u64,
    /// The line started with 0xFF (a guest-sync-delimited reply, or noise).
    pub ff_prefix: bool,
    /// Bytes in the line, newline excluded.
    pub len: usize,
    /// The parsed line, when it is JSON and small enough to keep.
    pub value: Option<Value>,
    pub text: String,
    /// False for trailing bytes with no newline.
    pub complete: bool,
    /// Offsets of its first byte and one past its last (newline included) in its
    /// connection's output stream.
    pub span: (u64, u64),
    /// Its first [`PREVIEW_BYTES`] bytes, as they went out.
    pub raw: Vec<u8>,
}

impl Reply {
    /// The top-level `id` member, when the line is an object with one.
    pub fn id(&self) -> Option<&Value> {
        self.value.as_ref().and_then(|v| v.get("id"))
    }
}

/// What the transcript shows.
#[derive(Debug, Default)]
pub struct Wire {
    pub records: Vec<RecordSummary>,
    pub events: Vec<Event>,
    /// The client's input items, in transcript order.
    pub items: Vec<Item>,
    /// The agent's reply lines, in transcript order.
    pub replies: Vec<Reply>,
    /// Connection ids in order of first appearance.
    pub connections: Vec<u64>,
    /// Transcript lines that could not be read (malformed, or too long).
    pub unreadable_lines: usize,
    /// Total bytes each way.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Every write each way (the first [`MAX_WRITES`]), for showing which writes carried
    /// a request or a reply.
    pub writes: Vec<WriteRecord>,
    /// Writes beyond [`MAX_WRITES`], counted only.
    pub writes_dropped: usize,
}

/// One write in the transcript: a record with bytes.
#[derive(Clone, Copy, Debug)]
pub struct WriteRecord {
    pub line: usize,
    pub t_us: u64,
    pub conn: u64,
    pub dir: Direction,
    /// Offset of its first byte in its connection's stream that way.
    pub offset: u64,
    pub len: usize,
}

impl Wire {
    /// Reads a transcript file. A missing file gives an empty wire (the agent may not have
    /// started); other read errors are returned.
    pub fn read(path: &Path) -> io::Result<Wire> {
        match std::fs::File::open(path) {
            Ok(file) => Wire::parse(io::BufReader::new(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Wire::default()),
            Err(e) => Err(e),
        }
    }

    /// Parses transcript lines.
    pub fn parse(mut input: impl BufRead) -> io::Result<Wire> {
        let mut builder = Builder::default();
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            let Some(read) = read_line_bounded(&mut input, &mut line, MAX_RECORD_LINE)? else {
                break;
            };
            number += 1;
            match read {
                LineRead::TooLong => builder.wire.unreadable_lines += 1,
                LineRead::Line if line.iter().all(u8::is_ascii_whitespace) => {}
                LineRead::Line => builder.record(number, &line),
            }
        }
        Ok(builder.finish())
    }

    /// A human excerpt of transcript lines `from..=to` (1-based, inclusive).
    pub fn excerpt(&self, from: usize, to: usize) -> String {
        let mut out = String::new();
        let start = self.records.partition_point(|r| r.line < from);
        for record in self.records[start..].iter().take_while(|r| r.line <= to) {
            let conn = record
                .conn
                .map_or_else(|| "agent".to_owned(), |c| format!("conn {c}"));
            let _ = writeln!(
                out,
                "  line {:>4}  {:>9.3} ms  {:<7} {}",
                record.line,
                record.t_us as f64 / 1000.0,
                conn,
                record.text
            );
        }
        out
    }
}

/// A record as the mock writes it. Borrowed so a large write is not copied twice.
#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(default)]
    t_us: u64,
    #[serde(default)]
    conn: Option<u64>,
    #[serde(default, borrow)]
    dir: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    b64: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default)]
    detail: Option<Value>,
}

#[derive(Default)]
struct Builder {
    wire: Wire,
    inputs: HashMap<u64, InFramer>,
    outputs: HashMap<u64, OutFramer>,
}

impl Builder {
    fn record(&mut self, line: usize, bytes: &[u8]) {
        let Ok(raw) = serde_json::from_slice::<RawRecord<'_>>(bytes) else {
            self.wire.unreadable_lines += 1;
            return;
        };
        let direction = match raw.dir.as_deref() {
            Some("in") => Some(Direction::In),
            Some("out") => Some(Direction::Out),
            _ => None,
        };
        let data = match (&raw.text, &raw.b64) {
            (Some(text), _) => Some(Cow::Borrowed(text.as_bytes())),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .ok()
                .map(Cow::Owned),
            (None, None) => None,
        };
        if let Some(conn) = raw.conn {
            if !self.wire.connections.contains(&conn) {
                self.wire.connections.push(conn);
            }
        }
        match (direction, data, raw.conn) {
            (Some(dir), Some(data), Some(conn)) => {
                self.summarise(line, raw.t_us, Some(conn), dir, &data);
                let offset = match dir {
                    Direction::In => {
                        self.wire.bytes_in += data.len() as u64;
                        let framer = self.inputs.entry(conn).or_default();
                        let offset = framer.offset;
                        framer.feed(&data, conn, line, raw.t_us, &mut self.wire.items);
                        offset
                    }
                    Direction::Out => {
                        self.wire.bytes_out += data.len() as u64;
                        let framer = self.outputs.entry(conn).or_default();
                        let offset = framer.offset;
                        framer.feed(&data, conn, line, raw.t_us, &mut self.wire.replies);
                        offset
                    }
                };
                if self.wire.writes.len() < MAX_WRITES {
                    self.wire.writes.push(WriteRecord {
                        line,
                        t_us: raw.t_us,
                        conn,
                        dir,
                        offset,
                        len: data.len(),
                    });
                } else {
                    self.wire.writes_dropped += 1;
                }
            }
            _ => {
                let name = raw.event.as_deref().unwrap_or("unknown-record").to_owned();
                let detail = raw.detail.map(|d| match d {
                    Value::String(s) => s,
                    other => other.to_string(),
                });
                if self.wire.records.len() < MAX_SUMMARIES {
                    let text = match &detail {
                        Some(d) => format!("* {name}: {}", excerpt(d)),
                        None => format!("* {name}"),
                    };
                    self.wire.records.push(RecordSummary {
                        line,
                        t_us: raw.t_us,
                        conn: raw.conn,
                        text,
                    });
                }
                if name == "disconnected" {
                    if let Some(conn) = raw.conn {
                        if let Some(framer) = self.outputs.get_mut(&conn) {
                            framer.finish(conn, &mut self.wire.replies);
                        }
                    }
                }
                self.wire.events.push(Event {
                    line,
                    t_us: raw.t_us,
                    conn: raw.conn,
                    name,
                    detail,
                });
            }
        }
    }

    fn summarise(
        &mut self,
        line: usize,
        t_us: u64,
        conn: Option<u64>,
        dir: Direction,
        data: &[u8],
    ) {
        if self.wire.records.len() >= MAX_SUMMARIES {
            return;
        }
        let arrow = match dir {
            Direction::In => "client > agent ",
            Direction::Out => "agent > client ",
        };
        self.wire.records.push(RecordSummary {
            line,
            t_us,
            conn,
            text: format!("{arrow}{}", show_bytes(data)),
        });
    }

    fn finish(mut self) -> Wire {
        let mut conns: Vec<u64> = self.outputs.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            if let Some(framer) = self.outputs.get_mut(&conn) {
                framer.finish(conn, &mut self.wire.replies);
            }
        }
        self.wire.replies.sort_by_key(|r| (r.lines.1, r.lines.0));
        self.wire
    }
}

/// Where the input framer is, following qemu-ga's lexer closely enough to delimit items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum InState {
    /// Between values.
    #[default]
    Start,
    /// Inside an object or array.
    Nested {
        depth: usize,
        string: Option<u8>,
        escape: bool,
    },
    /// A string at the top level (a complete value when it closes).
    TopString { quote: u8, escape: bool },
    /// A number or keyword at the top level (complete at the next delimiter).
    Word,
    /// After a flush byte or an error: skip until a structural or control byte.
    Recovery,
}

#[derive(Default)]
struct InFramer {
    state: InState,
    bytes: Vec<u8>,
    len: usize,
    first_line: usize,
    /// Stream offset of the next byte fed.
    offset: u64,
    /// Stream offset of the current item's first byte.
    start: u64,
}

/// Bytes qemu-ga's lexer has no transition for outside strings: they are answered with a
/// `stray` error and reset the parser (QEMU qobject/json-lexer.c).
fn is_flush_byte(b: u8) -> bool {
    b == 0xFF || b == 0xFE || (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n'))
}

fn is_structural(b: u8) -> bool {
    matches!(b, b'[' | b']' | b'{' | b'}' | b',' | b':')
}

impl InFramer {
    fn push(&mut self, b: u8, line: usize) {
        if self.len == 0 {
            self.first_line = line;
            self.start = self.offset;
        }
        self.len += 1;
        if self.bytes.len() < MAX_KEPT_BYTES {
            self.bytes.push(b);
        }
    }

    fn emit(&mut self, kind: ItemKind, conn: u64, line: usize, t_us: u64, items: &mut Vec<Item>) {
        let first = if self.len == 0 { line } else { self.first_line };
        // A flush byte is emitted before it is counted: it spans the byte being fed.
        let span = if self.len == 0 {
            (self.offset, self.offset + 1)
        } else {
            (self.start, self.offset + 1)
        };
        let raw = match &kind {
            ItemKind::Flush(b) if self.len == 0 => vec![*b],
            _ => self.bytes[..self.bytes.len().min(PREVIEW_BYTES)].to_vec(),
        };
        items.push(Item {
            conn,
            lines: (first, line),
            t_us,
            kind,
            span,
            raw,
        });
        self.bytes.clear();
        self.len = 0;
    }

    fn complete(&mut self, conn: u64, line: usize, t_us: u64, items: &mut Vec<Item>) {
        let kind = if self.len > self.bytes.len() {
            ItemKind::Garbage(format!("a value of {} bytes (not kept)", self.len))
        } else {
            classify(&self.bytes)
        };
        self.emit(kind, conn, line, t_us, items);
        self.state = InState::Start;
    }

    fn feed(&mut self, data: &[u8], conn: u64, line: usize, t_us: u64, items: &mut Vec<Item>) {
        let base = self.offset;
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.offset = base + i as u64;
            match self.state {
                InState::Recovery => {
                    if is_structural(b) || !(0x20..0xFE).contains(&b) {
                        self.state = InState::Start;
                        continue;
                    }
                }
                InState::Start => {
                    if is_flush_byte(b) {
                        self.emit(ItemKind::Flush(b), conn, line, t_us, items);
                        self.state = InState::Recovery;
                    } else if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                    } else if b == b'{' || b == b'[' {
                        self.push(b, line);
                        self.state = InState::Nested {
                            depth: 1,
                            string: None,
                            escape: false,
                        };
                    } else if b == b'"' || b == b'\'' {
                        self.push(b, line);
                        self.state = InState::TopString {
                            quote: b,
                            escape: false,
                        };
                    } else if is_structural(b) {
                        self.push(b, line);
                        self.emit(ItemKind::Garbage(show_bytes(&[b])), conn, line, t_us, items);
                    } else {
                        self.push(b, line);
                        self.state = InState::Word;
                    }
                }
                InState::Word => {
                    let delimiter = is_structural(b)
                        || matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'\'')
                        || is_flush_byte(b);
                    if delimiter {
                        // The delimiter is not part of the word: the word ended before it.
                        self.offset -= 1;
                        self.complete(conn, line, t_us, items);
                        self.offset += 1;
                        continue;
                    }
                    self.push(b, line);
                }
                InState::TopString { quote, escape } => {
                    if !(0x20..0xFE).contains(&b) {
                        self.stray(b, conn, line, t_us, items);
                    } else {
                        self.push(b, line);
                        if escape {
                            self.state = InState::TopString {
                                quote,
                                escape: false,
                            };
                        } else if b == b'\\' {
                            self.state = InState::TopString {
                                quote,
                                escape: true,
                            };
                        } else if b == quote {
                            self.complete(conn, line, t_us, items);
                        }
                    }
                }
                InState::Nested {
                    depth,
                    string,
                    escape,
                } => {
                    let in_string = string.is_some();
                    let bad = if in_string {
                        !(0x20..0xFE).contains(&b)
                    } else {
                        is_flush_byte(b)
                    };
                    if bad {
                        self.stray(b, conn, line, t_us, items);
                        i += 1;
                        continue;
                    }
                    self.push(b, line);
                    self.state = match string {
                        Some(quote) if escape => InState::Nested {
                            depth,
                            string: Some(quote),
                            escape: false,
                        },
                        Some(quote) if b == b'\\' => InState::Nested {
                            depth,
                            string: Some(quote),
                            escape: true,
                        },
                        Some(quote) if b == quote => InState::Nested {
                            depth,
                            string: None,
                            escape: false,
                        },
                        Some(_) => self.state,
                        None if b == b'"' || b == b'\'' => InState::Nested {
                            depth,
                            string: Some(b),
                            escape: false,
                        },
                        None if b == b'{' || b == b'[' => InState::Nested {
                            depth: depth + 1,
                            string: None,
                            escape: false,
                        },
                        None if b == b'}' || b == b']' => {
                            if depth == 1 {
                                self.complete(conn, line, t_us, items);
                                i += 1;
                                continue;
                            }
                            InState::Nested {
                                depth: depth - 1,
                                string: None,
                                escape: false,
                            }
                        }
                        None => self.state,
                    };
                }
            }
            i += 1;
        }
        self.offset = base + data.len() as u64;
    }

    /// A byte the lexer rejects: the item so far is dropped with one error, as qemu-ga
    /// answers it, and the lexer recovers.
    fn stray(&mut self, b: u8, conn: u64, line: usize, t_us: u64, items: &mut Vec<Item>) {
        self.push(b, line);
        let kind = if (is_flush_byte(b) && self.len == 1) || b >= 0xFE {
            ItemKind::Flush(b)
        } else {
            ItemKind::Garbage(show_bytes(&self.bytes))
        };
        self.emit(kind, conn, line, t_us, items);
        self.state = InState::Recovery;
    }
}

/// What a complete value is.
fn classify(bytes: &[u8]) -> ItemKind {
    let parsed = serde_json::from_slice::<Value>(bytes)
        .ok()
        .or_else(|| serde_json::from_slice::<Value>(&single_to_double_quotes(bytes)).ok());
    match parsed {
        Some(Value::Object(map)) => ItemKind::Object(map),
        Some(other) => ItemKind::NotObject(excerpt(&other.to_string())),
        None => ItemKind::Garbage(show_bytes(bytes)),
    }
}

/// Rewrites QEMU's single-quoted strings (which its parser accepts) as JSON strings.
fn single_to_double_quotes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut string: Option<u8> = None;
    let mut escape = false;
    for &b in bytes {
        match string {
            None => {
                if b == b'\'' {
                    string = Some(b'\'');
                    out.push(b'"');
                } else {
                    if b == b'"' {
                        string = Some(b'"');
                    }
                    out.push(b);
                }
            }
            Some(quote) => {
                if escape {
                    escape = false;
                    if quote == b'\'' && b == b'\'' {
                        out.push(b'\'');
                    } else {
                        out.push(b'\\');
                        out.push(b);
                    }
                } else if b == b'\\' {
                    escape = true;
                } else if b == quote {
                    string = None;
                    out.push(b'"');
                } else if quote == b'\'' && b == b'"' {
                    out.extend_from_slice(b"\\\"");
                } else {
                    out.push(b);
                }
            }
        }
    }
    out
}

#[derive(Default)]
struct OutFramer {
    bytes: Vec<u8>,
    len: usize,
    first_line: usize,
    last_line: usize,
    last_t_us: u64,
    /// Stream offset of the next byte fed.
    offset: u64,
    /// Stream offset of the current line's first byte.
    start: u64,
}

impl OutFramer {
    fn feed(&mut self, data: &[u8], conn: u64, line: usize, t_us: u64, replies: &mut Vec<Reply>) {
        let mut rest = data;
        while !rest.is_empty() {
            if self.len == 0 {
                self.first_line = line;
                self.start = self.offset;
            }
            let (chunk, newline) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            self.len += chunk.len();
            self.offset += chunk.len() as u64 + u64::from(newline);
            let room = MAX_KEPT_BYTES.saturating_sub(self.bytes.len());
            self.bytes
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.last_line = line;
            self.last_t_us = t_us;
            rest = &rest[chunk.len()..];
            if newline {
                rest = &rest[1..];
                self.emit(conn, true, replies);
            }
        }
    }

    fn finish(&mut self, conn: u64, replies: &mut Vec<Reply>) {
        if self.len > 0 {
            self.emit(conn, false, replies);
        }
    }

    fn emit(&mut self, conn: u64, complete: bool, replies: &mut Vec<Reply>) {
        let kept_all = self.len == self.bytes.len();
        let ff_prefix = self.bytes.first() == Some(&0xFF);
        let body = {
            let start = self
                .bytes
                .iter()
                .position(|&b| b != 0xFF)
                .unwrap_or(self.bytes.len());
            let mut end = self.bytes.len();
            if end > start && self.bytes[end - 1] == b'\r' {
                end -= 1;
            }
            &self.bytes[start..end]
        };
        let value = if kept_all {
            serde_json::from_slice::<Value>(body).ok()
        } else {
            None
        };
        let mut text = show_bytes(&self.bytes);
        if !kept_all {
            text = format!("{text} ({} bytes in all)", self.len);
        }
        let mut raw = self.bytes[..self.bytes.len().min(PREVIEW_BYTES)].to_vec();
        if complete && raw.len() < PREVIEW_BYTES && self.len == self.bytes.len() {
            raw.push(b'\n');
        }
        replies.push(Reply {
            conn,
            lines: (self.first_line, self.last_line),
            t_us: self.last_t_us,
            ff_prefix,
            len: self.len,
            value,
            text,
            complete,
            span: (self.start, self.offset),
            raw,
        });
        self.bytes.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(t_us: u64, conn: u64, dir: &str, data: &[u8]) -> String {
        let value = match std::str::from_utf8(data) {
            Ok(text) if !text.bytes().any(|b| b < 0x20 && b != b'\n') => {
                json!({"t_us": t_us, "conn": conn, "dir": dir, "text": text})
            }
            _ => json!({"t_us": t_us, "conn": conn, "dir": dir,
                "b64": base64::engine::general_purpose::STANDARD.encode(data)}),
        };
        value.to_string()
    }

    fn wire(lines: &[String]) -> Wire {
        Wire::parse(lines.join("\n").as_bytes()).expect("parses")
    }

    #[test]
    fn items_are_framed_by_brace_balance_not_by_lines() {
        let w = wire(&[
            json!({"t_us": 1, "conn": 1, "event": "connected"}).to_string(),
            record(10, 1, "in", b"\xff{\"execute\":\"guest-sync-delimited\","),
            record(
                20,
                1,
                "in",
                b"\"arguments\":{\"id\":12345678901}}{'execute':'guest-ping'}",
            ),
            record(30, 1, "in", b" 42 xyz\n"),
        ]);
        let kinds: Vec<String> = w.items.iter().map(Item::describe).collect();
        assert_eq!(w.items.len(), 5, "{kinds:?}");
        assert!(matches!(w.items[0].kind, ItemKind::Flush(0xFF)));
        assert_eq!(w.items[1].execute(), Some("guest-sync-delimited"));
        assert_eq!(w.items[1].sync_id(), Some(&json!(12345678901_u64)));
        assert_eq!(w.items[1].lines, (2, 3));
        assert_eq!(w.items[2].execute(), Some("guest-ping"));
        assert!(matches!(w.items[3].kind, ItemKind::NotObject(_)));
        assert!(matches!(w.items[4].kind, ItemKind::Garbage(_)));
    }

    #[test]
    fn a_flush_inside_a_request_drops_it() {
        let w = wire(&[record(
            1,
            1,
            "in",
            b"{\"execute\":\xff{\"execute\":\"guest-ping\"}",
        )]);
        assert_eq!(w.items.len(), 2);
        assert!(matches!(w.items[0].kind, ItemKind::Flush(0xFF)));
        assert_eq!(w.items[1].execute(), Some("guest-ping"));
    }

    #[test]
    fn replies_are_lines_with_the_ff_prefix_noted() {
        let w = wire(&[
            record(5, 1, "out", b"\xff{\"return\": 7}\n{\"ret"),
            record(6, 1, "out", b"urn\": {}}\r\n{\"half"),
        ]);
        assert_eq!(w.replies.len(), 3);
        assert!(w.replies[0].ff_prefix);
        assert_eq!(w.replies[0].value, Some(json!({"return": 7})));
        assert_eq!(w.replies[1].value, Some(json!({"return": {}})));
        assert_eq!(w.replies[1].lines, (1, 2));
        assert!(!w.replies[2].complete);
        assert_eq!(w.replies[2].value, None);
    }

    #[test]
    fn bad_lines_are_counted_not_fatal() {
        let w = wire(&[
            "not json".to_owned(),
            json!({"t_us": 3, "event": "agent-started"}).to_string(),
            json!({"t_us": 4, "conn": 1, "dir": "in", "b64": "!!!"}).to_string(),
        ]);
        assert_eq!(w.unreadable_lines, 1);
        assert_eq!(w.events.len(), 2);
        assert_eq!(w.events[0].name, "agent-started");
    }

    #[test]
    fn excerpts_quote_the_lines() {
        let w = wire(&[record(1500, 2, "in", b"{\"execute\":\"guest-ping\"}")]);
        let text = w.excerpt(1, 1);
        assert!(text.contains("line    1"), "{text}");
        assert!(text.contains("conn 2"), "{text}");
        assert!(text.contains("guest-ping"), "{text}");
    }
}

#[cfg(test)]
mod large {
    use super::*;

    #[test]
    fn a_huge_reply_is_measured_not_kept() {
        let mut line = String::from("{\"return\": \"");
        line.push_str(&"x".repeat(20 << 20));
        line.push_str("\"}\n");
        let record = serde_json::json!({"t_us": 1, "conn": 1, "dir": "out", "text": line});
        let w = Wire::parse(record.to_string().as_bytes()).expect("parses");
        assert_eq!(w.replies.len(), 1);
        let reply = &w.replies[0];
        assert_eq!(reply.len, line.len() - 1);
        assert!(reply.value.is_none());
        assert!(reply.text.len() < 400, "{}", reply.text.len());
        assert!(w.records[0].text.len() < 400);
    }
}
