//! The fuzz targets' committed corpora and every past crash input, replayed through the
//! same oracles on stable Rust: a fixed bug stays fixed, and the oracles stay green on
//! the inputs the targets were seeded with. The `client` target's hostile agent is also
//! checked to answer at all, so its oracles cannot hold vacuously.
//!
//! Layout: `fuzz/seeds/TARGET/*` (the minimised seed corpus; the working corpus `fuzz/corpus/` is not committed) and
//! `fuzz/regressions/TARGET/*` (crash inputs, kept after their fix).

use std::path::{Path, PathBuf};

use qga_harness::client::Error;
use qga_harness::fuzz::client::{run_case, Act, Call, CallKind, Case, Foreign};
use qga_harness::fuzz::TARGETS;
use serde_json::{json, Value as Json};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str, require_files: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    let mut total = 0;
    for (target, oracle) in TARGETS {
        let inputs: Vec<PathBuf> = files(&root.join(target));
        if require_files {
            assert!(
                !inputs.is_empty(),
                "no committed corpus for the fuzz target {target} under {}",
                root.display()
            );
        }
        for input in inputs {
            let bytes = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| oracle(&bytes));
            assert!(
                outcome.is_ok(),
                "{target}: the oracle failed on {}",
                input.display()
            );
            total += 1;
        }
    }
    eprintln!("{kind}: {total} inputs replayed");
}

#[test]
fn committed_corpora_pass_every_oracle() {
    replay("seeds", true);
}

#[test]
fn past_crash_inputs_stay_fixed() {
    replay("regressions", false);
}

/// The oracles catch what they claim to: a broken invariant panics. (A replay that
/// passed because an oracle checks nothing would prove nothing.)
#[test]
fn every_target_has_an_oracle_that_runs() {
    for (target, oracle) in TARGETS {
        // Arbitrary short inputs must be handled without panicking.
        for input in [&b""[..], b"\0", b"\xff\xff\xff\xff", b"{\"execute\":"] {
            let outcome = std::panic::catch_unwind(|| oracle(input));
            assert!(outcome.is_ok(), "{target} panicked on {input:?}");
        }
    }
}

/// Seeded random inputs through every oracle, on stable: a little fuzzing in every test
/// run, and each oracle's rate without sanitizers or coverage instrumentation.
#[test]
fn seeded_random_inputs_pass_every_oracle() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (target, oracle) in TARGETS {
        let started = std::time::Instant::now();
        let runs = 2000;
        for _ in 0..runs {
            let len = (next() % 512) as usize;
            let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let outcome = std::panic::catch_unwind(|| oracle(&input));
            assert!(outcome.is_ok(), "{target} failed on {input:?}");
        }
        let rate = f64::from(runs) / started.elapsed().as_secs_f64();
        eprintln!("{target}: {rate:.0} inputs/s");
    }
}

fn case(echo_ids: bool, script: Vec<Act>, kinds: &[CallKind]) -> Case {
    Case {
        echo_ids,
        max_reply: 4096,
        script,
        calls: kinds
            .iter()
            .map(|&kind| Call {
                kind,
                timeout_ms: 1000,
            })
            .collect(),
    }
}

/// The agent answers what the client sends: a case without faults gives every call
/// its true answer (were the agent to answer nothing, every call would time out, in
/// no real time, and the oracles would hold vacuously).
#[test]
fn a_plain_agent_answers_every_call() {
    let kinds = [
        CallKind::Ping,
        CallKind::Osinfo,
        CallKind::GivenId,
        CallKind::Sync,
        CallKind::Reconnect,
        CallKind::Shutdown,
    ];
    for echo_ids in [true, false] {
        let outcomes = run_case(&case(echo_ids, Vec::new(), &kinds));
        for (k, outcome) in outcomes.iter().enumerate() {
            let value = outcome.as_ref().expect("an answer");
            match kinds[k] {
                CallKind::Sync => assert_eq!(*value, Json::Null),
                CallKind::Shutdown => assert_eq!(*value, json!({})),
                _ => assert_eq!(value["call"], json!(k), "call {k}: {value}"),
            }
        }
    }
}

/// Scripted acts reach the client: an error answer is the call's agent error, foreign
/// output before the answer is skipped, a silent agent is a timeout.
#[test]
fn scripted_acts_reach_the_client() {
    let script = vec![
        Act::Answer,
        Act::Answer,
        Act::Error,
        Act::Before(Foreign::OtherId(7), Box::new(Act::Answer)),
        Act::Silence,
    ];
    let kinds = [CallKind::Ping; 4];
    let outcomes = run_case(&case(true, script, &kinds));
    // One act per request: the first sync, then calls 0 to 3 (an agent that echoes
    // ids needs no other sync).
    assert_eq!(outcomes[0].as_ref().expect("an answer")["call"], 0);
    let desc = &outcomes[1]
        .as_ref()
        .expect_err("an error")
        .agent_error()
        .expect("an agent error")
        .desc;
    assert!(desc.starts_with("call 1 failed"), "{desc}");
    assert_eq!(outcomes[2].as_ref().expect("an answer")["call"], 2);
    assert!(
        matches!(outcomes[3], Err(Error::Timeout { .. })),
        "{:?}",
        outcomes[3]
    );
}
