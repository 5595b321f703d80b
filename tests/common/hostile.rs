//! Scripted agents for client tests: a unix socket in a temp dir whose every byte of
//! output is written by the test, so each hostile behaviour is exact and repeatable.
//!
//! The script runs once per accepted connection, one connection at a time (as qemu-ga
//! serves them), and gets a [`Peer`] that reads the client's requests (QEMU frames input
//! by brace balance, not lines, so requests are parsed as a JSON stream) and writes any
//! bytes back. Every request received is logged, so tests can check what the client sent.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// The line qemu-ga 7.2 sends for each 0xFF it reads (reference qga-wire.md §4).
pub const E_FF: &[u8] =
    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n";

/// A request as received.
#[derive(Clone, Debug)]
pub struct Logged {
    pub request: Value,
    /// A 0xFF came right before it.
    pub flushed: bool,
}

/// A scripted agent, stopped when dropped.
pub struct Hostile {
    path: PathBuf,
    log: Arc<Mutex<Vec<Logged>>>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Hostile {
    /// Listens on a fresh socket and runs `script(connection_index, peer)` for each
    /// connection, in order.
    pub fn start<F, Fut>(mut script: F) -> Hostile
    where
        F: FnMut(usize, Peer) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = tempfile::Builder::new()
            .prefix("qga-hostile")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let log = Arc::new(Mutex::new(Vec::new()));
        let task_log = Arc::clone(&log);
        let task = tokio::spawn(async move {
            let mut index = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let peer = Peer {
                    stream,
                    buf: Vec::new(),
                    resets_pending: 0,
                    echo_ids: true,
                    log: Arc::clone(&task_log),
                };
                script(index, peer).await;
                index += 1;
            }
        });
        Hostile {
            path,
            log,
            task,
            _dir: dir,
        }
    }

    /// A well-behaved agent (see [`Peer::serve`]) on every connection.
    pub fn well_behaved() -> Hostile {
        Hostile::start(|_, mut peer| async move { peer.serve().await })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every request received so far, on all connections, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.logged().into_iter().map(|l| l.request).collect()
    }

    /// Every request received so far, with whether a 0xFF preceded it.
    pub fn logged(&self) -> Vec<Logged> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The `execute` names received so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r["execute"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One accepted connection, from the agent's side.
pub struct Peer {
    stream: UnixStream,
    buf: Vec<u8>,
    /// 0xFF bytes read and not yet answered with [`E_FF`].
    resets_pending: usize,
    /// Whether [`Peer::answer`] echoes the request id (qemu-ga ≥ 4.0 does).
    pub echo_ids: bool,
    log: Arc<Mutex<Vec<Logged>>>,
}

impl Peer {
    /// The next request, or `None` at EOF. 0xFF bytes are skipped and remembered, so
    /// [`Peer::answer`] can send one [`E_FF`] per 0xFF first, as qemu-ga does.
    pub async fn request(&mut self) -> Option<Value> {
        let mut flushed = false;
        loop {
            let skip = self
                .buf
                .iter()
                .take_while(|&&b| b == 0xFF || b.is_ascii_whitespace())
                .count();
            let resets = self.buf[..skip].iter().filter(|&&b| b == 0xFF).count();
            self.resets_pending += resets;
            flushed |= resets > 0;
            self.buf.drain(..skip);
            if !self.buf.is_empty() {
                let mut values =
                    serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = values.byte_offset();
                        self.buf.drain(..used);
                        if let Ok(mut log) = self.log.lock() {
                            log.push(Logged {
                                request: value.clone(),
                                flushed,
                            });
                        }
                        return Some(value);
                    }
                    Some(Err(e)) if e.is_eof() => {}
                    Some(Err(e)) => panic!(
                        "client sent bad JSON: {e}: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                    None => {}
                }
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// Reads more bytes; false at EOF or error.
    async fn read_more(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Drops raw input up to and including the first 0xFF, as a parser stuck inside a
    /// previous client's string would; then owes one [`E_FF`]. False at EOF.
    pub async fn swallow_until_reset(&mut self) -> bool {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == 0xFF) {
                self.buf.drain(..=at);
                self.resets_pending += 1;
                return true;
            }
            self.buf.clear();
            if !self.read_more().await {
                return false;
            }
        }
    }

    /// Waits until the client has closed the connection.
    pub async fn wait_eof(&mut self) {
        while self.read_more().await {}
    }

    /// Writes bytes; errors (the client went away) are ignored.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let _ = self.stream.write_all(bytes.as_ref()).await;
    }

    /// Writes bytes one at a time with a pause between them.
    pub async fn drip(&mut self, bytes: impl AsRef<[u8]>, pause: Duration) {
        for b in bytes.as_ref() {
            if self.stream.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Sends the owed [`E_FF`] lines.
    pub async fn flush_resets(&mut self) {
        while self.resets_pending > 0 {
            self.resets_pending -= 1;
            self.send(E_FF).await;
        }
    }

    /// Reads requests until a `guest-sync-delimited`, answering nothing, and returns it.
    pub async fn expect_sync(&mut self) -> Option<Value> {
        loop {
            let req = self.request().await?;
            if req["execute"] == "guest-sync-delimited" {
                return Some(req);
            }
        }
    }

    /// The reply qemu-ga would send to `req` with return value `ret` (the id echoed if
    /// [`Peer::echo_ids`]); a sync-delimited reply gets its 0xFF prefix.
    pub fn reply_bytes(&self, req: &Value, ret: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        if req["execute"] == "guest-sync-delimited" {
            out.push(0xFF);
        }
        let mut reply = json!({ "return": ret });
        if let (true, Some(id)) = (self.echo_ids, req.get("id")) {
            reply["id"] = id.clone();
        }
        out.extend_from_slice(reply.to_string().as_bytes());
        out.push(b'\n');
        out
    }

    /// The error reply qemu-ga would send to `req`.
    pub fn error_bytes(&self, req: &Value, class: &str, desc: &str) -> Vec<u8> {
        let mut reply = json!({ "error": { "class": class, "desc": desc } });
        if let (true, Some(id)) = (self.echo_ids, req.get("id")) {
            reply["id"] = id.clone();
        }
        let mut out = reply.to_string().into_bytes();
        out.push(b'\n');
        out
    }

    /// Answers `req` with `ret`, after the owed [`E_FF`] lines.
    pub async fn answer(&mut self, req: &Value, ret: Value) {
        self.flush_resets().await;
        let bytes = self.reply_bytes(req, &ret);
        self.send(bytes).await;
    }

    /// Answers `req` with an error, after the owed [`E_FF`] lines.
    pub async fn answer_error(&mut self, req: &Value, class: &str, desc: &str) {
        self.flush_resets().await;
        let bytes = self.error_bytes(req, class, desc);
        self.send(bytes).await;
    }

    /// What a plain agent returns for `req`: the sync id for syncs, `{}` otherwise,
    /// `None` (no reply) for shutdown and suspend.
    pub fn default_return(req: &Value) -> Option<Value> {
        match req["execute"].as_str() {
            Some("guest-sync" | "guest-sync-delimited") => Some(req["arguments"]["id"].clone()),
            Some(
                "guest-shutdown"
                | "guest-suspend-disk"
                | "guest-suspend-ram"
                | "guest-suspend-hybrid",
            ) => None,
            Some("guest-get-host-name") => Some(json!({"host-name": "scripted"})),
            _ => Some(json!({})),
        }
    }

    /// Answers every request as a plain agent would, until EOF.
    pub async fn serve(&mut self) {
        while let Some(req) = self.request().await {
            self.serve_one(&req).await;
        }
    }

    /// Answers one request as a plain agent would.
    pub async fn serve_one(&mut self, req: &Value) {
        match Self::default_return(req) {
            Some(ret) => self.answer(req, ret).await,
            None => self.flush_resets().await,
        }
    }

    /// Serves until a request other than a sync arrives, and returns it unanswered.
    pub async fn next_command(&mut self) -> Option<Value> {
        loop {
            let req = self.request().await?;
            if req["execute"] == "guest-sync-delimited" {
                self.serve_one(&req).await;
            } else {
                return Some(req);
            }
        }
    }
}
