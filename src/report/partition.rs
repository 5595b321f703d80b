//! Cutting a catalogue into N deterministic slices for a CI matrix of N machines
//! (`run --partition K/N`): round robin over the cases in catalogue order, as
//! cargo-nextest's `count:K/N`, or balanced by the case durations of an earlier report.

use std::str::FromStr;

use super::model::{PartitionInfo, Report};
use crate::runner::LoadedCase;

/// Slice `index` of `count` (1-based), as written `K/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub index: usize,
    pub count: usize,
}

/// A `--partition` that cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("--partition {0:?}: expected K/N with 1 <= K <= N, for example 2/4")]
    Syntax(String),
}

impl FromStr for Partition {
    type Err = PartitionError;

    fn from_str(text: &str) -> Result<Partition, PartitionError> {
        let bad = || PartitionError::Syntax(text.to_owned());
        let text = text.strip_prefix("count:").unwrap_or(text);
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = k.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Partition { index, count })
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The cases of slice `part`, in catalogue order, and what the report says about it.
/// With `durations`, the slices are balanced by the cases' elapsed times in that report
/// (longest first, each to the slice with the least time so far; a case the report does
/// not know counts as the mean of those it does); without, round robin.
pub fn partition(
    cases: Vec<LoadedCase>,
    part: Partition,
    durations: Option<&Report>,
) -> (Vec<LoadedCase>, PartitionInfo) {
    let catalogue: Vec<String> = cases.iter().map(|c| c.scenario.id.clone()).collect();
    let slices = match durations {
        Some(report) => balanced(&catalogue, part.count, report),
        None => (0..catalogue.len()).map(|i| i % part.count).collect(),
    };
    let info = PartitionInfo {
        index: part.index,
        count: part.count,
        total_cases: catalogue.len(),
        catalogue,
        slicing: if durations.is_some() {
            "duration"
        } else {
            "count"
        }
        .to_owned(),
    };
    let chosen = cases
        .into_iter()
        .zip(slices)
        .filter(|(_, slice)| *slice == part.index - 1)
        .map(|(case, _)| case)
        .collect();
    (chosen, info)
}

/// The slice (0-based) of each case, balancing the known durations.
fn balanced(ids: &[String], count: usize, report: &Report) -> Vec<usize> {
    let known: std::collections::HashMap<&str, f64> = report
        .cases
        .iter()
        .map(|c| (c.id.as_str(), c.elapsed_ms.max(0.0)))
        .collect();
    let mean = if known.is_empty() {
        1.0
    } else {
        known.values().sum::<f64>() / known.len() as f64
    };
    let mut order: Vec<(usize, f64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (i, known.get(id.as_str()).copied().unwrap_or(mean)))
        .collect();
    // Longest first; equal durations in catalogue order, so every machine agrees.
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut load = vec![0.0f64; count];
    let mut slices = vec![0; ids.len()];
    for (i, ms) in order {
        let lightest = (0..count)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        load[lightest] += ms;
        slices[i] = lightest;
    }
    slices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use std::path::{Path, PathBuf};

    fn cases(n: usize) -> Vec<LoadedCase> {
        (1..=n)
            .map(|i| {
                let text = serde_json::json!({
                    "id": format!("c.{i}"), "title": "t", "requirement": "r",
                    "steps": [{"execute": "guest-ping", "timeout_ms": 100, "expect": [{"return": {}}]}]
                })
                .to_string();
                LoadedCase {
                    path: PathBuf::from(format!("c{i}.json")),
                    scenario: Scenario::parse(&text, Path::new("x.json")).expect("valid"),
                }
            })
            .collect()
    }

    #[rstest::rstest]
    #[case("1/1", Some((1, 1)))]
    #[case("2/4", Some((2, 4)))]
    #[case("count:3/3", Some((3, 3)))]
    #[case("0/4", None)]
    #[case("5/4", None)]
    #[case("1/0", None)]
    #[case("a/b", None)]
    #[case("2", None)]
    fn parses_k_of_n(#[case] text: &str, #[case] expected: Option<(usize, usize)>) {
        let parsed = text.parse::<Partition>().ok().map(|p| (p.index, p.count));
        assert_eq!(parsed, expected);
    }

    #[test]
    fn every_case_in_exactly_one_slice_for_each_n() {
        for n in 1..=4 {
            for durations in [false, true] {
                let mut report = None;
                if durations {
                    let mut r: Report = serde_json::from_value(serde_json::json!({
                        "format": 2, "tool": "qga-harness", "version": "0", "client": "c",
                        "seed": 1, "jobs": 1, "elapsed_ms": 1.0, "summary": {}, "cases": []
                    }))
                    .expect("report");
                    r.cases.clear();
                    report = Some(r);
                }
                let mut seen = Vec::new();
                for k in 1..=n {
                    let part = Partition { index: k, count: n };
                    let (chosen, info) = partition(cases(11), part, report.as_ref());
                    assert_eq!(info.total_cases, 11);
                    seen.extend(chosen.into_iter().map(|c| c.scenario.id));
                }
                seen.sort();
                let mut all: Vec<String> = cases(11).into_iter().map(|c| c.scenario.id).collect();
                all.sort();
                assert_eq!(seen, all, "n = {n}, durations {durations}");
            }
        }
    }
}
