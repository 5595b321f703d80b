//! `qga-harness capture` against the real qemu-ga: the captured profile makes the simulated
//! guest answer the read-only commands with the real agent's data, in the real agent's
//! bytes.
//!
//! The bytes are rendered here by a small reference writer that follows the measured rules
//! (QDict hash order, `": "` and `", "`); the mock's own writer is checked against the
//! real agent by the fidelity test.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use qga_harness::guest::capture::{capture, CaptureOptions};
use qga_harness::guest::{Guest, Profile};
use qga_harness::internals::real_agent::RealAgent;
use qga_harness::wire::{Object, Value};

/// One request on a fresh connection to the real agent; returns the reply line.
fn ask_real(socket: &Path, request: &str) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).expect("connect to the real agent");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set timeout");
    // Reset the agent's parser first, then skip to the sync reply.
    stream
        .write_all(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":4711}}")
        .expect("write");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut skipped = Vec::new();
    reader.read_until(0xFF, &mut skipped).expect("read to 0xFF");
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .expect("read sync reply");
    assert_eq!(line, b"{\"return\": 4711}\n");
    stream.write_all(request.as_bytes()).expect("write request");
    let mut reply = Vec::new();
    reader.read_until(b'\n', &mut reply).expect("read reply");
    reply
}

/// qemu-ga's key order: QDict bucket `tdb_hash(key) % 512` ascending, newest first
/// within a bucket (measured, qga-wire.md §0.4).
fn bucket(key: &str) -> u32 {
    let mut h: u32 = 0x238F_13AFu32.wrapping_mul(key.len() as u32);
    for (i, b) in key.bytes().enumerate() {
        h = h.wrapping_add(u32::from(b) << ((i * 5) % 24));
    }
    (1_103_515_243u32.wrapping_mul(h).wrapping_add(12345)) % 512
}

fn render(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::UInt(u) => out.push_str(&u.to_string()),
        Value::Float(f) => out.push_str(&format!("{f:?}")),
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
                    c => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{u:04X}"));
                        }
                    }
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item, out);
            }
            out.push(']');
        }
        Value::Object(object) => {
            let mut members: Vec<(usize, &str, &Value)> = object
                .iter()
                .enumerate()
                .map(|(i, (k, v))| (i, k, v))
                .collect();
            members.sort_by_key(|(i, k, _)| (bucket(k), std::cmp::Reverse(*i)));
            out.push('{');
            for (n, (_, k, v)) in members.into_iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                render(&Value::String(k.to_owned()), out);
                out.push_str(": ");
                render(v, out);
            }
            out.push('}');
        }
    }
}

/// The reply line qemu-ga would write for the mock's result.
fn reply_line(result: Result<Value, String>) -> Vec<u8> {
    let wrapped = match result {
        Ok(v) => Object::new().with("return", v),
        Err(desc) => Object::new().with(
            "error",
            Value::Object(
                Object::new()
                    .with("class", Value::from("GenericError"))
                    .with("desc", Value::String(desc)),
            ),
        ),
    };
    let mut out = String::new();
    render(&Value::Object(wrapped), &mut out);
    out.push('\n');
    out.into_bytes()
}

fn mask_digits(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for &b in bytes {
        if b.is_ascii_digit() {
            if out.last() != Some(&b'0') {
                out.push(b'0');
            }
        } else {
            out.push(b);
        }
    }
    out
}

fn run_mock(guest: &mut Guest, command: &str, args: serde_json::Value) -> Vec<u8> {
    let args = match Value::from_serde(&args) {
        Value::Object(o) => o,
        _ => Object::new(),
    };
    reply_line(guest.run(command, &args).map_err(|e| e.0))
}

#[test]
fn a_captured_profile_reproduces_the_real_agents_read_only_answers() {
    let agent = RealAgent::start(&[]).expect("start the real qemu-ga (package qemu-guest-agent)");
    let captured = capture(agent.socket(), &CaptureOptions::default()).expect("capture");
    assert!(captured.warnings.is_empty(), "{:?}", captured.warnings);
    let profile = captured.profile;
    assert_eq!(profile.agent.version.to_string(), "7.2.22");
    let blocked = profile.agent.block_rpcs.clone().unwrap_or_default();
    for command in qga_harness::internals::real_agent::safe_block_list() {
        assert!(
            blocked.iter().any(|b| b == command),
            "{command} not recorded as blocked"
        );
    }
    assert!(blocked.iter().any(|b| b == "guest-get-devices"));

    let mut guest = Guest::new(profile);
    // Byte for byte: these do not move between two asks.
    let exact: &[(&str, serde_json::Value)] = &[
        ("guest-get-osinfo", serde_json::json!({})),
        ("guest-get-host-name", serde_json::json!({})),
        ("guest-get-timezone", serde_json::json!({})),
        ("guest-get-users", serde_json::json!({})),
        ("guest-get-vcpus", serde_json::json!({})),
        ("guest-get-memory-blocks", serde_json::json!({})),
        ("guest-get-memory-block-info", serde_json::json!({})),
        ("guest-get-disks", serde_json::json!({})),
        ("guest-fsfreeze-status", serde_json::json!({})),
        (
            "guest-ssh-get-authorized-keys",
            serde_json::json!({"username": "root"}),
        ),
        (
            "guest-ssh-get-authorized-keys",
            serde_json::json!({"username": "nobody"}),
        ),
        (
            "guest-ssh-get-authorized-keys",
            serde_json::json!({"username": "no-such-user-qga-probe"}),
        ),
        ("guest-exec-status", serde_json::json!({"pid": 999999})),
        (
            "guest-file-read",
            serde_json::json!({"handle": 12345, "count": -1}),
        ),
        (
            "guest-file-seek",
            serde_json::json!({"handle": 12345, "offset": 0, "whence": 0}),
        ),
    ];
    // Counters and clocks move: compare with every digit run masked.
    let shape: &[&str] = &[
        "guest-get-fsinfo",
        "guest-network-get-interfaces",
        "guest-get-diskstats",
        "guest-get-cpustats",
        "guest-get-time",
    ];
    let mut failures = Vec::new();
    for (command, args) in exact {
        let request = serde_json::json!({"execute": command, "arguments": args}).to_string();
        let real = ask_real(agent.socket(), &request);
        let mock = run_mock(&mut guest, command, args.clone());
        if real != mock {
            failures.push(format!(
                "{command} {args}:\n  real: {}\n  mock: {}",
                String::from_utf8_lossy(&real),
                String::from_utf8_lossy(&mock)
            ));
        }
    }
    for command in shape {
        let request = serde_json::json!({ "execute": command }).to_string();
        let real = mask_digits(&ask_real(agent.socket(), &request));
        let mock = mask_digits(&run_mock(&mut guest, command, serde_json::json!({})));
        if real != mock {
            failures.push(format!(
                "{command} (shape):\n  real: {}\n  mock: {}",
                String::from_utf8_lossy(&real),
                String::from_utf8_lossy(&mock)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_capture_command_writes_a_loadable_profile() {
    let agent = RealAgent::start(&[]).expect("start the real qemu-ga (package qemu-guest-agent)");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("profile.json");
    let status = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .arg("capture")
        .arg("--socket")
        .arg(agent.socket())
        .arg("--output")
        .arg(&out)
        .status()
        .expect("run qga-harness");
    assert!(status.success(), "{status}");
    let profile = Profile::load(&out).expect("the captured profile loads");
    assert!(!profile.host_name.is_empty());
    assert!(!profile.fsfreeze.frozen);
}

#[test]
fn capture_from_a_missing_socket_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("absent.sock");
    let output = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .arg("capture")
        .arg("--socket")
        .arg(&socket)
        .output()
        .expect("run qga-harness");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
    assert!(stderr.contains("is the agent running"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn capture_from_a_silent_peer_times_out_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("silent.sock");
    // A listener that accepts and never answers.
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let holder = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let output = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .args(["capture", "--timeout-ms", "200", "--socket"])
        .arg(&socket)
        .output()
        .expect("run qga-harness");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no reply to guest-sync-delimited"),
        "{stderr}"
    );
    assert!(stderr.contains("--timeout-ms"), "{stderr}");
    drop(holder.join());
}

#[test]
fn capture_from_a_peer_that_sends_garbage_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("garbage.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        // Answer the sync properly, then garbage for guest-info.
        let mut request = Vec::new();
        reader.read_until(b'}', &mut request).expect("read");
        reader.read_until(b'}', &mut request).expect("read");
        let text = String::from_utf8_lossy(&request).into_owned();
        let id: String = text
            .rsplit("\"id\":")
            .next()
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let mut reply = vec![0xFF];
        reply.extend_from_slice(
            format!("{{\"return\": {id}}}\nHTTP/1.1 400 Bad Request\n").as_bytes(),
        );
        stream.write_all(&reply).expect("write");
        // Hold the connection until the client hangs up.
        let mut rest = Vec::new();
        let _ = reader.read_until(0, &mut rest);
    });
    let output = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .args(["capture", "--timeout-ms", "5000", "--socket"])
        .arg(&socket)
        .output()
        .expect("run qga-harness");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is this a qemu-ga socket?"), "{stderr}");
    drop(server.join());
}
