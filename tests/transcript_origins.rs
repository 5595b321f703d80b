//! The transcript names what every request and output is (the agent's ground truth), and
//! the judge uses those names: one test per origin kind, on a real mock over a real unix
//! socket.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{builder_with, Client};
use qga_harness::internals::judge;
use qga_harness::runner::{Answer, ClientRun, Evidence, StepRecord, Verdict};
use qga_harness::scenario::Scenario;
use qga_harness::transcript::{ConnSpan, FaultOutput, ItemKind, Origin, Wire};
use serde_json::json;

/// Runs `act` against a mock built from `specs` (and `build`), then reads its transcript.
async fn wire_of<F, Fut>(
    specs: &[&str],
    build: impl FnOnce(qga_harness::MockAgentBuilder) -> qga_harness::MockAgentBuilder,
    act: F,
) -> Wire
where
    F: FnOnce(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("transcript.jsonl");
    let mock = build(builder_with(specs).transcript(&path))
        .start_in(dir.path())
        .await
        .expect("start the mock");
    act(mock.socket_path().to_owned()).await;
    mock.shutdown().await.expect("shut down");
    Wire::read(&path).expect("read the transcript")
}

/// Judges one guest-ping step answered with `value` against `wire`.
fn judged(wire: &Wire, execute: &str, value: serde_json::Value) -> qga_harness::runner::Judgement {
    let text = json!({
        "id": "sync.1", "title": "t", "requirement": "r",
        "steps": [{"execute": execute, "timeout_ms": 1000, "expect": [{"return-type": "object"}, {"return-type": "integer"}]}],
        "duties": ["no-stale-attribution"]
    })
    .to_string();
    let scenario = Scenario::parse(&text, Path::new("case.json")).expect("scenario");
    let run = ClientRun {
        steps: vec![StepRecord {
            index: 0,
            execute: execute.to_owned(),
            started_us: 0,
            elapsed_us: 60_000_000,
            answer: Answer::Return { value },
        }],
        processes: Vec::new(),
        peak_buffer_bytes: None,
    };
    judge(&Evidence {
        scenario: &scenario,
        run: &run,
        wire,
        launch_span_us: 0,
        oneshot: false,
        in_process: false,
        max_rss_kib: 1 << 20,
        held_connections: &[],
    })
}

fn stale_finding(j: &qga_harness::runner::Judgement) -> String {
    j.findings
        .iter()
        .find(|f| f.subject == "duty no-stale-attribution")
        .map(|f| f.actual.clone())
        .unwrap_or_else(|| panic!("no stale attribution finding: {:#?}", j.findings))
}

const PING: &[u8] = b"{\"execute\":\"guest-ping\"}";

#[tokio::test]
async fn a_reply_names_its_request_and_the_judge_accepts_it() {
    let wire = wire_of(
        &[],
        |b| b,
        |socket| async move {
            let mut c = Client::connect(&socket).await;
            c.send(PING).await;
            c.expect(b"{\"return\": {}}\n").await;
        },
    )
    .await;
    assert_eq!(wire.items.len(), 1);
    let item = &wire.items[0];
    assert_eq!(item.request, 1);
    assert_eq!(
        item.input,
        vec![ConnSpan {
            conn: 1,
            from: 0,
            to: PING.len() as u64
        }]
    );
    assert_eq!(wire.replies.len(), 1);
    assert_eq!(wire.replies[0].origin, Origin::Reply { request: 1 });
    assert_eq!(wire.replies[0].for_conn, Some(1));
    assert!(!wire.replies[0].stale);
    assert_eq!(
        judged(&wire, "guest-ping", json!({})).verdict,
        Verdict::Pass
    );
}

#[tokio::test]
async fn a_flush_byte_is_a_parse_error_with_its_input() {
    let wire = wire_of(
        &[],
        |b| b,
        |socket| async move {
            let mut c = Client::connect(&socket).await;
            c.send(b"\xff").await;
            c.send(PING).await;
            let _ = c.exact(1).await;
            c.until_quiet().await;
        },
    )
    .await;
    assert!(
        matches!(wire.items[0].kind, ItemKind::Flush(0xFF)),
        "{:?}",
        wire.items[0]
    );
    assert_eq!(
        wire.replies[0].origin,
        Origin::ParseError {
            request: 1,
            input: vec![ConnSpan {
                conn: 1,
                from: 0,
                to: 1
            }]
        }
    );
    assert_eq!(wire.replies[1].origin, Origin::Reply { request: 2 });
    assert_eq!(
        wire.items[1].input,
        vec![ConnSpan {
            conn: 1,
            from: 1,
            to: 1 + PING.len() as u64
        }]
    );
}

#[tokio::test]
async fn fault_outputs_name_their_rule_and_kind_and_the_judge_says_so() {
    let cases: [(&str, FaultOutput, serde_json::Value); 4] = [
        (
            r#"{"when":{"command":"guest-ping"},"do":[{"action":"raw","text":"{\"return\": 42}\n","position":"before"}]}"#,
            FaultOutput::Raw,
            json!(42),
        ),
        ("guest-ping:duplicate", FaultOutput::Duplicate, json!({})),
        ("guest-ping:garbage=ff", FaultOutput::GarbageFf, json!({})),
        (
            "guest-ping:spurious=stale-sync",
            FaultOutput::SpuriousStaleSync,
            json!({}),
        ),
    ];
    for (spec, kind, taken) in cases {
        let wire = wire_of(
            &[spec],
            |b| b,
            |socket| async move {
                let mut c = Client::connect(&socket).await;
                c.send(PING).await;
                c.until_quiet().await;
            },
        )
        .await;
        let injected = wire
            .replies
            .iter()
            .find(|r| matches!(r.origin, Origin::Fault { fault, .. } if fault == kind))
            .unwrap_or_else(|| panic!("{spec}: no {kind:?} output in {:#?}", wire.replies));
        assert_eq!(
            injected.origin,
            Origin::Fault {
                rule: 1,
                fault: kind,
                request: Some(1)
            },
            "{spec}"
        );
        let reply = wire.answer_to(1).expect("the ping's own reply");
        assert_eq!(
            wire.replies[reply].origin,
            Origin::Reply { request: 1 },
            "{spec}"
        );
        // A client reporting its own reply is never charged; one reporting the raw line is,
        // and the finding names the rule's output.
        assert_eq!(
            judged(&wire, "guest-ping", json!({})).verdict,
            Verdict::Pass,
            "{spec}"
        );
        if kind == FaultOutput::Raw {
            let actual = stale_finding(&judged(&wire, "guest-ping", taken));
            assert!(actual.contains("raw output of fault rule 1"), "{actual}");
        }
    }
}

#[tokio::test]
async fn preloaded_output_is_named_and_never_an_answer() {
    let wire = wire_of(
        &[],
        |b| b.pending_output(b"{\"return\": 7}\n".to_vec()),
        |socket| async move {
            let mut c = Client::connect(&socket).await;
            c.expect(b"{\"return\": 7}\n").await;
            c.send(b"{\"execute\":\"guest-get-time\"}").await;
            let _ = c.exact(1).await;
            c.until_quiet().await;
        },
    )
    .await;
    assert_eq!(wire.replies[0].origin, Origin::Preloaded);
    assert_eq!(wire.replies[0].for_conn, None);
    let actual = stale_finding(&judged(&wire, "guest-get-time", json!(7)));
    assert!(actual.contains("before the mock started"), "{actual}");
}

#[tokio::test]
async fn a_reply_that_reaches_a_later_connection_is_stale_and_the_judge_says_whose_it_was() {
    let wire = wire_of(
        &["guest-get-time:delay=300ms"],
        |b| b,
        |socket| async move {
            let mut first = Client::connect(&socket).await;
            first.send(b"{\"execute\":\"guest-get-time\"}").await;
            drop(first);
            let mut second = Client::connect(&socket).await;
            let late = second.exact(1).await;
            assert_eq!(late, b"{");
            second.until_quiet().await;
            second.send(PING).await;
            second.until_quiet().await;
        },
    )
    .await;
    let stale = &wire.replies[0];
    assert_eq!(stale.origin, Origin::Reply { request: 1 });
    assert_eq!(
        (stale.conn, stale.for_conn, stale.stale),
        (2, Some(1), true)
    );
    let time = stale
        .value
        .as_ref()
        .and_then(|v| v.get("return"))
        .cloned()
        .expect("time");
    let actual = stale_finding(&judged(&wire, "guest-ping", time));
    assert!(
        actual.contains("written for connection 1 and delivered stale to connection 2"),
        "{actual}"
    );
}

#[tokio::test]
async fn leftover_input_completed_by_a_later_client_spans_both_connections() {
    let wire = wire_of(
        &[],
        |b| b,
        |socket| async move {
            let mut first = Client::connect(&socket).await;
            first.send(b"{\"execute\":\"guest-ping\"").await;
            drop(first);
            let mut second = Client::connect(&socket).await;
            second.send(b"}").await;
            second.expect(b"{\"return\": {}}\n").await;
        },
    )
    .await;
    let item = &wire.items[0];
    assert_eq!(item.conn, 2);
    assert_eq!(
        item.input,
        vec![
            ConnSpan {
                conn: 1,
                from: 0,
                to: 23
            },
            ConnSpan {
                conn: 2,
                from: 0,
                to: 1
            }
        ]
    );
    assert!(item.has_leftover_input());
    assert_eq!(wire.replies[0].for_conn, Some(2));
    assert_eq!(
        judged(&wire, "guest-ping", json!({})).verdict,
        Verdict::Pass
    );
}

#[tokio::test]
async fn requests_keep_one_number_across_connections_and_faults() {
    let wire = wire_of(
        &["guest-ping#2:spurious=other-command/after"],
        |b| b,
        |socket| async move {
            for _ in 0..2 {
                let mut c = Client::connect(&socket).await;
                c.send(PING).await;
                c.until_quiet().await;
            }
        },
    )
    .await;
    let numbers: Vec<u64> = wire.items.iter().map(|i| i.request).collect();
    assert_eq!(numbers, vec![1, 2]);
    let _ = Duration::ZERO;
    assert!(wire.replies.iter().any(|r| r.origin
        == Origin::Fault {
            rule: 1,
            fault: FaultOutput::SpuriousOtherCommand,
            request: Some(2)
        }));
}
