//! The fault options of `qga-harness mock`, `qga-harness ctl` and `qga-harness replay`
//! as processes: scripted faults on the wire, bad input with its place, exit codes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::process::{mock_command, qga_harness, run_to_exit, Running, PATIENCE};

fn mock(socket: &Path, extra: &[&str]) -> Output {
    run_to_exit(mock_command(socket).args(extra))
}

fn ctl(control: &Path, extra: &[&str]) -> Output {
    run_to_exit(
        qga_harness()
            .args(["ctl", "--control"])
            .arg(control)
            .args(extra),
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Connects, retrying while the socket file exists but does not listen yet (bind comes
/// before listen), with a deadline.
fn connect(path: &Path) -> UnixStream {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return stream,
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("connect {}: {e}", path.display()),
        }
    }
}

/// Sends `request` and reads one line.
fn round_trip(stream: &mut UnixStream, request: &[u8]) -> Vec<u8> {
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(request).expect("write");
    let mut line = Vec::new();
    BufReader::new(&*stream)
        .read_until(b'\n', &mut line)
        .expect("read a reply");
    line
}

const PING: &[u8] = br#"{"execute":"guest-ping","id":1}"#;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a file");
}

#[test]
fn a_bad_fault_spec_exits_2_with_the_offending_part() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = mock(&dir.path().join("s"), &["--fault", "guest-ping@x:hang"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--fault"), "{err}");
    assert!(err.contains("column 12 (at 'x:hang')"), "{err}");
    assert!(err.contains("expected a whole number"), "{err}");

    let out = mock(
        &dir.path().join("s"),
        &["--fault", "guest-ping:die-mid-replay=10"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did you mean 'die-mid-reply'"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("s").exists(), "no socket left behind");
}

#[test]
fn a_bad_scenario_exits_2_with_file_line_column_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "{\"id\": \"x.1\", \"title\": \"t\", \"requirement\": \"r\",\n \"agent\": {\"sead\": 3}}\n",
            ":2:17: at `agent.sead`",
            "did you mean 'seed'",
        ),
        (
            "{\"id\": \"x.1\", \"title\": \"t\", \"requirement\": \"r\",\n \"agent\": {\"faults\": [\"guest-ping:hnag\"]}}\n",
            ":2:24: at `agent.faults[0]`",
            "did you mean 'hang'",
        ),
        (
            "{\"id\": \"x.1\", \"title\": \"t\", \"requirement\": \"r\",\n \"agent\": {\"faults\": [\n  {\"when\": {\"comand\": \"guest-ping\"}, \"do\": []}]}}\n",
            ":3:",
            "did you mean 'command'",
        ),
        (
            "{\"id\": \"x.1\", \"title\": \"t\", \"requirement\": \"r\",\n \"agent\": {\"faults\": [{\"do\": [{\"action\": \"raw\", \"base64\": \"!!\"}]}]}}\n",
            ":2:12: at `agent.faults[0]`",
            "base64 does not decode",
        ),
        (
            "{\"id\": \"x.1\", \"title\": \"t\", \"requirement\": \"r\",\n \"agent\": {\"state\": {\"pending_output\": {\"base64\": \"!!\"}}}}\n",
            ":2:56: at `agent.state.pending_output`",
            "base64 does not decode",
        ),
        (
            "{\"id\": \"x.1\", \"title\": \"t\", \"requirement\": \"r\",\n \"agent\": {\"transport\": \"vsock\"}}\n",
            ":2:",
            "unknown variant",
        ),
    ];
    for (i, (text, place, what)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.json"));
        write(&file, text);
        let out = mock(
            &dir.path().join("s"),
            &["--scenario", file.to_str().expect("utf-8")],
        );
        assert_eq!(out.status.code(), Some(2), "case {i}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("bad{i}.json{place}")),
            "case {i}: {err}"
        );
        assert!(err.contains(what), "case {i}: {err}");
    }
}

#[test]
fn a_scenario_and_extra_faults_shape_the_replies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("case.json");
    write(
        &scenario,
        r#"{"id": "x.1", "title": "t", "requirement": "r",
            "agent": {"faults": ["guest-ping:garbage=crlf"], "seed": 3}}"#,
    );
    let socket = dir.path().join("qga.sock");
    let transcript = dir.path().join("t.jsonl");
    let running = Running::mock(
        &socket,
        &[
            "--scenario",
            scenario.to_str().expect("utf-8"),
            "--fault",
            "guest-sync:wrong-sync-id=off-by-one",
            "--transcript",
            transcript.to_str().expect("utf-8"),
        ],
    );
    let mut stream = connect(&socket);
    assert_eq!(
        round_trip(&mut stream, PING),
        b"{\"return\": {}, \"id\": 1}\r\n"
    );
    assert_eq!(
        round_trip(
            &mut stream,
            br#"{"execute":"guest-sync","arguments":{"id":8}}"#
        ),
        b"{\"return\": 9}\n"
    );
    drop(stream);
    assert_eq!(running.stop(), 0);
    let text = std::fs::read_to_string(&transcript).expect("transcript");
    let setup = text
        .lines()
        .find(|l| l.contains("\"agent-setup\""))
        .expect("setup record");
    assert!(setup.contains("\"seed\":3"), "{setup}");
    assert_eq!(text.matches("\"event\":\"fault\"").count(), 2, "{text}");
}

#[test]
fn replay_serves_the_recorded_agent_and_writes_it_as_a_scenario() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    let transcript = dir.path().join("t.jsonl");
    let script: Vec<&[u8]> = vec![
        PING,
        br#"{"execute":"guest-ping","id":2}"#,
        br#"{"execute":"guest-get-host-name","id":3}"#,
        br#"{"execute":"guest-ping","id":4}"#,
    ];
    // Each request is followed by a sync whose reply marks the end of what it caused, so
    // the client reads every spurious line, however the bytes were chunked.
    let play = |extra: &[&str]| -> Vec<u8> {
        let running = Running::mock(&socket, extra);
        let stream = connect(&socket);
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        let mut got = Vec::new();
        for (i, request) in script.iter().enumerate() {
            let marker = 9000 + i;
            writer.write_all(request).expect("write");
            writer
                .write_all(
                    format!(r#"{{"execute":"guest-sync","arguments":{{"id":{marker}}}}}"#)
                        .as_bytes(),
                )
                .expect("write");
            let end = format!("{{\"return\": {marker}}}\n").into_bytes();
            loop {
                let mut line = Vec::new();
                reader.read_until(b'\n', &mut line).expect("read");
                assert!(!line.is_empty(), "EOF");
                got.extend_from_slice(&line);
                if line == end {
                    break;
                }
            }
        }
        drop((reader, writer));
        assert_eq!(running.stop(), 0);
        got
    };
    let recorded = play(&[
        "--seed",
        "12",
        "--fault",
        "guest-ping~0.5:spurious=unknown-id",
        "--transcript",
        transcript.to_str().expect("utf-8"),
    ]);
    assert!(
        recorded.windows(8).any(|w| w == b"spurious"),
        "some rule fired"
    );
    let replayed = play(&["--replay", transcript.to_str().expect("utf-8")]);
    assert_eq!(recorded, replayed);

    let scenario = dir.path().join("replay.json");
    let out = run_to_exit(
        qga_harness()
            .arg("replay")
            .arg(&transcript)
            .arg("--out")
            .arg(&scenario),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let loaded = qga_harness::scenario::Scenario::load(&scenario).expect("a valid scenario");
    assert_eq!(loaded.agent.seed, Some(12));
    assert_eq!(loaded.agent.faults.len(), 1);
    let from_scenario = play(&["--scenario", scenario.to_str().expect("utf-8")]);
    assert_eq!(recorded, from_scenario);

    let out = run_to_exit(
        qga_harness()
            .arg("replay")
            .arg(dir.path().join("missing.jsonl"))
            .arg("--out")
            .arg(&scenario),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ctl_changes_faults_and_life_while_the_client_stays_connected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    let control = dir.path().join("control.sock");
    let running = Running::start(
        mock_command(&socket).args(["--control", control.to_str().expect("utf-8")]),
        &control,
    );
    let mut stream = connect(&socket);
    assert_eq!(
        round_trip(&mut stream, PING),
        b"{\"return\": {}, \"id\": 1}\n"
    );

    let out = ctl(&control, &["add", "guest-ping:return=5"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["id"], 1);
    assert_eq!(
        round_trip(&mut stream, PING),
        b"{\"return\": 5, \"id\": 1}\n"
    );

    let out = ctl(&control, &["list"]);
    assert_eq!(out.status.code(), Some(0));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["rules"][0]["fired"], 1);

    let out = ctl(&control, &["restart", "50"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"state\":\"restarting\""));
    // The client's connection lives through the restart; the answer comes late.
    assert_eq!(
        round_trip(&mut stream, PING),
        b"{\"return\": 5, \"id\": 1}\n"
    );

    let out = ctl(&control, &["remove", "1"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        round_trip(&mut stream, PING),
        b"{\"return\": {}, \"id\": 1}\n"
    );

    // Refused by the mock: 1. Bad usage: 2.
    let out = ctl(&control, &["remove", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no rule with id 1"),
        "{}",
        stderr(&out)
    );
    let out = ctl(&control, &["start"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("it is running"), "{}", stderr(&out));
    let out = ctl(&control, &["add", "guest-ping:hnag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did you mean 'hang'"),
        "{}",
        stderr(&out)
    );
    let out = ctl(&dir.path().join("nothing.sock"), &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));

    let out = ctl(&control, &["status"]);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["state"], "running");
    assert_eq!(answer["channel"]["accepted"], 1);
    assert_eq!(answer["channel"]["serving"], 1);

    let out = ctl(&control, &["vm-exit"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut rest = Vec::new();
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.read_to_end(&mut rest).expect("EOF");
    assert!(rest.is_empty());
    assert_eq!(running.exit_code(), 0);
    assert!(!control.exists(), "the control socket is removed");
}
