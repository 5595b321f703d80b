//! `qga-harness run`: runs scenario cases against a host client and judges it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::report::{self, Baseline, HumanReport, RunInfo};
use crate::runner::{
    self, AgentLauncher, Answer, BrokenKind, CaseResult, Client, Placeholder, RunOptions, Template,
    Verdict,
};

/// What the client talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The mock agent, one per case (the default).
    Mock,
    /// A real QEMU guest.
    Qemu,
}

/// How `--list` prints the cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// One line per case.
    Text,
    /// A catalogue page: id, title, requirement and grounding, by category.
    Markdown,
}

/// Runs scenario cases against a host client and judges it.
///
/// Each case gets its own mock agent on its own socket in a temp dir, its own client and a
/// deadline. Exit status: 0 when no case FAILs (with --baseline: when no case is worse than
/// its baseline), 1 when one does, 2 for bad usage, a bad file or an environment problem.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario files, or directories searched recursively for *.json [default: scenarios/]
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// A oneshot client: a command run through `sh -c` once per step. Placeholders,
    /// replaced by shell-quoted values: {socket}, {request} (the request JSON), {execute},
    /// {arguments} (a JSON object), {timeout_ms}, {timeout_s}. It prints the reply
    /// ({"return": ...}, {"error": ...} or the bare return value) and exits 0 on success,
    /// non-zero on failure.
    #[arg(long, value_name = "CMD", conflicts_with = "client_session")]
    pub client: Option<String>,
    /// A session client: a command run through `sh -c` once per case, with {socket}. It
    /// reads one JSON line per step on stdin, {"id": N, "execute": ..., "arguments": {...},
    /// "timeout_ms": T}, and answers each with one line, {"id": N, "return": V} or
    /// {"id": N, "error": {"class": C, "desc": D}} (client failures use the classes
    /// Timeout, Disconnected and Protocol).
    #[arg(long, value_name = "CMD")]
    pub client_session: Option<String>,
    /// What the client talks to.
    #[arg(long, value_enum, default_value_t = Target::Mock)]
    pub target: Target,
    /// Cases run in parallel [default: the number of cores]
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Only the cases whose id matches this glob (`*` and `?`); may be repeated.
    #[arg(long, value_name = "GLOB")]
    pub filter: Vec<String>,
    /// List the cases instead of running them.
    #[arg(long)]
    pub list: bool,
    /// The format of --list.
    #[arg(long, value_enum, default_value_t = ListFormat::Text, requires = "list")]
    pub format: ListFormat,
    /// The seed of every random choice of the agents [default: random, printed]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Write a JUnit XML report.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Keep each case's transcript (ID.jsonl) and client log (ID.client.txt) here.
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Expected verdicts: exit 0 unless a case does worse than its baseline.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write this run's verdicts as a baseline.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
    /// The bounded-memory duty's limit on a client process's peak RSS.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub max_rss_mib: u64,
}

/// A usage or environment problem: printed, exit status 2.
struct Usage(String);

impl<E: std::fmt::Display> From<E> for Usage {
    fn from(e: E) -> Self {
        Usage(e.to_string())
    }
}

pub fn run(args: RunArgs) -> i32 {
    match execute(args) {
        Ok(code) => code,
        Err(Usage(message)) => {
            eprintln!("error: {message}");
            2
        }
    }
}

fn execute(args: RunArgs) -> Result<i32, Usage> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("scenarios")]
    } else {
        args.paths.clone()
    };
    let files = runner::scenario_files(&paths)?;
    let cases = runner::filter_cases(runner::load_cases(&files)?, &args.filter);
    if cases.is_empty() {
        return Err(Usage(if args.filter.is_empty() {
            format!(
                "no scenario files under {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("no case id matches --filter {}", args.filter.join(", "))
        }));
    }
    if args.list {
        let text = match args.format {
            ListFormat::Text => report::list_text(&cases),
            ListFormat::Markdown => report::list_markdown(&cases),
        };
        // A closed pipe (`| head`) is not an error worth a message.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        return Ok(0);
    }
    if args.target == Target::Qemu {
        return Err(Usage(
            "--target qemu needs a QEMU guest image and the qemu target, which this build does not provide; use --target mock".into(),
        ));
    }
    let (client, client_flags) = client_of(&args)?;
    let jobs = match args.jobs {
        Some(0) => return Err(Usage("--jobs must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(2, usize::from),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let options = RunOptions {
        client: client.clone(),
        launcher: launcher()?,
        jobs,
        seed,
        max_rss_kib: args.max_rss_mib.saturating_mul(1024),
        artifacts: args.artifacts.clone(),
    };
    let mut info = RunInfo {
        client: client_description(&client),
        client_flags,
        seed,
        jobs,
        elapsed: std::time::Duration::ZERO,
        program: program_name(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(jobs.clamp(2, 16))
        .enable_all()
        .build()
        .map_err(|e| Usage(format!("cannot start the runtime: {e}")))?;
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut human = HumanReport::new(stdout.lock(), terminal, cases.len());
    let _ = human.start(&info);
    let started = Instant::now();
    let results = runtime.block_on(async {
        tokio::select! {
            results = runner::run_all(cases, &options, |result, done| {
                let _ = human.case_done(result, done);
            }) => Some(results),
            () = interrupted() => None,
        }
    });
    // Dropping the runtime drops every case still running: their clients' process groups
    // are killed, their agents stopped and their temp dirs removed.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    runner::finish_reaping(std::time::Duration::from_secs(5));
    let Some(results) = results else {
        drop(human);
        return Err(Usage(
            "interrupted: the running cases were stopped, their clients killed".into(),
        ));
    };
    info.elapsed = started.elapsed();
    let _ = human.finish(&results, &info);
    drop(human);
    finish(&args, &results, &info)
}

/// Writes the report files, compares with the baseline, and decides the exit status.
fn finish(args: &RunArgs, results: &[CaseResult], info: &RunInfo) -> Result<i32, Usage> {
    let mut problems = Vec::new();
    if let Some(path) = &args.junit {
        if let Err(e) = std::fs::write(path, report::junit_xml(results, info)) {
            problems.push(format!(
                "{}: cannot write the JUnit report: {e}",
                path.display()
            ));
        }
    }
    if let Some(path) = &args.json {
        let text =
            serde_json::to_string_pretty(&report::json_report(results, info)).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            problems.push(format!(
                "{}: cannot write the JSON report: {e}",
                path.display()
            ));
        }
    }
    if let Some(path) = &args.write_baseline {
        if let Err(e) = Baseline::from_results(results, &info.client).write(path) {
            problems.push(e.to_string());
        }
    }
    let mut out = std::io::stdout().lock();
    let mut code = if results.iter().any(|r| r.verdict == Verdict::Fail) {
        1
    } else {
        0
    };
    if let Some(path) = &args.baseline {
        let baseline = Baseline::load(path)?;
        let comparison = baseline.compare(results);
        for change in &comparison.regressions {
            let _ = writeln!(
                out,
                "regression: {} was {} in {}, now {}",
                change.id,
                change.expected,
                path.display(),
                change.actual
            );
        }
        for change in &comparison.improvements {
            let _ = writeln!(
                out,
                "improvement: {} was {} in {}, now {} (update the baseline with --write-baseline)",
                change.id,
                change.expected,
                path.display(),
                change.actual
            );
        }
        let _ = writeln!(
            out,
            "baseline {}: {} regression(s), {} improvement(s)",
            path.display(),
            comparison.regressions.len(),
            comparison.improvements.len()
        );
        code = i32::from(!comparison.regressions.is_empty());
    }
    let errors: Vec<&CaseResult> = results.iter().filter(|r| r.error.is_some()).collect();
    for result in &errors {
        problems.push(format!(
            "{} ({}): {}",
            result.id,
            result.file.display(),
            result.error.as_deref().unwrap_or_default()
        ));
    }
    if let Some(why) = nothing_could_run(results) {
        problems.push(format!("the client could not be run: {why}"));
    }
    if problems.is_empty() {
        Ok(code)
    } else {
        Err(Usage(problems.join("\nerror: ")))
    }
}

/// When every case's client failed to start at all, the run says nothing about the client.
fn nothing_could_run(results: &[CaseResult]) -> Option<String> {
    let mut detail = None;
    for result in results {
        if result.unsupported.is_some() || result.error.is_some() {
            continue;
        }
        match result.run.steps.first().map(|s| &s.answer) {
            Some(Answer::Broken {
                why: BrokenKind::NotFound | BrokenKind::Spawn,
                detail: d,
            }) => detail = Some(d.clone()),
            _ => return None,
        }
    }
    detail
}

fn client_of(args: &RunArgs) -> Result<(Client, String), Usage> {
    client_from(args.client.as_deref(), args.client_session.as_deref()).map_err(|e| Usage(e.0))
}

/// A usage error's message.
pub(super) struct UsageError(pub String);

impl From<Usage> for UsageError {
    fn from(e: Usage) -> Self {
        UsageError(e.0)
    }
}

/// The client of `--client`, `--client-session`, or the reference client, with the
/// flags that name it.
pub(super) fn client_from(
    client: Option<&str>,
    client_session: Option<&str>,
) -> Result<(Client, String), UsageError> {
    Ok(client_from_inner(client, client_session)?)
}

fn client_from_inner(
    client: Option<&str>,
    client_session: Option<&str>,
) -> Result<(Client, String), Usage> {
    if let Some(command) = client {
        let template = Template::parse(command, "--client", Placeholder::ONESHOT)?;
        check_program(&template, "--client")?;
        let flags = format!("--client {}", runner::shell_quote(command));
        return Ok((Client::Oneshot(template), flags));
    }
    if let Some(command) = client_session {
        let template = Template::parse(command, "--client-session", Placeholder::SESSION)?;
        check_program(&template, "--client-session")?;
        let flags = format!("--client-session {}", runner::shell_quote(command));
        return Ok((Client::Session(template), flags));
    }
    let exe = std::env::current_exe().map_err(|e| {
        Usage(format!(
            "cannot find this program to run its reference client: {e}"
        ))
    })?;
    let command = format!(
        "exec {} session --socket {{socket}}",
        runner::shell_quote(&exe.to_string_lossy())
    );
    let template = Template::parse(&command, "the reference client", Placeholder::SESSION)?;
    Ok((Client::Session(template), String::new()))
}

fn client_description(client: &Client) -> String {
    match client {
        Client::Session(t)
            if t.source().contains(" session --socket ") && t.source().starts_with("exec ") =>
        {
            "the reference client (qga-harness session)".to_owned()
        }
        other => other.describe(),
    }
}

/// Shell builtins and keywords a command may start with.
const SHELL_WORDS: &[&str] = &[
    "exec", "cd", "echo", "printf", "test", "[", "true", "false", "env", "set", "export", "eval",
    "if", "for", "while", "until", "case", "command", ".", "read", "ulimit", "umask", "trap",
    "time", "nice", "timeout",
];

/// Fails early when the client's program plainly does not exist.
fn check_program(template: &Template, flag: &str) -> Result<(), Usage> {
    let Some(program) = template.program() else {
        return Ok(());
    };
    if SHELL_WORDS.contains(&program) {
        return Ok(());
    }
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    };
    if found {
        Ok(())
    } else {
        Err(Usage(format!(
            "{flag}: the program '{program}' was not found{}; check the command or install it",
            if program.contains('/') {
                String::new()
            } else {
                " on PATH".to_owned()
            }
        )))
    }
}

fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "qga-harness".to_owned())
}

/// Completes on SIGINT or SIGTERM (never, when the handlers cannot be installed).
pub(super) async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// The agent every case runs against.
pub(super) fn launcher_mock() -> Arc<dyn AgentLauncher> {
    Arc::new(runner::MockLauncher::default())
}

fn launcher() -> Result<Arc<dyn AgentLauncher>, Usage> {
    Ok(Arc::new(runner::MockLauncher::default()))
}
