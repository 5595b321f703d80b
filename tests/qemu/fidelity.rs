//! Fidelity's real-guest arm: inside a guest the real qemu-ga runs with nothing blocked, so
//! the commands that change the machine (and never run on the host) are compared byte for
//! byte with the mock, on a profile captured from that guest: guest-exec and its status,
//! the file commands, fsfreeze, set-time, set-vcpus, set-user-password, the ssh keys, and
//! guest-shutdown last (it ends the guest).
//!
//! Both agents get the same sequence of requests on one connection each; a value one
//! reply hands to a later request (a file handle, a pid) is taken from that agent's own
//! reply. Values that move between two asks (pids, handles) are masked as the host
//! fidelity test masks them.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qga_harness::internals::qemu::GuestAgentKind;
use serde_json::Value;

use crate::host_mock::HostMock;
use crate::mask::{mask_digits, show};
use crate::session::Session;
use crate::support;

/// How a step's replies are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compare {
    Exact,
    /// Digits masked: the reply carries a pid or a handle.
    Shape,
}

/// One request of the sequence. `@handle@`, `@pid@` and `@now@` are replaced by the last
/// handle and pid that agent returned, and the host's clock in ns.
struct Step {
    request: String,
    compare: Compare,
    /// guest-exec-status asked again until `exited` is true (the real process takes its
    /// time; the mock's is done at once): only the last reply is compared.
    until_exited: bool,
}

fn exact(request: &str) -> Step {
    Step {
        request: request.to_owned(),
        compare: Compare::Exact,
        until_exited: false,
    }
}

fn shape(request: &str) -> Step {
    Step {
        compare: Compare::Shape,
        ..exact(request)
    }
}

fn status() -> Step {
    Step {
        until_exited: true,
        ..exact(r#"{"execute":"guest-exec-status","arguments":{"pid":@pid@}}"#)
    }
}

const FILE: &str = "/tmp/qgah-fidelity";

fn file_steps() -> Vec<Step> {
    let open = |mode: &str| {
        shape(&format!(
            r#"{{"execute":"guest-file-open","arguments":{{"path":"{FILE}","mode":"{mode}"}}}}"#
        ))
    };
    let on_handle = |command: &str, args: &str| {
        let args = if args.is_empty() {
            String::new()
        } else {
            format!(",{args}")
        };
        exact(&format!(
            r#"{{"execute":"{command}","arguments":{{"handle":@handle@{args}}}}}"#
        ))
    };
    vec![
        open("w+"),
        on_handle("guest-file-write", r#""buf-b64":"aGVsbG8gZmlkZWxpdHkK""#),
        on_handle("guest-file-flush", ""),
        on_handle("guest-file-seek", r#""offset":0,"whence":"set""#),
        on_handle("guest-file-read", r#""count":5"#),
        on_handle("guest-file-seek", r#""offset":-3,"whence":"end""#),
        on_handle("guest-file-seek", r#""offset":1,"whence":1"#),
        on_handle("guest-file-read", r#""count":100"#),
        on_handle("guest-file-read", r#""count":100"#),
        on_handle("guest-file-seek", r#""offset":0,"whence":7"#),
        on_handle("guest-file-write", r#""buf-b64":"bW9yZQ==","count":2"#),
        on_handle("guest-file-write", r#""buf-b64":"bW9yZQ==","count":9"#),
        on_handle("guest-file-write", r#""buf-b64":"not base64!""#),
        on_handle("guest-file-close", ""),
        Step {
            compare: Compare::Shape,
            ..on_handle("guest-file-close", "")
        },
        Step {
            compare: Compare::Shape,
            ..on_handle("guest-file-read", "")
        },
        open("r"),
        on_handle("guest-file-read", ""),
        on_handle("guest-file-read", r#""count":-1"#),
        on_handle("guest-file-write", r#""buf-b64":"eA==""#),
        on_handle("guest-file-close", ""),
        open("a"),
        on_handle("guest-file-write", r#""buf-b64":"YXBwZW5kZWQK""#),
        on_handle("guest-file-close", ""),
        open("r+"),
        on_handle("guest-file-read", r#""count":4096"#),
        on_handle("guest-file-close", ""),
        exact(r#"{"execute":"guest-file-open","arguments":{"path":"/nonexistent/x","mode":"r"}}"#),
        exact(&format!(
            r#"{{"execute":"guest-file-open","arguments":{{"path":"{FILE}","mode":"bogus"}}}}"#
        )),
        exact(r#"{"execute":"guest-file-open","arguments":{"path":"/tmp/new-dir/x","mode":"w"}}"#),
        shape(r#"{"execute":"guest-file-open","arguments":{"path":"/tmp"}}"#),
        on_handle("guest-file-read", r#""count":10"#),
        on_handle("guest-file-close", ""),
    ]
}

fn exec(path: &str, args: &str) -> Step {
    shape(&format!(
        r#"{{"execute":"guest-exec","arguments":{{"path":"{path}"{args}}}}}"#
    ))
}

fn exec_steps() -> Vec<Step> {
    vec![
        exec(
            "/bin/echo",
            r#","arg":["fid","elity"],"capture-output":true"#,
        ),
        status(),
        exact(r#"{"execute":"guest-exec-status","arguments":{"pid":@pid@}}"#),
        exec(
            "/bin/sh",
            r#","arg":["-c","echo out; echo err >&2; exit 3"],"capture-output":true"#,
        ),
        status(),
        exec(
            "/bin/cat",
            r#","input-data":"aW5wdXQgZGF0YQo=","capture-output":true"#,
        ),
        status(),
        exec("/bin/false", ""),
        status(),
        exec("/bin/sh", r#","arg":["-c","kill -9 $$"]"#),
        status(),
        exec("echo", r#","arg":["by","path"],"capture-output":true"#),
        status(),
        exact(r#"{"execute":"guest-exec","arguments":{"path":"/nonexistent"}}"#),
        exact(r#"{"execute":"guest-exec","arguments":{"path":"/tmp"}}"#),
        exact(
            r#"{"execute":"guest-exec","arguments":{"path":"/bin/true","capture-output":"stdout"}}"#,
        ),
        exact(r#"{"execute":"guest-exec","arguments":{"path":"/bin/true","input-data":"!"}}"#),
        exact(r#"{"execute":"guest-exec-status","arguments":{"pid":999999}}"#),
    ]
}

fn freeze_steps() -> Vec<Step> {
    vec![
        exact(r#"{"execute":"guest-fsfreeze-status"}"#),
        exact(r#"{"execute":"guest-fsfreeze-freeze"}"#),
        exact(r#"{"execute":"guest-fsfreeze-status"}"#),
        exact(r#"{"execute":"guest-get-host-name"}"#),
        exact(&format!(
            r#"{{"execute":"guest-file-open","arguments":{{"path":"{FILE}"}}}}"#
        )),
        exact(r#"{"execute":"guest-fsfreeze-freeze"}"#),
        exact(r#"{"execute":"guest-fsfreeze-thaw"}"#),
        exact(r#"{"execute":"guest-fsfreeze-status"}"#),
        exact(r#"{"execute":"guest-fsfreeze-thaw"}"#),
        exact(r#"{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["/"]}}"#),
        exact(r#"{"execute":"guest-fsfreeze-thaw"}"#),
        exact(
            r#"{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["/nonexistent"]}}"#,
        ),
        exact(r#"{"execute":"guest-fsfreeze-status"}"#),
        exact(r#"{"execute":"guest-fsfreeze-thaw"}"#),
    ]
}

fn machine_steps() -> Vec<Step> {
    vec![
        exact(r#"{"execute":"guest-set-time","arguments":{"time":-1}}"#),
        exact(r#"{"execute":"guest-set-time","arguments":{"time":@now@}}"#),
        exact(r#"{"execute":"guest-set-time"}"#),
        exact(r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[]}}"#),
        exact(
            r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":0,"online":true}]}}"#,
        ),
        exact(
            r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":0,"online":false}]}}"#,
        ),
        exact(
            r#"{"execute":"guest-set-vcpus","arguments":{"vcpus":[{"logical-id":7,"online":true}]}}"#,
        ),
        exact(
            r#"{"execute":"guest-set-user-password","arguments":{"username":"root","password":"cGFzcw==","crypted":false}}"#,
        ),
        exact(
            r#"{"execute":"guest-set-user-password","arguments":{"username":"nouser","password":"cGFzcw==","crypted":false}}"#,
        ),
        exact(
            r#"{"execute":"guest-set-user-password","arguments":{"username":"root","password":"!!","crypted":true}}"#,
        ),
        exact(
            r#"{"execute":"guest-set-user-password","arguments":{"username":"root","password":"Cg==","crypted":true}}"#,
        ),
    ]
}

const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFidelityKeyA fid@a";
const KEY_B: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABFidelityKeyB fid@b";

fn ssh_steps() -> Vec<Step> {
    let get = |user: &str| {
        exact(&format!(
            r#"{{"execute":"guest-ssh-get-authorized-keys","arguments":{{"username":"{user}"}}}}"#
        ))
    };
    let change = |command: &str, keys: &[&str], extra: &str| {
        let keys = serde_json::to_string(keys).unwrap();
        exact(&format!(
            r#"{{"execute":"{command}","arguments":{{"username":"root","keys":{keys}{extra}}}}}"#
        ))
    };
    vec![
        get("root"),
        change("guest-ssh-add-authorized-keys", &[KEY_A], ""),
        get("root"),
        change("guest-ssh-add-authorized-keys", &[KEY_A, KEY_B], ""),
        get("root"),
        change("guest-ssh-remove-authorized-keys", &[KEY_A], ""),
        get("root"),
        change(
            "guest-ssh-add-authorized-keys",
            &[KEY_A],
            r#","reset":true"#,
        ),
        get("root"),
        change("guest-ssh-remove-authorized-keys", &[], ""),
        change("guest-ssh-add-authorized-keys", &["bad\nkey"], ""),
        change("guest-ssh-add-authorized-keys", &[], r#","reset":true"#),
        get("root"),
        get("nouser"),
        exact(
            r#"{"execute":"guest-ssh-add-authorized-keys","arguments":{"username":"nouser","keys":[]}}"#,
        ),
        exact(r#"{"execute":"guest-shutdown","arguments":{"mode":"bogus"}}"#),
    ]
}

fn all_steps() -> Vec<Step> {
    [
        file_steps(),
        exec_steps(),
        freeze_steps(),
        machine_steps(),
        ssh_steps(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The reply value of a stream of exactly one reply line.
fn reply_of(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    serde_json::from_str(text.trim_end()).ok()
}

/// Sends every step to the agent on `socket`; returns each step's reply stream.
fn run_steps(socket: &Path, steps: &[Step]) -> Vec<Result<Vec<u8>, String>> {
    let mut session = Session::connect(socket).expect("connect to the agent");
    let mut handle = String::from("0");
    let mut pid = String::from("0");
    let mut out = Vec::new();
    for step in steps {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let request = step
            .request
            .replace("@handle@", &handle)
            .replace("@pid@", &pid)
            .replace("@now@", &now.to_string());
        let deadline = Instant::now() + Duration::from_secs(20);
        let reply = loop {
            let reply = session
                .run(&[request.clone().into_bytes()])
                .map_err(|e| format!("{request}: {e}"));
            let running = step.until_exited
                && reply
                    .as_ref()
                    .ok()
                    .and_then(|r| reply_of(r))
                    .is_some_and(|v| v.pointer("/return/exited") == Some(&Value::Bool(false)));
            if !running || Instant::now() > deadline {
                break reply;
            }
            // The process is still running in the guest: ask again, as a client polls.
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(value) = reply.as_ref().ok().and_then(|r| reply_of(r)) {
            if request.contains("\"guest-file-open\"") {
                if let Some(n) = value.get("return").and_then(Value::as_i64) {
                    handle = n.to_string();
                }
            }
            if let Some(n) = value.pointer("/return/pid").and_then(Value::as_i64) {
                pid = n.to_string();
            }
        }
        out.push(reply);
    }
    out
}

/// Sends guest-shutdown on a fresh connection and returns what came back before the
/// channel closed (the VM powered off), or an error if it never closed.
fn shut_down(socket: &Path) -> Result<Vec<u8>, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(br#"{"execute":"guest-shutdown"}"#)
        .map_err(|e| format!("write: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    stream
        .read_to_end(&mut got)
        .map_err(|e| format!("the channel did not close within 30 s: {e}"))?;
    Ok(got)
}

fn differences(
    steps: &[Step],
    real: &[Result<Vec<u8>, String>],
    mock: &[Result<Vec<u8>, String>],
) -> Vec<String> {
    let mut failures = Vec::new();
    for ((step, real), mock) in steps.iter().zip(real).zip(mock) {
        match (real, mock) {
            (Ok(want), Ok(got)) => {
                let (want, got) = match step.compare {
                    Compare::Exact => (want.clone(), got.clone()),
                    Compare::Shape => (mask_digits(want), mask_digits(got)),
                };
                if want != got {
                    failures.push(format!(
                        "{}\n  real: {}\n  mock: {}",
                        step.request,
                        show(&want),
                        show(&got)
                    ));
                }
            }
            (real, mock) => failures.push(format!(
                "{}\n  real: {:?}\n  mock: {:?}",
                step.request,
                real.as_ref().map(|r| show(r)),
                mock.as_ref().map(|m| show(m))
            )),
        }
    }
    failures
}

/// The real qemu-ga in a guest, nothing blocked, against the mock with the guest's captured
/// profile: every command that changes the machine answers byte for byte alike, and
/// guest-shutdown (last) answers nothing and ends the VM on both.
#[test]
fn machine_changing_commands_answer_like_the_real_agent_in_a_guest() {
    let guest = support::boot(GuestAgentKind::Real);
    let socket = guest.agent_socket().to_owned();
    let mut captured = qga_harness::guest::capture::capture(
        &socket,
        &qga_harness::guest::capture::CaptureOptions::default(),
    )
    .expect("capture the guest's agent");
    // Disabled are only the commands a Linux qemu-ga disables itself, none of the steps'.
    let disabled = captured
        .profile
        .agent
        .block_rpcs
        .clone()
        .unwrap_or_default();
    for step in all_steps() {
        let command = step
            .request
            .split('"')
            .nth(3)
            .unwrap_or_default()
            .to_owned();
        assert!(
            !disabled.contains(&command),
            "{command} is disabled in the guest: {disabled:?}"
        );
    }
    // What the read-only capture cannot see, stated from the image (qemu-images/): its
    // busybox has no chpasswd.
    captured.profile.chpasswd = false;
    let steps = all_steps();
    // The comparison must see a difference where there is one: a mock that believes the
    // guest has chpasswd answers set-user-password otherwise.
    let mut unlike = captured.profile.clone();
    unlike.chpasswd = true;
    let mock = HostMock::start(qga_harness::MockAgent::builder().profile(captured.profile));
    let from_mock = run_steps(mock.socket(), &steps);
    let from_real = run_steps(&socket, &steps);
    let mut failures = differences(&steps, &from_real, &from_mock);
    let unlike = HostMock::start(qga_harness::MockAgent::builder().profile(unlike));
    let machine = machine_steps();
    let at = file_steps().len() + exec_steps().len() + freeze_steps().len();
    let caught = differences(
        &machine,
        &from_real[at..at + machine.len()],
        &run_steps(unlike.socket(), &machine),
    );
    assert!(
        caught.iter().any(|f| f.contains("guest-set-user-password")),
        "a mock with chpasswd was not told apart: {caught:?}"
    );

    let mock_end = shut_down(mock.socket());
    let real_end = shut_down(&socket);
    if mock_end != real_end {
        failures.push(format!(
            "guest-shutdown\n  real: {:?}\n  mock: {:?}",
            real_end.map(|r| show(&r)),
            mock_end.map(|m| show(&m))
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} steps differ:\n{}",
        failures.len(),
        steps.len() + 1,
        failures.join("\n")
    );
    // The guest really went: QEMU exited.
    let deadline = Instant::now() + Duration::from_secs(30);
    while guest.exit_status().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        guest.exit_status().is_some(),
        "QEMU still runs after guest-shutdown; console: {}",
        guest.console_log()
    );
}
