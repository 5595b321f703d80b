//! The scenario runner: loads cases, runs each against a client with its own agent, judges
//! what the client answered and what it did on the wire, and hands the results to
//! [`crate::report`].
//!
//! Layout: `discover` (finding and loading scenario files), `template` (client command
//! templates), `process` (client processes: groups, deadlines, reaping), `adapter` (oneshot,
//! session and in-process clients), `answer` (reading what a client answered), `agent` (the
//! agent side of a case), `transcript` (reading the wire back), `judge` (outcomes, duties,
//! verdicts), `case` (one case from start to end).

pub(crate) mod adapter;
mod agent;
mod answer;
pub(crate) mod case;
pub(crate) mod discover;
pub(crate) mod judge;
mod mock;
mod options;
mod other_client;
pub(crate) mod process;
mod qemu;
pub(crate) mod template;
pub(crate) mod timeline;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use crate::transcript::Wire;
pub use adapter::{
    BoxFuture, Client, ClientRun, InProcessClient, InProcessSession, ProcessReport, StepRecord,
    StepRequest,
};
pub use agent::{AgentLauncher, LaunchError, LaunchRequest, RunningAgent};
pub use answer::{Answer, BrokenKind, FailureClass};
pub(crate) use case::case_seed;
pub use case::{run_case, CaseResult, RunOptions, DEFAULT_MAX_RSS_KIB};
pub use discover::{filter_cases, load_cases, scenario_files, DiscoverError, LoadedCase};
pub use judge::{
    DutyReport, DutyStatus, Evidence, Finding, Judgement, Severity, StepResult, Verdict,
};
pub use mock::MockLauncher;
pub use options::{ReferenceClient, RunOptionsBuilder};
pub use process::ExitRecord;
pub use qemu::QemuLauncher;
pub use template::{Placeholder, Template, TemplateError};

// Not the stable API: reachable from outside only through `crate::internals`.
pub(crate) use discover::compare_ids;
pub(crate) use judge::UNKNOWN_CLASS;
pub(crate) use process::finish_reaping;
pub(crate) use template::shell_quote;
pub(crate) use timeline::Timeline;

/// What a run tells as it goes (for progress output).
pub trait RunObserver {
    /// A case started (its agent and client are being set up).
    fn started(&mut self, _case: &LoadedCase) {}
    /// A case finished; `done` cases have finished so far.
    fn finished(&mut self, result: &CaseResult, done: usize);
}

struct OnResult<F>(F);

impl<F: FnMut(&CaseResult, usize)> RunObserver for OnResult<F> {
    fn finished(&mut self, result: &CaseResult, done: usize) {
        (self.0)(result, done);
    }
}

/// Runs `cases`, `options.jobs` at a time, and returns their results in case order.
/// `on_result` sees each result as it completes (for progress output).
pub async fn run_all(
    cases: Vec<LoadedCase>,
    options: &RunOptions,
    on_result: impl FnMut(&CaseResult, usize),
) -> Vec<CaseResult> {
    run_observed(cases, options, &mut OnResult(on_result)).await
}

/// [`run_all`], telling `observer` when each case starts and finishes.
pub async fn run_observed(
    cases: Vec<LoadedCase>,
    options: &RunOptions,
    observer: &mut impl RunObserver,
) -> Vec<CaseResult> {
    let total = cases.len();
    let options = Arc::new(options.clone());
    let permits = Arc::new(Semaphore::new(options.jobs.max(1)));
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for (index, case) in cases.iter().cloned().enumerate() {
        let options = options.clone();
        let permits = permits.clone();
        let started = started_tx.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            let _ = started.send(index);
            (index, run_case(&case, &options).await)
        });
    }
    drop(started_tx);
    let mut results: Vec<Option<CaseResult>> = vec![None; total];
    let mut done = 0;
    loop {
        tokio::select! {
            // Starts first: a case's start is always queued before its end.
            biased;
            Some(index) = started_rx.recv() => observer.started(&cases[index]),
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok((index, result))) => {
                    done += 1;
                    observer.finished(&result, done);
                    results[index] = Some(result);
                }
                Some(Err(_)) => {
                    // A case task that panicked: its slot is filled below, as a FAIL.
                    done += 1;
                }
            },
        }
    }
    results
        .into_iter()
        .zip(cases.iter())
        .map(|(result, case)| {
            result.unwrap_or_else(|| {
                let mut failed = CaseResult {
                    id: case.scenario.id.clone(),
                    title: case.scenario.title.clone(),
                    category: case.scenario.category().to_owned(),
                    requirement: case.scenario.requirement.clone(),
                    file: case.path.clone(),
                    seed: case_seed(options.seed, &case.scenario),
                    verdict: Verdict::Fail,
                    error: None,
                    unsupported: None,
                    judgement: None,
                    run: ClientRun::default(),
                    elapsed_ms: 0.0,
                    transcript: None,
                    timeline: None,
                };
                failed.error = Some("the runner failed on this case (an internal error)".into());
                failed
            })
        })
        .collect()
}
