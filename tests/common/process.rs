//! The `qga-harness` binary as a process: a command with its output captured, a run that
//! must end by itself, and a server that must keep running until it is signalled.
//!
//! Exits are waited for on a thread with a deadline (a hang becomes a failure with a
//! message, and the child is killed); only a file's appearance is polled, as nothing
//! announces it.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_qga-harness");

/// How long a process may take to start, answer or exit before the test fails.
pub use super::PATIENCE;

/// `qga-harness` with stdin closed and stdout and stderr captured.
pub fn qga_harness() -> Command {
    let mut command = Command::new(BINARY);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// `qga-harness mock --socket SOCKET`, as [`qga_harness`].
pub fn mock_command(socket: &Path) -> Command {
    let mut command = qga_harness();
    command.args(["mock", "--socket"]).arg(socket);
    command
}

/// Runs a command that must exit by itself within the patience; its output. Stdin is
/// closed and stdout and stderr are captured.
pub fn run_to_exit(command: &mut Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qga-harness");
    let pid = child.id();
    within_patience(pid, move || child.wait_with_output()).expect("output")
}

/// Waits for `child` to exit within the patience; kills it and fails the test otherwise.
pub fn wait_for_exit(child: &mut Child) -> ExitStatus {
    let pid = child.id();
    within_patience(pid, || child.wait()).expect("wait")
}

/// Runs `wait` (which returns once process `pid` exits) on a thread; when it takes longer
/// than the patience, kills the process, which ends the wait, and fails the test.
fn within_patience<T: Send>(pid: u32, wait: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        scope.spawn(move || {
            let _ = tx.send(wait());
        });
        match rx.recv_timeout(PATIENCE) {
            Ok(result) => result,
            Err(_) => {
                signal(pid, libc::SIGKILL);
                panic!("qga-harness (pid {pid}) did not exit within {PATIENCE:?}");
            }
        }
    })
}

/// Sends `signal` to process `pid`, a child of this test.
fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill(2) of our own child process.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// Polls (with a deadline) until `path` exists, failing if `child` exits first.
pub fn wait_for_file(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("qga-harness exited at start: {status}: {stderr}");
        }
        assert!(
            Instant::now() < deadline,
            "no {} within {PATIENCE:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running `qga-harness` server (mock, proxy, fleet), killed when dropped.
pub struct Running {
    pub child: Child,
}

impl Running {
    /// Spawns `command` and waits until `ready` exists (its socket, or a control socket
    /// made after the others): from then on it serves and handles signals.
    pub fn start(command: &mut Command, ready: &Path) -> Running {
        let child = command.spawn().expect("spawn qga-harness");
        let mut running = Running { child };
        wait_for_file(ready, &mut running.child);
        running
    }

    /// `qga-harness mock --socket SOCKET EXTRA...`, ready when its socket exists.
    pub fn mock(socket: &Path, extra: &[&str]) -> Running {
        Running::start(mock_command(socket).args(extra), socket)
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: libc::c_int) {
        self::signal(self.child.id(), signal);
    }

    /// Waits for it to exit by itself (within the patience): its status and its stderr.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let status = wait_for_exit(&mut self.child);
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
    }

    /// SIGTERM, then its exit code.
    pub fn stop(self) -> i32 {
        self.signal(libc::SIGTERM);
        self.exit_code()
    }

    /// The exit code of a server that exits by itself.
    pub fn exit_code(self) -> i32 {
        self.wait().0.code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
