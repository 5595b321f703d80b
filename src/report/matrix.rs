//! The compatibility matrix: how many cases each client gets of each verdict, read from
//! the committed baselines (`scenarios/baselines/*.json`) and the catalogue. A typed model
//! ([`CompatibilityMatrix`]) with its renderings; the README's table is
//! [`CompatibilityMatrix::markdown`].

use std::collections::BTreeMap;
use std::path::Path;

use super::baseline::{Baseline, BaselineError};
use crate::runner::Verdict;

/// One client's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRow {
    /// What the table calls the client.
    pub label: String,
    /// The baseline file the row comes from (`None` for the reference client, which must
    /// PASS every case).
    pub baseline: Option<String>,
    /// Cases per verdict, over the current catalogue.
    pub counts: BTreeMap<Verdict, usize>,
    /// Cases whose verdict for this client depends on timing.
    pub timing_sensitive: usize,
}

/// Every client's row, over one catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompatibilityMatrix {
    /// The catalogue's case count.
    pub cases: usize,
    pub rows: Vec<ClientRow>,
}

/// A client whose baseline feeds a row: the file's stem and the table's label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaselineClient {
    pub file_stem: String,
    pub label: String,
}

/// The third-party clients of the README's matrix, in its order.
pub fn readme_clients() -> Vec<BaselineClient> {
    [
        (
            "qemu-qmp",
            "qemu.qmp 0.0.6, driven as QEMU's qemu-ga-client drives it",
        ),
        (
            "qapi-rs",
            "qapi 0.15 (Rust, tokio API), driven as its example drives it",
        ),
        (
            "socat",
            "naive socat one-liner (`clients/socat/oneshot.sh`)",
        ),
    ]
    .into_iter()
    .map(|(file_stem, label)| BaselineClient {
        file_stem: file_stem.to_owned(),
        label: label.to_owned(),
    })
    .collect()
}

/// The verdict columns, in the table's order.
pub const COLUMNS: [Verdict; 5] = [
    Verdict::Pass,
    Verdict::NonStrict,
    Verdict::Fail,
    Verdict::Unsupported,
    Verdict::Info,
];

impl CompatibilityMatrix {
    /// The matrix over the case ids `catalogue`: the reference client first (every case
    /// PASS, INFO for informational cases), then each client's baseline from
    /// `baselines_dir`. A case a baseline does not list counts as PASS, as the baseline
    /// comparison reads it.
    pub fn from_baselines(
        catalogue: &[(String, bool)],
        baselines_dir: &Path,
        clients: &[BaselineClient],
    ) -> Result<CompatibilityMatrix, BaselineError> {
        let mut rows =
            vec![ClientRow {
                label: "reference client (`qga-harness session`)".to_owned(),
                baseline: None,
                counts: count(catalogue.iter().map(|(_, info)| {
                    if *info {
                        Verdict::Info
                    } else {
                        Verdict::Pass
                    }
                })),
                timing_sensitive: 0,
            }];
        for client in clients {
            let file = format!("{}.json", client.file_stem);
            let baseline = Baseline::load(&baselines_dir.join(&file))?;
            rows.push(ClientRow {
                label: client.label.clone(),
                baseline: Some(file),
                counts: count(
                    catalogue
                        .iter()
                        .map(|(id, _)| baseline.verdicts.get(id).copied().unwrap_or(Verdict::Pass)),
                ),
                timing_sensitive: catalogue
                    .iter()
                    .filter(|(id, _)| baseline.timing_sensitive.contains_key(id))
                    .count(),
            });
        }
        Ok(CompatibilityMatrix {
            cases: catalogue.len(),
            rows,
        })
    }

    /// The verdict columns that any row uses.
    fn columns(&self) -> Vec<Verdict> {
        COLUMNS
            .into_iter()
            .filter(|v| {
                matches!(v, Verdict::Pass | Verdict::NonStrict | Verdict::Fail)
                    || self
                        .rows
                        .iter()
                        .any(|r| r.counts.get(v).copied().unwrap_or(0) > 0)
            })
            .collect()
    }

    /// The table as Markdown.
    pub fn markdown(&self) -> String {
        let columns = self.columns();
        let mut out = String::from("| client |");
        for v in &columns {
            out.push_str(&format!(" {} |", v.as_str()));
        }
        out.push_str(" timing-sensitive |\n|---|");
        for _ in &columns {
            out.push_str("---:|");
        }
        out.push_str("---:|\n");
        for row in &self.rows {
            out.push_str(&format!("| {} |", row.label));
            for v in &columns {
                out.push_str(&format!(" {} |", row.counts.get(v).copied().unwrap_or(0)));
            }
            out.push_str(&format!(" {} |\n", row.timing_sensitive));
        }
        out
    }
}

fn count(verdicts: impl Iterator<Item = Verdict>) -> BTreeMap<Verdict, usize> {
    let mut counts = BTreeMap::new();
    for v in verdicts {
        *counts.entry(v).or_insert(0) += 1;
    }
    counts
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
                "verdicts": {"sync.1": "FAIL", "sync.2": "PASS", "sync.9": "FAIL"}}"#,
        )
        .expect("write");
        let catalogue = [
            ("sync.1".to_owned(), false),
            ("sync.2".to_owned(), false),
            ("sync.3".to_owned(), true),
        ];
        let clients = [BaselineClient {
            file_stem: "x".into(),
            label: "x client".into(),
        }];
        let m =
            CompatibilityMatrix::from_baselines(&catalogue, dir.path(), &clients).expect("reads");
        assert_eq!(m.cases, 3);
        assert_eq!(m.rows[0].counts[&Verdict::Pass], 2);
        assert_eq!(m.rows[0].counts[&Verdict::Info], 1);
        // sync.3 is not in the baseline: PASS, as the comparison reads it; sync.9 is retired.
        assert_eq!(m.rows[1].counts[&Verdict::Fail], 1);
        assert_eq!(m.rows[1].counts[&Verdict::Pass], 2);
        assert_eq!(m.rows[1].timing_sensitive, 1);
        let table = m.markdown();
        assert!(
            table.contains("| x client | 2 | 0 | 1 | 0 | 1 |"),
            "{table}"
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
