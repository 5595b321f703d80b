//! The runner's integration tests' pieces: real client programs (naive and careful ones),
//! scenario files written to a temp dir, and helpers to run them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qga_harness::runner::{
    self, CaseResult, Client, LoadedCase, Placeholder, RunOptions, Template,
};

/// A naive oneshot client: socat sends the request, waits a moment, and the first line it
/// got is the answer. No sync, no flush, no id, no deadline of its own beyond socat's.
/// (`shut-none`: a half-close is a disconnect on QEMU's chardev socket, and would lose the
/// reply before it came.)
pub const NAIVE_ONESHOT: &str =
    "printf '%s\\n' {request} | socat -t 0.3 - UNIX-CONNECT:{socket},shut-none | head -n 1";

/// A naive session client: connects, sends each command, and takes the next line as its
/// answer. No sync, no flush, no timeout.
pub const NAIVE_SESSION_PY: &str = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rwb")
for line in sys.stdin:
    req = json.loads(line)
    f.write(json.dumps({"execute": req["execute"], "arguments": req["arguments"]}).encode() + b"\n")
    f.flush()
    reply = json.loads(f.readline())
    reply["id"] = req["id"]
    print(json.dumps(reply), flush=True)
"#;

/// A careful session client, written from the protocol notes: 0xFF flush, then
/// guest-sync-delimited with a random 63-bit id, skip everything up to the matching
/// 0xFF-prefixed reply; a fresh id on every command, only the reply with that id is taken;
/// a deadline per call; a resync after every timeout.
pub const CAREFUL_SESSION_PY: &str = r#"
import json, os, random, select, socket, sys, time

sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
buf = b""
synced = False

def read_line(deadline):
    global buf
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return None
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError()
        buf += chunk
    line, _, buf = buf.partition(b"\n")
    return line

def sync(deadline):
    global buf
    sid = random.getrandbits(63) | (1 << 62)
    buf = b""
    sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sid}}).encode())
    while True:
        line = read_line(deadline)
        if line is None:
            return False
        if b"\xff" not in line:
            continue
        try:
            if json.loads(line[line.rindex(b"\xff") + 1:]).get("return") == sid:
                return True
        except ValueError:
            pass

for text in sys.stdin:
    req = json.loads(text)
    deadline = time.monotonic() + req["timeout_ms"] / 1000.0
    answer = {"id": req["id"]}
    try:
        if not synced and not sync(deadline):
            answer["error"] = {"class": "Timeout", "desc": "no sync reply"}
        else:
            synced = True
            cid = random.getrandbits(63) | (1 << 62)
            sock.sendall(json.dumps({"execute": req["execute"], "arguments": req["arguments"], "id": cid}).encode())
            while True:
                line = read_line(deadline)
                if line is None:
                    synced = False
                    answer["error"] = {"class": "Timeout", "desc": "no reply"}
                    break
                try:
                    reply = json.loads(line.lstrip(b"\xff"))
                except ValueError:
                    continue
                if isinstance(reply, dict) and reply.get("id") == cid:
                    if "error" in reply:
                        answer["error"] = reply["error"]
                    else:
                        answer["return"] = reply.get("return")
                    break
    except EOFError:
        synced = False
        answer["error"] = {"class": "Disconnected", "desc": "eof"}
    print(json.dumps(answer), flush=True)
"#;

/// Benign cases (`ok.*`) and hostile ones (`hostile.*`). Timeouts that the verdict does not
/// hinge on are generous, so a loaded machine cannot turn a pass into a failure.
pub const CASES: &[(&str, &str)] = &[
    (
        "ok-1.json",
        r#"{"id": "ok.1", "title": "ping", "requirement": "A ping returns {}.",
            "steps": [{"execute": "guest-ping", "timeout_ms": 3000, "expect": [{"return": {}}]}],
            "duties": ["total-deadline"]}"#,
    ),
    (
        "ok-2.json",
        r#"{"id": "ok.2", "title": "host name", "requirement": "The host name comes back whole.",
            "steps": [{"execute": "guest-get-host-name", "timeout_ms": 3000,
                       "expect": [{"return-contains": {"host-name": "vm"}}]}]}"#,
    ),
    (
        "ok-3.json",
        r#"{"id": "ok.3", "title": "blocked command", "requirement": "A blocked command is an agent error.",
            "agent": {"block_rpcs": ["guest-get-time"]},
            "steps": [{"execute": "guest-get-time", "timeout_ms": 3000,
                       "expect": [{"error": {"class": "CommandNotFound", "desc_contains": "disabled"}}]}]}"#,
    ),
    (
        "hostile-1.json",
        r#"{"id": "hostile.1", "title": "agent never starts", "requirement": "The call times out within its deadline.",
            "agent": {"state": {"started": false}},
            "steps": [{"execute": "guest-ping", "timeout_ms": 300,
                       "expect": [{"client-error": {"class": "Timeout", "max_ms": 800}}]}],
            "duties": ["total-deadline"]}"#,
    ),
    (
        "hostile-2.json",
        r#"{"id": "hostile.2", "title": "stale output at connect", "requirement": "Stale output is discarded by a sync.",
            "agent": {"state": {"pending_output": "{\"return\": {\"host-name\": \"stale\"}}\n"}},
            "steps": [{"execute": "guest-get-host-name", "timeout_ms": 3000,
                       "expect": [{"return-contains": {"host-name": "vm"}}]}],
            "duties": ["sync-first", "no-stale-attribution"]}"#,
    ),
    (
        "hostile-3.json",
        r#"{"id": "hostile.3", "title": "hang after sync", "requirement": "A hung command times out.",
            "agent": {"faults": ["guest-get-osinfo:hang"]},
            "steps": [{"execute": "guest-get-osinfo", "timeout_ms": 300,
                       "expect": [{"client-error": {"class": "Timeout", "max_ms": 800}}]}],
            "duties": ["total-deadline"]}"#,
    ),
    (
        "hostile-4.json",
        r#"{"id": "hostile.4", "title": "late reply during the next call", "single_connection": true,
            "requirement": "The late reply to an abandoned call is not taken for the next one.",
            "agent": {"faults": ["guest-get-time#1:delay=500ms"]},
            "steps": [
              {"execute": "guest-get-time", "timeout_ms": 200,
               "expect": [{"client-error": {"class": "Timeout", "max_ms": 600}}]},
              {"execute": "guest-get-host-name", "timeout_ms": 1500,
               "expect": [{"return-contains": {"host-name": "vm"}}]}],
            "duties": ["sync-after-timeout", "no-stale-attribution"]}"#,
    ),
];

/// A temp dir holding scenario files and client scripts.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::Builder::new()
                .prefix("qga-runner-test")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("dir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Writes a Python script and returns a session command that runs it.
    pub fn python_session(&self, name: &str, script: &str) -> String {
        let path = self.write(name, script);
        format!(
            "exec python3 {} {{socket}}",
            qga_harness::internals::shell_quote(&path.to_string_lossy())
        )
    }
}

/// Loads every case in `dir`.
pub fn load(dir: &Path) -> Vec<LoadedCase> {
    let files = runner::scenario_files(&[dir.to_owned()]).expect("files");
    runner::load_cases(&files).expect("cases load")
}

pub fn oneshot(command: &str) -> Client {
    Client::Oneshot(Template::parse(command, "--client", Placeholder::ONESHOT).expect("template"))
}

pub fn session(command: &str) -> Client {
    Client::Session(
        Template::parse(command, "--client-session", Placeholder::SESSION).expect("template"),
    )
}

/// Runs `cases` against `client` on the mock agent, two at a time.
pub fn run(cases: Vec<LoadedCase>, client: Client) -> Vec<CaseResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let options = RunOptions {
        time_scale: 1,
        client,
        launcher: Arc::new(runner::MockLauncher::default()),
        jobs: 2,
        seed: 7,
        max_rss_kib: runner::DEFAULT_MAX_RSS_KIB,
        artifacts: std::env::var_os("QGA_TEST_ARTIFACTS").map(PathBuf::from),
    };
    runtime.block_on(runner::run_all(cases, &options, |_, _| {}))
}

/// `id → verdict` of results, for assertions that show everything at once.
pub fn verdicts(results: &[CaseResult]) -> Vec<(String, String)> {
    results
        .iter()
        .map(|r| (r.id.clone(), r.verdict.as_str().to_owned()))
        .collect()
}

/// Explains a result for assertion messages.
pub fn explain(result: &CaseResult) -> String {
    let mut text = format!("{} {}", result.id, result.verdict);
    if let Some(e) = &result.error {
        text.push_str(&format!("\n  error: {e}"));
    }
    for step in &result.run.steps {
        text.push_str(&format!(
            "\n  step {}: {} ({:.1} ms)",
            step.index + 1,
            step.answer,
            step.elapsed_ms()
        ));
    }
    if let Some(j) = &result.judgement {
        for f in &j.findings {
            text.push_str(&format!(
                "\n  {}: expected {}; actual {}",
                f.subject, f.expected, f.actual
            ));
        }
    }
    for p in &result.run.processes {
        text.push_str(&format!(
            "\n  process: {} stderr: {}",
            p.exit.describe(),
            p.stderr
        ));
    }
    text
}
