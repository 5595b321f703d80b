//! qga-harness session adapter for the crates.io crate `qapi` (features `qga`,
//! `async-tokio-all`).
//!
//! It uses the crate the way its tokio example (`examples/src/bin/tokio_guest_info.rs`)
//! does: `QgaStreamTokio::open_uds`, `spawn_tokio`, one `guest_sync` with a value taken
//! from an address, then `execute` with the crate's generated command types
//! (`qapi::qga::guest_info {}` and so on). Each call is wrapped in
//! `tokio::time::timeout` with the step's timeout, which a careful user adds since the
//! crate has none. Nothing the crate does wrong is corrected here; its results are only
//! translated into the session contract.
//!
//! Session contract (one JSON line per step on stdin, one answer line on stdout):
//!   in:  `{"id": N, "execute": NAME, "arguments": {...}, "timeout_ms": T}`
//!   out: `{"id": N, "return": V}` or `{"id": N, "error": {"class": C, "desc": D}}`
//! Client-side failures use the classes `Timeout`, `Disconnected` and `Protocol`; an
//! agent's error keeps its own class. A step the crate's typed API cannot express (a
//! command it has no type for, arguments its type would change or drop) answers the
//! class `Unsupported`.
//!
//! Usage: `qapi-session SOCKET`

mod commands;
mod log_capture;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use qapi::futures::{QapiService, QgaStreamTokio};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

/// The write half as the crate's `open_uds` returns it.
pub(crate) type Writer = QgaStreamTokio<tokio::io::WriteHalf<UnixStream>>;
/// The crate's command service over that writer.
pub(crate) type Service = QapiService<Writer>;

/// Why a step failed, in the session contract's terms.
#[derive(Debug)]
pub(crate) struct Failure {
    class: String,
    desc: String,
}

impl Failure {
    pub(crate) fn new(class: &str, desc: impl Into<String>) -> Failure {
        Failure {
            class: class.to_string(),
            desc: desc.into(),
        }
    }
}

/// One parsed step line.
struct Step {
    id: Value,
    execute: String,
    arguments: Value,
    timeout: Duration,
}

fn parse_step(line: &str) -> Result<Step, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let object = value.as_object().ok_or("a step must be a JSON object")?;
    let execute = object
        .get("execute")
        .and_then(Value::as_str)
        .ok_or("a step needs a string 'execute'")?
        .to_string();
    let arguments = match object.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err("'arguments' must be an object".into()),
    };
    let timeout_ms = match object.get("timeout_ms") {
        None => 3000,
        Some(v) => v
            .as_u64()
            .ok_or("'timeout_ms' must be a non-negative integer")?,
    };
    Ok(Step {
        id: object.get("id").cloned().unwrap_or(Value::Null),
        execute,
        arguments,
        timeout: Duration::from_millis(timeout_ms),
    })
}

/// The connection as the crate leaves it.
enum Connection {
    /// Not opened yet, or the last open or sync failed: the next step opens a new one,
    /// as the example would on its next run.
    Closed,
    /// Opened and synced once. Kept for the rest of the session whatever happens to it:
    /// the crate offers no way to tell a dead stream from a live one except by using it.
    Open {
        service: Arc<Service>,
        _events: JoinHandle<()>,
    },
}

struct Session {
    socket: PathBuf,
    connection: Connection,
}

impl Session {
    /// Opens and syncs as the crate's example does; the step's timeout bounds the sync.
    async fn open(&mut self, timeout: Duration) -> Result<Arc<Service>, Failure> {
        if let Connection::Open { service, .. } = &self.connection {
            return Ok(service.clone());
        }
        let stream = QgaStreamTokio::open_uds(&self.socket)
            .await
            .map_err(|e| Failure::new("Disconnected", format!("open_uds: {e}")))?;
        let (service, events) = stream.spawn_tokio();
        let service = Arc::new(service);
        // The example's sync value: the address of the service, cast down.
        let sync_value = Arc::as_ptr(&service) as usize as i32;
        let sync = {
            let service = service.clone();
            tokio::spawn(async move {
                tokio::time::timeout(timeout, service.guest_sync(sync_value)).await
            })
        };
        match sync.await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(commands::execute_failure("guest_sync", e)),
            Ok(Err(_elapsed)) => {
                return Err(Failure::new(
                    "Timeout",
                    format!("guest_sync: no reply within {} ms", timeout.as_millis()),
                ))
            }
            Err(join) => return Err(commands::join_failure("guest_sync", join)),
        }
        self.connection = Connection::Open {
            service: service.clone(),
            _events: events,
        };
        Ok(service)
    }

    async fn step(&mut self, step: &Step) -> Result<Value, Failure> {
        let call = commands::Call::parse(&step.execute, &step.arguments)?;
        let service = self.open(step.timeout).await?;
        call.run(service, step.timeout).await
    }
}

async fn answer(out: &mut tokio::io::Stdout, value: Value) -> io::Result<()> {
    let mut line = value.to_string();
    line.push('\n');
    out.write_all(line.as_bytes()).await?;
    out.flush().await
}

#[tokio::main]
async fn main() {
    log_capture::install();
    let mut args = std::env::args_os().skip(1);
    let (Some(socket), None) = (args.next(), args.next()) else {
        eprintln!("usage: qapi-session SOCKET");
        std::process::exit(2);
    };
    let mut session = Session {
        socket: PathBuf::from(socket),
        connection: Connection::Closed,
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                eprintln!("qapi-session: reading stdin: {e}");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match parse_step(&line) {
            Err(e) => {
                json!({"id": null, "error": {"class": "Protocol", "desc": format!("bad step line: {e}")}})
            }
            Ok(step) => match session.step(&step).await {
                Ok(value) => json!({"id": step.id, "return": value}),
                Err(f) => json!({"id": step.id, "error": {"class": f.class, "desc": f.desc}}),
            },
        };
        if let Err(e) = answer(&mut out, reply).await {
            eprintln!("qapi-session: writing stdout: {e}");
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_line_parses_with_defaults() {
        let step = parse_step(r#"{"id": 7, "execute": "guest-ping"}"#).expect("valid step");
        assert_eq!(step.id, json!(7));
        assert_eq!(step.execute, "guest-ping");
        assert_eq!(step.arguments, json!({}));
        assert_eq!(step.timeout, Duration::from_millis(3000));
        let step = parse_step(
            r#"{"id": 8, "execute": "guest-sync", "arguments": {"id": 1}, "timeout_ms": 250}"#,
        )
        .expect("valid step");
        assert_eq!(step.arguments, json!({"id": 1}));
        assert_eq!(step.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_step_lines_are_refused() {
        for line in [
            "",
            "[]",
            r#"{"id": 1}"#,
            r#"{"id": 1, "execute": 5}"#,
            r#"{"id": 1, "execute": "guest-ping", "arguments": []}"#,
            r#"{"id": 1, "execute": "guest-ping", "timeout_ms": -1}"#,
        ] {
            assert!(parse_step(line).is_err(), "{line}");
        }
    }
}
