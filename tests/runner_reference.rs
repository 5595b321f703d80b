//! The reference client, driven as any other program through `qga-harness session`, passes
//! every case the naive clients fail; and `qga-harness run` with no client flag uses it.

mod common;

use std::process::Command;

use common::runner::{explain, load, run, session, Workspace};
use qga_harness::internals::shell_quote;
use qga_harness::runner::Verdict;

fn reference_session() -> String {
    format!(
        "exec {} session --socket {{socket}}",
        shell_quote(env!("CARGO_BIN_EXE_qga-harness"))
    )
}

#[test]
fn the_reference_client_passes_every_case() {
    let ws = Workspace::new();
    for (name, text) in common::runner::CASES {
        ws.write(&format!("cases/{name}"), text);
    }
    let results = run(
        load(&ws.path().join("cases")),
        session(&reference_session()),
    );
    for result in &results {
        assert_eq!(result.verdict, Verdict::Pass, "{}", explain(result));
    }
    assert_eq!(results.len(), common::runner::CASES.len());
}

#[test]
fn run_without_a_client_flag_uses_the_reference_client() {
    let ws = Workspace::new();
    // The cases the mock runs by itself (no fault rules).
    for (name, text) in common::runner::CASES {
        if !text.contains("\"faults\"") && !text.contains("pending_output") {
            ws.write(&format!("scenarios/{name}"), text);
        }
    }
    let output = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .args(["run", "--seed", "3"])
        .current_dir(ws.path())
        .output()
        .expect("qga-harness runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("the reference client"), "{stdout}");
    assert!(stdout.contains("4 case(s) in"), "{stdout}");
    assert!(stdout.contains(": 4 PASS"), "{stdout}");
}
