//! JUnit XML: one testsuite per category, one testcase per case. FAIL is a `<failure>`
//! with the findings and transcript excerpts, UNSUPPORTED a `<skipped>`, and NON-STRICT and
//! INFO pass with a note in `<system-out>`. Every text is escaped, and characters XML 1.0
//! cannot carry at all (most control characters) are written as `\xNN`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::{CaseReport, Report};
use super::RunInfo;
use crate::runner::{CaseResult, Verdict};

/// The whole run as a JUnit XML document.
pub fn junit_xml(results: &[CaseResult], info: &RunInfo) -> String {
    junit_of(&Report::from_results(results, info))
}

fn count<'a>(cases: impl IntoIterator<Item = &'a CaseReport>) -> [usize; 5] {
    let mut counts = [0; 5];
    for case in cases {
        if let Some(at) = Verdict::ALL.iter().position(|v| *v == case.verdict) {
            counts[at] += 1;
        }
    }
    counts
}

/// A report as a JUnit XML document.
pub fn junit_of(report: &Report) -> String {
    let results = &report.cases;
    let mut by_category: BTreeMap<&str, Vec<&CaseReport>> = BTreeMap::new();
    for result in results {
        by_category
            .entry(&result.category)
            .or_default()
            .push(result);
    }
    let totals = count(results);
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"qga-harness\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
        results.len(),
        totals[2],
        totals[4],
        report.elapsed_ms / 1000.0
    );
    for (category, cases) in by_category {
        let counts = count(cases.iter().copied());
        let time: f64 = cases.iter().map(|c| c.elapsed_ms).sum::<f64>() / 1000.0;
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{time:.3}\">",
            escape(category),
            cases.len(),
            counts[2],
            counts[4]
        );
        let _ = writeln!(
            xml,
            "    <properties><property name=\"seed\" value=\"{}\"/><property name=\"client\" value=\"{}\"/></properties>",
            report.seed,
            escape(&report.client)
        );
        for case in cases {
            testcase(&mut xml, case);
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn testcase(xml: &mut String, case: &CaseReport) {
    let _ = write!(
        xml,
        "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" time=\"{:.3}\"",
        escape(&case.category),
        escape(&format!("{}: {}", case.id, case.title)),
        escape(&case.file),
        case.elapsed_ms / 1000.0
    );
    let findings = &case.findings;
    match case.verdict {
        Verdict::Fail => {
            let first = case.error.clone().unwrap_or_else(|| {
                findings
                    .first()
                    .map(|f| {
                        format!(
                            "{}: expected {}; actual {}",
                            f.subject, f.expected, f.actual
                        )
                    })
                    .unwrap_or_else(|| "FAIL".to_owned())
            });
            let mut body = String::new();
            if let Some(error) = &case.error {
                let _ = writeln!(body, "error: {error}");
            }
            for f in findings {
                let _ = writeln!(body, "{}", f.subject);
                let _ = writeln!(body, "  Requirement: {}", f.requirement);
                let _ = writeln!(body, "  Expected:    {}", f.expected);
                let _ = writeln!(body, "  Actual:      {}", f.actual);
                if let Some((from, to)) = f.lines {
                    let _ = writeln!(body, "  Transcript lines {from}-{to}:");
                    body.push_str(&f.excerpt);
                }
            }
            let _ = writeln!(body, "seed {} (agent seed {})", case.seed, case.agent_seed);
            let _ = writeln!(body, "rerun: {}", case.rerun);
            let _ = writeln!(
                xml,
                ">\n      <failure message=\"{}\" type=\"FAIL\">{}</failure>\n    </testcase>",
                escape(&first),
                escape(&body)
            );
        }
        Verdict::Unsupported => {
            let _ = writeln!(
                xml,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                escape(case.unsupported.as_deref().unwrap_or("UNSUPPORTED"))
            );
        }
        Verdict::NonStrict | Verdict::Info => {
            let mut note = format!("{}\n", case.verdict);
            for f in findings {
                let _ = writeln!(
                    note,
                    "{}: expected {}; actual {}",
                    f.subject, f.expected, f.actual
                );
            }
            let _ = writeln!(
                xml,
                ">\n      <system-out>{}</system-out>\n    </testcase>",
                escape(&note)
            );
        }
        Verdict::Pass => xml.push_str("/>\n"),
    }
}

/// Escapes text for an XML attribute or element.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_forbidden_characters() {
        assert_eq!(
            escape("<a href=\"x\">&'\u{1}\u{FFFF}\n"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;\\x01\\xFFFF\n"
        );
    }
}
