//! The kill matrix: mutants of the reference client (one deliberate bug each) against the
//! catalogue. The quick test re-runs, for each mutant, the cases the committed page says
//! kill it; the full run (ignored by default, minutes long) regenerates the page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use qga_harness::internals::kill_matrix::{self, KillMatrix};
use qga_harness::internals::Mutation;
use qga_harness::runner::{self, LoadedCase, Verdict};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn page_path() -> PathBuf {
    root().join("scenarios/KILL-MATRIX.md")
}

fn catalogue() -> Vec<LoadedCase> {
    let files = runner::scenario_files(&[root().join("scenarios")]).expect("scenario files");
    runner::load_cases(&files).expect("the catalogue loads")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
#[ignore = "the full matrix takes minutes; run it to regenerate scenarios/KILL-MATRIX.md"]
fn the_full_kill_matrix() {
    let cases = catalogue();
    let matrix = runtime().block_on(kill_matrix::run(&cases, &Mutation::ALL, 2, 1));
    let page = kill_matrix::render_markdown(&matrix);
    if std::env::var_os("QGA_HARNESS_WRITE_KILL_MATRIX").is_some() {
        std::fs::write(page_path(), &page).expect("write the page");
    }
    let problems = kill_matrix::problems(&matrix);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let committed = std::fs::read_to_string(page_path()).unwrap_or_default();
    assert!(
        committed == page,
        "scenarios/KILL-MATRIX.md differs from this run: regenerate it with `{}`",
        kill_matrix::REGENERATE
    );
}

/// For each mutant, the first case of its category that the page says kills it.
fn proving_pairs(page: &str) -> Vec<(Mutation, String)> {
    let (_, killers) = kill_matrix::parse_page(page);
    Mutation::ALL
        .iter()
        .map(|&mutant| {
            let cases = killers.get(&mutant).cloned().unwrap_or_default();
            let case = cases
                .iter()
                .find(|id| id.split('.').next() == Some(mutant.category()))
                .unwrap_or_else(|| {
                    panic!(
                        "the page names no {} case that kills {}: regenerate it with `{}`",
                        mutant.category(),
                        mutant.name(),
                        kill_matrix::REGENERATE
                    )
                });
            (mutant, case.clone())
        })
        .collect()
}

#[test]
fn the_page_lists_the_current_catalogue_and_every_mutant() {
    let page = std::fs::read_to_string(page_path()).expect("scenarios/KILL-MATRIX.md");
    let (ids, killers) = kill_matrix::parse_page(&page);
    let current: Vec<String> = catalogue().iter().map(|c| c.scenario.id.clone()).collect();
    assert_eq!(
        ids,
        current,
        "the page's cases are not the catalogue's: regenerate it with `{}`",
        kill_matrix::REGENERATE
    );
    let listed: BTreeSet<_> = killers.keys().copied().collect();
    assert_eq!(listed, Mutation::ALL.into_iter().collect());
    // Every mutant is killed by a case of its own category (the page's claim, proven below).
    proving_pairs(&page);
}

#[test]
fn every_mutant_dies_where_the_page_says_and_the_reference_passes_there() {
    let page = std::fs::read_to_string(page_path()).expect("scenarios/KILL-MATRIX.md");
    let pairs = proving_pairs(&page);
    let cases = catalogue();
    let rt = runtime();
    for (mutant, id) in &pairs {
        let case: Vec<LoadedCase> = cases
            .iter()
            .filter(|c| &c.scenario.id == id)
            .cloned()
            .collect();
        let matrix: KillMatrix = rt.block_on(kill_matrix::run(&case, &[*mutant], 2, 1));
        let row = &matrix.cases[0];
        assert_eq!(row.reference, Verdict::Pass, "the reference client on {id}");
        assert_eq!(
            row.verdicts[mutant],
            Verdict::Fail,
            "mutant {} ({}) is not killed by {id}",
            mutant.name(),
            mutant.describe()
        );
    }
}

/// Which cases of another catalogue kill some mutants: run it on an earlier catalogue
/// (`git archive <commit> scenarios | tar -x -C DIR`) to show that it lets a mutant live.
/// `QGA_HARNESS_KILL_MATRIX_DIR=DIR/scenarios QGA_HARNESS_KILL_MATRIX_MUTANTS=name,name
/// cargo test --release --test kill_matrix -- --ignored --exact
/// another_catalogue_against_some_mutants --nocapture`
#[test]
#[ignore = "a measurement tool: it needs a catalogue directory and mutant names"]
fn another_catalogue_against_some_mutants() {
    let Some(dir) = std::env::var_os("QGA_HARNESS_KILL_MATRIX_DIR") else {
        panic!("set QGA_HARNESS_KILL_MATRIX_DIR to a catalogue directory");
    };
    let names = std::env::var("QGA_HARNESS_KILL_MATRIX_MUTANTS").unwrap_or_default();
    let mutants: Vec<Mutation> = names
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| Mutation::parse(n).unwrap_or_else(|| panic!("no mutant named '{n}'")))
        .collect();
    let files = runner::scenario_files(&[PathBuf::from(dir)]).expect("scenario files");
    let cases = runner::load_cases(&files).expect("the catalogue loads");
    let matrix = runtime().block_on(kill_matrix::run(&cases, &mutants, 2, 1));
    for mutant in &mutants {
        let killers: Vec<&str> = matrix
            .cases
            .iter()
            .filter(|row| row.verdicts[mutant] == Verdict::Fail)
            .map(|row| row.id.as_str())
            .collect();
        println!(
            "{} ({} cases): killed by [{}]",
            mutant.name(),
            cases.len(),
            killers.join(", ")
        );
    }
    let failing: Vec<&str> = matrix
        .cases
        .iter()
        .filter(|row| row.reference != Verdict::Pass)
        .map(|row| row.id.as_str())
        .collect();
    println!(
        "the reference client does not PASS: [{}]",
        failing.join(", ")
    );
}
