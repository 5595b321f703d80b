//! Writing the transcript (format in the module docs of `crate::transcript`): records are
//! sent to a thread of its own, so the mock's event loop never waits on the disk.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use tokio::time::Instant;

pub(crate) use super::Direction;

/// How many records may wait for the writer thread before the mock waits for the disk.
/// Bounds the transcript's memory to this many records (each at most one read or write).
const QUEUE_RECORDS: usize = 1024;

#[derive(Debug)]
enum Body {
    Bytes {
        conn: u64,
        dir: Direction,
        at: u64,
        data: Vec<u8>,
    },
    Event {
        conn: Option<u64>,
        event: &'static str,
        detail: Option<String>,
    },
    /// An event with fields of its own, written after `event` in key order.
    Fields {
        event: &'static str,
        fields: serde_json::Map<String, serde_json::Value>,
    },
}

#[derive(Debug)]
struct Record {
    t_us: u128,
    body: Body,
}

/// Why the transcript could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the transcript file {}", path.display())]
pub struct TranscriptError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// How far the writer thread got, for a reader of the file that wants every record sent so
/// far ([`Progress::wait_written`]): the library's `received()` reads the agent's request
/// and output records back this way.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Records sent. Held while a record is queued, so records enter the queue in the
    /// order they are counted.
    sent: Mutex<u64>,
    /// Records written and flushed; `u64::MAX` once the writer thread has ended.
    written: Mutex<u64>,
    changed: Condvar,
}

impl Progress {
    /// Waits until every record sent before this call is in the file (or the writer
    /// ended), at most `limit`; false when the limit passed first.
    pub(crate) fn wait_written(&self, limit: Duration) -> bool {
        let target = *self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let (written, timeout) = self
            .changed
            .wait_timeout_while(written, limit, |written| *written < target)
            .unwrap_or_else(PoisonError::into_inner);
        drop(written);
        !timeout.timed_out()
    }

    fn set_written(&self, count: u64) {
        *self.written.lock().unwrap_or_else(PoisonError::into_inner) = count;
        self.changed.notify_all();
    }
}

/// The owner of the transcript: the writer thread and the clock origin.
#[derive(Debug)]
pub(crate) struct TranscriptWriter {
    handle: Transcript,
    thread: Option<JoinHandle<()>>,
}

/// A cheap handle that components use to add records. Records sent after the writer
/// finished are dropped.
#[derive(Clone, Debug)]
pub(crate) struct Transcript {
    tx: SyncSender<Record>,
    origin: Instant,
    progress: Arc<Progress>,
}

impl TranscriptWriter {
    /// Creates (truncates) `path` and starts the writer thread.
    pub(crate) fn create(path: &Path, origin: Instant) -> Result<Self, TranscriptError> {
        let file = File::create(path).map_err(|source| TranscriptError {
            path: path.to_owned(),
            source,
        })?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_RECORDS);
        let progress = Arc::new(Progress::default());
        let written = progress.clone();
        let thread = std::thread::Builder::new()
            .name("qga-transcript".into())
            .spawn(move || {
                write_records(rx, BufWriter::new(file), &written);
                written.set_written(u64::MAX);
            })
            .map_err(|source| TranscriptError {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            handle: Transcript {
                tx,
                origin,
                progress,
            },
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> Transcript {
        self.handle.clone()
    }

    /// How far the writer got; holding it does not keep the writer thread alive.
    pub(crate) fn progress(&self) -> Arc<Progress> {
        self.handle.progress.clone()
    }

    /// Waits until every record sent so far is on disk. Every other handle must be dropped
    /// first, or this waits for them.
    pub(crate) fn finish(mut self) {
        self.close();
    }

    fn close(&mut self) {
        // The thread ends when the last sender is gone: drop ours by replacing it with a
        // sender of a channel nobody reads.
        let (dead, _) = mpsc::sync_channel(0);
        self.handle.tx = dead;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TranscriptWriter {
    fn drop(&mut self) {
        self.close();
    }
}

impl Transcript {
    fn send(&self, body: Body) {
        self.send_stamped(Instant::now(), body);
    }

    fn send_stamped(&self, time: Instant, body: Body) {
        let t_us = time.saturating_duration_since(self.origin).as_micros();
        let mut sent = self
            .progress
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A full queue makes the mock wait for the disk: better than unbounded memory.
        let delivered = match self.tx.try_send(Record { t_us, body }) {
            Ok(()) => true,
            Err(TrySendError::Disconnected(_)) => false,
            Err(TrySendError::Full(record)) => wait_to_send(&self.tx, record),
        };
        if delivered {
            *sent += 1;
        }
    }

    /// Bytes written to a client, stamped with `begun`, a time taken before the write: a
    /// client cannot have read them earlier, so the judge needs no allowance for a stamp
    /// taken after a fast client already read, answered and was timed.
    pub(crate) fn bytes_written(&self, begun: Instant, conn: u64, at: u64, data: &[u8]) {
        self.send_stamped(
            begun,
            Body::Bytes {
                conn,
                dir: Direction::Out,
                at,
                data: data.to_vec(),
            },
        );
    }

    /// Bytes read or written; `at` is the offset of the first in the connection's stream
    /// that way.
    pub(crate) fn bytes(&self, conn: u64, dir: Direction, at: u64, data: &[u8]) {
        self.send(Body::Bytes {
            conn,
            dir,
            at,
            data: data.to_vec(),
        });
    }

    /// A request the agent's parser completed.
    pub(crate) fn request(&self, record: &super::RequestRecord) {
        self.record_of("request", record);
    }

    /// One piece of an output, right after the bytes record of the write that carried it.
    pub(crate) fn output(&self, record: &super::OutputRecord) {
        self.record_of("output", record);
    }

    /// A request whose fault killed the agent before it read it: its bytes go back to the
    /// channel and are read again under another number.
    pub(crate) fn request_unread(&self, request: u64) {
        let mut fields = serde_json::Map::new();
        fields.insert("request".into(), request.into());
        self.fields("request-unread", fields);
    }

    fn record_of(&self, event: &'static str, record: &impl serde::Serialize) {
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(record) {
            self.fields(event, fields);
        }
    }

    pub(crate) fn conn_event(&self, conn: u64, event: &'static str, detail: Option<String>) {
        self.send(Body::Event {
            conn: Some(conn),
            event,
            detail,
        });
    }

    pub(crate) fn event(&self, event: &'static str, detail: Option<String>) {
        self.send(Body::Event {
            conn: None,
            event,
            detail,
        });
    }

    pub(crate) fn fields(
        &self,
        event: &'static str,
        fields: serde_json::Map<String, serde_json::Value>,
    ) {
        self.send(Body::Fields { event, fields });
    }

    /// Bytes between a proxy and the real agent behind it (`dir` is `to-agent` or
    /// `from-agent`), in `text` or `b64` as client bytes are.
    pub(crate) fn upstream_bytes(&self, dir: &'static str, data: &[u8]) {
        let mut fields = serde_json::Map::new();
        fields.insert("dir".into(), dir.into());
        match std::str::from_utf8(data) {
            Ok(text) if is_plain_text(text) => {
                fields.insert("text".into(), text.into());
            }
            _ => {
                fields.insert(
                    "b64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(data)
                        .into(),
                );
            }
        }
        self.send(Body::Fields {
            event: "upstream",
            fields,
        });
    }
}

/// Helpers so callers with an optional transcript stay one line long.
pub(crate) trait MaybeTranscript {
    fn bytes(&self, conn: u64, dir: Direction, at: u64, data: &[u8]);
    fn bytes_written(&self, begun: Instant, conn: u64, at: u64, data: &[u8]);
    fn conn_event(&self, conn: u64, event: &'static str, detail: Option<String>);
    fn event(&self, event: &'static str, detail: Option<String>);
}

impl MaybeTranscript for Option<Transcript> {
    fn bytes(&self, conn: u64, dir: Direction, at: u64, data: &[u8]) {
        if let Some(t) = self {
            t.bytes(conn, dir, at, data);
        }
    }

    fn bytes_written(&self, begun: Instant, conn: u64, at: u64, data: &[u8]) {
        if let Some(t) = self {
            t.bytes_written(begun, conn, at, data);
        }
    }

    fn conn_event(&self, conn: u64, event: &'static str, detail: Option<String>) {
        if let Some(t) = self {
            t.conn_event(conn, event, detail);
        }
    }

    fn event(&self, event: &'static str, detail: Option<String>) {
        if let Some(t) = self {
            t.event(event, detail);
        }
    }
}

/// Sends `record` once the writer thread has room. On a runtime's worker (the mock of a
/// flood case waiting for the disk, with other cases on the same runtime), the runtime
/// first moves this worker's other tasks to another thread, so their timers and sockets are
/// not held up for as long as the writer takes.
fn wait_to_send(tx: &SyncSender<Record>, record: Record) -> bool {
    let on_worker = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_worker {
        tokio::task::block_in_place(|| tx.send(record).is_ok())
    } else {
        tx.send(record).is_ok()
    }
}

fn write_records(rx: Receiver<Record>, mut out: BufWriter<File>, progress: &Progress) {
    let mut line = Vec::with_capacity(256);
    let mut written: u64 = 0;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            line.clear();
            render(&record, &mut line);
            if out.write_all(&line).is_err() {
                return;
            }
            written += 1;
            next = rx.try_recv().ok();
        }
        // Flush whenever the queue runs dry: a reader of the file sees every record as soon
        // as the mock goes idle, and a busy mock still writes in large blocks.
        if out.flush().is_err() {
            return;
        }
        progress.set_written(written);
    }
    let _ = out.flush();
}

/// True when `text` can be shown as a JSON string that a person can read.
fn is_plain_text(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// Appends `text` as a JSON string.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    // Serialising a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Writes the fields in a fixed order (time, connection, what, payload) so the file reads
/// well line after line.
fn render(record: &Record, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let _ = write!(out, "{{\"t_us\":{}", record.t_us);
    match &record.body {
        Body::Bytes {
            conn,
            dir,
            at,
            data,
        } => {
            let dir = match dir {
                Direction::In => "in",
                Direction::Out => "out",
            };
            let _ = write!(out, ",\"conn\":{conn},\"dir\":\"{dir}\",\"at\":{at}");
            match std::str::from_utf8(data) {
                Ok(text) if is_plain_text(text) => {
                    out.extend_from_slice(b",\"text\":");
                    push_json_string(out, text);
                }
                _ => {
                    out.extend_from_slice(b",\"b64\":\"");
                    out.extend_from_slice(
                        base64::engine::general_purpose::STANDARD
                            .encode(data)
                            .as_bytes(),
                    );
                    out.push(b'"');
                }
            }
        }
        Body::Event {
            conn,
            event,
            detail,
        } => {
            if let Some(conn) = conn {
                let _ = write!(out, ",\"conn\":{conn}");
            }
            out.extend_from_slice(b",\"event\":");
            push_json_string(out, event);
            if let Some(detail) = detail {
                out.extend_from_slice(b",\"detail\":");
                push_json_string(out, detail);
            }
        }
        Body::Fields { event, fields } => {
            out.extend_from_slice(b",\"event\":");
            push_json_string(out, event);
            for (key, value) in fields {
                out.push(b',');
                push_json_string(out, key);
                out.push(b':');
                // Serialising a JSON value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, value);
            }
        }
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(body: Body) -> serde_json::Value {
        let mut out = Vec::new();
        render(&Record { t_us: 7, body }, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert!(out.starts_with(b"{\"t_us\":7,"), "time first");
        serde_json::from_slice(&out).expect("one JSON object per line")
    }

    #[test]
    fn text_bytes_are_a_json_string() {
        let v = rendered(Body::Bytes {
            conn: 3,
            dir: Direction::Out,
            at: 40,
            data: b"{\"return\": {}}\n".to_vec(),
        });
        assert_eq!(
            v,
            serde_json::json!({"t_us": 7, "conn": 3, "dir": "out", "at": 40, "text": "{\"return\": {}}\n"})
        );
    }

    #[test]
    fn binary_bytes_are_base64() {
        let v = rendered(Body::Bytes {
            conn: 1,
            dir: Direction::In,
            at: 0,
            data: vec![0xff, b'{'],
        });
        assert_eq!(
            v,
            serde_json::json!({"t_us": 7, "conn": 1, "dir": "in", "at": 0, "b64": "/3s="})
        );
        let nul = rendered(Body::Bytes {
            conn: 1,
            dir: Direction::In,
            at: 2,
            data: b"a\0b".to_vec(),
        });
        assert_eq!(nul["b64"], "YQBi");
    }

    #[test]
    fn events_carry_conn_only_when_they_have_one() {
        let v = rendered(Body::Event {
            conn: None,
            event: "agent-killed",
            detail: None,
        });
        assert_eq!(v, serde_json::json!({"t_us": 7, "event": "agent-killed"}));
        let v = rendered(Body::Event {
            conn: Some(2),
            event: "disconnected",
            detail: Some("eof".into()),
        });
        assert_eq!(
            v,
            serde_json::json!({"t_us": 7, "conn": 2, "event": "disconnected", "detail": "eof"})
        );
    }

    #[tokio::test]
    async fn every_record_is_on_disk_after_finish() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.jsonl");
        let writer = TranscriptWriter::create(&path, Instant::now()).expect("create");
        let handle = writer.handle();
        for i in 0..5000u64 {
            handle.bytes(i, Direction::In, 0, b"x");
        }
        drop(handle);
        writer.finish();
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 5000);
    }
}
