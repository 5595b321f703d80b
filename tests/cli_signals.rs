//! Ctrl-C (SIGINT) and SIGTERM end every serving subcommand the same way: it stops
//! serving, cleans up (its socket removed, its summary written) and exits 0.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rstest::rstest;

const BINARY: &str = env!("CARGO_BIN_EXE_qga-harness");
const PATIENCE: Duration = Duration::from_secs(60);

/// A serving subcommand.
#[derive(Clone, Copy, Debug)]
enum Server {
    Mock,
    Proxy,
    Fleet,
}

/// A started server: the child, the socket it must remove, and its stdout.
struct Started {
    child: Child,
    socket: PathBuf,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls (with a deadline) until `path` exists; the server binds its socket only after
/// its signal handlers are in place, so from then on a signal is handled.
fn wait_for(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "no {} in time", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn start(server: Server, dir: &Path) -> Started {
    let mut command = Command::new(BINARY);
    let socket = match server {
        Server::Mock => {
            let socket = dir.join("qga.sock");
            command.args(["mock", "--socket"]).arg(&socket);
            socket
        }
        Server::Proxy => {
            let upstream = dir.join("upstream.sock");
            // A listening socket stands in for the real agent: nothing connects to it here.
            std::mem::forget(UnixListener::bind(&upstream).expect("bind the upstream"));
            let socket = dir.join("proxy.sock");
            command
                .args(["proxy", "--listen"])
                .arg(&socket)
                .arg("--upstream")
                .arg(&upstream);
            socket
        }
        Server::Fleet => {
            let control = dir.join("control.sock");
            command
                .args(["mock", "--fleet", "3", "--dir"])
                .arg(dir.join("vms"))
                .arg("--control")
                .arg(&control);
            control
        }
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qga-harness");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    match server {
        // The fleet says when every socket exists.
        Server::Fleet => {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read");
            assert_eq!(line, "ready\n");
        }
        Server::Mock | Server::Proxy => wait_for(&socket, &mut child),
    }
    Started {
        child,
        socket,
        stdout,
    }
}

#[rstest]
fn a_signal_ends_a_server_cleanly(
    #[values(Server::Mock, Server::Proxy, Server::Fleet)] server: Server,
    #[values(libc::SIGINT, libc::SIGTERM)] signal: libc::c_int,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut started = start(server, dir.path());
    let pid = libc::pid_t::try_from(started.child.id()).expect("pid");
    // SAFETY: kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);

    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = started.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "{server:?} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = started.child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert_eq!(status.code(), Some(0), "{server:?}: {stderr}");
    assert!(
        !started.socket.exists(),
        "{server:?} removes {}",
        started.socket.display()
    );
    if let Server::Fleet = server {
        let mut rest = String::new();
        started.stdout.read_to_string(&mut rest).expect("read");
        let totals = rest.lines().last().expect("a summary");
        assert!(totals.contains("\"totals\""), "{totals}");
    }
}
