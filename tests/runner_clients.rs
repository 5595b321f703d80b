//! The runner judges real client programs: a naive socat one-liner (oneshot), a naive
//! Python session client (no sync, no timeout) and a careful Python session client, each on
//! a handful of benign and hostile cases. The naive ones must FAIL the hostile cases and
//! PASS the benign ones; the careful one must pass everything.

mod common;

use common::runner::{explain, load, oneshot, run, session, verdicts, Workspace};

fn workspace() -> Workspace {
    let ws = Workspace::new();
    for (name, text) in common::runner::CASES {
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
        oneshot(common::runner::NAIVE_ONESHOT),
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
    let client = session(&ws.python_session("naive.py", common::runner::NAIVE_SESSION_PY));
    let results = run(load(&ws.path().join("cases")), client);
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
    let client = session(&ws.python_session("careful.py", common::runner::CAREFUL_SESSION_PY));
    let results = run(load(&ws.path().join("cases")), client);
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
