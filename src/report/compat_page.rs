//! The compatibility page: the verdicts of several clients side by side (rows: cases by
//! category; columns: clients), each cell linking to that client's case report where one
//! exists, and, for clients given by a JSON report, the duties each meets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::baseline::Baseline;
use super::model::Report;
use crate::runner::{compare_ids, DutyStatus, Verdict};

/// One client's column.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixColumn {
    /// A short name: the input file's stem (`socat`, `qemu-qmp`).
    pub name: String,
    /// How the client was given.
    pub client: String,
    pub verdicts: BTreeMap<String, Verdict>,
    /// Case titles, when the input was a report.
    pub titles: BTreeMap<String, String>,
    /// The HTML report of the client's run (`NAME.html` beside the input), when there is one.
    pub page: Option<PathBuf>,
    /// Per duty: cases where it was met and where it was missed (reports only).
    pub duties: BTreeMap<String, (usize, usize)>,
}

impl MatrixColumn {
    /// Reads a baseline (`run --write-baseline`) or a JSON report (`run --json`).
    pub fn load(path: &Path) -> Result<MatrixColumn, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let name = path
            .file_stem()
            .map_or_else(|| "client".to_owned(), |s| s.to_string_lossy().into_owned());
        let page = path.with_extension("html");
        let mut column = MatrixColumn {
            name,
            client: String::new(),
            verdicts: BTreeMap::new(),
            titles: BTreeMap::new(),
            page: page.is_file().then_some(page),
            duties: BTreeMap::new(),
        };
        let is_report = serde_json::from_str::<serde_json::Value>(&text)
            .map(|v| v.get("cases").is_some())
            .unwrap_or(false);
        if is_report {
            let report = Report::parse(&text, path).map_err(|e| e.to_string())?;
            column.client = report.client;
            for case in report.cases {
                for duty in &case.duties {
                    let tally = column.duties.entry(duty.duty.clone()).or_default();
                    match duty.status {
                        DutyStatus::Met => tally.0 += 1,
                        DutyStatus::Missed => tally.1 += 1,
                        DutyStatus::NotApplicable | DutyStatus::NotMeasured => {}
                    }
                }
                column.verdicts.insert(case.id.clone(), case.verdict);
                column.titles.insert(case.id, case.title);
            }
        } else {
            let baseline = Baseline::load(path).map_err(|e| e.to_string())?;
            column.client = baseline.client;
            column.verdicts = baseline.verdicts;
        }
        Ok(column)
    }
}

fn category(id: &str) -> &str {
    id.split_once('.').map_or(id, |(c, _)| c)
}

/// Every case id of the columns, by category, in catalogue order.
fn rows(columns: &[MatrixColumn]) -> BTreeMap<String, Vec<String>> {
    let ids: BTreeSet<&String> = columns.iter().flat_map(|c| c.verdicts.keys()).collect();
    let mut by_category: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in ids {
        by_category
            .entry(category(id).to_owned())
            .or_default()
            .push(id.clone());
    }
    for ids in by_category.values_mut() {
        ids.sort_by(|a, b| compare_ids(a, b));
    }
    by_category
}

fn totals(column: &MatrixColumn) -> [usize; 5] {
    Verdict::ALL.map(|v| column.verdicts.values().filter(|x| **x == v).count())
}

/// The verdict counts per client, as a Markdown table.
pub fn matrix_markdown(columns: &[MatrixColumn]) -> String {
    let mut out = String::from("| client | PASS | NON-STRICT | FAIL | INFO | UNSUPPORTED |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    for column in columns {
        let t = totals(column);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            column.name, t[0], t[1], t[2], t[3], t[4]
        );
    }
    out
}

/// The compatibility page, self-contained.
pub fn matrix_html(columns: &[MatrixColumn]) -> String {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>qga-harness compatibility</title><style>\n\
body{margin:0;font:14px/1.45 system-ui,sans-serif;color:#1d2330;background:#f6f7fa}\
header{background:#1d2330;color:#fff;padding:18px 28px}h1{margin:0;font-size:20px}\
main{padding:20px 28px}table{border-collapse:collapse;background:#fff}\
th,td{border:1px solid #d9dee8;padding:4px 8px;text-align:left}th{font-size:12px;color:#5d6678}\
td.v{text-align:center;font-weight:600;font-size:12px;color:#fff}td.v a{color:#fff}\
.PASS{background:#1f8a4c}.NON-STRICT{background:#b7791f}.FAIL{background:#c53030}.INFO{background:#2b6cb0}.UNSUPPORTED{background:#718096}\
td.none{background:#edf0f5}tr.cat th{background:#eef2fa;color:#1d2330;font-size:13px}\
.yes{color:#1f8a4c;font-weight:600}.no{color:#c53030;font-weight:600}\n\
</style></head><body><header><h1>qga-harness: clients side by side</h1></header><main>\n",
    );
    out.push_str("<h2>Verdicts</h2>\n<table id=\"totals\"><tr><th>client</th>");
    for v in Verdict::ALL {
        let _ = write!(out, "<th>{v}</th>");
    }
    out.push_str("</tr>\n");
    for column in columns {
        let _ = write!(
            out,
            "<tr><td title=\"{}\">{}</td>",
            esc(&column.client),
            esc(&column.name)
        );
        for n in totals(column) {
            let _ = write!(out, "<td>{n}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    let duties: BTreeSet<&String> = columns.iter().flat_map(|c| c.duties.keys()).collect();
    if !duties.is_empty() {
        out.push_str("<h2>Duties met</h2>\n<table id=\"duties\"><tr><th>duty</th>");
        for column in columns {
            let _ = write!(out, "<th>{}</th>", esc(&column.name));
        }
        out.push_str("</tr>\n");
        for duty in duties {
            let _ = write!(out, "<tr><td>{}</td>", esc(duty));
            for column in columns {
                match column.duties.get(duty) {
                    Some((_, 0)) => out.push_str("<td class=\"yes\">yes</td>"),
                    Some((met, missed)) => {
                        let _ =
                            write!(out, "<td class=\"no\">no ({missed} missed, {met} met)</td>");
                    }
                    None => out.push_str("<td>&middot;</td>"),
                }
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out.push_str("<h2>Cases</h2>\n<table id=\"cases\"><tr><th>case</th>");
    for column in columns {
        let _ = write!(out, "<th>{}</th>", esc(&column.name));
    }
    out.push_str("</tr>\n");
    for (category, ids) in rows(columns) {
        let _ = writeln!(
            out,
            "<tr class=\"cat\"><th colspan=\"{}\">{}</th></tr>",
            columns.len() + 1,
            esc(&category)
        );
        for id in ids {
            let title = columns.iter().find_map(|c| c.titles.get(&id));
            let _ = write!(
                out,
                "<tr data-id=\"{0}\"><td title=\"{1}\">{0}</td>",
                esc(&id),
                esc(title.map_or("", String::as_str))
            );
            for column in columns {
                match column.verdicts.get(&id) {
                    Some(v) => match &column.page {
                        Some(page) => {
                            let _ = write!(
                                out,
                                "<td class=\"v {v}\"><a href=\"{}#case-{}\">{v}</a></td>",
                                esc(&page.to_string_lossy()),
                                esc(&id)
                            );
                        }
                        None => {
                            let _ = write!(out, "<td class=\"v {v}\">{v}</td>");
                        }
                    },
                    None => out.push_str("<td class=\"none\"></td>"),
                }
            }
            out.push_str("</tr>\n");
        }
    }
    out.push_str("</table>\n</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, verdicts: &[(&str, Verdict)]) -> MatrixColumn {
        MatrixColumn {
            name: name.to_owned(),
            client: format!("--client {name}"),
            verdicts: verdicts
                .iter()
                .map(|(id, v)| ((*id).to_owned(), *v))
                .collect(),
            titles: BTreeMap::new(),
            page: (name == "a").then(|| PathBuf::from("a.html")),
            duties: [("sync-first".to_owned(), (2, usize::from(name == "b")))]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn clients_side_by_side_by_category_with_links_and_duties() {
        let columns = [
            column(
                "a",
                &[("sync.10", Verdict::Pass), ("sync.2", Verdict::Fail)],
            ),
            column("b", &[("hostile.1", Verdict::NonStrict)]),
        ];
        let page = matrix_html(&columns);
        assert!(
            page.find("sync.2") < page.find("sync.10"),
            "catalogue order"
        );
        assert!(page.find(">hostile<") < page.find(">sync<"), "by category");
        assert!(
            page.contains("<a href=\"a.html#case-sync.2\">FAIL</a>"),
            "{page}"
        );
        assert!(page.contains("<td class=\"v NON-STRICT\">NON-STRICT</td>"));
        assert!(page.contains("<td class=\"none\"></td>"), "b has no sync.2");
        assert!(
            page.contains("<td class=\"yes\">yes</td><td class=\"no\">no (1 missed, 2 met)</td>")
        );
        let md = matrix_markdown(&columns);
        assert!(md.contains("| a | 1 | 0 | 1 | 0 | 0 |"), "{md}");
    }
}
