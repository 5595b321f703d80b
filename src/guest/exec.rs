//! guest-exec and guest-exec-status over simulated processes (QEMU qga/commands.c).
//!
//! A process runs to completion the moment it is spawned (its output and exit status are
//! known at once); what the host sees follows qemu-ga: `exited: false` until the
//! simulated duration has passed (measured with `tokio::time::Instant`, so tests can
//! pause time), then one status with the results, which also reaps the record.
//!
//! Programs are, in order: the profile's scripted processes; the builtins echo, true,
//! false, sleep, cat and sh (a small shell, see [`super::shell`]); anything else fails to
//! start as glib's spawn would.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::fs::{Errno, FileSystem, Node};
use super::profile::{ExecProfile, ProcessOutput, ScriptedProcess, Termination};
use super::qapi::ExecStatus;
use super::shell;

/// Each captured stream is cut at 16 MiB (`GUEST_EXEC_MAX_OUTPUT`).
pub(crate) const MAX_OUTPUT: usize = 16 * 1024 * 1024;

/// Where the output of a process goes (`GuestExecCaptureOutputMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CaptureMode {
    None,
    Stdout,
    Stderr,
    Separated,
    Merged,
}

impl CaptureMode {
    pub(crate) fn from_name(name: &str) -> Option<CaptureMode> {
        Some(match name {
            "none" => CaptureMode::None,
            "stdout" => CaptureMode::Stdout,
            "stderr" => CaptureMode::Stderr,
            "separated" => CaptureMode::Separated,
            "merged" => CaptureMode::Merged,
            _ => return None,
        })
    }
}

/// One captured stream, cut at [`MAX_OUTPUT`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stream {
    pub data: Vec<u8>,
    pub truncated: bool,
}

impl Stream {
    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_OUTPUT - self.data.len();
        if bytes.len() > room {
            self.data.extend_from_slice(&bytes[..room]);
            self.truncated = true;
        } else {
            self.data.extend_from_slice(bytes);
        }
    }

    fn full(&self) -> bool {
        self.truncated
    }
}

/// What a running program writes: stdout, stderr and both interleaved (for `merged`).
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub stdout: Stream,
    pub stderr: Stream,
    pub merged: Stream,
}

impl Output {
    pub(crate) fn write(&mut self, fd: u8, bytes: &[u8]) {
        match fd {
            1 => self.stdout.push(bytes),
            2 => self.stderr.push(bytes),
            _ => return,
        }
        self.merged.push(bytes);
    }
}

/// How a simulated run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Exited(i32),
    Signaled(i32),
    /// The program never ends (sleep infinity, cat /dev/zero, a scripted daemon).
    Never,
}

/// The world a program runs in.
pub(crate) struct Context<'a> {
    pub fs: &'a FileSystem,
    pub profile: &'a ExecProfile,
    pub pid: i64,
    pub env: BTreeMap<String, String>,
    pub stdin: Vec<u8>,
    pub out: Output,
    /// Simulated run time so far.
    pub elapsed: Duration,
    /// How many shells deep the run is.
    pub depth: u32,
}

impl Context<'_> {
    /// Directories searched for bare program names.
    fn search_path(&self) -> Vec<String> {
        match self.env.get("PATH") {
            Some(path) => path
                .split(':')
                .map(|d| {
                    if d.is_empty() {
                        ".".to_owned()
                    } else {
                        d.to_owned()
                    }
                })
                .collect(),
            None => self.profile.search_path.clone(),
        }
    }
}

/// A program found on the simulated guest.
#[derive(Clone, Debug)]
pub(crate) enum Program {
    Scripted(ScriptedProcess),
    Builtin(&'static str),
}

const BUILTINS: &[&str] = &["echo", "true", "false", "sleep", "cat", "sh"];

/// Finds a program as glib's spawn with `G_SPAWN_SEARCH_PATH` would; the error is the
/// errno execve would give.
pub(crate) fn find_program(
    ctx: &Context<'_>,
    path: &str,
    args: &[String],
) -> Result<Program, Errno> {
    let scripted = |candidate: &str| {
        ctx.profile.processes.iter().find(|p| {
            (p.path == candidate || p.path == path)
                && p.args.as_ref().is_none_or(|a| a.as_slice() == args)
        })
    };
    let at = |abs: &str| -> Result<Program, Errno> {
        if let Some(p) = scripted(abs) {
            return Ok(Program::Scripted(p.clone()));
        }
        for name in BUILTINS {
            if abs == format!("/usr/bin/{name}") || abs == format!("/bin/{name}") {
                return Ok(Program::Builtin(name));
            }
        }
        match ctx.fs.node(abs) {
            // Files created over guest-file-open are mode 0666, and directories cannot run.
            Some(_) => Err(Errno::Acces),
            None => Err(Errno::NoEnt),
        }
    };
    if path.is_empty() {
        return Err(Errno::NoEnt);
    }
    if path.contains('/') {
        let resolved = ctx.fs.resolve(path)?;
        return at(&resolved.path);
    }
    if let Some(p) = ctx
        .profile
        .processes
        .iter()
        .find(|p| p.path == path && p.args.as_ref().is_none_or(|a| a.as_slice() == args))
    {
        return Ok(Program::Scripted(p.clone()));
    }
    let mut denied = false;
    for dir in ctx.search_path() {
        let candidate = format!("{}/{path}", dir.trim_end_matches('/'));
        let Ok(resolved) = ctx.fs.resolve(&candidate) else {
            continue;
        };
        match at(&resolved.path) {
            Ok(p) => return Ok(p),
            Err(Errno::Acces) => denied = true,
            Err(_) => {}
        }
    }
    Err(if denied { Errno::Acces } else { Errno::NoEnt })
}

/// Runs a found program to its end, appending its output to `ctx.out`.
pub(crate) fn run_program(
    ctx: &mut Context<'_>,
    program: &Program,
    argv0: &str,
    args: &[String],
) -> Ending {
    match program {
        Program::Scripted(p) => run_scripted(ctx, p),
        Program::Builtin(name) => run_builtin(ctx, name, argv0, args),
    }
}

fn run_scripted(ctx: &mut Context<'_>, p: &ScriptedProcess) -> Ending {
    write_output(&mut ctx.out, 1, p.stdout.as_ref());
    write_output(&mut ctx.out, 2, p.stderr.as_ref());
    if p.runs_forever {
        return Ending::Never;
    }
    ctx.elapsed = ctx
        .elapsed
        .saturating_add(Duration::from_millis(p.duration_ms));
    match p.exit {
        Termination::Code(c) => Ending::Exited(c),
        Termination::Signal(s) => Ending::Signaled(s),
    }
}

fn write_output(out: &mut Output, fd: u8, spec: Option<&ProcessOutput>) {
    let Some(spec) = spec else { return };
    let bytes = match (&spec.text, &spec.base64) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(b)) => super::b64::decode_strict(b).unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    if bytes.is_empty() {
        return;
    }
    for _ in 0..spec.repeat {
        out.write(fd, &bytes);
        // Past the cut nothing more is kept; stop instead of looping on.
        let cut = match fd {
            1 => out.stdout.full(),
            _ => out.stderr.full(),
        };
        if cut && out.merged.full() {
            break;
        }
    }
}

fn run_builtin(ctx: &mut Context<'_>, name: &str, argv0: &str, args: &[String]) -> Ending {
    match name {
        "true" => Ending::Exited(0),
        "false" => Ending::Exited(1),
        "echo" => {
            let text = echo(args, false);
            ctx.out.write(1, &text);
            Ending::Exited(0)
        }
        "sleep" => sleep(ctx, "sleep", args),
        "cat" => cat(ctx, "cat", args),
        "sh" => shell::run_sh(ctx, argv0, args),
        _ => Ending::Exited(127),
    }
}

/// echo: coreutils (`-n`, `-e`, `-E` options) or dash's builtin (`-n` only, escapes
/// always interpreted).
pub(crate) fn echo(args: &[String], dash: bool) -> Vec<u8> {
    let mut newline = true;
    let mut escapes = dash;
    let mut rest = args;
    while let Some(first) = rest.first() {
        let flags = first.strip_prefix('-').filter(|f| !f.is_empty());
        let valid = flags.is_some_and(|f| {
            f.chars().all(|c| {
                if dash {
                    c == 'n'
                } else {
                    matches!(c, 'n' | 'e' | 'E')
                }
            })
        });
        if !valid {
            break;
        }
        for c in flags.unwrap_or_default().chars() {
            match c {
                'n' => newline = false,
                'e' => escapes = true,
                _ => escapes = false,
            }
        }
        rest = &rest[1..];
    }
    let mut out = Vec::new();
    for (i, arg) in rest.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        if escapes {
            if unescape(arg.as_bytes(), &mut out) {
                return out; // \c: stop all output, no newline
            }
        } else {
            out.extend_from_slice(arg.as_bytes());
        }
    }
    if newline {
        out.push(b'\n');
    }
    out
}

/// Interprets echo's backslash escapes; returns true on `\c`.
fn unescape(s: &[u8], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' || i + 1 == s.len() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        i += 1;
        let c = s[i];
        i += 1;
        match c {
            b'\\' => out.push(b'\\'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'c' => return true,
            b'e' => out.push(0x1b),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0' => {
                let mut v: u32 = 0;
                let mut n = 0;
                while n < 3 && i < s.len() && (b'0'..=b'7').contains(&s[i]) {
                    v = v * 8 + u32::from(s[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' if i < s.len() && s[i].is_ascii_hexdigit() => {
                let mut v: u32 = 0;
                let mut n = 0;
                while n < 2 && i < s.len() && s[i].is_ascii_hexdigit() {
                    v = v * 16 + (s[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    false
}

/// sleep: NUMBER[smhd]..., summed (coreutils).
pub(crate) fn sleep(ctx: &mut Context<'_>, name: &str, args: &[String]) -> Ending {
    if args.is_empty() {
        let msg = format!("{name}: missing operand\nTry '{name} --help' for more information.\n");
        ctx.out.write(2, msg.as_bytes());
        return Ending::Exited(1);
    }
    let mut total = 0.0f64;
    for arg in args {
        match parse_interval(arg) {
            Some(secs) => total += secs,
            None => {
                let msg = format!(
                    "{name}: invalid time interval '{arg}'\nTry '{name} --help' for more information.\n"
                );
                ctx.out.write(2, msg.as_bytes());
                return Ending::Exited(1);
            }
        }
    }
    // Beyond a century, it never ends as far as any test can tell.
    if !total.is_finite() || total > 3.2e9 {
        return Ending::Never;
    }
    ctx.elapsed = ctx.elapsed.saturating_add(Duration::from_secs_f64(total));
    Ending::Exited(0)
}

fn parse_interval(arg: &str) -> Option<f64> {
    if arg == "inf" || arg == "infinity" {
        return Some(f64::INFINITY);
    }
    let (num, unit) = match arg.char_indices().last() {
        Some((i, c @ ('s' | 'm' | 'h' | 'd'))) => (&arg[..i], c),
        _ => (arg, 's'),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let scale = match unit {
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86400.0,
        _ => 1.0,
    };
    Some(value * scale)
}

/// cat: files of the simulated file system, or stdin for none or `-`.
pub(crate) fn cat(ctx: &mut Context<'_>, name: &str, args: &[String]) -> Ending {
    let mut status = 0;
    let operands: Vec<String> = if args.is_empty() {
        vec!["-".to_owned()]
    } else {
        args.to_vec()
    };
    for arg in &operands {
        if arg.starts_with('-') && arg != "-" {
            let msg = format!("{name}: option '{arg}' is not supported by the simulated guest\n");
            ctx.out.write(2, msg.as_bytes());
            return Ending::Exited(2);
        }
    }
    for arg in &operands {
        if arg == "-" {
            let input = std::mem::take(&mut ctx.stdin);
            ctx.out.write(1, &input);
            continue;
        }
        let result = ctx
            .fs
            .resolve(arg)
            .and_then(|r| match ctx.fs.node(&r.path) {
                Some(Node::Dir) => Err(Errno::IsDir),
                Some(Node::Device(super::fs::Device::Null)) => Ok(None),
                // An endless source: cat copies it until killed.
                Some(Node::Device(_)) => Ok(Some(Vec::new())),
                Some(Node::File(data)) => Ok(Some(data.clone())),
                None => Err(Errno::NoEnt),
            });
        match result {
            Ok(None) => {}
            Ok(Some(data)) if data.is_empty() && is_endless(ctx.fs, arg) => return Ending::Never,
            Ok(Some(data)) => ctx.out.write(1, &data),
            Err(e) => {
                let msg = format!("{name}: {arg}: {}\n", e.text());
                ctx.out.write(2, msg.as_bytes());
                status = 1;
            }
        }
    }
    Ending::Exited(status)
}

fn is_endless(fs: &FileSystem, path: &str) -> bool {
    fs.resolve(path)
        .ok()
        .and_then(|r| fs.node(&r.path).cloned())
        .is_some_and(|n| matches!(n, Node::Device(d) if d != super::fs::Device::Null))
}

/// A process qemu-ga spawned and has not reaped yet.
#[derive(Debug)]
struct Record {
    pid: i64,
    /// When it exits; `None`: never.
    exits_at: Option<Instant>,
    ending: Ending,
    out: Option<Stream>,
    err: Option<Stream>,
}

/// qemu-ga's table of spawned processes, and the guest's pid counter.
#[derive(Debug)]
pub(crate) struct Processes {
    next_pid: i64,
    records: Vec<Record>,
}

/// The simulation refuses to spawn (as a guest out of processes or memory would) beyond
/// this many unreaped processes or this much unreaped captured output, so a client that
/// never asks for the status cannot grow the mock's memory without end.
const MAX_RECORDS: usize = 4096;
const MAX_RETAINED_OUTPUT: usize = 256 * 1024 * 1024;

/// Linux's default `pid_max`, and the first pid after a wrap (`RESERVED_PIDS`).
const PID_MAX: i64 = 4_194_304;
const PID_WRAP: i64 = 300;

/// What guest-exec asks for.
pub(crate) struct ExecRequest<'a> {
    pub path: &'a str,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub input: Option<Vec<u8>>,
    pub capture: CaptureMode,
}

impl Processes {
    pub(crate) fn new(first_pid: i64) -> Self {
        Processes {
            next_pid: first_pid.clamp(2, PID_MAX - 1),
            records: Vec::new(),
        }
    }

    fn allocate_pid(&mut self) -> i64 {
        loop {
            let pid = self.next_pid;
            self.next_pid = if pid + 1 >= PID_MAX {
                PID_WRAP
            } else {
                pid + 1
            };
            if !self.records.iter().any(|r| r.pid == pid) {
                return pid;
            }
        }
    }

    /// guest-exec: spawns and returns the pid, or the spawn error text.
    pub(crate) fn spawn(
        &mut self,
        fs: &FileSystem,
        profile: &ExecProfile,
        req: ExecRequest<'_>,
    ) -> Result<i64, String> {
        let env: BTreeMap<String, String> = req
            .env
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let mut ctx = Context {
            fs,
            profile,
            pid: self.next_pid,
            env,
            stdin: req.input.unwrap_or_default(),
            out: Output::default(),
            elapsed: Duration::ZERO,
            depth: 0,
        };
        let program = find_program(&ctx, req.path, &req.args).map_err(|e| {
            format!(
                "Guest agent command failed, error was 'Failed to execute child process \u{201C}{}\u{201D} ({})'",
                req.path,
                e.text()
            )
        })?;
        let retained: usize = self
            .records
            .iter()
            .flat_map(|r| [&r.out, &r.err])
            .flatten()
            .map(|s| s.data.len())
            .sum();
        if self.records.len() >= MAX_RECORDS || retained >= MAX_RETAINED_OUTPUT {
            return Err("Guest agent command failed, error was 'Failed to fork (Resource temporarily unavailable)'".to_owned());
        }
        let pid = self.allocate_pid();
        ctx.pid = pid;
        let ending = run_program(&mut ctx, &program, req.path, &req.args);
        let exits_at = match ending {
            Ending::Never => None,
            // Past the end of representable time means never.
            _ => Instant::now().checked_add(ctx.elapsed),
        };
        let output = ctx.out;
        let (out, err) = match req.capture {
            CaptureMode::None => (None, None),
            CaptureMode::Stdout => (Some(output.stdout), None),
            CaptureMode::Stderr => (None, Some(output.stderr)),
            CaptureMode::Separated => (Some(output.stdout), Some(output.stderr)),
            CaptureMode::Merged => (Some(output.merged), None),
        };
        self.records.push(Record {
            pid,
            exits_at,
            ending,
            out,
            err,
        });
        Ok(pid)
    }

    /// guest-exec-status: `None` when there is no such record.
    pub(crate) fn status(&mut self, pid: i64) -> Option<ExecStatus> {
        let at = self.records.iter().position(|r| r.pid == pid)?;
        let record = &self.records[at];
        let exited = record.exits_at.is_some_and(|t| Instant::now() >= t);
        if !exited {
            return Some(ExecStatus::default());
        }
        // The first status that reports the exit reaps the record.
        let record = self.records.remove(at);
        let mut status = ExecStatus {
            exited: true,
            ..ExecStatus::default()
        };
        match record.ending {
            Ending::Exited(code) => status.exitcode = Some(i64::from(code & 0xff)),
            Ending::Signaled(sig) => status.signal = Some(i64::from(sig)),
            Ending::Never => {}
        }
        // Data only when non-empty; the truncated flag comes with the data (as the
        // measured 7.2.22 agent reports it).
        if let Some(out) = record.out.filter(|s| !s.data.is_empty()) {
            status.out_data = Some(super::b64::encode(&out.data));
            status.out_truncated = Some(out.truncated);
        }
        if let Some(err) = record.err.filter(|s| !s.data.is_empty()) {
            status.err_data = Some(super::b64::encode(&err.data));
            status.err_truncated = Some(err.truncated);
        }
        Some(status)
    }

    /// The agent process died: the records of its children are gone.
    pub(crate) fn forget_all(&mut self) {
        self.records.clear();
    }
}
