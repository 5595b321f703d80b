//! `qga-harness mock` as a process: socket path problems, signals, the transcript file.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::process::{mock_command, run_to_exit, Running, PATIENCE};
use rstest::rstest;

fn round_trip(socket: &Path, request: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(request).expect("write");
    let mut line = Vec::new();
    BufReader::new(stream)
        .read_until(b'\n', &mut line)
        .expect("read a reply");
    line
}

const SYNC_7: &[u8] = br#"{"execute":"guest-sync","arguments":{"id":7}}"#;

#[derive(Debug, Clone, Copy)]
enum PathProblem {
    NotASocket,
    TooLong,
    MissingDirectory,
    LiveSocket,
    NoPermission,
}

#[rstest]
#[case::not_a_socket(PathProblem::NotASocket, "is not a socket")]
#[case::too_long(PathProblem::TooLong, "at most 107 bytes")]
#[case::missing_directory(PathProblem::MissingDirectory, "directory does not exist")]
#[case::live_socket(PathProblem::LiveSocket, "another process is listening")]
#[case::no_permission(PathProblem::NoPermission, "permission denied")]
fn a_bad_socket_path_exits_2_naming_the_path_and_what_to_do(
    #[case] problem: PathProblem,
    #[case] expected: &str,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut _live = None;
    let mut command;
    let socket: PathBuf = match problem {
        PathProblem::NotASocket => {
            let path = dir.path().join("plain-file");
            std::fs::write(&path, b"not a socket").expect("write");
            command = mock_command(&path);
            path
        }
        PathProblem::TooLong => {
            let path = dir.path().join("s".repeat(110));
            command = mock_command(&path);
            path
        }
        PathProblem::MissingDirectory => {
            let path = dir.path().join("missing").join("qga.sock");
            command = mock_command(&path);
            path
        }
        PathProblem::LiveSocket => {
            let path = dir.path().join("qga.sock");
            _live = Some(UnixListener::bind(&path).expect("bind"));
            command = mock_command(&path);
            path
        }
        PathProblem::NoPermission => {
            let locked = dir.path().join("locked");
            std::fs::create_dir(&locked).expect("mkdir");
            std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o500))
                .expect("chmod");
            let path = locked.join("qga.sock");
            command = mock_command(&path);
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                // root ignores file modes: run the mock as an unprivileged user, for whom
                // the temp dir (mode 0700, root's) is out of reach.
                command.uid(65534).gid(65534);
            }
            path
        }
    };
    let output = run_to_exit(&mut command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{problem:?}: {stderr}");
    assert!(
        stderr.contains(&*socket.to_string_lossy()),
        "{problem:?}: the message names the path: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "{problem:?}: expected '{expected}' in: {stderr}"
    );
    if matches!(problem, PathProblem::NotASocket) {
        assert_eq!(
            std::fs::read(&socket).expect("read"),
            b"not a socket",
            "the file is left alone"
        );
    }
}

#[rstest]
#[case::sigterm(libc::SIGTERM)]
#[case::sigint(libc::SIGINT)]
fn a_signal_shuts_the_mock_down_and_removes_its_socket(#[case] signal: libc::c_int) {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    let mock = Running::mock(&socket, &[]);
    assert_eq!(round_trip(&socket, SYNC_7), b"{\"return\": 7}\n");

    mock.signal(signal);
    let (status, stderr) = mock.wait();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!socket.exists(), "the socket file is removed");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    // A socket file nobody listens on, as a killed process leaves behind.
    drop(UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());

    let mock = Running::mock(&socket, &[]);
    // The old file exists from the start: wait until the new socket answers connects.
    let deadline = Instant::now() + PATIENCE;
    while let Err(e) = UnixStream::connect(&socket) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(Instant::now() < deadline, "never replaced");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(round_trip(&socket, SYNC_7), b"{\"return\": 7}\n");
    mock.signal(libc::SIGTERM);
    assert_eq!(mock.wait().0.code(), Some(0));
}

#[test]
fn the_transcript_records_every_byte_and_event_as_json_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    let transcript = dir.path().join("transcript.jsonl");
    let transcript_arg = transcript.to_string_lossy().into_owned();
    let mock = Running::mock(&socket, &["--transcript", &transcript_arg]);

    let mut request = vec![0xff];
    request.extend_from_slice(br#"{"execute":"guest-sync-delimited","arguments":{"id":3}}"#);
    let mut stream = UnixStream::connect(&socket).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(&request).expect("write");
    let mut reader = BufReader::new(stream);
    let mut error_line = Vec::new();
    reader.read_until(b'\n', &mut error_line).expect("read");
    let mut reply = Vec::new();
    reader.read_until(b'\n', &mut reply).expect("read");
    assert_eq!(reply, b"\xff{\"return\": 3}\n");
    drop(reader);
    mock.signal(libc::SIGTERM);
    assert_eq!(mock.wait().0.code(), Some(0));

    let text = std::fs::read_to_string(&transcript).expect("transcript");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    let times: Vec<u64> = lines
        .iter()
        .map(|l| l["t_us"].as_u64().expect("t_us"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{text}");
    assert_eq!(lines[0]["event"], "mock-started");
    assert_eq!(lines[0]["detail"], "virtio-serial");
    let has = |want: serde_json::Value| {
        lines.iter().any(|l| {
            want.as_object()
                .expect("object")
                .iter()
                .all(|(k, v)| &l[k] == v)
        })
    };
    use base64::Engine as _;
    let request_b64 = base64::engine::general_purpose::STANDARD.encode(&request);
    let reply_b64 = base64::engine::general_purpose::STANDARD.encode(&reply);
    assert!(has(serde_json::json!({"event": "agent-started"})), "{text}");
    assert!(
        has(serde_json::json!({"conn": 1, "event": "connected"})),
        "{text}"
    );
    assert!(
        has(serde_json::json!({"conn": 1, "dir": "in", "b64": request_b64})),
        "{text}"
    );
    assert!(
        has(
            serde_json::json!({"conn": 1, "dir": "out", "text": String::from_utf8_lossy(&error_line)})
        ),
        "{text}"
    );
    assert!(
        has(serde_json::json!({"conn": 1, "dir": "out", "b64": reply_b64})),
        "{text}"
    );
    assert!(
        has(serde_json::json!({"conn": 1, "event": "disconnected"})),
        "{text}"
    );
    assert!(has(serde_json::json!({"event": "shutdown"})), "{text}");
}

#[test]
fn a_start_delay_leaves_the_socket_accepting_and_answers_late() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    let mock = Running::mock(&socket, &["--start-delay", "300"]);
    let asked = Instant::now();
    assert_eq!(round_trip(&socket, SYNC_7), b"{\"return\": 7}\n");
    assert!(asked.elapsed() >= Duration::from_millis(250));
    mock.signal(libc::SIGTERM);
    assert_eq!(mock.wait().0.code(), Some(0));
}

#[test]
fn blocked_commands_answer_disabled_and_unix_listen_is_selectable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    let mock = Running::mock(
        &socket,
        &[
            "--transport",
            "unix-listen",
            "--block-rpcs",
            "guest-ping,guest-info",
        ],
    );
    let reply = round_trip(&socket, br#"{"execute":"guest-ping"}"#);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.contains("has been disabled"), "{reply}");
    mock.signal(libc::SIGTERM);
    assert_eq!(mock.wait().0.code(), Some(0));
}

#[rstest]
#[case::bad_profile_json(&["--profile", "PROFILE"], "profile.json:2:")]
#[case::missing_profile(&["--profile", "MISSING"], "cannot read profile")]
#[case::allow_list_on_7_2(&["--allow-rpcs", "guest-ping"], "8.1")]
#[case::bad_transport(&["--transport", "vsock"], "vsock")]
fn bad_options_exit_2_with_a_message(#[case] extra: &[&str], #[case] expected: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    let profile = dir.path().join("profile.json");
    std::fs::write(&profile, "{\n  \"agent\": 5\n}\n").expect("write");
    let missing = dir.path().join("missing.json");
    let args: Vec<String> = extra
        .iter()
        .map(|a| match *a {
            "PROFILE" => profile.to_string_lossy().into_owned(),
            "MISSING" => missing.to_string_lossy().into_owned(),
            other => other.to_owned(),
        })
        .collect();
    let output = run_to_exit(mock_command(&socket).args(&args));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected '{expected}' in: {stderr}"
    );
    assert!(!socket.exists(), "no socket left behind");
}
