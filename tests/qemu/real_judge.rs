//! Judging a client against the real qemu-ga in a guest, which keeps no records: what the
//! ids on the wire show is judged (a reply carrying another request's id taken as an
//! answer fails), and nothing else is inferred (a correct client is not failed for what
//! the bytes cannot show).

use std::path::Path;
use std::process::{Command, Stdio};

use qga_harness::internals::qemu::GuestAgentKind;
use serde_json::Value;

use crate::support;

/// A session client that is off by one: it sends a ping of its own first, then for each
/// step writes the step's request (with a fresh id) and reports the first line not yet
/// read, which is the reply to the request before it.
const OFF_BY_ONE_CLIENT: &str = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rb")
s.sendall(b'{"execute": "guest-ping", "id": 4100000001}')
n = 4200000000
for line in sys.stdin:
    step = json.loads(line)
    n += 7919
    request = {"execute": step["execute"], "id": n}
    if step.get("arguments"):
        request["arguments"] = step["arguments"]
    s.sendall(json.dumps(request).encode())
    reply = json.loads(f.readline())
    reply.pop("id", None)
    reply["id"] = step["id"]
    print(json.dumps(reply), flush=True)
"#;

/// Runs `commands.6` (a ping, then guest-info) through a real guest with the real agent;
/// returns the case's JSON report.
fn run_case(client: &[&str], tmp: &Path) -> Value {
    let image_dir = support::image_dir(GuestAgentKind::Real);
    let report = tmp.join("report.json");
    let status = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TMPDIR", tmp)
        .args([
            "run",
            "--target",
            "qemu",
            "--guest-agent",
            "real",
            "--seed",
            "11",
        ])
        .arg("--image-dir")
        .arg(&image_dir)
        .args(["--filter", "commands.6", "--json"])
        .arg(&report)
        .args(client)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("the harness runs");
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "the run ended with {status}"
    );
    let text = std::fs::read_to_string(&report).expect("the JSON report");
    let report: Value = serde_json::from_str(&text).expect("JSON");
    report["cases"][0].clone()
}

fn duty_status<'a>(case: &'a Value, name: &str) -> &'a str {
    case["duties"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["duty"] == name))
        .and_then(|d| d["status"].as_str())
        .unwrap_or("absent")
}

#[test]
fn the_reference_client_is_not_failed_on_what_the_real_agent_does_not_record() {
    let tmp = tempfile::tempdir().unwrap();
    let case = run_case(&[], tmp.path());
    assert_eq!(case["verdict"], "PASS", "{case:#}");
    let status = duty_status(&case, "no-stale-attribution");
    assert!(
        matches!(status, "met" | "not-measured"),
        "no-stale-attribution {status}: {case:#}"
    );
}

#[test]
fn a_client_that_takes_another_requests_reply_fails_on_the_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("off_by_one.py");
    std::fs::write(&script, OFF_BY_ONE_CLIENT).unwrap();
    let command = format!("python3 {} {{socket}}", script.display());
    let case = run_case(&["--client-session", &command], tmp.path());
    assert_eq!(case["verdict"], "FAIL", "{case:#}");
    assert_eq!(
        duty_status(&case, "no-stale-attribution"),
        "missed",
        "{case:#}"
    );
    let findings = case["findings"].as_array().unwrap();
    let stale = findings
        .iter()
        .find(|f| f["subject"] == "duty no-stale-attribution")
        .expect("a stale-attribution finding");
    assert!(
        stale["actual"]
            .as_str()
            .unwrap()
            .contains("reply to request"),
        "{stale:#}"
    );
}
