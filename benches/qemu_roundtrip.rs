//! A command's round trip through real QEMU against the simulated channel, in one run.
//!
//! `cargo bench --bench qemu_roundtrip` boots two TCG guests from `qemu-images/` (the image
//! and the static build are made or found as `tests/qemu` makes them): one with this
//! program's mock inside, one with the real qemu-ga inside, both reached through QEMU's
//! chardev socket and virtio-serial; and starts `qga-harness mock` on the host (the
//! simulated virtio-serial channel). The same client code sends guest-ping round trips to
//! each, one request at a time, in interleaved blocks so drift hits all three alike, and
//! prints median, p90 and p99 and the ratios to the real agent in the guest.
//!
//! It runs twice: idle, then loaded, with a busy process (`yes > /dev/null`'s work, done by
//! a child of this benchmark) on every core but one. The load average is printed beside
//! each table.
//!
//! Sizes: `QGA_BENCH_SEQUENTIAL` (round trips per agent and phase, default 2,000) and
//! `QGA_BENCH_ROUNDS` (default 10). `QGA_BENCH_PHASES=idle` or `loaded` runs one phase.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::{env_usize, percentile, sequential, MockProcess};

use base64::Engine as _;
use qga_harness::internals::qemu::{
    self, BootOptions, Guest, GuestAgentKind, ImageOptions, LoadCase,
};

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qemu-images")
}

fn boot(agent: GuestAgentKind) -> Guest {
    let mock_binary = match agent {
        GuestAgentKind::Mock => Some(qemu::find_static_binary(None).unwrap_or_else(|e| {
            eprintln!("qemu_roundtrip: no static build for the mock inside: {e}");
            std::process::exit(2)
        })),
        GuestAgentKind::Real => None,
    };
    let image = qemu::build_image(&ImageOptions {
        cache_dir: cache_dir(),
        kernel_version: None,
        mock_binary,
    })
    .unwrap_or_else(|e| {
        eprintln!("qemu_roundtrip: cannot build the guest image: {e}");
        std::process::exit(2)
    });
    let mut options = BootOptions::new(image, agent);
    options.boot_timeout = Duration::from_secs(120);
    qemu::boot(&options).unwrap_or_else(|e| {
        eprintln!("qemu_roundtrip: cannot boot the guest: {e}");
        std::process::exit(2)
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Busy children (the work of `yes > /dev/null`), killed when dropped.
struct Load(Vec<Child>);

impl Load {
    fn start(n: usize) -> Load {
        Load(
            (0..n)
                .map(|_| {
                    Command::new("yes")
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("spawn yes")
                })
                .collect(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Median, p90, p99 in µs of each agent's round trips.
fn measure(agents: &[(&str, &Path)], n: usize, rounds: usize) -> Vec<(f64, f64, f64)> {
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(n); agents.len()];
    let block = n.div_ceil(rounds);
    for _ in 0..rounds {
        for (i, (_, socket)) in agents.iter().enumerate() {
            let mut stream = UnixStream::connect(socket).expect("connect");
            // Warm-up, not measured.
            let mut discard = Vec::new();
            sequential(&mut stream, 20, &mut discard);
            let todo = block.min(n - samples[i].len());
            sequential(&mut stream, todo, &mut samples[i]);
        }
    }
    samples
        .iter_mut()
        .map(|s| {
            s.sort_unstable();
            (percentile(s, 0.5), percentile(s, 0.9), percentile(s, 0.99))
        })
        .collect()
}

fn main() {
    let n = env_usize("QGA_BENCH_SEQUENTIAL", 2_000);
    let rounds = env_usize("QGA_BENCH_ROUNDS", 10).max(1);
    let phases = std::env::var("QGA_BENCH_PHASES").unwrap_or_else(|_| "idle,loaded".into());

    let mut mock_guest = boot(GuestAgentKind::Mock);
    // The mock inside serves its port once a case's agent side is loaded: the default one.
    let case = LoadCase {
        seed: 1,
        agent: serde_json::from_value(serde_json::json!({})).expect("the default agent side"),
    };
    let load = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&case).expect("encodes"));
    mock_guest
        .control()
        .command(&format!("load {load}"))
        .expect("the mock inside takes the default case");
    let real_guest = boot(GuestAgentKind::Real);
    let host = MockProcess::start(|_| vec!["--transport".into(), "virtio-serial".into()]);
    let agents: [(&str, &Path); 3] = [
        ("real qemu-ga in the guest", real_guest.agent_socket()),
        ("mock in the guest", mock_guest.agent_socket()),
        ("mock on the host (simulated channel)", &host.socket),
    ];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!();
    println!(
        "guest-ping through QEMU ({} guests, {} cores): {n} sequential round trips per agent and phase, {rounds} interleaved rounds",
        mock_guest.accel().to_uppercase(),
        cores
    );
    for phase in ["idle", "loaded"] {
        if !phases.split(',').any(|p| p.trim() == phase) {
            continue;
        }
        let _load = (phase == "loaded").then(|| Load::start(cores.saturating_sub(1).max(1)));
        let before = load_average();
        let figures = measure(&agents, n, rounds);
        let after = load_average();
        println!();
        println!(
            "{phase}{} (load average before {before}, after {after}):",
            if phase == "loaded" {
                format!(", {} busy process(es)", cores.saturating_sub(1).max(1))
            } else {
                String::new()
            }
        );
        println!();
        println!("| agent | median µs | p90 µs | p99 µs | median vs real in the guest |");
        println!("|---|---:|---:|---:|---:|");
        let real_median = figures[0].0;
        for ((name, _), (median, p90, p99)) in agents.iter().zip(&figures) {
            println!(
                "| {name} | {median:.1} | {p90:.1} | {p99:.1} | {:.3}× |",
                median / real_median
            );
        }
    }
}
