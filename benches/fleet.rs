//! A fleet of mock guests in one process: memory and the time of one guest-sync round.
//!
//! `cargo bench --bench fleet` starts `qga-harness mock --fleet N` (N = 10,000 unless
//! `QGA_BENCH_FLEET` says otherwise; every agent with its own host name and interface
//! addresses), then 64 client threads send one guest-sync to every agent (each thread
//! its share of the agents, one after the other) and check each reply's id. Printed: the
//! start-up time, the round's wall time, and the fleet process's RSS right after the
//! round (VmRSS) and its peak (VmHWM). Targets: RSS ≤ 200 MiB and the round ≤ 2 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Instant;

const MOCK_BINARY: &str = env!("CARGO_BIN_EXE_qga-harness");
const CLIENTS: usize = 64;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn sync_round(dir: &std::path::Path, count: usize) {
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            scope.spawn(move || {
                let mut buf = [0u8; 128];
                for index in (1 + client..=count).step_by(CLIENTS) {
                    let path = dir.join(format!("vm-{index:05}.sock"));
                    let mut stream = UnixStream::connect(&path).expect("connect");
                    let request =
                        format!(r#"{{"execute":"guest-sync","arguments":{{"id":{index}}}}}"#);
                    stream.write_all(request.as_bytes()).expect("write");
                    let mut got = 0;
                    while !buf[..got].contains(&b'\n') {
                        let n = stream.read(&mut buf[got..]).expect("read");
                        assert!(n > 0, "EOF from agent {index}");
                        got += n;
                    }
                    let expected = format!("{{\"return\": {index}}}\n");
                    assert_eq!(&buf[..got], expected.as_bytes(), "agent {index}");
                }
            });
        }
    });
}

fn main() {
    let count: usize = std::env::var("QGA_BENCH_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let mut child = Command::new(MOCK_BINARY)
        .args(["mock", "--fleet", &count.to_string(), "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the fleet");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read ready");
    assert_eq!(line, "ready\n", "the fleet did not start");
    let startup = started.elapsed();
    let idle_kib = status_kib(child.id(), "VmRSS:");

    let round_started = Instant::now();
    sync_round(dir.path(), count);
    let round = round_started.elapsed();
    let rss_kib = status_kib(child.id(), "VmRSS:");
    let hwm_kib = status_kib(child.id(), "VmHWM:");

    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let _ = child.wait();

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!("fleet of {count} agents, one guest-sync each from {CLIENTS} concurrent clients");
    println!();
    println!("| figure | value | target |");
    println!("|---|---:|---:|");
    println!(
        "| start-up (all sockets bound) | {:.2} s | |",
        startup.as_secs_f64()
    );
    println!("| RSS before the round | {:.1} MiB | |", mib(idle_kib));
    println!(
        "| guest-sync round | {:.2} s | ≤ 2 s |",
        round.as_secs_f64()
    );
    println!(
        "| RSS after the round | {:.1} MiB | ≤ 200 MiB |",
        mib(rss_kib)
    );
    println!("| peak RSS (VmHWM) | {:.1} MiB | |", mib(hwm_kib));
    println!("| per agent | {:.1} KiB | |", rss_kib as f64 / count as f64);
    println!();
    println!(
        "targets: RSS ≤ 200 MiB: {}; round ≤ 2 s: {}",
        if mib(rss_kib) <= 200.0 {
            "met"
        } else {
            "MISSED"
        },
        if round.as_secs_f64() <= 2.0 {
            "met"
        } else {
            "MISSED"
        }
    );
}
