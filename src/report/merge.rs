//! `report merge`: the JSON reports of the slices of a partitioned run, made one report.
//! The slices must come from one run: the same client, seed and catalogue, each slice
//! once, no case twice.

use std::collections::HashMap;
use std::path::PathBuf;

use super::model::Report;

/// Reports that do not make one run.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge: give the JSON reports of every partition")]
    Nothing,
    #[error("{0}: not the report of a partitioned run (it has no `partition`); merge the reports written by `run --partition K/N --json FILE`")]
    NotPartitioned(PathBuf),
    #[error("{path} and {first} are reports of different runs: {what} differs ({theirs:?} against {ours:?}); merge reports of one run")]
    Mismatch {
        path: PathBuf,
        first: PathBuf,
        what: &'static str,
        ours: String,
        theirs: String,
    },
    #[error("{path} and {other} both hold partition {index}/{count}: overlapping partitions; give each partition once")]
    SamePartition {
        path: PathBuf,
        other: PathBuf,
        index: usize,
        count: usize,
    },
    #[error(
        "case {id} is in both {path} and {other}: overlapping partitions; give each partition once"
    )]
    Overlap {
        id: String,
        path: PathBuf,
        other: PathBuf,
    },
    #[error("{path}: case {id} is not in the catalogue the partitions were cut from")]
    Stranger { path: PathBuf, id: String },
    #[error("partition(s) {missing} of {count} missing: merge the reports of every partition")]
    Missing { missing: String, count: usize },
}

/// Merges the reports of every partition of one run, in catalogue order.
pub fn merge(reports: Vec<(PathBuf, Report)>) -> Result<Report, MergeError> {
    let Some((first_path, first)) = reports.first().cloned() else {
        return Err(MergeError::Nothing);
    };
    let first_part = first
        .partition
        .clone()
        .ok_or_else(|| MergeError::NotPartitioned(first_path.clone()))?;
    let mut merged = first.clone();
    merged.partition = None;
    merged.cases.clear();
    merged.merged_from.clear();
    let mut holder: HashMap<usize, PathBuf> = HashMap::new();
    let mut case_from: HashMap<String, PathBuf> = HashMap::new();
    let mut cases = Vec::new();
    for (path, report) in reports {
        let part = report
            .partition
            .clone()
            .ok_or_else(|| MergeError::NotPartitioned(path.clone()))?;
        let mismatch = |what: &'static str, ours: String, theirs: String| MergeError::Mismatch {
            path: path.clone(),
            first: first_path.clone(),
            what,
            ours,
            theirs,
        };
        if report.client != first.client {
            return Err(mismatch("the client", first.client.clone(), report.client));
        }
        if report.seed != first.seed {
            return Err(mismatch(
                "the seed",
                first.seed.to_string(),
                report.seed.to_string(),
            ));
        }
        if part.count != first_part.count {
            return Err(mismatch(
                "the partition count",
                first_part.count.to_string(),
                part.count.to_string(),
            ));
        }
        if part.catalogue != first_part.catalogue {
            return Err(mismatch(
                "the catalogue",
                format!("{} case(s)", first_part.catalogue.len()),
                format!("{} case(s)", part.catalogue.len()),
            ));
        }
        if part.slicing != first_part.slicing {
            return Err(mismatch(
                "the slicing",
                first_part.slicing.clone(),
                part.slicing.clone(),
            ));
        }
        if let Some(other) = holder.insert(part.index, path.clone()) {
            return Err(MergeError::SamePartition {
                path,
                other,
                index: part.index,
                count: part.count,
            });
        }
        for case in report.cases {
            if !first_part.catalogue.contains(&case.id) {
                return Err(MergeError::Stranger { path, id: case.id });
            }
            if let Some(other) = case_from.insert(case.id.clone(), path.clone()) {
                return Err(MergeError::Overlap {
                    id: case.id,
                    path,
                    other,
                });
            }
            cases.push(case);
        }
        merged.elapsed_ms = merged.elapsed_ms.max(report.elapsed_ms);
        merged.merged_from.push(part);
    }
    let missing: Vec<String> = (1..=first_part.count)
        .filter(|k| !holder.contains_key(k))
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing {
            missing: missing.join(", "),
            count: first_part.count,
        });
    }
    let order: HashMap<&str, usize> = first_part
        .catalogue
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    cases.sort_by_key(|c| order.get(c.id.as_str()).copied().unwrap_or(usize::MAX));
    merged.merged_from.sort_by_key(|p| p.index);
    merged.cases = cases;
    merged.count();
    Ok(merged)
}
