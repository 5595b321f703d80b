//! `run --partition K/N` and `report merge`, end to end: every case in exactly one slice for
//! N = 1..4 (round robin and balanced by an earlier report), the merge of the slices' JSON
//! reports equal to the unpartitioned run's verdicts, and reports that do not make one run
//! refused with exit status 2 and a message that says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The catalogue cases the runs use: small, with more than one verdict for the client.
const FILTERS: [&str; 6] = [
    "--filter",
    "version.*",
    "--filter",
    "sync.6",
    "--filter",
    "hostile.1",
];
/// The socat one-liner, which fails some of them and passes one non-strictly.
const CLIENT: [&str; 2] = [
    "--client",
    "clients/socat/oneshot.sh {socket} {request} {timeout_s}",
];

fn harness(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("qga-harness runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The ids `run --list` prints (one per line before the count).
fn listed(args: &[&str]) -> Vec<String> {
    let mut all = vec!["run", "--list"];
    all.extend_from_slice(&FILTERS);
    all.extend_from_slice(args);
    let (code, out, err) = harness(&all);
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .filter(|l| !l.ends_with("case(s)") && !l.starts_with("partition "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn verdicts(path: &Path) -> BTreeMap<String, String> {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("report")).expect("json");
    report["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_owned(),
                c["verdict"].as_str().expect("verdict").to_owned(),
            )
        })
        .collect()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn partitions_cover_every_case_once_and_merge_into_the_whole_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let whole_ids = listed(&[]);
    assert!(whole_ids.len() >= 5, "{whole_ids:?}");

    // The whole run, which also gives the durations to balance by.
    let whole = dir.path().join("whole.json");
    let mut args = vec!["run", "-j", "4", "--seed", "5", "--json", s(&whole)];
    args.extend_from_slice(&FILTERS);
    args.extend_from_slice(&CLIENT);
    let (code, out, err) = harness(&args);
    assert!(code == 0 || code == 1, "{out}{err}");

    for n in 1..=4 {
        for balanced in [false, true] {
            let mut seen = Vec::new();
            for k in 1..=n {
                let part = format!("{k}/{n}");
                let mut args = vec!["--partition", part.as_str()];
                if balanced {
                    args.extend_from_slice(&["--partition-by-report", s(&whole)]);
                }
                seen.extend(listed(&args));
            }
            let mut expected = whole_ids.clone();
            expected.sort();
            seen.sort();
            assert_eq!(seen, expected, "N = {n}, balanced {balanced}");
        }
    }

    // Three machines of a CI matrix, then the merge.
    let mut parts: Vec<PathBuf> = Vec::new();
    for k in 1..=3 {
        let path = dir.path().join(format!("part{k}.json"));
        let part = format!("{k}/3");
        let mut args = vec!["run", "-j", "4", "--seed", "5", "--partition", &part];
        args.extend_from_slice(&["--json", s(&path)]);
        args.extend_from_slice(&FILTERS);
        args.extend_from_slice(&CLIENT);
        let (code, out, err) = harness(&args);
        assert!(code == 0 || code == 1, "{out}{err}");
        assert!(out.contains(&format!("partition {k}/3: ")), "{out}");
        parts.push(path);
    }
    let merged = dir.path().join("merged.json");
    let junit = dir.path().join("merged.xml");
    let html = dir.path().join("merged.html");
    let mut args = vec!["report", "merge"];
    args.extend(parts.iter().map(|p| s(p)));
    args.extend_from_slice(&[
        "--json",
        s(&merged),
        "--junit",
        s(&junit),
        "--html",
        s(&html),
    ]);
    let (code, out, err) = harness(&args);
    let whole_verdicts = verdicts(&whole);
    let kinds: std::collections::BTreeSet<&String> = whole_verdicts.values().collect();
    assert!(kinds.len() > 1, "more than one verdict: {whole_verdicts:?}");
    let fails = whole_verdicts.values().any(|v| v == "FAIL");
    assert_eq!(code, i32::from(fails), "{out}{err}");
    assert_eq!(verdicts(&merged), whole_verdicts);
    assert!(
        out.contains(&format!("{} case(s) in", whole_ids.len())),
        "{out}"
    );
    let xml = std::fs::read_to_string(&junit).expect("junit");
    assert!(
        xml.contains(&format!("tests=\"{}\"", whole_ids.len())),
        "{xml}"
    );
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(
        page.contains("\"partitions\":3"),
        "the page says it was merged"
    );

    // The parts in another order merge the same way.
    let mut args = vec!["report", "merge"];
    args.extend(parts.iter().rev().map(|p| s(p)));
    let again = dir.path().join("again.json");
    args.extend_from_slice(&["--json", s(&again)]);
    let (_, out, err) = harness(&args);
    assert_eq!(verdicts(&again), whole_verdicts, "{out}{err}");

    bad_merges(dir.path(), &parts, &whole);
}

/// Each way a set of reports can fail to make one run: exit 2, and a message naming the
/// file and what to do.
fn bad_merges(dir: &Path, parts: &[PathBuf], whole: &Path) {
    let merge = |files: &[&str]| {
        let mut args = vec!["report", "merge"];
        args.extend_from_slice(files);
        harness(&args)
    };
    let expect_error = |files: &[&str], needles: &[&str]| {
        let (code, out, err) = merge(files);
        assert_eq!(code, 2, "{files:?}: {out}{err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{files:?}: missing {needle:?} in {err}"
            );
        }
    };
    let (p1, p2, p3) = (s(&parts[0]), s(&parts[1]), s(&parts[2]));
    expect_error(
        &[p1, p2, p1, p3],
        &["both hold partition 1/3", "overlapping partitions"],
    );
    expect_error(&[p1, p2], &["partition(s) 3 of 3 missing"]);
    expect_error(&[s(whole), p1], &["not the report of a partitioned run"]);

    // A slice of another run (another seed).
    let other = dir.join("other.json");
    let text = std::fs::read_to_string(p3).expect("part 3");
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
    value["seed"] = serde_json::json!(6);
    std::fs::write(&other, value.to_string()).expect("write");
    expect_error(
        &[p1, p2, s(&other)],
        &["reports of different runs", "the seed"],
    );

    // A case in two slices.
    let overlap = dir.join("overlap.json");
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
    let first_of_part1: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p1).expect("part 1"))
            .expect("json")["cases"][0]
            .clone();
    value["cases"]
        .as_array_mut()
        .expect("cases")
        .push(first_of_part1);
    std::fs::write(&overlap, value.to_string()).expect("write");
    expect_error(
        &[p1, p2, s(&overlap)],
        &["is in both", "overlapping partitions"],
    );

    // Broken JSON: the file, line and column.
    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{\n  \"format\": 2,\n  \"cases\": [,]\n}\n").expect("write");
    expect_error(
        &[s(&broken)],
        &["broken.json:3:13:", "not a qga-harness JSON report"],
    );
    // Valid JSON of the wrong shape: the path of the member.
    let shape = dir.join("shape.json");
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
    value["cases"][0]["verdict"] = serde_json::json!("MAYBE");
    std::fs::write(&shape, serde_json::to_string_pretty(&value).expect("json")).expect("write");
    expect_error(&[s(&shape)], &["shape.json:", "cases[0].verdict"]);
    // A report of another format version.
    let old = dir.join("old.json");
    std::fs::write(&old, "{\"tool\": \"qga-harness\", \"cases\": []}").expect("write");
    expect_error(&[s(&old)], &["report format 1"]);
    // A missing file.
    expect_error(
        &[s(&dir.join("absent.json"))],
        &["absent.json: cannot read the report"],
    );
    // A bad --partition is a usage error.
    let (code, _, err) = harness(&["run", "--partition", "4/3", "--list"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected K/N"), "{err}");
}
