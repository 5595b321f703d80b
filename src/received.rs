//! What a mock received: each request as its agent parsed it, with the agent's answer to it.
//!
//! Read from the mock's transcript, from the agent's own records: the request records (the
//! mock-wide request number, the connection, where the bytes came from, the parsed value)
//! and the output records, each naming what it is (the reply to request N, a parse error,
//! a fault's injection). Which output answers which request is what the agent recorded
//! when it wrote it, never inferred from the order or timing of the bytes.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::transcript::writer::Progress;
use crate::transcript::{
    read_line_bounded, ConnSpan, Item, ItemKind, LineRead, Origin, Reply, Wire,
};

/// How long `received()` waits for the transcript's writer to catch up: only a disk that
/// stalls makes it wait that long.
const CATCH_UP: Duration = Duration::from_secs(10);

/// One request the agent read, and what it wrote for it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Received {
    /// The request as the agent recorded it: its number (mock-wide, from 1, across
    /// connections and agent restarts), the connection that completed it, where its bytes
    /// came from, and what it was (a JSON object, a parser flush byte, garbage).
    pub item: Item,
    /// The agent's answer to it (its reply, or its parse error), as written, when it wrote
    /// one: none for a no-reply command, a hang, a death.
    pub answer: Option<Reply>,
    /// Outputs a fault rule made while firing on this request that answer no request (a
    /// spurious stale sync, a duplicate, raw bytes...).
    pub injected: Vec<Reply>,
    /// The ids of the fault rules that fired on this request, as the agent's `fault`
    /// records name them (empty: the real agent's behaviour).
    pub faults: Vec<u64>,
}

impl Received {
    /// The mock-wide request number, as the transcript and fault records use it.
    #[must_use]
    pub fn number(&self) -> u64 {
        self.item.request
    }

    /// The connection whose bytes completed the request (from 1).
    #[must_use]
    pub fn conn(&self) -> u64 {
        self.item.conn
    }

    /// Where the request's bytes came from, first to last.
    #[must_use]
    pub fn input(&self) -> &[ConnSpan] {
        &self.item.input
    }

    /// The `execute` member, when the request is an object with a string `execute`.
    #[must_use]
    pub fn command(&self) -> Option<&str> {
        self.item.execute()
    }

    /// The `arguments` member, when there is one.
    #[must_use]
    pub fn arguments(&self) -> Option<&Value> {
        self.item.arguments()
    }

    /// The answer as JSON, when the agent wrote one that is a JSON value (a
    /// guest-sync-delimited reply's leading 0xFF is not part of it).
    #[must_use]
    pub fn reply_json(&self) -> Option<&Value> {
        self.answer.as_ref()?.value.as_ref()
    }

    /// True when a fault rule fired on this request.
    #[must_use]
    pub fn faulted(&self) -> bool {
        !self.faults.is_empty()
    }

    /// True when the agent answered with a `return` member (success).
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.reply_json()
            .is_some_and(|reply| reply.get("return").is_some())
    }
}

impl fmt::Display for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.item.kind {
            ItemKind::Object(_) => write!(f, "{}", self.item.describe())?,
            _ => write!(f, "{} (not a request)", self.item.describe())?,
        }
        write!(f, " on conn {}", self.item.conn)?;
        match &self.answer {
            Some(answer) => write!(f, " -> {}", answer.text.trim_end_matches("\\n"))?,
            None => f.write_str(" -> (no answer)")?,
        }
        if !self.faults.is_empty() {
            write!(f, " [fault rules fired: {:?}]", self.faults)?;
        }
        for injected in &self.injected {
            write!(f, " [+ {}]", injected.origin.describe())?;
        }
        Ok(())
    }
}

/// Where a mock's transcript is, and how far its writer got; shared by the async and
/// blocking handles.
#[derive(Debug)]
pub(crate) struct Records {
    path: PathBuf,
    progress: Arc<Progress>,
    /// The temp dir holding the transcript when the mock made one for its records.
    _dir: Option<tempfile::TempDir>,
}

impl Records {
    pub(crate) fn new(
        path: &Path,
        progress: Arc<Progress>,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        Records {
            path: path.to_owned(),
            progress,
            _dir: dir,
        }
    }

    /// Every request the agent recorded so far, in request-number order.
    pub(crate) fn read(&self) -> Vec<Received> {
        // Every record sent before now is in the file once this returns.
        self.progress.wait_written(CATCH_UP);
        match (Wire::read(&self.path), fired_rules(&self.path)) {
            (Ok(wire), Ok(faults)) => received_from(wire, faults),
            _ => Vec::new(),
        }
    }
}

/// The most bytes of a transcript line read for its fault record; longer lines are bytes
/// records, never fault records.
const MAX_FAULT_LINE: usize = 64 << 10;

/// The agent's `fault` records: for each request number, the rules that fired on it.
fn fired_rules(path: &Path) -> std::io::Result<HashMap<u64, Vec<u64>>> {
    #[derive(serde::Deserialize)]
    struct FaultRecord<'a> {
        #[serde(borrow)]
        event: Option<std::borrow::Cow<'a, str>>,
        request: Option<u64>,
        rule: Option<u64>,
    }
    let mut fired: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut input = match std::fs::File::open(path) {
        Ok(file) => std::io::BufReader::new(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(fired),
        Err(e) => return Err(e),
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line_bounded(&mut input, &mut line, MAX_FAULT_LINE)? {
            None => break,
            Some(LineRead::TooLong) => continue,
            Some(LineRead::Line) => {}
        }
        // Bytes records are most lines: skip them before parsing.
        if !line.windows(15).any(|w| w == b"\"event\":\"fault\"") {
            continue;
        }
        if let Ok(FaultRecord {
            event: Some(event),
            request: Some(request),
            rule: Some(rule),
        }) = serde_json::from_slice(&line)
        {
            if event == "fault" {
                fired.entry(request).or_default().push(rule);
            }
        }
    }
    Ok(fired)
}

/// Each request with the outputs and fault rules the agent recorded for it.
fn received_from(wire: Wire, mut faults: HashMap<u64, Vec<u64>>) -> Vec<Received> {
    let mut answers: HashMap<u64, Reply> = HashMap::new();
    let mut injected: HashMap<u64, Vec<Reply>> = HashMap::new();
    for reply in wire.replies {
        match &reply.origin {
            Origin::Reply { request } | Origin::ParseError { request, .. } => {
                answers.entry(*request).or_insert(reply);
            }
            Origin::Fault {
                request: Some(request),
                ..
            } => injected.entry(*request).or_default().push(reply),
            Origin::Fault { request: None, .. } | Origin::Preloaded => {}
        }
    }
    wire.items
        .into_iter()
        .map(|item| Received {
            answer: answers.remove(&item.request),
            injected: injected.remove(&item.request).unwrap_or_default(),
            faults: faults.remove(&item.request).unwrap_or_default(),
            item,
        })
        .collect()
}
