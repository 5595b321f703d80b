//! Driving a client through one case: oneshot (a process per step), session (one process
//! per case, JSON lines on its stdin and stdout) or in-process (a Rust client in the
//! runner). Every step has a hard deadline; a client that misses it is killed with its
//! process group and the step is recorded as hung.

use std::fmt;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::answer::{Answer, BrokenKind};
use super::process::{capture, Captured, ClientProcess, ExitRecord};
use super::template::{Template, Values};
use crate::scenario::Step;

/// A boxed future, for the object-safe client and agent traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a client may run past a step's timeout before it is killed: the runner's grace
/// covers process start-up and a client that reports its timeout a little late.
pub fn kill_after(timeout_ms: u64) -> Duration {
    Duration::from_millis(timeout_ms.saturating_add(500 + timeout_ms / 4))
}

/// Time a client gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(200);
/// Time a session client gets to exit by itself once its stdin is closed.
const SESSION_EXIT_GRACE: Duration = Duration::from_secs(1);
/// Output kept from a oneshot client's stdout, and from any stderr.
const STDOUT_CAP: usize = 64 << 20;
const STDERR_CAP: usize = 64 << 10;
/// Extra time a session client gets to read its first step: its start-up (an interpreter,
/// a JVM) is not the step's time. Later steps must be read within the step's own deadline.
const SESSION_STARTUP: Duration = Duration::from_secs(2);
/// The longest answer line a session client may write.
const SESSION_LINE_CAP: usize = 64 << 20;
/// How long the runner waits for a killed client's pipes to close (a descendant that left
/// the group could hold them open).
const PIPE_DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// One step as the client receives it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepRequest {
    /// 1-based step number, the session `id`.
    pub id: u64,
    pub execute: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Map<String, Value>>,
    pub timeout_ms: u64,
}

impl StepRequest {
    pub fn new(index: usize, step: &Step) -> StepRequest {
        StepRequest {
            id: index as u64 + 1,
            execute: step.execute.clone(),
            arguments: step.arguments.clone(),
            timeout_ms: step.timeout_ms,
        }
    }

    /// The request as the agent would get it: `{"execute": ..., "arguments": ...}`.
    pub fn request_json(&self) -> String {
        let execute = Value::String(self.execute.clone());
        match &self.arguments {
            Some(arguments) => format!(
                "{{\"execute\": {execute}, \"arguments\": {}}}",
                Value::Object(arguments.clone())
            ),
            None => format!("{{\"execute\": {execute}}}"),
        }
    }

    /// The arguments object (`{}` when there are none).
    pub fn arguments_json(&self) -> String {
        Value::Object(self.arguments.clone().unwrap_or_default()).to_string()
    }

    /// The session line: `{"id": N, "execute": ..., "arguments": {...}, "timeout_ms": T}`.
    pub fn session_line(&self) -> String {
        format!(
            "{{\"id\": {}, \"execute\": {}, \"arguments\": {}, \"timeout_ms\": {}}}\n",
            self.id,
            Value::String(self.execute.clone()),
            self.arguments_json(),
            self.timeout_ms
        )
    }
}

/// A client that lives in the runner's process (a Rust library under test, or the
/// reference client): one session per case.
pub trait InProcessClient: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> String;
    /// Starts a session against the agent at `socket`.
    fn open<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Box<dyn InProcessSession>>;
    /// How long opening a session may take on top of the first step's deadline: a heavy
    /// client (a VM manager that must see its guest's agent channel connect) needs seconds
    /// before it can send anything. Not charged to any step.
    fn startup(&self) -> Duration {
        Duration::ZERO
    }
    /// Why this client cannot take part in `scenario` as written (the case is then
    /// UNSUPPORTED with the reason); `None` when it can.
    fn cannot_run(&self, _scenario: &crate::scenario::Scenario) -> Option<String> {
        None
    }
}

/// One case's session of an in-process client.
pub trait InProcessSession: Send {
    /// Runs one step. The runner enforces the deadline by dropping the future.
    fn execute<'a>(&'a mut self, request: &'a StepRequest) -> BoxFuture<'a, Answer>;
    /// The most memory the session's buffers for the agent's output held at once, in
    /// bytes, when the client keeps count: the runner's own peak RSS says nothing about a
    /// client in its process, so the bounded-memory duty is judged from this instead.
    /// `None`: not measured.
    fn peak_buffer_bytes(&self) -> Option<u64> {
        None
    }
}

/// The client under test and how to drive it.
#[derive(Clone)]
pub enum Client {
    /// `--client`: a command run once per step.
    Oneshot(Template),
    /// `--client-session`: a command run once per case, answering JSON lines.
    Session(Template),
    /// A client in the runner's own process.
    InProcess(Arc<dyn InProcessClient>),
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Oneshot(t) => write!(f, "Oneshot({t})"),
            Client::Session(t) => write!(f, "Session({t})"),
            Client::InProcess(c) => write!(f, "InProcess({})", c.name()),
        }
    }
}

impl Client {
    /// What the reports call this client.
    pub fn describe(&self) -> String {
        match self {
            Client::Oneshot(t) => format!("--client {}", super::template::shell_quote(t.source())),
            Client::Session(t) => format!(
                "--client-session {}",
                super::template::shell_quote(t.source())
            ),
            Client::InProcess(c) => c.name(),
        }
    }

    /// The client's own start-up allowance (see [`InProcessClient::startup`]).
    pub fn startup(&self) -> Duration {
        match self {
            Client::InProcess(c) => c.startup(),
            Client::Oneshot(_) | Client::Session(_) => Duration::ZERO,
        }
    }

    /// True for the oneshot form, which opens a new connection per step.
    pub fn is_oneshot(&self) -> bool {
        matches!(self, Client::Oneshot(_))
    }
}

/// What happened in one step.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// 0-based step index.
    pub index: usize,
    pub execute: String,
    /// When the step was handed to the client, in µs since the case's clock origin.
    pub started_us: u64,
    /// How long the client took to answer, in µs.
    pub elapsed_us: u64,
    pub answer: Answer,
}

impl StepRecord {
    pub fn elapsed_ms(&self) -> f64 {
        self.elapsed_us as f64 / 1000.0
    }

    pub fn ended_us(&self) -> u64 {
        self.started_us + self.elapsed_us
    }
}

/// A client process the runner started, and how it ended.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessReport {
    /// The step it ran (oneshot), or `None` for a session process.
    pub step: Option<usize>,
    pub command: String,
    pub pid: u32,
    pub exit: ExitRecord,
    pub stdout: String,
    pub stderr: String,
}

/// Everything a client did in one case.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientRun {
    pub steps: Vec<StepRecord>,
    pub processes: Vec<ProcessReport>,
    /// An in-process client's own count of the most memory its buffers for the agent's
    /// output held (see [`InProcessSession::peak_buffer_bytes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_buffer_bytes: Option<u64>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn shown(captured: &Captured) -> String {
    let mut text = String::from_utf8_lossy(&captured.bytes).into_owned();
    if captured.truncated() {
        text.push_str(&format!("... ({} bytes in all)", captured.total));
    }
    crate::transcript::excerpt(&text)
}

/// Runs every step of a case through `client`, against the agent at `socket`. Times are
/// measured from `origin`.
///
/// `began` is told when the client begins its first step: at once for a oneshot or an
/// in-process client, when a session client has read the step from its stdin.
pub async fn drive(
    client: &Client,
    socket: &Path,
    steps: &[Step],
    origin: Instant,
    began: tokio::sync::oneshot::Sender<()>,
) -> ClientRun {
    let requests: Vec<StepRequest> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepRequest::new(i, s))
        .collect();
    match client {
        Client::Oneshot(template) => {
            let _ = began.send(());
            drive_oneshot(template, socket, &requests, origin).await
        }
        Client::Session(template) => {
            drive_session(template, socket, &requests, origin, began).await
        }
        Client::InProcess(client) => {
            let _ = began.send(());
            drive_in_process(client.as_ref(), socket, &requests, origin).await
        }
    }
}

async fn drive_oneshot(
    template: &Template,
    socket: &Path,
    requests: &[StepRequest],
    origin: Instant,
) -> ClientRun {
    let mut run = ClientRun::default();
    let socket = socket.to_string_lossy();
    for (index, request) in requests.iter().enumerate() {
        let request_json = request.request_json();
        let arguments = request.arguments_json();
        let command = template.render(&Values {
            socket: &socket,
            request: &request_json,
            execute: &request.execute,
            arguments: &arguments,
            timeout_ms: request.timeout_ms,
        });
        let started = Instant::now();
        let started_us = micros(started - origin);
        let (answer, report) = oneshot_step(&command, request, started).await;
        run.steps.push(StepRecord {
            index,
            execute: request.execute.clone(),
            started_us,
            elapsed_us: micros(report.1),
            answer,
        });
        if let Some(mut process) = report.0 {
            process.step = Some(index);
            run.processes.push(process);
        }
    }
    run
}

type OneshotReport = (Option<ProcessReport>, Duration);

async fn oneshot_step(
    command: &str,
    request: &StepRequest,
    started: Instant,
) -> (Answer, OneshotReport) {
    let mut process = match ClientProcess::spawn(command, false) {
        Ok(p) => p,
        Err(e) => {
            return (
                Answer::broken(BrokenKind::Spawn, format!("cannot start /bin/sh: {e}")),
                (None, started.elapsed()),
            )
        }
    };
    let stdout = process
        .stdout
        .take()
        .map(|s| tokio::spawn(capture(s, STDOUT_CAP)));
    let stderr = process
        .stderr
        .take()
        .map(|s| tokio::spawn(capture(s, STDERR_CAP)));
    let exited = process
        .wait_until(started + kill_after(request.timeout_ms))
        .await;
    let elapsed = started.elapsed();
    let pid = process.pid();
    let exit = process.finish(TERM_GRACE).await;
    let stdout = collect(stdout).await;
    let stderr = collect(stderr).await;
    let answer = if !exited {
        Answer::broken(
            BrokenKind::Hung,
            format!(
                "still running {} ms after the step started (timeout {} ms plus the runner's grace); killed with its process group",
                elapsed.as_millis(),
                request.timeout_ms
            ),
        )
    } else {
        match (exit.code, exit.signal) {
            (_, Some(signal)) => Answer::broken(
                BrokenKind::Crashed,
                format!("ended by signal {signal}; stderr: {}", shown(&stderr)),
            ),
            (Some(_), None) if stdout.truncated() => Answer::broken(
                BrokenKind::Malformed,
                format!("printed more than {STDOUT_CAP} bytes"),
            ),
            (Some(code), None) => Answer::from_oneshot(code, &stdout.bytes, &stderr.bytes),
            (None, None) => Answer::broken(BrokenKind::Exited, "ended with an unknown status"),
        }
    };
    let report = ProcessReport {
        step: None,
        command: command.to_owned(),
        pid,
        exit,
        stdout: shown(&stdout),
        stderr: shown(&stderr),
    };
    (answer, (Some(report), elapsed))
}

/// Waits for a capture task, but not forever: a descendant that escaped the process group
/// could keep the pipe open.
async fn collect(task: Option<tokio::task::JoinHandle<Captured>>) -> Captured {
    let Some(mut task) = task else {
        return Captured::default();
    };
    match tokio::time::timeout(PIPE_DRAIN_LIMIT, &mut task).await {
        Ok(Ok(captured)) => captured,
        _ => {
            task.abort();
            Captured::default()
        }
    }
}

/// A line from a session client's stdout.
enum Line {
    Text(Vec<u8>),
    TooLong(usize),
}

/// Splits a stream into lines of at most `cap` bytes; ends at EOF.
async fn read_lines(mut stream: pipe::Receiver, cap: usize, lines: mpsc::Sender<Line>) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut current = Vec::new();
    let mut overflow = 0usize;
    loop {
        let n = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut rest = &buffer[..n];
        while !rest.is_empty() {
            let (chunk, newline) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            if overflow > 0 || current.len() + chunk.len() > cap {
                overflow += current.len() + chunk.len();
                current.clear();
            } else {
                current.extend_from_slice(chunk);
            }
            rest = &rest[chunk.len()..];
            if newline {
                rest = &rest[1..];
                let line = if overflow > 0 {
                    Line::TooLong(std::mem::take(&mut overflow))
                } else {
                    Line::Text(std::mem::take(&mut current))
                };
                if lines.send(line).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn drive_session(
    template: &Template,
    socket: &Path,
    requests: &[StepRequest],
    origin: Instant,
    began: tokio::sync::oneshot::Sender<()>,
) -> ClientRun {
    let mut began = Some(began);
    let mut run = ClientRun::default();
    let command = template.render(&Values {
        socket: &socket.to_string_lossy(),
        ..Values::default()
    });
    let mut process = match ClientProcess::spawn(&command, true) {
        Ok(p) => p,
        Err(e) => {
            for (index, request) in requests.iter().enumerate() {
                run.steps.push(StepRecord {
                    index,
                    execute: request.execute.clone(),
                    started_us: micros(origin.elapsed()),
                    elapsed_us: 0,
                    answer: Answer::broken(BrokenKind::Spawn, format!("cannot start /bin/sh: {e}")),
                });
            }
            return run;
        }
    };
    let (tx, mut lines) = mpsc::channel(4);
    if let Some(stdout) = process.stdout.take() {
        tokio::spawn(read_lines(stdout, SESSION_LINE_CAP, tx));
    }
    let stderr = process
        .stderr
        .take()
        .map(|s| tokio::spawn(capture(s, STDERR_CAP)));
    let mut stdin = process.stdin.take();
    let mut stopped: Option<String> = None;
    for (index, request) in requests.iter().enumerate() {
        if let Some(why) = &stopped {
            run.steps.push(StepRecord {
                index,
                execute: request.execute.clone(),
                started_us: micros(origin.elapsed()),
                elapsed_us: 0,
                answer: Answer::NotRun {
                    detail: why.clone(),
                },
            });
            continue;
        }
        let (answer, started) = session_step(
            &mut process,
            stdin.as_mut(),
            &mut lines,
            request,
            &mut began,
        )
        .await;
        let elapsed = started.elapsed();
        if let Answer::Broken { why, .. } = &answer {
            stopped = Some(format!(
                "the client gave no usable answer at step {} ({})",
                index + 1,
                match why {
                    BrokenKind::Hung => "hung; killed",
                    _ => "stopped",
                }
            ));
        }
        run.steps.push(StepRecord {
            index,
            execute: request.execute.clone(),
            started_us: micros(started - origin),
            elapsed_us: micros(elapsed),
            answer,
        });
    }
    // End of the case: close stdin so the client can exit by itself (unless it hung), then
    // end its group.
    drop(stdin.take());
    let hung = run.steps.iter().any(|s| {
        matches!(
            s.answer,
            Answer::Broken {
                why: BrokenKind::Hung,
                ..
            }
        )
    });
    if !hung {
        process
            .wait_until(Instant::now() + SESSION_EXIT_GRACE)
            .await;
    }
    let pid = process.pid();
    let exit = process.finish(TERM_GRACE).await;
    let stderr = collect(stderr).await;
    // An answer the process could not give because it crashed: say so.
    if let (Some(signal), false) = (exit.signal, exit.killed_by_runner) {
        for step in &mut run.steps {
            if let Answer::Broken {
                why: why @ BrokenKind::Exited,
                detail,
            } = &mut step.answer
            {
                *why = BrokenKind::Crashed;
                detail.push_str(&format!(" (ended by signal {signal})"));
            }
        }
    }
    run.processes.push(ProcessReport {
        step: None,
        command,
        pid,
        exit,
        stdout: String::new(),
        stderr: shown(&stderr),
    });
    run
}

/// Sends one step to a session client and reads its answer. Returns the answer and when
/// the step began: when the client read the step's line (a client still starting up is not
/// charged for its start-up), at the latest moment the line was seen unread.
async fn session_step(
    process: &mut ClientProcess,
    stdin: Option<&mut pipe::Sender>,
    lines: &mut mpsc::Receiver<Line>,
    request: &StepRequest,
    began: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> (Answer, Instant) {
    let written = Instant::now();
    let Some(stdin) = stdin else {
        return (
            Answer::broken(BrokenKind::Exited, "its stdin is closed"),
            written,
        );
    };
    let line = request.session_line();
    let startup = if request.id == 1 {
        SESSION_STARTUP
    } else {
        Duration::ZERO
    };
    let read_limit = written + kill_after(request.timeout_ms) + startup;
    match tokio::time::timeout_at(read_limit, stdin.write_all(line.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let why = format!(
                "it stopped reading its stdin ({e}) before step {}",
                request.id
            );
            return (gone(process, request, why).await, written);
        }
        Err(_) => {
            let answer = Answer::broken(
                BrokenKind::Hung,
                format!(
                    "it did not read step {} from its stdin in {} ms; killed with its process group",
                    request.id,
                    (read_limit - written).as_millis()
                ),
            );
            return (answer, written);
        }
    }
    let started = match wait_until_read(stdin, process, written, read_limit).await {
        Reading::Read(started) => {
            if let Some(began) = began.take() {
                let _ = began.send(());
            }
            started
        }
        Reading::Gone => {
            let why = format!("it closed its stdin before reading step {}", request.id);
            return (gone(process, request, why).await, written);
        }
        Reading::TimedOut => {
            let answer = Answer::broken(
                BrokenKind::Hung,
                format!(
                    "it did not read step {} from its stdin in {} ms; killed with its process group",
                    request.id,
                    (read_limit - written).as_millis()
                ),
            );
            return (answer, written);
        }
    };
    let deadline = started + kill_after(request.timeout_ms);
    let answer = read_answer(process, lines, request, deadline).await;
    (answer, started)
}

/// Whether a session client read what was written to its stdin.
enum Reading {
    /// It did; the last moment the line was seen unread.
    Read(Instant),
    /// Nobody reads the pipe any more (the client exited or closed its stdin).
    Gone,
    TimedOut,
}

/// Waits until the reader of a pipe has consumed everything written to it, polling the
/// pipe's fill level (which Linux reports on either end) and whether it still has a reader.
async fn wait_until_read(
    stdin: &pipe::Sender,
    process: &mut ClientProcess,
    written: Instant,
    limit: Instant,
) -> Reading {
    let fd = stdin.as_raw_fd();
    // Before the first look, all that is known is that the line was not read before it
    // was written.
    let mut last_unread = written;
    loop {
        // Read the clock before looking: a line found unread by the look was unread at this
        // moment too. A clock read after the look (or after an await) could be later than
        // the client's read, and the step would seem to start after the client acted on it.
        let looked = Instant::now();
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int to the pointer, which is valid for the call.
        let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut unread) };
        if r != 0 || unread <= 0 {
            return Reading::Read(last_unread);
        }
        last_unread = looked;
        let mut poll = libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        };
        // SAFETY: poll with a zero timeout on one valid pollfd; it only writes `revents`.
        let polled = unsafe { libc::poll(&mut poll, 1, 0) };
        let no_reader = polled > 0 && poll.revents & libc::POLLERR != 0;
        if no_reader || process.wait_until(Instant::now()).await {
            return Reading::Gone;
        }
        if Instant::now() >= limit {
            return Reading::TimedOut;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The answer of a client whose stdin or stdout closed: how it ended, if it did.
async fn gone(process: &mut ClientProcess, request: &StepRequest, otherwise: String) -> Answer {
    let exited = process
        .wait_until(Instant::now() + Duration::from_millis(200))
        .await;
    let status = process.status().unwrap_or_default();
    match (exited, status.code, status.signal) {
        (true, Some(code @ (126 | 127)), _) => Answer::broken(
            BrokenKind::NotFound,
            format!(
                "the client command was {} (exit {code})",
                if code == 127 {
                    "not found"
                } else {
                    "not executable"
                }
            ),
        ),
        (true, _, Some(signal)) => Answer::broken(
            BrokenKind::Crashed,
            format!(
                "it was ended by signal {signal} before answering step {}",
                request.id
            ),
        ),
        (true, Some(code), None) => Answer::broken(
            BrokenKind::Exited,
            format!(
                "it exited (exit {code}) before answering step {}",
                request.id
            ),
        ),
        _ => Answer::broken(BrokenKind::Exited, otherwise),
    }
}

async fn read_answer(
    process: &mut ClientProcess,
    lines: &mut mpsc::Receiver<Line>,
    request: &StepRequest,
    deadline: Instant,
) -> Answer {
    loop {
        match tokio::time::timeout_at(deadline, lines.recv()).await {
            Err(_) => {
                return Answer::broken(
                    BrokenKind::Hung,
                    format!(
                        "no answer within the timeout of {} ms plus the runner's grace; killed with its process group",
                        request.timeout_ms
                    ),
                )
            }
            Ok(None) => {
                // Its stdout closed: report how it ended if it ended quickly.
                return gone(
                    process,
                    request,
                    format!("it closed its stdout before answering step {}", request.id),
                )
                .await;
            }
            Ok(Some(Line::TooLong(n))) => {
                return Answer::broken(
                    BrokenKind::Malformed,
                    format!("it wrote an answer line of {n} bytes, over the {SESSION_LINE_CAP}-byte limit"),
                )
            }
            Ok(Some(Line::Text(text))) => {
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Answer::from_session_line(&text, request.id);
            }
        }
    }
}

async fn drive_in_process(
    client: &dyn InProcessClient,
    socket: &Path,
    requests: &[StepRequest],
    origin: Instant,
) -> ClientRun {
    let mut run = ClientRun::default();
    let open_deadline = Instant::now()
        + kill_after(requests.first().map_or(0, |r| r.timeout_ms))
        + client.startup();
    let mut session = tokio::time::timeout_at(open_deadline, client.open(socket))
        .await
        .ok();
    let mut stopped: Option<String> = None;
    if session.is_none() {
        stopped = Some("the in-process client did not open a session in time".to_owned());
    }
    for (index, request) in requests.iter().enumerate() {
        let started = Instant::now();
        let answer = match (stopped.clone(), session.as_mut()) {
            (Some(detail), _) => Answer::NotRun { detail },
            (None, None) => Answer::NotRun {
                detail: "no session".to_owned(),
            },
            (None, Some(session)) => {
                let deadline = started + kill_after(request.timeout_ms);
                match tokio::time::timeout_at(deadline, session.execute(request)).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        stopped = Some(format!("the client hung at step {}", index + 1));
                        Answer::broken(
                            BrokenKind::Hung,
                            format!(
                                "no answer within the timeout of {} ms plus the runner's grace; abandoned",
                                request.timeout_ms
                            ),
                        )
                    }
                }
            }
        };
        run.steps.push(StepRecord {
            index,
            execute: request.execute.clone(),
            started_us: micros(started - origin),
            elapsed_us: micros(started.elapsed()),
            answer,
        });
    }
    run.peak_buffer_bytes = session.as_ref().and_then(|s| s.peak_buffer_bytes());
    run
}
