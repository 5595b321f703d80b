//! guest-ping round trip on an idle machine: the mock against the real qemu-ga, both pinned
//! to one core and unpinned, with the CPU time each agent spends per request.
//!
//! `cargo bench --bench roundtrip_idle` starts the real qemu-ga 7.2 (`-m unix-listen`,
//! read-only block list) and `qga-harness mock` (virtio-serial, the default transport) and
//! drives both with the same client: one request, wait for its reply, repeat.
//!
//! - pinned: the agent's threads and the client's thread on CPU 0 (as `taskset -c 0` on
//!   both), so every wake-up is a switch on one core;
//! - unpinned: no affinity, so on an idle machine a round trip is two cross-core wake-ups.
//!
//! Each placement runs `QGA_BENCH_SEQUENTIAL` round trips per agent (20,000 by default) in
//! `QGA_BENCH_ROUNDS` interleaved blocks (10), so drift hits both agents alike. CPU per
//! request is the agent's own run time (`/proc/PID/task/*/schedstat`, all its threads)
//! over the round trips it served: a mock that spins while waiting shows here even when
//! its latency looks good. Targets (on a machine with no other load): median pinned ≤ 0.7×
//! real, unpinned ≤ 1.0× real, CPU per request ≤ real's in both. The load average is
//! printed with the figures: on a loaded machine cores never sleep and the ratios differ.

use std::os::unix::net::UnixStream;
use std::path::Path;

mod common;
use common::{env_usize, sequential, verdict, MockProcess};

use qga_harness::internals::real_agent::RealAgent;

const WARM_UP: usize = 200;

/// The threads of process `pid`.
fn threads(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Run time of all threads of `pid` so far, in nanoseconds (schedstat's first field).
fn cpu_ns(pid: u32) -> u64 {
    threads(pid)
        .into_iter()
        .filter_map(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Pins thread `tid` (0: the calling thread) to `cpus`, or lets it run anywhere (`None`).
fn set_affinity(tid: i32, cpus: Option<&[usize]>) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let all: Vec<usize> = (0..online_cpus()).collect();
    for &cpu in cpus.unwrap_or(&all) {
        // SAFETY: `cpu` is below CPU_SETSIZE (the machine's CPU count).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size given.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity({tid}): {}",
        std::io::Error::last_os_error()
    );
}

/// The CPUs online (not `available_parallelism`, which shrinks to a pinned thread's mask).
fn online_cpus() -> usize {
    // SAFETY: sysconf reads a system value.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Pins every thread of process `pid` (or unpins it).
fn set_process_affinity(pid: u32, cpus: Option<&[usize]>) {
    for tid in threads(pid) {
        set_affinity(tid, cpus);
    }
}

fn median_us(samples: &mut [u64]) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2] as f64 / 1000.0
}

struct Agent<'a> {
    name: &'static str,
    socket: &'a Path,
    pid: u32,
}

/// Median round trip (µs) and CPU per request (µs) of each agent, in one placement.
fn measure(agents: &[Agent], pinned: bool, n: usize, rounds: usize) -> Vec<(f64, f64)> {
    let cpus: Option<&[usize]> = if pinned { Some(&[0]) } else { None };
    set_affinity(0, cpus);
    for agent in agents {
        set_process_affinity(agent.pid, cpus);
    }
    let mut samples = vec![Vec::with_capacity(n); agents.len()];
    let mut cpu = vec![0u64; agents.len()];
    let block = n.div_ceil(rounds);
    for _ in 0..rounds {
        for (i, agent) in agents.iter().enumerate() {
            let todo = block.min(n - samples[i].len());
            let mut stream = UnixStream::connect(agent.socket).expect("connect");
            let mut discard = Vec::new();
            sequential(&mut stream, WARM_UP, &mut discard);
            let before = cpu_ns(agent.pid);
            sequential(&mut stream, todo, &mut samples[i]);
            cpu[i] += cpu_ns(agent.pid) - before;
        }
    }
    samples
        .iter_mut()
        .zip(cpu)
        .map(|(s, ns)| {
            let count = s.len().max(1) as f64;
            (median_us(s), ns as f64 / 1000.0 / count)
        })
        .collect()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let n = env_usize("QGA_BENCH_SEQUENTIAL", 20_000);
    let rounds = env_usize("QGA_BENCH_ROUNDS", 10).max(1);
    let real = match RealAgent::start(&[]) {
        Ok(real) => real,
        Err(e) => {
            eprintln!(
                "roundtrip_idle: cannot start the real qemu-ga ({e}); nothing to compare with"
            );
            std::process::exit(1);
        }
    };
    let mock = MockProcess::start(|_| Vec::new());
    let agents = [
        Agent {
            name: "real qemu-ga 7.2 (unix-listen)",
            socket: real.socket(),
            pid: real.pid(),
        },
        Agent {
            name: "mock (virtio-serial)",
            socket: &mock.socket,
            pid: mock.pid(),
        },
    ];
    let load_before = load_average();
    let pinned = measure(&agents, true, n, rounds);
    let unpinned = measure(&agents, false, n, rounds);
    let load_after = load_average();

    println!();
    println!(
        "guest-ping, {n} sequential round trips per agent and placement; load average {load_before} before, {load_after} after ({} CPUs)",
        online_cpus()
    );
    println!();
    println!("| placement | agent | median µs | CPU µs / request | median vs real | CPU vs real |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut verdicts = Vec::new();
    for (placement, figures, target) in [
        ("pinned to CPU 0", &pinned, 0.7),
        ("unpinned", &unpinned, 1.0),
    ] {
        let (real_median, real_cpu) = figures[0];
        for (agent, &(median, cpu)) in agents.iter().zip(figures.iter()) {
            println!(
                "| {placement} | {} | {median:.1} | {cpu:.1} | {:.2}× | {:.2}× |",
                agent.name,
                median / real_median,
                cpu / real_cpu
            );
        }
        let (mock_median, mock_cpu) = figures[1];
        verdicts.push(format!(
            "{placement}: median {:.2}× real (≤ {target:.1}×: {}), CPU per request {:.2}× real (≤ 1.0×: {})",
            mock_median / real_median,
            verdict(mock_median / real_median <= target),
            mock_cpu / real_cpu,
            verdict(mock_cpu <= real_cpu),
        ));
    }
    println!();
    for line in verdicts {
        println!("targets, {line}");
    }
}
