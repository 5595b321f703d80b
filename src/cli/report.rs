//! `qga-harness report`: works on JSON reports written by `run --json`: `merge` the
//! reports of a partitioned run into one, `html` a report as a self-contained page.

use std::path::PathBuf;

use crate::report::{self, Report};

/// Works on JSON reports written by `qga-harness run --json`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Merges the JSON reports of every partition of one run (`run --partition K/N`) into
    /// one JSON, JUnit and human report. Exit status: 0 when no case FAILs, 1 when one
    /// does, 2 when the reports do not make one run.
    Merge(MergeArgs),
    /// Renders a JSON report as one self-contained HTML page.
    Html(HtmlArgs),
    /// Renders the verdicts of several clients side by side: rows are cases by category,
    /// columns are clients (each input's file name). An input is a baseline
    /// (`run --write-baseline`) or a JSON report (`run --json`, which adds the duties each
    /// client meets); a cell links to `NAME.html#case-ID` when `NAME.html` sits beside the
    /// input `NAME.json`.
    Matrix(MatrixArgs),
}

#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// Baselines or JSON reports, one per client.
    #[arg(value_name = "BASELINE", required = true)]
    pub inputs: Vec<PathBuf>,
    /// The page to write [default: the verdict counts as a Markdown table on stdout].
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The JSON reports, one per partition.
    #[arg(value_name = "REPORT.json", required = true)]
    pub reports: Vec<PathBuf>,
    /// Write the merged JSON report.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the merged JUnit XML report.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the merged HTML report.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct HtmlArgs {
    /// The JSON report.
    #[arg(value_name = "REPORT.json")]
    pub report: PathBuf,
    /// Where the run kept its artifacts (`run --artifacts DIR`), as seen from the page:
    /// each case links to its transcript and client log there.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// The page to write.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
}

pub fn run(args: ReportArgs) -> i32 {
    let outcome = match args.command {
        ReportCommand::Merge(args) => merge(&args),
        ReportCommand::Html(args) => html(&args),
        ReportCommand::Matrix(args) => matrix(&args),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            2
        }
    }
}

fn merge(args: &MergeArgs) -> Result<i32, String> {
    let mut reports = Vec::new();
    for path in &args.reports {
        reports.push((path.clone(), Report::load(path).map_err(|e| e.to_string())?));
    }
    let merged = report::merge(reports).map_err(|e| e.to_string())?;
    write_reports(
        &merged,
        args.json.as_ref(),
        args.junit.as_ref(),
        args.html.as_ref(),
    )?;
    use std::io::Write as _;
    let _ = write!(std::io::stdout().lock(), "{}", report::closing(&merged));
    Ok(i32::from(merged.counted(crate::runner::Verdict::Fail) > 0))
}

fn html(args: &HtmlArgs) -> Result<i32, String> {
    let report = Report::load(&args.report).map_err(|e| e.to_string())?;
    write_file(
        &args.output,
        &report::html_page(&report, args.artifacts.as_deref()),
        "HTML report",
    )?;
    Ok(0)
}

fn matrix(args: &MatrixArgs) -> Result<i32, String> {
    let matrix = report::CompatibilityMatrix::from_files(&args.inputs)?;
    match &args.output {
        Some(path) => write_file(path, &matrix.html(), "compatibility page")?,
        None => {
            use std::io::Write as _;
            let _ = write!(std::io::stdout().lock(), "{}", matrix.markdown());
        }
    }
    Ok(0)
}

/// Writes the JSON, JUnit and HTML forms of a report where asked.
pub(crate) fn write_reports(
    report: &Report,
    json: Option<&PathBuf>,
    junit: Option<&PathBuf>,
    html: Option<&PathBuf>,
) -> Result<(), String> {
    if let Some(path) = json {
        write_file(path, &report.to_json(), "JSON report")?;
    }
    if let Some(path) = junit {
        write_file(path, &report::junit_of(report), "JUnit report")?;
    }
    if let Some(path) = html {
        write_file(path, &report::html_page(report, None), "HTML report")?;
    }
    Ok(())
}

fn write_file(path: &std::path::Path, text: &str, what: &str) -> Result<(), String> {
    std::fs::write(path, text)
        .map_err(|e| format!("{}: cannot write the {what}: {e}", path.display()))
}
