//! Catalogue cases run in-process against a Rust client, as a Rust project would run them
//! from `cargo test`: the reference client through `RunOptions::default()`, and a client
//! of the project's own (here: a broken one) through the builder.

use std::path::Path;

use qga_harness::runner::{
    self, Answer, BoxFuture, FailureClass, InProcessClient, InProcessSession, LoadedCase,
    RunOptions, StepRequest, Verdict,
};
use qga_harness::{client::Client, Expectation, MockAgent};

fn cases(ids: &[&str]) -> Vec<LoadedCase> {
    let files = runner::scenario_files(&["scenarios".into()]).expect("catalogue");
    let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    let cases = runner::filter_cases(runner::load_cases(&files).expect("cases"), &ids);
    assert_eq!(cases.len(), ids.len(), "every id names a case");
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_client_passes_sync_cases_in_process() {
    let options = RunOptions::default();

    let results =
        runner::run_all(cases(&["sync.1", "sync.2", "sync.3"]), &options, |_, _| {}).await;

    for result in &results {
        assert_eq!(result.verdict, Verdict::Pass, "{result:#?}");
    }
}

#[tokio::test]
async fn the_reference_client_syncs_before_its_first_command_on_the_mock() {
    let mock = MockAgent::start().await.expect("mock");
    mock.expect(Expectation::sync_delimited_before_first_command());
    let mut client = Client::builder(mock.socket_path()).build();

    let info = client
        .execute("guest-info", None)
        .await
        .expect("guest-info");

    assert!(info.get("version").is_some());
    assert!(mock.verify().is_met(), "{}", mock.verify());
}

/// A client that never syncs and answers every step with whatever line comes next.
struct NoSync;

struct NoSyncSession {
    socket: std::path::PathBuf,
}

impl InProcessClient for NoSync {
    fn name(&self) -> String {
        "no-sync".into()
    }

    fn open<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Box<dyn InProcessSession>> {
        Box::pin(async move {
            Box::new(NoSyncSession {
                socket: socket.to_owned(),
            }) as Box<dyn InProcessSession>
        })
    }
}

impl InProcessSession for NoSyncSession {
    fn execute<'a>(&'a mut self, request: &'a StepRequest) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
            let disconnected = |e: std::io::Error| Answer::ClientError {
                class: FailureClass::Disconnected,
                desc: e.to_string(),
            };
            let stream = match tokio::net::UnixStream::connect(&self.socket).await {
                Ok(stream) => stream,
                Err(e) => return disconnected(e),
            };
            let mut stream = BufReader::new(stream);
            if let Err(e) = stream
                .get_mut()
                .write_all(request.request_json().as_bytes())
                .await
            {
                return disconnected(e);
            }
            let mut line = String::new();
            if let Err(e) = stream.read_line(&mut line).await {
                return disconnected(e);
            }
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(reply) => Answer::Return {
                    value: reply["return"].clone(),
                },
                Err(e) => Answer::ClientError {
                    class: FailureClass::Protocol,
                    desc: e.to_string(),
                },
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_ones_own_runs_through_the_builder_and_fails_where_it_should() {
    let options = RunOptions::builder().in_process(NoSync).seed(5).build();

    // sync.1: stale bytes wait in the channel; a client that does not sync reads them as
    // its reply.
    let results = runner::run_all(cases(&["sync.1"]), &options, |_, _| {}).await;

    assert_eq!(results[0].verdict, Verdict::Fail, "{:#?}", results[0]);
}
