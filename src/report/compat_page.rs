//! The compatibility page: the HTML rendering of a [`CompatibilityMatrix`]: verdict
//! counts and the duties each client meets (the tables the README shows), then every case
//! by category with each client's verdict, linking to that client's case report where one
//! exists.

use std::fmt::Write as _;

use super::matrix::{duty_cell, CompatibilityMatrix};

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl CompatibilityMatrix {
    /// The compatibility page, self-contained.
    pub fn html(&self) -> String {
        let mut out = String::from(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>qga-harness compatibility</title><style>\n\
body{margin:0;font:14px/1.45 system-ui,sans-serif;color:#1d2330;background:#f6f7fa}\
header{background:#1d2330;color:#fff;padding:18px 28px}h1{margin:0;font-size:20px}\
main{padding:20px 28px}table{border-collapse:collapse;background:#fff}\
th,td{border:1px solid #d9dee8;padding:4px 8px;text-align:left}th{font-size:12px;color:#5d6678}\
td.v{text-align:center;font-weight:600;font-size:12px;color:#fff}td.v a{color:#fff}\
.PASS{background:#1f8a4c}.NON-STRICT{background:#b7791f}.FAIL{background:#c53030}.INFO{background:#2b6cb0}.UNSUPPORTED{background:#718096}\
td.none{background:#edf0f5}tr.cat th{background:#eef2fa;color:#1d2330;font-size:13px}\
.yes{color:#1f8a4c;font-weight:600}.no{color:#c53030;font-weight:600}.partly{color:#b7791f;font-weight:600}\n\
</style></head><body><header><h1>qga-harness: clients side by side</h1></header><main>\n",
        );
        let verdicts = self.verdict_columns();
        out.push_str("<h2>Verdicts</h2>\n<table id=\"totals\"><tr><th>client</th>");
        for v in &verdicts {
            let _ = write!(out, "<th>{v}</th>");
        }
        out.push_str("<th>timing-sensitive</th></tr>\n");
        for column in &self.columns {
            let _ = write!(
                out,
                "<tr><td title=\"{}\">{}</td>",
                esc(&column.name),
                esc(&column.label)
            );
            for &v in &verdicts {
                let _ = write!(out, "<td>{}</td>", self.count(column, v));
            }
            let _ = writeln!(out, "<td>{}</td></tr>", column.timing_sensitive.len());
        }
        out.push_str("</table>\n");
        let duties = self.duties();
        if !duties.is_empty() {
            out.push_str("<h2>Duties met</h2>\n<p>In the cases where each applies (met / cases judged on it).</p>\n<table id=\"duties\"><tr><th>duty</th>");
            for column in &self.columns {
                let _ = write!(out, "<th>{}</th>", esc(&column.name));
            }
            out.push_str("</tr>\n");
            for duty in duties {
                let _ = write!(out, "<tr><td>{}</td>", esc(duty));
                for column in &self.columns {
                    let (class, cell) = duty_cell(column.duties.get(duty));
                    let _ = write!(out, "<td class=\"{class}\">{}</td>", esc(&cell));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
        }
        out.push_str("<h2>Cases</h2>\n<table id=\"cases\"><tr><th>case</th>");
        for column in &self.columns {
            let _ = write!(out, "<th>{}</th>", esc(&column.name));
        }
        out.push_str("</tr>\n");
        for (category, ids) in self.by_category() {
            let _ = writeln!(
                out,
                "<tr class=\"cat\"><th colspan=\"{}\">{}</th></tr>",
                self.columns.len() + 1,
                esc(category)
            );
            for id in ids {
                let title = self.columns.iter().find_map(|c| c.titles.get(id));
                let _ = write!(
                    out,
                    "<tr data-id=\"{0}\"><td title=\"{1}\">{0}</td>",
                    esc(id),
                    esc(title.map_or("", String::as_str))
                );
                for column in &self.columns {
                    let sensitive = if column.timing_sensitive.contains(id) {
                        " title=\"timing-sensitive for this client\""
                    } else {
                        ""
                    };
                    match (column.verdicts.get(id), &column.page) {
                        (Some(v), Some(page)) => {
                            let _ = write!(
                                out,
                                "<td class=\"v {v}\"{sensitive}><a href=\"{}#case-{}\">{v}</a></td>",
                                esc(&page.to_string_lossy()),
                                esc(id)
                            );
                        }
                        (Some(v), None) => {
                            let _ = write!(out, "<td class=\"v {v}\"{sensitive}>{v}</td>");
                        }
                        (None, _) => out.push_str("<td class=\"none\"></td>"),
                    }
                }
                out.push_str("</tr>\n");
            }
        }
        out.push_str("</table>\n</main></body></html>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    use super::super::baseline::DutyTally;
    use super::super::matrix::ClientColumn;
    use super::*;
    use crate::runner::Verdict;

    fn column(name: &str, verdicts: &[(&str, Verdict)]) -> ClientColumn {
        ClientColumn {
            name: name.to_owned(),
            label: format!("client {name}"),
            verdicts: verdicts
                .iter()
                .map(|(id, v)| ((*id).to_owned(), *v))
                .collect(),
            titles: BTreeMap::new(),
            page: (name == "a").then(|| PathBuf::from("a.html")),
            duties: [(
                "sync-first".to_owned(),
                DutyTally {
                    met: 2,
                    missed: usize::from(name == "b"),
                },
            )]
            .into_iter()
            .collect(),
            timing_sensitive: BTreeSet::new(),
        }
    }

    #[test]
    fn clients_side_by_side_by_category_with_links_and_duties() {
        let m = CompatibilityMatrix {
            cases: ["hostile.1", "sync.2", "sync.10"]
                .map(String::from)
                .to_vec(),
            columns: vec![
                column(
                    "a",
                    &[("sync.10", Verdict::Pass), ("sync.2", Verdict::Fail)],
                ),
                column("b", &[("hostile.1", Verdict::NonStrict)]),
            ],
        };
        let page = m.html();
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
            page.contains("<td class=\"yes\">yes (2)</td><td class=\"partly\">partly (2 / 3)</td>")
        );
        // The same model gives the Markdown the README shows.
        let md = m.markdown();
        assert!(md.contains("| client a | 1 | 0 | 1 | 0 |"), "{md}");
        assert!(
            md.contains("| `sync-first` | yes (2) | partly (2 / 3) |"),
            "{md}"
        );
    }
}
