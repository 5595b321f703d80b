//! Real third-party qemu-ga host clients, driven through their session adapters in
//! `clients/`, against the real qemu-ga and against scripted hostile agents.
//!
//! - `clients/qemu-qmp/session.py`: the PyPI package `qemu.qmp`, used as QEMU's
//!   `qemu-ga-client` uses it.
//! - `clients/qapi-rs`: the crates.io crate `qapi` (features `qga`, `async-tokio-all`),
//!   used as its tokio example does.
//!
//! The hostile cases are the ones where the library's own source predicts a failure;
//! each test asserts that the adapter reports exactly that failure, and, where the
//! other library behaves differently on the same bytes, that difference too.
//!
//! The Python tests skip (with a message) when `python3 -c 'import qemu.qmp'` fails,
//! unless `CI` is set: there a missing prerequisite is a failure.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use qga_harness::guest::Profile;
use qga_harness::internals::real_agent::RealAgent;
use qga_harness::{AgentLife, MockAgent, MockAgentBuilder};
use rstest::rstest;
use serde_json::{json, Value};

/// qemu-ga's reply to a lone 0xFF byte (QEMU qobject/json-lexer.c, json-streamer.c):
/// an error with no id, as a previous client's reset leaves it in the channel.
const STRAY_FF_ERROR: &[u8] =
    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n";

/// Which adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    QemuQmp,
    Qapi,
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether the Python adapter can run here; in CI a missing `qemu.qmp` fails the test.
fn qemu_qmp_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import qemu.qmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !available {
        assert!(
            !in_ci(),
            "python3 cannot import qemu.qmp: .ci/run must `pip install qemu.qmp`"
        );
        eprintln!(
            "SKIP: python3 cannot import qemu.qmp (pip install qemu.qmp); \
             the qemu.qmp adapter tests did not run"
        );
    }
    available
}

/// Builds `clients/qapi-rs` once per test run, in its own target dir.
fn qapi_session_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let crate_dir = manifest_dir().join("clients/qapi-rs");
        let target = crate_dir.join("target");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "--locked",
                "--quiet",
                "--manifest-path",
            ])
            .arg(crate_dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo starts");
        assert!(status.success(), "cargo build of clients/qapi-rs failed");
        target.join("release/qapi-session")
    })
}

/// The qapi adapter's own unit tests (step parsing, typed command mapping, error
/// classes) run with its own build, since it is not a member of this workspace.
#[test]
fn the_qapi_adapters_unit_tests_pass() {
    let crate_dir = manifest_dir().join("clients/qapi-rs");
    // The first build of the adapter, shared with this one.
    qapi_session_binary();
    let output = Command::new(env!("CARGO"))
        .args([
            "test",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", crate_dir.join("target"))
        .output()
        .expect("cargo starts");
    assert!(
        output.status.success(),
        "clients/qapi-rs unit tests failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether `client` can run here (the Python prerequisite may be missing off CI).
fn available(client: Client) -> bool {
    match client {
        Client::QemuQmp => qemu_qmp_available(),
        Client::Qapi => true,
    }
}

/// A running session adapter: steps in on stdin, answers out on stdout.
struct Adapter {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<Value>,
    stderr: Receiver<String>,
    stderr_seen: Vec<String>,
    next_id: u64,
}

impl Adapter {
    fn start(client: Client, socket: &Path) -> Adapter {
        let mut command = match client {
            Client::QemuQmp => {
                let mut c = Command::new("python3");
                c.arg(manifest_dir().join("clients/qemu-qmp/session.py"));
                c
            }
            Client::Qapi => Command::new(qapi_session_binary()),
        };
        let mut child = command
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("adapter starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (answer_tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("adapter printed a non-JSON line {line:?}: {e}"));
                if answer_tx.send(value).is_err() {
                    break;
                }
            }
        });
        let (stderr_tx, stderr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if stderr_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Adapter {
            child,
            stdin,
            answers,
            stderr: stderr_rx,
            stderr_seen: Vec::new(),
            next_id: 1,
        }
    }

    /// Sends one step; returns its id.
    fn send(&mut self, execute: &str, arguments: Value, timeout_ms: u64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let step =
            json!({"id": id, "execute": execute, "arguments": arguments, "timeout_ms": timeout_ms});
        writeln!(self.stdin, "{step}").expect("adapter reads its stdin");
        self.stdin.flush().expect("adapter reads its stdin");
        id
    }

    /// The next answer, if one arrives within `limit`.
    fn answer_within(&mut self, limit: Duration) -> Option<Value> {
        match self.answers.recv_timeout(limit) {
            Ok(v) => Some(v),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().expect("adapter exit status");
                panic!(
                    "adapter exited ({status}) without answering; stderr: {:?}",
                    self.drain_stderr()
                )
            }
        }
    }

    /// One step and its answer (without the echoed id). A step costs the Python
    /// adapter up to three calls (ping, sync, command), each under the step's timeout.
    fn call(&mut self, execute: &str, arguments: Value, timeout_ms: u64) -> Value {
        let id = self.send(execute, arguments, timeout_ms);
        let limit = Duration::from_millis(3 * timeout_ms) + Duration::from_secs(15);
        let Some(mut answer) = self.answer_within(limit) else {
            panic!(
                "no answer to {execute} within {limit:?}; stderr: {:?}",
                self.drain_stderr()
            )
        };
        eprintln!("answer to {execute}: {answer}");
        let object = answer.as_object_mut().expect("an answer is an object");
        assert_eq!(
            object.remove("id"),
            Some(json!(id)),
            "answer to the wrong step"
        );
        answer
    }

    /// Waits until the adapter's stderr shows `needle`.
    fn wait_stderr(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.stderr_seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.stderr_seen.push(line),
                Err(_) => panic!(
                    "adapter never logged {needle:?}; stderr: {:?}",
                    self.stderr_seen
                ),
            }
        }
    }

    fn drain_stderr(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_seen.push(line);
        }
        self.stderr_seen.clone()
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn error_of(answer: &Value) -> (&str, &str) {
    let error = answer
        .get("error")
        .unwrap_or_else(|| panic!("expected an error answer, got {answer}"));
    (
        error["class"].as_str().expect("error class is a string"),
        error["desc"].as_str().expect("error desc is a string"),
    )
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("kernel host name")
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// The real agent
// ---------------------------------------------------------------------------------------

#[rstest]
fn benign_steps_against_the_real_agent(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let agent = RealAgent::start(&[]).expect("real qemu-ga starts");
    let mut adapter = Adapter::start(client, agent.socket());

    assert_eq!(
        adapter.call("guest-ping", json!({}), 2000),
        json!({"return": {}})
    );
    assert_eq!(
        adapter.call("guest-get-host-name", json!({}), 2000),
        json!({"return": {"host-name": host_name()}})
    );
    // A command of the safe block list: qemu-ga 7.2's error keeps its class and text.
    assert_eq!(
        adapter.call("guest-exec", json!({"path": "/bin/true"}), 2000),
        json!({"error": {"class": "CommandNotFound", "desc": "Command guest-exec has been disabled"}})
    );
    let info = adapter.call("guest-info", json!({}), 2000);
    assert!(
        info["return"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("7.2")),
        "{info}"
    );
    assert_eq!(
        adapter.call("guest-fsfreeze-status", json!({}), 2000),
        json!({"return": "thawed"})
    );
}

#[rstest]
fn an_unknown_command_against_the_real_agent(
    #[values(Client::QemuQmp, Client::Qapi)] client: Client,
) {
    if !available(client) {
        return;
    }
    let agent = RealAgent::start(&[]).expect("real qemu-ga starts");
    let mut adapter = Adapter::start(client, agent.socket());
    let answer = adapter.call("guest-frobnicate", json!({}), 2000);
    match client {
        // The Python library sends any name.
        Client::QemuQmp => assert_eq!(
            answer,
            json!({"error": {"class": "CommandNotFound", "desc": "The command guest-frobnicate has not been found"}})
        ),
        // The crate's API only has the schema's generated command types.
        Client::Qapi => assert_eq!(error_of(&answer).0, "Unsupported"),
    }
    // The session goes on either way.
    assert_eq!(
        adapter.call("guest-ping", json!({}), 2000),
        json!({"return": {}})
    );
}

// ---------------------------------------------------------------------------------------
// Scripted agents: exact bytes for the hostile situations
// ---------------------------------------------------------------------------------------

/// What a scripted agent writes for one request line.
type Script = Box<dyn FnMut(&Value) -> Vec<u8> + Send>;

/// A qemu-ga stand-in on a unix socket that answers from a script, one connection at a
/// time, and records every request it read.
struct ScriptedAgent {
    socket: PathBuf,
    requests: Arc<(Mutex<Vec<Value>>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl ScriptedAgent {
    /// `stale` is written once, on the first connection, before anything is read: output
    /// a previous session left in the channel.
    fn start(stale: &'static [u8], mut script: Script) -> ScriptedAgent {
        let dir = tempfile::Builder::new()
            .prefix("qga-scripted")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let requests: Arc<(Mutex<Vec<Value>>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut stale = Some(stale);
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    serve(stream, stale.take(), &mut script, &requests);
                }
            })
        };
        ScriptedAgent {
            socket,
            requests,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits until `count` requests for `execute` have been read.
    fn wait_requests(&self, execute: &str, count: usize, limit: Duration) {
        let (log, changed) = &*self.requests;
        let deadline = Instant::now() + limit;
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let seen = log.iter().filter(|r| r["execute"] == execute).count();
            if seen >= count {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {seen} {execute} requests within {limit:?}"
            );
            log = changed
                .wait_timeout(log, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for ScriptedAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the stop flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    stream: UnixStream,
    stale: Option<&[u8]>,
    script: &mut Script,
    requests: &(Mutex<Vec<Value>>, Condvar),
) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    if let Some(stale) = stale {
        if writer.write_all(stale).is_err() {
            return;
        }
    }
    // qemu.qmp writes each request without a newline (qemu-ga frames by braces, not
    // lines), so requests are read as a stream of JSON values.
    let requests_in =
        serde_json::Deserializer::from_reader(BufReader::new(stream)).into_iter::<Value>();
    for request in requests_in {
        // Both clients send well-formed JSON objects and never a 0xFF byte.
        let Ok(request) = request else { return };
        let out = script(&request);
        {
            let (log, changed) = requests;
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(request);
            changed.notify_all();
        }
        if !out.is_empty() && writer.write_all(&out).is_err() {
            return;
        }
    }
}

/// A success reply as qemu-ga writes it: the request's id, if any, after `return`.
fn ok(request: &Value, value: Value) -> Vec<u8> {
    let line = match request.get("id") {
        Some(id) => format!("{{\"return\": {value}, \"id\": {id}}}\n"),
        None => format!("{{\"return\": {value}}}\n"),
    };
    line.into_bytes()
}

/// An error reply as qemu-ga writes it: the request's id, if any, before `error`.
fn error(request: &Value, class: &str, desc: &str) -> Vec<u8> {
    let error = json!({"class": class, "desc": desc});
    let line = match request.get("id") {
        Some(id) => format!("{{\"id\": {id}, \"error\": {error}}}\n"),
        None => format!("{{\"error\": {error}}}\n"),
    };
    line.into_bytes()
}

/// The benign agent the hostile scripts start from.
fn benign(request: &Value) -> Vec<u8> {
    match request["execute"].as_str() {
        Some("guest-ping") => ok(request, json!({})),
        Some("guest-sync") => ok(request, request["arguments"]["id"].clone()),
        Some("guest-get-host-name") => ok(request, json!({"host-name": "scripted"})),
        Some(name) => error(
            request,
            "CommandNotFound",
            &format!("The command {name} has not been found"),
        ),
        None => error(request, "GenericError", "Missing 'execute'"),
    }
}

const SCRIPTED_HOST: &str = "scripted";

fn host_name_answer() -> Value {
    json!({"return": {"host-name": SCRIPTED_HOST}})
}

/// qemu.qmp `qmp_client.py` `_on_message` (0.0.6 L422-435): an error reply without an
/// id is a fatal `ServerParseError`, so a previous client's 0xFF leaves an error in the
/// channel that kills the next connection before its first reply. The crate `qapi`
/// also fails the step (it takes the error for its sync's reply, or drops its stream
/// over it, depending on which it reads first), while a correct client skips the line.
#[rstest]
fn a_stale_id_less_error_at_connect(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let agent = ScriptedAgent::start(STRAY_FF_ERROR, Box::new(benign));
    let mut adapter = Adapter::start(client, agent.socket());
    let answer = adapter.call("guest-get-host-name", json!({}), 1000);
    let (class, desc) = error_of(&answer);
    if client == Client::QemuQmp {
        assert_eq!(class, "Protocol", "{answer}");
        assert!(desc.contains("ServerParseError"), "{desc}");
        // The adapter reconnects as the tool's next run would; the stale line is gone.
        assert_eq!(
            adapter.call("guest-get-host-name", json!({}), 1000),
            host_name_answer()
        );
    }
}

/// qemu.qmp reads lines with asyncio's `StreamReader` limited to `readbuflen`, 10 MiB
/// by default (0.0.6 `qmp_client.py` L245-246, `protocol.py` L608-616; 256 KiB in
/// QEMU's 7.1 in-tree copy). A longer reply ends the connection: a guest-exec-status
/// with 8 MiB of output (about 10.7 MiB of base64) cannot be read, although qemu-ga
/// sends up to 16 MiB of output (QEMU qga/commands.c GUEST_EXEC_MAX_OUTPUT). The crate
/// `qapi` reads lines of any length and returns it.
#[rstest]
fn a_reply_over_ten_mebibytes(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let out_data = "QUFB".repeat(8 * 1024 * 1024 / 3 + 1);
    let big = json!({"exited": true, "exitcode": 0, "out-data": out_data.clone(), "out-truncated": false});
    let agent = ScriptedAgent::start(
        b"",
        Box::new(move |r: &Value| match r["execute"].as_str() {
            Some("guest-exec-status") => ok(r, big.clone()),
            _ => benign(r),
        }),
    );
    let mut adapter = Adapter::start(client, agent.socket());
    let answer = adapter.call("guest-exec-status", json!({"pid": 4242}), 5000);
    match client {
        Client::QemuQmp => {
            let (class, desc) = error_of(&answer);
            assert_eq!(class, "Protocol", "{answer}");
            assert!(desc.contains("ValueError"), "{desc}");
        }
        Client::Qapi => assert_eq!(answer["return"]["out-data"], json!(out_data)),
    }
}

/// The tool's `sync()` repeats guest-sync `while True` until the returned int equals its
/// id (QEMU python/qemu/utils/qemu_ga_client.py `sync`, L76-84 in 7.1): each call has a
/// timeout, the loop has no bound. An agent that echoes another value keeps the client
/// busy forever, far past the step's timeout. The crate `qapi` syncs once and reports
/// the mismatch ("QGA sync failed").
#[rstest]
fn a_sync_reply_that_never_matches(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let agent = ScriptedAgent::start(
        b"",
        Box::new(|r: &Value| match r["execute"].as_str() {
            Some("guest-sync") => {
                let id = r["arguments"]["id"].as_i64().unwrap_or(0);
                ok(r, json!(id.wrapping_add(1)))
            }
            _ => benign(r),
        }),
    );
    let mut adapter = Adapter::start(client, agent.socket());
    match client {
        Client::QemuQmp => {
            adapter.send("guest-get-host-name", json!({}), 300);
            // Far more syncs than any step budget allows, and still no answer.
            agent.wait_requests("guest-sync", 50, Duration::from_secs(20));
            assert_eq!(adapter.answer_within(Duration::ZERO), None);
        }
        Client::Qapi => {
            let answer = adapter.call("guest-get-host-name", json!({}), 300);
            let (class, desc) = error_of(&answer);
            assert_eq!(class, "Protocol", "{answer}");
            assert!(desc.contains("QGA sync failed"), "{desc}");
        }
    }
}

/// The crate `qapi` trusts whichever line comes next: `QapiService::guest_sync`
/// (`futures/mod.rs` L172-183) takes the first reply as the sync's, so stale output
/// ahead of the sync reply fails the handshake (here `{}` cannot be its i64). The tool's
/// qemu.qmp routes replies by id and drops the id-less stale one (qmp_client.py
/// L437-445), so it succeeds.
#[rstest]
fn stale_output_ahead_of_the_sync_reply(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let agent = ScriptedAgent::start(
        b"",
        Box::new(|r: &Value| match r["execute"].as_str() {
            Some("guest-sync") => [b"{\"return\": {}}\n".to_vec(), benign(r)].concat(),
            _ => benign(r),
        }),
    );
    let mut adapter = Adapter::start(client, agent.socket());
    let answer = adapter.call("guest-get-host-name", json!({}), 1000);
    match client {
        Client::QemuQmp => assert_eq!(answer, host_name_answer()),
        Client::Qapi => {
            let (class, desc) = error_of(&answer);
            assert_eq!(class, "Protocol", "{answer}");
            assert!(desc.contains("guest_sync"), "{desc}");
        }
    }
}

/// The crate has no timeouts; a caller's `tokio::time::timeout` drops the `execute`
/// future but not its entry in the pending map (key 0 for QGA), so the next call panics
/// with "QAPI duplicate command id" (`futures/mod.rs` L264-274) while holding the map's
/// mutex, which is then poisoned for every later call. qemu.qmp cancels cleanly and the
/// next call works.
#[rstest]
fn the_call_after_a_timeout(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let mut hung = false;
    let agent = ScriptedAgent::start(
        b"",
        Box::new(move |r: &Value| match r["execute"].as_str() {
            // The first command hangs (a slow or stuck guest); later ones are answered.
            Some("guest-get-host-name") if !hung => {
                hung = true;
                Vec::new()
            }
            _ => benign(r),
        }),
    );
    let mut adapter = Adapter::start(client, agent.socket());
    let answer = adapter.call("guest-get-host-name", json!({}), 300);
    assert_eq!(error_of(&answer).0, "Timeout", "{answer}");
    let next = adapter.call("guest-ping", json!({}), 1000);
    match client {
        Client::QemuQmp => assert_eq!(next, json!({"return": {}})),
        Client::Qapi => {
            let (class, desc) = error_of(&next);
            assert_eq!(class, "Protocol", "{next}");
            assert!(desc.contains("QAPI duplicate command id"), "{desc}");
            // The poisoned mutex fails every later call too.
            let after = adapter.call("guest-ping", json!({}), 1000);
            let (class, desc) = error_of(&after);
            assert_eq!(class, "Protocol", "{after}");
            assert!(desc.contains("panicked"), "{desc}");
        }
    }
}

/// An unsolicited reply with nothing pending ends the crate's event loop ("unknown QAPI
/// response with ID", `futures/mod.rs` L350-360): every later call is "QAPI stream
/// disconnected" for good. qemu.qmp drops an id-less non-error reply and goes on.
#[rstest]
fn an_unsolicited_reply(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let agent = ScriptedAgent::start(
        b"",
        Box::new(|r: &Value| match r["execute"].as_str() {
            Some("guest-get-host-name") => [benign(r), b"{\"return\": {}}\n".to_vec()].concat(),
            _ => benign(r),
        }),
    );
    let mut adapter = Adapter::start(client, agent.socket());
    assert_eq!(
        adapter.call("guest-get-host-name", json!({}), 1000),
        host_name_answer()
    );
    match client {
        Client::QemuQmp => {
            assert_eq!(
                adapter.call("guest-ping", json!({}), 1000),
                json!({"return": {}})
            );
        }
        Client::Qapi => {
            // The spurious line is read right after the reply; the crate logs the end
            // of its event loop, and only then does the next step start.
            adapter.wait_stderr("unknown QAPI response", Duration::from_secs(10));
            for _ in 0..2 {
                let answer = adapter.call("guest-ping", json!({}), 1000);
                let (class, desc) = error_of(&answer);
                assert_eq!(class, "Disconnected", "{answer}");
                assert!(desc.contains("QAPI stream disconnected"), "{desc}");
            }
        }
    }
}

/// The crate's `ErrorClass` is a closed enum of five classes (`qapi-spec` L212-224), so
/// an error reply with another class (`CommandDisabled`, as libvirt's test agent sends)
/// does not decode: the event loop ends and the call is "QAPI stream disconnected".
/// qemu.qmp passes the class through.
#[rstest]
fn an_error_class_outside_the_crates_enum(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let agent = ScriptedAgent::start(
        b"",
        Box::new(|r: &Value| match r["execute"].as_str() {
            Some("guest-get-host-name") => error(r, "CommandDisabled", "the command is disabled"),
            _ => benign(r),
        }),
    );
    let mut adapter = Adapter::start(client, agent.socket());
    let answer = adapter.call("guest-get-host-name", json!({}), 1000);
    match client {
        Client::QemuQmp => assert_eq!(
            answer,
            json!({"error": {"class": "CommandDisabled", "desc": "the command is disabled"}})
        ),
        Client::Qapi => {
            let (class, desc) = error_of(&answer);
            assert_eq!(class, "Disconnected", "{answer}");
            assert!(desc.contains("QAPI stream disconnected"), "{desc}");
            let after = adapter.call("guest-ping", json!({}), 1000);
            assert_eq!(error_of(&after).0, "Disconnected", "{after}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The naive socat client (a oneshot template)
// ---------------------------------------------------------------------------------------

/// Runs `clients/socat/oneshot.sh SOCKET REQUEST 1`: its stdout and whether it exited 0.
fn socat_oneshot(socket: &Path, request: &Value) -> (String, bool) {
    let output = Command::new(manifest_dir().join("clients/socat/oneshot.sh"))
        .arg(socket)
        .arg(request.to_string())
        .arg("1")
        .stdin(Stdio::null())
        .output()
        .expect("oneshot.sh runs");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.success(),
    )
}

#[test]
fn the_socat_client_against_the_real_agent() {
    let agent = RealAgent::start(&[]).expect("real qemu-ga starts");
    assert_eq!(
        socat_oneshot(agent.socket(), &json!({"execute": "guest-ping"})),
        ("{\"return\": {}}\n".to_string(), true)
    );
    assert_eq!(
        socat_oneshot(agent.socket(), &json!({"execute": "guest-exec", "arguments": {"path": "/bin/true"}})),
        (
            "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Command guest-exec has been disabled\"}}\n"
                .to_string(),
            true
        )
    );
}

/// The naive client takes the first line for the reply: output a previous session left
/// in the channel becomes the answer to its command.
#[test]
fn the_socat_client_takes_stale_output_for_the_reply() {
    let agent = ScriptedAgent::start(STRAY_FF_ERROR, Box::new(benign));
    let (stdout, success) =
        socat_oneshot(agent.socket(), &json!({"execute": "guest-get-host-name"}));
    assert_eq!(stdout.as_bytes(), STRAY_FF_ERROR);
    assert!(success);
}

/// qemu-ga before 4.0 echoes no request id (QEMU qapi/qmp-dispatch.c gained the echo in
/// 4.0). qemu.qmp routes replies by the id it assigns (`__qmp#NNNNN`) and drops the rest
/// as "Unknown ID" (qmp_client.py L414-445), so every call times out: the tool's ping
/// already fails with "Agent seems not alive". The crate `qapi` sends no ids to a QGA and
/// works.
#[rstest]
fn an_agent_that_echoes_no_ids(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let agent = ScriptedAgent::start(
        b"",
        Box::new(|r: &Value| {
            let mut request = r.clone();
            if let Some(object) = request.as_object_mut() {
                object.remove("id");
            }
            benign(&request)
        }),
    );
    let mut adapter = Adapter::start(client, agent.socket());
    let answer = adapter.call("guest-get-host-name", json!({}), 300);
    match client {
        Client::QemuQmp => assert_eq!(
            answer,
            json!({"error": {"class": "Timeout", "desc": "Agent seems not alive"}})
        ),
        Client::Qapi => assert_eq!(answer, host_name_answer()),
    }
}

/// A non-JSON line in the channel (a log leaking into the port) ends both libraries'
/// connections: qemu.qmp's reader raises `DeserializationError` (message.py
/// `_deserialize`), the crate's `JsonLinesCodec` a decode error that ends its event loop
/// (codec.rs `priv_decode`). A correct client skips it and resyncs.
#[rstest]
fn a_garbage_line_at_connect(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let agent = ScriptedAgent::start(
        b"[   12.345678] virtio_console: port ready\n",
        Box::new(benign),
    );
    let mut adapter = Adapter::start(client, agent.socket());
    let answer = adapter.call("guest-get-host-name", json!({}), 1000);
    let (class, desc) = error_of(&answer);
    match client {
        Client::QemuQmp => {
            assert_eq!(class, "Protocol", "{answer}");
            assert!(desc.contains("DeserializationError"), "{desc}");
        }
        Client::Qapi => {
            assert_eq!(class, "Disconnected", "{answer}");
            assert!(desc.contains("QAPI stream disconnected"), "{desc}");
        }
    }
}

/// guest-shutdown sends nothing on success (`'success-response': false` in QEMU's
/// qga/qapi-schema.json). The tool's `shutdown()` takes the timeout for success. The
/// crate's code generator ignores `success-response` (qapi-parser reads it, qapi-codegen
/// never uses it), so `guest_shutdown` waits for an `Empty` reply: a careful caller's
/// timeout fires, and the call after it panics on the stale pending entry.
#[rstest]
fn a_shutdown_that_sends_no_reply(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let agent = ScriptedAgent::start(
        b"",
        Box::new(|r: &Value| match r["execute"].as_str() {
            Some("guest-shutdown") => Vec::new(),
            _ => benign(r),
        }),
    );
    let mut adapter = Adapter::start(client, agent.socket());
    let answer = adapter.call("guest-shutdown", json!({"mode": "powerdown"}), 300);
    match client {
        Client::QemuQmp => assert_eq!(answer, json!({"return": {}})),
        Client::Qapi => {
            assert_eq!(error_of(&answer).0, "Timeout", "{answer}");
            let next = adapter.call("guest-ping", json!({}), 1000);
            let (class, desc) = error_of(&next);
            assert_eq!(class, "Protocol", "{next}");
            assert!(desc.contains("QAPI duplicate command id"), "{desc}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The mock agent
// ---------------------------------------------------------------------------------------

/// A mock qemu-ga on its own tokio runtime, so that the blocking test thread can drive
/// processes while the runtime's workers serve the mock.
struct Mock {
    runtime: tokio::runtime::Runtime,
    agent: Option<MockAgent>,
    _dir: tempfile::TempDir,
}

impl Mock {
    fn start(builder: MockAgentBuilder) -> Mock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = tempfile::Builder::new()
            .prefix("qga-mock")
            .tempdir()
            .expect("temp dir");
        let agent = runtime
            .block_on(builder.start_in(dir.path()))
            .expect("mock starts");
        Mock {
            runtime,
            agent: Some(agent),
            _dir: dir,
        }
    }

    fn agent(&self) -> &MockAgent {
        self.agent.as_ref().expect("mock running")
    }

    fn socket(&self) -> &Path {
        self.agent().socket_path()
    }

    fn life(&self) -> AgentLife {
        self.agent().life()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.take() {
            let _ = self.runtime.block_on(agent.shutdown());
        }
    }
}

fn default_host_name() -> String {
    Profile::default_linux().host_name
}

#[rstest]
fn benign_steps_against_the_mock(#[values(Client::QemuQmp, Client::Qapi)] client: Client) {
    if !available(client) {
        return;
    }
    let mock = Mock::start(MockAgent::builder().block_rpcs(["guest-exec"]));
    let mut adapter = Adapter::start(client, mock.socket());

    assert_eq!(
        adapter.call("guest-ping", json!({}), 2000),
        json!({"return": {}})
    );
    assert_eq!(
        adapter.call("guest-get-host-name", json!({}), 2000),
        json!({"return": {"host-name": default_host_name()}})
    );
    assert_eq!(
        adapter.call("guest-exec", json!({"path": "/bin/true"}), 2000),
        json!({"error": {"class": "CommandNotFound", "desc": "Command guest-exec has been disabled"}})
    );
    let info = adapter.call("guest-info", json!({}), 2000);
    assert!(
        info["return"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("7.2")),
        "{info}"
    );
    assert_eq!(
        adapter.call("guest-fsfreeze-status", json!({}), 2000),
        json!({"return": "thawed"})
    );
}

#[test]
fn the_socat_client_against_the_mock() {
    let mock = Mock::start(MockAgent::builder().block_rpcs(["guest-exec"]));
    assert_eq!(
        socat_oneshot(mock.socket(), &json!({"execute": "guest-get-host-name"})),
        (
            format!(
                "{{\"return\": {{\"host-name\": \"{}\"}}}}\n",
                default_host_name()
            ),
            true
        )
    );
    assert_eq!(
        socat_oneshot(
            mock.socket(),
            &json!({"execute": "guest-exec", "arguments": {"path": "/bin/true"}})
        ),
        (
            "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Command guest-exec has been disabled\"}}\n"
                .to_string(),
            true
        )
    );
}

/// The agent hangs (a stuck guest), the client times out, the agent recovers and sends
/// its late reply. qemu.qmp drops it by id (qmp_client.py L437-445) and goes on. In the
/// crate `qapi` the timed-out call left its reply slot behind (`futures/mod.rs`
/// L264-274); the late reply is routed to it, cannot be delivered ("failed to send
/// response for ID 0", L350-356), and that ends the event loop: the call after it is
/// "QAPI stream disconnected".
#[rstest]
fn a_late_reply_after_a_timeout_on_the_mock(
    #[values(Client::QemuQmp, Client::Qapi)] client: Client,
) {
    if !available(client) {
        return;
    }
    let mock = Mock::start(MockAgent::builder());
    let life = mock.life();
    let mut adapter = Adapter::start(client, mock.socket());
    assert_eq!(
        adapter.call("guest-ping", json!({}), 2000),
        json!({"return": {}})
    );

    mock.runtime.block_on(life.hang()).expect("agent hangs");
    let answer = adapter.call("guest-get-host-name", json!({}), 300);
    assert_eq!(error_of(&answer).0, "Timeout", "{answer}");

    let written = life.channel_status().bytes_out;
    mock.runtime.block_on(life.resume()).expect("agent resumes");
    mock.runtime
        .block_on(life.wait_channel(|s| s.bytes_out > written))
        .expect("the late reply is written");

    match client {
        Client::QemuQmp => assert_eq!(
            adapter.call("guest-get-host-name", json!({}), 2000),
            json!({"return": {"host-name": default_host_name()}})
        ),
        Client::Qapi => {
            adapter.wait_stderr("failed to send response for ID 0", Duration::from_secs(10));
            let answer = adapter.call("guest-get-host-name", json!({}), 2000);
            let (class, desc) = error_of(&answer);
            assert_eq!(class, "Disconnected", "{answer}");
            assert!(desc.contains("QAPI stream disconnected"), "{desc}");
        }
    }
}
