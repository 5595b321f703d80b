//! The mock inside a real guest (`qgah.agent=mock`): a case's agent side loaded over the
//! control port, its scripted faults reaching the reference client through real QEMU's
//! chardev and virtio-serial, and the catalogue's verdicts equal to those on the simulated
//! channel.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use qga_harness::client::{BlockingClient, Client};
use qga_harness::internals::qemu::{GuestAgentKind, LoadCase};

use crate::support;

fn load_command(agent: serde_json::Value) -> String {
    let case = LoadCase {
        seed: 7,
        agent: serde_json::from_value(agent).expect("an agent side"),
    };
    let json = serde_json::to_vec(&case).expect("encodes");
    format!(
        "load {}",
        base64::engine::general_purpose::STANDARD.encode(json)
    )
}

/// A stale reply left in the channel is skipped by the client's sync; a death in the middle
/// of a reply gives a typed error within the deadline; after the agent's restart the client
/// is in sync again. The guest's transcript holds the ground truth of both.
#[test]
fn scripted_faults_of_the_mock_inside_reach_the_reference_client() {
    let mut guest = support::boot(GuestAgentKind::Mock);
    let socket = guest.agent_socket().to_owned();
    guest
        .control()
        .command(&load_command(serde_json::json!({
            "state": {"pending_output": "{\"return\": {\"host-name\": \"stale\"}}\n"},
            "faults": ["guest-get-host-name@2:die-mid-reply=10,restart=300ms"]
        })))
        .expect("the case loads");
    let timeout = Duration::from_secs(3);
    let mut client = BlockingClient::new(Client::builder(&socket).timeout(timeout)).unwrap();

    let first = client
        .execute("guest-get-host-name", None)
        .expect("the first call is answered");
    assert_eq!(
        first["host-name"], "vm",
        "the stale reply was taken: {first}"
    );

    let started = Instant::now();
    let cut = client.execute("guest-get-host-name", None);
    let elapsed = started.elapsed();
    assert!(
        cut.is_err(),
        "a reply cut off by the agent's death: {cut:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "the call took {elapsed:?}, over its {timeout:?} deadline"
    );
    let again = client
        .execute("guest-get-host-name", None)
        .expect("the client recovers after the restart");
    assert_eq!(again["host-name"], "vm");
    drop(client);

    let end = guest.control().finish_case().expect("the transcript");
    assert!(!end.vm_exit);
    let text = end.transcript.join("\n");
    assert!(text.contains("\"origin\":\"preloaded\""), "{text}");
    assert!(
        end.transcript
            .iter()
            .any(|l| l.contains("\"event\":\"fault\"") && l.contains("die-mid-reply")),
        "{text}"
    );
    assert!(
        text.contains("\"agent-killed\"") || text.contains("\"agent-restarting\""),
        "{text}"
    );
}

/// Verdict of each case in a JSON report.
fn verdicts(report: &Path) -> Vec<(String, String)> {
    let value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).expect("the report")).expect("JSON");
    let mut out: Vec<(String, String)> = value["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| {
            (
                case["id"].as_str().unwrap_or_default().to_owned(),
                case["verdict"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn run(tmp: &Path, name: &str, filters: &[&str], extra: &[&str]) -> Vec<(String, String)> {
    let report = tmp.join(format!("{name}.json"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_qga-harness"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--seed", "11", "--json"])
        .arg(&report)
        .args(filters.iter().flat_map(|f| ["--filter", f]))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = command.output().expect("runs");
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    verdicts(&report)
}

/// The sync, timeout and lifecycle cases against the mock inside a real guest: every case
/// the guest can reproduce gets the verdict it gets on the simulated channel. A case whose
/// verdicts differ is run again on both targets (a loaded machine can push a timing case
/// over its bound on either); it must agree then.
#[test]
fn parity_with_the_simulated_channel_for_sync_timeout_and_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let binary = support::static_binary().display().to_string();
    let image_dir = support::image_dir(GuestAgentKind::Mock)
        .display()
        .to_string();
    let qemu_args = [
        "--target",
        "qemu",
        "--guest-agent",
        "mock",
        "--mock-binary",
        &binary,
        "--image-dir",
        &image_dir,
    ];
    let filters = ["sync.*", "timeout.*", "lifecycle.*"];
    let simulated = run(tmp.path(), "mock", &filters, &["--target", "mock"]);
    let real = run(tmp.path(), "qemu", &filters, &qemu_args);
    assert_eq!(simulated.len(), real.len());
    assert!(real.len() >= 40, "{} cases", real.len());
    let mut again = Vec::new();
    let mut unsupported = Vec::new();
    for ((id, want), (id2, got)) in simulated.iter().zip(&real) {
        assert_eq!(id, id2);
        if got == "UNSUPPORTED" {
            unsupported.push(id.clone());
        } else if want != got {
            again.push(id.clone());
        }
    }
    // Only the unix-listen cases (qemu-ga's own socket, which no host reaches in a guest).
    assert_eq!(unsupported, ["lifecycle.6", "lifecycle.8"]);
    let mut differ = Vec::new();
    for id in &again {
        let want = run(tmp.path(), "mock-again", &[id], &["--target", "mock"]);
        let got = run(tmp.path(), "qemu-again", &[id], &qemu_args);
        if want != got {
            differ.push(format!("{id}: {want:?} on the mock, {got:?} through QEMU"));
        }
    }
    assert!(differ.is_empty(), "{differ:#?}");
}
