//! The HTML report: one self-contained file (inline CSS and script, the data embedded as
//! JSON; no network, no external assets), readable from a CI artifact store. A summary by
//! category and verdict, a filterable and sortable table of cases, and for every case that
//! is not a plain PASS its findings beside a timeline of its wire.
//!
//! The page state can be set from the URL's fragment, so a saved link (or a headless
//! browser) opens it filtered and sorted: `#q=sync&verdict=FAIL&sort=ms&dir=desc`, and
//! `#focus=ID` shows one case's timeline alone.

use std::path::Path;

use serde_json::Value;

use super::model::Report;

/// Builds the page. `artifacts`, when given, is where the cases' transcripts and client
/// logs were kept (`ID.jsonl`, `ID.client.txt`), as a path relative to the page; each case
/// links to them.
pub fn html_page(report: &Report, artifacts: Option<&Path>) -> String {
    let data = page_data(report, artifacts);
    // Inside <script>, "</" would end the element and "<!--" start a comment: JSON lets
    // every '<' be written as \u003c instead.
    let json = serde_json::to_string(&data)
        .unwrap_or_else(|_| "{}".to_owned())
        .replace('<', "\\u003c");
    let title = format!(
        "qga-harness report: {} ({} case(s))",
        report.client,
        report.cases.len()
    );
    let mut page = String::with_capacity(json.len() + TEMPLATE.len() + 256);
    for (i, part) in TEMPLATE.split("@@").enumerate() {
        match (i % 2, part) {
            (0, text) => page.push_str(text),
            (_, "TITLE") => page.push_str(&escape_html(&title)),
            (_, "DATA") => page.push_str(&json),
            (_, other) => page.push_str(other),
        }
    }
    page
}

/// What the page's script reads: the report, without what the page does not show (the
/// timelines of plain passes, process records).
fn page_data(report: &Report, artifacts: Option<&Path>) -> Value {
    let cases: Vec<Value> = report
        .cases
        .iter()
        .map(|case| {
            let mut value = serde_json::to_value(case).unwrap_or(Value::Null);
            if let Some(map) = value.as_object_mut() {
                map.remove("processes");
                if case.is_plain_pass() {
                    map.remove("timeline");
                }
                if let Some(dir) = artifacts {
                    let link = |name: String| {
                        Value::String(dir.join(name).to_string_lossy().replace('\\', "/"))
                    };
                    map.insert(
                        "links".into(),
                        serde_json::json!({
                            "transcript": link(format!("{}.jsonl", case.id)),
                            "client log": link(format!("{}.client.txt", case.id)),
                        }),
                    );
                }
            }
            value
        })
        .collect();
    serde_json::json!({
        "client": report.client,
        "seed": report.seed,
        "jobs": report.jobs,
        "elapsed_ms": report.elapsed_ms,
        "version": report.version,
        "partitions": report.merged_from.len(),
        "cases": cases,
    })
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const TEMPLATE: &str = include_str!("page.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_close_the_script_element() {
        let mut report: Report = serde_json::from_value(serde_json::json!({
            "format": 2, "tool": "qga-harness", "version": "0", "client": "</script><b>x",
            "seed": 1, "jobs": 1, "elapsed_ms": 1.0, "summary": {}, "cases": []
        }))
        .expect("report");
        report.count();
        let page = html_page(&report, None);
        assert_eq!(page.matches("</script>").count(), 2, "only the page's own");
        assert!(page.contains("&lt;/script&gt;&lt;b&gt;x"));
        // No external asset: nothing is fetched from anywhere.
        for fetch in ["src=", "href=\"http", "@import", "url("] {
            assert!(!page.contains(fetch), "{fetch}");
        }
    }
}
