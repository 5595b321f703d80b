//! Reports of a run: the human report (with a live progress line on a terminal), JUnit XML,
//! JSON, per-case artifacts, baselines, and the catalogue listing.

mod baseline;
mod catalogue;
mod compat_page;
mod html;
mod human;
mod json;
mod junit;
pub(crate) mod matrix;
mod merge;
mod model;
mod partition;
mod progress;

use std::fmt::Write as _;
use std::time::Duration;

pub use baseline::{Baseline, BaselineError, Comparison, DutyTally, TimingSensitive};
pub(crate) use catalogue::{list_markdown, list_text};
pub use html::html_page;
pub(crate) use human::closing;
pub use human::HumanReport;
pub use json::json_report;
pub use junit::{junit_of, junit_xml};
pub use matrix::{ClientColumn, CompatibilityMatrix};
pub use merge::{merge, MergeError};
pub use model::{
    CaseReport, DutyEntry, FindingEntry, PartitionInfo, Report, ReportError, StepReport,
    REPORT_FORMAT,
};
pub use partition::{partition, Partition, PartitionError};
pub use progress::LiveProgress;

use crate::runner::{CaseResult, Verdict};

/// What every report says about the run as a whole.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// How the client was given (`--client '...'`, `--client-session '...'`, or the
    /// reference client's name).
    pub client: String,
    /// The flags that select the client, ready to paste after `qga-harness run`.
    pub client_flags: String,
    pub seed: u64,
    pub jobs: usize,
    pub elapsed: Duration,
    /// The program name for rerun commands (`qga-harness`, or a cargo invocation).
    pub program: String,
}

impl RunInfo {
    /// A command that reruns `case` alone with the same seed.
    pub fn rerun(&self, case: &CaseResult) -> String {
        let mut command = format!(
            "{} run {} --seed {}",
            self.program,
            crate::runner::shell_quote(&case.file.to_string_lossy()),
            self.seed
        );
        if !self.client_flags.is_empty() {
            command.push(' ');
            command.push_str(&self.client_flags);
        }
        command
    }
}

/// How many cases got each verdict.
pub fn count<'a>(results: impl IntoIterator<Item = &'a CaseResult>) -> [usize; 5] {
    let mut counts = [0; 5];
    for result in results {
        if let Some(at) = Verdict::ALL.iter().position(|v| *v == result.verdict) {
            counts[at] += 1;
        }
    }
    counts
}

/// The client's side of a case, for `--artifacts`: what it was asked, what it answered,
/// and how its processes ended.
pub(crate) fn client_log(result: &CaseResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "case {}: {}", result.id, result.title);
    let _ = writeln!(
        out,
        "verdict {} (agent seed {})",
        result.verdict, result.seed
    );
    if let Some(error) = &result.error {
        let _ = writeln!(out, "error: {error}");
    }
    if let Some(why) = &result.unsupported {
        let _ = writeln!(out, "unsupported: {why}");
    }
    for step in &result.run.steps {
        let _ = writeln!(
            out,
            "step {} {}: started at {:.3} ms, took {:.3} ms: {}",
            step.index + 1,
            step.execute,
            step.started_us as f64 / 1000.0,
            step.elapsed_ms(),
            step.answer
        );
    }
    for process in &result.run.processes {
        let which = process
            .step
            .map_or_else(|| "session".to_owned(), |s| format!("step {}", s + 1));
        let _ = writeln!(
            out,
            "\nprocess {} ({which}): {}",
            process.pid, process.command
        );
        let _ = writeln!(
            out,
            "  {}, peak RSS {} KiB{}",
            process.exit.describe(),
            process.exit.peak_rss_kib,
            if process.exit.left_behind > 0 {
                format!(
                    ", {} process(es) of its group left behind",
                    process.exit.left_behind
                )
            } else {
                String::new()
            }
        );
        if !process.stdout.is_empty() {
            let _ = writeln!(out, "  stdout: {}", process.stdout);
        }
        if !process.stderr.is_empty() {
            let _ = writeln!(out, "  stderr: {}", process.stderr);
        }
    }
    out
}
