//! The control socket: JSON lines that add, list and remove rules and drive the agent's
//! life while the mock's clients stay connected; every bad line gets an answer naming what
//! was wrong, and the control connection goes on.

mod common;

use std::path::Path;

use common::*;
use qga_harness::{AgentState, MockAgent};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

struct Control {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Control {
    async fn connect(path: &Path) -> Control {
        let stream = UnixStream::connect(path).await.expect("connect to control");
        let (read, writer) = stream.into_split();
        Control {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn raw(&mut self, line: &[u8]) -> Value {
        self.writer.write_all(line).await.expect("write");
        self.writer.write_all(b"\n").await.expect("write");
        let mut answer = String::new();
        tokio::time::timeout(PATIENCE, self.reader.read_line(&mut answer))
            .await
            .expect("an answer in time")
            .expect("read");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer}: {e}"))
    }

    async fn ask(&mut self, request: Value) -> Value {
        self.raw(request.to_string().as_bytes()).await
    }

    async fn ok(&mut self, request: Value) -> Value {
        let answer = self.ask(request.clone()).await;
        assert_eq!(answer["ok"], true, "{request} → {answer}");
        answer
    }

    async fn error(&mut self, line: &[u8]) -> String {
        let answer = self.raw(line).await;
        assert_eq!(answer["ok"], false, "{} → {answer}", show(line));
        answer["error"].as_str().expect("an error text").to_owned()
    }
}

async fn mock_with_control(dir: &tempfile::TempDir) -> (MockAgent, Control) {
    let control = dir.path().join("control.sock");
    let mock = MockAgent::builder()
        .control(&control)
        .start_in(dir.path())
        .await
        .expect("start");
    let control = Control::connect(&control).await;
    (mock, control)
}

#[tokio::test(start_paused = true)]
async fn rules_are_added_listed_and_removed_while_a_client_stays_connected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mock, mut control) = mock_with_control(&dir).await;
    let mut client = Client::connect(mock.socket_path()).await;

    let first = control
        .ok(json!({"op": "add", "rule": {"when": {"command": "guest-ping"}, "do": [{"action": "return", "value": 5}]}}))
        .await;
    assert_eq!(first["id"], 1);
    client.send(&ping(1)).await;
    client.expect(b"{\"return\": 5, \"id\": 1}\n").await;

    let second = control
        .ok(json!({"op": "add", "spec": "guest-sync:wrong-sync-id=float"}))
        .await;
    assert_eq!(second["id"], 2);
    client.send(&sync(3)).await;
    client.expect(b"{\"return\": 3.0}\n").await;

    let list = control.ok(json!({"op": "list"})).await;
    assert_eq!(list["rules"].as_array().map(Vec::len), Some(2));
    assert_eq!(list["rules"][0]["id"], 1);
    assert_eq!(list["rules"][0]["fired"], 1);
    assert_eq!(list["rules"][1]["rule"]["do"][0]["action"], "wrong-sync-id");

    control.ok(json!({"op": "remove", "id": 1})).await;
    let again = control.error(br#"{"op": "remove", "id": 1}"#).await;
    assert!(again.contains("no rule with id 1"), "{again}");
    client.send(&ping(2)).await;
    client.expect(&ping_reply(2)).await;

    let cleared = control.ok(json!({"op": "clear"})).await;
    assert_eq!(cleared["removed"], 1);
    client.send(&sync(4)).await;
    client.expect(b"{\"return\": 4}\n").await;

    let status = control.ok(json!({"op": "status"})).await;
    assert_eq!(status["state"], "running");
    assert_eq!(status["seed"], 0);
    assert_eq!(status["rules"], 0);
    assert_eq!(status["requests"], 4);
    assert_eq!(status["channel"]["serving"], 1);
}

#[tokio::test(start_paused = true)]
async fn life_commands_act_on_the_agent_and_the_client_never_sees_eof() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mock, mut control) = mock_with_control(&dir).await;
    let mut client = Client::connect(mock.socket_path()).await;

    let hung = control.ok(json!({"op": "life", "do": "hang"})).await;
    assert_eq!(hung["state"], "hung");
    client.send(&ping(1)).await;
    client.expect_quiet().await;
    control.ok(json!({"op": "life", "do": "resume"})).await;
    client.expect(&ping_reply(1)).await;

    let dead = control.ok(json!({"op": "life", "do": "kill"})).await;
    assert_eq!(dead["state"], "dead");
    client.send(&ping(2)).await;
    client.expect_quiet().await;
    control.ok(json!({"op": "life", "do": "start"})).await;
    client.expect(&ping_reply(2)).await;

    let restarting = control
        .ok(json!({"op": "life", "do": "restart", "after_ms": 300}))
        .await;
    assert_eq!(restarting["state"], "restarting");
    client.send(&ping(3)).await;
    client.expect(&ping_reply(3)).await;
    assert_eq!(mock.life().state(), AgentState::Running);

    let stopped = control.ok(json!({"op": "life", "do": "stop"})).await;
    assert_eq!(stopped["state"], "dead");
    let refused = control.error(br#"{"op": "life", "do": "hang"}"#).await;
    assert!(
        refused.contains("cannot hang the agent: it is dead"),
        "{refused}"
    );
    control.ok(json!({"op": "life", "do": "start"})).await;
    client.send(&ping(4)).await;
    client.expect(&ping_reply(4)).await;
}

#[tokio::test(start_paused = true)]
async fn every_bad_line_is_answered_with_what_was_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mock, mut control) = mock_with_control(&dir).await;
    let cases: &[(&[u8], &str)] = &[
        (b"not json", "not JSON"),
        (b"[1]", "expected a JSON object"),
        (
            b"{}",
            "missing \"op\": expected one of add, list, remove, clear, life, status",
        ),
        (br#"{"op": 3}"#, "\"op\" must be a string"),
        (br#"{"op": "ad"}"#, "did you mean 'add'"),
        (br#"{"op": "add"}"#, "add needs \"rule\""),
        (br#"{"op": "add", "rule": {}, "spec": "hang"}"#, "not both"),
        (
            br#"{"op": "add", "rule": {"do": [{"action": "hnag"}]}}"#,
            "\"rule\" is not a fault rule: unknown variant `hnag`",
        ),
        (
            br#"{"op": "add", "rule": {"when": {"nth": 0}, "do": []}}"#,
            "when.nth must be at least 1",
        ),
        (
            br#"{"op": "add", "spec": "guest-ping@x:hang"}"#,
            "column 12",
        ),
        (br#"{"op": "add", "spec": 5}"#, "\"spec\" must be a string"),
        (
            br#"{"op": "add", "rules": {}}"#,
            "unknown member \"rules\" for op \"add\" (did you mean 'rule'?)",
        ),
        (
            br#"{"op": "list", "all": true}"#,
            "it takes no other members",
        ),
        (br#"{"op": "remove"}"#, "remove needs \"id\""),
        (
            br#"{"op": "remove", "id": "1"}"#,
            "\"id\" must be a whole number",
        ),
        (br#"{"op": "life"}"#, "life needs \"do\""),
        (
            br#"{"op": "life", "do": "restat"}"#,
            "did you mean 'restart'",
        ),
        (
            br#"{"op": "life", "do": "kill", "after_ms": 5}"#,
            "\"after_ms\" goes with \"restart\" only",
        ),
        (
            br#"{"op": "life", "do": "restart", "after_ms": -1}"#,
            "\"after_ms\" must be a whole number",
        ),
    ];
    for (line, expected) in cases {
        let error = control.error(line).await;
        assert!(error.contains(expected), "{} → {error}", show(line));
    }
    // A line too long to be a request is refused, and the connection goes on.
    let long = vec![b'x'; 3 << 20];
    let error = control.error(&long).await;
    assert!(error.contains("longer than"), "{error}");
    control.ok(json!({"op": "status"})).await;
    assert_eq!(mock.faults().list().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn several_control_clients_are_served_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_mock, mut first) = mock_with_control(&dir).await;
    let mut second = Control::connect(&dir.path().join("control.sock")).await;
    let added = first
        .ok(json!({"op": "add", "spec": "guest-ping:hang"}))
        .await;
    let list = second.ok(json!({"op": "list"})).await;
    assert_eq!(list["rules"][0]["id"], added["id"]);
    second.ok(json!({"op": "remove", "id": added["id"]})).await;
    let list = first.ok(json!({"op": "list"})).await;
    assert_eq!(list["rules"], json!([]));
}

#[tokio::test(start_paused = true)]
async fn the_control_socket_is_removed_with_the_mock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let control = dir.path().join("control.sock");
    let mock = MockAgent::builder()
        .control(&control)
        .start_in(dir.path())
        .await
        .expect("start");
    assert!(control.exists());
    mock.shutdown().await.expect("shutdown");
    assert!(!control.exists());

    let busy = tempfile::tempdir().expect("temp dir");
    std::fs::write(busy.path().join("control.sock"), b"a file").expect("write");
    let e = MockAgent::builder()
        .control(busy.path().join("control.sock"))
        .start_in(busy.path())
        .await
        .expect_err("not a socket");
    let chain = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        chain.contains("control socket") && chain.contains("not a socket"),
        "{chain}"
    );
}
