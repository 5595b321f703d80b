//! A case's wire as a timeline for the reports: each request and each agent output as one
//! block (with the writes that carried it, so a drip is one block), the pairing of each
//! reply with the request it answers, connections, faults, agent deaths and restarts as
//! marks, and each step's start, answer and deadline. Payloads are cut to a preview: a
//! 22 MiB reply is one block with its length, not 22 MiB of report.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::adapter::StepRecord;
use super::judge::is_no_reply_command;
use super::timeline_wire::{Direction, Item, ItemKind, Reply, Wire, WriteRecord, PREVIEW_BYTES};

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
}

/// How the pairing of replies with requests was established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PairingSource {
    /// Recorded by the agent as it answered.
    GroundTruth,
    /// Read back from the transcript: a sync reply by the id it echoes, other replies in
    /// order on their connection. Drawn dashed: a stale reply may be paired wrongly.
    Inferred,
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

/// Which request each agent output answers: `answers[r]` is the index in `wire.items` of
/// the request that `wire.replies[r]` answers.
///
/// This is the one place the pairing comes from. The transcript does not yet record which
/// request a reply answers, so this reads it back: a sync reply by the id it echoes, any
/// other reply in order with the unanswered requests of its connection.
pub fn pair_replies(wire: &Wire) -> (Vec<Option<usize>>, PairingSource) {
    let mut answers = vec![None; wire.replies.len()];
    let mut answered = vec![false; wire.items.len()];
    for (r, reply) in wire.replies.iter().enumerate() {
        let Some(value) = &reply.value else { continue };
        if value.get("return").is_none() && value.get("error").is_none() {
            continue;
        }
        let echoed = value.get("return");
        let candidate = wire.items.iter().enumerate().position(|(i, item)| {
            if answered[i] || item.conn != reply.conn || item.lines.1 > reply.lines.1 {
                return false;
            }
            match (item.sync_id(), echoed) {
                (Some(id), Some(back)) => id == back,
                (Some(_), None) => false,
                (None, _) => match &item.kind {
                    ItemKind::Object(_) => !item.execute().is_some_and(is_no_reply_command),
                    ItemKind::NotObject(_) => true,
                    _ => false,
                },
            }
        });
        if let Some(i) = candidate {
            answered[i] = true;
            answers[r] = Some(i);
        }
    }
    (answers, PairingSource::Inferred)
}

/// Builds a case's timeline from its wire and the client's steps.
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
    let mut writes_by_stream: std::collections::HashMap<(u64, bool), Vec<&WriteRecord>> =
        std::collections::HashMap::new();
    for write in &wire.writes {
        writes_by_stream
            .entry((write.conn, write.dir == Direction::In))
            .or_default()
            .push(write);
    }
    let empty = Vec::new();
    let mut item_block = vec![None; wire.items.len()];
    for (i, item) in wire.items.iter().enumerate() {
        if timeline.blocks.len() >= MAX_BLOCKS {
            timeline.blocks_dropped += wire.items.len() - i;
            break;
        }
        let writes = writes_by_stream.get(&(item.conn, true)).unwrap_or(&empty);
        item_block[i] = Some(timeline.blocks.len());
        timeline.blocks.push(item_block_of(item, writes));
    }
    let (answers, source) = pair_replies(wire);
    if !wire.replies.is_empty() {
        timeline.pairing = Some(source);
    }
    for (r, reply) in wire.replies.iter().enumerate() {
        if timeline.blocks.len() >= MAX_BLOCKS {
            timeline.blocks_dropped += wire.replies.len() - r;
            break;
        }
        let writes = writes_by_stream.get(&(reply.conn, false)).unwrap_or(&empty);
        let mut block = reply_block_of(reply, writes);
        block.answers = answers[r].and_then(|i| item_block[i]);
        timeline.blocks.push(block);
    }
    for event in &wire.events {
        let Some(kind) = mark_kind(&event.name) else {
            continue;
        };
        let label = match &event.detail {
            Some(detail) => format!("{}: {}", event.name, super::timeline_wire::excerpt(detail)),
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

fn item_block_of(item: &Item, writes: &[&WriteRecord]) -> Block {
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
    let mut block = block(
        Lane::Client,
        kind,
        item.conn,
        label,
        item.span,
        &item.raw,
        writes,
    );
    block.lines = item.lines;
    block.end_us = item.t_us.max(block.start_us);
    block
}

fn reply_block_of(reply: &Reply, writes: &[&WriteRecord]) -> Block {
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
    let mut block = block(
        Lane::Agent,
        kind,
        reply.conn,
        label,
        reply.span,
        &reply.raw,
        writes,
    );
    block.lines = reply.lines;
    block.end_us = reply.t_us.max(block.start_us);
    block
}

fn block(
    lane: Lane,
    kind: BlockKind,
    conn: u64,
    label: String,
    span: (u64, u64),
    raw: &[u8],
    writes: &[&WriteRecord],
) -> Block {
    // The writes overlapping the block's byte span (writes are in stream order).
    let first = writes.partition_point(|w| w.offset + w.len as u64 <= span.0);
    let carried: Vec<&WriteRecord> = writes[first..]
        .iter()
        .take_while(|w| w.offset < span.1.max(span.0 + 1))
        .copied()
        .collect();
    let shown: Vec<BlockWrite> = if carried.len() <= 2 * WRITES_SHOWN {
        carried.iter().map(|w| write_of(w)).collect()
    } else {
        carried[..WRITES_SHOWN]
            .iter()
            .chain(&carried[carried.len() - WRITES_SHOWN..])
            .map(|w| write_of(w))
            .collect()
    };
    let len = span.1.saturating_sub(span.0);
    Block {
        lane,
        kind,
        conn,
        label,
        start_us: carried.first().map_or(0, |w| w.t_us),
        end_us: 0,
        lines: (0, 0),
        len,
        bytes: visible_bytes(raw),
        bytes_cut: len > raw.len() as u64 || raw.len() >= PREVIEW_BYTES,
        writes: shown,
        writes_total: carried.len(),
        answers: None,
    }
}

fn write_of(write: &WriteRecord) -> BlockWrite {
    BlockWrite {
        t_us: write.t_us,
        len: write.len as u64,
        line: write.line,
    }
}

/// Printable ASCII as is; `\n`, `\r`, `\t`, `\\` escaped; every other byte as `\xNN`.
pub fn visible_bytes(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(data.len());
    for &b in data {
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
    out
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

    fn wire(lines: &[&str]) -> Wire {
        Wire::parse(lines.join("\n").as_bytes()).expect("parses")
    }

    #[test]
    fn a_drip_is_one_block_with_every_write() {
        let mut lines = vec![r#"{"t_us":1,"conn":1,"event":"connected"}"#.to_owned()];
        for (i, b) in br#"{"execute":"guest-ping"}"#.iter().enumerate() {
            lines.push(format!(
                r#"{{"t_us":{},"conn":1,"dir":"in","b64":"{}"}}"#,
                10 + i,
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [*b])
            ));
        }
        lines.push(r#"{"t_us":100,"conn":1,"dir":"out","text":"{\"return\": {}}\n"}"#.to_owned());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let timeline = build(&wire(&refs), &[], &[], 0);
        assert_eq!(timeline.blocks.len(), 2, "{:#?}", timeline.blocks);
        let request = &timeline.blocks[0];
        assert_eq!(request.kind, BlockKind::Request);
        assert_eq!(request.writes_total, 24);
        assert_eq!(request.writes.len(), 2 * WRITES_SHOWN);
        assert_eq!(request.start_us, 10);
        assert_eq!(request.end_us, 33);
        assert_eq!(timeline.blocks[1].answers, Some(0));
        assert_eq!(timeline.marks[0].kind, MarkKind::Connected);
    }

    #[test]
    fn one_write_of_several_items_splits_into_blocks_with_visible_bytes() {
        let timeline = build(
            &wire(&[
                r#"{"t_us":5,"conn":1,"dir":"in","b64":"/3siZXhlY3V0ZSI6Imd1ZXN0LXN5bmMtZGVsaW1pdGVkIiwiYXJndW1lbnRzIjp7ImlkIjo3fX17ImV4ZWN1dGUiOiJndWVzdC1waW5nIn0="}"#,
                r#"{"t_us":9,"conn":1,"dir":"out","b64":"/3sicmV0dXJuIjogN30KeyJyZXR1cm4iOiB7fX0K"}"#,
            ]),
            &[],
            &[],
            0,
        );
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
        assert_eq!(timeline.blocks[4].answers, Some(2));
        assert!(timeline.blocks.iter().all(|b| b.writes_total == 1));
        assert_eq!(timeline.blocks[2].len, 24);
    }

    #[test]
    fn a_huge_reply_is_one_block_with_a_preview() {
        let big = format!("{{\"return\": \"{}\"}}\n", "x".repeat(100_000));
        let record =
            serde_json::json!({"t_us": 3, "conn": 1, "dir": "out", "text": big}).to_string();
        let timeline = build(&wire(&[&record]), &[], &[], 0);
        assert_eq!(timeline.blocks.len(), 1);
        assert_eq!(timeline.blocks[0].len, big.len() as u64);
        assert!(timeline.blocks[0].bytes_cut);
        assert_eq!(timeline.blocks[0].bytes.len(), PREVIEW_BYTES);
    }
}
