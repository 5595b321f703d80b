//! Bad input never panics and never hangs: a broken scenario file, an unknown placeholder
//! or a client program that does not exist stop `qga-harness run` with exit status 2 and a
//! message that says where; a client that does not exist at run time, exits at once, or
//! prints what is not JSON is a clear FAIL of its case.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::runner::{explain, load, oneshot, run, session, Workspace};
use qga_harness::runner::{Answer, BrokenKind, Client, Verdict};
use rstest::rstest;

const PING: &str = r#"{"id": "bad.1", "title": "ping", "requirement": "A ping returns {}.",
    "steps": [{"execute": "guest-ping", "timeout_ms": 300, "expect": [{"return": {}}]},
              {"execute": "guest-ping", "timeout_ms": 300, "expect": [{"return": {}}]}]}"#;

fn harness(args: &[&str], cwd: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("qga-harness runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_broken_scenario_file_is_named_with_its_line_and_column() {
    let ws = Workspace::new();
    ws.write("scenarios/good.json", PING);
    ws.write(
        "scenarios/broken.json",
        "{\"id\": \"bad.2\", \"title\": \"t\",\n \"requirment\": \"typo\", \"steps\": []}",
    );
    let (code, _, stderr) = harness(&["run"], ws.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("scenarios/broken.json:2:"), "{stderr}");
    assert!(stderr.contains("unknown field `requirment`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[rstest]
#[case::unknown_placeholder(&["--client", "call --socket {sokcet}"], "unknown placeholder {sokcet}")]
#[case::session_placeholder(&["--client-session", "x {socket} {timeout_ms}"], "{timeout_ms} is not available")]
#[case::missing_program(&["--client", "qga-no-such-client {socket}"], "'qga-no-such-client' was not found")]
#[case::missing_path(&["--client-session", "/no/such/client {socket}"], "'/no/such/client' was not found")]
#[case::both_clients(&["--client", "a", "--client-session", "b"], "cannot be used with")]
#[case::zero_jobs(&["--jobs", "0"], "--jobs must be at least 1")]
#[case::no_match(&["--filter", "nothing.*"], "no case id matches")]
fn bad_usage_is_exit_status_2_with_a_message(#[case] args: &[&str], #[case] message: &str) {
    let ws = Workspace::new();
    ws.write("scenarios/good.json", PING);
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let (code, _, stderr) = harness(&all, ws.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(message),
        "{stderr} does not contain {message}"
    );
}

/// Runs the ping case with `client`, asserting it ends quickly with a FAIL whose first step
/// is `kind`, and returns the first step's description.
fn fails_clearly(client: Client, kind: BrokenKind) -> String {
    let ws = Workspace::new();
    ws.write("cases/ping.json", PING);
    let started = Instant::now();
    let results = run(load(&ws.path().join("cases")), client);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let result = &results[0];
    assert_eq!(result.verdict, Verdict::Fail, "{}", explain(result));
    match &result.run.steps[0].answer {
        Answer::Broken { why, detail } if *why == kind => detail.clone(),
        other => panic!("expected {kind:?}, got {other}\n{}", explain(result)),
    }
}

#[test]
fn a_oneshot_client_that_does_not_exist_fails_clearly() {
    let detail = fails_clearly(
        oneshot("exec /no/such/client {socket}"),
        BrokenKind::NotFound,
    );
    assert!(detail.contains("not found (exit 127)"), "{detail}");
    assert!(detail.contains("/no/such/client"), "{detail}");
}

#[test]
fn a_session_client_that_does_not_exist_fails_clearly() {
    let detail = fails_clearly(
        session("exec /no/such/client {socket}"),
        BrokenKind::NotFound,
    );
    assert!(detail.contains("not found (exit 127)"), "{detail}");
}

#[test]
fn a_oneshot_client_that_prints_non_json_fails_clearly() {
    let detail = fails_clearly(oneshot("echo hello {socket}"), BrokenKind::Malformed);
    assert!(detail.contains("not JSON: hello"), "{detail}");
}

#[test]
fn a_session_client_that_prints_non_json_fails_clearly() {
    let detail = fails_clearly(
        session("while read line; do echo 'not json'; done"),
        BrokenKind::Malformed,
    );
    assert!(detail.contains("not JSON: not json"), "{detail}");
}

#[test]
fn a_session_client_that_exits_at_once_fails_clearly() {
    let detail = fails_clearly(session("exit 3"), BrokenKind::Exited);
    assert!(detail.contains("exit 3"), "{detail}");
}

#[test]
fn a_oneshot_client_that_exits_at_once_fails_clearly() {
    let detail = fails_clearly(oneshot("true"), BrokenKind::Malformed);
    assert!(detail.contains("printed nothing"), "{detail}");
}

#[test]
fn a_crashing_client_fails_clearly() {
    let detail = fails_clearly(session("read line; kill -SEGV $$"), BrokenKind::Crashed);
    assert!(detail.contains("signal 11"), "{detail}");
}
