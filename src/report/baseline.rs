//! Baselines: the exact verdict each case is expected to get with one client. A run passes
//! against a baseline unless a case does worse than its baseline (FAIL is worse than
//! NON-STRICT and UNSUPPORTED, which are worse than PASS and INFO); a case that does better
//! is listed as an improvement to write into the file. A case the baseline does not list is
//! expected to PASS.
//!
//! A case known to race with the agent for a client is marked `timing_sensitive` with
//! every verdict it is seen to get and why: any of those is expected, only a verdict worse
//! than all of them is a regression, and one better than the worst of them that the file
//! does not list yet is an improvement. So the file says what is known instead of hiding
//! it behind the worst of several runs. Ids of retired
//! cases are kept under `retired`, so they are never reused for another case.
//!
//! `qga-harness schema baseline` prints the format as JSON Schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runner::{compare_ids, CaseResult, DutyStatus, Verdict};

/// Expected verdicts by case id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// The client the baseline was written for (informative).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// The verdict of each case, exactly as the client got it.
    pub verdicts: BTreeMap<String, Verdict>,
    /// Cases whose verdict depends on timing for this client: every verdict seen, and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timing_sensitive: BTreeMap<String, TimingSensitive>,
    /// Retired case ids and what became of each (merged into another case, dropped): an
    /// id is never reused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retired: BTreeMap<String, String>,
    /// Per duty of the judge: in how many cases of the run the client met it and missed it
    /// (informative: the compatibility matrix shows it; runs are not compared on it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub duties: BTreeMap<String, DutyTally>,
}

/// In how many cases a client met a duty and missed it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct DutyTally {
    pub met: usize,
    pub missed: usize,
}

impl DutyTally {
    /// Adds one case's status of the duty (not applicable and not measured count for
    /// neither).
    pub fn add(&mut self, status: DutyStatus) {
        match status {
            DutyStatus::Met => self.met += 1,
            DutyStatus::Missed => self.missed += 1,
            DutyStatus::NotApplicable | DutyStatus::NotMeasured => {}
        }
    }
}

/// A case whose verdict for this client depends on timing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimingSensitive {
    /// Every verdict the case gets in repeated runs (the `verdicts` entry among them).
    pub seen: Vec<Verdict>,
    /// What the client races with.
    pub why: String,
}

/// Why a baseline could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{}: cannot read the baseline: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: not a baseline ({message}); expected {{\"verdicts\": {{\"sync.1\": \"PASS\", ...}}}}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: cannot write the baseline: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A case whose verdict differs from its baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub id: String,
    pub expected: Verdict,
    pub actual: Verdict,
}

/// How a run compares with a baseline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Cases worse than their baseline.
    pub regressions: Vec<Change>,
    /// Cases better than their baseline (time to update it).
    pub improvements: Vec<Change>,
    /// Baseline ids that did not run (filtered out, or removed from the catalogue).
    pub missing: Vec<String>,
}

/// Per duty, in how many of these cases it was met and missed.
fn tally_duties(results: &[CaseResult]) -> BTreeMap<String, DutyTally> {
    let mut tallies: BTreeMap<String, DutyTally> = BTreeMap::new();
    for result in results {
        for duty in result.judgement.iter().flat_map(|j| &j.duties) {
            tallies
                .entry(duty.duty.to_owned())
                .or_default()
                .add(duty.status);
        }
    }
    tallies
}

impl Baseline {
    /// The verdicts of a run.
    pub fn from_results(results: &[CaseResult], client: &str) -> Baseline {
        Baseline {
            client: client.to_owned(),
            verdicts: results.iter().map(|r| (r.id.clone(), r.verdict)).collect(),
            timing_sensitive: BTreeMap::new(),
            retired: BTreeMap::new(),
            duties: tally_duties(results),
        }
    }

    /// This run's verdicts with what a previous baseline knew beyond verdicts (timing
    /// sensitivity and retired ids), for `--write-baseline` over an existing file.
    pub fn updated(previous: Option<&Baseline>, results: &[CaseResult], client: &str) -> Baseline {
        let mut baseline = Baseline::from_results(results, client);
        if let Some(previous) = previous {
            baseline.timing_sensitive = previous
                .timing_sensitive
                .iter()
                .filter(|(id, _)| baseline.verdicts.contains_key(*id))
                .map(|(id, t)| {
                    let mut t = t.clone();
                    if let Some(v) = baseline.verdicts.get(id) {
                        if !t.seen.contains(v) {
                            t.seen.push(*v);
                            t.seen.sort();
                        }
                    }
                    (id.clone(), t)
                })
                .collect();
            baseline.retired = previous.retired.clone();
        }
        baseline
    }

    /// Whether `verdict` is one the baseline expects for case `id`.
    fn expects(&self, id: &str, verdict: Verdict) -> bool {
        self.verdicts.get(id).copied().unwrap_or(Verdict::Pass) == verdict
            || self
                .timing_sensitive
                .get(id)
                .is_some_and(|t| t.seen.contains(&verdict))
    }

    pub fn load(path: &Path) -> Result<Baseline, BaselineError> {
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| BaselineError::Parse {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_owned(),
        })
    }

    /// Writes the baseline as JSON, ids in catalogue order.
    pub fn write(&self, path: &Path) -> Result<(), BaselineError> {
        let mut ids: Vec<&String> = self.verdicts.keys().collect();
        ids.sort_by(|a, b| compare_ids(a, b));
        let mut text = String::from("{\n");
        if !self.client.is_empty() {
            text.push_str(&format!(
                "  \"client\": {},\n",
                serde_json::Value::String(self.client.clone())
            ));
        }
        if !self.retired.is_empty() {
            text.push_str("  \"retired\": {");
            let mut ids: Vec<&String> = self.retired.keys().collect();
            ids.sort_by(|a, b| compare_ids(a, b));
            for (n, id) in ids.iter().enumerate() {
                text.push_str(if n == 0 { "\n" } else { ",\n" });
                text.push_str(&format!(
                    "    {}: {}",
                    serde_json::Value::String((*id).clone()),
                    serde_json::Value::String(self.retired[*id].clone())
                ));
            }
            text.push_str("\n  },\n");
        }
        if !self.timing_sensitive.is_empty() {
            text.push_str("  \"timing_sensitive\": {");
            let mut ids: Vec<&String> = self.timing_sensitive.keys().collect();
            ids.sort_by(|a, b| compare_ids(a, b));
            for (n, id) in ids.iter().enumerate() {
                let t = &self.timing_sensitive[*id];
                let seen: Vec<String> = t
                    .seen
                    .iter()
                    .map(|v| format!("\"{}\"", v.as_str()))
                    .collect();
                text.push_str(if n == 0 { "\n" } else { ",\n" });
                text.push_str(&format!(
                    "    {}: {{\"seen\": [{}], \"why\": {}}}",
                    serde_json::Value::String((*id).clone()),
                    seen.join(", "),
                    serde_json::Value::String(t.why.clone())
                ));
            }
            text.push_str("\n  },\n");
        }
        if !self.duties.is_empty() {
            text.push_str("  \"duties\": {");
            for (n, (duty, tally)) in self.duties.iter().enumerate() {
                text.push_str(if n == 0 { "\n" } else { ",\n" });
                text.push_str(&format!(
                    "    {}: {{\"met\": {}, \"missed\": {}}}",
                    serde_json::Value::String(duty.clone()),
                    tally.met,
                    tally.missed
                ));
            }
            text.push_str("\n  },\n");
        }
        text.push_str("  \"verdicts\": {");
        for (n, id) in ids.iter().enumerate() {
            let verdict = self.verdicts.get(*id).copied().unwrap_or(Verdict::Fail);
            text.push_str(if n == 0 { "\n" } else { ",\n" });
            text.push_str(&format!(
                "    {}: \"{}\"",
                serde_json::Value::String((*id).clone()),
                verdict.as_str()
            ));
        }
        text.push_str("\n  }\n}\n");
        std::fs::write(path, text).map_err(|source| BaselineError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// The verdict a run of case `id` is measured against: its `verdicts` entry, or for a
    /// timing-sensitive case the worst verdict seen (anything no worse than that is
    /// expected or an improvement).
    fn reference(&self, id: &str) -> Verdict {
        let recorded = self.verdicts.get(id).copied().unwrap_or(Verdict::Pass);
        self.timing_sensitive
            .get(id)
            .into_iter()
            .flat_map(|t| t.seen.iter().copied())
            .fold(
                recorded,
                |worst, v| {
                    if v.rank() > worst.rank() {
                        v
                    } else {
                        worst
                    }
                },
            )
    }

    /// Compares a run with the baseline.
    pub fn compare(&self, results: &[CaseResult]) -> Comparison {
        let mut comparison = Comparison::default();
        for result in results {
            let expected = self.reference(&result.id);
            let change = Change {
                id: result.id.clone(),
                expected,
                actual: result.verdict,
            };
            if self.expects(&result.id, result.verdict) {
                continue;
            }
            if result.verdict.rank() > expected.rank() {
                comparison.regressions.push(change);
            } else if result.verdict.rank() < expected.rank() {
                comparison.improvements.push(change);
            }
        }
        comparison.missing = self
            .verdicts
            .keys()
            .filter(|id| !results.iter().any(|r| &r.id == *id))
            .cloned()
            .collect();
        comparison
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, verdict: Verdict) -> CaseResult {
        let mut r = blank(id);
        r.verdict = verdict;
        r
    }

    fn blank(id: &str) -> CaseResult {
        CaseResult {
            id: id.to_owned(),
            title: String::new(),
            category: id.split('.').next().unwrap_or_default().to_owned(),
            requirement: String::new(),
            file: PathBuf::from(format!("{id}.json")),
            seed: 0,
            verdict: Verdict::Pass,
            error: None,
            unsupported: None,
            judgement: None,
            run: crate::runner::ClientRun::default(),
            elapsed_ms: 0.0,
            transcript: None,
            timeline: None,
        }
    }

    /// A baseline with one timing-sensitive case: `recorded` in `verdicts`, `seen` marked.
    fn sensitive(id: &str, recorded: Verdict, seen: &[Verdict]) -> Baseline {
        Baseline {
            verdicts: [(id.to_owned(), recorded)].into(),
            timing_sensitive: [(
                id.to_owned(),
                TimingSensitive {
                    seen: seen.to_vec(),
                    why: "races with the agent's delay".into(),
                },
            )]
            .into(),
            ..Baseline::default()
        }
    }

    #[test]
    fn only_a_worse_verdict_is_a_regression() {
        let baseline = Baseline {
            client: String::new(),
            verdicts: [
                ("sync.1".to_owned(), Verdict::Fail),
                ("sync.2".to_owned(), Verdict::Pass),
                ("sync.3".to_owned(), Verdict::NonStrict),
                ("sync.9".to_owned(), Verdict::Pass),
            ]
            .into(),
            ..Baseline::default()
        };
        let results = [
            result("sync.1", Verdict::Fail),
            result("sync.2", Verdict::NonStrict),
            result("sync.3", Verdict::Pass),
            result("sync.4", Verdict::Fail),
        ];
        let c = baseline.compare(&results);
        let ids = |changes: &[Change]| changes.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&c.regressions), ["sync.2", "sync.4"]);
        assert_eq!(ids(&c.improvements), ["sync.3"]);
        assert_eq!(c.missing, ["sync.9"]);
    }

    #[test]
    fn a_timing_sensitive_case_expects_every_verdict_seen_and_nothing_worse() {
        let baseline = sensitive(
            "timeout.4",
            Verdict::Pass,
            &[Verdict::Pass, Verdict::NonStrict],
        );
        let c = baseline.compare(&[result("timeout.4", Verdict::NonStrict)]);
        assert!(
            c.regressions.is_empty() && c.improvements.is_empty(),
            "{c:?}"
        );
        let c = baseline.compare(&[result("timeout.4", Verdict::Fail)]);
        assert_eq!(c.regressions.len(), 1);
    }

    #[test]
    fn a_timing_sensitive_case_better_than_every_verdict_seen_is_an_improvement() {
        let baseline = sensitive(
            "timeout.4",
            Verdict::Fail,
            &[Verdict::NonStrict, Verdict::Fail],
        );
        // Each verdict seen is expected, whichever the run that wrote the file got.
        for seen in [Verdict::NonStrict, Verdict::Fail] {
            assert_eq!(
                baseline.compare(&[result("timeout.4", seen)]),
                Comparison::default()
            );
        }
        let c = baseline.compare(&[result("timeout.4", Verdict::Pass)]);
        assert!(c.regressions.is_empty(), "{c:?}");
        assert_eq!(
            c.improvements,
            [Change {
                id: "timeout.4".into(),
                expected: Verdict::Fail,
                actual: Verdict::Pass,
            }]
        );
    }

    #[test]
    fn a_verdict_between_those_seen_is_no_regression() {
        // PASS in the file, FAIL seen too: a NON-STRICT is better than the worst seen.
        let baseline = sensitive("sync.1", Verdict::Pass, &[Verdict::Pass, Verdict::Fail]);
        let c = baseline.compare(&[result("sync.1", Verdict::NonStrict)]);
        assert!(c.regressions.is_empty(), "{c:?}");
        assert_eq!(c.improvements.len(), 1, "{c:?}");
    }

    #[test]
    fn rewriting_keeps_timing_notes_and_retired_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.json");
        let previous = Baseline {
            verdicts: [("sync.1".to_owned(), Verdict::Pass)].into(),
            timing_sensitive: [(
                "sync.1".to_owned(),
                TimingSensitive {
                    seen: vec![Verdict::Pass],
                    why: "a race".into(),
                },
            )]
            .into(),
            retired: [("hostile.5".to_owned(), "merged into hostile.19".to_owned())].into(),
            ..Baseline::default()
        };
        let updated = Baseline::updated(Some(&previous), &[result("sync.1", Verdict::Fail)], "x");
        assert_eq!(
            updated.timing_sensitive["sync.1"].seen,
            [Verdict::Pass, Verdict::Fail]
        );
        assert_eq!(updated.retired, previous.retired);
        updated.write(&path).expect("writes");
        assert_eq!(Baseline::load(&path).expect("loads"), updated);
    }

    #[test]
    fn a_written_baseline_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.json");
        let results = [
            result("sync.10", Verdict::Fail),
            result("sync.2", Verdict::Info),
        ];
        let baseline = Baseline::from_results(&results, "--client 'x'");
        baseline.write(&path).expect("writes");
        let text = std::fs::read_to_string(&path).expect("reads");
        assert!(text.find("sync.2").expect("2") < text.find("sync.10").expect("10"));
        assert_eq!(Baseline::load(&path).expect("loads"), baseline);
    }

    #[test]
    fn a_bad_baseline_names_the_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.json");
        std::fs::write(&path, "{\"verdicts\": {\"sync.1\": \"PASSED\"}}").expect("write");
        let e = Baseline::load(&path).expect_err("bad").to_string();
        assert!(e.contains("b.json:1:"), "{e}");
        assert!(e.contains("PASSED"), "{e}");
    }
}
