//! Running one case: its own temp dir, its own agent on its own socket, the client driven
//! through the steps under a case deadline, the transcript read back and judged. The temp
//! dir (socket and transcript included) is gone when the case is over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::adapter::{drive, kill_after, Client, ClientRun, StepRecord};
use super::agent::{AgentLauncher, LaunchRequest};
use super::answer::Answer;
use super::discover::LoadedCase;
use super::judge::{judge, Evidence, Judgement, Verdict};
use super::other_client::{held_connection, Holder};
use super::timeline::{self, Timeline};
use crate::scenario::Scenario;
use crate::transcript::Wire;

/// How a run is done.
#[derive(Clone)]
pub struct RunOptions {
    pub client: Client,
    pub launcher: Arc<dyn AgentLauncher>,
    /// Cases run at the same time.
    pub jobs: usize,
    /// The run's seed; each case's agent gets a seed derived from it and the case id.
    pub seed: u64,
    /// The bounded-memory duty's limit on a client's peak RSS, in KiB.
    pub max_rss_kib: u64,
    /// Where to keep each case's transcript and client log, when set.
    pub artifacts: Option<PathBuf>,
    /// Every timeout, delay and time bound of the cases multiplied by this (1: as written);
    /// see [`crate::scenario::scale_time`].
    pub time_scale: u64,
}

/// The default bounded-memory limit: 256 MiB.
pub const DEFAULT_MAX_RSS_KIB: u64 = 256 * 1024;

/// What became of one case.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub id: String,
    pub title: String,
    pub category: String,
    pub requirement: String,
    pub file: PathBuf,
    /// The seed the case's agent ran with.
    pub seed: u64,
    pub verdict: Verdict,
    /// Why the case could not run (the harness's problem, not the client's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the client cannot express the case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
    pub run: ClientRun,
    pub elapsed_ms: f64,
    /// The case's transcript file under `--artifacts`, when kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcript: Option<PathBuf>,
    /// The case's wire, drawn (when the agent started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

impl CaseResult {
    fn new(case: &LoadedCase, seed: u64) -> CaseResult {
        CaseResult {
            id: case.scenario.id.clone(),
            title: case.scenario.title.clone(),
            category: case.scenario.category().to_owned(),
            requirement: case.scenario.requirement.clone(),
            file: case.path.clone(),
            seed,
            verdict: Verdict::Fail,
            error: None,
            unsupported: None,
            judgement: None,
            run: ClientRun::default(),
            elapsed_ms: 0.0,
            transcript: None,
            timeline: None,
        }
    }
}

/// The seed of a case's agent: the scenario's own, or one derived from the run's seed and
/// the case id (so a case rerun alone with the same `--seed` gets the same one).
pub fn case_seed(run_seed: u64, scenario: &Scenario) -> u64 {
    if let Some(seed) = scenario.agent.seed {
        return seed;
    }
    // FNV-1a over the id, then a splitmix64 finaliser mixed with the run's seed.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in scenario.id.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = hash ^ run_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The error class with which a client says it cannot express a step.
pub const UNSUPPORTED_CLASS: &str = "Unsupported";

/// The hard limit on a whole case: every step's kill deadline, plus start-up and teardown.
pub fn case_deadline(scenario: &Scenario) -> Duration {
    let steps: Duration = scenario
        .steps
        .iter()
        .map(|s| kill_after(s.timeout_ms) + Duration::from_secs(1))
        .sum();
    steps + Duration::from_secs(5)
}

/// Runs one case.
pub async fn run_case(case: &LoadedCase, options: &RunOptions) -> CaseResult {
    if options.time_scale > 1 {
        let mut scaled = case.clone();
        if let Err(e) = crate::scenario::scale_time(&mut scaled.scenario, options.time_scale) {
            let mut result = CaseResult::new(case, case_seed(options.seed, &case.scenario));
            result.error = Some(format!("cannot scale the case's times: {e}"));
            return result;
        }
        return run_scaled(&scaled, options).await;
    }
    run_scaled(case, options).await
}

async fn run_scaled(case: &LoadedCase, options: &RunOptions) -> CaseResult {
    let started = Instant::now();
    let seed = case_seed(options.seed, &case.scenario);
    let mut result = CaseResult::new(case, seed);
    if case.scenario.single_connection
        && options.client.is_oneshot()
        && case.scenario.steps.len() > 1
    {
        result.verdict = Verdict::Unsupported;
        result.unsupported = Some(
            "the steps must run on one connection, and a oneshot client starts a new process (and connection) per step; use --client-session".to_owned(),
        );
        return result;
    }
    if let Client::InProcess(client) = &options.client {
        if let Some(reason) = client.cannot_run(&case.scenario) {
            result.verdict = Verdict::Unsupported;
            result.unsupported = Some(reason);
            return result;
        }
    }
    let dir = match tempfile::Builder::new().prefix("qga-case-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            result.error = Some(format!("cannot create a temp dir for the case: {e}"));
            return result;
        }
    };
    let socket = dir.path().join("qga.sock");
    let transcript = dir.path().join("transcript.jsonl");
    let origin = Instant::now();
    let launched = options
        .launcher
        .launch(LaunchRequest {
            case,
            socket: &socket,
            transcript: &transcript,
            seed,
            origin,
        })
        .await;
    let launch_span = origin.elapsed();
    let agent = match launched {
        Ok(agent) => agent,
        Err(e) if e.unsupported_reason().is_some() => {
            result.verdict = Verdict::Unsupported;
            result.unsupported = e.unsupported_reason().map(str::to_owned);
            result.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            return result;
        }
        Err(e) => {
            result.error = Some(format!("cannot start the agent: {}", error_chain(&e)));
            result.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            return result;
        }
    };
    let agent_shares_clock = agent.shares_clock();
    // The other client connects before the client under test is started, so the channel
    // takes it on first.
    let holder = match &case.scenario.other_client {
        None => None,
        Some(other) => match Holder::connect(&socket, other).await {
            Ok(holder) => Some(holder),
            Err(e) => {
                agent.stop().await;
                result.error = Some(format!(
                    "the other client cannot connect to {} and write its lines: {e}",
                    socket.display()
                ));
                result.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                return result;
            }
        },
    };
    let steps = &case.scenario.steps;
    let deadline = case_deadline(&case.scenario) + options.client.startup();
    let (began, client_began) = tokio::sync::oneshot::channel();
    let driven = tokio::time::timeout(
        deadline,
        drive(&options.client, &socket, steps, origin, began),
    );
    // The agent hears when the client began its first step (a delayed start counts from
    // there); a client that never began drops the sender, and this ends too.
    let on_begin = agent.client_began();
    let told = async move {
        if client_began.await.is_ok() {
            on_begin.await;
        }
    };
    let (driven, ()) = tokio::join!(driven, told);
    let run = match driven {
        Ok(run) => run,
        Err(_) => abandoned(steps, deadline, origin),
    };
    let held_written = holder.map(Holder::release);
    agent.stop().await;
    // Reading a transcript of many MiB (a flood case's is 60 MiB and more) and judging it
    // takes a worker for a second on a loaded machine: on a blocking thread instead, so the
    // timers and sockets of the cases running at the same time are not held up.
    let finish = Finish {
        scenario: case.scenario.clone(),
        run,
        transcript,
        dir,
        launch_span_us: if agent_shares_clock {
            0
        } else {
            u64::try_from(launch_span.as_micros()).unwrap_or(u64::MAX)
        },
        oneshot: options.client.is_oneshot(),
        in_process: matches!(options.client, Client::InProcess(_)),
        max_rss_kib: options.max_rss_kib,
        artifacts: options.artifacts.clone(),
        held_written,
    };
    let mut result = match tokio::task::spawn_blocking(move || finish.judge(result)).await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    result.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    result
}

/// What judging a case that ran needs, owned, for a blocking thread.
struct Finish {
    scenario: Scenario,
    run: ClientRun,
    transcript: PathBuf,
    /// The case's temp dir, which holds the transcript: removed when this is dropped.
    dir: tempfile::TempDir,
    launch_span_us: u64,
    oneshot: bool,
    in_process: bool,
    max_rss_kib: u64,
    artifacts: Option<PathBuf>,
    /// Bytes the scenario's other client wrote, when it had one.
    held_written: Option<u64>,
}

impl Finish {
    /// Reads the transcript back, judges the run and keeps the artifacts.
    fn judge(self, mut result: CaseResult) -> CaseResult {
        let wire = match Wire::read(&self.transcript) {
            Ok(wire) => wire,
            Err(e) => {
                result.error = Some(format!(
                    "cannot read the transcript {}: {e}",
                    self.transcript.display()
                ));
                Wire::default()
            }
        };
        let held: Vec<u64> = match self.held_written.map(|n| held_connection(&wire, n)) {
            Some(Ok(Some(conn))) => vec![conn],
            Some(Err(e)) => {
                result.error = Some(e);
                Vec::new()
            }
            None | Some(Ok(None)) => Vec::new(),
        };
        let evidence = Evidence {
            scenario: &self.scenario,
            run: &self.run,
            wire: &wire,
            launch_span_us: self.launch_span_us,
            oneshot: self.oneshot,
            in_process: self.in_process,
            max_rss_kib: self.max_rss_kib,
            held_connections: &held,
        };
        let judgement = judge(&evidence);
        let steps = &self.scenario.steps;
        let timeouts: Vec<u64> = steps.iter().map(|s| s.timeout_ms).collect();
        result.timeline = Some(timeline::build(
            &wire,
            &self.run.steps,
            &timeouts,
            self.launch_span_us,
        ));
        // A client that cannot express a step (a typed library without that command, say)
        // answers with the class `Unsupported`: the case says nothing about it.
        let inexpressible = self.run.steps.iter().find_map(|step| match &step.answer {
            Answer::AgentError { class, desc } if class == UNSUPPORTED_CLASS => Some(format!(
                "the client cannot express {}: {desc}",
                step.execute
            )),
            _ => None,
        });
        result.verdict = if result.error.is_some() {
            Verdict::Fail
        } else if let Some(reason) = inexpressible {
            result.unsupported = Some(reason);
            Verdict::Unsupported
        } else {
            judgement.verdict
        };
        result.judgement = Some(judgement);
        result.run = self.run;
        if let Some(artifacts) = &self.artifacts {
            match keep_artifacts(artifacts, &result, &self.transcript) {
                Ok(kept) => result.transcript = Some(kept),
                Err(e) => {
                    result.error = Some(format!(
                        "cannot write the artifacts to {}: {e}",
                        artifacts.display()
                    ));
                    result.verdict = Verdict::Fail;
                }
            }
        }
        drop(self.dir);
        result
    }
}

/// The steps of a case whose deadline passed (the client processes were killed when the
/// driving future was dropped).
fn abandoned(steps: &[crate::scenario::Step], deadline: Duration, origin: Instant) -> ClientRun {
    let detail = format!(
        "the case's deadline of {} ms passed; the client was killed",
        deadline.as_millis()
    );
    ClientRun {
        steps: steps
            .iter()
            .enumerate()
            .map(|(index, step)| StepRecord {
                index,
                execute: step.execute.clone(),
                started_us: u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX),
                elapsed_us: 0,
                answer: Answer::NotRun {
                    detail: detail.clone(),
                },
            })
            .collect(),
        processes: Vec::new(),
        peak_buffer_bytes: None,
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Copies the transcript to `DIR/ID.jsonl` and writes the client's log to `DIR/ID.client.txt`.
fn keep_artifacts(dir: &Path, result: &CaseResult, transcript: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let kept = dir.join(format!("{}.jsonl", result.id));
    match std::fs::copy(transcript, &kept) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&kept, b"")?;
        }
        Err(e) => return Err(e),
    }
    std::fs::write(
        dir.join(format!("{}.client.txt", result.id)),
        crate::report::client_log(result),
    )?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(id: &str) -> Scenario {
        let text = format!(
            r#"{{"id": "{id}", "title": "t", "requirement": "r",
              "steps": [{{"execute": "guest-ping", "timeout_ms": 1000, "expect": [{{"return": {{}}}}]}},
                        {{"execute": "guest-ping", "timeout_ms": 200, "expect": [{{"return": {{}}}}]}}]}}"#
        );
        Scenario::parse(&text, Path::new("x.json")).expect("valid")
    }

    #[test]
    fn case_seeds_depend_on_the_run_seed_and_the_id_only() {
        let a = scenario("sync.1");
        let b = scenario("sync.2");
        assert_eq!(case_seed(7, &a), case_seed(7, &a));
        assert_ne!(case_seed(7, &a), case_seed(8, &a));
        assert_ne!(case_seed(7, &a), case_seed(7, &b));
        let mut fixed = a.clone();
        fixed.agent.seed = Some(42);
        assert_eq!(case_seed(7, &fixed), 42);
    }

    #[test]
    fn the_case_deadline_covers_every_step() {
        let deadline = case_deadline(&scenario("sync.1"));
        assert!(deadline >= kill_after(1000) + kill_after(200));
        assert!(deadline < Duration::from_secs(15));
    }
}
