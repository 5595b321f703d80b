//! Real libvirt as the client under test, in CI: libvirtd and virtlogd started by hand (or
//! the running ones), one transient TCG domain, each step a `virsh qemu-agent-command
//! --timeout`, over the sync, timeout and hostile categories; its verdicts must be no worse
//! than `scenarios/baselines/libvirt.json`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use qga_harness::runner::Verdict;
use serde_json::Value;

const BASELINE: &str = "scenarios/baselines/libvirt.json";
const CATEGORIES: [&str; 3] = ["sync.*", "timeout.*", "hostile.*"];

/// Runs the cases matching `filters` with libvirt as the client; returns the exit code,
/// stderr and each case's verdict.
fn run_libvirt(filters: &[String], tmp: &Path) -> (Option<i32>, String, BTreeMap<String, Verdict>) {
    let report = tmp.join("libvirt.json");
    let mut command = Command::new(env!("CARGO_BIN_EXE_qga-harness"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // Its own image cache and run directory go under the system's temp dir, which
        // libvirt's QEMU user can reach (a test's private temp dir it cannot).
        .args(["run", "--libvirt", "--seed", "11", "--json"])
        .arg(&report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for filter in filters {
        command.args(["--filter", filter]);
    }
    let output = command.output().expect("the harness runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let verdicts = std::fs::read_to_string(&report)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|report| report["cases"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|case| {
            let id = case["id"].as_str()?.to_owned();
            let verdict = Verdict::parse(case["verdict"].as_str()?)?;
            Some((id, verdict))
        })
        .collect();
    (output.status.code(), stderr, verdicts)
}

/// The cases whose verdict is worse than the baseline's (a verdict the baseline lists for
/// a timing-sensitive case counts as its own).
fn worse_than_baseline(verdicts: &BTreeMap<String, Verdict>) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let baseline =
        qga_harness::report::Baseline::load(&root.join(BASELINE)).expect("the baseline loads");
    verdicts
        .iter()
        .filter(|(id, verdict)| {
            let known = baseline.verdicts.get(*id).copied();
            let sensitive = baseline
                .timing_sensitive
                .get(*id)
                .is_some_and(|entry| entry.seen.contains(verdict));
            !sensitive && known.is_none_or(|known| verdict.rank() > known.rank())
        })
        .map(|(id, _)| id.clone())
        .collect()
}

#[test]
fn libvirt_holds_its_baseline_on_the_sync_timeout_and_hostile_cases() {
    let tmp = tempfile::tempdir().unwrap();
    let filters: Vec<String> = CATEGORIES.iter().map(|c| c.to_string()).collect();
    let (code, stderr, verdicts) = run_libvirt(&filters, tmp.path());
    if code == Some(2) && stderr.contains("libvirtd did not start") {
        eprintln!("SKIPPED: libvirtd cannot start on this machine:\n{stderr}");
        return;
    }
    assert!(
        matches!(code, Some(0 | 1)),
        "the libvirt run ended with {code:?}:\n{stderr}"
    );
    assert!(
        verdicts.len() >= 60,
        "only {} cases ran:\n{stderr}",
        verdicts.len()
    );
    let worse = worse_than_baseline(&verdicts);
    if worse.is_empty() {
        return;
    }
    // A case that races with the guest under load gets one more run on its own.
    let (_, again_stderr, again) = run_libvirt(&worse, tmp.path());
    let still = worse_than_baseline(&again);
    assert!(
        still.is_empty() && again.len() == worse.len(),
        "worse than {BASELINE} twice in a row: {still:?}\n{again_stderr}"
    );
}
