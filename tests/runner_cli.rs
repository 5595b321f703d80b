//! `qga-harness run` end to end on the mock agent: exit statuses (0 all good, 1 a FAIL or a
//! regression, 2 when the client cannot run at all), the report files, artifacts and
//! baselines, and `--list`.

mod common;

use std::path::Path;
use std::process::Command;

use common::runner::Workspace;

const CASES: &[(&str, &str)] = &[
    (
        "ok/ping.json",
        r#"{"id": "ok.1", "title": "ping", "requirement": "A ping returns {}.",
            "grounding": ["qga/commands.c qmp_guest_ping"],
            "steps": [{"execute": "guest-ping", "timeout_ms": 3000, "expect": [{"return": {}}]}]}"#,
    ),
    (
        "ok/blocked.json",
        r#"{"id": "ok.2", "title": "blocked", "requirement": "A blocked command is an agent error.",
            "agent": {"block_rpcs": ["guest-get-time"]},
            "steps": [{"execute": "guest-get-time", "timeout_ms": 3000,
                       "expect": [{"error": {"class": "CommandNotFound", "desc_contains": "disabled"}}]}]}"#,
    ),
    (
        "hostile/silent.json",
        r#"{"id": "hostile.1", "title": "agent never starts", "requirement": "The call times out in time.",
            "agent": {"state": {"started": false}},
            "steps": [{"execute": "guest-ping", "timeout_ms": 300,
                       "expect": [{"client-error": {"class": "Timeout", "max_ms": 800}}]}],
            "duties": ["sync-first", "total-deadline"]}"#,
    ),
];

fn workspace() -> Workspace {
    let ws = Workspace::new();
    for (name, text) in CASES {
        ws.write(&format!("scenarios/{name}"), text);
    }
    ws.write("careful.py", common::runner::CAREFUL_SESSION_PY);
    ws
}

fn harness(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .arg("run")
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
fn a_careful_client_passes_with_exit_status_0_and_every_report() {
    let ws = workspace();
    let (code, stdout, stderr) = harness(
        ws.path(),
        &[
            "--client-session",
            "python3 careful.py {socket}",
            "--seed",
            "42",
            "--jobs",
            "2",
            "--json",
            "report.json",
            "--junit",
            "junit.xml",
            "--artifacts",
            "artifacts",
            "--write-baseline",
            "baseline.json",
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("seed 42"), "{stdout}");
    assert!(stdout.contains("3 case(s) in"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path().join("report.json")).expect("json"))
            .expect("valid JSON");
    assert_eq!(report["summary"]["PASS"], 3, "{report}");
    assert_eq!(report["seed"], 42);
    let junit = std::fs::read_to_string(ws.path().join("junit.xml")).expect("junit");
    assert!(
        junit.contains("<testsuites name=\"qga-harness\" tests=\"3\" failures=\"0\""),
        "{junit}"
    );
    for id in ["ok.1", "ok.2", "hostile.1"] {
        assert!(ws.path().join(format!("artifacts/{id}.jsonl")).is_file());
    }
    let baseline = std::fs::read_to_string(ws.path().join("baseline.json")).expect("baseline");
    assert!(baseline.contains("\"hostile.1\": \"PASS\""), "{baseline}");
}

#[test]
fn a_naive_client_fails_with_exit_status_1_unless_the_baseline_expects_it() {
    let ws = workspace();
    let naive = common::runner::NAIVE_ONESHOT;
    let (code, stdout, _) = harness(
        ws.path(),
        &["--client", naive, "--write-baseline", "naive.json"],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL        hostile.1"), "{stdout}");
    // The rerun line, read back as sh reads it, gives the same client.
    let rerun = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("rerun: "))
        .unwrap_or_else(|| panic!("no rerun line: {stdout}"));
    let words = shlex::split(rerun).expect("the rerun line is sh words");
    let client = words
        .iter()
        .position(|w| w == "--client")
        .map(|i| &words[i + 1]);
    assert_eq!(client.map(String::as_str), Some(naive), "{rerun}");
    // Against its own baseline the same client is not a regression...
    let (code, stdout, _) = harness(ws.path(), &["--client", naive, "--baseline", "naive.json"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("0 regression(s)"), "{stdout}");
    // ...but a baseline that expects it to pass is.
    ws.write("strict.json", r#"{"verdicts": {"hostile.1": "PASS"}}"#);
    let (code, stdout, _) = harness(ws.path(), &["--client", naive, "--baseline", "strict.json"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("regression: hostile.1 was PASS"),
        "{stdout}"
    );
}

#[test]
fn a_client_that_cannot_run_at_all_is_exit_status_2() {
    let ws = workspace();
    let (code, stdout, stderr) = harness(
        ws.path(),
        &["--client-session", "exec /no/such/client {socket}"],
    );
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("the client could not be run"), "{stderr}");
    assert!(stderr.contains("not found (exit 127)"), "{stderr}");
}

#[test]
fn a_filtered_run_and_the_catalogue_listing() {
    let ws = workspace();
    let (code, stdout, _) = harness(
        ws.path(),
        &[
            "--filter",
            "ok.*",
            "--client-session",
            "python3 careful.py {socket}",
        ],
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("2 case(s) in"), "{stdout}");
    let (code, stdout, _) = harness(ws.path(), &["--list", "--format", "markdown"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("## hostile"), "{stdout}");
    assert!(
        stdout.contains("| ok.1 | ping | A ping returns {}. | qga/commands.c qmp_guest_ping |"),
        "{stdout}"
    );
}
