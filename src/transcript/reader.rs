//! Reading a transcript back: the bytes for excerpts, and the agent's ground truth (its
//! request and output records) as the client's requests ([`Item`]) and the agent's outputs
//! ([`Reply`]), each knowing what it is. Nothing is re-framed or paired here: the agent
//! recorded which bytes formed which request and what each output is.
//!
//! Unknown members and unknown record shapes are kept as events, never rejected: the judge
//! must survive any transcript.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead};
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::{ConnSpan, Origin, OutputRecord, RequestRecord};

mod host_framing;

/// The event a recording of bytes alone writes first (the front of a real agent, which
/// keeps no records of its own): its requests and replies are then read from the bytes
/// (see `host_framing`).
pub const BYTES_ONLY_EVENT: &str = "bytes-only-record";

/// The largest output kept whole for judging; longer ones keep their length and an
/// excerpt, so a hostile agent's endless reply cannot blow up the runner's memory.
const MAX_KEPT_BYTES: usize = 4 << 20;
/// The longest transcript line the runner reads; a longer one is skipped (and counted).
const MAX_RECORD_LINE: usize = 256 << 20;
/// Records summarised for excerpts; later ones are still analysed but not quotable.
const MAX_SUMMARIES: usize = 50_000;
/// Characters of a record or item kept for display.
const EXCERPT_CHARS: usize = 160;
/// Bytes of a request or an output kept as it came, for drawing it (the rest is counted).
pub const PREVIEW_BYTES: usize = 512;
/// Writes kept for showing which writes carried a request or an output; later ones are
/// counted, not kept.
const MAX_WRITES: usize = 50_000;
/// Bytes each way kept per connection for the previews, and in all: a flood is counted,
/// not kept.
const MAX_STREAM_KEPT: usize = 1 << 20;
const MAX_ALL_STREAMS_KEPT: usize = 16 << 20;

/// Which way bytes went, seen from the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// `client > agent bytes`, `agent > client bytes` or `* event detail`.
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

/// One request the agent's parser completed, as the agent recorded it.
#[derive(Clone, Debug)]
pub struct Item {
    /// The mock-wide request number.
    pub request: u64,
    /// The connection whose bytes completed it.
    pub conn: u64,
    /// Where its bytes came from, first to last.
    pub input: Vec<ConnSpan>,
    /// Transcript lines of its first input bytes and of its request record.
    pub lines: (usize, usize),
    /// When the agent handled it.
    pub t_us: u64,
    /// When the channel read the last of its bytes (the time of that input bytes record);
    /// the agent may handle it much later (a blocked agent reads nothing meanwhile). For
    /// input that was in the parser before any client (conn 0), the handling time.
    pub arrived_us: u64,
    pub kind: ItemKind,
    /// Its first [`PREVIEW_BYTES`] bytes as they came (empty when they were not kept).
    pub preview: Vec<u8>,
}

/// What a request was.
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

    /// True when some of its bytes came from another connection than the one that
    /// completed it (a previous client's leftover input), or from before any client.
    pub fn has_leftover_input(&self) -> bool {
        self.input.iter().any(|s| s.conn != self.conn)
    }

    /// A short display form.
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            ItemKind::Object(map) => excerpt(&Value::Object(map.clone()).to_string()),
            ItemKind::NotObject(text) | ItemKind::Garbage(text) => text.clone(),
            ItemKind::Flush(byte) => format!("0x{byte:02X} (parser flush)"),
        };
        format!("request {} {what}", self.request)
    }
}

/// One output of the agent, as the agent recorded it: all its pieces, joined.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The connection it reached (its first piece's).
    pub conn: u64,
    /// The mock-wide output number.
    pub output: u64,
    /// What it is.
    pub origin: Origin,
    /// The connection it was written for, when there was one.
    pub for_conn: Option<u64>,
    /// It reached another connection than the one it was written for.
    pub stale: bool,
    /// Where it starts in its connection's output stream.
    pub at: u64,
    /// Transcript lines of its first and last bytes.
    pub lines: (usize, usize),
    /// When its last piece was written.
    pub t_us: u64,
    /// It started with 0xFF (a guest-sync-delimited reply, or noise).
    pub ff_prefix: bool,
    /// Its length in bytes.
    pub len: usize,
    /// The parsed output (0xFF prefix and line end removed), when it is one JSON value
    /// small enough to keep.
    pub value: Option<Value>,
    /// `value` is not the one value the output stands for: the output names a member
    /// twice (parsers disagree on which one counts) or holds a number no QEMU agent
    /// writes (any value made of it is a decoder's guess).
    pub ambiguous: bool,
    pub text: String,
    /// It ended with a newline.
    pub complete: bool,
    /// Its first [`PREVIEW_BYTES`] bytes as they went out.
    pub preview: Vec<u8>,
}

impl Reply {
    /// The top-level `id` member, when the output is an object with one.
    pub fn id(&self) -> Option<&Value> {
        self.value.as_ref().and_then(|v| v.get("id"))
    }

    /// The request it answers, when it is the agent's answer to one.
    pub fn answers(&self) -> Option<u64> {
        self.origin.answers()
    }
}

/// What the transcript shows.
#[derive(Debug, Default)]
pub struct Wire {
    pub records: Vec<RecordSummary>,
    pub events: Vec<Event>,
    /// The client's requests, in the order the agent handled them.
    pub items: Vec<Item>,
    /// The agent's outputs, in the order their first bytes were written.
    pub replies: Vec<Reply>,
    /// Connection ids in order of first appearance.
    pub connections: Vec<u64>,
    /// Transcript lines that could not be read (malformed, or too long).
    pub unreadable_lines: usize,
    /// Total bytes each way.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The transcript holds the agent's request or output records (a mock's does; a
    /// recording of bytes only, such as the front of a real agent, does not).
    pub has_agent_records: bool,
    /// The items and replies were read from the bytes of a recording that has no agent
    /// records: the items are the client's requests framed by qemu-ga's parser, and the
    /// replies only the lines known by the id they carry to answer one of them.
    pub framed_from_bytes: bool,
    /// Every write each way (the first 50,000).
    pub writes: Vec<WriteRecord>,
    /// Writes beyond the first 50,000, counted only.
    pub writes_dropped: usize,
    /// Bytes on the wire that no request or output record covers: input the agent never
    /// read (it died, hung, or the case ended first), or everything when the transcript
    /// has no agent records. One per contiguous range within one write.
    pub unrecorded: Vec<Unrecorded>,
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
    pub len: u64,
}

/// Bytes that crossed the wire with no agent record saying what they were.
#[derive(Clone, Debug)]
pub struct Unrecorded {
    pub conn: u64,
    pub dir: Direction,
    /// Offsets in the connection's stream that way.
    pub span: (u64, u64),
    /// The transcript line of the write that carried them.
    pub line: usize,
    pub t_us: u64,
    /// Their first [`PREVIEW_BYTES`] bytes (empty when they were not kept).
    pub preview: Vec<u8>,
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

    /// The request with this number.
    pub fn item(&self, request: u64) -> Option<&Item> {
        let at = self.items.partition_point(|i| i.request < request);
        self.items.get(at).filter(|i| i.request == request)
    }

    /// The index of the agent's answer to request `request` (its reply or parse error).
    pub fn answer_to(&self, request: u64) -> Option<usize> {
        self.replies
            .iter()
            .position(|r| r.answers() == Some(request))
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

/// How a bounded line read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineRead {
    Line,
    TooLong,
}

/// Reads one line (without its newline) of at most `max` bytes; `None` at the end of input.
/// A longer line is consumed and reported, never stored.
pub(crate) fn read_line_bounded(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<LineRead>> {
    let mut too_long = false;
    let mut any = false;
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            break;
        }
        any = true;
        let (chunk, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (&buffer[..at], Some(at + 1)),
            None => (buffer, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(buffer.len());
        input.consume(consumed);
        if done.is_some() {
            break;
        }
    }
    Ok(match (any, too_long) {
        (false, _) => None,
        (true, true) => Some(LineRead::TooLong),
        (true, false) => Some(LineRead::Line),
    })
}

/// The members every record may have. Borrowed so a large write is not copied twice.
#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(default)]
    t_us: u64,
    #[serde(default)]
    conn: Option<u64>,
    #[serde(default, borrow)]
    dir: Option<Cow<'a, str>>,
    #[serde(default)]
    at: Option<u64>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    b64: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default)]
    detail: Option<Value>,
    #[serde(default)]
    request: Option<u64>,
}

/// The last bytes written to a connection: the output records that follow place their
/// pieces inside it.
#[derive(Default)]
struct LastWrite {
    at: u64,
    line: usize,
    /// When the write began (the mock stamps a write before it is made).
    t_us: u64,
    data: Vec<u8>,
}

/// An output being gathered from its pieces.
struct Gathering {
    reply: Reply,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Builder {
    wire: Wire,
    /// Per connection: where each input bytes record starts (offset, line, time), for the
    /// lines of a request's first bytes and the time its last bytes arrived.
    inputs: HashMap<u64, Vec<(u64, usize, u64)>>,
    last_write: HashMap<u64, LastWrite>,
    outputs: Vec<Gathering>,
    output_index: HashMap<u64, usize>,
    /// The first bytes of each stream, for previews.
    kept: HashMap<(u64, Direction), Vec<u8>>,
    kept_total: usize,
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
            if conn != 0 && !self.wire.connections.contains(&conn) {
                self.wire.connections.push(conn);
            }
        }
        match (direction, data, raw.conn) {
            (Some(dir), Some(data), Some(conn)) => {
                self.summarise(line, raw.t_us, Some(conn), dir, &data);
                let at = raw.at.unwrap_or(0);
                self.keep(line, raw.t_us, conn, dir, at, &data);
                match dir {
                    Direction::In => {
                        self.wire.bytes_in += data.len() as u64;
                        self.inputs
                            .entry(conn)
                            .or_default()
                            .push((at, line, raw.t_us));
                    }
                    Direction::Out => {
                        self.wire.bytes_out += data.len() as u64;
                        let last = self.last_write.entry(conn).or_default();
                        last.at = at;
                        last.line = line;
                        last.t_us = raw.t_us;
                        last.data.clear();
                        last.data
                            .extend_from_slice(&data[..data.len().min(MAX_KEPT_BYTES)]);
                    }
                }
            }
            _ => match raw.event.as_deref() {
                Some("request") => {
                    self.wire.has_agent_records = true;
                    self.request(line, raw.t_us, bytes);
                }
                Some("output") => {
                    self.wire.has_agent_records = true;
                    self.output(line, raw.t_us, bytes);
                }
                Some("request-unread") => self.unread(line, raw),
                _ => self.event(line, raw),
            },
        }
    }

    /// Notes a write and keeps its bytes while the stream's and the overall budgets last.
    fn keep(&mut self, line: usize, t_us: u64, conn: u64, dir: Direction, at: u64, data: &[u8]) {
        if self.wire.writes.len() < MAX_WRITES {
            self.wire.writes.push(WriteRecord {
                line,
                t_us,
                conn,
                dir,
                offset: at,
                len: data.len() as u64,
            });
        } else {
            self.wire.writes_dropped += 1;
        }
        let kept = self.kept.entry((conn, dir)).or_default();
        // Only a stream kept from its start without a gap can be indexed by offset.
        if kept.len() as u64 != at {
            return;
        }
        let room = MAX_STREAM_KEPT
            .saturating_sub(kept.len())
            .min(MAX_ALL_STREAMS_KEPT.saturating_sub(self.kept_total));
        let take = data.len().min(room);
        kept.extend_from_slice(&data[..take]);
        self.kept_total += take;
    }

    fn event(&mut self, line: usize, raw: RawRecord<'_>) {
        let name = raw.event.as_deref().unwrap_or("unknown-record").to_owned();
        let detail = raw.detail.map(|d| match d {
            Value::String(s) => s,
            other => other.to_string(),
        });
        let text = match &detail {
            Some(d) => format!("* {name}: {}", excerpt(d)),
            None => format!("* {name}"),
        };
        self.push_summary(line, raw.t_us, raw.conn, text);
        self.wire.events.push(Event {
            line,
            t_us: raw.t_us,
            conn: raw.conn,
            name,
            detail,
        });
    }

    /// The agent died before reading a request: it was never a request (its bytes are read
    /// again under another number).
    fn unread(&mut self, line: usize, raw: RawRecord<'_>) {
        let number = raw.request;
        if let Some(at) = self
            .wire
            .items
            .iter()
            .rposition(|i| Some(i.request) == number)
        {
            self.wire.items.remove(at);
        }
        self.event(line, raw);
    }

    fn push_summary(&mut self, line: usize, t_us: u64, conn: Option<u64>, text: String) {
        if self.wire.records.len() < MAX_SUMMARIES {
            self.wire.records.push(RecordSummary {
                line,
                t_us,
                conn,
                text,
            });
        }
    }

    fn request(&mut self, line: usize, t_us: u64, bytes: &[u8]) {
        let Ok(record) = serde_json::from_slice::<RequestRecord>(bytes) else {
            self.wire.unreadable_lines += 1;
            return;
        };
        let kind = match (&record.value, &record.error) {
            (Some(Value::Object(map)), _) => ItemKind::Object(map.clone()),
            (Some(other), _) => ItemKind::NotObject(excerpt(&other.to_string())),
            (None, Some(error)) => {
                let length: u64 = record.input.iter().map(|s| s.to - s.from).sum();
                match record.stray {
                    Some(b) if is_flush_byte(b) && (length == 1 || b >= 0xFE) => ItemKind::Flush(b),
                    _ => ItemKind::Garbage(excerpt(error)),
                }
            }
            (None, None) => ItemKind::Garbage(format!(
                "a value of {} bytes (not kept)",
                record.size.unwrap_or(0)
            )),
        };
        let first_line = record
            .input
            .first()
            .and_then(|span| self.input_record(span.conn, span.from))
            .map_or(line, |(line, _)| line);
        let arrived_us = record
            .input
            .last()
            .and_then(|span| self.input_record(span.conn, span.to.saturating_sub(1)))
            .map_or(t_us, |(_, t)| t.min(t_us));
        let item = Item {
            request: record.request,
            conn: record.conn,
            input: record.input,
            lines: (first_line, line),
            t_us,
            arrived_us,
            kind,
            preview: Vec::new(),
        };
        self.push_summary(
            line,
            t_us,
            Some(item.conn),
            format!("* agent read {}", item.describe()),
        );
        self.wire.items.push(item);
    }

    /// The line and time of the input bytes record holding byte `offset` of `conn`.
    fn input_record(&self, conn: u64, offset: u64) -> Option<(usize, u64)> {
        let records = self.inputs.get(&conn)?;
        let after = records.partition_point(|(at, _, _)| *at <= offset);
        records
            .get(after.checked_sub(1)?)
            .map(|(_, line, t_us)| (*line, *t_us))
    }

    fn output(&mut self, line: usize, t_us: u64, bytes: &[u8]) {
        let Ok(record) = serde_json::from_slice::<OutputRecord>(bytes) else {
            self.wire.unreadable_lines += 1;
            return;
        };
        let stale = if record.stale { "stale " } else { "" };
        self.push_summary(
            line,
            t_us,
            Some(record.conn),
            format!(
                "* agent wrote output {} ({} bytes): {stale}{}",
                record.output,
                record.len,
                record.origin.describe()
            ),
        );
        let last = self.last_write.get(&record.conn);
        // An output's time is that of the write that carried it (stamped before the write:
        // no client can have read it earlier), not of the record that names it.
        let (bytes_line, t_us, piece): (usize, u64, &[u8]) = match last {
            Some(last) if record.at >= last.at => {
                let from = usize::try_from(record.at - last.at).unwrap_or(usize::MAX);
                let to = from.saturating_add(usize::try_from(record.len).unwrap_or(usize::MAX));
                let piece = last
                    .data
                    .get(from.min(last.data.len())..to.min(last.data.len()))
                    .unwrap_or_default();
                (last.line, last.t_us.min(t_us), piece)
            }
            _ => (line, t_us, &[]),
        };
        let len = usize::try_from(record.len).unwrap_or(usize::MAX);
        match self.output_index.get(&record.output) {
            Some(&index) => {
                let gathering = &mut self.outputs[index];
                gathering.reply.lines.1 = bytes_line;
                gathering.reply.t_us = t_us;
                gathering.reply.len = gathering.reply.len.saturating_add(len);
                let room = MAX_KEPT_BYTES.saturating_sub(gathering.bytes.len());
                gathering
                    .bytes
                    .extend_from_slice(&piece[..piece.len().min(room)]);
            }
            None => {
                self.output_index.insert(record.output, self.outputs.len());
                self.outputs.push(Gathering {
                    reply: Reply {
                        conn: record.conn,
                        output: record.output,
                        origin: record.origin,
                        for_conn: record.for_conn,
                        stale: record.stale,
                        at: record.at,
                        lines: (bytes_line, bytes_line),
                        t_us,
                        ff_prefix: false,
                        len,
                        value: None,
                        ambiguous: false,
                        text: String::new(),
                        complete: false,
                        preview: Vec::new(),
                    },
                    bytes: piece.to_vec(),
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
        let arrow = match dir {
            Direction::In => "client > agent ",
            Direction::Out => "agent > client ",
        };
        self.push_summary(line, t_us, conn, format!("{arrow}{}", show_bytes(data)));
    }

    fn finish(mut self) -> Wire {
        for gathering in self.outputs {
            let Gathering { mut reply, bytes } = gathering;
            let kept_all = reply.len == bytes.len();
            reply.ff_prefix = bytes.first() == Some(&0xFF);
            reply.complete = bytes.last() == Some(&b'\n') && kept_all;
            let body = reply_body(&bytes);
            reply.value = if kept_all {
                serde_json::from_slice::<Value>(body).ok()
            } else {
                None
            };
            reply.ambiguous = reply.value.is_some() && is_ambiguous(body);
            reply.text = show_bytes(&bytes);
            reply.preview = bytes[..bytes.len().min(PREVIEW_BYTES)].to_vec();
            if !kept_all {
                reply.text = format!("{} ({} bytes in all)", reply.text, reply.len);
            }
            self.wire.replies.push(reply);
        }
        let bytes_only = self.wire.events.iter().any(|e| e.name == BYTES_ONLY_EVENT);
        if bytes_only && !self.wire.has_agent_records {
            host_framing::frame(&mut self.wire, &self.kept);
        }
        self.wire.items.sort_by_key(|i| i.request);
        for item in &mut self.wire.items {
            if let Some(first) = item.input.first() {
                item.preview = preview(&self.kept, first.conn, Direction::In, first.from, first.to);
            }
        }
        self.wire.unrecorded = unrecorded(&self.wire, &self.kept);
        self.wire
    }
}

/// Up to [`PREVIEW_BYTES`] kept bytes of `from..to` of a stream.
fn preview(
    kept: &HashMap<(u64, Direction), Vec<u8>>,
    conn: u64,
    dir: Direction,
    from: u64,
    to: u64,
) -> Vec<u8> {
    let Some(bytes) = kept.get(&(conn, dir)) else {
        return Vec::new();
    };
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    let to = usize::try_from(to)
        .unwrap_or(usize::MAX)
        .min(bytes.len())
        .min(from.saturating_add(PREVIEW_BYTES));
    bytes[from..to.max(from)].to_vec()
}

/// The byte ranges of each write that no request or output record covers.
fn unrecorded(wire: &Wire, kept: &HashMap<(u64, Direction), Vec<u8>>) -> Vec<Unrecorded> {
    let mut covered: HashMap<(u64, Direction), Vec<(u64, u64)>> = HashMap::new();
    for item in &wire.items {
        for span in &item.input {
            covered
                .entry((span.conn, Direction::In))
                .or_default()
                .push((span.from, span.to));
        }
    }
    for reply in &wire.replies {
        covered
            .entry((reply.conn, Direction::Out))
            .or_default()
            .push((reply.at, reply.at + reply.len as u64));
    }
    for spans in covered.values_mut() {
        spans.sort_unstable();
    }
    let mut out = Vec::new();
    for write in &wire.writes {
        let spans = covered
            .get(&(write.conn, write.dir))
            .map_or(&[][..], Vec::as_slice);
        let (start, end) = (write.offset, write.offset + write.len);
        let mut at = start;
        let first = spans.partition_point(|&(_, to)| to <= start);
        for &(from, to) in &spans[first..] {
            if from >= end {
                break;
            }
            if from > at {
                out.push((write, at, from));
            }
            at = at.max(to);
        }
        if at < end {
            out.push((write, at, end));
        }
    }
    out.into_iter()
        .map(|(write, from, to)| Unrecorded {
            conn: write.conn,
            dir: write.dir,
            span: (from, to),
            line: write.line,
            t_us: write.t_us,
            preview: preview(kept, write.conn, write.dir, from, to),
        })
        // Whitespace between requests is read by the parser as part of no request; on
        // its own it is not worth a block.
        .filter(|bytes| {
            let whole = bytes.preview.len() as u64 == bytes.span.1 - bytes.span.0;
            !(whole
                && wire.has_agent_records
                && bytes.dir == Direction::In
                && bytes.preview.iter().all(u8::is_ascii_whitespace))
        })
        .collect()
}

/// A byte that resets qemu-ga's parser: 0xFF, 0xFE or a control character other than
/// JSON whitespace.
fn is_flush_byte(b: u8) -> bool {
    b >= 0xFE || (b < 0x20 && !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Bytes for display, cut to an excerpt: printable ASCII as is, the rest as `\xNN` (and
/// `\n`, `\r`, `\t`, `\\`).
pub fn show_bytes(data: &[u8]) -> String {
    let mut out = String::new();
    for &b in data {
        if out.len() >= EXCERPT_CHARS {
            let _ = write!(out, "... ({} bytes)", data.len());
            return out;
        }
        push_visible(&mut out, b);
    }
    out
}

/// All of `data` for display, as [`show_bytes`] shows it, so 0xFF and control bytes are
/// visible.
pub fn visible_bytes(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len());
    for &b in data {
        push_visible(&mut out, b);
    }
    out
}

fn push_visible(out: &mut String, b: u8) {
    match b {
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        b'\\' => out.push_str("\\\\"),
        0x20..=0x7E => out.push(char::from(b)),
        _ => {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

/// The first characters of a text, marked when cut.
pub fn excerpt(text: &str) -> String {
    if text.chars().count() <= EXCERPT_CHARS {
        return text.to_owned();
    }
    let cut: String = text.chars().take(EXCERPT_CHARS).collect();
    format!("{cut}... ({} bytes)", text.len())
}

/// Whether a JSON text that parses stands for no single value: it names a member twice
/// in some object, or holds a number no QEMU agent writes.
pub(crate) fn is_ambiguous(body: &[u8]) -> bool {
    crate::client::reply::impossible_number(body).is_some()
        || serde_json::from_slice::<Repeats>(body).is_ok_and(|r| r.0)
}

/// Whether a JSON value names a member twice in any of its objects.
struct Repeats(bool);

impl<'de> Deserialize<'de> for Repeats {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RepeatsVisitor)
    }
}

struct RepeatsVisitor;

impl<'de> serde::de::Visitor<'de> for RepeatsVisitor {
    type Value = Repeats;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Repeats, A::Error> {
        let mut names = std::collections::HashSet::new();
        let mut repeats = false;
        while let Some(name) = map.next_key::<String>()? {
            repeats |= !names.insert(name);
            repeats |= map.next_value::<Repeats>()?.0;
        }
        Ok(Repeats(repeats))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Repeats, A::Error> {
        let mut repeats = false;
        while let Some(element) = seq.next_element::<Repeats>()? {
            repeats |= element.0;
        }
        Ok(Repeats(repeats))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_str<E>(self, _: &str) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_unit<E>(self) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
}

/// A reply line's JSON text: without the 0xFF that prefixes a delimited sync reply and
/// without its line end.
fn reply_body(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|&b| b != 0xFF).unwrap_or(line.len());
    let mut end = line.len();
    while end > start && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &line[start..end]
}
