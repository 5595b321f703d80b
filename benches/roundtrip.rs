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

use std::os::unix::net::UnixStream;
use std::path::Path;

mod common;
use common::{env_usize, percentile, pipelined, sequential, verdict, MockProcess};

use qga_harness::internals::real_agent::RealAgent;

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
    let virtio = MockProcess::start(|_| vec!["--transport".into(), "virtio-serial".into()]);
    let listen = MockProcess::start(|_| vec!["--transport".into(), "unix-listen".into()]);
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
            let mut stream = UnixStream::connect(socket).expect("connect");
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
