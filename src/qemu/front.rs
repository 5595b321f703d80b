//! The harness in front of QEMU's chardev socket: the client under test connects here, and
//! each of its connections is relayed to QEMU's socket on a connection of its own, so the
//! host side's connections and bytes are recorded (QEMU records nothing, and the guest
//! cannot see host connections). The record is a transcript in the mock's format (see
//! the channel module's transcript docs): `mock-started`, then per connection
//! `connected`, the bytes both ways as they crossed, and `disconnected`.
//!
//! It keeps QEMU's semantics: one client at a time, the others wait in the listen backlog;
//! a client's EOF ends its connection at once (QEMU drops a half-closed client), which
//! also closes the relayed connection, so replies still in the guest go to the next
//! client, as with QEMU; QEMU closing (the VM exited) closes the client. Bytes are read
//! from the client only as fast as QEMU takes them, so backpressure reaches the client.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;

/// The most read from either side at once.
const CHUNK: usize = 64 * 1024;

/// A transcript file in the mock's format, written as records come.
#[derive(Clone, Debug)]
pub struct FrontRecord {
    inner: Arc<Mutex<std::io::BufWriter<std::fs::File>>>,
    origin: Instant,
}

impl FrontRecord {
    /// Creates (truncates) the file; its clock starts now.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        let record = Self {
            inner: Arc::new(Mutex::new(std::io::BufWriter::new(file))),
            origin: Instant::now(),
        };
        record.write(serde_json::json!({"event": "mock-started", "detail": "virtio-serial"}));
        Ok(record)
    }

    fn write(&self, mut value: serde_json::Value) {
        let t_us = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut map = serde_json::Map::new();
        map.insert("t_us".into(), t_us.into());
        if let serde_json::Value::Object(fields) = value.take() {
            map.extend(fields);
        }
        let mut out = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = serde_json::to_writer(&mut *out, &map);
        let _ = out.write_all(b"\n");
    }

    /// Microseconds on the record's clock now.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// A life event without a connection (`agent-killed`, `vm-exit`...).
    pub fn event(&self, event: &str, detail: Option<&str>) {
        let mut value = serde_json::json!({ "event": event });
        if let Some(detail) = detail {
            value["detail"] = detail.into();
        }
        self.write(value);
    }

    fn conn_event(&self, conn: u64, event: &str, detail: Option<&str>) {
        let mut value = serde_json::json!({ "conn": conn, "event": event });
        if let Some(detail) = detail {
            value["detail"] = detail.into();
        }
        self.write(value);
    }

    fn bytes(&self, conn: u64, dir: &str, at: u64, data: &[u8]) {
        let mut value = serde_json::json!({ "conn": conn, "dir": dir, "at": at });
        match std::str::from_utf8(data) {
            Ok(text)
                if !text
                    .chars()
                    .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) =>
            {
                value["text"] = text.into();
            }
            _ => {
                value["b64"] = base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .into()
            }
        }
        self.write(value);
    }

    /// Writes everything out.
    pub fn flush(&self) {
        let _ = self.inner.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// Serves clients on `listener`, relaying each to `upstream`, until dropped.
pub async fn serve_front(listener: UnixListener, upstream: PathBuf, record: FrontRecord) {
    let mut number = 0u64;
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        number += 1;
        record.conn_event(number, "connected", None);
        let detail = match UnixStream::connect(&upstream).await {
            Ok(qemu) => relay(client, qemu, number, &record).await,
            Err(e) => format!("QEMU's socket refused: {e}"),
        };
        record.conn_event(number, "disconnected", Some(&detail));
        record.flush();
    }
}

/// Moves bytes both ways until either side ends; returns why. The two directions run
/// independently, so a blocked write one way never stops the other.
async fn relay(client: UnixStream, qemu: UnixStream, conn: u64, record: &FrontRecord) -> String {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut qemu_read, mut qemu_write) = qemu.into_split();
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0u64;
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) => return "eof".to_owned(),
                Ok(n) => {
                    record.bytes(conn, "in", at, &buf[..n]);
                    at += n as u64;
                    if let Err(e) = qemu_write.write_all(&buf[..n]).await {
                        return format!("vm-exit ({e})");
                    }
                }
                Err(e) => return e.to_string(),
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        let mut at = 0u64;
        loop {
            match qemu_read.read(&mut buf).await {
                Ok(0) => return "vm-exit".to_owned(),
                Ok(n) => {
                    record.bytes(conn, "out", at, &buf[..n]);
                    at += n as u64;
                    if let Err(e) = client_write.write_all(&buf[..n]).await {
                        return e.to_string();
                    }
                }
                Err(e) => return format!("vm-exit ({e})"),
            }
        }
    };
    tokio::select! {
        why = up => why,
        why = down => why,
    }
}
