//! The runner owns its clients' processes: a client that hangs, forks a grandchild and
//! ignores SIGTERM is killed at the step's deadline with its whole process group; nothing
//! is left in /proc, and the case's socket and temp dir are gone.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::runner::{explain, load, oneshot, run, session, Workspace};
use qga_harness::internals::{count_group_members, kill_after};
use qga_harness::runner::{Answer, BrokenKind, Client, Verdict};

const CASE: &str = r#"{"id": "hygiene.1", "title": "a client that hangs", "requirement": "r",
    "steps": [{"execute": "guest-ping", "timeout_ms": 300, "expect": [{"return": {}}]}]}"#;

/// A shell client that records its process group, socket and grandchild, then ignores
/// SIGTERM and waits forever on a grandchild that ignores it too.
fn hanging_client(record: &Path, read_first: bool) -> String {
    let dir = support_quote(record);
    format!(
        "{read}echo $$ > {dir}/pgid; echo {{socket}} > {dir}/socket; trap '' TERM; \
         (trap '' TERM; exec sleep 1000) & echo $! > {dir}/grandchild; wait; wait",
        read = if read_first { "read step; " } else { "" },
    )
}

fn support_quote(path: &Path) -> String {
    qga_harness::internals::shell_quote(&path.to_string_lossy())
}

fn read_number(path: PathBuf) -> i32 {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a number")
}

/// The process group of a pid, from /proc (`None` when the process is gone).
fn pgid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

fn assert_all_gone(record: &Path) {
    let pgid = read_number(record.join("pgid"));
    let grandchild = read_number(record.join("grandchild"));
    assert_eq!(
        count_group_members(pgid),
        0,
        "processes of group {pgid} remain"
    );
    assert_ne!(
        pgid_of(grandchild),
        Some(pgid),
        "the grandchild {grandchild} is still there"
    );
    let socket = PathBuf::from(
        std::fs::read_to_string(record.join("socket"))
            .expect("socket recorded")
            .trim(),
    );
    assert!(!socket.exists(), "{} remains", socket.display());
    let case_dir = socket.parent().expect("socket dir");
    assert!(!case_dir.exists(), "{} remains", case_dir.display());
}

/// `startup`: the extra time a session client gets to read its first step.
fn run_hanging(client: impl Fn(&Path) -> Client, startup: Duration) {
    let ws = Workspace::new();
    ws.write("cases/hygiene.json", CASE);
    let record = ws.path().join("record");
    std::fs::create_dir(&record).expect("dir");
    let started = Instant::now();
    let results = run(load(&ws.path().join("cases")), client(&record));
    let took = started.elapsed();
    let result = &results[0];
    assert_eq!(result.verdict, Verdict::Fail, "{}", explain(result));
    assert!(
        matches!(
            result.run.steps[0].answer,
            Answer::Broken {
                why: BrokenKind::Hung,
                ..
            }
        ),
        "{}",
        explain(result)
    );
    let process = &result.run.processes[0];
    assert!(process.exit.killed_by_runner, "{}", explain(result));
    assert_eq!(
        process.exit.signal,
        Some(libc::SIGKILL),
        "SIGTERM was ignored"
    );
    assert_eq!(process.exit.left_behind, 0);
    // Killed at the step's deadline (plus the SIGTERM grace), not at the case's.
    assert!(
        took < kill_after(300) + startup + Duration::from_secs(2),
        "took {took:?}"
    );
    assert_all_gone(&record);
}

#[test]
fn a_hanging_session_client_and_its_grandchild_are_killed_at_the_deadline() {
    run_hanging(
        |record| session(&hanging_client(record, true)),
        Duration::ZERO,
    );
}

#[test]
fn a_session_client_that_never_reads_its_stdin_is_killed() {
    run_hanging(
        |record| session(&hanging_client(record, false)),
        Duration::from_secs(2),
    );
}

#[test]
fn a_hanging_oneshot_client_and_its_grandchild_are_killed_at_the_deadline() {
    run_hanging(
        |record| oneshot(&hanging_client(record, false)),
        Duration::ZERO,
    );
}

#[test]
fn an_interrupted_run_kills_its_clients_and_removes_its_temp_dirs() {
    let ws = Workspace::new();
    ws.write(
        "scenarios/hygiene.json",
        &CASE.replace("\"timeout_ms\": 300", "\"timeout_ms\": 60000"),
    );
    let record = ws.path().join("record");
    std::fs::create_dir(&record).expect("dir");
    let mut runner = std::process::Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .args(["run", "--client-session", &hanging_client(&record, true)])
        .current_dir(ws.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("qga-harness runs");
    // Wait (with a deadline) until the client has started its grandchild.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !record.join("grandchild").exists() {
        assert!(Instant::now() < deadline, "the client never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = libc::pid_t::try_from(runner.id()).expect("pid");
    // SAFETY: sends SIGINT to the runner this test started.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = runner.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the runner did not stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = runner.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // The kill is asynchronous: give the kernel a moment to finish the group.
    let pgid = read_number(record.join("pgid"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while count_group_members(pgid) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_all_gone(&record);
}
