//! A small qemu-ga stand-in for the runner's tests: enough of the protocol for the cases
//! here (sync, sync-delimited with its 0xFF, the stray error for a flush, ping, host name,
//! time, id echo, block lists) and the agent states and faults those cases use (a start
//! delay, an agent that never starts, stale output waiting at connect, `delay` and `hang`
//! fault rules). It writes the mock's transcript format. Anything else in a scenario is
//! refused, so a test cannot silently run against behaviour the stand-in lacks.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use qga_harness::fault::{Action, Rule};
use qga_harness::runner::{AgentLauncher, BoxFuture, LaunchError, LaunchRequest, RunningAgent};
use qga_harness::scenario::{AgentSetup, Bytes};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, Default)]
pub struct StandIn;

struct Running {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    transcript: Arc<Transcript>,
}

impl RunningAgent for Running {
    fn stop(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            let _ = (&mut self.task).await;
            let _ = std::fs::remove_file(&self.socket);
            self.transcript.flush();
        })
    }
}

impl AgentLauncher for StandIn {
    fn launch<'a>(
        &'a self,
        request: LaunchRequest<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn RunningAgent>, LaunchError>> {
        Box::pin(async move {
            let setup = request.case.scenario.agent.clone();
            let rules = request.case.scenario.fault_rules();
            check_supported(&setup, &rules)?;
            let listener = UnixListener::bind(request.socket)
                .map_err(|e| LaunchError::with_source("cannot bind the stand-in's socket", e))?;
            let file = File::create(request.transcript)
                .map_err(|e| LaunchError::with_source("cannot create the transcript", e))?;
            let transcript = Arc::new(Transcript {
                origin: Instant::now(),
                out: Mutex::new(BufWriter::new(file)),
            });
            transcript.event(None, "mock-started");
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(serve(listener, setup, rules, transcript.clone(), stopped));
            Ok(Box::new(Running {
                socket: request.socket.to_owned(),
                stop: Some(stop),
                task,
                transcript,
            }) as Box<dyn RunningAgent>)
        })
    }
}

fn check_supported(setup: &AgentSetup, rules: &[Rule]) -> Result<(), LaunchError> {
    let state = &setup.state;
    if state.frozen || state.parser_input.is_some() || setup.allow_rpcs.is_some() {
        return Err(LaunchError::new(
            "the stand-in does not support this agent state",
        ));
    }
    for rule in rules {
        for action in &rule.actions {
            if !matches!(action, Action::Delay { .. } | Action::Hang { .. }) {
                return Err(LaunchError::new(format!(
                    "the stand-in does not support the fault action {}",
                    action.name()
                )));
            }
        }
    }
    Ok(())
}

struct Transcript {
    origin: Instant,
    out: Mutex<BufWriter<File>>,
}

impl Transcript {
    fn line(&self, mut record: Value) {
        record["t_us"] = json!(self.origin.elapsed().as_micros() as u64);
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{record}");
        }
    }
    fn event(&self, conn: Option<u64>, event: &str) {
        let mut record = json!({"event": event});
        if let Some(conn) = conn {
            record["conn"] = json!(conn);
        }
        self.line(record);
    }
    fn bytes(&self, conn: u64, dir: &str, data: &[u8]) {
        let mut record = json!({"conn": conn, "dir": dir});
        match std::str::from_utf8(data) {
            Ok(text) if !text.bytes().any(|b| b < 0x20 && !b"\t\r\n".contains(&b)) => {
                record["text"] = json!(text)
            }
            _ => record["b64"] = json!(base64::engine::general_purpose::STANDARD.encode(data)),
        }
        self.line(record);
    }
    fn flush(&self) {
        if let Ok(mut out) = self.out.lock() {
            let _ = out.flush();
        }
    }
}

/// The agent's state, shared across connections as qemu-ga's is.
struct Agent {
    setup: AgentSetup,
    rules: Vec<Rule>,
    matched: HashMap<usize, u64>,
    hung: bool,
    started_at: Option<Instant>,
    stale: Option<Vec<u8>>,
}

async fn serve(
    listener: UnixListener,
    setup: AgentSetup,
    rules: Vec<Rule>,
    transcript: Arc<Transcript>,
    mut stopped: oneshot::Receiver<()>,
) {
    let now = Instant::now();
    let started_at = if setup.state.started {
        Some(now + Duration::from_millis(setup.state.start_delay_ms.unwrap_or(0)))
    } else {
        None
    };
    let stale = setup.state.pending_output.as_ref().map(|b| match b {
        Bytes::Text(t) => t.as_bytes().to_vec(),
        Bytes::Base64 { base64 } => base64::engine::general_purpose::STANDARD
            .decode(base64)
            .unwrap_or_default(),
    });
    let mut agent = Agent {
        setup,
        rules,
        matched: HashMap::new(),
        hung: false,
        started_at,
        stale,
    };
    let mut conn = 0;
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { return };
        conn += 1;
        transcript.event(Some(conn), "connected");
        tokio::select! {
            _ = &mut stopped => return,
            _ = connection(stream, conn, &mut agent, &transcript) => {}
        }
        transcript.event(Some(conn), "disconnected");
    }
}

async fn connection(mut stream: UnixStream, conn: u64, agent: &mut Agent, transcript: &Transcript) {
    if let Some(stale) = agent.stale.take() {
        transcript.bytes(conn, "out", &stale);
        if stream.write_all(&stale).await.is_err() {
            return;
        }
    }
    let mut framer = Framer::default();
    let mut buffer = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        transcript.bytes(conn, "in", &buffer[..n]);
        for item in framer.feed(&buffer[..n]) {
            if agent.hung {
                continue;
            }
            match agent.started_at {
                None => continue,
                Some(at) => tokio::time::sleep_until(at).await,
            }
            if let Some(reply) = agent.answer(item).await {
                transcript.bytes(conn, "out", &reply);
                if stream.write_all(&reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

enum Item {
    Stray,
    Text(Vec<u8>),
}

#[derive(Default)]
struct Framer {
    current: Vec<u8>,
    depth: usize,
    string: bool,
    escape: bool,
}

impl Framer {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Item> {
        let mut items = Vec::new();
        for &b in bytes {
            if b == 0xFF || b == 0xFE {
                self.current.clear();
                self.depth = 0;
                self.string = false;
                items.push(Item::Stray);
                continue;
            }
            if self.depth == 0 && !self.string && b != b'{' && b != b'[' {
                continue;
            }
            self.current.push(b);
            if self.string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.string = false;
                }
            } else if b == b'"' {
                self.string = true;
            } else if b == b'{' || b == b'[' {
                self.depth += 1;
            } else if b == b'}' || b == b']' {
                self.depth -= 1;
                if self.depth == 0 {
                    items.push(Item::Text(std::mem::take(&mut self.current)));
                }
            }
        }
        items
    }
}

fn reply(body: Value, id: Option<&Value>, ff: bool) -> Vec<u8> {
    let mut text = body.to_string();
    if let Some(id) = id {
        text.pop();
        text.push_str(&format!(", \"id\": {id}}}"));
    }
    let mut bytes = if ff { vec![0xFF] } else { Vec::new() };
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    bytes
}

fn error(class: &str, desc: &str, id: Option<&Value>) -> Vec<u8> {
    reply(json!({"error": {"class": class, "desc": desc}}), id, false)
}

impl Agent {
    async fn answer(&mut self, item: Item) -> Option<Vec<u8>> {
        let text = match item {
            Item::Stray => {
                return Some(error(
                    "GenericError",
                    "JSON parse error, stray '\u{FFFD}'",
                    None,
                ))
            }
            Item::Text(text) => text,
        };
        let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&text) else {
            return Some(error(
                "GenericError",
                "QMP input must be a JSON object",
                None,
            ));
        };
        let id = request.get("id");
        let Some(execute) = request.get("execute").and_then(Value::as_str) else {
            return Some(error(
                "GenericError",
                "QMP input lacks member 'execute'",
                id,
            ));
        };
        for (at, rule) in self.rules.iter().enumerate() {
            let name_matches = rule
                .when
                .command
                .as_deref()
                .is_none_or(|c| qga_harness::fault::glob_match(c, execute));
            if !name_matches {
                continue;
            }
            let n = self.matched.entry(at).or_default();
            *n += 1;
            if rule.when.nth.is_some_and(|nth| nth != *n) {
                continue;
            }
            for action in &rule.actions {
                match action {
                    Action::Delay { ms, .. } => {
                        tokio::time::sleep(Duration::from_millis(*ms)).await
                    }
                    Action::Hang { .. } => {
                        self.hung = true;
                        return None;
                    }
                    _ => {}
                }
            }
        }
        if self.setup.block_rpcs.iter().any(|b| b == execute) {
            return Some(error(
                "CommandNotFound",
                &format!("Command {execute} has been disabled"),
                id,
            ));
        }
        let arguments = request.get("arguments").cloned().unwrap_or(json!({}));
        let body = match execute {
            "guest-sync" | "guest-sync-delimited" => match arguments.get("id") {
                Some(sync_id) if sync_id.is_i64() || sync_id.is_u64() => {
                    return Some(reply(
                        json!({"return": sync_id}),
                        id,
                        execute == "guest-sync-delimited",
                    ))
                }
                _ => return Some(error("GenericError", "Parameter 'id' is missing", id)),
            },
            "guest-ping" => json!({"return": {}}),
            "guest-get-host-name" => json!({"return": {"host-name": "vm"}}),
            "guest-get-time" => json!({"return": 1_700_000_000_123_456_000_u64}),
            "guest-shutdown" => return None,
            other => {
                return Some(error(
                    "CommandNotFound",
                    &format!("The command {other} has not been found"),
                    id,
                ))
            }
        };
        Some(reply(body, id, false))
    }
}

/// The crate's mock for every case it can run, the stand-in for the fault rules and agent
/// states the mock does not execute yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct Agents;

impl AgentLauncher for Agents {
    fn launch<'a>(
        &'a self,
        request: LaunchRequest<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn RunningAgent>, LaunchError>> {
        let setup = &request.case.scenario.agent;
        let state = &setup.state;
        let mock_lacks = !setup.faults.is_empty()
            || state.pending_output.is_some()
            || state.parser_input.is_some()
            || state.frozen;
        if mock_lacks {
            StandIn.launch(request)
        } else {
            Box::pin(async move {
                qga_harness::runner::MockLauncher::default()
                    .launch(request)
                    .await
            })
        }
    }
}
