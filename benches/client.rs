//! Sequential `guest-ping` round trips through the reference client, next to the bare
//! socket round trip (write the request, read the reply line) against the same agent, and
//! the cost of a fresh connection with its sync.
//!
//! `cargo bench --bench client` starts the real qemu-ga (read-only block list);
//! `cargo bench --bench client -- --socket PATH` measures any agent listening on PATH,
//! e.g. `qga-harness mock --socket PATH`. `--pings N` sets the pings per round.
//!
//! Rounds alternate between the ways of pinging, so machine noise spreads over all of
//! them; the figures are medians over every ping of every round.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qga_harness::client::Client;
use qga_harness::internals::real_agent::RealAgent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUNDS: usize = 5;
const PING: &[u8] = b"{\"execute\":\"guest-ping\"}";

struct Options {
    socket: Option<PathBuf>,
    pings: usize,
    connects: usize,
    /// Run only this way of pinging (`bare`, `tokio`, `tokio-id`, `client`), for
    /// profiling.
    only: Option<String>,
}

fn options() -> Options {
    let mut opts = Options {
        socket: None,
        pings: 4000,
        connects: 300,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => opts.socket = args.next().map(PathBuf::from),
            "--pings" => {
                if let Some(n) = args.next().and_then(|n| n.parse().ok()) {
                    opts.pings = n;
                }
            }
            "--connects" => {
                if let Some(n) = args.next().and_then(|n| n.parse().ok()) {
                    opts.connects = n;
                }
            }
            "--only" => opts.only = args.next(),
            // Passed by `cargo bench`; and a filter argument, which is meaningless here.
            _ => {}
        }
    }
    opts
}

/// A bare blocking client: reset the parser once, then write a ping and read its line.
fn bare_blocking(socket: &Path, pings: usize, out: &mut Vec<Duration>) {
    let mut stream = UnixStream::connect(socket).expect("connect");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = Vec::with_capacity(64);
    stream
        .write_all(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":1}}")
        .expect("write");
    loop {
        line.clear();
        reader.read_until(b'\n', &mut line).expect("read");
        assert!(!line.is_empty(), "EOF");
        if line.starts_with(b"\xff") {
            break;
        }
    }
    for _ in 0..pings {
        let start = Instant::now();
        stream.write_all(PING).expect("write");
        line.clear();
        reader.read_until(b'\n', &mut line).expect("read");
        out.push(start.elapsed());
        assert_eq!(line, b"{\"return\": {}}\n");
    }
}

/// The same bare round trip on tokio, as the client does its I/O. With `with_id`, the
/// request carries a 63-bit id as the client's does, and each round trip runs under a
/// deadline timer as the client's calls do: the client's protocol without its code.
async fn bare_tokio(socket: &Path, pings: usize, with_id: bool, out: &mut Vec<Duration>) {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    stream
        .write_all(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":1}}")
        .await
        .expect("write");
    // Skip up to the line that follows the delimiter.
    loop {
        let n = stream.read(&mut buf[have..]).await.expect("read");
        assert!(n > 0, "EOF");
        have += n;
        if let Some(ff) = buf[..have].iter().position(|&b| b == 0xFF) {
            if buf[ff..have].contains(&b'\n') {
                break;
            }
        }
    }
    let mut request = PING.to_vec();
    if with_id {
        request = b"{\"execute\":\"guest-ping\",\"id\":4611686018427387904}".to_vec();
    }
    for _ in 0..pings {
        let start = Instant::now();
        let round_trip = async {
            stream.write_all(&request).await.expect("write");
            have = 0;
            loop {
                let n = stream.read(&mut buf[have..]).await.expect("read");
                assert!(n > 0, "EOF");
                have += n;
                if buf[..have].ends_with(b"\n") {
                    break;
                }
            }
        };
        if with_id {
            tokio::time::timeout(Duration::from_secs(5), round_trip)
                .await
                .expect("no timeout");
        } else {
            round_trip.await;
        }
        out.push(start.elapsed());
    }
}

async fn through_client(socket: &Path, pings: usize, out: &mut Vec<Duration>) {
    let mut client = Client::builder(socket).connect().await.expect("connect");
    for _ in 0..pings {
        let start = Instant::now();
        client.ping().await.expect("ping");
        out.push(start.elapsed());
    }
}

async fn fresh_connections(socket: &Path, connects: usize, out: &mut Vec<Duration>) {
    for _ in 0..connects {
        let start = Instant::now();
        let client = Client::builder(socket).connect().await.expect("connect");
        out.push(start.elapsed());
        drop(client);
    }
}

struct Summary {
    median: Duration,
    p99: Duration,
    per_second: f64,
}

fn summarise(times: &mut [Duration]) -> Summary {
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let total: Duration = times.iter().sum();
    Summary {
        median: at(0.5),
        p99: at(0.99),
        per_second: times.len() as f64 / total.as_secs_f64(),
    }
}

fn main() {
    let opts = options();
    let _agent;
    let (socket, target) = match &opts.socket {
        Some(path) => (path.clone(), format!("agent at {}", path.display())),
        None => {
            let agent = RealAgent::start(&[]).expect("start qemu-ga (or pass --socket PATH)");
            let socket = agent.socket().to_owned();
            _agent = agent;
            (socket, "real qemu-ga (unix-listen)".to_owned())
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Some(only) = &opts.only {
        let mut times = Vec::new();
        match only.as_str() {
            "bare" => bare_blocking(&socket, opts.pings, &mut times),
            "tokio" => runtime.block_on(bare_tokio(&socket, opts.pings, false, &mut times)),
            "tokio-id" => runtime.block_on(bare_tokio(&socket, opts.pings, true, &mut times)),
            "client" => runtime.block_on(through_client(&socket, opts.pings, &mut times)),
            other => panic!("--only bare|tokio|tokio-id|client, not {other}"),
        }
        let s = summarise(&mut times);
        println!(
            "{only}: median {:.1}µs, p99 {:.1}µs, {:.0} calls/s",
            s.median.as_secs_f64() * 1e6,
            s.p99.as_secs_f64() * 1e6,
            s.per_second
        );
        return;
    }

    // Warm up every path once.
    let mut scratch = Vec::new();
    bare_blocking(&socket, 500, &mut scratch);
    runtime.block_on(bare_tokio(&socket, 500, true, &mut scratch));
    runtime.block_on(through_client(&socket, 500, &mut scratch));

    let mut bare = Vec::new();
    let mut bare_async = Vec::new();
    let mut bare_async_id = Vec::new();
    let mut client = Vec::new();
    let mut connects = Vec::new();
    for _ in 0..ROUNDS {
        bare_blocking(&socket, opts.pings, &mut bare);
        runtime.block_on(bare_tokio(&socket, opts.pings, false, &mut bare_async));
        runtime.block_on(bare_tokio(&socket, opts.pings, true, &mut bare_async_id));
        runtime.block_on(through_client(&socket, opts.pings, &mut client));
        runtime.block_on(fresh_connections(
            &socket,
            opts.connects / ROUNDS,
            &mut connects,
        ));
    }

    let bare = summarise(&mut bare);
    let bare_async = summarise(&mut bare_async);
    let bare_async_id = summarise(&mut bare_async_id);
    let client = summarise(&mut client);
    let connects = summarise(&mut connects);
    println!(
        "guest-ping against the {target}: {} rounds × {} pings",
        ROUNDS, opts.pings
    );
    println!(
        "{:<44} {:>10} {:>10} {:>12}",
        "", "median", "p99", "calls/s"
    );
    for (name, s) in [
        ("bare socket, blocking std", &bare),
        ("bare socket, tokio", &bare_async),
        ("bare socket, tokio, id + deadline timer", &bare_async_id),
        ("reference client (warm connection)", &client),
        ("fresh connection + 0xFF + sync", &connects),
    ] {
        println!(
            "{name:<44} {:>8.1}µs {:>8.1}µs {:>12.0}",
            s.median.as_secs_f64() * 1e6,
            s.p99.as_secs_f64() * 1e6,
            s.per_second
        );
    }
    let overhead =
        |base: &Summary| (client.median.as_secs_f64() / base.median.as_secs_f64() - 1.0) * 100.0;
    println!("client overhead on the median round trip (target ≤ 30%):");
    for (name, base) in [
        ("bare blocking std", &bare),
        ("bare tokio", &bare_async),
        ("bare tokio sending the same bytes", &bare_async_id),
    ] {
        println!("  vs {name:<36} {:+6.1}%", overhead(base));
    }
}
