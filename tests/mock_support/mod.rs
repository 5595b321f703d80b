//! Shared by the mock's integration tests: a plain socket client and request builders.
//!
//! Every wait has a generous deadline that only turns a hang into a failure with a
//! message; the tests synchronise on bytes, life states and channel status, never on time.

#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long any single wait may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn sync(id: i64) -> Vec<u8> {
    format!(r#"{{"execute":"guest-sync","arguments":{{"id":{id}}}}}"#).into_bytes()
}

pub fn sync_reply(id: i64) -> Vec<u8> {
    format!("{{\"return\": {id}}}\n").into_bytes()
}

pub fn sync_delimited(id: i64) -> Vec<u8> {
    format!(r#"{{"execute":"guest-sync-delimited","arguments":{{"id":{id}}}}}"#).into_bytes()
}

pub fn sync_delimited_reply(id: i64) -> Vec<u8> {
    let mut reply = vec![0xff];
    reply.extend(sync_reply(id));
    reply
}

pub fn ping(id: &str) -> Vec<u8> {
    format!(r#"{{"execute":"guest-ping","id":"{id}"}}"#).into_bytes()
}

pub fn ping_reply(id: &str) -> Vec<u8> {
    format!("{{\"return\": {{}}, \"id\": \"{id}\"}}\n").into_bytes()
}

pub fn show(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

/// A host client on a real unix socket.
pub struct Client {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl Client {
    pub async fn connect(path: &Path) -> Client {
        let stream = tokio::time::timeout(PATIENCE, UnixStream::connect(path))
            .await
            .expect("connect in time")
            .expect("connect");
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(PATIENCE, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// Closes the writing half (`shutdown(SHUT_WR)`), as `echo ... | socat` does.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown");
    }

    async fn fill(&mut self) -> usize {
        let mut buf = [0u8; 65536];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no bytes within {PATIENCE:?}; pending: {}",
                    show(&self.pending)
                )
            })
            .expect("read");
        self.pending.extend_from_slice(&buf[..n]);
        n
    }

    /// The next line, newline included. Fails on EOF.
    pub async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                return self.pending.drain(..=at).collect();
            }
            assert!(
                self.fill().await > 0,
                "EOF while waiting for a line; got {}",
                show(&self.pending)
            );
        }
    }

    /// Everything up to EOF.
    pub async fn until_eof(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.pending)
    }

    /// Everything until the peer closed the connection: EOF, or a reset when the peer
    /// closed with bytes of ours still unread (the kernel reports that as ECONNRESET).
    pub async fn until_closed(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 65536];
        loop {
            let read = tokio::time::timeout(PATIENCE, self.stream.read(&mut buf))
                .await
                .expect("closed in time");
            match read {
                Ok(0) => break,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        std::mem::take(&mut self.pending)
    }

    /// Reads and drops bytes until `marker` went by; returns what came before it.
    pub async fn skip_past(&mut self, marker: &[u8], limit: usize) -> Vec<u8> {
        loop {
            if let Some(at) = self.pending.windows(marker.len()).position(|w| w == marker) {
                let before = self.pending[..at].to_vec();
                self.pending.drain(..at + marker.len());
                return before;
            }
            assert!(
                self.pending.len() <= limit,
                "marker {} not found in the first {limit} bytes",
                show(marker)
            );
            assert!(self.fill().await > 0, "EOF before {}", show(marker));
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub fn into_stream(self) -> UnixStream {
        self.stream
    }
}
