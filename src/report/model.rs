//! The typed report: what `run --json` writes and `report merge`, `report html` and
//! `report matrix` read. Versioned by [`REPORT_FORMAT`]; its JSON Schema is printed by
//! `qga-harness schema report`, so other tools can read it too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RunInfo;
use crate::runner::{CaseResult, DutyStatus, Severity, StepResult, Timeline, Verdict};

/// The report format's version: raised when a member changes meaning or goes away.
pub const REPORT_FORMAT: u32 = 2;

/// A whole run (or several partitions of one, merged).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// [`REPORT_FORMAT`] of the program that wrote it.
    pub format: u32,
    /// Always `qga-harness`.
    pub tool: String,
    /// The version of the program that wrote it.
    pub version: String,
    /// How the client was given.
    pub client: String,
    /// The flags that select the client, ready to paste after `qga-harness run`.
    #[serde(default)]
    pub client_flags: String,
    pub seed: u64,
    pub jobs: usize,
    pub elapsed_ms: f64,
    /// Which slice of the catalogue this run covered; absent for a whole run and a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionInfo>,
    /// The partitions a merged report was made of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<PartitionInfo>,
    /// Cases per verdict (`PASS`, `NON-STRICT`, `FAIL`, `INFO`, `UNSUPPORTED`).
    pub summary: BTreeMap<String, usize>,
    pub cases: Vec<CaseReport>,
}

/// One slice of a partitioned run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PartitionInfo {
    /// 1-based.
    pub index: usize,
    pub count: usize,
    /// Cases in the whole catalogue the slices were cut from.
    pub total_cases: usize,
    /// The ids of every case of the whole catalogue, in order: a merge checks that the
    /// partitions cut the same catalogue.
    pub catalogue: Vec<String>,
    /// `count` (round robin) or `duration` (balanced by an earlier report's durations).
    pub slicing: String,
}

/// One case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CaseReport {
    pub id: String,
    pub title: String,
    pub category: String,
    #[serde(default)]
    pub requirement: String,
    pub file: String,
    pub verdict: Verdict,
    /// The run's seed.
    pub seed: u64,
    /// The seed the case's agent ran with.
    pub agent_seed: u64,
    pub elapsed_ms: f64,
    pub steps: Vec<StepReport>,
    pub duties: Vec<DutyEntry>,
    pub findings: Vec<FindingEntry>,
    /// The client processes the runner started and how they ended.
    pub processes: Vec<Value>,
    /// A command that reruns this case alone with the same seed.
    pub rerun: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    /// The transcript file kept under `--artifacts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// The wire, drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

/// One step as the client ran it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepReport {
    pub index: usize,
    pub execute: String,
    pub started_ms: f64,
    pub elapsed_ms: f64,
    /// The step's timeout.
    #[serde(default)]
    pub timeout_ms: u64,
    /// What the client answered, as the runner read it.
    pub answer: Value,
    /// The same, for people.
    #[serde(default)]
    pub answer_text: String,
    pub result: Option<StepResult>,
}

/// A listed duty and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DutyEntry {
    pub duty: String,
    pub required: bool,
    pub status: DutyStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One thing that went wrong, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FindingEntry {
    pub severity: Severity,
    /// `step 2 (guest-ping)` or `duty sync-first`.
    pub subject: String,
    pub requirement: String,
    pub expected: String,
    pub actual: String,
    /// The transcript lines it quotes (1-based, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<(usize, usize)>,
    /// Those lines, rendered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub excerpt: String,
}

/// A report file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: cannot read the report: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not a qga-harness JSON report: {message}; write one with `qga-harness run --json FILE`")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: report format {found}, this program reads format {REPORT_FORMAT}; write it again with this version's `qga-harness run --json`")]
    Format { path: PathBuf, found: u32 },
}

/// Reports larger than this are refused rather than read into memory.
const MAX_REPORT_BYTES: u64 = 1 << 30;

impl Report {
    /// The report of a run.
    pub fn from_results(results: &[CaseResult], info: &RunInfo) -> Report {
        let mut report = Report {
            format: REPORT_FORMAT,
            tool: "qga-harness".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            client: info.client.clone(),
            client_flags: info.client_flags.clone(),
            seed: info.seed,
            jobs: info.jobs,
            elapsed_ms: info.elapsed.as_secs_f64() * 1000.0,
            partition: None,
            merged_from: Vec::new(),
            summary: BTreeMap::new(),
            cases: results.iter().map(|r| CaseReport::new(r, info)).collect(),
        };
        report.count();
        report
    }

    /// Recomputes `summary` from the cases.
    pub fn count(&mut self) {
        self.summary = Verdict::ALL
            .iter()
            .map(|v| {
                (
                    v.as_str().to_owned(),
                    self.cases.iter().filter(|c| c.verdict == *v).count(),
                )
            })
            .collect();
    }

    /// How many cases got `verdict`.
    pub fn counted(&self, verdict: Verdict) -> usize {
        self.cases.iter().filter(|c| c.verdict == verdict).count()
    }

    /// Reads a report file, with the line and column of what is wrong.
    pub fn load(path: &Path) -> Result<Report, ReportError> {
        let read = |source| ReportError::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_REPORT_BYTES {
            return Err(read(std::io::Error::other(format!(
                "{size} bytes, more than the {MAX_REPORT_BYTES} a report may have"
            ))));
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Report::parse(&text, path)
    }

    /// Parses a report's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Report, ReportError> {
        // The format first, so an old or newer report says so rather than "missing field".
        #[derive(Deserialize)]
        struct Head {
            format: Option<u32>,
        }
        let parse_error = |e: &serde_json::Error, message: String| ReportError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message,
        };
        let head: Head = serde_json::from_str(text)
            .map_err(|e| parse_error(&e, strip_position(&e.to_string())))?;
        let found = head.format.unwrap_or(1);
        if found != REPORT_FORMAT {
            return Err(ReportError::Format {
                path: path.to_owned(),
                found,
            });
        }
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let message = format!("at `{at}`: {}", strip_position(&inner.to_string()));
            parse_error(&inner, message)
        })
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The JSON Schema of the report format.
    pub fn json_schema() -> Value {
        serde_json::to_value(schemars::schema_for!(Report)).unwrap_or(Value::Null)
    }
}

/// Answers longer than this (as JSON) are cut in reports: a client that hands back a
/// hostile agent's 22 MiB reply does not make a 22 MiB report.
const MAX_ANSWER_JSON: usize = 4096;

/// The answer as JSON, or, when long, its kind, its length and the start of its text.
fn bounded_answer(answer: &crate::runner::Answer) -> Value {
    let value = serde_json::to_value(answer).unwrap_or(Value::Null);
    let text = value.to_string();
    if text.len() <= MAX_ANSWER_JSON {
        return value;
    }
    let mut cut = MAX_ANSWER_JSON;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::json!({
        "kind": value.get("kind").cloned().unwrap_or(Value::Null),
        "cut": true,
        "json_bytes": text.len(),
        "start": &text[..cut],
    })
}

/// serde_json's messages end in "at line L column C", which the error already says.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

impl CaseReport {
    fn new(result: &CaseResult, info: &RunInfo) -> CaseReport {
        let judgement = result.judgement.as_ref();
        let timeouts: Vec<u64> = result
            .timeline
            .as_ref()
            .map(|t| {
                t.steps
                    .iter()
                    .map(|s| s.deadline_us.saturating_sub(s.start_us) / 1000)
                    .collect()
            })
            .unwrap_or_default();
        CaseReport {
            id: result.id.clone(),
            title: result.title.clone(),
            category: result.category.clone(),
            requirement: result.requirement.clone(),
            file: result.file.to_string_lossy().into_owned(),
            verdict: result.verdict,
            seed: info.seed,
            agent_seed: result.seed,
            elapsed_ms: result.elapsed_ms,
            steps: result
                .run
                .steps
                .iter()
                .map(|step| StepReport {
                    index: step.index,
                    execute: step.execute.clone(),
                    started_ms: step.started_us as f64 / 1000.0,
                    elapsed_ms: step.elapsed_ms(),
                    timeout_ms: timeouts.get(step.index).copied().unwrap_or(0),
                    answer: bounded_answer(&step.answer),
                    answer_text: step.answer.to_string(),
                    result: judgement.and_then(|j| j.steps.get(step.index)).copied(),
                })
                .collect(),
            duties: judgement.map_or_else(Vec::new, |j| {
                j.duties
                    .iter()
                    .map(|d| DutyEntry {
                        duty: d.duty.to_owned(),
                        required: d.required,
                        status: d.status,
                        detail: d.detail.clone(),
                    })
                    .collect()
            }),
            findings: judgement.map_or_else(Vec::new, |j| {
                j.findings
                    .iter()
                    .map(|f| FindingEntry {
                        severity: f.severity,
                        subject: f.subject.clone(),
                        requirement: f.requirement.clone(),
                        expected: f.expected.clone(),
                        actual: f.actual.clone(),
                        lines: f.lines,
                        excerpt: f.excerpt.clone(),
                    })
                    .collect()
            }),
            processes: result
                .run
                .processes
                .iter()
                .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
                .collect(),
            rerun: info.rerun(result),
            error: result.error.clone(),
            unsupported: result.unsupported.clone(),
            transcript: result
                .transcript
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            timeline: result.timeline.clone(),
        }
    }

    /// True for a PASS with nothing to say.
    pub fn is_plain_pass(&self) -> bool {
        self.verdict == Verdict::Pass && self.findings.is_empty() && self.error.is_none()
    }
}
