//! Finding and loading scenario files: every `*.json` under the given paths, recursively,
//! in a stable order; every file loaded strictly; ids unique; `--filter` globs on ids.

use std::path::{Path, PathBuf};

use crate::fault::glob_match;
use crate::scenario::{Scenario, ScenarioError};

/// A scenario and the file it came from.
#[derive(Clone, Debug)]
pub struct LoadedCase {
    pub path: PathBuf,
    pub scenario: Scenario,
}

/// Why the cases could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("{}: no such file or directory; give scenario files or directories (the default is scenarios/)", .0.display())]
    Missing(PathBuf),
    #[error("{}: cannot read the directory: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{}: case id '{id}' is already used by {}; ids must be unique", second.display(), first.display())]
    DuplicateId {
        id: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// Directories under a scenario directory that hold other JSON files.
const SKIPPED_DIRS: &[&str] = &["baselines", "profiles"];

/// Every scenario file under `paths` (files as given, directories searched recursively for
/// `*.json`), sorted by path within each directory.
pub fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DiscoverError> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|_| DiscoverError::Missing(path.clone()))?;
        if metadata.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), DiscoverError> {
    let read_dir = |path: &Path| {
        std::fs::read_dir(path).map_err(|source| DiscoverError::ReadDir {
            path: path.to_owned(),
            source,
        })
    };
    let mut entries: Vec<PathBuf> = read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            // Baselines and guest profiles live beside the cases but are not cases.
            let skipped = entry
                .file_name()
                .is_some_and(|n| SKIPPED_DIRS.iter().any(|s| n == *s));
            if !skipped {
                walk(&entry, files)?;
            }
        } else if entry.extension().is_some_and(|e| e == "json") {
            files.push(entry);
        }
    }
    Ok(())
}

/// Loads every file; the first bad file stops the load with its located error.
pub fn load_cases(files: &[PathBuf]) -> Result<Vec<LoadedCase>, DiscoverError> {
    let mut cases: Vec<LoadedCase> = Vec::with_capacity(files.len());
    for path in files {
        let scenario = Scenario::load(path)?;
        if let Some(first) = cases.iter().find(|c| c.scenario.id == scenario.id) {
            return Err(DiscoverError::DuplicateId {
                id: scenario.id,
                first: first.path.clone(),
                second: path.clone(),
            });
        }
        cases.push(LoadedCase {
            path: path.clone(),
            scenario,
        });
    }
    cases.sort_by(|a, b| compare_ids(&a.scenario.id, &b.scenario.id));
    Ok(cases)
}

/// Orders ids by category, then numerically part by part (`sync.2` before `sync.10`).
pub fn compare_ids(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |id: &str| -> (String, Vec<u64>) {
        let mut parts = id.split('.');
        let category = parts.next().unwrap_or_default().to_owned();
        (
            category,
            parts.map(|p| p.parse().unwrap_or(u64::MAX)).collect(),
        )
    };
    key(a).cmp(&key(b))
}

/// Keeps the cases whose id matches any of the globs (all when there are none).
pub fn filter_cases(cases: Vec<LoadedCase>, globs: &[String]) -> Vec<LoadedCase> {
    if globs.is_empty() {
        return cases;
    }
    cases
        .into_iter()
        .filter(|c| globs.iter().any(|g| glob_match(g, &c.scenario.id)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASE: &str = r#"{"id": "ID", "title": "t", "requirement": "r",
        "steps": [{"execute": "guest-ping", "timeout_ms": 100, "expect": [{"return": {}}]}]}"#;

    fn write(dir: &Path, name: &str, id: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("dir");
        }
        std::fs::write(&path, CASE.replace("ID", id)).expect("write");
        path
    }

    #[test]
    fn directories_are_searched_recursively_and_ids_sorted_numerically() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "b/sync-10.json", "sync.10");
        write(dir.path(), "a/sync-2.json", "sync.2");
        write(dir.path(), "hostile-1.json", "hostile.1");
        std::fs::write(dir.path().join("notes.txt"), "not a case").expect("write");
        std::fs::create_dir_all(dir.path().join("baselines")).expect("dir");
        std::fs::write(dir.path().join("baselines/naive.json"), "{}").expect("write");
        let files = scenario_files(&[dir.path().to_owned()]).expect("files");
        assert_eq!(files.len(), 3);
        let cases = load_cases(&files).expect("loads");
        let ids: Vec<&str> = cases.iter().map(|c| c.scenario.id.as_str()).collect();
        assert_eq!(ids, ["hostile.1", "sync.2", "sync.10"]);
        let only = filter_cases(cases, &["sync.*".to_owned()]);
        assert_eq!(only.len(), 2);
    }

    #[test]
    fn a_duplicate_id_names_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(dir.path(), "a.json", "sync.1");
        let b = write(dir.path(), "b.json", "sync.1");
        let e = load_cases(&[a, b]).expect_err("duplicate").to_string();
        assert!(e.contains("a.json") && e.contains("b.json"), "{e}");
    }

    #[test]
    fn a_missing_path_says_what_to_give() {
        let e = scenario_files(&[PathBuf::from("/nonexistent/scenarios")])
            .expect_err("missing")
            .to_string();
        assert!(e.contains("/nonexistent/scenarios"), "{e}");
    }
}
