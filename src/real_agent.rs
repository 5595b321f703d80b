//! Starting the real qemu-ga on this host, safely, for side-by-side comparisons.
//!
//! The agent runs with `-m unix-listen` in a temp dir and a block list that disables every
//! command that would change the machine, so it can only read.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every command that changes the machine it runs on (the agent's command table: the
/// commands flagged `changes_machine`), for `--block-rpcs`.
pub fn safe_block_list() -> Vec<&'static str> {
    crate::agent::commands_that_change_the_machine().collect()
}

/// The path of the qemu-ga binary: `$QGA_HARNESS_QEMU_GA`, else `qemu-ga` on the `PATH` or
/// in `/usr/sbin` (where Debian installs it).
pub fn qemu_ga_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QGA_HARNESS_QEMU_GA") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("qemu-ga"))
        .find(|candidate| candidate.is_file())
}

/// A running real qemu-ga, killed when dropped.
#[derive(Debug)]
pub struct RealAgent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl RealAgent {
    /// Starts qemu-ga with [`safe_block_list`] and waits (up to 10 s) until its socket
    /// accepts connections. `extra_block` adds more commands to the block list.
    pub fn start(extra_block: &[&str]) -> io::Result<RealAgent> {
        let binary = qemu_ga_binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "qemu-ga not found: install the Debian package qemu-guest-agent or set QGA_HARNESS_QEMU_GA",
            )
        })?;
        let dir = tempfile::Builder::new().prefix("qga-real").tempdir()?;
        let socket = dir.path().join("qga.sock");
        let state = dir.path().join("state");
        std::fs::create_dir(&state)?;
        let block: Vec<&str> = safe_block_list()
            .into_iter()
            .chain(extra_block.iter().copied())
            .collect();
        let child = Command::new(binary)
            .arg("-m")
            .arg("unix-listen")
            .arg("-p")
            .arg(&socket)
            .arg("-t")
            .arg(&state)
            .arg("-b")
            .arg(block.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut agent = RealAgent {
            child,
            socket,
            _dir: dir,
        };
        agent.wait_ready(Duration::from_secs(10))?;
        Ok(agent)
    }

    fn wait_ready(&mut self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "qemu-ga exited at start: {status}"
                )));
            }
            // A probe connection that is accepted and closed at once leaves nothing behind:
            // it sends no bytes, so the agent's parser is untouched.
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "qemu-ga did not open its socket within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The agent's unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
