//! The control socket: JSON lines that change a running mock's fault rules and drive its
//! agent's life, while the mock's clients stay connected.
//!
//! One request per line, one answer per line, in order; any number of control clients at
//! once. Requests:
//!
//! | request | answer |
//! |---|---|
//! | `{"op": "add", "rule": RULE}` or `{"op": "add", "spec": "SPEC"}` | `{"ok": true, "id": N}` |
//! | `{"op": "list"}` | `{"ok": true, "rules": [{"id": N, "fired": K, "rule": RULE}, ...]}` |
//! | `{"op": "remove", "id": N}` | `{"ok": true}` |
//! | `{"op": "clear"}` | `{"ok": true, "removed": K}` |
//! | `{"op": "life", "do": "start\|stop\|kill\|hang\|resume\|restart\|vm-exit", "after_ms": N}` | `{"ok": true, "state": "running"}` |
//! | `{"op": "status"}` | `{"ok": true, "state": ..., "seed": ..., "rules": K, "requests": N, "channel": {...}}` |
//!
//! `after_ms` goes with `restart` only (the agent is down that long). A line that is not a
//! valid request gets `{"ok": false, "error": "..."}` naming what was wrong, and the
//! connection goes on. A life command waits until it took effect (`stop` waits for the
//! agent to finish what it read).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::bind::{bind_socket, remove_socket_file, BindError};
use super::faults::FaultHub;
use crate::fault::{self, spec::suggest, Rule};
use crate::{AgentLife, AgentState, LifeError};

/// The longest request line; a longer one is answered with an error and skipped.
const LINE_LIMIT: usize = 1 << 20;

/// Control clients queue in a listen backlog of this size.
const BACKLOG: libc::c_int = 16;

/// A pause after a failed accept, so a persistent failure does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

const OPS: &[&str] = &["add", "list", "remove", "clear", "life", "status"];
const LIFE_OPS: &[&str] = &[
    "start", "stop", "kill", "hang", "resume", "restart", "vm-exit",
];

/// The bound control socket, ready to serve; its file is removed when it is dropped.
#[derive(Debug)]
pub(crate) struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    hub: Arc<FaultHub>,
    life: AgentLife,
    /// Requests being answered: a vm-exit ends the mock while its own answer is on the way.
    in_flight: Arc<watch::Sender<usize>>,
}

impl ControlServer {
    /// Creates the socket at `path` (a stale socket file there is replaced).
    pub(crate) fn bind(
        path: &Path,
        hub: Arc<FaultHub>,
        life: AgentLife,
    ) -> Result<ControlServer, BindError> {
        let listener = bind_socket(path)?;
        // Listening again only changes the backlog: control clients may come in bursts.
        // SAFETY: the descriptor is the listener's own and stays open for the call.
        unsafe {
            libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), BACKLOG);
        }
        let listener = UnixListener::from_std(listener).map_err(|source| BindError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            hub,
            life,
            in_flight: Arc::new(watch::channel(0).0),
        })
    }

    /// Completes once no request is being answered.
    pub(crate) async fn settled(&self) {
        let mut count = self.in_flight.subscribe();
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// Serves control clients until dropped.
    pub(crate) async fn run(&self) -> Infallible {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let hub = self.hub.clone();
                        let life = self.life.clone();
                        let in_flight = self.in_flight.clone();
                        connections.spawn(serve_connection(stream, hub, life, in_flight));
                    }
                    Err(_) => tokio::time::sleep(ACCEPT_RETRY).await,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        remove_socket_file(&self.path);
    }
}

async fn serve_connection(
    mut stream: UnixStream,
    hub: Arc<FaultHub>,
    life: AgentLife,
    in_flight: Arc<watch::Sender<usize>>,
) {
    let mut pending = Vec::new();
    let mut skipping = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(at) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            if std::mem::take(&mut skipping) {
                continue;
            }
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            in_flight.send_modify(|n| *n += 1);
            let answer = answer(line, &hub, &life).await;
            let written = write_line(&mut stream, &answer).await;
            in_flight.send_modify(|n| *n -= 1);
            if written.is_err() {
                return;
            }
        }
        if pending.len() > LINE_LIMIT {
            pending.clear();
            if !skipping {
                skipping = true;
                let answer = failure(format!(
                    "the request line is longer than {LINE_LIMIT} bytes; one JSON object per line"
                ));
                if write_line(&mut stream, &answer).await.is_err() {
                    return;
                }
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

async fn write_line(stream: &mut UnixStream, answer: &Value) -> std::io::Result<()> {
    let mut line = answer.to_string().into_bytes();
    line.push(b'\n');
    stream.write_all(&line).await
}

fn failure(error: String) -> Value {
    json!({"ok": false, "error": error})
}

/// Answers one request line.
pub(crate) async fn answer(line: &[u8], hub: &FaultHub, life: &AgentLife) -> Value {
    match handle(line, hub, life).await {
        Ok(mut answer) => {
            answer.insert("ok".into(), Value::Bool(true));
            Value::Object(answer)
        }
        Err(error) => failure(error),
    }
}

fn ok() -> Map<String, Value> {
    Map::new()
}

/// Checks that `request` has only `allowed` members besides `op`.
fn only(request: &Map<String, Value>, op: &str, allowed: &[&str]) -> Result<(), String> {
    for key in request.keys() {
        if key != "op" && !allowed.contains(&key.as_str()) {
            let expected = if allowed.is_empty() {
                "it takes no other members".to_owned()
            } else {
                format!("expected {}", allowed.join(" or "))
            };
            return Err(format!(
                "unknown member \"{key}\" for op \"{op}\"{}: {expected}",
                suggest(key, allowed)
            ));
        }
    }
    Ok(())
}

fn whole_number(request: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match request.get(key) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("\"{key}\" must be a whole number ≥ 0, found {value}")),
    }
}

async fn handle(
    line: &[u8],
    hub: &FaultHub,
    life: &AgentLife,
) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| format!("not JSON ({e}); send one JSON object per line"))?;
    let Value::Object(request) = value else {
        return Err(format!(
            "expected a JSON object such as {{\"op\": \"list\"}}, found {value}"
        ));
    };
    let op = match request.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(other) => return Err(format!("\"op\" must be a string, found {other}")),
        None => {
            return Err(format!(
                "missing \"op\": expected one of {}",
                OPS.join(", ")
            ))
        }
    };
    match op.as_str() {
        "add" => {
            only(&request, "add", &["rule", "spec"])?;
            let rule: Rule = match (request.get("rule"), request.get("spec")) {
                (Some(rule), None) => serde_json::from_value(rule.clone())
                    .map_err(|e| format!("\"rule\" is not a fault rule: {e}"))?,
                (None, Some(Value::String(spec))) => {
                    fault::parse_spec(spec).map_err(|e| e.to_string())?
                }
                (None, Some(other)) => {
                    return Err(format!("\"spec\" must be a string, found {other}"))
                }
                (Some(_), Some(_)) => {
                    return Err("give either \"rule\" or \"spec\", not both".into())
                }
                (None, None) => {
                    return Err(
                        "add needs \"rule\" (a JSON rule) or \"spec\" (a --fault spec)".into(),
                    )
                }
            };
            let id = hub
                .add(rule)
                .map_err(|e| format!("the rule cannot be carried out: {e}"))?;
            let mut answer = ok();
            answer.insert("id".into(), id.into());
            Ok(answer)
        }
        "list" => {
            only(&request, "list", &[])?;
            let rules: Vec<Value> = hub
                .list()
                .into_iter()
                .map(|listed| {
                    json!({
                        "id": listed.id,
                        "fired": listed.fired,
                        "rule": serde_json::to_value(&listed.rule).unwrap_or_default(),
                    })
                })
                .collect();
            let mut answer = ok();
            answer.insert("rules".into(), rules.into());
            Ok(answer)
        }
        "remove" => {
            only(&request, "remove", &["id"])?;
            let id = whole_number(&request, "id")?
                .ok_or("remove needs \"id\", the rule's id from add or list")?;
            if hub.remove(id) {
                Ok(ok())
            } else {
                Err(format!(
                    "no rule with id {id}; list shows the rules and their ids"
                ))
            }
        }
        "clear" => {
            only(&request, "clear", &[])?;
            let mut answer = ok();
            answer.insert("removed".into(), hub.clear().into());
            Ok(answer)
        }
        "life" => {
            only(&request, "life", &["do", "after_ms"])?;
            let action = match request.get("do") {
                Some(Value::String(action)) => action.as_str(),
                Some(other) => return Err(format!("\"do\" must be a string, found {other}")),
                None => return Err(format!("life needs \"do\": one of {}", LIFE_OPS.join(", "))),
            };
            let after = whole_number(&request, "after_ms")?;
            if after.is_some() && action != "restart" {
                return Err(format!(
                    "\"after_ms\" goes with \"restart\" only, not with \"{action}\""
                ));
            }
            let state = match action {
                "start" => life.start().await,
                "stop" => life.stop().await,
                "kill" => life.kill().await,
                "hang" => life.hang().await,
                "resume" => life.resume().await,
                "restart" => {
                    life.restart_after(Duration::from_millis(after.unwrap_or(0)))
                        .await
                }
                "vm-exit" => life.vm_exit().await,
                other => {
                    return Err(format!(
                        "unknown life action \"{other}\"{}: expected one of {}",
                        suggest(other, LIFE_OPS),
                        LIFE_OPS.join(", ")
                    ))
                }
            }
            .map_err(|e: LifeError| e.to_string())?;
            let mut answer = ok();
            answer.insert("state".into(), state_name(state).into());
            Ok(answer)
        }
        "status" => {
            only(&request, "status", &[])?;
            let channel = life.channel_status();
            let mut answer = ok();
            answer.insert("state".into(), state_name(life.state()).into());
            answer.insert("seed".into(), hub.seed().into());
            answer.insert("rules".into(), hub.list().len().into());
            answer.insert("requests".into(), hub.requests().into());
            answer.insert(
                "channel".into(),
                json!({
                    "accepted": channel.accepted,
                    "serving": channel.serving,
                    "bytes_in": channel.bytes_in,
                    "bytes_out": channel.bytes_out,
                }),
            );
            Ok(answer)
        }
        other => Err(format!(
            "unknown op \"{other}\"{}: expected one of {}",
            suggest(other, OPS),
            OPS.join(", ")
        )),
    }
}

fn state_name(state: AgentState) -> String {
    state.to_string()
}
