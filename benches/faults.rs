//! What loaded fault rules cost on the guest-ping round trip.
//!
//! `cargo bench --bench faults` starts `qga-harness mock` (built by cargo with the bench
//! profile) once per rule set, on virtio-serial, and measures sequential guest-ping round
//! trips over a unix socket, in interleaved blocks so that drift on a shared machine hits
//! every rule set alike:
//!
//! - no rules;
//! - 10 rules on other commands (loaded, never firing for guest-ping);
//! - 1,000 rules: 980 on other commands by name, 10 globs on other command families, 10 on
//!   guest-ping that are evaluated on every ping and never fire;
//! - for information, 1,000 rules on guest-ping that are all evaluated and never fire.
//!
//! Targets: rules that do not fire cost at most 5% of the median; 1,000 rules stay within
//! 2× the rule-free median. Sizes: `QGA_BENCH_SEQUENTIAL` (round trips per rule set, default
//! 20,000), `QGA_BENCH_PIPELINED` (requests per pipelined run, default 50,000) and
//! `QGA_BENCH_ROUNDS` (default 10).

use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::path::Path;

mod common;
use common::{env_usize, percentile, pipelined, sequential, verdict, MockProcess};

/// Commands a ping never is.
const OTHER_COMMANDS: &[&str] = &[
    "guest-sync",
    "guest-sync-delimited",
    "guest-info",
    "guest-get-time",
    "guest-set-time",
    "guest-shutdown",
    "guest-file-open",
    "guest-file-close",
    "guest-file-read",
    "guest-file-write",
    "guest-file-seek",
    "guest-file-flush",
    "guest-fsfreeze-status",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-network-get-interfaces",
    "guest-get-vcpus",
    "guest-set-vcpus",
    "guest-get-disks",
    "guest-get-fsinfo",
    "guest-set-user-password",
    "guest-get-memory-blocks",
    "guest-set-memory-blocks",
    "guest-get-memory-block-info",
    "guest-exec-status",
    "guest-exec",
    "guest-get-host-name",
    "guest-get-users",
    "guest-get-timezone",
    "guest-get-osinfo",
];

const OTHER_GLOBS: &[&str] = &[
    "guest-fs*",
    "guest-file-*",
    "guest-exec*",
    "guest-get-memory*",
    "guest-suspend-*",
    "guest-set-?cpus",
    "guest-ssh-*",
    "guest-network-*",
    "*-delimited",
    "guest-get-d*",
];

/// The rule sets, as `--fault` specs.
fn rule_sets() -> Vec<(&'static str, Vec<String>)> {
    let other = |i: usize| format!("{}:hang", OTHER_COMMANDS[i % OTHER_COMMANDS.len()]);
    let ten: Vec<String> = (0..10).map(other).collect();
    let mut thousand: Vec<String> = (0..980).map(other).collect();
    thousand.extend(OTHER_GLOBS.iter().map(|g| format!("{g}:hang")));
    // Evaluated on every ping: counted, never reaching their nth.
    thousand.extend((0..10).map(|i| format!("guest-ping@{}:hang", 1_000_000_000 + i)));
    let all_on_ping: Vec<String> = (0..1000)
        .map(|i| format!("guest-ping@{}:hang", 1_000_000_000 + i))
        .collect();
    vec![
        ("no rules", Vec::new()),
        ("10 rules on other commands", ten),
        (
            "1,000 rules (980 named, 10 globs, 10 on guest-ping)",
            thousand,
        ),
        (
            "1,000 rules on guest-ping, none firing (worst case)",
            all_on_ping,
        ),
    ]
}

/// `--scenario FILE` with `rules` as its agent's faults, the file written into `dir`.
fn scenario_args(dir: &Path, rules: &[String]) -> Vec<OsString> {
    let scenario = dir.join("rules.json");
    let faults: Vec<serde_json::Value> = rules.iter().map(|r| r.as_str().into()).collect();
    let text = serde_json::json!({
        "id": "bench.1",
        "title": "rules that do not fire",
        "requirement": "none",
        "agent": {"faults": faults},
    });
    std::fs::write(&scenario, text.to_string()).expect("write the rules");
    vec!["--scenario".into(), scenario.into()]
}

fn main() {
    let sequential_n = env_usize("QGA_BENCH_SEQUENTIAL", 20_000);
    let pipelined_n = env_usize("QGA_BENCH_PIPELINED", 50_000);
    let rounds = env_usize("QGA_BENCH_ROUNDS", 10).max(1);

    let sets = rule_sets();
    let mocks: Vec<MockProcess> = sets
        .iter()
        .map(|(_, rules)| MockProcess::start(|dir| scenario_args(dir, rules)))
        .collect();
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(sequential_n); sets.len()];
    let mut best_rate = vec![0f64; sets.len()];
    let block = sequential_n.div_ceil(rounds);
    for round in 0..rounds {
        for (i, mock) in mocks.iter().enumerate() {
            let mut stream = UnixStream::connect(&mock.socket).expect("connect");
            // Warm-up, not measured.
            let mut discard = Vec::new();
            sequential(&mut stream, 200, &mut discard);
            let todo = block.min(sequential_n - samples[i].len());
            sequential(&mut stream, todo, &mut samples[i]);
            drop(stream);
            best_rate[i] = best_rate[i].max(pipelined(&mock.socket, pipelined_n));
        }
        eprintln!("faults: round {}/{rounds} done", round + 1);
    }

    for s in &mut samples {
        s.sort_unstable();
    }
    let medians: Vec<f64> = samples.iter().map(|s| percentile(s, 0.5)).collect();
    println!();
    println!(
        "guest-ping on virtio-serial: {sequential_n} sequential round trips and a pipelined run of {pipelined_n} requests per rule set, {rounds} rounds"
    );
    println!();
    println!("| rules | median µs | p90 µs | p99 µs | pipelined req/s | median vs no rules | pipelined vs no rules |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in sets.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.0} | {:.3}× | {:.3}× |",
            medians[i],
            percentile(&samples[i], 0.9),
            percentile(&samples[i], 0.99),
            best_rate[i],
            medians[i] / medians[0],
            best_rate[i] / best_rate[0],
        );
    }
    println!();
    let idle = medians[1] / medians[0];
    let thousand = medians[2] / medians[0];
    println!(
        "targets: 10 rules that do not fire ≤ 1.05× the median: {idle:.3}× {}; 1,000 rules ≤ 2×: {thousand:.3}× {}",
        verdict(idle <= 1.05),
        verdict(thousand <= 2.0),
    );
}
