//! `qga-harness fuzz`: a seeded hostile-guest campaign against a client.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::process::{runtime_with_shutdown, Threads};
use super::run::{client_from, launcher_mock};
use crate::fuzz::campaign::{self, Campaign};
use crate::runner::{self, RunOptions, DEFAULT_MAX_RSS_KIB};

/// Draws hostile guests from the fault model and runs a client against each until it
/// fails; writes a minimal scenario per kind of failure.
///
/// Every case runs as `qga-harness run` runs a file. For each kind of failure found (a
/// duty the judge FAILs, a wrong result, a crash, a hang, a malformed answer) the first
/// case is minimised and written to --out as KIND.json, with its transcript in
/// KIND.artifacts/; rerun it with `qga-harness run --client ... KIND.json`. Same seed,
/// same cases. Stops on --cases, --duration or Ctrl-C, keeping what it found. Exit
/// status: 0 nothing found, 1 something found, 2 bad usage.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// A oneshot client, as for `run --client`.
    #[arg(long, value_name = "CMD", conflicts_with = "client_session")]
    pub client: Option<String>,
    /// A session client, as for `run --client-session` [default: the reference client]
    #[arg(long, value_name = "CMD")]
    pub client_session: Option<String>,
    /// The campaign's seed [default: random, printed]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Stop after this many cases.
    #[arg(long, value_name = "N")]
    pub cases: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S")]
    pub duration: Option<u64>,
    /// Where the minimal scenarios go.
    #[arg(long, value_name = "DIR", default_value = "fuzz-findings")]
    pub out: PathBuf,
    /// The bounded-memory duty's limit on a client process's peak RSS.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_RSS_KIB / 1024)]
    pub max_rss_mib: u64,
    /// Stop at the first finding whose minimal scenario reproduces it (time to kill).
    #[arg(long)]
    pub stop_at_first: bool,
}

pub fn run(args: FuzzArgs) -> i32 {
    let (client, flags) = match client_from(args.client.as_deref(), args.client_session.as_deref())
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {}", e.0);
            return 2;
        }
    };
    if args.cases.is_none() && args.duration.is_none() {
        eprintln!("note: no --cases or --duration: the campaign runs until Ctrl-C");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let campaign = Campaign {
        options: RunOptions {
            client,
            launcher: launcher_mock(),
            jobs: 1,
            seed,
            max_rss_kib: args.max_rss_mib.saturating_mul(1024),
            artifacts: None,
            time_scale: 1,
        },
        seed,
        cases: args.cases,
        duration: args.duration.map(Duration::from_secs),
        out: args.out.clone(),
        stop_at_first: args.stop_at_first,
    };
    let started = runtime_with_shutdown(Threads::Workers(2));
    let (runtime, mut interrupts) = match started {
        Ok(started) => started,
        Err(message) => {
            eprintln!("error: {message}");
            return 2;
        }
    };
    let terminal = std::io::stderr().is_terminal();
    eprintln!(
        "fuzzing {} with seed {seed}; findings go to {}",
        if flags.is_empty() {
            "the reference client"
        } else {
            &flags
        },
        campaign::shown(&args.out)
    );
    let mut last = Instant::now();
    let outcome = runtime.block_on(campaign::run(
        &campaign,
        |summary| {
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                let mut err = std::io::stderr().lock();
                if terminal {
                    let _ = write!(err, "\r\x1b[K{}", summary.line());
                } else {
                    let _ = writeln!(err, "{}", summary.line());
                }
            }
        },
        interrupts.wait(),
    ));
    runtime.shutdown_timeout(Duration::from_secs(5));
    runner::finish_reaping(Duration::from_secs(5));
    if terminal {
        eprintln!();
    }
    let summary = match outcome {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!(
                "error: cannot write the findings to {}: {e}",
                args.out.display()
            );
            return 2;
        }
    };
    println!("{}", summary.line());
    println!(
        "harness time per case: {:.1} ms (outside the client's own step time)",
        summary.harness_time.as_secs_f64() * 1000.0 / summary.cases.max(1) as f64
    );
    if summary.harness_errors > 0 {
        println!(
            "{} cases could not run (harness errors)",
            summary.harness_errors
        );
    }
    for found in summary.kinds.values() {
        println!(
            "  {:<26} {:>5} cases, first case {} after {:.1} s, minimal scenario {} (reproduced {}/3)",
            found.kind,
            found.count,
            found.first_case,
            found.first_after.as_secs_f64(),
            found
                .file
                .as_ref()
                .map_or_else(|| "-".into(), |f| f.display().to_string()),
            found.reproduced
        );
        for cause in &found.causes {
            println!(
                "      {:>5} cases, first case {}, {}: {}",
                cause.count,
                cause.first_case,
                cause.file.display(),
                cause.cause
            );
        }
        if found.other_causes > 0 {
            println!("      {:>5} cases of other causes", found.other_causes);
        }
    }
    if summary.kinds.is_empty() {
        0
    } else {
        1
    }
}
