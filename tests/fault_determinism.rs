//! The same seed and the same client bytes give byte-identical transcripts (apart from
//! the timestamps), run after run, with a randomised set of fault rules; and a replay of a
//! transcript's agent side gives the same agent bytes.

mod common;

use std::path::Path;

use common::*;
use qga_harness::fault::{parse_spec, Rule};
use qga_harness::MockAgent;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Rules whose effects depend on the mock's seed (probabilities, jitter, made-up ids).
const POOL: &[&str] = &[
    "guest-ping~0.3:delay=10ms..50ms",
    "guest-sync~0.3:wrong-sync-id=other",
    "guest-sync-delimited~0.3:spurious=stale-sync",
    "*~0.1:spurious=unknown-id/after",
    "guest-get-host-name~0.3:garbage=crlf",
    "guest-info~0.3:slice=700+300",
    "guest-ping~0.1:die-mid-reply=5,restart=30ms",
    "*~0.05:spurious=event",
    "guest-get-osinfo~0.3:drip=64/1ms",
    "guest-sync~0.2:spurious=duplicate",
    "*~0.1:delay=exp:20ms",
    "guest-get-timezone~0.2:return=5",
    "*~0.05:close-client",
    "guest-ping~0.1:die-before-read,restart=10ms",
    "*~0.05:no-reply",
    "*~0.2:coalesce=2",
    "*~0.05:swap",
    "guest-get-vcpus~0.3:error=GenericError/'it broke'",
    "*~0.05:duplicate",
    "guest-get-host-name~0.2:garbage=half-object",
];

/// A fault set drawn from the pool.
fn fault_set(draw: u64) -> Vec<Rule> {
    let mut rng = StdRng::seed_from_u64(draw);
    let mut pool: Vec<&str> = POOL.to_vec();
    pool.shuffle(&mut rng);
    pool[..10]
        .iter()
        .map(|s| parse_spec(s).expect("valid spec"))
        .collect()
}

/// The client's requests: one at a time, none whose answer depends on the clock.
fn script() -> Vec<Vec<u8>> {
    let mut requests = Vec::new();
    for i in 0..40u64 {
        let request = match i % 8 {
            0 => {
                let mut r = vec![0xff];
                r.extend(sync_delimited(1000 + i as i64));
                r
            }
            1 => sync(2000 + i as i64),
            2 => ping(i),
            3 => execute("guest-get-host-name", i),
            4 => execute("guest-info", i),
            5 => execute("guest-get-osinfo", i),
            6 => execute("guest-get-timezone", i),
            _ => execute("guest-get-vcpus", i),
        };
        requests.push(request);
    }
    requests
}

/// Serves `builder`, runs the script (reconnecting after an EOF), and returns the
/// transcript without timestamps.
async fn run(builder: qga_harness::MockAgentBuilder, dir: &Path) -> Vec<String> {
    let transcript = dir.join("transcript.jsonl");
    let mock = builder
        .transcript(&transcript)
        .start_in(dir)
        .await
        .expect("start");
    let mut client = Client::connect(mock.socket_path()).await;
    for request in script() {
        client.send(&request).await;
        loop {
            match client.read_within(QUIET).await {
                Got::Bytes(_) => {}
                Got::Quiet => break,
                Got::Eof => {
                    client = Client::connect(mock.socket_path()).await;
                    break;
                }
            }
        }
    }
    drop(client);
    mock.shutdown().await.expect("shutdown");
    records(&transcript)
        .into_iter()
        .map(|mut r| {
            if let Some(object) = r.as_object_mut() {
                object.remove("t_us");
            }
            r.to_string()
        })
        .collect()
}

fn builder(rules: Vec<Rule>, seed: u64) -> qga_harness::MockAgentBuilder {
    MockAgent::builder().faults(rules).seed(seed)
}

#[tokio::test(start_paused = true)]
async fn a_hundred_runs_of_a_random_fault_set_give_identical_transcripts() {
    let rules = fault_set(2024);
    let dir = tempfile::tempdir().expect("temp dir");
    let first = run(builder(rules.clone(), 7), dir.path()).await;
    assert!(
        first
            .iter()
            .any(|line| line.contains("\"event\":\"fault\"")),
        "some rules fired"
    );
    for round in 1..100 {
        let dir = tempfile::tempdir().expect("temp dir");
        let again = run(builder(rules.clone(), 7), dir.path()).await;
        if again != first {
            let at = first
                .iter()
                .zip(&again)
                .position(|(a, b)| a != b)
                .unwrap_or(first.len().min(again.len()));
            panic!(
                "run {round} differs at line {at}:\n  first: {:?}\n  again: {:?}",
                first.get(at),
                again.get(at)
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn other_fault_sets_repeat_too_and_the_seed_matters() {
    let mut differ = 0;
    for draw in 0..10 {
        let rules = fault_set(draw);
        let (a, b, c) = (
            tempfile::tempdir().expect("temp dir"),
            tempfile::tempdir().expect("temp dir"),
            tempfile::tempdir().expect("temp dir"),
        );
        let first = run(builder(rules.clone(), draw), a.path()).await;
        let again = run(builder(rules.clone(), draw), b.path()).await;
        assert_eq!(first, again, "fault set {draw}");
        let other_seed = run(builder(rules, draw + 1000), c.path()).await;
        if other_seed != first {
            differ += 1;
        }
    }
    assert!(differ >= 8, "only {differ} of 10 seeds changed the run");
}

#[tokio::test(start_paused = true)]
async fn a_replay_of_the_transcript_gives_the_same_agent_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recorded = run(builder(fault_set(99), 5), dir.path()).await;
    let transcript = dir.path().join("transcript.jsonl");
    let replay_dir = tempfile::tempdir().expect("temp dir");
    let replayed = run(
        MockAgent::builder().replay(&transcript).expect("replay"),
        replay_dir.path(),
    )
    .await;
    let out = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains("\"dir\":\"out\""))
            .cloned()
            .collect()
    };
    assert!(!out(&recorded).is_empty());
    assert_eq!(out(&recorded), out(&replayed));
    assert_eq!(recorded, replayed, "the whole transcript repeats");
}
