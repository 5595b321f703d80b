//! The HTML report in a real browser: a real run of the socat one-liner (fixed seed, a few
//! cases with failures, drips, a death and a restart) rendered with `run --html`, loaded
//! in headless Chromium with JavaScript on, and the DOM read back after the page's script
//! ran: the summary counts, one timeline per case that is not a plain PASS with as many
//! request and reply blocks as an independent reading of the case's transcript finds, the
//! lines its findings quote highlighted, and filtering and sorting (set from the URL
//! fragment) changing the rows shown. A screenshot of one timeline goes to a temp dir.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it); `QGA_CHROMIUM` names another binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

const CASES: &[&str] = &[
    "sync.1",
    "sync.4",
    "hostile.12",
    "hostile.14",
    "lifecycle.1",
    "commands.13",
];

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("QGA_CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        }) {
            return found;
        }
    }
    panic!("no chromium on PATH: install Debian's chromium package (.ci/run does), or set QGA_CHROMIUM");
}

/// Runs headless Chromium on `url` with `extra` flags; returns stdout.
fn browse(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn dom(page: &Path, fragment: &str) -> String {
    let url = format!("file://{}#{fragment}", page.display());
    let dom = browse(&url, &["--dump-dom"]);
    assert!(
        dom.contains("data-rendered=\"true\""),
        "the page's script did not finish: {}",
        &dom[..dom.len().min(2000)]
    );
    dom
}

/// The opening tags of elements whose opening tag contains `needle`.
fn tags<'a>(html: &'a str, needle: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(needle) {
        let start = rest[..at].rfind('<').unwrap_or(0);
        let end = at + rest[at..].find('>').unwrap_or(0);
        found.push(&rest[start..=end]);
        rest = &rest[end + 1..];
    }
    found
}

/// The rows of the case table shown (not hidden), in order.
fn shown_rows(dom: &str) -> Vec<String> {
    tags(dom, "class=\"case-row\"")
        .into_iter()
        .filter(|tag| !tag.contains(" hidden"))
        .filter_map(|tag| attribute(tag, "data-id"))
        .collect()
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_owned())
}

/// The section of the DOM that holds `id`'s timeline.
fn timeline_svg<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = "<svg viewBox=";
    let marker = format!("data-case=\"{id}\"");
    let mut rest = dom;
    while let Some(at) = rest.find(open) {
        let tag_end = at + rest[at..].find('>').expect("tag end");
        if rest[at..tag_end].contains(&marker) {
            let end = at + rest[at..].find("</svg>").expect("svg end");
            return &rest[at..end];
        }
        rest = &rest[tag_end..];
    }
    panic!("no timeline for {id}");
}

/// An independent reading of a transcript: per connection, the client's bytes split into
/// JSON requests by lines (the socat client writes one request line per connection) and
/// the agent's bytes into lines (one output each, a last unterminated one included).
fn independent_counts(transcript: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(transcript).expect("transcript");
    let mut input: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut output: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).expect("record");
        let (Some(conn), Some(dir)) = (record["conn"].as_u64(), record["dir"].as_str()) else {
            continue;
        };
        let bytes = match (record["text"].as_str(), record["b64"].as_str()) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64"),
            _ => continue,
        };
        let stream = if dir == "in" { &mut input } else { &mut output };
        stream.entry(conn).or_default().extend(bytes);
    }
    let requests = input
        .values()
        .flat_map(|bytes| bytes.split(|&b| b == b'\n'))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .count();
    let outputs = output
        .values()
        .map(|bytes| {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            lines + usize::from(bytes.last().is_some_and(|&b| b != b'\n'))
        })
        .sum();
    (requests, outputs)
}

/// The outputs the agent recorded as the answer to a request it read (read from the
/// records directly, not through the harness's reader).
fn recorded_answers(transcript: &Path) -> usize {
    let text = std::fs::read_to_string(transcript).expect("transcript");
    let mut requests = BTreeSet::new();
    let mut answers = BTreeSet::new();
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).expect("record");
        match record["event"].as_str() {
            Some("request") => {
                requests.insert(record["request"].as_u64().expect("number"));
            }
            Some("request-unread") => {
                requests.remove(&record["request"].as_u64().expect("number"));
            }
            Some("output")
                if matches!(record["origin"].as_str(), Some("reply" | "parse-error")) =>
            {
                answers.insert((
                    record["output"].as_u64().expect("output"),
                    record["request"].as_u64().expect("request"),
                ));
            }
            _ => {}
        }
    }
    answers.iter().filter(|(_, r)| requests.contains(r)).count()
}

#[test]
fn the_html_report_renders_in_a_browser_with_a_timeline_per_failing_case() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let page = dir.path().join("report.html");
    let artifacts = dir.path().join("artifacts");
    let mut args: Vec<String> = [
        "run",
        "--client",
        "clients/socat/oneshot.sh {socket} {request} {timeout_s}",
        "--seed",
        "11",
        "-j",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for id in CASES {
        args.extend(["--filter".to_owned(), (*id).to_owned()]);
    }
    args.extend([
        "--json".to_owned(),
        json.display().to_string(),
        "--html".to_owned(),
        page.display().to_string(),
        "--artifacts".to_owned(),
        artifacts.display().to_string(),
    ]);
    let run = Command::new(env!("CARGO_BIN_EXE_qga-harness"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("qga-harness runs");
    assert_eq!(
        run.status.code(),
        Some(1),
        "the one-liner fails: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("report");
    let cases = report["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), CASES.len());

    let dom = dom(&page, "");

    // The summary counts.
    for verdict in ["PASS", "NON-STRICT", "FAIL", "INFO", "UNSUPPORTED"] {
        let chip = format!("id=\"total-{verdict}\"><b class=\"count\">");
        let at = dom
            .find(&chip)
            .unwrap_or_else(|| panic!("no {verdict} total"));
        let count: usize = dom[at + chip.len()..]
            .split('<')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count");
        assert_eq!(
            count,
            report["summary"][verdict].as_u64().expect("summary") as usize,
            "{verdict}"
        );
    }

    // One timeline per case that is not a plain PASS, with the transcript's blocks.
    let not_plain: Vec<&Value> = cases
        .iter()
        .filter(|c| {
            c["verdict"] != "PASS"
                || !c["findings"].as_array().is_some_and(Vec::is_empty)
                || c.get("error").is_some()
        })
        .collect();
    assert!(not_plain.len() >= 5, "{} not plain", not_plain.len());
    assert_eq!(
        dom.matches("<svg viewBox=").count(),
        not_plain.len(),
        "one timeline each"
    );
    for case in &not_plain {
        let id = case["id"].as_str().expect("id");
        let svg = timeline_svg(&dom, id);
        let transcript = artifacts.join(format!("{id}.jsonl"));
        let (requests, outputs) = independent_counts(&transcript);
        assert!(requests > 0, "{id}: the transcript has requests");
        assert_eq!(
            svg.matches("data-lane=\"client\"").count(),
            requests,
            "{id}: request blocks"
        );
        assert_eq!(
            svg.matches("data-lane=\"agent\"").count(),
            outputs,
            "{id}: agent output blocks"
        );
        // Each reply is joined to its request as the agent recorded it: one curve per
        // output the agent recorded as an answer.
        assert_eq!(
            svg.matches("class=\"pair\"").count(),
            recorded_answers(&transcript),
            "{id}: reply-to-request curves"
        );
        // Every line a finding quotes is highlighted in the case's transcript listing.
        let section_at = dom
            .find(&format!("id=\"case-{id}\""))
            .expect("case section");
        let section = &dom[section_at..];
        let section = &section[..section[1..]
            .find("class=\"case-detail")
            .unwrap_or(section.len() - 1)];
        let mut quoted = 0;
        for finding in case["findings"].as_array().expect("findings") {
            let Some(lines) = finding["lines"].as_array() else {
                continue;
            };
            let (from, to) = (
                lines[0].as_u64().expect("from"),
                lines[1].as_u64().expect("to"),
            );
            for line in from..=to {
                assert!(
                    section.contains(&format!("data-line=\"{line}\" class=\"quoted\"")),
                    "{id}: line {line} highlighted"
                );
                quoted += 1;
            }
        }
        if quoted > 0 {
            assert!(svg.contains(" quoted\""), "{id}: a quoted block or mark");
        }
    }
    // The drip is one block per reply, not one per byte.
    let drip = timeline_svg(&dom, "hostile.12");
    assert!(drip.matches("data-lane=\"agent\"").count() <= 4, "{drip}");

    // Filtering and sorting change what is shown.
    let all = shown_rows(&dom);
    assert_eq!(all.len(), CASES.len());
    let non_strict: Vec<&str> = cases
        .iter()
        .filter(|c| c["verdict"] == "NON-STRICT")
        .filter_map(|c| c["id"].as_str())
        .collect();
    let filtered = shown_rows(&self::dom(&page, "verdict=FAIL"));
    assert_eq!(
        filtered.len(),
        CASES.len() - non_strict.len(),
        "{filtered:?}"
    );
    assert!(filtered.iter().all(|id| !non_strict.contains(&id.as_str())));
    let searched = shown_rows(&self::dom(&page, "q=sync"));
    assert_eq!(searched, ["sync.1", "sync.4"]);
    let mut by_time: Vec<(f64, String)> = cases
        .iter()
        .map(|c| {
            (
                c["elapsed_ms"].as_f64().expect("ms"),
                c["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    by_time.sort_by(|a, b| b.0.total_cmp(&a.0));
    let sorted = shown_rows(&self::dom(&page, "sort=ms&dir=desc"));
    assert_eq!(
        sorted,
        by_time.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );
    assert_ne!(sorted, all, "sorting changed the order");

    // A screenshot of one timeline.
    let shots = tempfile::Builder::new()
        .prefix("qga-report-shot-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let shot = shots.join("sync.1.png");
    browse(
        &format!("file://{}#focus=sync.1", page.display()),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,800",
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!("timeline screenshot: {}", shot.display());
}
