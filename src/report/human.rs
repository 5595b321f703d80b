//! The human report: one line per case as it completes (above a live progress line when
//! the output is a terminal), then every failure with its evidence and a rerun command,
//! then a summary table by category.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use super::model::{CaseReport, Report};
use super::RunInfo;
use crate::runner::{CaseResult, Verdict};

/// Prints case lines and, on a terminal, a progress line kept at the bottom.
#[derive(Debug)]
pub struct HumanReport<W: Write> {
    out: W,
    terminal: bool,
    total: usize,
    progress_shown: bool,
}

impl<W: Write> HumanReport<W> {
    #[must_use]
    pub fn new(out: W, terminal: bool, total: usize) -> Self {
        Self {
            out,
            terminal,
            total,
            progress_shown: false,
        }
    }

    /// The header line.
    pub fn start(&mut self, info: &RunInfo) -> io::Result<()> {
        writeln!(
            self.out,
            "qga-harness run: {} case(s), client {}, seed {}, {} job(s)",
            self.total, info.client, info.seed, info.jobs
        )
    }

    /// A case finished (`done` of them so far).
    pub fn case_done(&mut self, result: &CaseResult, done: usize) -> io::Result<()> {
        self.clear_progress()?;
        writeln!(self.out, "{}", case_line(result))?;
        if self.terminal {
            write!(self.out, "[{done}/{}] {} done", self.total, result.id)?;
            self.progress_shown = true;
        }
        self.out.flush()
    }

    fn clear_progress(&mut self) -> io::Result<()> {
        if self.progress_shown {
            write!(self.out, "\r\x1b[2K")?;
            self.progress_shown = false;
        }
        Ok(())
    }

    /// Failures, the summary table and the closing line.
    pub fn finish(&mut self, report: &Report) -> io::Result<()> {
        self.clear_progress()?;
        write!(self.out, "{}", closing(report))?;
        self.out.flush()
    }
}

/// What the human report says after the case lines: every failure with its evidence, the
/// summary table and the closing line.
pub fn closing(report: &Report) -> String {
    let mut out = String::new();
    let details = failure_details(report);
    if !details.is_empty() {
        let _ = writeln!(out, "\n{details}");
    }
    let _ = writeln!(out, "\n{}", summary_table(&report.cases));
    let _ = writeln!(
        out,
        "{} case(s) in {:.1} s: {}",
        report.cases.len(),
        report.elapsed_ms / 1000.0,
        verdict_counts(&report.cases)
    );
    out
}

/// `3 PASS, 1 FAIL`, or `nothing ran`.
pub fn verdict_counts(cases: &[CaseReport]) -> String {
    let summary: Vec<String> = Verdict::ALL
        .iter()
        .map(|v| (v, cases.iter().filter(|c| c.verdict == *v).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(v, n)| format!("{n} {v}"))
        .collect();
    if summary.is_empty() {
        "nothing ran".to_owned()
    } else {
        summary.join(", ")
    }
}

/// The plain line of a finished case.
pub fn case_line(result: &CaseResult) -> String {
    format!(
        "{:<11} {:<14} {:<52} {:>7.0} ms",
        result.verdict.as_str(),
        result.id,
        clip(&result.title, 52),
        result.elapsed_ms
    )
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// Every case that did not pass, with its findings and a rerun command.
pub fn failure_details(report: &Report) -> String {
    let mut out = String::new();
    for result in &report.cases {
        let findings = &result.findings;
        let interesting =
            matches!(result.verdict, Verdict::Fail | Verdict::NonStrict) || result.error.is_some();
        if !interesting {
            continue;
        }
        let _ = writeln!(out, "{} {}: {}", result.verdict, result.id, result.title);
        let _ = writeln!(out, "  file: {}", result.file);
        let _ = writeln!(
            out,
            "  seed: {} (agent seed {})",
            result.seed, result.agent_seed
        );
        if let Some(error) = &result.error {
            let _ = writeln!(out, "  error: {error}");
        }
        for finding in findings {
            let _ = writeln!(out, "  {} [{}]", finding.subject, severity(finding));
            let _ = writeln!(out, "    Requirement: {}", finding.requirement);
            let _ = writeln!(out, "    Expected:    {}", finding.expected);
            let _ = writeln!(out, "    Actual:      {}", finding.actual);
            if let Some((from, to)) = finding.lines {
                let place = match &result.transcript {
                    Some(path) => format!(" of {path}"),
                    None => " of the case's transcript (keep it with --artifacts DIR)".to_owned(),
                };
                let span = if from == to {
                    format!("line {from}")
                } else {
                    format!("lines {from}-{to}")
                };
                let _ = writeln!(out, "    Transcript:  {span}{place}");
                for line in finding.excerpt.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        let _ = writeln!(out, "  rerun: {}", result.rerun);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

fn severity(finding: &super::model::FindingEntry) -> &'static str {
    match finding.severity {
        crate::runner::Severity::Fail => "FAIL",
        crate::runner::Severity::NonStrict => "NON-STRICT",
    }
}

/// The verdict counts per category, and the total.
pub fn summary_table(results: &[CaseReport]) -> String {
    let mut by_category: BTreeMap<&str, Vec<&CaseReport>> = BTreeMap::new();
    for result in results {
        by_category
            .entry(&result.category)
            .or_default()
            .push(result);
    }
    let mut out = String::new();
    let _ = write!(out, "{:<12}", "category");
    for verdict in Verdict::ALL {
        let _ = write!(out, " {:>11}", verdict.as_str());
    }
    let _ = writeln!(out, " {:>7}", "total");
    let mut row = |name: &str, cases: &[&CaseReport]| {
        let counts = Verdict::ALL.map(|v| cases.iter().filter(|c| c.verdict == v).count());
        let _ = write!(out, "{name:<12}");
        for n in counts {
            let _ = write!(out, " {n:>11}");
        }
        let _ = writeln!(out, " {:>7}", cases.len());
    };
    for (category, cases) in &by_category {
        row(category, cases);
    }
    let all: Vec<&CaseReport> = results.iter().collect();
    row("total", &all);
    out.trim_end().to_owned()
}
