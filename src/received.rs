//! What a mock received: each request as its agent parsed it, with the reply the agent
//! wrote for it.
//!
//! The records are made by the agent process itself, at the moment it handles a request:
//! which reply answers which request is known there, not reconstructed afterwards from the
//! order or timing of the bytes on the wire.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::wire::Parsed;

/// The most records a mock keeps; later requests are counted, not kept, so a long-running
/// mock's memory stays bounded.
pub(crate) const RECORD_LIMIT: usize = 1 << 16;

/// One request the agent handled, and what it wrote for it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Received {
    /// 1-based, in the order the agent handled requests (across connections and restarts).
    pub sequence: u64,
    /// When the agent handled it, since the mock started.
    pub at: Duration,
    /// The request as the agent parsed it, or the parser's error text for bytes that were
    /// not a JSON value (qemu-ga answers those with a GenericError).
    pub request: Result<serde_json::Value, String>,
    /// The reply the agent wrote for this request, byte for byte (a fault may have changed
    /// it); `None` when it wrote none (a no-reply command, a hang, a death).
    pub reply: Option<Vec<u8>>,
    /// True when a fault rule fired on this request.
    pub faulted: bool,
}

impl Received {
    /// The `execute` member, when the request is an object with a string `execute`.
    #[must_use]
    pub fn command(&self) -> Option<&str> {
        self.request.as_ref().ok()?.get("execute")?.as_str()
    }

    /// The `arguments` member, when there is one.
    #[must_use]
    pub fn arguments(&self) -> Option<&serde_json::Value> {
        self.request.as_ref().ok()?.get("arguments")
    }

    /// The reply as JSON, when the agent wrote one that is a JSON value (a guest-sync-
    /// delimited reply's leading 0xFF is skipped).
    #[must_use]
    pub fn reply_json(&self) -> Option<serde_json::Value> {
        let bytes = self.reply.as_deref()?;
        let bytes = bytes.strip_prefix(b"\xff").unwrap_or(bytes);
        serde_json::from_slice(bytes).ok()
    }
}

impl fmt::Display for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} ", self.sequence)?;
        match &self.request {
            Ok(value) => write!(f, "{value}")?,
            Err(error) => write!(f, "(not a request: {error})")?,
        }
        match &self.reply {
            Some(bytes) => write!(f, " -> {}", String::from_utf8_lossy(bytes).trim_end())?,
            None => f.write_str(" -> (no reply)")?,
        }
        if self.faulted {
            f.write_str(" [fault]")?;
        }
        Ok(())
    }
}

/// A request being handled, not recorded until the agent is done with it: a request the
/// agent dies before reading goes back to the channel and is recorded when read again.
#[derive(Debug)]
pub(crate) struct PendingRecord {
    at: Duration,
    request: Result<serde_json::Value, String>,
}

/// Collects a mock's [`Received`] records; shared by its agent processes.
#[derive(Debug)]
pub(crate) struct Recorder {
    started: Instant,
    entries: Mutex<Vec<Received>>,
    handled: AtomicU64,
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder {
            started: Instant::now(),
            entries: Mutex::new(Vec::new()),
            handled: AtomicU64::new(0),
        }
    }

    /// The agent is about to handle this item.
    pub(crate) fn begin(&self, item: &Parsed) -> PendingRecord {
        PendingRecord {
            at: self.started.elapsed(),
            request: match item {
                Parsed::Value(value) => Ok(value.to_serde()),
                Parsed::Error(error) => Err(error.clone()),
            },
        }
    }

    /// The agent is done with the request: it wrote `reply` for it (or nothing).
    pub(crate) fn commit(&self, pending: PendingRecord, reply: Option<&[u8]>, faulted: bool) {
        let sequence = self.handled.fetch_add(1, Ordering::Relaxed) + 1;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() < RECORD_LIMIT {
            entries.push(Received {
                sequence,
                at: pending.at,
                request: pending.request,
                reply: reply.map(<[u8]>::to_vec),
                faulted,
            });
        }
    }

    /// The records so far, in order.
    pub(crate) fn snapshot(&self) -> Vec<Received> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests were handled in all (kept or not).
    pub(crate) fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
}
