//! `qga-harness fuzz` campaigns measured against known clients: the socat one-liner (bugs
//! of several kinds, each with a minimal scenario that reproduces it) and the reference
//! client's mutants (each a known bug a campaign should kill). They take minutes of wall
//! time with real client processes, so they are ignored in the default run:
//! `cargo test --release --test fuzz_campaign -- --ignored --nocapture`
//! (`FUZZ_CAMPAIGN_SECONDS` caps each mutant's campaign, default 15; `FUZZ_MUTANTS`, a
//! comma-separated list of names, runs only those; a mutant's campaign stops at its first
//! finding and prints the time to kill, a Markdown table row).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rstest::rstest;
use serde_json::{json, Value as Json};

use qga_harness::fuzz::campaign::{self, Campaign, Draft, DraftStep};
use qga_harness::internals::{Mutation, ReferenceInProcess};
use qga_harness::runner::{
    Client, MockLauncher, Placeholder, RunOptions, Template, DEFAULT_MAX_RSS_KIB,
};

fn options(client: Client, seed: u64) -> RunOptions {
    RunOptions {
        client,
        launcher: Arc::new(MockLauncher::default()),
        jobs: 1,
        seed,
        max_rss_kib: DEFAULT_MAX_RSS_KIB,
        artifacts: None,
        time_scale: 1,
    }
}

fn campaign(client: Client, seed: u64, seconds: u64, out: &Path) -> Campaign {
    Campaign {
        options: options(client, seed),
        seed,
        cases: None,
        duration: Some(Duration::from_secs(seconds)),
        out: out.to_owned(),
        stop_at_first: false,
    }
}

/// Reply buffers of at most 64 MiB: above the reference client's 48 MiB cap on a reply
/// line, and low enough that an endless reply passes it within a drawn step's timeout
/// even on a loaded machine (the campaign's default, 256 MiB, takes a fast one).
const TIGHT_MAX_RSS_KIB: u64 = 64 << 10;

async fn run(campaign: &Campaign) -> campaign::Summary {
    campaign::run(campaign, |_| {}, std::future::pending())
        .await
        .expect("the findings are written")
}

fn step(execute: &str, arguments: Option<Json>) -> DraftStep {
    DraftStep {
        execute: execute.to_owned(),
        arguments,
        timeout_ms: 400,
    }
}

fn exec_then_status() -> Vec<DraftStep> {
    vec![
        step(
            "guest-exec",
            Some(json!({"path": "/bin/echo", "arg": ["hi"], "capture-output": true})),
        ),
        step("guest-exec-status", Some(json!({"pid": 1200}))),
    ]
}

fn open_then_read() -> Vec<DraftStep> {
    vec![
        step(
            "guest-file-open",
            Some(json!({"path": "/etc/hostname", "mode": "r"})),
        ),
        step(
            "guest-file-read",
            Some(json!({"handle": 1000, "count": 64})),
        ),
    ]
}

fn host_name() -> Vec<DraftStep> {
    vec![step("guest-get-host-name", None)]
}

/// A rule object: `actions` on the first `command`.
fn on(command: &str, actions: Json) -> Json {
    json!({ "when": { "command": command, "times": 1 }, "do": actions })
}

fn replaced_by(text: &str) -> Json {
    on(
        "guest-get-host-name",
        json!([{ "action": "raw", "position": "replace", "text": text }]),
    )
}

/// Hostile guests of the kinds the campaign draws, each with a mutant of the reference
/// client that has the bug it exposes: the reference shows no kind, the mutant the one
/// named. Runtime: about 20 s (two in-process runs per row, 400 ms steps).
#[rstest]
#[case::exec_status_not_exited(
    Mutation::ExitedFalseIsFinal,
    exec_then_status(),
    vec![on("guest-exec-status", json!([{"action": "return", "value": {"exited": false}}]))],
    None, None, "wrong-result")]
#[case::exec_status_truncated(
    Mutation::IgnoreTruncation,
    exec_then_status(),
    vec![on("guest-exec-status", json!([{"action": "return", "value":
        {"exited": true, "exitcode": 0, "out-data": "aGkK", "out-truncated": true}}]))],
    None, None, "wrong-result")]
#[case::file_read_count_mismatch(
    Mutation::TrustCount,
    open_then_read(),
    vec![on("guest-file-read", json!([{"action": "return", "value":
        {"count": 10, "buf-b64": "aGkK", "eof": true}}]))],
    None, None, "wrong-result")]
#[case::idless_error_before_the_reply(
    Mutation::TrustIdlessErrors,
    host_name(),
    vec![on("guest-get-host-name", json!([{"action": "raw", "position": "before",
        "text": "{\"error\": {\"class\": \"GenericError\", \"desc\": \"stray\"}}\n"}]))],
    None, None, "wrong-result")]
#[case::ff_in_a_string_behind_the_answer(
    Mutation::GreedyLastFf,
    host_name(),
    vec![on("guest-get-host-name", json!([{"action": "coalesce", "count": 2},
        {"action": "raw", "position": "after",
         "base64": "eyJldmVudCI6ICJHVUVTVF9OT1RFIiwgImRhdGEiOiB7InRleHQiOiAi/yJ9fQo="}]))],
    None, None, "needless-failure")]
#[case::member_named_twice(
    Mutation::LastDuplicateWins,
    host_name(),
    vec![replaced_by("{\"return\": {\"host-name\": \"vm\"}, \"return\": {\"host-name\": \"forged\"}}\n")],
    Some("3.1.0"), None, "wrong-result")]
#[case::integer_beyond_64_bits(
    Mutation::LossyNumbers,
    host_name(),
    vec![replaced_by("{\"return\": 18446744073709551616}\n")],
    Some("3.1.0"), None, "wrong-result")]
#[case::raw_utf8(
    Mutation::Latin1Replies,
    host_name(),
    vec![replaced_by("{\"return\": {\"host-name\": \"h\u{f4}te-\u{20ac}\"}}\n")],
    Some("3.1.0"), None, "wrong-result")]
#[case::clock_sync_ids(Mutation::ClockSyncIds, host_name(), vec![], None, None, "unpredictable-sync-ids")]
#[case::endless_reply(
    Mutation::UnboundedBuffer,
    vec![step("guest-get-host-name", None), step("guest-ping", None)],
    vec![json!("guest-get-host-name#1:flood")],
    None, None, "bounded-memory")]
#[case::closed_connection(
    Mutation::NoReconnect,
    vec![step("guest-get-osinfo", None), step("guest-ping", None)],
    vec![json!("guest-get-osinfo#1:close-client")],
    None, Some("unix-listen"), "needless-failure")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drawn_guests_catch_their_mutant(
    #[case] mutation: Mutation,
    #[case] steps: Vec<DraftStep>,
    #[case] faults: Vec<Json>,
    #[case] version: Option<&str>,
    #[case] transport: Option<&str>,
    #[case] kind: &str,
) {
    let draft = Draft {
        steps,
        faults,
        state: None,
        version: version.map(str::to_owned),
        transport: transport.map(str::to_owned),
    };
    let tight = |client| RunOptions {
        max_rss_kib: TIGHT_MAX_RSS_KIB,
        ..options(client, 1)
    };
    let reference = Client::InProcess(Arc::new(ReferenceInProcess::default()));
    let kinds = campaign::kinds_of(&draft, &tight(reference))
        .await
        .expect("the case runs");
    assert!(kinds.is_empty(), "the reference client shows {kinds:?}");
    let mutant = Client::InProcess(Arc::new(ReferenceInProcess::mutant(mutation)));
    let kinds = campaign::kinds_of(&draft, &tight(mutant))
        .await
        .expect("the case runs");
    assert!(
        kinds.iter().any(|k| k == kind),
        "{} shows {kinds:?}, not {kind}",
        mutation.name()
    );
}

/// Drawn guests that give a correct client a reason to fail: the reference client shows
/// no kind (a line with a 0xFF inside it written after the sync reply comes ahead of the
/// command's reply, and may cost the call; an endless reply to a sync costs that call,
/// not the next one, and keeps the reply buffers bounded).
#[rstest]
#[case::ff_in_a_string_after_the_sync(
    vec![step("guest-ping", None)],
    vec![on("guest-sync-delimited", json!([{"action": "raw", "position": "after",
        "base64": "eyJldmVudCI6ICJHVUVTVF9OT1RFIiwgImRhdGEiOiB7InRleHQiOiAi/yJ9fQo="}]))])]
#[case::endless_reply_to_a_sync(
    vec![step("guest-ping", None), step("guest-get-host-name", None)],
    vec![json!("guest-sync-delimited#1:flood")])]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_draws_pass_the_reference(#[case] steps: Vec<DraftStep>, #[case] faults: Vec<Json>) {
    let draft = Draft {
        steps,
        faults,
        ..Draft::default()
    };
    let reference = Client::InProcess(Arc::new(ReferenceInProcess::default()));
    let kinds = campaign::kinds_of(&draft, &options(reference, 1))
        .await
        .expect("the case runs");
    assert!(kinds.is_empty(), "the reference client shows {kinds:?}");
}

/// An endless reply over the unix-listen transport stops when its client hangs up: the
/// agent's failed write marks that client gone for endless replies (the connection
/// stays until the agent reads its end, as qemu-ga keeps it), and the next call is
/// answered. Without that, every write failed at once and the flood went on without
/// ever yielding, so the case never ended: it runs on a runtime of its own, watched from this thread. Runtime:
/// about 2 s.
#[test]
fn an_endless_reply_stops_when_its_client_leaves_the_listening_socket() {
    let draft = Draft {
        steps: vec![
            DraftStep {
                timeout_ms: 1000,
                ..host_name().remove(0)
            },
            step("guest-ping", None),
        ],
        faults: vec![json!("guest-get-host-name#1:flood")],
        transport: Some("unix-listen".into()),
        ..Draft::default()
    };
    let (done, kinds) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let reference = Client::InProcess(Arc::new(ReferenceInProcess::default()));
        let result = runtime.block_on(campaign::kinds_of(&draft, &options(reference, 1)));
        let _ = done.send(result.expect("the case runs"));
        // A flood that never yields would keep the runtime's workers: leave them.
        std::mem::forget(runtime);
    });
    let kinds = kinds
        .recv_timeout(Duration::from_secs(60))
        .expect("the case ends within 60 s");
    assert!(kinds.is_empty(), "the reference client shows {kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of wall time with a real client process per step"]
async fn socat_one_liner_shows_three_kinds_that_reproduce() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let command = format!(
        "{} {{socket}} {{request}} {{timeout_s}}",
        root.join("clients/socat/oneshot.sh").display()
    );
    let template = Template::parse(&command, "--client", Placeholder::ONESHOT).expect("template");
    let out = tempfile::tempdir().expect("tempdir");
    let summary = run(&campaign(Client::Oneshot(template), 1, 60, out.path())).await;
    eprintln!("{}", summary.line());
    let reproduced: Vec<&str> = summary
        .kinds
        .values()
        .filter(|k| k.reproduced == 3 && k.file.as_ref().is_some_and(|f| f.is_file()))
        .map(|k| k.kind.as_str())
        .collect();
    assert!(
        reproduced.len() >= 3,
        "kinds that reproduced 3 of 3: {reproduced:?} ({})",
        summary.line()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes of wall time: a campaign per mutant"]
async fn campaigns_kill_the_mutants() {
    let seconds: u64 = std::env::var("FUZZ_CAMPAIGN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let only: Option<Vec<Mutation>> = std::env::var("FUZZ_MUTANTS").ok().map(|names| {
        names
            .split(',')
            .map(|name| {
                Mutation::parse(name.trim())
                    .unwrap_or_else(|| panic!("FUZZ_MUTANTS: no mutant named {name:?}"))
            })
            .collect()
    });
    let mut survivors: Vec<Mutation> = Vec::new();
    for mutation in Mutation::ALL {
        if only.as_ref().is_some_and(|only| !only.contains(&mutation)) {
            continue;
        }
        let out = tempfile::tempdir().expect("tempdir");
        let client = Client::InProcess(Arc::new(ReferenceInProcess::mutant(mutation)));
        let mut campaign = campaign(client, 1, seconds, out.path());
        campaign.stop_at_first = true;
        let summary = run(&campaign).await;
        // The first kind whose minimal scenario reproduced; a flag that did not is no kill.
        let killed = summary
            .kinds
            .values()
            .filter(|k| k.reproduced > 0)
            .min_by_key(|k| k.first_after);
        match killed {
            Some(first) => eprintln!(
                "| `{}` | {:.1} s | {} | `{}` | {}/3 |",
                mutation.name(),
                first.first_after.as_secs_f64(),
                first.first_case,
                first.kind,
                first.reproduced
            ),
            None => {
                eprintln!(
                    "| `{}` | survived {seconds} s | {} | - | - |",
                    mutation.name(),
                    summary.cases
                );
                survivors.push(mutation);
            }
        }
    }
    assert!(
        survivors.is_empty(),
        "mutants no campaign killed: {survivors:?}"
    );
}

/// A session client that fails every step without talking to the agent, with one of two
/// messages: a Python `OSError` for the `guest-get-*` commands and a `KeyError` for the
/// others, each naming the command and a number that changes from step to step.
const TWO_CAUSE_SESSION: &str = r#"
import itertools, json, sys
counter = itertools.count(1000)
for line in sys.stdin:
    step = json.loads(line)
    name = step["execute"]
    if name.startswith("guest-get-"):
        desc = f"{name}: OSError: [Errno {next(counter)}] broken pipe"
    else:
        desc = f"{name}: KeyError: 'reply {next(counter)}'"
    print(json.dumps({"id": step["id"], "error": {"class": "Protocol", "desc": desc}}), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_is_counted_by_cause_and_each_causes_first_case_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("two_causes.py");
    std::fs::write(&script, TWO_CAUSE_SESSION).expect("script");
    let command = format!("python3 {} {{socket}}", script.display());
    let template =
        Template::parse(&command, "--client-session", Placeholder::SESSION).expect("template");
    let out = dir.path().join("findings");
    let mut campaign = campaign(Client::Session(template), 1, 600, &out);
    campaign.cases = Some(40);
    let summary = run(&campaign).await;
    let found = summary
        .kinds
        .get("needless-failure")
        .unwrap_or_else(|| panic!("no needless-failure: {}", summary.line()));
    let mut causes: Vec<&str> = found.causes.iter().map(|c| c.cause.as_str()).collect();
    causes.sort_unstable();
    assert_eq!(
        causes,
        [
            "Protocol: CMD: KeyError: '…'",
            "Protocol: CMD: OSError: [Errno N] broken pipe",
        ],
        "one cause per message, whatever the command and the numbers"
    );
    assert_eq!(found.other_causes, 0);
    assert_eq!(
        found.causes.iter().map(|c| c.count).sum::<u64>(),
        found.count,
        "every case of the kind is counted under its cause"
    );
    for cause in &found.causes {
        let text = std::fs::read_to_string(&cause.file).expect("the cause's case is written");
        let scenario = qga_harness::scenario::Scenario::parse(&text, &cause.file)
            .unwrap_or_else(|e| panic!("{}: {e}", cause.file.display()));
        assert!(
            scenario.title.ends_with(&cause.cause),
            "{}: {}",
            cause.file.display(),
            scenario.title
        );
        // Drawn as it was: the case that showed the cause shows it again.
        let result = qga_harness::runner::run_case(
            &qga_harness::runner::LoadedCase {
                path: cause.file.clone(),
                scenario,
            },
            &campaign.options,
        )
        .await;
        assert_eq!(
            qga_harness::fuzz::cause::cause(&result, "needless-failure").as_deref(),
            Some(cause.cause.as_str()),
            "{}",
            cause.file.display()
        );
    }
}
