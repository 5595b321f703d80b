//! A scenario's other client: a connection the runner holds on the agent's channel before
//! the client under test connects. Its requests are never the tested client's duties, and
//! a client that takes its replies is charged with what they really were. Run on the
//! catalogue's own case for it (a real mock on a real unix socket).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::runner::explain;
use qga_harness::internals::{Mutation, ReferenceInProcess};
use qga_harness::runner::{
    self, CaseResult, Client, DutyStatus, LoadedCase, MockLauncher, RunOptions, Verdict,
    DEFAULT_MAX_RSS_KIB,
};

fn the_case() -> LoadedCase {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = runner::scenario_files(&[root.join("scenarios")]).expect("scenario files");
    let mut cases = runner::load_cases(&files).expect("the catalogue loads");
    cases.retain(|c| c.scenario.id == "sync.20");
    assert_eq!(cases.len(), 1, "the catalogue has sync.20");
    let case = cases.remove(0);
    assert!(
        case.scenario.other_client.is_some(),
        "sync.20 has another client"
    );
    case
}

fn run(client: Client) -> CaseResult {
    let options = RunOptions {
        client,
        launcher: Arc::new(MockLauncher::default()),
        jobs: 1,
        seed: 1,
        max_rss_kib: DEFAULT_MAX_RSS_KIB,
        artifacts: None,
        time_scale: 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut results = runtime.block_on(runner::run_all(vec![the_case()], &options, |_, _| {}));
    results.remove(0)
}

fn reference(mutation: Option<Mutation>) -> Client {
    Client::InProcess(Arc::new(ReferenceInProcess { mutation }))
}

fn findings(result: &CaseResult) -> Vec<String> {
    result
        .judgement
        .iter()
        .flat_map(|j| &j.findings)
        .map(|f| format!("{}: {}", f.subject, f.actual))
        .collect()
}

#[test]
fn the_other_clients_small_sync_ids_are_not_charged_to_the_client_under_test() {
    let result = run(reference(None));
    assert_eq!(result.verdict, Verdict::Pass, "{}", explain(&result));
    let judgement = result.judgement.as_ref().expect("judged");
    let unpredictable = judgement
        .duties
        .iter()
        .find(|d| d.duty == "unpredictable-sync-ids")
        .expect("the case lists unpredictable-sync-ids");
    // The other client sent the ids 1 and 2 on connection 1; the reference client's own
    // sync on connection 2 is random.
    assert_eq!(
        unpredictable.status,
        DutyStatus::Met,
        "{}",
        explain(&result)
    );
}

#[test]
fn a_client_that_also_counts_sync_ids_from_1_is_charged_with_the_other_clients_reply() {
    let result = run(reference(Some(Mutation::SequentialSyncIds)));
    assert_eq!(result.verdict, Verdict::Fail, "{}", explain(&result));
    let found = findings(&result);
    // It took the other client's reply 1 for its own sync with id 1, and the next line,
    // the other client's reply 2, for its answer.
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("duty no-stale-attribution")
                && f.contains("reported return 2 from the agent's reply to request 2")
                && f.contains(
                    "sent by the other client that held the channel before this one (connection 1)"
                )
                && f.contains("delivered stale to connection 2")),
        "{}",
        found.join("\n")
    );
    // Its own small id is a finding of its own; the other client's ids 1 and 2 are not.
    let ids: Vec<&String> = found
        .iter()
        .filter(|f| f.starts_with("duty unpredictable-sync-ids"))
        .collect();
    assert_eq!(ids.len(), 1, "{}", found.join("\n"));
}

/// A client that owns the agent's channel (as libvirt does) and says so.
struct OwnsTheChannel;

impl qga_harness::runner::InProcessClient for OwnsTheChannel {
    fn name(&self) -> String {
        "a client that owns the channel".into()
    }

    fn open<'a>(
        &'a self,
        _socket: &'a Path,
    ) -> qga_harness::runner::BoxFuture<'a, Box<dyn qga_harness::runner::InProcessSession>> {
        unreachable!("a case this client cannot run is not opened")
    }

    fn cannot_run(&self, scenario: &qga_harness::scenario::Scenario) -> Option<String> {
        scenario
            .other_client
            .as_ref()
            .map(|_| "it owns the channel".to_owned())
    }
}

#[test]
fn a_client_that_cannot_share_the_channel_is_unsupported_with_its_reason() {
    let result = run(Client::InProcess(Arc::new(OwnsTheChannel)));
    assert_eq!(result.verdict, Verdict::Unsupported, "{}", explain(&result));
    assert_eq!(result.unsupported.as_deref(), Some("it owns the channel"));
}
