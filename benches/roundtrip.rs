//! guest-ping round trip and throughput: the mock against the real qemu-ga, in one run.
//!
//! `cargo bench --bench roundtrip` prints a table with the ratios. Both agents are separate
//! processes reached over a unix socket by the same client code: the real qemu-ga 7.2
//! (`-m unix-listen`, read-only block list) and `qga-harness mock` built by cargo with the
//! bench profile (release), on both transports.
//!
//! - sequential: one request, wait for its reply, repeat; median, p90 and p99 of 20,000
//!   round trips per agent, taken in 10 interleaved blocks so that drift on a shared machine
//!   hits every agent alike.
//! - pipelined: a writer thread and a reader thread on one connection, 100,000 requests;
//!   requests per second from the first write to the last reply (best of the rounds).
//! - idle RSS of the mock process: VmRSS from /proc right after start, and its peak
//!   (VmHWM) after all the traffic.
//!
//! Sizes can be changed with `QGA_BENCH_SEQUENTIAL`, `QGA_BENCH_PIPELINED` and
//! `QGA_BENCH_ROUNDS`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qga_harness::real_agent::RealAgent;

const PING: &[u8] = br#"{"execute":"guest-ping"}"#;
const MOCK_BINARY: &str = env!("CARGO_BIN_EXE_qga-harness");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `qga-harness mock` as a child process, killed when dropped.
struct MockProcess {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl MockProcess {
    fn start(transport: &str) -> MockProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("qga.sock");
        let child = Command::new(MOCK_BINARY)
            .args(["mock", "--transport", transport, "--socket"])
            .arg(&socket)
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
        // Waiting for a file to appear, not synchronising with a peer: the probe
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

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A /proc/PID/status field in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn connect(socket: &Path) -> UnixStream {
    // On virtio-serial the probe connection of the start-up check may still be being
    // dropped; connect() itself always succeeds at once.
    UnixStream::connect(socket).expect("connect")
}

/// `n` sequential round trips on one connection; each sample in nanoseconds.
fn sequential(stream: &mut UnixStream, n: usize, samples: &mut Vec<u64>) {
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
fn pipelined(socket: &Path, n: usize) -> f64 {
    let stream = connect(socket);
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

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)] as f64 / 1000.0
}

struct Figures {
    name: String,
    median_us: f64,
    p90_us: f64,
    p99_us: f64,
    per_second: f64,
}

fn main() {
    let sequential_n = env_usize("QGA_BENCH_SEQUENTIAL", 20_000);
    let pipelined_n = env_usize("QGA_BENCH_PIPELINED", 100_000);
    let rounds = env_usize("QGA_BENCH_ROUNDS", 10).max(1);

    let real = match RealAgent::start(&[]) {
        Ok(real) => real,
        Err(e) => {
            eprintln!("roundtrip: cannot start the real qemu-ga ({e}); nothing to compare with");
            std::process::exit(1);
        }
    };
    let virtio = MockProcess::start("virtio-serial");
    let listen = MockProcess::start("unix-listen");
    let idle_rss_kib = status_kib(virtio.pid(), "VmRSS:").unwrap_or(0);

    let agents: [(&str, &Path); 3] = [
        ("real qemu-ga 7.2 (unix-listen)", real.socket()),
        ("mock (virtio-serial)", &virtio.socket),
        ("mock (unix-listen)", &listen.socket),
    ];
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(sequential_n); agents.len()];
    let mut best_rate = vec![0f64; agents.len()];
    let block = sequential_n.div_ceil(rounds);
    for round in 0..rounds {
        for (i, (_, socket)) in agents.iter().enumerate() {
            let mut stream = connect(socket);
            // Warm-up, not measured.
            let mut discard = Vec::new();
            sequential(&mut stream, 200, &mut discard);
            let todo = block.min(sequential_n - samples[i].len());
            sequential(&mut stream, todo, &mut samples[i]);
            drop(stream);
            let rate = pipelined(socket, pipelined_n);
            best_rate[i] = best_rate[i].max(rate);
        }
        eprintln!("roundtrip: round {}/{rounds} done", round + 1);
    }

    let figures: Vec<Figures> = agents
        .iter()
        .zip(samples.iter_mut())
        .zip(&best_rate)
        .map(|(((name, _), samples), &per_second)| {
            samples.sort_unstable();
            Figures {
                name: (*name).to_owned(),
                median_us: percentile(samples, 0.5),
                p90_us: percentile(samples, 0.9),
                p99_us: percentile(samples, 0.99),
                per_second,
            }
        })
        .collect();
    let peak_rss_kib = status_kib(virtio.pid(), "VmHWM:").unwrap_or(0);
    let real_rss_kib = status_kib(real.pid(), "VmRSS:").unwrap_or(0);

    let real_figures = &figures[0];
    println!();
    println!(
        "guest-ping: {sequential_n} sequential round trips and {pipelined_n} pipelined requests per agent, {rounds} rounds"
    );
    println!();
    println!(
        "| agent | median µs | p90 µs | p99 µs | pipelined req/s | median vs real | pipelined vs real |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for f in &figures {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2}× | {:.2}× |",
            f.name,
            f.median_us,
            f.p90_us,
            f.p99_us,
            f.per_second,
            f.median_us / real_figures.median_us,
            f.per_second / real_figures.per_second,
        );
    }
    println!();
    println!(
        "memory: mock idle VmRSS {:.1} MiB, mock peak VmHWM {:.1} MiB after the runs; real qemu-ga VmRSS {:.1} MiB",
        idle_rss_kib as f64 / 1024.0,
        peak_rss_kib as f64 / 1024.0,
        real_rss_kib as f64 / 1024.0
    );
    let mock = &figures[1];
    println!(
        "targets (virtio-serial mock): median ≤ 0.70× real: {:.2}× {}; pipelined ≥ 2× real: {:.2}× {}; idle RSS ≤ 8 MiB: {:.1} MiB {}",
        mock.median_us / real_figures.median_us,
        verdict(mock.median_us / real_figures.median_us <= 0.7),
        mock.per_second / real_figures.per_second,
        verdict(mock.per_second / real_figures.per_second >= 2.0),
        idle_rss_kib as f64 / 1024.0,
        verdict(idle_rss_kib > 0 && idle_rss_kib <= 8 * 1024),
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}
