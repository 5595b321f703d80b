//! The proxy's connection to the real agent: one request at a time, one reply line back.
//!
//! The real agent is single-threaded and answers in order, one line per reply (qemu-ga
//! ends every reply with `\n` and escapes any newline inside strings), so the line that
//! follows a forwarded request is its reply. A command that sends no reply on success
//! (guest-shutdown, guest-suspend-*) gets a grace period for an error reply; after it the
//! proxy counts it as answered by silence, as the agent's own schema says.
//!
//! The connection belongs to one agent process of the proxy: it is opened at the first
//! request and closed when the process dies (a fault or `ctl kill`), so the real agent sees
//! a client leave as it would when a host client's connection ends.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::channel::Transcript;
use crate::client::is_no_reply_command;
use crate::wire::{write_json, Value};

/// How long a no-reply command waits for an error reply (the reference client's grace).
const NO_REPLY_GRACE: Duration = crate::client::DEFAULT_NO_REPLY_GRACE;

/// The longest reply line taken from the real agent; a longer one is passed on in pieces
/// of this size, so memory stays bounded (qemu-ga's own replies stay below 48 MiB).
const LINE_LIMIT: usize = 64 << 20;

/// The real agent's socket, as one agent process of the proxy uses it.
#[derive(Debug)]
pub(crate) struct Upstream {
    path: PathBuf,
    stream: Option<UnixStream>,
    /// Bytes read after the last reply line.
    pending: Vec<u8>,
    transcript: Option<Transcript>,
}

impl Upstream {
    pub(crate) fn new(path: PathBuf, transcript: Option<Transcript>) -> Self {
        Self {
            path,
            stream: None,
            pending: Vec::new(),
            transcript,
        }
    }

    fn record(&self, event: &'static str, detail: String) {
        if let Some(t) = &self.transcript {
            t.event(event, Some(detail));
        }
    }

    fn record_bytes(&self, dir: &'static str, bytes: &[u8]) {
        if let Some(t) = &self.transcript {
            t.upstream_bytes(dir, bytes);
        }
    }

    async fn connection(&mut self) -> Option<&mut UnixStream> {
        if self.stream.is_none() {
            match UnixStream::connect(&self.path).await {
                Ok(stream) => {
                    self.record("upstream-connected", self.path.display().to_string());
                    self.pending.clear();
                    self.stream = Some(stream);
                }
                Err(e) => {
                    self.record(
                        "upstream-failed",
                        format!("cannot connect to {}: {e}", self.path.display()),
                    );
                    return None;
                }
            }
        }
        self.stream.as_mut()
    }

    fn lost(&mut self, detail: String) {
        if self.stream.take().is_some() {
            self.record("upstream-closed", detail);
        }
        self.pending.clear();
    }

    /// Sends `request` to the real agent and returns its reply line, or `None` when it
    /// sends none: a no-reply command's silence, or an agent that is gone (the next request
    /// connects again). A hung agent keeps this waiting, as it keeps a real client waiting.
    pub(crate) async fn forward(&mut self, request: &Value) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        write_json(request, &mut bytes);
        let no_reply = request
            .as_object()
            .and_then(|o| o.get("execute"))
            .and_then(Value::as_str)
            .is_some_and(is_no_reply_command);
        let stream = self.connection().await?;
        if let Err(e) = stream.write_all(&bytes).await {
            self.lost(format!("write failed: {e}"));
            return None;
        }
        self.record_bytes("to-agent", &bytes);
        if no_reply {
            tokio::time::timeout(NO_REPLY_GRACE, self.reply_line())
                .await
                .ok()
                .flatten()
        } else {
            self.reply_line().await
        }
    }

    /// The next line from the real agent (a leading 0xFF included), or `None` at EOF.
    async fn reply_line(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                self.record_bytes("from-agent", &line);
                return Some(line);
            }
            if self.pending.len() >= LINE_LIMIT {
                let piece = std::mem::take(&mut self.pending);
                self.record_bytes("from-agent", &piece);
                return Some(piece);
            }
            let stream = self.stream.as_mut()?;
            match stream.read(&mut buf).await {
                Ok(0) => {
                    self.lost("eof".into());
                    return None;
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(format!("read failed: {e}"));
                    return None;
                }
            }
        }
    }
}
