//! Ctrl-C (SIGINT) and SIGTERM end every serving subcommand the same way: it stops
//! serving, cleans up (its socket removed, its summary written) and exits 0.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use common::process::{qga_harness, Running};
use rstest::rstest;

/// A serving subcommand.
#[derive(Clone, Copy, Debug)]
enum Server {
    Mock,
    Proxy,
    Fleet,
}

/// A started server: the process, the socket it must remove, and its stdout.
struct Started {
    server: Running,
    socket: PathBuf,
    stdout: BufReader<std::process::ChildStdout>,
}

fn start(kind: Server, dir: &Path) -> Started {
    let mut command = qga_harness();
    let socket = match kind {
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
    // The fleet says when every socket exists; the others are ready when theirs does.
    let mut server = match kind {
        Server::Fleet => Running {
            child: command.spawn().expect("spawn qga-harness"),
        },
        Server::Mock | Server::Proxy => Running::start(&mut command, &socket),
    };
    let mut stdout = BufReader::new(server.child.stdout.take().expect("stdout"));
    if let Server::Fleet = kind {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        assert_eq!(line, "ready\n");
    }
    Started {
        server,
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

    started.server.signal(signal);
    let (status, stderr) = started.server.wait();

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
