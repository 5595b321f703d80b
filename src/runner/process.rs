//! The client process: started in a process group of its own, its output captured in
//! bounded buffers, killed with its whole group at the deadline, and reaped with `wait4` so
//! its exit status, signal and peak RSS are known. No orphan and no zombie is left behind.
//!
//! Reaping works in two steps so a process-group id is never signalled after it could have
//! been reused: a watcher thread waits for the leader's exit without reaping it
//! (`waitid(WNOWAIT)`), which keeps its pid (the group id) reserved while the rest of the
//! group is killed; only then is the leader reaped. Members of the group that outlive the
//! leader are re-parented to the runner (a child subreaper) and reaped by group.
//!
//! Signals, group waits and the subreaper go through `nix`; the leader's final reap stays
//! a raw `wait4`, the one call that returns the child's own resource usage (its peak
//! RSS): `nix` has no `wait4`, and `getrusage(RUSAGE_CHILDREN)` sums every child.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long stragglers of a killed group may take to disappear before the runner reports
/// them as left behind.
const STRAGGLER_LIMIT: Duration = Duration::from_secs(2);

/// How a finished client process ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExitRecord {
    /// The exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// True when the runner had to kill it (its deadline passed).
    pub killed_by_runner: bool,
    /// Peak resident set size in KiB, of the process and the children it waited for
    /// (`ru_maxrss` from `wait4`).
    pub peak_rss_kib: u64,
    /// Processes of its group still present after the kill (0 unless the system refused).
    pub left_behind: usize,
}

impl ExitRecord {
    /// `exit 0`, `ended by signal 11`, `stopped by the runner at its deadline (signal 9)`.
    pub fn describe(&self) -> String {
        let how = match (self.code, self.signal) {
            (_, Some(signal)) => format!("signal {signal}"),
            (Some(code), None) => format!("exit {code}"),
            (None, None) => "unknown exit status".to_owned(),
        };
        match (self.killed_by_runner, self.signal) {
            (true, _) => format!("stopped by the runner at its deadline ({how})"),
            (false, Some(_)) => format!("ended by {how}"),
            (false, None) => how,
        }
    }
}

/// Makes this process the reaper of orphaned descendants, so a client's grandchildren come
/// back to the runner (and are reaped) when their parent dies, instead of to init.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Without it (an old kernel) grandchildren go to init: they are still killed
        // with the group, only not reaped here.
        let _ = nix::sys::prctl::set_child_subreaper(true);
    });
}

/// A running client process, leader of its own process group.
#[derive(Debug)]
pub struct ClientProcess {
    pid: Pid,
    /// Fires when the leader has exited (it stays a zombie until reaped), with its status.
    exited: Option<oneshot::Receiver<Status>>,
    has_exited: bool,
    status: Option<Status>,
    reaped: bool,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

impl ClientProcess {
    /// Starts `sh -c COMMAND_LINE` in a new process group, with piped stdin (when
    /// `with_stdin`), stdout and stderr. Must be called inside a tokio runtime.
    pub fn spawn(command_line: &str, with_stdin: bool) -> io::Result<ClientProcess> {
        become_subreaper();
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(command_line)
            .process_group(0)
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let pid = libc::pid_t::try_from(child.id())
            .map(Pid::from_raw)
            .map_err(|_| io::Error::other("process id out of range"))?;
        let stdin = child
            .stdin
            .take()
            .map(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)))
            .transpose();
        let stdout = child
            .stdout
            .take()
            .map(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)))
            .transpose();
        let stderr = child
            .stderr
            .take()
            .map(|s| pipe::Receiver::from_owned_fd(OwnedFd::from(s)))
            .transpose();
        // `child` is dropped without waiting: the process is ours to reap from here.
        drop(child);
        let (tx, rx) = oneshot::channel();
        let watcher = std::thread::Builder::new()
            .name("qga-client-watch".into())
            .spawn(move || {
                let status = wait_for_exit_without_reaping(pid);
                let _ = tx.send(status);
            });
        let mut process = ClientProcess {
            pid,
            exited: Some(rx),
            has_exited: false,
            status: None,
            reaped: false,
            stdin: None,
            stdout: None,
            stderr: None,
        };
        if let Err(e) = watcher {
            // Without a watcher the process cannot be waited for: stop it now.
            process.kill_group(Signal::SIGKILL);
            process.reap_now();
            return Err(e);
        }
        match (stdin, stdout, stderr) {
            (Ok(stdin), Ok(stdout), Ok(stderr)) => {
                process.stdin = stdin;
                process.stdout = stdout;
                process.stderr = stderr;
                Ok(process)
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        }
    }

    /// The process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Waits until the process exits or `deadline` passes; true when it exited.
    pub async fn wait_until(&mut self, deadline: Instant) -> bool {
        if self.has_exited {
            return true;
        }
        let Some(exited) = self.exited.as_mut() else {
            return true;
        };
        match tokio::time::timeout_at(deadline, exited).await {
            Ok(status) => {
                self.has_exited = true;
                self.exited = None;
                self.status = status.ok();
                true
            }
            Err(_) => false,
        }
    }

    /// How the leader ended, once [`ClientProcess::wait_until`] saw it exit.
    pub fn status(&self) -> Option<Status> {
        self.status
    }

    /// Ends the process and its whole group, reaps everything and reports how the leader
    /// ended. A leader still running gets SIGTERM, then SIGKILL after `term_grace`; the
    /// group always gets SIGKILL, so no descendant outlives the case.
    pub async fn finish(mut self, term_grace: Duration) -> ExitRecord {
        let mut killed = false;
        if !self.has_exited {
            self.kill_group(Signal::SIGTERM);
            killed = true;
            let deadline = Instant::now() + term_grace;
            self.wait_until(deadline).await;
        }
        // The leader is alive or a zombie: its pid, our group id, cannot have been reused.
        self.kill_group(Signal::SIGKILL);
        if !self.has_exited {
            // SIGKILL cannot be ignored; a process stuck in the kernel may take a moment.
            self.wait_until(Instant::now() + STRAGGLER_LIMIT).await;
        }
        if !self.has_exited {
            // Still there: leave it to the background reaper of `drop`.
            return ExitRecord {
                killed_by_runner: true,
                left_behind: count_group_members(self.pid.as_raw()).max(1),
                ..ExitRecord::default()
            };
        }
        let mut record = self.reap_now();
        record.killed_by_runner = killed;
        record.left_behind = self.reap_group().await;
        record
    }

    /// Signals the whole group; its id is our child's pid, which stays reserved until we
    /// reap it. A group already gone is no error.
    fn kill_group(&self, signal: Signal) {
        let _ = killpg(self.pid, signal);
    }

    /// Reaps the leader; called only once it has exited (or to clean up a failed start
    /// after SIGKILL), so the wait is immediate.
    fn reap_now(&mut self) -> ExitRecord {
        if self.reaped {
            return ExitRecord::default();
        }
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: wait4 writes to the two out-pointers, both valid for the call.
            let r = unsafe { libc::wait4(self.pid.as_raw(), &mut status, 0, &mut usage) };
            if r == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            self.reaped = true;
            if r != self.pid.as_raw() {
                return ExitRecord::default();
            }
            break;
        }
        let (code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            (None, None)
        };
        ExitRecord {
            code,
            signal,
            killed_by_runner: false,
            peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            left_behind: 0,
        }
    }

    /// Reaps what is left of the group (already sent SIGKILL) and waits, with a deadline,
    /// until no process of the group exists. Returns how many were still there.
    async fn reap_group(&self) -> usize {
        let deadline = Instant::now() + STRAGGLER_LIMIT;
        loop {
            reap_exited_members(self.pid);
            if !group_exists(self.pid) {
                return 0;
            }
            if Instant::now() >= deadline {
                return count_group_members(self.pid.as_raw());
            }
            // The kill is asynchronous in the kernel; poll until it is done.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for ClientProcess {
    /// A process dropped before `finish` (the case was abandoned): kill the whole group at
    /// once and reap it from a thread, so nothing is left behind.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        self.kill_group(Signal::SIGKILL);
        let pid = self.pid;
        let reaper = move || {
            reap_leader(pid);
            let limit = std::time::Instant::now() + STRAGGLER_LIMIT;
            while group_exists(pid) && std::time::Instant::now() < limit {
                reap_exited_members(pid);
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        let spawned = std::thread::Builder::new()
            .name("qga-client-reap".into())
            .spawn(reaper);
        if let Ok(handle) = spawned {
            if let Ok(mut reapers) = REAPERS.lock() {
                reapers.retain(|h| !h.is_finished());
                reapers.push(handle);
            }
        } else {
            // No thread to spare: reap the leader here (it was sent SIGKILL).
            reap_leader(pid);
        }
        self.reaped = true;
    }
}

/// How a process ended: its exit code, or the signal that ended it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// Reaper threads of processes dropped before they were finished.
static REAPERS: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

/// Waits, up to `limit`, until every process dropped unfinished (its case abandoned) has
/// been killed and reaped with its group. A program that exits right after abandoning
/// cases calls this first, so it leaves no zombie behind.
pub fn finish_reaping(limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    let handles = match REAPERS.lock() {
        Ok(mut reapers) => std::mem::take(&mut *reapers),
        Err(_) => return,
    };
    for handle in handles {
        while !handle.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
}

/// Blocks until `pid` (our child) has exited, leaving it a zombie; returns its status.
fn wait_for_exit_without_reaping(pid: Pid) -> Status {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(Errno::EINTR) => {}
            Ok(WaitStatus::Exited(_, code)) => {
                return Status {
                    code: Some(code),
                    signal: None,
                }
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Status {
                    code: None,
                    signal: Some(signal as i32),
                }
            }
            _ => return Status::default(),
        }
    }
}

/// Blocks until the leader `pid` (our child, sent SIGKILL) is reaped.
fn reap_leader(pid: Pid) {
    while waitpid(pid, None) == Err(Errno::EINTR) {}
}

/// Reaps, without blocking, every member of group `pgid` that has exited and was
/// re-parented to us.
fn reap_exited_members(pgid: Pid) {
    let group = Pid::from_raw(-pgid.as_raw());
    while let Ok(status) = waitpid(group, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Whether any process of group `pgid` still exists (signal 0 only checks).
fn group_exists(pgid: Pid) -> bool {
    killpg(pgid, None).is_ok()
}

/// Counts the processes whose process group is `pgid`, from `/proc`.
pub fn count_group_members(pgid: libc::pid_t) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat_pgid(stat) == Some(pgid))
        .count()
}

/// The process-group field of a `/proc/PID/stat` line (the comm field may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis).
fn stat_pgid(stat: &str) -> Option<libc::pid_t> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Output kept from a stream: its first `cap` bytes, and how many there were in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    pub total: usize,
}

impl Captured {
    /// True when bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total > self.bytes.len()
    }
}

/// Reads a stream to its end, keeping at most `cap` bytes (the rest is read and dropped,
/// so the client never blocks on a full pipe).
pub async fn capture(mut stream: pipe::Receiver, cap: usize) -> Captured {
    let mut captured = Captured::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return captured,
            Ok(n) => {
                captured.total += n;
                let room = cap.saturating_sub(captured.bytes.len());
                captured.bytes.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_pgid_skips_a_comm_with_spaces_and_parentheses() {
        let stat = "1234 (a (weird) name) S 1 777 777 0 -1 4194560";
        assert_eq!(stat_pgid(stat), Some(777));
        assert_eq!(stat_pgid("garbage"), None);
    }

    #[tokio::test]
    async fn exit_code_and_output_are_recorded() {
        let mut process =
            ClientProcess::spawn("printf hello; printf oops >&2; exit 3", false).expect("spawns");
        let out = tokio::spawn(capture(process.stdout.take().expect("stdout"), 1024));
        let err = tokio::spawn(capture(process.stderr.take().expect("stderr"), 2));
        assert!(
            process
                .wait_until(Instant::now() + Duration::from_secs(5))
                .await
        );
        let exit = process.finish(Duration::from_millis(100)).await;
        assert_eq!(exit.code, Some(3));
        assert!(!exit.killed_by_runner);
        assert!(exit.peak_rss_kib > 0);
        assert_eq!(out.await.expect("joins").bytes, b"hello");
        let err = err.await.expect("joins");
        assert_eq!(err.bytes, b"oo");
        assert!(err.truncated());
    }

    #[tokio::test]
    async fn a_hanging_group_that_ignores_sigterm_is_killed() {
        let mut process =
            ClientProcess::spawn("trap '' TERM; (trap '' TERM; sleep 30) & sleep 30", false)
                .expect("spawns");
        let pgid = libc::pid_t::try_from(process.pid()).expect("pid");
        assert!(
            !process
                .wait_until(Instant::now() + Duration::from_millis(100))
                .await
        );
        let exit = process.finish(Duration::from_millis(100)).await;
        assert!(exit.killed_by_runner);
        assert_eq!(exit.signal, Some(libc::SIGKILL));
        assert_eq!(exit.left_behind, 0);
        assert_eq!(count_group_members(pgid), 0);
    }
}
