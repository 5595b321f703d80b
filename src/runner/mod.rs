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
mod case;
mod discover;
mod judge;
mod mock;
mod options;
pub(crate) mod process;
pub(crate) mod template;
mod transcript;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use adapter::{
    BoxFuture, Client, ClientRun, InProcessClient, InProcessSession, ProcessReport, StepRecord,
    StepRequest,
};
pub use agent::{AgentLauncher, LaunchError, LaunchRequest, RunningAgent};
pub use answer::{Answer, BrokenKind, FailureClass};
pub use case::{case_deadline, case_seed, run_case, CaseResult, RunOptions, DEFAULT_MAX_RSS_KIB};
pub use discover::{
    compare_ids, filter_cases, load_cases, scenario_files, DiscoverError, LoadedCase,
};
pub use judge::{
    deadline_grace_ms, describe_outcomes, duty_requirement, is_no_reply_command, is_side_effecting,
    DutyReport, DutyStatus, Finding, Judgement, Severity, StepResult, Verdict,
};
pub use mock::MockLauncher;
pub use options::{ReferenceClient, RunOptionsBuilder};
pub(crate) use process::finish_reaping;
pub use process::ExitRecord;
pub(crate) use template::shell_quote;
pub use template::{Placeholder, Template, TemplateError};
pub use transcript::Wire;

/// Runs `cases`, `options.jobs` at a time, and returns their results in case order.
/// `on_result` sees each result as it completes (for progress output).
pub async fn run_all(
    cases: Vec<LoadedCase>,
    options: &RunOptions,
    mut on_result: impl FnMut(&CaseResult, usize),
) -> Vec<CaseResult> {
    let total = cases.len();
    let options = Arc::new(options.clone());
    let permits = Arc::new(Semaphore::new(options.jobs.max(1)));
    let mut tasks = JoinSet::new();
    for (index, case) in cases.iter().cloned().enumerate() {
        let options = options.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            (index, run_case(&case, &options).await)
        });
    }
    let mut results: Vec<Option<CaseResult>> = vec![None; total];
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => {
                done += 1;
                on_result(&result, done);
                results[index] = Some(result);
            }
            Err(e) => {
                // A case task that panicked: its slot is filled below, as a FAIL.
                let _ = e;
                done += 1;
            }
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
                };
                failed.error = Some("the runner failed on this case (an internal error)".into());
                failed
            })
        })
        .collect()
}
