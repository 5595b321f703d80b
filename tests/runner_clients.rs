//! The runner judges real client programs: a naive socat one-liner (oneshot), a naive
//! Python session client (no sync, no timeout) and a careful Python session client, each on
//! a handful of benign and hostile cases. The naive ones must FAIL the hostile cases and
//! PASS the benign ones; the careful one must pass everything.

#[path = "runner_support/standin.rs"]
mod standin;
#[path = "runner_support/mod.rs"]
mod support;

use std::sync::Arc;

use support::{explain, load, oneshot, run, session, verdicts, Workspace};

/// Benign cases (`ok.*`) and hostile ones (`hostile.*`). Timeouts that the verdict does not
/// hinge on are generous, so a loaded machine cannot turn a pass into a failure.
const CASES: &[(&str, &str)] = &[
    (
        "ok-1.json",
        r#"{"id": "ok.1", "title": "ping", "requirement": "A ping returns {}.",
            "steps": [{"execute": "guest-ping", "timeout_ms": 3000, "expect": [{"return": {}}]}],
            "duties": ["total-deadline"]}"#,
    ),
    (
        "ok-2.json",
        r#"{"id": "ok.2", "title": "host name", "requirement": "The host name comes back whole.",
            "steps": [{"execute": "guest-get-host-name", "timeout_ms": 3000,
                       "expect": [{"return-contains": {"host-name": "vm"}}]}]}"#,
    ),
    (
        "ok-3.json",
        r#"{"id": "ok.3", "title": "blocked command", "requirement": "A blocked command is an agent error.",
            "agent": {"block_rpcs": ["guest-get-time"]},
            "steps": [{"execute": "guest-get-time", "timeout_ms": 3000,
                       "expect": [{"error": {"class": "CommandNotFound", "desc_contains": "disabled"}}]}]}"#,
    ),
    (
        "hostile-1.json",
        r#"{"id": "hostile.1", "title": "agent never starts", "requirement": "The call times out within its deadline.",
            "agent": {"state": {"started": false}},
            "steps": [{"execute": "guest-ping", "timeout_ms": 300,
                       "expect": [{"client-error": {"class": "Timeout", "max_ms": 800}}]}],
            "duties": ["total-deadline"]}"#,
    ),
    (
        "hostile-2.json",
        r#"{"id": "hostile.2", "title": "stale output at connect", "requirement": "Stale output is discarded by a sync.",
            "agent": {"state": {"pending_output": "{\"return\": {\"host-name\": \"stale\"}}\n"}},
            "steps": [{"execute": "guest-get-host-name", "timeout_ms": 3000,
                       "expect": [{"return-contains": {"host-name": "vm"}}]}],
            "duties": ["sync-first", "no-stale-attribution"]}"#,
    ),
    (
        "hostile-3.json",
        r#"{"id": "hostile.3", "title": "hang after sync", "requirement": "A hung command times out.",
            "agent": {"faults": ["guest-get-osinfo:hang"]},
            "steps": [{"execute": "guest-get-osinfo", "timeout_ms": 300,
                       "expect": [{"client-error": {"class": "Timeout", "max_ms": 800}}]}],
            "duties": ["total-deadline"]}"#,
    ),
    (
        "hostile-4.json",
        r#"{"id": "hostile.4", "title": "late reply during the next call", "single_connection": true,
            "requirement": "The late reply to an abandoned call is not taken for the next one.",
            "agent": {"faults": ["guest-get-time#1:delay=500ms"]},
            "steps": [
              {"execute": "guest-get-time", "timeout_ms": 200,
               "expect": [{"client-error": {"class": "Timeout", "max_ms": 600}}]},
              {"execute": "guest-get-host-name", "timeout_ms": 1500,
               "expect": [{"return-contains": {"host-name": "vm"}}]}],
            "duties": ["sync-after-timeout", "no-stale-attribution"]}"#,
    ),
];

fn workspace() -> Workspace {
    let ws = Workspace::new();
    for (name, text) in CASES {
        ws.write(&format!("cases/{name}"), text);
    }
    ws
}

fn expect(results: &[qga_harness::runner::CaseResult], expected: &[(&str, &str)]) {
    let got = verdicts(results);
    let wanted: Vec<(String, String)> = expected
        .iter()
        .map(|(id, v)| ((*id).to_owned(), (*v).to_owned()))
        .collect();
    let details: Vec<String> = results.iter().map(explain).collect();
    assert_eq!(got, wanted, "\n{}", details.join("\n"));
}

#[test]
fn a_naive_socat_oneshot_client_fails_the_hostile_cases() {
    let ws = workspace();
    let results = run(
        load(&ws.path().join("cases")),
        oneshot(support::NAIVE_ONESHOT),
        Arc::new(standin::Agents),
    );
    expect(
        &results,
        &[
            ("hostile.1", "FAIL"),
            ("hostile.2", "FAIL"),
            ("hostile.3", "FAIL"),
            ("hostile.4", "UNSUPPORTED"),
            ("ok.1", "PASS"),
            ("ok.2", "PASS"),
            ("ok.3", "PASS"),
        ],
    );
}

#[test]
fn a_naive_python_session_client_fails_the_hostile_cases() {
    let ws = workspace();
    let client = session(&ws.python_session("naive.py", support::NAIVE_SESSION_PY));
    let results = run(
        load(&ws.path().join("cases")),
        client,
        Arc::new(standin::Agents),
    );
    expect(
        &results,
        &[
            ("hostile.1", "FAIL"),
            ("hostile.2", "FAIL"),
            ("hostile.3", "FAIL"),
            ("hostile.4", "FAIL"),
            ("ok.1", "PASS"),
            ("ok.2", "PASS"),
            ("ok.3", "PASS"),
        ],
    );
    // The stale case fails on the duty as well as on the value.
    let stale = &results[1];
    let findings = &stale.judgement.as_ref().expect("judged").findings;
    assert!(
        findings
            .iter()
            .any(|f| f.subject == "duty no-stale-attribution"),
        "{}",
        explain(stale)
    );
    assert!(findings.iter().any(|f| f.subject == "duty sync-first"));
}

#[test]
fn a_careful_python_session_client_passes_everything() {
    let ws = workspace();
    let client = session(&ws.python_session("careful.py", support::CAREFUL_SESSION_PY));
    let results = run(
        load(&ws.path().join("cases")),
        client,
        Arc::new(standin::Agents),
    );
    expect(
        &results,
        &[
            ("hostile.1", "PASS"),
            ("hostile.2", "PASS"),
            ("hostile.3", "PASS"),
            ("hostile.4", "PASS"),
            ("ok.1", "PASS"),
            ("ok.2", "PASS"),
            ("ok.3", "PASS"),
        ],
    );
}
