//! The compatibility matrix: the verdicts of several clients side by side, and the duties
//! each meets. One typed model ([`CompatibilityMatrix`]) read from baselines
//! (`scenarios/baselines/*.json`) or JSON reports, with two renderings: Markdown (the
//! README's tables and `qga-harness report matrix`) and the HTML compatibility page
//! ([`CompatibilityMatrix::html`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::baseline::{Baseline, BaselineError, DutyTally};
use super::model::Report;
use crate::runner::{compare_ids, Verdict};

/// One client's column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientColumn {
    /// A short name: the input file's stem (`socat`, `qemu-qmp`).
    pub name: String,
    /// What the tables call the client.
    pub label: String,
    /// The verdict of each case the client ran.
    pub verdicts: BTreeMap<String, Verdict>,
    /// Case titles, when the input was a report.
    pub titles: BTreeMap<String, String>,
    /// The HTML report of the client's run (`NAME.html` beside the input), when there is one.
    pub page: Option<PathBuf>,
    /// Per duty: in how many cases it was met and missed.
    pub duties: BTreeMap<String, DutyTally>,
    /// Cases whose verdict for this client depends on timing.
    pub timing_sensitive: BTreeSet<String>,
}

impl ClientColumn {
    /// Reads a baseline (`run --write-baseline`) or a JSON report (`run --json`).
    pub fn load(path: &Path) -> Result<ClientColumn, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let name = path
            .file_stem()
            .map_or_else(|| "client".to_owned(), |s| s.to_string_lossy().into_owned());
        let page = path.with_extension("html");
        let mut column = ClientColumn {
            label: name.clone(),
            name,
            verdicts: BTreeMap::new(),
            titles: BTreeMap::new(),
            page: page.is_file().then_some(page),
            duties: BTreeMap::new(),
            timing_sensitive: BTreeSet::new(),
        };
        let is_report = serde_json::from_str::<serde_json::Value>(&text)
            .map(|v| v.get("cases").is_some())
            .unwrap_or(false);
        if is_report {
            let report = Report::parse(&text, path).map_err(|e| e.to_string())?;
            for case in report.cases {
                for duty in &case.duties {
                    column
                        .duties
                        .entry(duty.duty.clone())
                        .or_default()
                        .add(duty.status);
                }
                column.verdicts.insert(case.id.clone(), case.verdict);
                column.titles.insert(case.id, case.title);
            }
        } else {
            column.absorb(Baseline::load(path).map_err(|e| e.to_string())?);
        }
        Ok(column)
    }

    fn absorb(&mut self, baseline: Baseline) {
        self.verdicts = baseline.verdicts;
        self.duties = baseline.duties;
        self.timing_sensitive = baseline.timing_sensitive.into_keys().collect();
    }

    fn count(&self, cases: &[String], verdict: Verdict) -> usize {
        cases
            .iter()
            .filter(|id| self.verdicts.get(*id) == Some(&verdict))
            .count()
    }
}

/// Clients side by side over one list of cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompatibilityMatrix {
    /// The rows: case ids in catalogue order.
    pub cases: Vec<String>,
    pub columns: Vec<ClientColumn>,
}

/// A client whose baseline feeds a column: the file's stem and the tables' label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaselineClient {
    pub file_stem: String,
    pub label: String,
    /// The baseline covers only the cases its client runs (a slow client run on a few
    /// categories): a case it does not list was not run, rather than a new case taken to
    /// pass until the baseline is rewritten.
    pub subset: bool,
}

/// The clients of the README's matrix, in its order (the reference client first).
pub fn readme_clients() -> Vec<BaselineClient> {
    [
        ("reference", "reference client (`qga-harness session`)", false),
        (
            "qemu-qmp",
            "qemu.qmp 0.0.6, driven as QEMU's qemu-ga-client drives it",
            false,
        ),
        (
            "qapi-rs",
            "qapi 0.15 (Rust, tokio API), driven as its example drives it",
            false,
        ),
        (
            "socat",
            "naive socat one-liner (`clients/socat/oneshot.sh`)",
            false,
        ),
        (
            "libvirt",
            "libvirt 9.0 (`run --libvirt`: `virsh qemu-agent-command` through a real TCG guest; the sync, timeout and hostile cases only)",
            true,
        ),
    ]
    .into_iter()
    .map(|(file_stem, label, subset)| BaselineClient {
        file_stem: file_stem.to_owned(),
        label: label.to_owned(),
        subset,
    })
    .collect()
}

/// The verdict columns, in the tables' order.
pub const COLUMNS: [Verdict; 5] = [
    Verdict::Pass,
    Verdict::NonStrict,
    Verdict::Fail,
    Verdict::Unsupported,
    Verdict::Info,
];

impl CompatibilityMatrix {
    /// The matrix over the catalogue's case ids, one column per client's baseline in
    /// `baselines_dir`. A case a baseline does not list counts as PASS, as the baseline
    /// comparison reads it; retired ids are not rows.
    pub fn from_baselines(
        catalogue: &[String],
        baselines_dir: &Path,
        clients: &[BaselineClient],
    ) -> Result<CompatibilityMatrix, BaselineError> {
        let mut columns = Vec::new();
        for client in clients {
            let path = baselines_dir.join(format!("{}.json", client.file_stem));
            let baseline = Baseline::load(&path)?;
            let mut column = ClientColumn {
                name: client.file_stem.clone(),
                label: client.label.clone(),
                verdicts: BTreeMap::new(),
                titles: BTreeMap::new(),
                page: None,
                duties: BTreeMap::new(),
                timing_sensitive: BTreeSet::new(),
            };
            column.absorb(baseline);
            if !client.subset {
                for id in catalogue {
                    column.verdicts.entry(id.clone()).or_insert(Verdict::Pass);
                }
            }
            column.verdicts.retain(|id, _| catalogue.contains(id));
            column.timing_sensitive.retain(|id| catalogue.contains(id));
            columns.push(column);
        }
        Ok(CompatibilityMatrix {
            cases: catalogue.to_vec(),
            columns,
        })
    }

    /// The matrix of clients given as baseline or report files; the rows are every case
    /// any of them ran, in catalogue order.
    pub fn from_files(paths: &[PathBuf]) -> Result<CompatibilityMatrix, String> {
        let columns = paths
            .iter()
            .map(|path| ClientColumn::load(path))
            .collect::<Result<Vec<_>, _>>()?;
        let mut cases: Vec<String> = columns
            .iter()
            .flat_map(|c| c.verdicts.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        cases.sort_by(|a, b| compare_ids(a, b));
        Ok(CompatibilityMatrix { cases, columns })
    }

    /// The verdict columns that any client uses (PASS, NON-STRICT and FAIL always).
    pub fn verdict_columns(&self) -> Vec<Verdict> {
        COLUMNS
            .into_iter()
            .filter(|&v| {
                matches!(v, Verdict::Pass | Verdict::NonStrict | Verdict::Fail)
                    || self.columns.iter().any(|c| c.count(&self.cases, v) > 0)
            })
            .collect()
    }

    /// How many of the cases `column` got `verdict` for.
    pub fn count(&self, column: &ClientColumn, verdict: Verdict) -> usize {
        column.count(&self.cases, verdict)
    }

    /// Every duty any client was judged on, in name order.
    pub fn duties(&self) -> BTreeSet<&str> {
        self.columns
            .iter()
            .flat_map(|c| c.duties.keys().map(String::as_str))
            .collect()
    }

    /// The cases by category (categories in name order, cases in catalogue order).
    pub fn by_category(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for id in &self.cases {
            let category = id.split_once('.').map_or(id.as_str(), |(c, _)| c);
            out.entry(category).or_default().push(id);
        }
        out
    }

    /// The tables as Markdown: verdict counts per client, then the duties each meets.
    pub fn markdown(&self) -> String {
        let columns = self.verdict_columns();
        let mut out = String::from("| client |");
        for v in &columns {
            let _ = write!(out, " {} |", v.as_str());
        }
        out.push_str(" timing-sensitive |\n|---|");
        for _ in &columns {
            out.push_str("---:|");
        }
        out.push_str("---:|\n");
        for column in &self.columns {
            let _ = write!(out, "| {} |", column.label);
            for &v in &columns {
                let _ = write!(out, " {} |", self.count(column, v));
            }
            let _ = writeln!(out, " {} |", column.timing_sensitive.len());
        }
        let duties = self.duties();
        if !duties.is_empty() {
            out.push_str("\nDuties met, in the cases where each applies (met / cases judged on it):\n\n| duty |");
            for column in &self.columns {
                let _ = write!(out, " {} |", column.name);
            }
            out.push_str("\n|---|");
            for _ in &self.columns {
                out.push_str("---|");
            }
            out.push('\n');
            for duty in duties {
                let _ = write!(out, "| `{duty}` |");
                for column in &self.columns {
                    let _ = write!(out, " {} |", duty_cell(column.duties.get(duty)).1);
                }
                out.push('\n');
            }
        }
        out
    }
}

/// A duty's cell: its kind (`yes`, `no`, `partly`, or `na` where it never applied, for
/// styling) and its text: `yes (n)`, `no (0 / n)`, `partly (m / n)` or `-`.
pub fn duty_cell(tally: Option<&DutyTally>) -> (&'static str, String) {
    match tally {
        None
        | Some(DutyTally {
            met: 0, missed: 0, ..
        }) => ("na", "-".to_owned()),
        Some(t) if t.missed == 0 => ("yes", format!("yes ({})", t.met)),
        Some(t) if t.met == 0 => ("no", format!("no (0 / {})", t.missed)),
        Some(t) => (
            "partly",
            format!("partly ({} / {})", t.met, t.met + t.missed),
        ),
    }
}

/// The README's generated block: the text between these markers is replaced.
pub const README_BEGIN: &str = "<!-- compatibility-matrix: generated from scenarios/baselines by tests/catalogue.rs; do not edit -->";
pub const README_END: &str = "<!-- end of compatibility-matrix -->";

/// `readme` with its generated block replaced by `table`; `None` when the markers are
/// missing.
pub fn splice_readme(readme: &str, table: &str) -> Option<String> {
    let begin = readme.find(README_BEGIN)? + README_BEGIN.len();
    let end = readme[begin..].find(README_END)? + begin;
    Some(format!("{}\n{}{}", &readme[..begin], table, &readme[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_baseline_over_the_current_catalogue_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("x.json"),
            r#"{"retired": {"sync.9": "merged into sync.1"},
                "timing_sensitive": {"sync.2": {"seen": ["PASS", "FAIL"], "why": "a race"}},
                "verdicts": {"sync.1": "FAIL", "sync.2": "PASS", "sync.3": "INFO", "sync.9": "FAIL"},
                "duties": {"sync-first": {"met": 2, "missed": 1}, "bounded-memory": {"met": 3, "missed": 0}}}"#,
        )
        .expect("write");
        let catalogue = ["sync.1", "sync.2", "sync.3", "sync.4"].map(String::from);
        let clients = [BaselineClient {
            file_stem: "x".into(),
            label: "x client".into(),
            subset: false,
        }];
        let m =
            CompatibilityMatrix::from_baselines(&catalogue, dir.path(), &clients).expect("reads");
        assert_eq!(m.cases.len(), 4);
        let x = &m.columns[0];
        // sync.4 is not in the baseline: PASS, as the comparison reads it; sync.9 is retired.
        assert_eq!(m.count(x, Verdict::Fail), 1);
        assert_eq!(m.count(x, Verdict::Pass), 2);
        assert_eq!(m.count(x, Verdict::Info), 1);
        assert_eq!(x.timing_sensitive.len(), 1);
        let table = m.markdown();
        assert!(
            table.contains("| x client | 2 | 0 | 1 | 1 | 1 |"),
            "{table}"
        );
        assert!(
            table.contains("| `sync-first` | partly (2 / 3) |"),
            "{table}"
        );
        assert!(table.contains("| `bounded-memory` | yes (3) |"), "{table}");

        // A client run on a subset: sync.4, which it did not run, is not counted.
        let subset = [BaselineClient {
            subset: true,
            ..clients[0].clone()
        }];
        let m =
            CompatibilityMatrix::from_baselines(&catalogue, dir.path(), &subset).expect("reads");
        let x = &m.columns[0];
        assert_eq!(m.count(x, Verdict::Pass), 1);
        assert!(
            m.markdown().contains("| x client | 1 | 0 | 1 | 1 | 1 |"),
            "{}",
            m.markdown()
        );
    }

    #[test]
    fn splices_only_between_the_markers() {
        let readme = format!("a\n{README_BEGIN}\nold\n{README_END}\nb\n");
        let new = splice_readme(&readme, "new\n").expect("markers");
        assert_eq!(new, format!("a\n{README_BEGIN}\nnew\n{README_END}\nb\n"));
        assert_eq!(splice_readme("no markers", "x"), None);
    }
}
