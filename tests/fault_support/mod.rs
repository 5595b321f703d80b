//! Shared by the fault tests: a plain socket client that reads with deadlines on the
//! mock's clock, and transcript readers.
//!
//! The tests run with tokio's clock paused, so "no bytes for 5 s" costs no real time:
//! when nothing else can happen, the clock jumps to the next timer. Every wait has a
//! deadline that only turns a hang into a failure with a message.

#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;
use std::time::Duration;

use qga_harness::{MockAgent, MockAgentBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// How long a test waits for bytes that must come.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How long a test waits to be sure that no more bytes come.
pub const QUIET: Duration = Duration::from_secs(5);

pub fn show(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

pub fn ping(id: u64) -> Vec<u8> {
    format!(r#"{{"execute":"guest-ping","id":{id}}}"#).into_bytes()
}

pub fn ping_reply(id: u64) -> Vec<u8> {
    format!("{{\"return\": {{}}, \"id\": {id}}}\n").into_bytes()
}

pub fn execute(command: &str, id: u64) -> Vec<u8> {
    format!(r#"{{"execute":"{command}","id":{id}}}"#).into_bytes()
}

pub fn sync(id: i64) -> Vec<u8> {
    format!(r#"{{"execute":"guest-sync","arguments":{{"id":{id}}}}}"#).into_bytes()
}

pub fn sync_delimited(id: i64) -> Vec<u8> {
    format!(r#"{{"execute":"guest-sync-delimited","arguments":{{"id":{id}}}}}"#).into_bytes()
}

/// A mock with these `--fault` specs, in a temp dir.
pub async fn mock_with(dir: &tempfile::TempDir, specs: &[&str]) -> MockAgent {
    builder_with(specs)
        .transcript(dir.path().join("transcript.jsonl"))
        .start_in(dir.path())
        .await
        .expect("start the mock")
}

pub fn builder_with(specs: &[&str]) -> MockAgentBuilder {
    specs.iter().fold(MockAgent::builder(), |b, spec| {
        b.fault(qga_harness::fault::parse_spec(spec).expect("valid spec"))
    })
}

/// A host client on a real unix socket.
pub struct Client {
    stream: UnixStream,
}

/// What one wait for bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Bytes(Vec<u8>),
    Eof,
    Quiet,
}

impl Client {
    pub async fn connect(path: &Path) -> Client {
        let stream = tokio::time::timeout(PATIENCE, UnixStream::connect(path))
            .await
            .expect("connect in time")
            .expect("connect");
        Client { stream }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(PATIENCE, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// One read, or EOF, or nothing within `wait`.
    pub async fn read_within(&mut self, wait: Duration) -> Got {
        let mut buf = vec![0u8; 1 << 20];
        match tokio::time::timeout(wait, self.stream.read(&mut buf)).await {
            Err(_) => Got::Quiet,
            Ok(Ok(0)) => Got::Eof,
            Ok(Ok(n)) => {
                buf.truncate(n);
                Got::Bytes(buf)
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Got::Eof,
            Ok(Err(e)) => panic!("read: {e}"),
        }
    }

    /// Exactly `n` bytes (fails on EOF or a long silence).
    pub async fn exact(&mut self, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        tokio::time::timeout(PATIENCE, self.stream.read_exact(&mut got))
            .await
            .unwrap_or_else(|_| panic!("{n} bytes did not come within {PATIENCE:?}"))
            .expect("read");
        got
    }

    /// Reads exactly as many bytes as `expected` has and checks them.
    pub async fn expect(&mut self, expected: &[u8]) {
        let got = self.exact(expected.len()).await;
        assert_eq!(show(&got), show(expected));
    }

    /// Everything that arrives until the line goes quiet for [`QUIET`].
    pub async fn until_quiet(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            match self.read_within(QUIET).await {
                Got::Bytes(b) => all.extend(b),
                Got::Quiet => return all,
                Got::Eof => panic!("EOF after {}", show(&all)),
            }
        }
    }

    /// Asserts that nothing (no bytes, no EOF) arrives for [`QUIET`].
    pub async fn expect_quiet(&mut self) {
        match self.read_within(QUIET).await {
            Got::Quiet => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Asserts that the next thing is EOF (no bytes before it).
    pub async fn expect_eof(&mut self) {
        match self.read_within(PATIENCE).await {
            Got::Eof => {}
            other => panic!("expected EOF, got {other:?}"),
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

/// The transcript's records, once the mock is shut down.
pub fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("read the transcript")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The bytes of one transcript record (`text` or `b64`).
pub fn record_bytes(record: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    match (record.get("text"), record.get("b64")) {
        (Some(t), _) => t.as_str().expect("text").as_bytes().to_vec(),
        (_, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_str().expect("b64"))
            .expect("base64"),
        _ => Vec::new(),
    }
}

/// The writes the mock made to its clients, one entry per write.
pub fn writes_out(records: &[serde_json::Value]) -> Vec<Vec<u8>> {
    records
        .iter()
        .filter(|r| r.get("dir").and_then(|d| d.as_str()) == Some("out"))
        .map(record_bytes)
        .collect()
}

/// Elapsed time since `start` on the mock's clock.
pub fn since(start: Instant) -> Duration {
    start.elapsed()
}
