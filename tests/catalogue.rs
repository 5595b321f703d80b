//! The catalogue as a whole: the reference client passes every case strictly and the same
//! way every time, the committed catalogue page is current, the real third-party clients
//! still meet their baselines, and the catalogue tells a naive client apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn harness() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qga-harness"));
    command.current_dir(root());
    command
}

/// Runs the catalogue and returns each case's verdict from the JSON report.
fn verdicts(client_args: &[&str], extra: &[&str]) -> (BTreeMap<String, String>, i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("report.json");
    let output = harness()
        .args(["run", "scenarios", "--jobs", "2", "--seed", "1", "--json"])
        .arg(&report)
        .args(client_args)
        .args(extra)
        .output()
        .expect("run qga-harness");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&report).unwrap_or_else(|e| panic!("no report ({e}):\n{text}")),
    )
    .expect("JSON report");
    let cases = json["cases"].as_array().expect("cases").clone();
    let verdicts = cases
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_owned(),
                c["verdict"].as_str().expect("verdict").to_owned(),
            )
        })
        .collect();
    (verdicts, output.status.code().unwrap_or(-1), text)
}

#[test]
fn the_reference_client_passes_every_case_strictly_and_repeatably() {
    let (first, code, text) = verdicts(&[], &[]);
    assert!(first.len() >= 80, "only {} cases", first.len());
    let not_passed: Vec<_> = first.iter().filter(|(_, v)| *v != "PASS").collect();
    assert!(not_passed.is_empty(), "{not_passed:?}\n{text}");
    assert_eq!(code, 0, "{text}");
    // The same verdicts every time: the catalogue is not flaky against a correct client.
    let runs: usize = std::env::var("QGA_HARNESS_CATALOGUE_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    for run in 2..=runs {
        let (again, _, text) = verdicts(&[], &[]);
        assert_eq!(again, first, "run {run} differs:\n{text}");
    }
}

#[test]
fn the_catalogue_page_is_current() {
    let output = harness()
        .args(["run", "scenarios", "--list", "--format", "markdown"])
        .output()
        .expect("run qga-harness");
    assert!(output.status.success());
    let committed =
        std::fs::read_to_string(root().join("scenarios/README.md")).expect("scenarios/README.md");
    assert!(
        committed == String::from_utf8_lossy(&output.stdout),
        "scenarios/README.md is stale: regenerate it with `qga-harness run --list --format markdown > scenarios/README.md`"
    );
}

fn qapi_session() -> PathBuf {
    let manifest = root().join("clients/qapi-rs/Cargo.toml");
    let target = root().join("clients/qapi-rs/target");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo build the qapi adapter");
    assert!(status.success(), "the qapi adapter did not build");
    target.join("release/qapi-session")
}

/// Runs the catalogue against a third-party client and holds it to its baseline: exact
/// verdicts, except where the baseline marks a case timing-sensitive for that client
/// (with the verdicts seen and why), and a better verdict is reported, not failed.
fn holds_its_baseline(name: &str, client_args: &[&str]) -> BTreeMap<String, String> {
    let baseline = format!("scenarios/baselines/{name}.json");
    let (verdicts, code, text) = verdicts(client_args, &["--baseline", &baseline]);
    assert_eq!(code, 0, "{name} is worse than {baseline}:\n{text}");
    verdicts
}

fn python_has_qemu_qmp() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import qemu.qmp"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("python3 cannot import qemu.qmp; .ci/run installs it");
    }
    ok
}

#[test]
fn qemu_qmp_meets_its_baseline_and_fails_where_its_source_says() {
    if !python_has_qemu_qmp() {
        eprintln!("skipped: python3 cannot import qemu.qmp (pip install qemu.qmp==0.0.6)");
        return;
    }
    let verdicts = holds_its_baseline(
        "qemu-qmp",
        &[
            "--client-session",
            "python3 clients/qemu-qmp/session.py {socket}",
        ],
    );
    // qemu.qmp routes replies only by the id it assigned and drops id-less ones
    // (qmp_client.py L414-445): against an agent older than 4.0 every call times out.
    assert_eq!(verdicts["version.2"], "FAIL");
}

#[test]
fn qapi_meets_its_baseline_and_fails_where_its_source_says() {
    let adapter = qapi_session();
    let client = format!("{} {{socket}}", adapter.display());
    let verdicts = holds_its_baseline("qapi-rs", &["--client-session", &client]);
    // Any unsolicited reply ends the crate's stream for good (futures/mod.rs L350-360).
    assert_eq!(verdicts["hostile.2"], "FAIL");
}

#[test]
fn the_naive_socat_client_fails_most_sync_timeout_and_hostile_cases() {
    let verdicts = holds_its_baseline(
        "socat",
        &[
            "--client",
            "clients/socat/oneshot.sh {socket} {request} {timeout_s}",
        ],
    );
    let judged: Vec<_> = verdicts
        .iter()
        .filter(|(id, _)| {
            ["sync.", "timeout.", "hostile."]
                .iter()
                .any(|p| id.starts_with(p))
        })
        .collect();
    let failed = judged.iter().filter(|(_, v)| *v == "FAIL").count();
    // Most, not all: some sync cases put their hazard behind the client's own sync
    // reply (a 0xFF behind it, a stale sync reply before it), which a client that never
    // syncs does not meet; it is NON-STRICT there for the sync it skips.
    assert!(
        failed * 2 > judged.len(),
        "the naive client fails only {failed} of {} sync, timeout and hostile cases",
        judged.len()
    );
}

fn catalogue_ids() -> Vec<(String, bool)> {
    let files = qga_harness::runner::scenario_files(&[root().join("scenarios")]).expect("files");
    qga_harness::runner::load_cases(&files)
        .expect("the catalogue loads")
        .iter()
        .map(|c| (c.scenario.id.clone(), c.scenario.info.is_some()))
        .collect()
}

#[test]
fn the_readme_compatibility_matrix_is_generated_from_the_baselines() {
    use qga_harness::internals::{readme_clients, splice_readme};
    use qga_harness::report::CompatibilityMatrix;
    let ids: Vec<String> = catalogue_ids().into_iter().map(|(id, _)| id).collect();
    let table = CompatibilityMatrix::from_baselines(
        &ids,
        &root().join("scenarios/baselines"),
        &readme_clients(),
    )
    .expect("the baselines load")
    .markdown();
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let expected = splice_readme(&readme, &table).expect("the README has the matrix markers");
    assert!(
        readme == expected,
        "the README's compatibility matrix is stale; it should read:\n{table}"
    );
}

#[test]
fn retired_ids_are_recorded_alike_in_every_baseline_and_never_reused() {
    let ids: Vec<String> = catalogue_ids().into_iter().map(|(id, _)| id).collect();
    let mut retired_sets = Vec::new();
    for entry in std::fs::read_dir(root().join("scenarios/baselines")).expect("baselines") {
        let path = entry.expect("entry").path();
        let baseline = qga_harness::report::Baseline::load(&path).expect("loads");
        for id in baseline.retired.keys() {
            assert!(
                !ids.contains(id),
                "{} retires {id}, which a case uses",
                path.display()
            );
        }
        for id in baseline.verdicts.keys() {
            assert!(
                !baseline.retired.contains_key(id),
                "{} has a verdict for the retired {id}",
                path.display()
            );
        }
        retired_sets.push((path, baseline.retired));
    }
    for pair in retired_sets.windows(2) {
        assert_eq!(
            pair[0].1.keys().collect::<Vec<_>>(),
            pair[1].1.keys().collect::<Vec<_>>(),
            "{} and {} retire different ids",
            pair[0].0.display(),
            pair[1].0.display()
        );
    }
}
