use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use rstest::rstest;
use serde_json::json;

use super::*;
use crate::runner::adapter::ClientRun;
use crate::runner::process::ExitRecord;
use crate::runner::ProcessReport;
use crate::transcript::{ConnSpan, Origin};

/// A transcript built record by record, with the agent's ground truth: the client's bytes
/// go through the agent's own parser (one per connection here) and become numbered
/// requests; `agent_sends` answers the oldest unanswered request, as a faithful agent does,
/// and `agent_injects` writes output of a given origin.
#[derive(Default)]
struct Script {
    lines: Vec<String>,
    parsers: HashMap<u64, crate::wire::Streamer>,
    in_at: HashMap<u64, u64>,
    out_at: HashMap<u64, u64>,
    next_request: u64,
    next_output: u64,
    unanswered: std::collections::VecDeque<(Origin, u64)>,
}

impl Script {
    fn bytes(mut self, t_us: u64, conn: u64, dir: &str, data: &[u8]) -> Self {
        let offsets = if dir == "in" {
            &mut self.in_at
        } else {
            &mut self.out_at
        };
        let at = *offsets.get(&conn).unwrap_or(&0);
        offsets.insert(conn, at + data.len() as u64);
        let record = match std::str::from_utf8(data) {
            Ok(text) if !text.bytes().any(|b| b < 0x20 && b != b'\n') => {
                json!({"t_us": t_us, "conn": conn, "dir": dir, "at": at, "text": text})
            }
            _ => json!({"t_us": t_us, "conn": conn, "dir": dir, "at": at,
                "b64": base64::engine::general_purpose::STANDARD.encode(data)}),
        };
        self.lines.push(record.to_string());
        self
    }
    fn client_sends(mut self, t_us: u64, conn: u64, data: &[u8]) -> Self {
        let at = *self.in_at.get(&conn).unwrap_or(&0);
        self = self.bytes(t_us, conn, "in", data);
        let mut items = Vec::new();
        self.parsers
            .entry(conn)
            .or_default()
            .feed_spans(data, &mut |parsed, span| items.push((parsed, span)));
        for (parsed, span) in items {
            self.next_request += 1;
            let request = self.next_request;
            let input = vec![ConnSpan {
                conn,
                from: span.start,
                to: span.end,
            }];
            let _ = at;
            let mut record = json!({"t_us": t_us, "event": "request", "request": request,
                "conn": conn, "input": input});
            let origin = match parsed {
                crate::wire::Parsed::Value(value) => {
                    let value = value.to_serde();
                    if let Some(command) = value.get("execute") {
                        record["command"] = command.clone();
                    }
                    record["value"] = value;
                    Origin::Reply { request }
                }
                crate::wire::Parsed::Error(desc) => {
                    record["error"] = json!(desc);
                    if let Some(stray) = span.stray {
                        record["stray"] = json!(stray);
                    }
                    Origin::ParseError { request, input }
                }
            };
            self.lines.push(record.to_string());
            self.unanswered.push_back((origin, conn));
        }
        self
    }
    fn agent_sends(mut self, t_us: u64, conn: u64, data: &[u8]) -> Self {
        let (origin, for_conn) = self.unanswered.pop_front().expect("a request to answer");
        self.output(t_us, conn, data, origin, Some(for_conn))
    }
    fn agent_injects(self, t_us: u64, conn: u64, data: &[u8], origin: Origin) -> Self {
        self.output(t_us, conn, data, origin, Some(conn))
    }
    fn output(
        mut self,
        t_us: u64,
        conn: u64,
        data: &[u8],
        origin: Origin,
        for_conn: Option<u64>,
    ) -> Self {
        let at = *self.out_at.get(&conn).unwrap_or(&0);
        self = self.bytes(t_us, conn, "out", data);
        self.next_output += 1;
        let record = crate::transcript::OutputRecord {
            conn,
            output: self.next_output,
            at,
            len: data.len() as u64,
            origin,
            for_conn,
            stale: for_conn.is_some_and(|c| c != conn),
        };
        let mut value = serde_json::to_value(record).expect("serialises");
        value["t_us"] = json!(t_us);
        value["event"] = json!("output");
        self.lines.push(value.to_string());
        self
    }
    fn wire(&self) -> Wire {
        Wire::parse(self.lines.join("\n").as_bytes()).expect("transcript parses")
    }
}

fn scenario(steps: serde_json::Value, duties: serde_json::Value) -> Scenario {
    let text = json!({
        "id": "sync.1", "title": "t", "requirement": "the requirement",
        "steps": steps, "duties": duties
    })
    .to_string();
    Scenario::parse(&text, Path::new("case.json")).expect("valid scenario")
}

fn ping_steps(n: usize) -> serde_json::Value {
    json!((0..n)
        .map(|_| json!({"execute": "guest-ping", "timeout_ms": 100, "expect": [{"return": {}}]}))
        .collect::<Vec<_>>())
}

fn step(
    index: usize,
    execute: &str,
    started_us: u64,
    elapsed_us: u64,
    answer: Answer,
) -> StepRecord {
    StepRecord {
        index,
        execute: execute.to_owned(),
        started_us,
        elapsed_us,
        answer,
    }
}

fn ret(value: serde_json::Value) -> Answer {
    Answer::Return { value }
}

fn timeout() -> Answer {
    Answer::ClientError {
        class: FailureClass::Timeout,
        desc: "timed out".into(),
    }
}

fn run_of(steps: Vec<StepRecord>) -> ClientRun {
    ClientRun {
        steps,
        processes: Vec::new(),
        peak_buffer_bytes: None,
    }
}

fn judged(scenario: &Scenario, run: &ClientRun, wire: &Wire) -> Judgement {
    judge(&Evidence {
        scenario,
        run,
        wire,
        launch_span_us: 0,
        oneshot: false,
        in_process: false,
        max_rss_kib: 1024,
        held_connections: &[],
    })
}

fn duty<'a>(j: &'a Judgement, name: &str) -> &'a DutyReport {
    j.duties
        .iter()
        .find(|d| d.duty == name)
        .expect("duty listed")
}

const SYNC: &[u8] =
    b"\xff{\"execute\": \"guest-sync-delimited\", \"arguments\": {\"id\": 8234567890123456789}}";
const SYNC_REPLY: &[u8] = b"\xff{\"return\": 8234567890123456789}\n";
const STRAY: &[u8] = b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n";
const PING: &[u8] = b"{\"execute\": \"guest-ping\"}";
const EMPTY: &[u8] = b"{\"return\": {}}\n";

fn correct_client() -> Script {
    Script::default()
        .client_sends(10, 1, SYNC)
        .agent_sends(20, 1, STRAY)
        .agent_sends(21, 1, SYNC_REPLY)
        .client_sends(30, 1, PING)
        .agent_sends(40, 1, EMPTY)
}

#[test]
fn a_correct_exchange_passes_every_wire_duty() {
    let s = scenario(
        ping_steps(1),
        json!([
            "sync-first",
            "flush-before-sync",
            "unpredictable-sync-ids",
            "no-stale-attribution",
            "total-deadline"
        ]),
    );
    let run = run_of(vec![step(0, "guest-ping", 5, 50, ret(json!({})))]);
    let j = judged(&s, &run, &correct_client().wire());
    assert_eq!(j.verdict, Verdict::Pass, "{:#?}", j.findings);
    for d in &j.duties {
        assert_eq!(d.status, DutyStatus::Met, "{d:?}");
    }
}

#[test]
fn a_command_without_sync_misses_sync_first_and_points_at_it() {
    let s = scenario(ping_steps(1), json!(["sync-first", "flush-before-sync"]));
    let wire = Script::default()
        .client_sends(10, 1, PING)
        .agent_sends(20, 1, EMPTY)
        .wire();
    let run = run_of(vec![step(0, "guest-ping", 5, 30, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(j.verdict, Verdict::Fail);
    assert_eq!(duty(&j, "sync-first").status, DutyStatus::Missed);
    assert_eq!(
        duty(&j, "flush-before-sync").status,
        DutyStatus::NotApplicable
    );
    let finding = &j.findings[0];
    assert_eq!(finding.subject, "duty sync-first");
    assert_eq!(finding.lines, Some((1, 2)));
    assert!(
        finding.excerpt.contains("guest-ping"),
        "{}",
        finding.excerpt
    );
}

#[test]
fn a_sync_without_a_flush_misses_flush_before_sync() {
    let s = scenario(ping_steps(1), json!([]));
    let mut s = s;
    s.recommended = vec![Duty::FlushBeforeSync];
    let wire = Script::default()
        .client_sends(10, 1, &SYNC[1..])
        .agent_sends(21, 1, SYNC_REPLY)
        .client_sends(30, 1, PING)
        .agent_sends(40, 1, EMPTY)
        .wire();
    let run = run_of(vec![step(0, "guest-ping", 5, 50, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(duty(&j, "flush-before-sync").status, DutyStatus::Missed);
    assert!(!duty(&j, "flush-before-sync").required);
    assert_eq!(j.verdict, Verdict::NonStrict, "a recommended duty only");
}

fn sync_with_id(id: serde_json::Value) -> Vec<u8> {
    let mut bytes = vec![0xFF];
    bytes.extend_from_slice(
        json!({"execute": "guest-sync", "arguments": {"id": id}})
            .to_string()
            .as_bytes(),
    );
    bytes
}

#[rstest]
#[case::random(vec![json!(7_394_023_348_923_451_234_u64), json!(1_234_987_234_987_234_u64)], DutyStatus::Met, "")]
#[case::small(vec![json!(42)], DutyStatus::Missed, "small enough to guess")]
#[case::sequential(vec![json!(98_765_432_100_u64), json!(98_765_432_101_u64)], DutyStatus::Missed, "sequential")]
#[case::repeated(vec![json!(98_765_432_100_u64), json!(98_765_432_100_u64)], DutyStatus::Missed, "already used")]
#[case::not_an_integer(vec![json!("abc")], DutyStatus::Missed, "integer")]
#[case::none(vec![], DutyStatus::NotApplicable, "")]
fn sync_ids(#[case] ids: Vec<serde_json::Value>, #[case] status: DutyStatus, #[case] shows: &str) {
    let s = scenario(ping_steps(0), json!(["unpredictable-sync-ids"]));
    let mut script = Script::default();
    for (n, id) in ids.into_iter().enumerate() {
        script = script.client_sends(10 + n as u64, 1, &sync_with_id(id));
    }
    let j = judged(&s, &run_of(Vec::new()), &script.wire());
    assert_eq!(duty(&j, "unpredictable-sync-ids").status, status);
    assert!(
        duty(&j, "unpredictable-sync-ids").detail.contains(shows),
        "{:?}",
        j.duties
    );
}

#[test]
fn a_clock_reading_as_sync_id_is_caught() {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let s = scenario(ping_steps(0), json!(["unpredictable-sync-ids"]));
    let wire = Script::default()
        .client_sends(1, 1, &sync_with_id(json!(now_ms)))
        .wire();
    let j = judged(&s, &run_of(Vec::new()), &wire);
    assert!(duty(&j, "unpredictable-sync-ids")
        .detail
        .contains("milliseconds"));
}

/// Step 1's reply comes late, during step 2; a client that takes it for step 2's answer
/// attributes a stale reply.
fn late_reply_wire() -> Wire {
    Script::default()
        .client_sends(1_000, 1, b"{\"execute\": \"guest-get-time\"}")
        .client_sends(120_000, 1, b"{\"execute\": \"guest-get-time\"}")
        .agent_sends(300_000, 1, b"{\"return\": 111}\n")
        .agent_sends(300_010, 1, b"{\"return\": 222}\n")
        .wire()
}

fn time_steps() -> serde_json::Value {
    json!([
        {"execute": "guest-get-time", "timeout_ms": 100, "expect": [{"client-error": {"class": "Timeout"}}]},
        {"execute": "guest-get-time", "timeout_ms": 500, "expect": [{"return-type": "integer"}]}
    ])
}

#[rstest]
#[case::stale(111, DutyStatus::Missed)]
#[case::own(222, DutyStatus::Met)]
fn a_late_reply_taken_for_the_next_command_is_stale(
    #[case] answer: u64,
    #[case] status: DutyStatus,
) {
    let s = scenario(
        time_steps(),
        json!(["no-stale-attribution", "sync-after-timeout"]),
    );
    let run = run_of(vec![
        step(0, "guest-get-time", 500, 100_000, timeout()),
        step(1, "guest-get-time", 110_000, 200_100, ret(json!(answer))),
    ]);
    let j = judged(&s, &run, &late_reply_wire());
    assert_eq!(
        duty(&j, "no-stale-attribution").status,
        status,
        "{:#?}",
        j.findings
    );
    assert_eq!(duty(&j, "sync-after-timeout").status, DutyStatus::Missed);
    if status == DutyStatus::Missed {
        let finding = j
            .findings
            .iter()
            .find(|f| f.subject == "duty no-stale-attribution")
            .expect("finding");
        assert!(
            finding.actual.contains(
                "the agent's reply to request 1, request 1 {\"execute\":\"guest-get-time\"}"
            ),
            "{}",
            finding.actual
        );
        assert_eq!(finding.lines, Some((3, 7)));
    }
}

#[test]
fn stale_output_at_connect_is_not_an_answer() {
    let s = scenario(ping_steps(1), json!(["no-stale-attribution"]));
    let wire = Script::default()
        .agent_injects(5, 1, EMPTY, Origin::Preloaded)
        .client_sends(10, 1, PING)
        .wire();
    let run = run_of(vec![step(0, "guest-ping", 8, 30, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(duty(&j, "no-stale-attribution").status, DutyStatus::Missed);
    assert!(
        j.findings[0].actual.contains("before the mock started"),
        "{}",
        j.findings[0].actual
    );
}

#[test]
fn replies_are_paired_by_id_past_a_spurious_line() {
    let s = scenario(
        json!([{"execute": "guest-get-host-name", "timeout_ms": 100, "expect": [{"return-type": "object"}]}]),
        json!(["no-stale-attribution"]),
    );
    let wire = Script::default()
        .client_sends(10, 1, b"{\"execute\": \"guest-get-host-name\", \"id\": 99}")
        .agent_injects(
            20,
            1,
            b"{\"return\": {\"host-name\": \"evil\"}, \"id\": 5}\n",
            Origin::Fault {
                rule: 1,
                fault: crate::transcript::FaultOutput::SpuriousUnknownId,
                request: Some(1),
            },
        )
        .agent_sends(
            21,
            1,
            b"{\"return\": {\"host-name\": \"vm\"}, \"id\": 99}\n",
        )
        .wire();
    let good = run_of(vec![step(
        0,
        "guest-get-host-name",
        5,
        30,
        ret(json!({"host-name": "vm"})),
    )]);
    assert_eq!(judged(&s, &good, &wire).verdict, Verdict::Pass);
    let fooled = run_of(vec![step(
        0,
        "guest-get-host-name",
        5,
        30,
        ret(json!({"host-name": "evil"})),
    )]);
    assert_eq!(judged(&s, &fooled, &wire).verdict, Verdict::Fail);
}

#[rstest]
#[case::matched(true, DutyStatus::Met)]
#[case::never_answered(false, DutyStatus::Missed)]
fn a_resync_after_a_timeout_counts_only_when_its_reply_came(
    #[case] answered: bool,
    #[case] status: DutyStatus,
) {
    let s = scenario(time_steps(), json!(["sync-after-timeout"]));
    let mut script = Script::default()
        .client_sends(1_000, 1, b"{\"execute\": \"guest-get-time\"}")
        .client_sends(110_000, 1, SYNC);
    if answered {
        script = script
            .agent_sends(111_000, 1, b"{\"return\": 111}\n")
            .agent_sends(111_050, 1, STRAY)
            .agent_sends(111_100, 1, SYNC_REPLY);
    }
    // Request 4 (after the get-time, the 0xFF and the sync) is answered: the next command
    // whose reply reached the client is the one a late reply could be mistaken for.
    let wire = script
        .client_sends(120_000, 1, b"{\"execute\": \"guest-get-time\"}")
        .agent_injects(
            121_000,
            1,
            b"{\"return\": 222}\n",
            Origin::Reply { request: 4 },
        )
        .wire();
    let run = run_of(vec![
        step(0, "guest-get-time", 500, 100_000, timeout()),
        step(1, "guest-get-time", 105_000, 200_000, ret(json!(222))),
    ]);
    let j = judged(&s, &run, &wire);
    assert_eq!(duty(&j, "sync-after-timeout").status, status);
}

/// A client that routes replies by the ids the agent echoes is back in step after a
/// timeout without a sync, when its next command's id is fresh and echoed; not when the
/// agent echoes nothing (before 4.0) or the id was used before.
#[rstest]
#[case::fresh_and_echoed(
    b"{\"execute\": \"guest-get-time\", \"id\": 8}",
    b"{\"return\": 222, \"id\": 8}\n",
    DutyStatus::Met
)]
#[case::not_echoed(
    b"{\"execute\": \"guest-get-time\", \"id\": 8}",
    b"{\"return\": 222}\n",
    DutyStatus::Missed
)]
#[case::reused_id(
    b"{\"execute\": \"guest-get-time\", \"id\": 7}",
    b"{\"return\": 222, \"id\": 7}\n",
    DutyStatus::Missed
)]
#[case::no_id(
    b"{\"execute\": \"guest-get-time\"}",
    b"{\"return\": 222}\n",
    DutyStatus::Missed
)]
fn an_echoed_fresh_id_resynchronises_after_a_timeout(
    #[case] next: &[u8],
    #[case] reply: &[u8],
    #[case] status: DutyStatus,
) {
    let s = scenario(time_steps(), json!(["sync-after-timeout"]));
    let wire = Script::default()
        .client_sends(1_000, 1, b"{\"execute\": \"guest-get-time\", \"id\": 7}")
        .client_sends(120_000, 1, next)
        .agent_injects(121_000, 1, reply, Origin::Reply { request: 2 })
        .wire();
    let run = run_of(vec![
        step(0, "guest-get-time", 500, 100_000, timeout()),
        step(1, "guest-get-time", 105_000, 200_000, ret(json!(222))),
    ]);
    let j = judged(&s, &run, &wire);
    assert_eq!(duty(&j, "sync-after-timeout").status, status);
}

/// A connection-per-call client gave up on step 1 before the agent even read its command;
/// the agent read it after the step ended and its reply went, stale, to the next
/// connection, where the client skipped it up to its sync reply and got its own answer.
/// Step 2's request is the one whose own reply carries its answer, not the late read.
#[test]
fn a_late_read_of_an_earlier_command_is_not_the_next_steps_request() {
    let host = json!({"execute": "guest-get-host-name", "timeout_ms": 400,
        "expect": [{"return-contains": {"host-name": "vm"}}],
        "non_strict": [{"client-error": {"class": "Any", "max_ms": 900}}]});
    let s = scenario(json!([host, host]), json!(["no-stale-attribution"]));
    let wire = Script::default()
        .client_sends(1_000, 1, SYNC)
        .agent_sends(1_050, 1, STRAY)
        .agent_sends(1_100, 1, SYNC_REPLY)
        .client_sends(1_644, 1, b"{\"execute\": \"guest-get-host-name\"}")
        .client_sends(1_744, 2, SYNC)
        // The reply to conn 1's command, delivered stale to connection 2.
        .agent_sends(1_758, 2, b"{\"return\": {\"host-name\": \"vm\"}}\n")
        .agent_sends(1_764, 2, STRAY)
        .agent_sends(1_769, 2, SYNC_REPLY)
        .client_sends(1_811, 2, b"{\"execute\": \"guest-get-host-name\"}")
        .agent_sends(1_824, 2, b"{\"return\": {\"host-name\": \"vm\"}}\n")
        .wire();
    let protocol = Answer::ClientError {
        class: FailureClass::Protocol,
        desc: "not a reply".into(),
    };
    let run = run_of(vec![
        step(0, "guest-get-host-name", 500, 957, protocol),
        step(
            1,
            "guest-get-host-name",
            1_457,
            400,
            ret(json!({"host-name": "vm"})),
        ),
    ]);
    let j = judged(&s, &run, &wire);
    assert_eq!(
        duty(&j, "no-stale-attribution").status,
        DutyStatus::Met,
        "{j:#?}"
    );
    assert_ne!(j.verdict, Verdict::Fail, "{j:#?}");
}

#[test]
fn a_slow_step_misses_the_total_deadline() {
    let s = scenario(ping_steps(1), json!(["total-deadline"]));
    let grace = deadline_grace_ms(100, false);
    let on_time = run_of(vec![step(
        0,
        "guest-ping",
        0,
        (100 + grace) * 1000,
        timeout(),
    )]);
    assert_eq!(
        duty(&judged(&s, &on_time, &Wire::default()), "total-deadline").status,
        DutyStatus::Met
    );
    let late = run_of(vec![step(
        0,
        "guest-ping",
        0,
        (101 + grace) * 1000,
        timeout(),
    )]);
    assert_eq!(
        duty(&judged(&s, &late, &Wire::default()), "total-deadline").status,
        DutyStatus::Missed
    );
}

#[test]
fn memory_is_judged_from_the_peak_rss() {
    let s = scenario(ping_steps(0), json!(["bounded-memory"]));
    let process = |kib| ProcessReport {
        step: None,
        command: "x".into(),
        pid: 1,
        exit: ExitRecord {
            peak_rss_kib: kib,
            ..ExitRecord::default()
        },
        stdout: String::new(),
        stderr: String::new(),
    };
    let mut run = run_of(Vec::new());
    run.processes.push(process(512));
    assert_eq!(
        duty(&judged(&s, &run, &Wire::default()), "bounded-memory").status,
        DutyStatus::Met
    );
    run.processes.push(process(4096));
    assert_eq!(
        duty(&judged(&s, &run, &Wire::default()), "bounded-memory").status,
        DutyStatus::Missed
    );
    let none = run_of(Vec::new());
    assert_eq!(
        duty(&judged(&s, &none, &Wire::default()), "bounded-memory").status,
        DutyStatus::NotMeasured
    );
}

#[test]
fn a_repeated_guest_exec_is_caught() {
    let s = scenario(
        json!([{"execute": "guest-exec", "arguments": {"path": "/bin/true"}, "timeout_ms": 100,
                "expect": [{"client-error": {"class": "Any"}}]}]),
        json!(["no-repeated-side-effects"]),
    );
    let exec = b"{\"execute\": \"guest-exec\", \"arguments\": {\"path\": \"/bin/true\"}}";
    let once = Script::default().client_sends(10, 1, exec).wire();
    let run = run_of(vec![step(0, "guest-exec", 5, 100_000, timeout())]);
    assert_eq!(
        duty(&judged(&s, &run, &once), "no-repeated-side-effects").status,
        DutyStatus::Met
    );
    let twice = Script::default()
        .client_sends(10, 1, exec)
        .client_sends(90_000, 1, exec)
        .wire();
    let j = judged(&s, &run, &twice);
    assert_eq!(
        duty(&j, "no-repeated-side-effects").status,
        DutyStatus::Missed
    );
    assert_eq!(j.findings[0].lines, Some((3, 4)));
}

#[test]
fn step_failures_list_every_acceptable_outcome() {
    let s = scenario(
        json!([{"execute": "guest-ping", "timeout_ms": 100,
                "expect": [{"return": {}}, {"error": {"class": "CommandNotFound", "desc_contains": "disabled"}}],
                "non_strict": [{"client-error": {"class": "Timeout", "max_ms": 300}}]}]),
        json!([]),
    );
    let run = run_of(vec![step(0, "guest-ping", 0, 5_000, ret(json!(1)))]);
    let j = judged(&s, &run, &Wire::default());
    assert_eq!(j.verdict, Verdict::Fail);
    let f = &j.findings[0];
    assert_eq!(f.requirement, "the requirement");
    assert!(
        f.expected.starts_with(
            "any of: return {}; agent error CommandNotFound with a desc containing \"disabled\""
        ),
        "{}",
        f.expected
    );
    assert!(
        f.expected
            .contains("tolerated (NON-STRICT): client error Timeout within 300 ms"),
        "{}",
        f.expected
    );
    assert_eq!(f.actual, "return 1 after 5.0 ms");

    let tolerated = run_of(vec![step(0, "guest-ping", 0, 250_000, timeout())]);
    assert_eq!(
        judged(&s, &tolerated, &Wire::default()).verdict,
        Verdict::NonStrict
    );
}

#[rstest]
#[case(Outcome::ReturnContains(json!({"a": {"b": 1}})), json!({"a": {"b": 1, "c": 2}, "d": 3}), true)]
#[case(Outcome::ReturnContains(json!({"a": {"b": 2}})), json!({"a": {"b": 1}}), false)]
#[case(Outcome::ReturnContains(json!([{"name": "lo"}])), json!([{"name": "eth0"}, {"name": "lo", "x": 1}]), true)]
#[case(Outcome::ReturnType(JsonType::Integer), json!(5), true)]
#[case(Outcome::ReturnType(JsonType::Integer), json!(5.5), false)]
#[case(Outcome::ReturnType(JsonType::Number), json!(5.5), true)]
#[case(Outcome::Return(json!({})), json!({}), true)]
fn return_outcomes(
    #[case] outcome: Outcome,
    #[case] value: serde_json::Value,
    #[case] matches: bool,
) {
    assert_eq!(outcome_matches(&outcome, &ret(value), 1.0, 100), matches);
}

#[test]
fn an_info_case_records_without_judging() {
    let mut s = scenario(ping_steps(1), json!(["sync-first"]));
    s.info = Some("records what clients do".into());
    let run = run_of(vec![step(0, "guest-ping", 0, 5, ret(json!(1)))]);
    assert_eq!(judged(&s, &run, &Wire::default()).verdict, Verdict::Info);
}

#[test]
fn an_answer_given_before_the_request_reached_the_agent_is_stale() {
    let s = scenario(ping_steps(1), json!(["no-stale-attribution"]));
    // The client read a stale `{}` and answered at 20 µs; its ping reached the agent at 30 ms.
    let wire = Script::default()
        .agent_injects(5, 1, EMPTY, Origin::Preloaded)
        .client_sends(30_000, 1, PING)
        .agent_sends(40_000, 1, EMPTY)
        .wire();
    let run = run_of(vec![step(0, "guest-ping", 8, 12, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(duty(&j, "no-stale-attribution").status, DutyStatus::Missed);
    let actual = &j.findings[0].actual;
    assert!(actual.contains("came only later (line 5)"), "{actual}");
    assert!(actual.contains("before the mock started"), "{actual}");
}

#[test]
fn a_step_that_never_sent_its_command_does_not_claim_the_next_steps_request() {
    let s = scenario(
        ping_steps(2),
        json!(["no-stale-attribution", "sync-after-timeout"]),
    );
    // Step 1 timed out in its sync (no ping sent); step 2 synced again and pinged.
    let wire = Script::default()
        .client_sends(10, 1, SYNC)
        .client_sends(200_000, 1, SYNC)
        .agent_sends(200_020, 1, STRAY)
        .agent_sends(200_050, 1, SYNC_REPLY)
        .agent_sends(200_070, 1, STRAY)
        .agent_sends(200_100, 1, SYNC_REPLY)
        .client_sends(200_200, 1, PING)
        .agent_sends(200_300, 1, EMPTY)
        .wire();
    let run = run_of(vec![
        step(0, "guest-ping", 5, 100_000, timeout()),
        step(1, "guest-ping", 150_000, 60_000, ret(json!({}))),
    ]);
    let j = judged(&s, &run, &wire);
    assert_eq!(
        duty(&j, "no-stale-attribution").status,
        DutyStatus::Met,
        "{:#?}",
        j.findings
    );
    assert_eq!(
        duty(&j, "sync-after-timeout").status,
        DutyStatus::Met,
        "{:#?}",
        j.findings
    );
}

#[test]
fn fast_steps_with_the_same_command_get_their_own_requests() {
    let s = scenario(ping_steps(2), json!(["no-stale-attribution"]));
    let wire = Script::default()
        .client_sends(100, 1, b"{\"execute\": \"guest-ping\", \"id\": 1}")
        .agent_sends(110, 1, b"{\"return\": {}, \"id\": 1}\n")
        .client_sends(120, 1, b"{\"execute\": \"guest-ping\", \"id\": 2}")
        .agent_sends(130, 1, b"{\"return\": {}, \"id\": 2}\n")
        .wire();
    // The runner's clock runs ahead of the transcript's by up to the launch span.
    let run = run_of(vec![
        step(0, "guest-ping", 1_000, 150, ret(json!({}))),
        step(1, "guest-ping", 1_160, 100, ret(json!({}))),
    ]);
    let j = judge(&Evidence {
        scenario: &s,
        run: &run,
        wire: &wire,
        launch_span_us: 5_000,
        oneshot: false,
        in_process: false,
        max_rss_kib: 1024,
        held_connections: &[],
    });
    assert_eq!(j.verdict, Verdict::Pass, "{:#?}", j.findings);
}

#[test]
fn a_sync_the_scenario_asks_for_is_not_judged_as_the_clients_own() {
    let s = scenario(
        json!([{"execute": "guest-sync", "arguments": {"id": 5}, "timeout_ms": 100,
                "expect": [{"return": 5}]}]),
        json!(["unpredictable-sync-ids", "flush-before-sync"]),
    );
    let wire = Script::default()
        .client_sends(10, 1, SYNC)
        .agent_sends(20, 1, STRAY)
        .agent_sends(21, 1, SYNC_REPLY)
        .client_sends(
            30,
            1,
            b"{\"execute\": \"guest-sync\", \"arguments\": {\"id\": 5}}",
        )
        .agent_sends(40, 1, b"{\"return\": 5}\n")
        .wire();
    let run = run_of(vec![step(0, "guest-sync", 5, 50, ret(json!(5)))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(j.verdict, Verdict::Pass, "{:#?}", j.findings);
    assert_eq!(duty(&j, "unpredictable-sync-ids").status, DutyStatus::Met);
}

#[test]
fn the_flush_duty_concerns_guest_sync_delimited() {
    let s = scenario(ping_steps(1), json!(["flush-before-sync", "sync-first"]));
    let wire = Script::default()
        .client_sends(
            10,
            1,
            b"{\"execute\": \"guest-sync\", \"arguments\": {\"id\": 8234567890123456789}}",
        )
        .agent_sends(20, 1, b"{\"return\": 8234567890123456789}\n")
        .client_sends(30, 1, PING)
        .agent_sends(40, 1, EMPTY)
        .wire();
    let run = run_of(vec![step(0, "guest-ping", 5, 50, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(
        duty(&j, "flush-before-sync").status,
        DutyStatus::NotApplicable
    );
    assert_eq!(duty(&j, "sync-first").status, DutyStatus::Met);
}

/// Decided for sync.5: a sync reply with another id taken as the sync is a FAIL of its own
/// (not a stale attribution); the same number written as a float is NON-STRICT.
#[rstest]
#[case::float(&b"{\"return\": 8234567890123456789.0}\n"[..], Verdict::NonStrict)]
#[case::other_number(&b"{\"return\": 8234567890123456788}\n"[..], Verdict::Fail)]
#[case::string(&b"{\"return\": \"8234567890123456789\"}\n"[..], Verdict::Fail)]
#[case::exact(&b"{\"return\": 8234567890123456789}\n"[..], Verdict::Pass)]
fn a_sync_reply_with_another_id_taken_as_the_sync(#[case] reply: &[u8], #[case] verdict: Verdict) {
    let s = scenario(ping_steps(1), json!(["no-stale-attribution", "sync-first"]));
    let wire = Script::default()
        .client_sends(
            10,
            1,
            b"{\"execute\": \"guest-sync\", \"arguments\": {\"id\": 8234567890123456789}}",
        )
        .agent_sends(20, 1, reply)
        .client_sends(30, 1, PING)
        .agent_sends(40, 1, EMPTY)
        .wire();
    let run = run_of(vec![step(0, "guest-ping", 5, 50, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(j.verdict, verdict, "{:#?}", j.findings);
    assert_eq!(
        duty(&j, "no-stale-attribution").status,
        DutyStatus::Met,
        "the answer is the ping's own reply"
    );
    if verdict != Verdict::Pass {
        assert_eq!(
            j.findings[0].subject,
            "sync reply with another id taken as the sync"
        );
    }
}

/// The same table read from the bytes alone (a real agent behind the front or a proxy): a
/// sync reply is known by the number it returns, so the float form of the id sent pairs
/// with that sync too, and the verdict is the one the agent's records give.
#[rstest]
#[case::float(&b"{\"return\": 8234567890123456789.0}\n"[..], Verdict::NonStrict)]
#[case::small_float(&b"{\"return\": 850201.0}\n"[..], Verdict::NonStrict)]
#[case::exact(&b"{\"return\": 8234567890123456789}\n"[..], Verdict::Pass)]
fn bytes_only_a_float_sync_reply_is_paired_with_its_sync(
    #[case] reply: &[u8],
    #[case] verdict: Verdict,
) {
    let s = scenario(ping_steps(1), json!(["no-stale-attribution", "sync-first"]));
    let id = if reply.starts_with(b"{\"return\": 850201") {
        "850201"
    } else {
        "8234567890123456789"
    };
    let sync = format!("{{\"execute\": \"guest-sync\", \"arguments\": {{\"id\": {id}}}}}");
    let wire = bytes_only()
        .bytes(10, 1, "in", sync.as_bytes())
        .bytes(20, 1, "out", reply)
        .bytes(30, 1, "in", PING_A)
        .bytes(40, 1, "out", REPLY_A)
        .wire();
    assert_eq!(
        wire.replies.len(),
        2,
        "both replies paired: {:#?}",
        wire.replies
    );
    assert_eq!(wire.replies[0].answers(), Some(1));
    let run = run_of(vec![step(0, "guest-ping", 5, 50, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(j.verdict, verdict, "{:#?}", j.findings);
    if verdict != Verdict::Pass {
        assert_eq!(
            j.findings[0].subject,
            "sync reply with another id taken as the sync"
        );
    }
}

/// A float that two ids sent round to is not known to answer either: left unpaired.
#[test]
fn bytes_only_a_float_two_sync_ids_round_to_pairs_with_neither() {
    let wire = bytes_only()
        .bytes(
            10,
            1,
            "in",
            b"{\"execute\": \"guest-sync\", \"arguments\": {\"id\": 8234567890123456789}}",
        )
        .bytes(
            11,
            1,
            "in",
            b"{\"execute\": \"guest-sync\", \"arguments\": {\"id\": 8234567890123456788}}",
        )
        .bytes(20, 1, "out", b"{\"return\": 8234567890123456789.0}\n")
        .wire();
    assert!(wire.replies.is_empty(), "{:#?}", wire.replies);
}

/// A no-reply command's success is judged on the agent's records: sent and silent is a
/// success (the guest went down); reported without the command reaching the agent is a
/// FAIL, whatever the client printed.
#[rstest]
#[case::sent(true, Verdict::Pass)]
#[case::never_sent(false, Verdict::Fail)]
fn a_no_reply_success_counts_only_when_the_command_reached_the_agent(
    #[case] sent: bool,
    #[case] verdict: Verdict,
) {
    let s = scenario(
        json!([{"execute": "guest-shutdown", "timeout_ms": 3000, "expect": [{"return": {}}]}]),
        json!(["total-deadline"]),
    );
    let mut script = Script::default()
        .client_sends(10, 1, SYNC)
        .agent_sends(20, 1, SYNC_REPLY);
    if sent {
        script = script.client_sends(30, 1, b"{\"execute\": \"guest-shutdown\"}");
    }
    let run = run_of(vec![step(0, "guest-shutdown", 5, 1_000, ret(json!({})))]);
    let j = judged(&s, &run, &script.wire());
    assert_eq!(j.verdict, verdict, "{:#?}", j.findings);
    if !sent {
        assert!(
            j.findings[0].actual.contains("never reached the agent"),
            "{:#?}",
            j.findings
        );
    }
}

/// A recording of bytes alone, as the front of a real agent writes it: no agent records.
fn bytes_only() -> Script {
    let mut script = Script::default();
    script
        .lines
        .push(json!({"t_us": 0, "event": crate::transcript::BYTES_ONLY_EVENT}).to_string());
    script
}

const PING_A: &[u8] = b"{\"execute\": \"guest-ping\", \"id\": 7340712}";
const PING_B: &[u8] = b"{\"execute\": \"guest-ping\", \"id\": 9913344}";
const REPLY_A: &[u8] = b"{\"return\": {}, \"id\": 7340712}\n";
const REPLY_B: &[u8] = b"{\"return\": {}, \"id\": 9913344}\n";

#[test]
fn bytes_only_a_reply_carrying_the_requests_id_is_its_answer() {
    let s = scenario(
        ping_steps(1),
        json!([
            "sync-first",
            "flush-before-sync",
            "unpredictable-sync-ids",
            "no-stale-attribution"
        ]),
    );
    let wire = bytes_only()
        .bytes(10, 1, "in", SYNC)
        .bytes(20, 1, "out", STRAY)
        .bytes(21, 1, "out", SYNC_REPLY)
        .bytes(30, 1, "in", PING_A)
        .bytes(40, 1, "out", REPLY_A)
        .wire();
    assert!(wire.framed_from_bytes && !wire.has_agent_records);
    let run = run_of(vec![step(0, "guest-ping", 5, 50, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(j.verdict, Verdict::Pass, "{:#?}", j.findings);
    for d in &j.duties {
        assert_eq!(d.status, DutyStatus::Met, "{d:?}");
    }
}

#[test]
fn bytes_only_a_reply_without_an_id_is_not_measured_not_failed() {
    let s = scenario(ping_steps(1), json!(["no-stale-attribution"]));
    let wire = bytes_only()
        .bytes(10, 1, "in", PING)
        .bytes(20, 1, "out", EMPTY)
        .wire();
    let run = run_of(vec![step(0, "guest-ping", 5, 50, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(j.verdict, Verdict::Pass, "{:#?}", j.findings);
    let d = duty(&j, "no-stale-attribution");
    assert_eq!(d.status, DutyStatus::NotMeasured);
    assert!(d.detail.contains("no reply carried the id"), "{}", d.detail);
}

/// Step 1 times out; its late reply (carrying step 1's id) arrives during step 2, whose
/// own reply comes only after the client answered, or never.
#[rstest]
#[case::own_reply_late(true)]
#[case::own_reply_never(false)]
fn bytes_only_a_late_reply_known_by_its_id_is_stale(#[case] own_comes: bool) {
    let s = scenario(ping_steps(2), json!(["no-stale-attribution"]));
    let mut script = bytes_only()
        .bytes(10, 1, "in", PING_A)
        .bytes(200, 1, "in", PING_B)
        .bytes(250, 1, "out", REPLY_A);
    if own_comes {
        script = script.bytes(400, 1, "out", REPLY_B);
    }
    let run = run_of(vec![
        step(0, "guest-ping", 5, 110_000, timeout()),
        step(1, "guest-ping", 150, 150, ret(json!({}))),
    ]);
    let j = judged(&s, &run, &script.wire());
    assert_eq!(j.verdict, Verdict::Fail, "{:#?}", j.findings);
    assert_eq!(duty(&j, "no-stale-attribution").status, DutyStatus::Missed);
    let stale = j
        .findings
        .iter()
        .find(|f| f.subject == "duty no-stale-attribution")
        .expect("a stale-attribution finding");
    assert!(stale.actual.contains("7340712"), "{}", stale.actual);
}

#[test]
fn bytes_only_the_clients_own_bytes_are_judged() {
    let s = scenario(ping_steps(1), json!(["sync-first"]));
    let wire = bytes_only()
        .bytes(10, 1, "in", PING_A)
        .bytes(20, 1, "out", REPLY_A)
        .wire();
    let run = run_of(vec![step(0, "guest-ping", 5, 50, ret(json!({})))]);
    let j = judged(&s, &run, &wire);
    assert_eq!(j.verdict, Verdict::Fail, "{:#?}", j.findings);
    assert_eq!(duty(&j, "sync-first").status, DutyStatus::Missed);
}

#[rstest]
#[case::sent(true, Verdict::Pass)]
#[case::never_sent(false, Verdict::Fail)]
fn bytes_only_a_no_reply_success_counts_when_the_command_was_sent(
    #[case] sent: bool,
    #[case] verdict: Verdict,
) {
    let s = scenario(
        json!([{"execute": "guest-shutdown", "timeout_ms": 100, "expect": [{"return": {}}]}]),
        json!(["no-stale-attribution"]),
    );
    let mut script = bytes_only();
    if sent {
        script = script.bytes(10, 1, "in", b"{\"execute\": \"guest-shutdown\"}");
    }
    let run = run_of(vec![step(0, "guest-shutdown", 5, 50, ret(json!({})))]);
    let j = judged(&s, &run, &script.wire());
    assert_eq!(j.verdict, verdict, "{:#?}", j.findings);
}
