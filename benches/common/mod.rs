//! What the benchmarks share: the mock as a child process, the sequential and pipelined
//! guest-ping loops, and how figures are read and judged. Each benchmark uses a part.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PING: &[u8] = br#"{"execute":"guest-ping"}"#;
pub const MOCK_BINARY: &str = env!("CARGO_BIN_EXE_qga-harness");

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `qga-harness mock` as a child process, killed when dropped.
pub struct MockProcess {
    child: Child,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl MockProcess {
    /// `qga-harness mock --socket DIR/qga.sock` and the arguments `extra` returns, given
    /// the mock's temp dir (where it may write a scenario file first).
    pub fn start(extra: impl FnOnce(&Path) -> Vec<OsString>) -> MockProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("qga.sock");
        let child = Command::new(MOCK_BINARY)
            .args(["mock", "--socket"])
            .arg(&socket)
            .args(extra(dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn qga-harness mock");
        let mut mock = MockProcess {
            child,
            socket,
            _dir: dir,
        };
        mock.wait_ready();
        mock
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        // Waiting for the socket to accept, not synchronising with a peer: the probe
        // connection carries no bytes.
        while UnixStream::connect(&self.socket).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("qga-harness mock exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the mock did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` sequential round trips on one connection; each sample in nanoseconds.
pub fn sequential(stream: &mut UnixStream, n: usize, samples: &mut Vec<u64>) {
    let mut buf = [0u8; 256];
    for _ in 0..n {
        let start = Instant::now();
        stream.write_all(PING).expect("write");
        loop {
            let got = stream.read(&mut buf).expect("read");
            assert!(got > 0, "EOF during the benchmark");
            if buf[got - 1] == b'\n' {
                break;
            }
        }
        samples.push(start.elapsed().as_nanos() as u64);
    }
}

/// Requests per second with a writer and a reader running at once.
pub fn pipelined(socket: &Path, n: usize) -> f64 {
    // On virtio-serial the probe connection of the start-up check may still be being
    // dropped; connect() itself always succeeds at once.
    let stream = UnixStream::connect(socket).expect("connect");
    let mut reader = stream.try_clone().expect("clone");
    let mut writer = stream;
    let start = Instant::now();
    let writing = std::thread::spawn(move || {
        const BATCH: usize = 64;
        let chunk: Vec<u8> = PING.repeat(BATCH);
        let mut sent = 0;
        while sent < n {
            let k = BATCH.min(n - sent);
            writer.write_all(&chunk[..k * PING.len()]).expect("write");
            sent += k;
        }
        writer
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut replies = 0;
    while replies < n {
        let got = reader.read(&mut buf).expect("read");
        assert!(got > 0, "EOF during the benchmark");
        replies += buf[..got].iter().filter(|&&b| b == b'\n').count();
    }
    let elapsed = start.elapsed();
    drop(writing.join().expect("writer thread"));
    n as f64 / elapsed.as_secs_f64()
}

/// The `p` quantile of sorted nanosecond samples, in microseconds.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)] as f64 / 1000.0
}

pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}
