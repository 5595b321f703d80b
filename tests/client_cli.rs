//! `qga-harness call` and `qga-harness session`: output, exit codes and bad input,
//! against the real qemu-ga and scripted agents.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::hostile::Hostile;
use qga_harness::internals::real_agent::RealAgent;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_qga-harness");

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run qga-harness");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn call(socket: &Path, rest: &[&str]) -> Output {
    let socket = socket.to_str().expect("utf-8 path");
    let mut args = vec!["call", "--socket", socket];
    args.extend_from_slice(rest);
    run(&args).await
}

fn json_out(out: &Output) -> Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {:?}", out.stdout))
}

// ---- call ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_the_return_value() {
    let agent = RealAgent::start(&[]).unwrap();
    let out = call(agent.socket(), &["guest-sync", r#"{"id": 5}"#]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "5\n"),
        "{}",
        out.stderr
    );
    let out = call(agent.socket(), &["guest-ping"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "{}\n"),
        "{}",
        out.stderr
    );
    let out = call(
        agent.socket(),
        &["--timeout-ms", "2000", "guest-get-host-name"],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(json_out(&out)["host-name"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_an_agent_error_and_exits_1() {
    let agent = RealAgent::start(&[]).unwrap();
    let out = call(agent.socket(), &["guest-nosuch"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        json_out(&out),
        json!({"error": {"class": "CommandNotFound", "desc": "The command guest-nosuch has not been found"}})
    );
    let out = call(agent.socket(), &["guest-ping", r#"{"x": 1}"#]).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        json_out(&out),
        json!({"error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_sends_a_raw_request() {
    let agent = RealAgent::start(&[]).unwrap();
    let out = call(
        agent.socket(),
        &[
            "--raw",
            r#"{"execute":"guest-sync","arguments":{"id":7},"id":"mine"}"#,
        ],
    )
    .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "7\n"),
        "{}",
        out.stderr
    );
    let out = call(agent.socket(), &["--raw", "[1]"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(
        json_out(&out)["error"]["desc"],
        "QMP input must be a JSON object"
    );
}

#[tokio::test]
async fn call_rejects_bad_arguments_with_exit_2() {
    let h = Hostile::well_behaved();
    for (args, says) in [
        (
            &["guest-sync", "{id: 5}"][..],
            "ARGUMENTS_JSON is not valid JSON",
        ),
        (
            &["guest-sync", "[5]"][..],
            "ARGUMENTS_JSON must be a JSON object",
        ),
        (&["--raw", "{"][..], "--raw is not valid JSON"),
    ] {
        let out = call(h.path(), args).await;
        assert_eq!(out.code, 2, "{args:?}");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    // Usage errors from the parser itself.
    let out = call(h.path(), &[]).await;
    assert_eq!(out.code, 2);
    let out = call(h.path(), &["--raw", "{}", "guest-ping"]).await;
    assert_eq!(out.code, 2);
    let out = run(&["call", "guest-ping"]).await;
    assert_eq!(out.code, 2);
    assert!(h.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn call_names_a_bad_socket_path_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let out = call(&missing, &["guest-ping"]).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("missing.sock"), "{}", out.stderr);
    let file = dir.path().join("regular-file");
    std::fs::write(&file, b"").unwrap();
    let out = call(&file, &["guest-ping"]).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("not a unix socket"), "{}", out.stderr);
}

#[tokio::test]
async fn call_to_a_socket_nobody_listens_on_is_disconnected_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let out = call(&stale, &["guest-ping"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(json_out(&out)["error"]["class"], "Disconnected");
    assert!(out.stderr.contains("stale.sock"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_times_out_within_its_deadline_with_exit_1() {
    let h = Hostile::start(|_, mut peer| async move { while peer.request().await.is_some() {} });
    let start = Instant::now();
    let out = call(h.path(), &["--timeout-ms", "300", "guest-ping"]).await;
    assert_eq!(out.code, 1);
    let error = &json_out(&out)["error"];
    assert_eq!(error["class"], "Timeout");
    assert!(
        error["desc"].as_str().unwrap_or("").contains("300 ms"),
        "{error}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_of_a_no_reply_command_prints_an_empty_object() {
    let h = Hostile::well_behaved();
    let out = call(h.path(), &["guest-shutdown", r#"{"mode": "powerdown"}"#]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "{}\n"),
        "{}",
        out.stderr
    );
    assert!(h.commands().contains(&"guest-shutdown".to_owned()));
}

// ---- session ----------------------------------------------------------------------------

/// Runs a session with these stdin lines and returns its stdout lines and exit code.
async fn session(socket: &Path, lines: &[&str]) -> (Vec<Value>, i32) {
    let mut child = Command::new(BIN)
        .args(["session", "--socket", socket.to_str().expect("utf-8 path")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let answers = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    (answers, out.status.code().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_answers_each_step_on_one_connection() {
    let agent = RealAgent::start(&[]).unwrap();
    let (answers, code) = session(
        agent.socket(),
        &[
            r#"{"id": 1, "execute": "guest-ping", "arguments": {}, "timeout_ms": 2000}"#,
            r#"{"id": 2, "execute": "guest-sync", "arguments": {"id": 42}}"#,
            "",
            r#"{"id": "three", "execute": "guest-nosuch"}"#,
            r#"{"id": 4, "execute": "guest-shutdown"}"#,
            r#"{"id": 5, "execute": "guest-sync", "arguments": {"id": 43}, "timeout_ms": 2000}"#,
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        answers,
        [
            json!({"id": 1, "return": {}}),
            json!({"id": 2, "return": 42}),
            json!({"id": "three", "error": {"class": "CommandNotFound", "desc": "The command guest-nosuch has not been found"}}),
            json!({"id": 4, "error": {"class": "CommandNotFound", "desc": "Command guest-shutdown has been disabled"}}),
            json!({"id": 5, "return": 43}),
        ]
    );
}

#[tokio::test]
async fn session_answers_bad_lines_with_protocol_errors_and_goes_on() {
    let h = Hostile::well_behaved();
    let (answers, code) = session(
        h.path(),
        &[
            "nonsense",
            "[1, 2]",
            r#"{"id": 7}"#,
            r#"{"id": 8, "execute": "guest-ping", "arguments": [1]}"#,
            r#"{"id": 9, "execute": "guest-ping", "timeout_ms": "soon"}"#,
            r#"{"id": 10, "execute": "guest-ping"}"#,
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(answers.len(), 6);
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(
        ids,
        [
            &json!(null),
            &json!(null),
            &json!(7),
            &json!(8),
            &json!(9),
            &json!(10)
        ]
    );
    for (answer, says) in answers[..5].iter().zip([
        "not JSON",
        "not a JSON object",
        "'execute' is missing",
        "'arguments' must be an object",
        "'timeout_ms'",
    ]) {
        assert_eq!(answer["error"]["class"], "Protocol", "{answer}");
        let desc = answer["error"]["desc"].as_str().unwrap_or("");
        assert!(desc.contains(says), "{desc}");
    }
    assert_eq!(answers[5], json!({"id": 10, "return": {}}));
    // Only the good step reached the agent.
    assert_eq!(h.commands(), ["guest-sync-delimited", "guest-ping"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_does_not_take_a_late_reply_for_the_next_step() {
    let h = Hostile::start(|_, mut peer| async move {
        let Some(first) = peer.next_command().await else {
            return;
        };
        let Some(sync) = peer.expect_sync().await else {
            return;
        };
        peer.answer(&first, json!({"host-name": "late"})).await;
        peer.answer(&sync, sync["arguments"]["id"].clone()).await;
        peer.serve().await;
    });
    let (answers, code) = session(
        h.path(),
        &[
            r#"{"id": 1, "execute": "guest-get-host-name", "timeout_ms": 200}"#,
            r#"{"id": 2, "execute": "guest-get-host-name", "timeout_ms": 3000}"#,
            r#"{"id": 3, "execute": "guest-shutdown", "timeout_ms": 3000}"#,
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(answers[0]["id"], 1);
    assert_eq!(answers[0]["error"]["class"], "Timeout");
    assert_eq!(
        answers[1],
        json!({"id": 2, "return": {"host-name": "scripted"}})
    );
    assert_eq!(answers[2], json!({"id": 3, "return": {}}));
}

#[tokio::test]
async fn session_takes_any_timeout_without_overflowing() {
    let h = Hostile::well_behaved();
    let (answers, code) = session(
        h.path(),
        &[
            r#"{"id": 1, "execute": "guest-ping", "timeout_ms": 18446744073709551615}"#,
            r#"{"id": 2, "execute": "guest-shutdown", "timeout_ms": 18446744073709551615}"#,
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        answers,
        [
            json!({"id": 1, "return": {}}),
            json!({"id": 2, "return": {}})
        ]
    );
}

#[tokio::test]
async fn session_reports_a_missing_agent_as_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let (answers, code) = session(
        &dir.path().join("none.sock"),
        &[r#"{"id": 1, "execute": "guest-ping"}"#],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(answers[0]["id"], 1);
    assert_eq!(answers[0]["error"]["class"], "Disconnected");
}
