//! `qga-harness run`: runs scenario cases against a host client and judges it.

use crate::libvirt as qga_libvirt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::process::{error_chain, runtime_with_shutdown, Shutdown, Threads};
use crate::qemu::{BootOptions, GuestAgentKind, ImageOptions};
use crate::report::{self, Baseline, HumanReport, LiveProgress, Partition, Report, RunInfo};
use crate::runner::{
    self, AgentLauncher, Answer, BrokenKind, CaseResult, Client, LoadedCase, Placeholder,
    QemuLauncher, RunObserver, RunOptions, Template, Verdict,
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
    /// Real libvirt as the client under test (a built-in adapter): virtlogd and libvirtd
    /// (started as root if none runs), one transient TCG domain whose agent channel is
    /// handed to each case's mock, each step a `virsh qemu-agent-command --timeout`.
    #[arg(long, conflicts_with_all = ["client", "client_session"])]
    pub libvirt: bool,
    /// Multiply every timeout, delay and time bound of the cases by N [default: 5 with
    /// --libvirt, whose timeouts are whole seconds; else 1]
    #[arg(long, value_name = "N")]
    pub time_scale: Option<u64>,
    /// What the client talks to.
    #[arg(long, value_enum, default_value_t = Target::Mock)]
    pub target: Target,
    /// With --target qemu: the agent inside the guest.
    #[arg(long, value_enum, default_value_t = GuestAgentKind::Mock)]
    pub guest_agent: GuestAgentKind,
    /// With --target qemu --guest-agent mock: a static build of this program for the guest
    /// [default: $QGA_HARNESS_STATIC_BINARY; this program when it is static; else built
    /// with cargo into target/static when run from the source tree]
    #[arg(long, value_name = "FILE")]
    pub mock_binary: Option<PathBuf>,
    /// With --target qemu: where the guest image is built and cached
    /// [default: $XDG_CACHE_HOME/qga-harness/qemu-images or ~/.cache/...]
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
    /// With --target qemu: the guest's kernel version [default: the newest in /boot]
    #[arg(long, value_name = "VERSION")]
    pub kernel_version: Option<String>,
    /// With --target qemu: how long a guest may take to boot and answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub boot_timeout: u64,
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
    /// Write a JSON report (its schema: `qga-harness schema report`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report: summary, table of cases, and each case that
    /// is not a plain PASS with its findings beside a timeline of its wire.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Run slice K of N of the cases (deterministic: round robin in catalogue order, or
    /// balanced with --partition-by-report), for a CI matrix of N machines; merge their
    /// JSON reports with `qga-harness report merge`.
    #[arg(long, value_name = "K/N")]
    pub partition: Option<Partition>,
    /// Balance the partitions by the case durations of an earlier JSON report.
    #[arg(long, value_name = "FILE", requires = "partition")]
    pub partition_by_report: Option<PathBuf>,
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
    let mut cases = runner::filter_cases(runner::load_cases(&files)?, &args.filter);
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
    let mut partition_info = None;
    if let Some(part) = args.partition {
        let durations = match &args.partition_by_report {
            Some(path) => Some(Report::load(path)?),
            None => None,
        };
        let (chosen, info) = report::partition(cases, part, durations.as_ref());
        cases = chosen;
        partition_info = Some(info);
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
    let libvirt = if args.libvirt {
        let (client, daemons) =
            qga_libvirt::LibvirtClient::prepare(qga_libvirt::LibvirtOptions::new())
                .map_err(|e| Usage(format!("--libvirt: {}", error_chain(&e))))?;
        Some((Arc::new(client), daemons))
    } else {
        None
    };
    let (client, client_flags) = match &libvirt {
        Some((client, _)) => (
            Client::InProcess(client.clone() as Arc<dyn runner::InProcessClient>),
            "--libvirt".to_owned(),
        ),
        None => client_of(&args)?,
    };
    let time_scale = match args.time_scale {
        Some(0) => return Err(Usage("--time-scale must be at least 1".into())),
        Some(n) => n,
        None if args.libvirt => qga_libvirt::DEFAULT_TIME_SCALE,
        None => 1,
    };
    let mut jobs = match args.jobs {
        Some(0) => return Err(Usage("--jobs must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(2, usize::from),
    };
    let (runtime, mut interrupts) =
        runtime_with_shutdown(Threads::Workers(jobs.clamp(2, 16))).map_err(Usage)?;
    let qemu = match args.target {
        Target::Mock => None,
        Target::Qemu => {
            // One guest serves the cases one after the other.
            jobs = 1;
            Some(qemu_launcher(&args, &runtime, &mut interrupts)?)
        }
    };
    if libvirt.is_some() {
        // One domain serves the cases one after the other.
        jobs = 1;
    }
    // However the run ends (Ctrl-C included), the guest is killed and its sockets removed.
    let _guest_teardown = qemu.clone().map(GuestTeardown);
    let seed = args.seed.unwrap_or_else(rand::random);
    let options = RunOptions {
        time_scale,
        client: client.clone(),
        launcher: match &qemu {
            Some(launcher) => launcher.clone(),
            None => launcher()?,
        },
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
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    // Not `stdout.lock()`: the live bar's tick thread writes to stdout too, and would wait
    // for a lock this thread holds for the whole run.
    let mut human = HumanReport::new(stdout, false, cases.len());
    let _ = human.start(&info);
    if let Some(part) = &partition_info {
        let _ = writeln!(
            std::io::stdout().lock(),
            "partition {}/{}: {} of {} case(s)",
            part.index,
            part.count,
            cases.len(),
            part.total_cases
        );
    }
    let started = Instant::now();
    let mut progress = Progress {
        human: &mut human,
        live: terminal.then(|| LiveProgress::new(cases.len())),
    };
    let results = runtime.block_on(async {
        tokio::select! {
            results = runner::run_observed(cases, &options, &mut progress) => Some(results),
            () = interrupts.wait() => None,
        }
    });
    if let Some(live) = &progress.live {
        live.finish();
    }
    if results.is_none() {
        // A case may be booting a fresh guest: it gives up now.
        crate::qemu::cancel_boots();
    }
    // libvirt's domain goes first, however the run ended; then the daemons this run started.
    if let Some((client, daemons)) = libvirt {
        runtime.block_on(client.close());
        qga_libvirt::destroy_all_owned();
        drop(daemons);
    }
    // Dropping the runtime drops every case still running: their clients' process groups
    // are killed, their agents stopped and their temp dirs removed.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    runner::finish_reaping(std::time::Duration::from_secs(5));
    let Some(results) = results else {
        return Err(Usage(
            "interrupted: the running cases were stopped, their clients killed".into(),
        ));
    };
    info.elapsed = started.elapsed();
    let mut report = Report::from_results(&results, &info);
    report.partition = partition_info;
    let _ = human.finish(&report);
    finish(&args, &results, &report)
}

/// Progress as cases start and finish: the live bar on a terminal, plain lines otherwise.
struct Progress<'a, W: Write> {
    human: &'a mut HumanReport<W>,
    live: Option<LiveProgress>,
}

impl<W: Write> RunObserver for Progress<'_, W> {
    fn started(&mut self, case: &LoadedCase) {
        if let Some(live) = &mut self.live {
            live.started(&case.scenario.id);
        }
    }

    fn finished(&mut self, result: &CaseResult, done: usize) {
        match &mut self.live {
            Some(live) => live.finished(result),
            None => {
                let _ = self.human.case_done(result, done);
            }
        }
    }
}

/// Writes the report files, compares with the baseline, and decides the exit status.
fn finish(args: &RunArgs, results: &[CaseResult], report: &Report) -> Result<i32, Usage> {
    let mut problems = Vec::new();
    if let Err(e) = super::report::write_reports(
        report,
        args.json.as_ref(),
        args.junit.as_ref(),
        args.html.as_ref(),
    ) {
        problems.push(e);
    }
    if let Some(path) = &args.write_baseline {
        let previous = path.exists().then(|| Baseline::load(path).ok()).flatten();
        if let Err(e) = Baseline::updated(previous.as_ref(), results, &report.client).write(path) {
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

/// The agent every case runs against.
pub(super) fn launcher_mock() -> Arc<dyn AgentLauncher> {
    Arc::new(runner::MockLauncher::default())
}

fn launcher() -> Result<Arc<dyn AgentLauncher>, Usage> {
    Ok(Arc::new(runner::MockLauncher::default()))
}

/// Kills the run's guest when dropped.
struct GuestTeardown(Arc<QemuLauncher>);

impl Drop for GuestTeardown {
    fn drop(&mut self) {
        self.0.shut_down();
    }
}

/// The image cache when --image-dir is not given.
fn default_image_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("qga-harness").join("qemu-images")
}

/// Builds the image and boots the first guest, so a bad environment is reported (exit 2)
/// before any case runs.
fn qemu_launcher(
    args: &RunArgs,
    runtime: &tokio::runtime::Runtime,
    interrupts: &mut Shutdown,
) -> Result<Arc<QemuLauncher>, Usage> {
    let mock_binary = match args.guest_agent {
        GuestAgentKind::Mock => Some(
            crate::qemu::find_static_binary(args.mock_binary.as_deref())
                .map_err(|e| Usage(format!("--guest-agent mock: {}", error_chain(&e))))?,
        ),
        GuestAgentKind::Real => None,
    };
    let cache_dir = args.image_dir.clone().unwrap_or_else(default_image_dir);
    eprintln!("building the guest image in {} ...", cache_dir.display());
    let image = crate::qemu::build_image(&ImageOptions {
        cache_dir,
        kernel_version: args.kernel_version.clone(),
        mock_binary,
    })
    .map_err(|e| Usage(error_chain(&e)))?;
    let mut boot = BootOptions::new(image, args.guest_agent);
    boot.boot_timeout = std::time::Duration::from_secs(args.boot_timeout.max(1));
    let launcher = Arc::new(QemuLauncher::new(boot));
    eprintln!("booting the guest ...");
    let booting = launcher.clone();
    let prepared = runtime.block_on(async move {
        let task = tokio::task::spawn_blocking(move || booting.prepare());
        tokio::pin!(task);
        tokio::select! {
            done = &mut task => Some(done),
            () = interrupts.wait() => {
                crate::qemu::cancel_boots();
                let _ = task.await;
                None
            }
        }
    });
    let boot_time = match prepared {
        None => {
            launcher.shut_down();
            return Err(Usage(
                "interrupted while the guest booted; it was stopped".into(),
            ));
        }
        Some(Err(e)) => return Err(Usage(format!("the guest's boot task failed: {e}"))),
        Some(Ok(result)) => {
            result.map_err(|e| Usage(format!("--target qemu: {}", error_chain(&e))))?
        }
    };
    eprintln!("the guest is ready after {:.1} s", boot_time.as_secs_f64());
    Ok(launcher)
}
