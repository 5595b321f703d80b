//! A case's wire as a timeline for the reports: each request and each agent output as one
//! block (with the writes that carried it, so a drip is one block), the pairing of each
//! reply with the request it answers, connections, faults, agent deaths and restarts as
//! marks, and each step's start, answer and deadline. Payloads are cut to a preview: a
//! 22 MiB reply is one block with its length, not 22 MiB of report.

use schemars::JsonSchema;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::adapter::StepRecord;
use crate::transcript::{
    excerpt, visible_bytes, ConnSpan, Direction, Item, ItemKind, Reply, Unrecorded, Wire,
    WriteRecord,
};

/// Blocks kept per case; the rest are counted (a flood of noise stays a bounded report).
const MAX_BLOCKS: usize = 2_000;
/// Writes listed per block: the first and the last this many; the rest are counted.
const WRITES_SHOWN: usize = 8;
/// Transcript lines listed per case (summaries); the rest are counted.
const MAX_LINES: usize = 400;

/// Which side wrote a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Lane {
    /// The host client (bytes into the agent).
    Client,
    /// The agent (bytes out to the client).
    Agent,
}

/// What a block is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BlockKind {
    /// A command (a JSON object with `execute` other than a sync).
    Request,
    /// `guest-sync` or `guest-sync-delimited`.
    Sync,
    /// A byte that resets the agent's parser (0xFF, 0xFE, a control byte).
    Flush,
    /// A JSON object without a string `execute`, or another JSON value.
    Malformed,
    /// Bytes that are not JSON.
    Garbage,
    /// An agent line with `return`.
    Reply,
    /// An agent line with `error`.
    Error,
    /// Any other agent line (noise, a line cut short, bytes with no newline).
    Noise,
    /// Client bytes the agent never read (it died or hung first, or the case ended).
    Unread,
    /// Bytes with no agent record saying what they were (a transcript of bytes only, such
    /// as the one kept in front of a real agent).
    Bytes,
}

/// Where the pairing of replies with requests comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PairingSource {
    /// Recorded by the agent as it answered.
    GroundTruth,
    /// The transcript has no agent records (a real agent: only the bytes were seen); a
    /// reply is paired only where it carries the id of exactly one request (qemu-ga's id
    /// echo, a sync's returned id), never from order or timing.
    ById,
    /// The transcript has no agent records and no reply carried a request's id: nothing
    /// is paired (never guessed).
    NotMeasured,
}

/// One write that carried part of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BlockWrite {
    /// µs on the transcript's clock.
    pub t_us: u64,
    /// Bytes of this write (the whole write, which may carry other blocks too).
    pub len: u64,
    /// Its transcript line (1-based).
    pub line: usize,
}

/// A request or an agent output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Block {
    pub lane: Lane,
    pub kind: BlockKind,
    pub conn: u64,
    /// The command, the error class, or a short description.
    pub label: String,
    /// When its first byte was written (µs, transcript clock).
    pub start_us: u64,
    /// When it was complete.
    pub end_us: u64,
    /// Its first and last transcript line.
    pub lines: (usize, usize),
    /// Its length in bytes.
    pub len: u64,
    /// Its first bytes: printable ASCII as is, everything else as `\xNN` (`\n`, `\r`, `\t`
    /// and `\\` escaped), so 0xFF and control bytes are visible.
    pub bytes: String,
    /// True when `bytes` is only the start of it.
    pub bytes_cut: bool,
    /// The writes that carried it: the first and last few.
    pub writes: Vec<BlockWrite>,
    /// How many writes carried it in all.
    pub writes_total: usize,
    /// For an agent output: the index (in `blocks`) of the request it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<usize>,
    /// What the agent recorded it as: `request 3`, `reply to request 3`, `stale reply to
    /// request 3 (written for conn 1)`, `fault: spurious-duplicate (rule 2)`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// What a mark on the timeline is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MarkKind {
    Connected,
    Disconnected,
    /// A scripted fault fired.
    Fault,
    /// The agent died, was killed, or the VM exited.
    Death,
    /// The agent started or restarted.
    Start,
    /// Any other life event (hung, resumed, suspended, a power event).
    Life,
}

/// An event at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Mark {
    pub t_us: u64,
    pub kind: MarkKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    /// The event's name and detail.
    pub label: String,
    pub line: usize,
}

/// A step as the client saw it, on the transcript's clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepBar {
    pub index: usize,
    pub execute: String,
    /// When the step was handed to the client.
    pub start_us: u64,
    /// When the client answered (or gave up).
    pub answer_us: u64,
    /// When the step's timeout ran out.
    pub deadline_us: u64,
}

/// One transcript line, summarised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TranscriptLine {
    pub line: usize,
    pub t_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    /// `client > agent ...`, `agent > client ...` or `* event: detail`, cut to a preview.
    pub text: String,
}

/// A case's wire, drawn.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Timeline {
    /// The last instant anything happened (µs, transcript clock).
    pub end_us: u64,
    /// Step times come from the runner's clock, which started up to this much before the
    /// transcript's: a step bar may be early by at most this.
    pub clock_slack_us: u64,
    pub pairing: Option<PairingSource>,
    pub blocks: Vec<Block>,
    pub marks: Vec<Mark>,
    pub steps: Vec<StepBar>,
    /// The transcript's lines (the first few hundred), for the quoted lines.
    pub lines: Vec<TranscriptLine>,
    /// Blocks, writes and lines beyond what is kept, counted.
    pub blocks_dropped: usize,
    pub writes_dropped: usize,
    pub lines_dropped: usize,
}

/// Builds a case's timeline from its transcript and the client's steps. Requests and
/// outputs are the agent's records, paired as the agent recorded them; bytes no record
/// covers are drawn as they were written.
pub fn build(
    wire: &Wire,
    steps: &[StepRecord],
    timeouts_ms: &[u64],
    clock_slack_us: u64,
) -> Timeline {
    let mut timeline = Timeline {
        clock_slack_us,
        ..Timeline::default()
    };
    let mut writes_by_stream: HashMap<(u64, Direction), Vec<&WriteRecord>> = HashMap::new();
    for write in &wire.writes {
        writes_by_stream
            .entry((write.conn, write.dir))
            .or_default()
            .push(write);
    }
    let total = wire.items.len() + wire.replies.len() + wire.unrecorded.len();
    let room = |timeline: &mut Timeline| {
        if timeline.blocks.len() >= MAX_BLOCKS {
            timeline.blocks_dropped += 1;
            false
        } else {
            true
        }
    };
    let mut block_of_request = HashMap::new();
    for item in &wire.items {
        if !room(&mut timeline) {
            continue;
        }
        block_of_request.insert(item.request, timeline.blocks.len());
        timeline.blocks.push(item_block_of(item, &writes_by_stream));
    }
    for reply in &wire.replies {
        if !room(&mut timeline) {
            continue;
        }
        let mut block = reply_block_of(reply, &writes_by_stream);
        block.answers = reply
            .answers()
            .and_then(|request| block_of_request.get(&request).copied());
        if !wire.has_agent_records {
            // Read from the bytes: the pairing is proven by the id the reply carries.
            block.origin = block
                .origin
                .map(|origin| format!("{origin}, known by the id it carries"));
        }
        timeline.blocks.push(block);
    }
    for bytes in &wire.unrecorded {
        if !room(&mut timeline) {
            continue;
        }
        timeline.blocks.push(unrecorded_block_of(
            bytes,
            wire.has_agent_records,
            &writes_by_stream,
        ));
    }
    debug_assert_eq!(timeline.blocks.len() + timeline.blocks_dropped, total);
    if !wire.replies.is_empty() || !wire.unrecorded.is_empty() {
        timeline.pairing = Some(if wire.has_agent_records {
            PairingSource::GroundTruth
        } else if timeline.blocks.iter().any(|b| b.answers.is_some()) {
            PairingSource::ById
        } else {
            PairingSource::NotMeasured
        });
    }
    for event in &wire.events {
        let Some(kind) = mark_kind(&event.name) else {
            continue;
        };
        let label = match &event.detail {
            Some(detail) => format!("{}: {}", event.name, excerpt(detail)),
            None => event.name.clone(),
        };
        timeline.marks.push(Mark {
            t_us: event.t_us,
            kind,
            conn: event.conn,
            label,
            line: event.line,
        });
    }
    for step in steps {
        let timeout_us = timeouts_ms.get(step.index).copied().unwrap_or(0) * 1000;
        timeline.steps.push(StepBar {
            index: step.index,
            execute: step.execute.clone(),
            start_us: step.started_us,
            answer_us: step.ended_us(),
            deadline_us: step.started_us + timeout_us,
        });
    }
    for record in wire.records.iter().take(MAX_LINES) {
        timeline.lines.push(TranscriptLine {
            line: record.line,
            t_us: record.t_us,
            conn: record.conn,
            text: record.text.clone(),
        });
    }
    timeline.lines_dropped = wire.records.len().saturating_sub(MAX_LINES);
    timeline.writes_dropped = wire.writes_dropped;
    timeline.end_us = timeline
        .blocks
        .iter()
        .map(|b| b.end_us)
        .chain(timeline.marks.iter().map(|m| m.t_us))
        .chain(
            timeline
                .steps
                .iter()
                .map(|s| s.answer_us.max(s.deadline_us)),
        )
        .max()
        .unwrap_or(0);
    timeline
}

fn item_block_of(item: &Item, writes: &HashMap<(u64, Direction), Vec<&WriteRecord>>) -> Block {
    let (kind, label) = match &item.kind {
        ItemKind::Object(_) => match item.execute() {
            Some(execute) if item.is_sync() => (BlockKind::Sync, execute.to_owned()),
            Some(execute) => (BlockKind::Request, execute.to_owned()),
            None => (BlockKind::Malformed, "object without execute".to_owned()),
        },
        ItemKind::NotObject(_) => (BlockKind::Malformed, "not an object".to_owned()),
        ItemKind::Flush(b) => (BlockKind::Flush, format!("0x{b:02X}")),
        ItemKind::Garbage(_) => (BlockKind::Garbage, "not JSON".to_owned()),
    };
    let carried: Vec<&WriteRecord> = item
        .input
        .iter()
        .flat_map(|span| carrying(writes, span.conn, Direction::In, (span.from, span.to)))
        .collect();
    let len = item.input.iter().map(|s: &ConnSpan| s.to - s.from).sum();
    let mut block = block(
        Lane::Client,
        kind,
        item.conn,
        label,
        len,
        &item.preview,
        &carried,
    );
    block.lines = item.lines;
    block.end_us = item.t_us.max(block.start_us);
    if block.writes_total == 0 {
        // Input that waited in the channel before any client: it is drawn when read.
        block.start_us = block.end_us;
    }
    block.origin = Some(if item.has_leftover_input() {
        format!(
            "request {} (bytes from an earlier connection too)",
            item.request
        )
    } else {
        format!("request {}", item.request)
    });
    block
}

fn reply_block_of(reply: &Reply, writes: &HashMap<(u64, Direction), Vec<&WriteRecord>>) -> Block {
    let (kind, label) = match &reply.value {
        Some(value) if value.get("return").is_some() => (
            BlockKind::Reply,
            if reply.ff_prefix {
                "0xFF + return".to_owned()
            } else {
                "return".to_owned()
            },
        ),
        Some(value) if value.get("error").is_some() => (
            BlockKind::Error,
            value
                .pointer("/error/class")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("error")
                .to_owned(),
        ),
        _ if !reply.complete => (BlockKind::Noise, "no newline".to_owned()),
        _ => (BlockKind::Noise, "not a reply".to_owned()),
    };
    let len = reply.len as u64;
    let carried = carrying(
        writes,
        reply.conn,
        Direction::Out,
        (reply.at, reply.at + len),
    );
    let mut block = block(
        Lane::Agent,
        kind,
        reply.conn,
        label,
        len,
        &reply.preview,
        &carried,
    );
    block.lines = reply.lines;
    block.end_us = reply.t_us.max(block.start_us);
    let origin = reply.origin.describe();
    block.origin = Some(match (reply.stale, reply.for_conn) {
        (true, Some(conn)) => format!("stale {origin} (written for conn {conn})"),
        (true, None) => format!("stale {origin}"),
        (false, _) => origin,
    });
    block
}

fn unrecorded_block_of(
    bytes: &Unrecorded,
    agent_records: bool,
    writes: &HashMap<(u64, Direction), Vec<&WriteRecord>>,
) -> Block {
    let lane = match bytes.dir {
        Direction::In => Lane::Client,
        Direction::Out => Lane::Agent,
    };
    let (kind, label) = match (agent_records, bytes.dir) {
        (true, Direction::In) => (BlockKind::Unread, "not read by the agent"),
        _ => (BlockKind::Bytes, "bytes"),
    };
    let carried = carrying(writes, bytes.conn, bytes.dir, bytes.span);
    let len = bytes.span.1 - bytes.span.0;
    let mut block = block(
        lane,
        kind,
        bytes.conn,
        label.to_owned(),
        len,
        &bytes.preview,
        &carried,
    );
    block.lines = (bytes.line, bytes.line);
    block.end_us = bytes.t_us.max(block.start_us);
    block
}

/// The writes of one stream overlapping a byte span (writes are in stream order).
fn carrying<'a>(
    writes: &HashMap<(u64, Direction), Vec<&'a WriteRecord>>,
    conn: u64,
    dir: Direction,
    span: (u64, u64),
) -> Vec<&'a WriteRecord> {
    let Some(writes) = writes.get(&(conn, dir)) else {
        return Vec::new();
    };
    let first = writes.partition_point(|w| w.offset + w.len <= span.0);
    writes[first..]
        .iter()
        .take_while(|w| w.offset < span.1.max(span.0 + 1))
        .copied()
        .collect()
}

fn block(
    lane: Lane,
    kind: BlockKind,
    conn: u64,
    label: String,
    len: u64,
    preview: &[u8],
    carried: &[&WriteRecord],
) -> Block {
    let shown: Vec<BlockWrite> = if carried.len() <= 2 * WRITES_SHOWN {
        carried.iter().map(|w| write_of(w)).collect()
    } else {
        carried[..WRITES_SHOWN]
            .iter()
            .chain(&carried[carried.len() - WRITES_SHOWN..])
            .map(|w| write_of(w))
            .collect()
    };
    Block {
        lane,
        kind,
        conn,
        label,
        start_us: carried.first().map_or(0, |w| w.t_us),
        end_us: 0,
        lines: (0, 0),
        len,
        bytes: visible_bytes(preview),
        bytes_cut: len > preview.len() as u64,
        writes: shown,
        writes_total: carried.len(),
        answers: None,
        origin: None,
    }
}

fn write_of(write: &WriteRecord) -> BlockWrite {
    BlockWrite {
        t_us: write.t_us,
        len: write.len,
        line: write.line,
    }
}

fn mark_kind(event: &str) -> Option<MarkKind> {
    Some(match event {
        "connected" => MarkKind::Connected,
        "disconnected" => MarkKind::Disconnected,
        "fault" => MarkKind::Fault,
        "agent-killed" | "agent-failed" | "vm-exit" | "agent-died" => MarkKind::Death,
        "agent-started" | "agent-restarting" | "agent-restarted" => MarkKind::Start,
        "agent-hung" | "agent-resumed" | "guest-suspended" | "power-event" | "write-failed" => {
            MarkKind::Life
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::PREVIEW_BYTES;

    fn wire(lines: &[String]) -> Wire {
        Wire::parse(lines.join("\n").as_bytes()).expect("parses")
    }

    fn b64(bytes: &[u8]) -> String {
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
    }

    fn request(t_us: u64, number: u64, from: u64, to: u64, value: &str) -> String {
        format!(
            r#"{{"t_us":{t_us},"event":"request","request":{number},"conn":1,"input":[{{"conn":1,"from":{from},"to":{to}}}],"value":{value}}}"#
        )
    }

    fn output(t_us: u64, number: u64, at: u64, len: u64, origin: &str) -> String {
        format!(
            r#"{{"t_us":{t_us},"event":"output","conn":1,"output":{number},"at":{at},"len":{len},{origin}}}"#
        )
    }

    #[test]
    fn a_drip_is_one_block_with_every_write() {
        let mut lines = vec![r#"{"t_us":1,"conn":1,"event":"connected"}"#.to_owned()];
        let ping = br#"{"execute":"guest-ping"}"#;
        for (i, b) in ping.iter().enumerate() {
            lines.push(format!(
                r#"{{"t_us":{},"conn":1,"dir":"in","at":{i},"b64":"{}"}}"#,
                10 + i,
                b64(&[*b])
            ));
        }
        lines.push(request(34, 1, 0, 24, r#"{"execute":"guest-ping"}"#));
        lines.push(
            r#"{"t_us":100,"conn":1,"dir":"out","at":0,"text":"{\"return\": {}}\n"}"#.to_owned(),
        );
        lines.push(output(100, 1, 0, 15, r#""origin":"reply","request":1"#));
        let timeline = build(&wire(&lines), &[], &[], 0);
        assert_eq!(timeline.blocks.len(), 2, "{:#?}", timeline.blocks);
        let request = &timeline.blocks[0];
        assert_eq!(request.kind, BlockKind::Request);
        assert_eq!(request.writes_total, 24);
        assert_eq!(request.writes.len(), 2 * WRITES_SHOWN);
        assert_eq!(request.start_us, 10);
        assert_eq!(request.end_us, 34);
        assert_eq!(request.bytes, r#"{"execute":"guest-ping"}"#);
        assert_eq!(timeline.blocks[1].answers, Some(0));
        assert_eq!(timeline.pairing, Some(PairingSource::GroundTruth));
        assert_eq!(timeline.marks[0].kind, MarkKind::Connected);
    }

    #[test]
    fn one_write_of_several_requests_splits_into_blocks_paired_as_recorded() {
        let input = b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":7}}{\"execute\":\"guest-ping\"}";
        let out = b"\xff{\"return\": 7}\n{\"return\": {}}\n";
        let lines = vec![
            format!(r#"{{"t_us":5,"conn":1,"dir":"in","at":0,"b64":"{}"}}"#, b64(input)),
            r#"{"t_us":6,"event":"request","request":1,"conn":1,"input":[{"conn":1,"from":0,"to":1}],"error":"stray","stray":255}"#.to_owned(),
            request(7, 2, 1, 57, r#"{"execute":"guest-sync-delimited","arguments":{"id":7}}"#),
            request(8, 3, 57, 81, r#"{"execute":"guest-ping"}"#),
            format!(r#"{{"t_us":9,"conn":1,"dir":"out","at":0,"b64":"{}"}}"#, b64(out)),
            output(9, 1, 0, 15, r#""origin":"reply","request":2"#),
            // The second output is a fault's, not the ping's answer: it stays unpaired.
            output(9, 2, 15, 15, r#""origin":"fault","rule":1,"fault":"spurious-duplicate""#),
        ];
        let timeline = build(&wire(&lines), &[], &[], 0);
        let kinds: Vec<BlockKind> = timeline.blocks.iter().map(|b| b.kind).collect();
        assert_eq!(
            kinds,
            [
                BlockKind::Flush,
                BlockKind::Sync,
                BlockKind::Request,
                BlockKind::Reply,
                BlockKind::Reply
            ]
        );
        assert_eq!(timeline.blocks[0].bytes, "\\xFF");
        assert_eq!(timeline.blocks[3].bytes, "\\xFF{\"return\": 7}\\n");
        assert_eq!(timeline.blocks[3].answers, Some(1));
        assert_eq!(timeline.blocks[4].answers, None);
        assert!(timeline.blocks[4]
            .origin
            .as_deref()
            .is_some_and(|o| o.contains("spurious-duplicate")));
        assert!(timeline.blocks.iter().all(|b| b.writes_total == 1));
        assert_eq!(timeline.blocks[2].len, 24);
    }

    #[test]
    fn input_the_agent_never_read_is_its_own_block() {
        let lines = vec![
            r#"{"t_us":5,"conn":1,"dir":"in","at":0,"text":"{\"execute\":\"guest-ping\"}{\"exec"}"#
                .to_owned(),
            request(6, 1, 0, 24, r#"{"execute":"guest-ping"}"#),
            r#"{"t_us":7,"event":"agent-killed"}"#.to_owned(),
        ];
        let timeline = build(&wire(&lines), &[], &[], 0);
        assert_eq!(timeline.blocks.len(), 2, "{:#?}", timeline.blocks);
        assert_eq!(timeline.blocks[1].kind, BlockKind::Unread);
        assert_eq!(timeline.blocks[1].bytes, r#"{"exec"#);
        assert_eq!(timeline.blocks[1].len, 6);
    }

    #[test]
    fn bytes_without_agent_records_are_drawn_but_never_paired() {
        let lines = vec![
            r#"{"t_us":5,"conn":1,"dir":"in","at":0,"text":"{\"execute\":\"guest-ping\"}\n"}"#
                .to_owned(),
            r#"{"t_us":9,"conn":1,"dir":"out","at":0,"text":"{\"return\": {}}\n"}"#.to_owned(),
        ];
        let timeline = build(&wire(&lines), &[], &[], 0);
        assert_eq!(timeline.pairing, Some(PairingSource::NotMeasured));
        assert_eq!(timeline.blocks.len(), 2);
        assert!(timeline
            .blocks
            .iter()
            .all(|b| b.kind == BlockKind::Bytes && b.answers.is_none()));
    }

    /// A transcript of bytes alone (the front of a real agent): a reply carrying its
    /// request's id (an echoed `id`, a sync's returned id, also as a float) is drawn paired
    /// with that request; a reply without one is not.
    #[test]
    fn bytes_only_replies_known_by_their_id_are_paired() {
        let lines = vec![
            format!(
                r#"{{"t_us":0,"event":"{}"}}"#,
                crate::transcript::BYTES_ONLY_EVENT
            ),
            r#"{"t_us":5,"conn":1,"dir":"in","at":0,"text":"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":850201}}"}"#
                .to_owned(),
            r#"{"t_us":9,"conn":1,"dir":"out","at":0,"text":"{\"return\": 850201.0}\n"}"#.to_owned(),
            r#"{"t_us":10,"conn":1,"dir":"in","at":50,"text":"{\"execute\":\"guest-ping\",\"id\":\"p1\"}"}"#
                .to_owned(),
            r#"{"t_us":12,"conn":1,"dir":"out","at":21,"text":"{\"return\": {}, \"id\": \"p1\"}\n"}"#
                .to_owned(),
            r#"{"t_us":14,"conn":1,"dir":"in","at":84,"text":"{\"execute\":\"guest-ping\"}"}"#
                .to_owned(),
            r#"{"t_us":16,"conn":1,"dir":"out","at":48,"text":"{\"return\": {}}\n"}"#.to_owned(),
        ];
        let timeline = build(&wire(&lines), &[], &[], 0);
        assert_eq!(timeline.pairing, Some(PairingSource::ById));
        let label = |i: Option<usize>| i.map(|i| timeline.blocks[i].label.clone());
        let answered: Vec<(String, Option<String>)> = timeline
            .blocks
            .iter()
            .filter(|b| b.lane == Lane::Agent)
            .map(|b| (b.label.clone(), label(b.answers)))
            .collect();
        assert_eq!(
            answered,
            [
                ("return".to_owned(), Some("guest-sync".to_owned())),
                ("return".to_owned(), Some("guest-ping".to_owned())),
                ("bytes".to_owned(), None),
            ],
            "{:#?}",
            timeline.blocks
        );
        let sync_reply = timeline
            .blocks
            .iter()
            .find(|b| b.answers.is_some())
            .unwrap();
        assert!(
            sync_reply
                .origin
                .as_deref()
                .unwrap()
                .contains("known by the id"),
            "{:?}",
            sync_reply.origin
        );
    }

    #[test]
    fn a_huge_reply_is_one_block_with_a_preview() {
        let big = format!("{{\"return\": \"{}\"}}\n", "x".repeat(100_000));
        let lines = vec![
            request(1, 1, 0, 0, r#"{"execute":"guest-ping"}"#),
            serde_json::json!({"t_us": 3, "conn": 1, "dir": "out", "at": 0, "text": big})
                .to_string(),
            output(3, 1, 0, big.len() as u64, r#""origin":"reply","request":1"#),
        ];
        let timeline = build(&wire(&lines), &[], &[], 0);
        assert_eq!(timeline.blocks.len(), 2);
        assert_eq!(timeline.blocks[1].len, big.len() as u64);
        assert!(timeline.blocks[1].bytes_cut);
        assert_eq!(timeline.blocks[1].bytes.len(), PREVIEW_BYTES);
        assert_eq!(timeline.blocks[1].answers, Some(0));
    }
}
