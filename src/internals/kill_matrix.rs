//! The kill matrix: every case against every mutant of the reference client (and the
//! reference itself, as the control). A mutant is killed by a case that FAILs it; a case
//! earns its place by killing at least one mutant, unless its file says why it cannot
//! (`info`, or `no_mutant`).
//!
//! The committed page (`scenarios/KILL-MATRIX.md`) comes from a full run; the page lists,
//! for each mutant, the cases that killed it, so a quick check can re-run only those.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Mutation, ReferenceInProcess};
use crate::runner::{
    self, Client, LoadedCase, MockLauncher, RunOptions, Verdict, DEFAULT_MAX_RSS_KIB,
};

/// One case's verdicts.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseRow {
    pub id: String,
    pub category: String,
    /// The reference client's verdict (the control: it must PASS).
    pub reference: Verdict,
    /// Each mutant's verdict.
    pub verdicts: BTreeMap<Mutation, Verdict>,
    /// Why the case kills no mutant, from its file (`info` or `no_mutant`).
    pub exempt: Option<String>,
}

impl CaseRow {
    /// The mutants this case FAILs.
    pub fn kills(&self) -> impl Iterator<Item = Mutation> + '_ {
        self.verdicts
            .iter()
            .filter(|(_, v)| **v == Verdict::Fail)
            .map(|(m, _)| *m)
    }
}

/// Cases × mutants.
#[derive(Clone, Debug, PartialEq)]
pub struct KillMatrix {
    pub mutants: Vec<Mutation>,
    pub cases: Vec<CaseRow>,
}

/// Runs `cases` against the reference client and each of `mutants`, `jobs` cases at a time.
pub async fn run(cases: &[LoadedCase], mutants: &[Mutation], jobs: usize, seed: u64) -> KillMatrix {
    let mut columns: Vec<(Option<Mutation>, Vec<Verdict>)> = Vec::new();
    for mutation in std::iter::once(None).chain(mutants.iter().copied().map(Some)) {
        let client = ReferenceInProcess { mutation };
        let options = RunOptions {
            client: Client::InProcess(Arc::new(client)),
            launcher: Arc::new(MockLauncher::default()),
            jobs,
            seed,
            max_rss_kib: DEFAULT_MAX_RSS_KIB,
            artifacts: None,
            time_scale: 1,
        };
        let results = runner::run_all(cases.to_vec(), &options, |_, _| {}).await;
        columns.push((mutation, results.iter().map(|r| r.verdict).collect()));
    }
    let rows = cases
        .iter()
        .enumerate()
        .map(|(i, case)| CaseRow {
            id: case.scenario.id.clone(),
            category: case.scenario.category().to_owned(),
            reference: columns[0].1[i],
            verdicts: columns[1..]
                .iter()
                .filter_map(|(m, v)| m.map(|m| (m, v[i])))
                .collect(),
            exempt: case
                .scenario
                .info
                .clone()
                .or_else(|| case.scenario.no_mutant.clone()),
        })
        .collect();
    KillMatrix {
        mutants: mutants.to_vec(),
        cases: rows,
    }
}

/// What is wrong with a matrix: a mutant no case of its category kills, a case that kills
/// nothing and does not say why, a reference verdict other than PASS.
pub fn problems(matrix: &KillMatrix) -> Vec<String> {
    let mut problems = Vec::new();
    for row in &matrix.cases {
        if row.reference != Verdict::Pass && row.exempt.is_none() {
            problems.push(format!(
                "{}: the reference client is {}, not PASS",
                row.id,
                row.reference.as_str()
            ));
        }
        if row.kills().next().is_none() && row.exempt.is_none() {
            problems.push(format!(
                "{}: kills no mutant and its file does not say why (no_mutant)",
                row.id
            ));
        }
    }
    for &mutant in &matrix.mutants {
        let killed_in_category = matrix.cases.iter().any(|row| {
            row.category == mutant.category() && row.verdicts.get(&mutant) == Some(&Verdict::Fail)
        });
        if !killed_in_category {
            problems.push(format!(
                "mutant {} ({}) is killed by no {} case",
                mutant.name(),
                mutant.describe(),
                mutant.category()
            ));
        }
    }
    problems
}

/// The one-letter cell of a verdict.
fn cell(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Fail => "**X**",
        Verdict::Pass => ".",
        Verdict::NonStrict => "n",
        Verdict::Info => "i",
        Verdict::Unsupported => "u",
    }
}

/// The command that regenerates the page.
pub const REGENERATE: &str =
    "QGA_HARNESS_WRITE_KILL_MATRIX=1 cargo test --release --test kill_matrix -- --ignored --exact the_full_kill_matrix";

/// The page: the mutants with the cases that kill them, then the matrix.
pub fn render_markdown(matrix: &KillMatrix) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "# Kill matrix\n");
    let _ = writeln!(
        out,
        "Generated by a full run of every case against the reference client and each mutant of it \
         (the reference client with one deliberate bug). Regenerate it with:\n\n```\n{REGENERATE}\n```\n"
    );
    let _ = writeln!(
        out,
        "A mutant is *killed* by a case that FAILs it. Cells: **X** FAIL, `.` PASS, `n` NON-STRICT, \
         `i` INFO, `u` UNSUPPORTED. The `ref` column is the reference client itself.\n"
    );
    let _ = writeln!(out, "## Mutants\n");
    let _ = writeln!(out, "| mutant | category | bug | killed by |");
    let _ = writeln!(out, "|---|---|---|---|");
    for &mutant in &matrix.mutants {
        let killers: Vec<&str> = matrix
            .cases
            .iter()
            .filter(|row| row.verdicts.get(&mutant) == Some(&Verdict::Fail))
            .map(|row| row.id.as_str())
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            mutant.name(),
            mutant.category(),
            mutant.describe(),
            if killers.is_empty() {
                "(none)".to_owned()
            } else {
                killers.join(", ")
            }
        );
    }
    let _ = writeln!(out, "\n## Cases × mutants\n");
    let mut header = "| case | ref |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for (i, _) in matrix.mutants.iter().enumerate() {
        let _ = write!(header, " m{} |", i + 1);
        rule.push_str("---|");
    }
    header.push_str(" kills |");
    rule.push_str("---|");
    let _ = writeln!(out, "{header}\n{rule}");
    for row in &matrix.cases {
        let mut line = format!("| {} | {} |", row.id, cell(row.reference));
        for mutant in &matrix.mutants {
            let verdict = row.verdicts.get(mutant).copied().unwrap_or(Verdict::Pass);
            let _ = write!(line, " {} |", cell(verdict));
        }
        let kills = row.kills().count();
        let note = match (&row.exempt, kills) {
            (Some(_), 0) => "0 (informational)".to_owned(),
            _ => kills.to_string(),
        };
        let _ = writeln!(line, " {note} |");
        out.push_str(&line);
    }
    let _ = writeln!(out, "\nColumns: {}.", {
        let names: Vec<String> = matrix
            .mutants
            .iter()
            .enumerate()
            .map(|(i, m)| format!("m{} `{}`", i + 1, m.name()))
            .collect();
        names.join(", ")
    });
    out
}

/// The case ids of the page's matrix rows, and for each mutant the cases the page says
/// kill it: what a quick check re-runs.
pub fn parse_page(page: &str) -> (Vec<String>, BTreeMap<Mutation, BTreeSet<String>>) {
    let mut killers = BTreeMap::new();
    let mut ids = Vec::new();
    let mut in_matrix = false;
    for line in page.lines() {
        if line.starts_with("## Cases") {
            in_matrix = true;
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if !line.starts_with("| ") || cells.len() < 2 {
            continue;
        }
        if in_matrix {
            if cells[0] != "case" {
                ids.push(cells[0].to_owned());
            }
        } else if let Some(mutant) = Mutation::parse(cells[0].trim_matches('`')) {
            let cases = cells[3]
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && *c != "(none)")
                .map(str::to_owned)
                .collect();
            killers.insert(mutant, cases);
        }
    }
    (ids, killers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KillMatrix {
        let row = |id: &str, category: &str, verdicts: &[Verdict]| CaseRow {
            id: id.to_owned(),
            category: category.to_owned(),
            reference: Verdict::Pass,
            verdicts: [Mutation::NoFlush, Mutation::FirstLine]
                .into_iter()
                .zip(verdicts.iter().copied())
                .collect(),
            exempt: None,
        };
        KillMatrix {
            mutants: vec![Mutation::NoFlush, Mutation::FirstLine],
            cases: vec![
                row("sync.1", "sync", &[Verdict::Fail, Verdict::Pass]),
                row("hostile.1", "hostile", &[Verdict::Fail, Verdict::Fail]),
                row("hostile.2", "hostile", &[Verdict::Pass, Verdict::NonStrict]),
            ],
        }
    }

    #[test]
    fn the_page_parses_back_to_its_rows_and_killers() {
        let page = render_markdown(&sample());
        let (ids, killers) = parse_page(&page);
        assert_eq!(ids, ["sync.1", "hostile.1", "hostile.2"]);
        assert_eq!(
            killers[&Mutation::NoFlush],
            BTreeSet::from(["sync.1".to_owned(), "hostile.1".to_owned()])
        );
        assert_eq!(
            killers[&Mutation::FirstLine],
            BTreeSet::from(["hostile.1".to_owned()])
        );
    }

    #[test]
    fn names_a_case_that_kills_nothing_and_a_mutant_its_category_misses() {
        let problems = problems(&sample());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("hostile.2: kills no mutant"),
            "{problems:?}"
        );
        let mut only_sync_kills = sample();
        only_sync_kills.cases[1]
            .verdicts
            .insert(Mutation::FirstLine, Verdict::Pass);
        only_sync_kills.cases[0]
            .verdicts
            .insert(Mutation::FirstLine, Verdict::Fail);
        let problems = super::problems(&only_sync_kills);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("first-line") && p.contains("no hostile case")),
            "{problems:?}"
        );
    }
}
