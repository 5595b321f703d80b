//! The reports of a real run: the human report with every failure's evidence and a rerun
//! command, valid JUnit XML, the JSON report with every verdict string, one transcript per
//! case under --artifacts, and baselines that only fail on regressions.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::runner::{load, session, Workspace};
use qga_harness::report::{self, Baseline, HumanReport, Report, RunInfo};
use qga_harness::runner::{self, CaseResult, RunOptions, Verdict};

const CASES: &[(&str, &str)] = &[
    (
        "pass.json",
        r#"{"id": "rep.1", "title": "ping", "requirement": "A ping returns {}.",
            "steps": [{"execute": "guest-ping", "timeout_ms": 500, "expect": [{"return": {}}]}],
            "duties": ["sync-first", "unpredictable-sync-ids", "flush-before-sync", "bounded-memory"]}"#,
    ),
    (
        "fail.json",
        r#"{"id": "rep.2", "title": "a <wrong> & \"quoted\" expectation",
            "requirement": "The host name is 'other' <on purpose>.",
            "steps": [{"execute": "guest-get-host-name", "timeout_ms": 500,
                       "expect": [{"return": {"host-name": "other"}}, {"error": {"class": "GenericError"}}]}]}"#,
    ),
    (
        "nonstrict.json",
        r#"{"id": "rep.3", "title": "tolerated", "requirement": "Ideally 1; {} is tolerated.",
            "steps": [{"execute": "guest-ping", "timeout_ms": 500, "expect": [{"return": 1}],
                       "non_strict": [{"return": {}}]}]}"#,
    ),
    (
        "info.json",
        r#"{"id": "rep.4", "title": "recorded", "requirement": "Whatever happens.",
            "info": "records what the client does",
            "steps": [{"execute": "guest-ping", "timeout_ms": 500, "expect": []}]}"#,
    ),
];

struct Run {
    ws: Workspace,
    results: Vec<CaseResult>,
    info: RunInfo,
}

fn run_cases() -> Run {
    let ws = Workspace::new();
    for (name, text) in CASES {
        ws.write(&format!("cases/{name}"), text);
    }
    let client = session(&ws.python_session("careful.py", common::runner::CAREFUL_SESSION_PY));
    let options = RunOptions {
        time_scale: 1,
        client: client.clone(),
        launcher: Arc::new(runner::MockLauncher::default()),
        jobs: 2,
        seed: 1234,
        max_rss_kib: runner::DEFAULT_MAX_RSS_KIB,
        artifacts: Some(ws.path().join("artifacts")),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let results = runtime.block_on(runner::run_all(
        load(&ws.path().join("cases")),
        &options,
        |_, _| {},
    ));
    let info = RunInfo {
        client: client.describe(),
        client_flags: format!(
            "--client-session {}",
            qga_harness::internals::shell_quote("python3 careful.py {socket}")
        ),
        seed: 1234,
        jobs: 2,
        elapsed: Duration::from_millis(1500),
        program: "qga-harness".into(),
    };
    Run { ws, results, info }
}

#[test]
fn every_report_of_a_run() {
    let run = run_cases();
    let verdicts: Vec<Verdict> = run.results.iter().map(|r| r.verdict).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Pass,
            Verdict::Fail,
            Verdict::NonStrict,
            Verdict::Info
        ],
        "{}",
        run.results
            .iter()
            .map(common::runner::explain)
            .collect::<Vec<_>>()
            .join("\n")
    );
    human_report(&run);
    junit(&run);
    json(&run);
    artifacts(&run);
    baselines(&run);
}

fn human_report(run: &Run) {
    let mut out = Vec::new();
    let mut human = HumanReport::new(&mut out, false, run.results.len());
    human.start(&run.info).expect("writes");
    for (n, result) in run.results.iter().enumerate() {
        human.case_done(result, n + 1).expect("writes");
    }
    human
        .finish(&Report::from_results(&run.results, &run.info))
        .expect("writes");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        !text.contains('\r'),
        "no progress line when not a terminal:\n{text}"
    );
    for needle in [
        "PASS        rep.1",
        "FAIL        rep.2",
        "NON-STRICT  rep.3",
        "INFO        rep.4",
        "Requirement: The host name is 'other' <on purpose>.",
        "Expected:    any of: return {\"host-name\":\"other\"}; agent error GenericError",
        "Actual:      return {\"host-name\":\"vm\"}",
        "Transcript:  lines",
        "rerun: qga-harness run ",
        "fail.json --seed 1234 --client-session 'python3 careful.py {socket}'",
        "category",
        "rep                    1           1           1           1           0       4",
        "4 case(s) in 1.5 s: 1 PASS, 1 NON-STRICT, 1 FAIL, 1 INFO",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // The excerpt quotes the agent's reply.
    assert!(
        text.contains("agent > client {\\\"return\\\"")
            || text.contains("agent > client {\"return\""),
        "{text}"
    );

    let mut tty = Vec::new();
    let mut human = HumanReport::new(&mut tty, true, 4);
    human.case_done(&run.results[0], 1).expect("writes");
    human.case_done(&run.results[1], 2).expect("writes");
    let text = String::from_utf8(tty).expect("utf-8");
    assert!(text.contains("[1/4] rep.1 done\r\x1b[2KFAIL"), "{text:?}");
}

fn junit(run: &Run) {
    let xml = report::junit_xml(&run.results, &run.info);
    let path = run.ws.write("junit.xml", &xml);
    let check = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, xml.dom.minidom as m\n\
             d = m.parse(sys.argv[1])\n\
             cases = d.getElementsByTagName('testcase')\n\
             print(len(cases), len(d.getElementsByTagName('failure')), len(d.getElementsByTagName('skipped')))\n\
             print(d.getElementsByTagName('failure')[0].getAttribute('message'))",
        )
        .arg(&path)
        .output()
        .expect("python3 runs");
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "invalid XML: {}\n{xml}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("4 1 0"), "{xml}");
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("step 1 (guest-get-host-name)"),
        "{out}"
    );
    assert!(
        xml.contains("a &lt;wrong&gt; &amp; &quot;quoted&quot; expectation"),
        "{xml}"
    );
    assert!(xml.contains("rerun: qga-harness run"), "{xml}");
}

fn json(run: &Run) {
    let value = report::json_report(&run.results, &run.info);
    let text = serde_json::to_string(&value).expect("serialises");
    let back: serde_json::Value = serde_json::from_str(&text).expect("parses");
    let cases = back["cases"].as_array().expect("cases");
    let verdicts: Vec<&str> = cases.iter().filter_map(|c| c["verdict"].as_str()).collect();
    assert_eq!(verdicts, ["PASS", "FAIL", "NON-STRICT", "INFO"]);
    for case in cases {
        assert_eq!(case["seed"], 1234);
        assert!(case["agent_seed"].is_u64());
        assert!(case["elapsed_ms"].as_f64().is_some_and(|t| t > 0.0));
        assert!(case["steps"][0]["elapsed_ms"].is_number(), "{case}");
        assert!(case["transcript"].is_string(), "{case}");
    }
    let duties = cases[0]["duties"].as_array().expect("duties");
    assert_eq!(duties.len(), 4);
    let status: Vec<&str> = duties.iter().filter_map(|d| d["status"].as_str()).collect();
    assert_eq!(status, ["met", "met", "met", "met"], "{}", cases[0]);
    assert_eq!(back["summary"]["FAIL"], 1);
    assert_eq!(cases[1]["findings"][0]["severity"], "fail");
    assert_eq!(back["format"], report::REPORT_FORMAT);

    // The typed model reads back what was written, timelines included.
    let typed = Report::parse(&text, std::path::Path::new("run.json")).expect("typed");
    let direct = Report::from_results(&run.results, &run.info);
    for (read, made) in typed.cases.iter().zip(&direct.cases) {
        // Everything but the floats, which JSON need not carry bit for bit.
        assert_eq!(
            (&read.id, read.verdict, &read.findings, &read.duties),
            (&made.id, made.verdict, &made.findings, &made.duties)
        );
        assert_eq!(read.timeline, made.timeline);
    }
    let timeline = typed.cases[1].timeline.as_ref().expect("a timeline");
    let requests = timeline
        .blocks
        .iter()
        .filter(|b| b.label == "guest-get-host-name")
        .count();
    assert_eq!(requests, 1, "{timeline:#?}");
    assert_eq!(typed.cases[1].steps[0].timeout_ms, 500);
}

fn artifacts(run: &Run) {
    let dir = run.ws.path().join("artifacts");
    for result in &run.results {
        let transcript = dir.join(format!("{}.jsonl", result.id));
        let text = std::fs::read_to_string(&transcript).expect("transcript kept");
        assert!(text.lines().count() >= 3, "{text}");
        let log = std::fs::read_to_string(dir.join(format!("{}.client.txt", result.id)))
            .expect("client log kept");
        assert!(log.contains("step 1 guest-"), "{log}");
    }
    // The failure points at lines of that file, and they show the exchange.
    let failed = &run.results[1];
    let finding = &failed.judgement.as_ref().expect("judged").findings[0];
    let (from, to) = finding
        .lines
        .unwrap_or_else(|| panic!("the finding names no lines: {finding:#?}"));
    let text = std::fs::read_to_string(dir.join("rep.2.jsonl")).expect("transcript");
    let shown: Vec<&str> = text.lines().skip(from - 1).take(to - from + 1).collect();
    assert!(
        shown.iter().any(|l| l.contains("guest-get-host-name")),
        "{shown:?}"
    );
}

fn baselines(run: &Run) {
    let path = run.ws.path().join("baseline.json");
    Baseline::from_results(&run.results, "careful")
        .write(&path)
        .expect("writes");
    let baseline = Baseline::load(&path).expect("loads");
    assert!(baseline.compare(&run.results).regressions.is_empty());
    let mut stricter = baseline.clone();
    stricter.verdicts.insert("rep.3".into(), Verdict::Pass);
    let comparison = stricter.compare(&run.results);
    assert_eq!(comparison.regressions.len(), 1);
    assert_eq!(comparison.regressions[0].id, "rep.3");
}
