//! The runner's own cost: per case (temp dir, mock start on its own socket, teardown,
//! transcript read back, judging) with a trivial in-process client, next to the client's
//! bare work on a mock that is already running; cases per second with two jobs; and the
//! same cases with the reference client run as a program, a process per case.
//!
//! `cargo bench --bench runner` prints a table. Targets: at most 5 ms of overhead per case,
//! and 100 trivial cases in at most 2 s with `--jobs 2`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qga_harness::runner::{
    self, Answer, BoxFuture, CaseResult, Client, InProcessClient, InProcessSession, LoadedCase,
    MockLauncher, RunOptions, StepRequest, Verdict,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const CASES: usize = 100;

/// The least a client can do: connect, send the command, read one line.
struct Trivial;

struct TrivialSession {
    stream: Option<BufReader<UnixStream>>,
    socket: std::path::PathBuf,
}

impl InProcessClient for Trivial {
    fn name(&self) -> String {
        "trivial in-process client".into()
    }

    fn open<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Box<dyn InProcessSession>> {
        Box::pin(async move {
            Box::new(TrivialSession {
                stream: None,
                socket: socket.to_owned(),
            }) as Box<dyn InProcessSession>
        })
    }
}

impl InProcessSession for TrivialSession {
    fn execute<'a>(&'a mut self, request: &'a StepRequest) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            match ping(self, request).await {
                Ok(answer) => answer,
                Err(e) => Answer::ClientError {
                    class: runner::FailureClass::Disconnected,
                    desc: e.to_string(),
                },
            }
        })
    }
}

async fn ping(session: &mut TrivialSession, request: &StepRequest) -> std::io::Result<Answer> {
    if session.stream.is_none() {
        session.stream = Some(BufReader::new(UnixStream::connect(&session.socket).await?));
    }
    let Some(stream) = session.stream.as_mut() else {
        return Err(std::io::Error::other("no stream"));
    };
    stream
        .get_mut()
        .write_all(request.request_json().as_bytes())
        .await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let reply: serde_json::Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    Ok(Answer::Return {
        value: reply["return"].clone(),
    })
}

fn write_cases(dir: &Path) -> Vec<LoadedCase> {
    for n in 1..=CASES {
        let text = format!(
            r#"{{"id": "bench.{n}", "title": "ping", "requirement": "A ping returns {{}}.",
                "steps": [{{"execute": "guest-ping", "timeout_ms": 1000, "expect": [{{"return": {{}}}}]}}],
                "duties": ["total-deadline", "no-stale-attribution"]}}"#
        );
        std::fs::write(dir.join(format!("bench-{n}.json")), text).expect("write case");
    }
    let files = runner::scenario_files(&[dir.to_owned()]).expect("files");
    runner::load_cases(&files).expect("cases")
}

fn options(client: Client, jobs: usize) -> RunOptions {
    RunOptions {
        time_scale: 1,
        client,
        launcher: Arc::new(MockLauncher::default()),
        jobs,
        seed: 1,
        max_rss_kib: runner::DEFAULT_MAX_RSS_KIB,
        artifacts: None,
    }
}

fn run(
    runtime: &tokio::runtime::Runtime,
    cases: &[LoadedCase],
    options: &RunOptions,
) -> (Duration, Vec<CaseResult>) {
    let started = Instant::now();
    let results = runtime.block_on(runner::run_all(cases.to_vec(), options, |_, _| {}));
    (started.elapsed(), results)
}

fn check(results: &[CaseResult]) {
    for result in results {
        assert_eq!(
            result.verdict,
            Verdict::Pass,
            "{} {:?} {:?}",
            result.id,
            result.error,
            result.judgement.as_ref().map(|j| &j.findings)
        );
    }
}

/// The client's own work per case, on one mock that stays up: connect, ping, close.
fn bare_client(runtime: &tokio::runtime::Runtime) -> Duration {
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let mock = qga_harness::MockAgent::builder()
            .start_in(dir.path())
            .await
            .expect("mock starts");
        let request = StepRequest {
            id: 1,
            execute: "guest-ping".into(),
            arguments: None,
            timeout_ms: 1000,
        };
        let started = Instant::now();
        for _ in 0..CASES {
            let mut session = TrivialSession {
                stream: None,
                socket: mock.socket_path().to_owned(),
            };
            let answer = ping(&mut session, &request).await.expect("ping");
            assert!(matches!(answer, Answer::Return { .. }));
        }
        let elapsed = started.elapsed() / CASES as u32;
        let _ = mock.shutdown().await;
        elapsed
    })
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = write_cases(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let trivial = Client::InProcess(Arc::new(Trivial));

    // Warm up (page cache, lazy statics), then measure.
    let (_, results) = run(&runtime, &cases[..10], &options(trivial.clone(), 1));
    check(&results);
    let bare = bare_client(&runtime);
    let (sequential, results) = run(&runtime, &cases, &options(trivial.clone(), 1));
    check(&results);
    let (parallel, results) = run(&runtime, &cases, &options(trivial.clone(), 2));
    check(&results);

    // The same cases with the reference client as a program (`qga-harness session`): a
    // process per case, its start-up and its sync included.
    let reference = Client::Session(
        runner::Template::parse(
            &format!(
                "exec {} session --socket {{socket}}",
                qga_harness::internals::shell_quote(env!("CARGO_BIN_EXE_qga-harness"))
            ),
            "reference",
            runner::Placeholder::SESSION,
        )
        .expect("template"),
    );
    let (with_reference, results) = run(&runtime, &cases, &options(reference, 2));
    check(&results);

    let per_case = sequential / CASES as u32;
    let overhead = per_case.saturating_sub(bare);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "runner benchmark: {CASES} trivial cases (one guest-ping each), trivial in-process client"
    );
    println!("{:<48} {:>12}", "measure", "value");
    println!(
        "{:<48} {:>9.3} ms",
        "client's bare work per case (connect, ping)",
        ms(bare)
    );
    println!("{:<48} {:>9.3} ms", "one case, --jobs 1", ms(per_case));
    println!(
        "{:<48} {:>9.3} ms   (target <= 5 ms)",
        "runner overhead per case",
        ms(overhead)
    );
    println!(
        "{:<48} {:>9.3} s    (target <= 2 s)",
        "100 cases, --jobs 2",
        parallel.as_secs_f64()
    );
    println!(
        "{:<48} {:>9.0} /s",
        "cases per second, --jobs 2",
        CASES as f64 / parallel.as_secs_f64()
    );
    println!(
        "{:<48} {:>9.3} s    ({:.0} cases/s)",
        "100 cases, --jobs 2, reference client process",
        with_reference.as_secs_f64(),
        CASES as f64 / with_reference.as_secs_f64()
    );
}
