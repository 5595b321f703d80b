//! Every scenario file in `scenarios/` loads, and ids are unique.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qga_harness::scenario::Scenario;

fn scenario_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read scenarios/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            scenario_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json")
            && !path
                .components()
                .any(|c| c.as_os_str() == "baselines" || c.as_os_str() == "profiles")
        {
            out.push(path);
        }
    }
}

#[test]
fn every_scenario_file_loads_with_a_unique_id() {
    let mut files = Vec::new();
    scenario_files(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .as_path(),
        &mut files,
    );
    assert!(!files.is_empty());
    let mut ids = BTreeMap::new();
    for file in &files {
        let scenario = Scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
        if let Some(other) = ids.insert(scenario.id.clone(), file.clone()) {
            panic!(
                "{} and {} share the id {}",
                other.display(),
                file.display(),
                scenario.id
            );
        }
    }
}

#[test]
fn the_36_grounded_fault_scenarios_are_all_written() {
    let mut files = Vec::new();
    scenario_files(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .as_path(),
        &mut files,
    );
    let mut covered = std::collections::BTreeSet::new();
    for file in &files {
        let scenario = Scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
        for grounding in &scenario.grounding {
            if let Some(rest) = grounding.strip_prefix("protocol.md §9 #") {
                let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
                covered.insert(number.parse::<u32>().expect("scenario number"));
            }
        }
    }
    let missing: Vec<u32> = (1..=36).filter(|n| !covered.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "protocol.md §9 scenarios without a case: {missing:?}"
    );
}
