//! A host client on a real unix socket: reads by line, by count, up to a marker, to EOF,
//! or until the line goes quiet.
//!
//! The fault tests run with tokio's clock paused, so "no bytes for 5 s" costs no real
//! time: when nothing else can happen, the clock jumps to the next timer.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::show;

/// How long a test waits for bytes that must come.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How long a test waits to be sure that no more bytes come.
pub const QUIET: Duration = Duration::from_secs(5);

/// What one wait for bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    Bytes(Vec<u8>),
    Eof,
    Quiet,
}

/// A host client on a real unix socket; bytes read past what a call returned wait in
/// `pending` for the next call.
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

    /// What is pending, else one read, or EOF (a reset counts as EOF), or nothing
    /// within `wait`.
    pub async fn read_within(&mut self, wait: Duration) -> Got {
        if !self.pending.is_empty() {
            return Got::Bytes(std::mem::take(&mut self.pending));
        }
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

    /// One read into `pending`; its length (0 at EOF). Fails on a long silence.
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

    /// Exactly `n` bytes (fails on EOF or a long silence).
    pub async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            assert!(
                self.fill().await > 0,
                "EOF after {} of {n} bytes: {}",
                self.pending.len(),
                show(&self.pending)
            );
        }
        self.pending.drain(..n).collect()
    }

    /// Reads exactly as many bytes as `expected` has and checks them.
    pub async fn expect(&mut self, expected: &[u8]) {
        let got = self.exact(expected.len()).await;
        assert_eq!(show(&got), show(expected));
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
        let mut all = std::mem::take(&mut self.pending);
        loop {
            match self.read_within(PATIENCE).await {
                Got::Bytes(b) => all.extend(b),
                Got::Eof => return all,
                Got::Quiet => panic!("not closed within {PATIENCE:?}; got {}", show(&all)),
            }
        }
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
