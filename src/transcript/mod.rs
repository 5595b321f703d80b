//! The transcript: what happened on the wire, with the agent's own account of it.
//!
//! The mock writes it (the channel, the agent process and the fault hub add records; a
//! thread of its own writes them, so the mock's event loop never waits on the disk); the
//! runner's judge, replay, reports and tests read it. It holds two kinds of facts:
//!
//! - the bytes both ways, as they were chunked on the socket, and every connection and
//!   life event;
//! - the agent's ground truth about those bytes: which bytes formed which request (the
//!   parser completed it), and what every output is (the reply to request N, a fault's
//!   injection, a parse error, output a previous session left in the channel), joined to
//!   the bytes by their offsets in the connection's stream. Nothing here is reconstructed
//!   from order or timing: each fact is recorded where the mock knows it.
//!
//! # Format
//!
//! One JSON object per line. Every line has `t_us`, the microseconds since the mock started
//! (on the mock's clock, so a test with paused time gets virtual time). Then one of:
//!
//! - bytes: `{"t_us": 812, "conn": 1, "dir": "in", "at": 0, "text": "{\"execute\":\"guest-ping\"}"}`.
//!   `dir` is `"in"` (read from the client) or `"out"` (written to the client); one line per
//!   read or write, so the lines also show how the bytes were chunked on the socket. `at`
//!   is the offset of the first byte in everything the connection sent (`in`) or was sent
//!   (`out`), from 0. The bytes are in `text` when they are valid UTF-8 with no control
//!   characters other than tab, line feed and carriage return; otherwise they are in `b64`
//!   (standard base64 with padding), and `text` is absent.
//! - a request: every item the agent's parser completed, when the agent handles it:
//!   `{"t_us": 830, "event": "request", "request": 3, "conn": 1, "input": [{"conn": 1, "from": 0, "to": 24}], "command": "guest-ping", "value": {"execute": "guest-ping"}}`.
//!   `request` is the mock-wide request number (from 1, across connections and agent
//!   restarts; fault records use the same number). `input` lists where its bytes came from,
//!   first byte to last (whitespace before it excluded): usually one span, two or more when
//!   a previous client's leftover input was completed by a later client's bytes; conn 0 is
//!   input that was in the parser before any client (a scenario's `parser_input`). `conn` is
//!   the connection whose bytes completed it. A parsed item has `value` (and `command`, when
//!   it has a string `execute`), or `size` (its input length) instead of a value larger
//!   than 64 KiB; an item the parser rejected has `error` (the agent's desc) and, for a
//!   lexer error, `stray` (the byte that made it: 0xFF, a control character...):
//!   `{"t_us": 10, "event": "request", "request": 1, "conn": 1, "input": [{"conn": 1, "from": 0, "to": 1}], "error": "JSON parse error, stray '\ufffd'", "stray": 255}`.
//!   A request whose fault kills the agent before it reads it (`die-before-read`) goes back
//!   to the channel and is read again by the next agent process, under a new number; the
//!   agent records that the first number was never read:
//!   `{"t_us": 950, "event": "request-unread", "request": 3}`.
//! - an output: after the bytes record of each write, one record per output the write
//!   carried (a coalesced write carries several):
//!   `{"t_us": 900, "conn": 1, "event": "output", "output": 2, "at": 0, "len": 15, "origin": "reply", "request": 3, "for_conn": 1}`.
//!   `output` numbers each thing the agent wrote (mock-wide, from 1); an output written in
//!   pieces (dripped, sliced, larger than the channel's buffer) has one record per piece,
//!   all with its number. `at` and `len` place the piece in the connection's output stream,
//!   inside the bytes record just before. `origin` says what it is:
//!   - `"reply"` with `request`: the agent's reply to that request (as the faults that fired
//!     on it shaped it: see the `fault` records of that request);
//!   - `"parse-error"` with `request` and `input`: the error the agent answers for an item
//!     it could not parse, and where that item's bytes came from;
//!   - `"fault"` with `rule`, `fault` (the kind: `spurious-stale-sync`,
//!     `spurious-duplicate`, `spurious-other-command`, `spurious-unknown-id`,
//!     `spurious-event`, `duplicate`, `garbage-ff`, `raw`, `made-up-reply`: a reply a
//!     connect or start rule wrote to no request) and, when it fired on a request,
//!     `request`: output a fault rule made that answers no request;
//!   - `"preloaded"`: output that waited in the channel before the mock started (a
//!     scenario's stale output).
//!
//!   `for_conn` is the connection the output was written for (the one that completed its
//!   request, or was connected when the rule fired); absent when none was. When the output
//!   reached another connection (a reply the agent wrote after its client left goes to the
//!   next one), `"stale": true` says so.
//! - a connection event: `{"t_us": 10, "conn": 1, "event": "connected"}`; `"disconnected"`
//!   carries a `detail` (`"eof"`, `"hangup"`, an I/O error, `"vm-exit"`, `"agent-died"`...).
//! - an agent or VM life event, without `conn`: `"mock-started"` (with `detail` naming the
//!   transport), `"agent-started"`, `"agent-hung"`, `"agent-resumed"`, `"agent-stopped"`,
//!   `"agent-killed"`, `"agent-restarting"`, `"agent-failed"`, `"guest-suspended"`,
//!   `"power-event"`, `"vm-exit"`, `"shutdown"`; `detail` adds what is known.
//! - a write the agent could not finish: `{"conn": 2, "event": "write-failed", "detail": "Broken pipe (os error 32)"}`.
//! - the agent's setup, once, right after `"mock-started"`:
//!   `{"t_us": 0, "event": "agent-setup", "seed": 7, "agent": {...}}`, where `agent` is the
//!   agent side of a scenario file (profile, transport, version, lists, seed, state, and
//!   the fault rules loaded at start, as JSON rules): what a replay needs.
//! - a fault rule that fired: `{"t_us": 912, "event": "fault", "rule": 2, "on": "request",
//!   "request": 3, "command": "guest-ping", "actions": ["die-mid-reply", "restart"]}`;
//!   `on` is `request` (with the request number and the command), `connect` (with `conn`)
//!   or `start`.
//! - behind a proxy (`qga-harness proxy`), the real agent's side:
//!   `"upstream-connected"`, `"upstream-closed"`, `"upstream-failed"` (with `detail`), and
//!   `{"event": "upstream", "dir": "to-agent", "text": ...}` / `"from-agent"` for the bytes
//!   forwarded and the reply lines read back.
//! - rules changed at run time: `"rule-added"` (with `rule`, the id, and `definition`),
//!   `"rule-removed"` (`rule`), `"rules-cleared"` (`removed`: how many).

mod reader;
pub(crate) mod writer;

use serde::{Deserialize, Serialize};

pub(crate) use reader::{excerpt, read_line_bounded, visible_bytes, LineRead};
pub use reader::{
    Direction, Event, Item, ItemKind, RecordSummary, Reply, Unrecorded, Wire, WriteRecord,
    BYTES_ONLY_EVENT, PREVIEW_BYTES,
};
pub use writer::TranscriptError;

/// Bytes of one connection: `from..to` in what the client sent, counted from 0. Conn 0 is
/// input that was in the agent's parser before any client connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnSpan {
    pub conn: u64,
    pub from: u64,
    pub to: u64,
}

/// What kind of output a fault rule made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultOutput {
    /// A guest-sync reply with an id used earlier (or a made-up old one).
    SpuriousStaleSync,
    /// A copy of the previous reply the agent wrote.
    SpuriousDuplicate,
    /// The reply another command would get.
    SpuriousOtherCommand,
    /// A reply with an id the client never sent.
    SpuriousUnknownId,
    /// An object shaped like a QMP event.
    SpuriousEvent,
    /// A second copy of this request's reply (`duplicate`).
    Duplicate,
    /// A stray 0xFF byte (`garbage=ff`).
    GarbageFf,
    /// Bytes the rule gave (`raw`, before or after the reply).
    Raw,
    /// A reply a connect or start rule made up (`return`, `error`, `raw`...), answering
    /// no request.
    MadeUpReply,
}

impl FaultOutput {
    /// The kind as the transcript writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultOutput::SpuriousStaleSync => "spurious-stale-sync",
            FaultOutput::SpuriousDuplicate => "spurious-duplicate",
            FaultOutput::SpuriousOtherCommand => "spurious-other-command",
            FaultOutput::SpuriousUnknownId => "spurious-unknown-id",
            FaultOutput::SpuriousEvent => "spurious-event",
            FaultOutput::Duplicate => "duplicate",
            FaultOutput::GarbageFf => "garbage-ff",
            FaultOutput::Raw => "raw",
            FaultOutput::MadeUpReply => "made-up-reply",
        }
    }
}

/// What an output is, as the agent knows it when it writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "origin", rename_all = "kebab-case")]
pub enum Origin {
    /// The agent's reply to request `request` (shaped by the faults that fired on it).
    Reply { request: u64 },
    /// The agent's error for an item it could not parse, whose bytes are `input`.
    ParseError { request: u64, input: Vec<ConnSpan> },
    /// Output a fault rule made, answering no request.
    Fault {
        rule: u64,
        fault: FaultOutput,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// Output that waited in the channel before the mock started.
    Preloaded,
}

impl Origin {
    /// The request this output is the agent's answer to (a reply or a parse error).
    pub fn answers(&self) -> Option<u64> {
        match self {
            Origin::Reply { request } | Origin::ParseError { request, .. } => Some(*request),
            Origin::Fault { .. } | Origin::Preloaded => None,
        }
    }

    /// A short description for findings: "the reply to request 3".
    pub fn describe(&self) -> String {
        match self {
            Origin::Reply { request } => format!("the agent's reply to request {request}"),
            Origin::ParseError { request, .. } => {
                format!("the agent's parse error for request {request}")
            }
            Origin::Fault {
                rule,
                fault,
                request,
            } => match request {
                Some(r) => format!(
                    "{} output of fault rule {rule} (fired on request {r})",
                    fault.as_str()
                ),
                None => format!("{} output of fault rule {rule}", fault.as_str()),
            },
            Origin::Preloaded => "output left in the channel before the mock started".into(),
        }
    }
}

/// One request record, as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub request: u64,
    pub conn: u64,
    pub input: Vec<ConnSpan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stray: Option<u8>,
}

/// One output record (one piece of one output), as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub conn: u64,
    pub output: u64,
    pub at: u64,
    pub len: u64,
    #[serde(flatten)]
    pub origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_conn: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn origins_are_flat_tagged_objects() {
        let record = OutputRecord {
            conn: 2,
            output: 5,
            at: 10,
            len: 15,
            origin: Origin::Reply { request: 3 },
            for_conn: Some(1),
            stale: true,
        };
        let value = serde_json::to_value(&record).expect("serialises");
        assert_eq!(
            value,
            json!({"conn": 2, "output": 5, "at": 10, "len": 15, "origin": "reply",
                "request": 3, "for_conn": 1, "stale": true})
        );
        let back: OutputRecord = serde_json::from_value(value).expect("reads back");
        assert_eq!(back, record);
        let fault = Origin::Fault {
            rule: 1,
            fault: FaultOutput::SpuriousStaleSync,
            request: None,
        };
        assert_eq!(
            serde_json::to_value(&fault).expect("serialises"),
            json!({"origin": "fault", "rule": 1, "fault": "spurious-stale-sync"})
        );
    }
}
