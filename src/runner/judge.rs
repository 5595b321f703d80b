//! Judging a case: each step's answer against its acceptable outcomes, and the listed
//! duties against what the transcript shows the client did on the wire.
//!
//! Clock: step times are measured by the runner from an origin taken just before the agent
//! was started. The crate's mock counts its transcript from that same origin (one clock,
//! `launch_span_us` 0); another agent's transcript clock starts inside its launch, at most
//! `launch_span_us` later, so a runner time `t` is a transcript time in `[t - span, t]`,
//! and every window below uses the bound that includes more, never less.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::adapter::{ClientRun, StepRecord};
use super::answer::{Answer, BrokenKind, FailureClass};
use crate::scenario::{ClientErrorClass, Duty, JsonType, Outcome, Scenario};
use crate::transcript::{Item, ItemKind, Wire};

/// A case's verdict.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "NON-STRICT")]
    NonStrict,
    #[serde(rename = "FAIL")]
    Fail,
    #[serde(rename = "INFO")]
    Info,
    #[serde(rename = "UNSUPPORTED")]
    Unsupported,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Verdict::Pass,
        Verdict::NonStrict,
        Verdict::Fail,
        Verdict::Info,
        Verdict::Unsupported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::NonStrict => "NON-STRICT",
            Verdict::Fail => "FAIL",
            Verdict::Info => "INFO",
            Verdict::Unsupported => "UNSUPPORTED",
        }
    }

    /// How bad a verdict is, for baselines: PASS and INFO 0, NON-STRICT and UNSUPPORTED 1,
    /// FAIL 2. A case regresses when its rank rises.
    pub fn rank(self) -> u8 {
        match self {
            Verdict::Pass | Verdict::Info => 0,
            Verdict::NonStrict | Verdict::Unsupported => 1,
            Verdict::Fail => 2,
        }
    }

    pub fn parse(text: &str) -> Option<Verdict> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How serious a finding is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Fail,
    NonStrict,
}

/// One thing that went wrong, with the evidence.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `step 2 (guest-ping)` or `duty sync-first`.
    pub subject: String,
    pub requirement: String,
    pub expected: String,
    pub actual: String,
    /// The transcript lines that show it (1-based, inclusive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<(usize, usize)>,
    /// Those lines, rendered.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub excerpt: String,
}

/// The result of one step.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum StepResult {
    Pass,
    NonStrict,
    Fail,
}

/// Whether a duty held.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum DutyStatus {
    Met,
    Missed,
    /// Nothing in the case exercised it (e.g. no timeout happened).
    NotApplicable,
    /// The runner cannot measure it for this client (e.g. memory of an in-process client).
    NotMeasured,
}

/// A listed duty and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct DutyReport {
    pub duty: &'static str,
    pub required: bool,
    pub status: DutyStatus,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The judgement of a case.
#[derive(Clone, Debug, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub steps: Vec<StepResult>,
    pub duties: Vec<DutyReport>,
    pub findings: Vec<Finding>,
}

/// What the judge looks at.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    pub scenario: &'a Scenario,
    pub run: &'a ClientRun,
    pub wire: &'a Wire,
    /// How much later than the runner's origin the transcript clock may have started.
    pub launch_span_us: u64,
    pub oneshot: bool,
    pub in_process: bool,
    /// The bounded-memory duty's limit on a client's peak RSS.
    pub max_rss_kib: u64,
    /// Connections the harness itself held beside the client (a scenario's
    /// `other_client`): their requests are that connection's, never the client's duties,
    /// and their replies, wherever they went, are never the client's own.
    pub held_connections: &'a [u64],
}

/// Commands qemu-ga answers with nothing on success (the agent's command table).
pub fn is_no_reply_command(execute: &str) -> bool {
    crate::agent::command_facts(execute).is_some_and(|f| f.no_reply)
}

/// Commands that must not be sent twice for one call (the agent's command table): they
/// change the guest, or consume state as guest-exec-status and guest-file-read do.
pub fn is_side_effecting(execute: &str) -> bool {
    crate::agent::command_facts(execute).is_some_and(|f| f.not_repeatable)
}

/// Slack on a step's timeout before the total-deadline duty is missed: 100 ms plus 10%,
/// and 250 ms more for a oneshot client, whose time includes starting a process.
pub fn deadline_grace_ms(timeout_ms: u64, oneshot: bool) -> u64 {
    100 + timeout_ms / 10 + if oneshot { 250 } else { 0 }
}

/// Sync ids below this are small enough for a guest to guess.
const SMALL_SYNC_ID: u64 = 1 << 16;
/// Successive sync ids closer than this are sequential.
const SEQUENTIAL_GAP: u64 = 1024;
/// An id within this many seconds of now, in s, ms, µs or ns, is a clock reading. The
/// client reads the same clock as the runner, during the case, so an hour is ample; a wider
/// window would also catch honest random 63-bit ids (10 days in ns is one id in 5,000).
const CLOCK_WINDOW_S: f64 = 3_600.0;

/// Judges a case that ran.
pub fn judge(e: &Evidence<'_>) -> Judgement {
    let analysis = Analysis::new(e);
    let mut findings = Vec::new();
    let mut steps = Vec::new();
    for (index, record) in e.run.steps.iter().enumerate() {
        let Some(step) = e.scenario.steps.get(index) else {
            continue;
        };
        let elapsed = record.elapsed_ms();
        let matches = |o: &Outcome| outcome_matches(o, &record.answer, elapsed, step.timeout_ms);
        // A no-reply command has no reply to show it was done: its reported success
        // counts only when the agent's records show the command reached it.
        let unsent_no_reply_success = is_no_reply_command(&step.execute)
            && matches!(record.answer, Answer::Return { .. })
            && analysis.request_of[index].is_none();
        let result = if unsent_no_reply_success {
            StepResult::Fail
        } else if step.expect.iter().any(matches) {
            StepResult::Pass
        } else if step.non_strict.iter().any(matches) {
            StepResult::NonStrict
        } else {
            StepResult::Fail
        };
        if unsent_no_reply_success {
            findings.push(Finding {
                severity: Severity::Fail,
                subject: format!("step {} ({})", index + 1, step.execute),
                requirement: e.scenario.requirement.clone(),
                expected: format!(
                    "{} sent to the agent before its success is reported",
                    step.execute
                ),
                actual: format!(
                    "{} reported after {:.1} ms, but {} never reached the agent during the step",
                    record.answer, elapsed, step.execute
                ),
                lines: None,
                excerpt: String::new(),
            });
        } else if result != StepResult::Pass {
            let mut expected = describe_outcomes(&step.expect);
            if !step.non_strict.is_empty() {
                expected.push_str(&format!(
                    "; tolerated (NON-STRICT): {}",
                    describe_outcomes(&step.non_strict)
                ));
            }
            let lines = if matches!(record.answer, Answer::NotRun { .. }) {
                None
            } else {
                analysis.step_lines(index)
            };
            findings.push(Finding {
                severity: if result == StepResult::Fail {
                    Severity::Fail
                } else {
                    Severity::NonStrict
                },
                subject: format!("step {} ({})", index + 1, step.execute),
                requirement: e.scenario.requirement.clone(),
                expected,
                actual: format!("{} after {:.1} ms", record.answer, elapsed),
                lines,
                excerpt: lines.map_or_else(String::new, |(a, b)| bounded_excerpt(e.wire, &[a, b])),
            });
        }
        steps.push(result);
    }
    let mut duties = Vec::new();
    let listed = e
        .scenario
        .duties
        .iter()
        .map(|d| (*d, true))
        .chain(e.scenario.recommended.iter().map(|d| (*d, false)));
    for (duty, required) in listed {
        let check = analysis.check(duty);
        let status = check.status;
        let detail = check
            .misses
            .first()
            .map(|m| m.actual.clone())
            .unwrap_or(check.note);
        for miss in check.misses {
            findings.push(Finding {
                severity: if required {
                    Severity::Fail
                } else {
                    Severity::NonStrict
                },
                subject: format!("duty {}", duty.name()),
                requirement: duty_requirement(duty).to_owned(),
                expected: miss.expected,
                actual: miss.actual,
                lines: line_span(&miss.lines),
                excerpt: if miss.lines.is_empty() {
                    String::new()
                } else {
                    bounded_excerpt(e.wire, &miss.lines)
                },
            });
        }
        duties.push(DutyReport {
            duty: duty.name(),
            required,
            status,
            detail,
        });
    }
    let syncs_judged = e
        .scenario
        .duties
        .iter()
        .chain(&e.scenario.recommended)
        .any(|d| {
            matches!(
                d,
                Duty::NoStaleAttribution | Duty::SyncFirst | Duty::SyncAfterTimeout
            )
        });
    if syncs_judged {
        for (severity, miss) in analysis.wrong_sync_ids_accepted() {
            findings.push(Finding {
                severity,
                subject: "sync reply with another id taken as the sync".to_owned(),
                requirement: SYNC_ID_REQUIREMENT.to_owned(),
                expected: miss.expected,
                actual: miss.actual,
                lines: line_span(&miss.lines),
                excerpt: bounded_excerpt(e.wire, &miss.lines),
            });
        }
    }
    let verdict = if e.scenario.info.is_some() {
        Verdict::Info
    } else if findings.iter().any(|f| f.severity == Severity::Fail) {
        Verdict::Fail
    } else if findings.is_empty() {
        Verdict::Pass
    } else {
        Verdict::NonStrict
    };
    Judgement {
        verdict,
        steps,
        duties,
        findings,
    }
}

/// What a duty requires, for failure reports.
pub fn duty_requirement(duty: Duty) -> &'static str {
    match duty {
        Duty::SyncFirst => "Before its first command on a connection, a client sends guest-sync or guest-sync-delimited and discards everything up to the matching reply (the channel may hold stale output, the agent's parser a previous client's partial input).",
        Duty::SyncAfterTimeout => "After a timeout, a client resynchronises before its next command, so the late reply to the abandoned command is not taken for the next one: a sync matched by its id, or (where the agent echoes ids) a fresh id on the next command whose reply carries it.",
        Duty::UnpredictableSyncIds => "Sync ids are unpredictable and unique (random, 63-bit): not small, not sequential, not a clock reading, so a guest cannot forge the reply to a sync it has not seen.",
        Duty::FlushBeforeSync => "A client sends a 0xFF byte (a parser flush) right before each guest-sync-delimited, so a previous client's partial input in the agent's parser cannot swallow it, and skips the error the agent answers the flush with.",
        Duty::NoStaleAttribution => "A client reports for a command only the reply the agent sent for that request: never a stale reply left from earlier, a late reply to an abandoned command, or an unsolicited one.",
        Duty::TotalDeadline => "Every call ends within its timeout (plus a small grace), however the agent drips, delays or floods its reply.",
        Duty::BoundedMemory => "A client's memory stays bounded whatever the agent sends (huge replies, endless bytes without a newline).",
        Duty::NoRepeatedSideEffects => "A client never sends a command that changes the guest (guest-exec, guest-file-write, fsfreeze, ...) twice for one call, not even after a timeout.",
    }
}

/// A duty's check: its status and each miss.
struct Check {
    status: DutyStatus,
    note: String,
    misses: Vec<Miss>,
}

struct Miss {
    expected: String,
    actual: String,
    lines: Vec<usize>,
}

impl Check {
    fn from_misses(misses: Vec<Miss>, exercised: bool, note: impl Into<String>) -> Check {
        let status = if !misses.is_empty() {
            DutyStatus::Missed
        } else if exercised {
            DutyStatus::Met
        } else {
            DutyStatus::NotApplicable
        };
        Check {
            status,
            note: note.into(),
            misses,
        }
    }

    fn not_measured(note: impl Into<String>) -> Check {
        Check {
            status: DutyStatus::NotMeasured,
            note: note.into(),
            misses: Vec::new(),
        }
    }
}

/// The transcript, related to the steps.
struct Analysis<'e> {
    e: &'e Evidence<'e>,
    /// Item index → the reply that answers it.
    reply_of: Vec<Option<usize>>,
    /// Step index → the step's request on the wire.
    request_of: Vec<Option<Request>>,
}

impl<'e> Analysis<'e> {
    fn new(e: &'e Evidence<'e>) -> Analysis<'e> {
        let reply_of = pair_replies(e.wire);
        let request_of = find_step_requests(e, &reply_of);
        Analysis {
            e,
            reply_of,
            request_of,
        }
    }

    /// The transcript lines of a step: its request and the agent's reply to it, as the
    /// agent recorded them, widened to every record written during the step (its earliest
    /// possible start to its end). The request and reply come first because they are known;
    /// the time window alone can miss them, the client's and the agent's clocks being read
    /// at different moments.
    fn step_lines(&self, index: usize) -> Option<(usize, usize)> {
        let record = self.e.run.steps.get(index)?;
        let mut span: Option<(usize, usize)> = None;
        let mut widen = |line: usize| {
            span = Some(span.map_or((line, line), |(a, b)| (a.min(line), b.max(line))));
        };
        if let Some(Request { item, .. }) = self.request_of.get(index).copied().flatten() {
            let (first, last) = self.items()[item].lines;
            widen(first);
            widen(last);
            if let Some(reply) = self.reply_of[item] {
                let (first, last) = self.e.wire.replies[reply].lines;
                widen(first);
                widen(last);
            }
        }
        let from = record.started_us.saturating_sub(self.e.launch_span_us);
        let to = record.ended_us();
        for r in self
            .e
            .wire
            .records
            .iter()
            .filter(|r| r.t_us >= from && r.t_us <= to)
        {
            widen(r.line);
        }
        span
    }

    fn check(&self, duty: Duty) -> Check {
        match duty {
            Duty::SyncFirst => self.sync_first(),
            Duty::SyncAfterTimeout => self.sync_after_timeout(),
            Duty::UnpredictableSyncIds => self.unpredictable_sync_ids(),
            Duty::FlushBeforeSync => self.flush_before_sync(),
            Duty::NoStaleAttribution => self.no_stale_attribution(),
            Duty::TotalDeadline => self.total_deadline(),
            Duty::BoundedMemory => self.bounded_memory(),
            Duty::NoRepeatedSideEffects => self.no_repeated_side_effects(),
        }
    }

    fn items(&self) -> &[Item] {
        &self.e.wire.items
    }

    fn sync_first(&self) -> Check {
        let mut misses = Vec::new();
        let mut exercised = false;
        for &conn in &self.e.wire.connections {
            if self.is_held(conn) {
                continue;
            }
            let first_request = self
                .items()
                .iter()
                .find(|i| i.conn == conn && i.execute().is_some());
            let Some(first) = first_request else {
                continue;
            };
            let has_command = self
                .items()
                .iter()
                .any(|i| i.conn == conn && i.is_command());
            if !has_command {
                continue;
            }
            exercised = true;
            if !first.is_sync() {
                misses.push(Miss {
                    expected: "guest-sync or guest-sync-delimited before the first command".into(),
                    actual: format!(
                        "connection {conn} began with {} and no sync",
                        first.describe()
                    ),
                    lines: vec![first.lines.0, first.lines.1],
                });
            }
        }
        Check::from_misses(misses, exercised, "")
    }

    fn is_timeout(record: &StepRecord, timeout_ms: u64) -> bool {
        match &record.answer {
            Answer::ClientError { class, .. } => {
                *class == FailureClass::Timeout
                    || (*class == FailureClass::Unclassified
                        && record.elapsed_ms() >= timeout_ms as f64)
            }
            Answer::Broken {
                why: BrokenKind::Hung,
                ..
            } => true,
            _ => false,
        }
    }

    fn sync_after_timeout(&self) -> Check {
        let mut misses = Vec::new();
        let mut exercised = false;
        for (index, record) in self.e.run.steps.iter().enumerate() {
            let timeout_ms = self.e.scenario.steps.get(index).map_or(0, |s| s.timeout_ms);
            if !Self::is_timeout(record, timeout_ms) {
                continue;
            }
            // Where the timed-out call began on the wire: its request, or the first item
            // that reached the agent during the step.
            let from = self.request_of[index].map_or_else(
                || {
                    let start = record.started_us.saturating_sub(self.e.launch_span_us);
                    self.items().partition_point(|i| i.arrived_us < start)
                },
                |r| r.item + 1,
            );
            // The next command whose own reply reached the connection it was sent on: the
            // first one whose answer the client could take, and so the first one a late
            // reply could be mistaken for. A command whose reply never reached it (the
            // client gave up on it too, or the agent never answered) cannot be confused.
            let next = (from..self.items().len()).find(|&j| {
                self.items()[j].is_command()
                    && !self.is_held(self.items()[j].conn)
                    && self.reply_of[j].is_some_and(|r| !self.e.wire.replies[r].stale)
            });
            let Some(next) = next else {
                continue;
            };
            exercised = true;
            let target = &self.items()[next];
            // Only a sync the client could match counts: the agent answered it, on its
            // connection, with the id sent.
            let synced = (from..next).any(|s| {
                let item = &self.items()[s];
                item.is_sync() && item.conn == target.conn && self.sync_matched(s)
            });
            if !synced && !self.routed_by_id(next) {
                misses.push(Miss {
                    expected: format!(
                        "a sync after the timeout of step {} before the next command (or a fresh id on it that the agent echoes)",
                        index + 1
                    ),
                    actual: format!(
                        "the next command, {}, was sent with no sync since the timeout, and no reply echoing a fresh id of it could route the answer",
                        target.describe()
                    ),
                    lines: vec![target.lines.0, target.lines.1],
                });
            }
        }
        Check::from_misses(misses, exercised, "")
    }

    /// Whether command `item` is resynchronised by its own id: it carries an id no earlier
    /// request carried, and the agent's reply to it echoes that id. A client that takes
    /// only the reply with its command's id cannot take a late reply for it (the late
    /// reply carries the abandoned command's id, or none), so it needs no sync to be back
    /// in step; where the agent echoes no id (before 4.0), this does not hold and only a
    /// sync counts.
    fn routed_by_id(&self, item: usize) -> bool {
        let Some(id) = self.items()[item].id() else {
            return false;
        };
        let fresh = !self.items()[..item].iter().any(|i| i.id() == Some(id));
        let echoed = self.reply_of[item]
            .and_then(|r| self.e.wire.replies[r].id())
            .is_some_and(|echo| echo == id);
        fresh && echoed
    }

    /// Whether an item is a step's own request (a sync the scenario asked for is the
    /// scenario's choice of id and framing, not the client's).
    fn is_step_request(&self, item: usize) -> bool {
        self.request_of.iter().flatten().any(|r| r.item == item)
    }

    /// Whether `conn` is a connection the harness held, not the client's.
    fn is_held(&self, conn: u64) -> bool {
        self.e.held_connections.contains(&conn)
    }

    /// The client's own syncs: every sync that is not a step's request nor another
    /// client's.
    fn own_syncs(&self) -> impl Iterator<Item = (usize, &Item)> {
        self.items()
            .iter()
            .enumerate()
            .filter(move |(n, i)| i.is_sync() && !self.is_step_request(*n) && !self.is_held(i.conn))
    }

    fn unpredictable_sync_ids(&self) -> Check {
        let syncs: Vec<&Item> = self.own_syncs().map(|(_, i)| i).collect();
        let mut misses = Vec::new();
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut previous: Option<(i128, &Item)> = None;
        let mut seen: BTreeMap<i128, &Item> = BTreeMap::new();
        for item in &syncs {
            let lines = vec![item.lines.0, item.lines.1];
            let Some(id) = item.sync_id().and_then(integer) else {
                let shown = item
                    .sync_id()
                    .map_or_else(|| "missing".to_owned(), Value::to_string);
                misses.push(Miss {
                    expected: "an integer sync id".into(),
                    actual: format!("sync id {shown} is not an integer"),
                    lines,
                });
                continue;
            };
            let magnitude = id.unsigned_abs();
            if magnitude < u128::from(SMALL_SYNC_ID) {
                misses.push(Miss {
                    expected: format!("a random 63-bit sync id, not one below {SMALL_SYNC_ID}"),
                    actual: format!("sync id {id}: small enough to guess"),
                    lines,
                });
                continue;
            }
            let clock = [1.0, 1e3, 1e6, 1e9]
                .into_iter()
                .find(|unit| ((id as f64) - now_s * unit).abs() <= CLOCK_WINDOW_S * unit);
            if let Some(unit) = clock {
                let unit = match unit as u64 {
                    1 => "seconds",
                    1_000 => "milliseconds",
                    1_000_000 => "microseconds",
                    _ => "nanoseconds",
                };
                misses.push(Miss {
                    expected: "a random sync id, not a clock reading".into(),
                    actual: format!("sync id {id}: the current time in {unit}"),
                    lines,
                });
                continue;
            }
            if let Some(first) = seen.get(&id) {
                misses.push(Miss {
                    expected: "a fresh id for every sync".into(),
                    actual: format!("sync id {id} was already used at line {}", first.lines.0),
                    lines,
                });
                continue;
            }
            if let Some((before, _)) = previous {
                if before.abs_diff(id) <= u128::from(SEQUENTIAL_GAP) {
                    misses.push(Miss {
                        expected: "unrelated ids for successive syncs".into(),
                        actual: format!("sync id {id} follows {before}: sequential"),
                        lines,
                    });
                }
            }
            seen.insert(id, item);
            previous = Some((id, item));
        }
        Check::from_misses(misses, !syncs.is_empty(), "")
    }

    fn flush_before_sync(&self) -> Check {
        let mut misses = Vec::new();
        let mut exercised = false;
        // The delimited sync is the one made for this: its 0xFF-prefixed reply lets the
        // client skip the error the flush itself is answered with (qmp-spec.txt §2.6-2.7).
        let delimited = self
            .own_syncs()
            .filter(|(_, i)| i.execute() == Some("guest-sync-delimited"));
        for (index, item) in delimited {
            exercised = true;
            let previous = self.items()[..index]
                .iter()
                .rev()
                .find(|p| p.conn == item.conn);
            let flushed = matches!(previous.map(|p| &p.kind), Some(ItemKind::Flush(_)));
            if !flushed {
                misses.push(Miss {
                    expected: "a 0xFF byte right before the sync".into(),
                    actual: match previous {
                        Some(p) => format!(
                            "{} was sent after {} with no flush between",
                            item.execute().unwrap_or("the sync"),
                            p.describe()
                        ),
                        None => format!(
                            "{} was the first thing sent on connection {}, with no flush",
                            item.execute().unwrap_or("the sync"),
                            item.conn
                        ),
                    },
                    lines: vec![item.lines.0, item.lines.1],
                });
            }
        }
        Check::from_misses(misses, exercised, "")
    }

    fn reply_matches(&self, reply: usize, answer: &Answer) -> bool {
        reply_carries(self.e.wire.replies[reply].value.as_ref(), answer)
    }

    /// True when output `reply` could have reached the client before it answered at
    /// runner time `answered_us`. The mock stamps each write before making it, on the
    /// runner's clock, so a write stamped later than the answer cannot have been read
    /// before it. (A transcript clock that started late reads early, which only counts
    /// more outputs as delivered, in the client's favour.)
    fn delivered_before(&self, reply: usize, answered_us: u64) -> bool {
        self.e.wire.replies[reply].t_us <= answered_us
    }

    /// What an output is, for a finding: its origin, and where it went.
    fn describe_output(&self, reply: usize) -> String {
        let reply = &self.e.wire.replies[reply];
        let mut text = reply.origin.describe();
        if let Some(request) = reply.answers().and_then(|n| self.e.wire.item(n)) {
            text = format!("{text}, {}", request.describe());
            if self.is_held(request.conn) {
                text = format!(
                    "{text} sent by the other client that held the channel before this one (connection {})",
                    request.conn
                );
            }
        }
        if reply.stale {
            if let Some(for_conn) = reply.for_conn {
                text = format!(
                    "{text}, written for connection {for_conn} and delivered stale to connection {}",
                    reply.conn
                );
            }
        }
        text
    }

    fn no_stale_attribution(&self) -> Check {
        let mut misses = Vec::new();
        let mut exercised = false;
        // Read from the bytes alone, a reply is known only by the id it carries: a step
        // whose own reply is not known is judged only when it took a reply known to
        // answer another request.
        let by_ids = self.e.wire.framed_from_bytes;
        let mut unjudged = 0usize;
        for (index, record) in self.e.run.steps.iter().enumerate() {
            let execute = record.execute.as_str();
            let answered = matches!(
                record.answer,
                Answer::Return { .. } | Answer::AgentError { .. }
            );
            if !answered {
                continue;
            }
            let no_reply_success =
                is_no_reply_command(execute) && matches!(record.answer, Answer::Return { .. });
            let answered_us = record.ended_us();
            let Some(Request { item: request, .. }) = self.request_of[index] else {
                if !no_reply_success {
                    exercised = true;
                    let never = if by_ids {
                        "was never sent on the agent's socket"
                    } else {
                        "never reached the agent"
                    };
                    // What it reported may still be known: an output that reached the
                    // client before it answered.
                    let taken = self.taken_output(None, answered_us, &record.answer);
                    let (actual, lines) = match taken {
                        Some(r) => {
                            let reply = &self.e.wire.replies[r];
                            (
                                format!(
                                    "step {} reported {} from {} (line {}); {execute} {never} during the step",
                                    index + 1,
                                    record.answer,
                                    self.describe_output(r),
                                    reply.lines.0
                                ),
                                vec![reply.lines.0, reply.lines.1],
                            )
                        }
                        None => (
                            format!(
                                "step {} reported {} but {execute} {never} during the step",
                                index + 1,
                                record.answer
                            ),
                            Vec::new(),
                        ),
                    };
                    misses.push(Miss {
                        expected: format!(
                            "{execute} sent to the agent before an answer is reported"
                        ),
                        actual,
                        lines,
                    });
                }
                continue;
            };
            if no_reply_success {
                continue;
            }
            // The agent's own answer to this request, delivered on the client's connection
            // before the client answered: whatever else arrived, the client may have used it.
            let own = self.reply_of[request];
            if by_ids && own.is_none() {
                let took_known_other = (0..self.e.wire.replies.len()).any(|r| {
                    self.delivered_before(r, answered_us) && self.reply_matches(r, &record.answer)
                });
                if !took_known_other {
                    unjudged += 1;
                    continue;
                }
            }
            exercised = true;
            let own_usable = own.filter(|&r| {
                !self.e.wire.replies[r].stale && self.delivered_before(r, answered_us)
            });
            if own_usable.is_some_and(|r| self.reply_matches(r, &record.answer)) {
                continue;
            }
            // The answer is not the reply to this request: which output was it?
            let taken = self.taken_output(own, answered_us, &record.answer);
            let request_item = &self.items()[request];
            let Some(taken) = taken else {
                if own.is_some_and(|r| self.reply_matches(r, &record.answer)) {
                    // Its own reply, but it answered before that reply existed.
                    let own = &self.e.wire.replies[own.unwrap_or_default()];
                    misses.push(Miss {
                        expected: format!(
                            "step {}'s answer taken from the reply to its own request",
                            index + 1
                        ),
                        actual: format!(
                            "it reported {} before the agent's reply to {} was written (line {})",
                            record.answer,
                            request_item.describe(),
                            own.lines.0
                        ),
                        lines: vec![request_item.lines.0, request_item.lines.1, own.lines.0],
                    });
                }
                continue;
            };
            let taken_reply = &self.e.wire.replies[taken];
            let own_text = match own {
                Some(r) if !self.delivered_before(r, answered_us) => format!(
                    "the agent's reply to it came only later (line {})",
                    self.e.wire.replies[r].lines.0
                ),
                Some(r) => format!(
                    "the agent's reply to it was {}",
                    self.e.wire.replies[r].text
                ),
                None => "the agent never answered it".to_owned(),
            };
            let mut lines = vec![
                request_item.lines.0,
                request_item.lines.1,
                taken_reply.lines.0,
                taken_reply.lines.1,
            ];
            if let Some(r) = own {
                lines.push(self.e.wire.replies[r].lines.1);
            }
            misses.push(Miss {
                expected: format!(
                    "step {}'s answer taken from the reply to its own request {}",
                    index + 1,
                    request_item.describe()
                ),
                actual: format!(
                    "it reported {} from {} (line {}); {own_text}",
                    record.answer,
                    self.describe_output(taken),
                    taken_reply.lines.0
                ),
                lines,
            });
        }
        if by_ids && !exercised && unjudged > 0 {
            return Check::not_measured(format!(
                "the agent keeps no records and no reply carried the id of the request it answers, for {unjudged} step(s): which reply answered which request is not known"
            ));
        }
        Check::from_misses(misses, exercised, "")
    }

    /// The latest output other than `own` that reached one of the client's connections
    /// before it answered at `answered_us` and carries what it answered: what the client
    /// took instead of its own reply. (Output that went to a connection the harness held
    /// never reached the client.)
    fn taken_output(&self, own: Option<usize>, answered_us: u64, answer: &Answer) -> Option<usize> {
        self.e
            .wire
            .replies
            .iter()
            .enumerate()
            .filter(|(r, reply)| {
                Some(*r) != own
                    && !self.is_held(reply.conn)
                    && self.delivered_before(*r, answered_us)
                    && self.reply_matches(*r, answer)
            })
            .map(|(r, _)| r)
            .next_back()
    }

    /// How the agent's reply to a sync returned its id: exactly, as the same number
    /// written otherwise (`850201.0`), or not at all.
    fn sync_reply_id(&self, sync: usize) -> Option<SyncEcho> {
        let item = &self.items()[sync];
        let sent = item.sync_id()?;
        let reply = &self.e.wire.replies[self.reply_of[sync]?];
        let returned = reply.value.as_ref()?.get("return")?;
        Some(if returned == sent {
            SyncEcho::Exact
        } else if returned.is_f64()
            && integer(sent).is_some_and(|n| returned.as_f64() == Some(n as f64))
            && returned.as_f64().is_some_and(|f| f.fract() == 0.0)
        {
            SyncEcho::SameNumber
        } else {
            SyncEcho::Other
        })
    }

    /// A sync whose reply the client could match: the agent answered it on the sync's own
    /// connection with exactly the id sent.
    fn sync_matched(&self, sync: usize) -> bool {
        let delivered = self.reply_of[sync].is_some_and(|r| !self.e.wire.replies[r].stale);
        delivered && self.sync_reply_id(sync) == Some(SyncEcho::Exact)
    }

    /// Steps answered from their own reply although the last sync before their request
    /// (on its connection, since the previous command) was answered with another id: the
    /// client took that reply as its sync.
    fn wrong_sync_ids_accepted(&self) -> Vec<(Severity, Miss)> {
        let mut found = Vec::new();
        for (index, record) in self.e.run.steps.iter().enumerate() {
            let Some(Request { item: request, .. }) = self.request_of[index] else {
                continue;
            };
            let own = self.reply_of[request];
            if !own.is_some_and(|r| self.reply_matches(r, &record.answer)) {
                continue;
            }
            let conn = self.items()[request].conn;
            let last_sync = self.items()[..request]
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, i)| i.conn == conn)
                .take_while(|(_, i)| !i.is_command())
                .find(|(n, i)| i.is_sync() && !self.is_step_request(*n))
                .map(|(n, _)| n);
            let Some(sync) = last_sync else {
                continue;
            };
            let severity = match self.sync_reply_id(sync) {
                Some(SyncEcho::Other) => Severity::Fail,
                Some(SyncEcho::SameNumber) => Severity::NonStrict,
                _ => continue,
            };
            let sync_item = &self.items()[sync];
            let Some(reply) = self.reply_of[sync].map(|r| &self.e.wire.replies[r]) else {
                continue;
            };
            found.push((
                severity,
                Miss {
                    expected: format!(
                        "the reply to {} returns exactly its id {} before the sync counts",
                        sync_item.describe(),
                        sync_item.sync_id().map_or_else(String::new, Value::to_string)
                    ),
                    actual: format!(
                        "the agent answered the sync with {} and the client went on to step {}'s {} as if synchronised",
                        reply.text,
                        index + 1,
                        record.execute
                    ),
                    lines: vec![sync_item.lines.0, reply.lines.0, reply.lines.1],
                },
            ));
        }
        found
    }

    fn total_deadline(&self) -> Check {
        let mut misses = Vec::new();
        let mut exercised = false;
        for (index, record) in self.e.run.steps.iter().enumerate() {
            if matches!(record.answer, Answer::NotRun { .. }) {
                continue;
            }
            let Some(step) = self.e.scenario.steps.get(index) else {
                continue;
            };
            exercised = true;
            let limit = step.timeout_ms + deadline_grace_ms(step.timeout_ms, self.e.oneshot);
            let hung = matches!(
                record.answer,
                Answer::Broken {
                    why: BrokenKind::Hung,
                    ..
                }
            );
            if hung || record.elapsed_ms() > limit as f64 {
                let lines = self
                    .step_lines(index)
                    .map_or_else(Vec::new, |(a, b)| vec![a, b]);
                misses.push(Miss {
                    expected: format!(
                        "step {} ({}) over within {} ms (timeout {} ms plus grace)",
                        index + 1,
                        step.execute,
                        limit,
                        step.timeout_ms
                    ),
                    actual: format!("it took {:.0} ms: {}", record.elapsed_ms(), record.answer),
                    lines,
                });
            }
        }
        Check::from_misses(misses, exercised, "")
    }

    fn bounded_memory(&self) -> Check {
        if self.e.in_process {
            // The runner's peak RSS is not the client's: judged from the client's own
            // count of its output buffers, where it keeps one.
            let Some(peak) = self.e.run.peak_buffer_bytes else {
                return Check::not_measured("an in-process client shares the runner's memory");
            };
            let limit = self.e.max_rss_kib.saturating_mul(1024);
            let mut misses = Vec::new();
            if peak > limit {
                misses.push(Miss {
                    expected: format!("reply buffers of at most {} MiB", limit >> 20),
                    actual: format!("reply buffers of {} MiB", peak >> 20),
                    lines: Vec::new(),
                });
            }
            return Check::from_misses(
                misses,
                true,
                format!("peak reply buffers {} KiB", peak >> 10),
            );
        }
        let peak = self
            .e
            .run
            .processes
            .iter()
            .map(|p| p.exit.peak_rss_kib)
            .max();
        let Some(peak) = peak else {
            return Check::not_measured("no client process ran");
        };
        let mut misses = Vec::new();
        if peak > self.e.max_rss_kib {
            misses.push(Miss {
                expected: format!("peak RSS at most {} MiB", self.e.max_rss_kib / 1024),
                actual: format!("peak RSS {} MiB", peak / 1024),
                lines: Vec::new(),
            });
        }
        Check::from_misses(misses, true, format!("peak RSS {} KiB", peak))
    }

    fn no_repeated_side_effects(&self) -> Check {
        let key = |execute: &str, arguments: Option<&Value>| -> String {
            let arguments = arguments
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
            format!("{execute} {arguments}")
        };
        let mut asked: BTreeMap<String, usize> = BTreeMap::new();
        for step in &self.e.scenario.steps {
            if is_side_effecting(&step.execute) {
                let arguments = step.arguments.clone().map(Value::Object);
                *asked
                    .entry(key(&step.execute, arguments.as_ref()))
                    .or_default() += 1;
            }
        }
        let mut sent: BTreeMap<String, Vec<&Item>> = BTreeMap::new();
        for item in self.items().iter().filter(|i| !self.is_held(i.conn)) {
            if let Some(execute) = item.execute().filter(|x| is_side_effecting(x)) {
                sent.entry(key(execute, item.arguments()))
                    .or_default()
                    .push(item);
            }
        }
        let mut misses = Vec::new();
        for (what, items) in &sent {
            let allowed = asked.get(what).copied().unwrap_or(0);
            if items.len() > allowed {
                let extra = &items[allowed.max(1)..];
                let mut lines = Vec::new();
                for item in extra.iter().take(4) {
                    lines.extend([item.lines.0, item.lines.1]);
                }
                misses.push(Miss {
                    expected: format!("{what} sent at most {allowed} time(s), as the steps asked"),
                    actual: format!("sent {} times", items.len()),
                    lines,
                });
            }
        }
        Check::from_misses(misses, !asked.is_empty(), "")
    }
}

/// How a sync reply returned the id sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SyncEcho {
    Exact,
    /// The same number in another notation (a float): QEMU's parser reads it back as the
    /// same id, but a strict client compares the JSON it got.
    SameNumber,
    Other,
}

/// What the sync-id finding requires.
const SYNC_ID_REQUIREMENT: &str = "A client counts a sync as done only when the reply returns exactly the id it sent (another number, a string, a truncated id is not its sync); libvirt qemu_agent.c compares the id exactly.";

/// A JSON integer as i128 (floats and strings are not integers).
fn integer(value: &Value) -> Option<i128> {
    value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
}

/// Pairs each request with the agent's answer to it, as the agent recorded them: an output
/// whose origin is the reply to (or the parse error for) request N answers the item with
/// number N. Outputs that answer no request (a fault's injection, preloaded stale output)
/// stay unpaired. Nothing is inferred from order, ids or timing.
fn pair_replies(wire: &Wire) -> Vec<Option<usize>> {
    let mut reply_of = vec![None; wire.items.len()];
    let index: HashMap<u64, usize> = wire
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| (item.request, i))
        .collect();
    for (r, reply) in wire.replies.iter().enumerate() {
        let Some(&i) = reply.answers().and_then(|n| index.get(&n)) else {
            continue;
        };
        if reply_of[i].is_none() {
            reply_of[i] = Some(r);
        }
    }
    reply_of
}

/// Where a step's request is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    item: usize,
    /// The agent read it only after the client had already answered the step.
    after_answer: bool,
}

/// For each step, the item that was its request: the first item with the step's command
/// (and arguments) after the previous step's request whose bytes reached the agent no
/// later than the step's answer; for a step answered with the agent's return or error,
/// failing that, the first one that reached the agent after the answer, before the next
/// step's answer (the client answered before its request even arrived).
///
/// A session client handles one step at a time, and the runner gives it step k+1 only
/// after it answered step k; so bytes that reached the agent before step k's answer were
/// sent for step k or earlier. When the transcript counts from the runner's own origin
/// (the crate's mock does: `launch_span_us` is 0), that comparison is exact: a transcript
/// time is taken after the bytes were read, never before they were sent. Another agent's
/// transcript clock started up to `launch_span_us` after the runner's, which makes its
/// times read early by at most that much; see the bound below.
fn find_step_requests(e: &Evidence<'_>, reply_of: &[Option<usize>]) -> Vec<Option<Request>> {
    let items = &e.wire.items;
    let mut found = Vec::with_capacity(e.run.steps.len());
    let mut after = 0usize;
    for (n, record) in e.run.steps.iter().enumerate() {
        if matches!(record.answer, Answer::NotRun { .. }) {
            found.push(None);
            continue;
        }
        let step = e.scenario.steps.get(record.index);
        let wanted_arguments = step
            .and_then(|s| s.arguments.clone())
            .map(Value::Object)
            .unwrap_or_else(|| Value::Object(Default::default()));
        let is_request = |item: &Item| {
            !e.held_connections.contains(&item.conn)
                && item.execute() == Some(record.execute.as_str())
                && item
                    .arguments()
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default()))
                    == wanted_arguments
        };
        let answered = record.ended_us();
        // Only an answer from the agent can have been given before its request arrived;
        // a step that failed on the client's side claims nothing later.
        let agent_answer = matches!(
            record.answer,
            Answer::Return { .. } | Answer::AgentError { .. }
        );
        let next_answered = match e.run.steps.get(n + 1) {
            // A step that failed on the client's side claims only bytes that certainly
            // reached the agent before its answer: with a transcript clock that started
            // up to `launch_span_us` late, a time that reads earlier than the answer by
            // less than that may belong to the next step. (0 for the crate's mock.)
            _ if !agent_answer => answered.saturating_sub(e.launch_span_us),
            Some(next) => next.ended_us(),
            None => u64::MAX,
        };
        let mut candidates = (after..items.len())
            .filter(|&i| items[i].arrived_us <= next_answered && is_request(&items[i]));
        let first = candidates.next();
        // Of several like requests in the step's time (an earlier step's command that the
        // agent read only after that step ended, say), the one whose own reply, written for
        // the connection that sent it, carries what the client reported is the step's: the
        // agent's records say which request that reply answered.
        let own_reply = first.into_iter().chain(candidates).find(|&i| {
            reply_of[i].is_some_and(|r| {
                let reply = &e.wire.replies[r];
                !reply.stale
                    && reply.t_us <= answered
                    && reply_carries(reply.value.as_ref(), &record.answer)
            })
        });
        let chosen = own_reply.or(first).map(|item| Request {
            item,
            after_answer: items[item].arrived_us > answered,
        });
        if let Some(request) = chosen {
            after = request.item + 1;
        }
        found.push(chosen);
    }
    found
}

/// Whether a reply's value is the answer a client reported: its return, or an error of its
/// class.
fn reply_carries(value: Option<&Value>, answer: &Answer) -> bool {
    let Some(value) = value else {
        return false;
    };
    match answer {
        Answer::Return { value: returned } => {
            value.get("error").is_none() && value.get("return") == Some(returned)
        }
        Answer::AgentError { class, .. } => {
            value
                .get("error")
                .and_then(|e| e.get("class"))
                .and_then(Value::as_str)
                == Some(class.as_str())
        }
        _ => false,
    }
}

fn line_span(lines: &[usize]) -> Option<(usize, usize)> {
    Some((*lines.iter().min()?, *lines.iter().max()?))
}

/// The transcript lines around `lines`: the whole span when it is short, else each line.
fn bounded_excerpt(wire: &Wire, lines: &[usize]) -> String {
    let Some((from, to)) = line_span(lines) else {
        return String::new();
    };
    if to - from <= 20 {
        return wire.excerpt(from, to);
    }
    let mut sorted = lines.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
        .iter()
        .map(|&l| wire.excerpt(l, l))
        .collect::<Vec<_>>()
        .join("  ...\n")
}

/// The class an adapter reports for an agent error whose class its client does not keep
/// (libvirt passes the agent's desc on and drops its class): such an error is judged on
/// its desc alone.
pub const UNKNOWN_CLASS: &str = "UnknownClass";

/// Whether an answer is one of the acceptable outcomes.
pub fn outcome_matches(
    outcome: &Outcome,
    answer: &Answer,
    elapsed_ms: f64,
    timeout_ms: u64,
) -> bool {
    match (outcome, answer) {
        (Outcome::Return(expected), Answer::Return { value }) => expected == value,
        (Outcome::ReturnContains(expected), Answer::Return { value }) => contains(value, expected),
        (Outcome::ReturnType(kind), Answer::Return { value }) => has_type(value, *kind),
        (Outcome::Error(expected), Answer::AgentError { class, desc }) => {
            (expected.class == *class || class == UNKNOWN_CLASS)
                && expected
                    .desc_contains
                    .as_ref()
                    .is_none_or(|needle| desc.contains(needle.as_str()))
        }
        (Outcome::ClientError(expected), Answer::ClientError { class, .. }) => {
            class.satisfies(expected.class, elapsed_ms, timeout_ms)
                && expected.min_ms.is_none_or(|min| elapsed_ms >= min as f64)
                && expected.max_ms.is_none_or(|max| elapsed_ms <= max as f64)
        }
        _ => false,
    }
}

/// `expected`'s members are all in `actual` (recursively for objects; each element of an
/// expected array contained in some element of the actual one).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| contains(av, ev))),
        (Value::Array(e), Value::Array(a)) => {
            e.iter().all(|ev| a.iter().any(|av| contains(av, ev)))
        }
        _ => expected == actual,
    }
}

fn has_type(value: &Value, kind: JsonType) -> bool {
    match kind {
        JsonType::Null => value.is_null(),
        JsonType::Boolean => value.is_boolean(),
        JsonType::Integer => value.is_i64() || value.is_u64(),
        JsonType::Number => value.is_number(),
        JsonType::String => value.is_string(),
        JsonType::Array => value.is_array(),
        JsonType::Object => value.is_object(),
    }
}

/// "any of: return {}, client error Timeout within 600 ms".
pub fn describe_outcomes(outcomes: &[Outcome]) -> String {
    let parts: Vec<String> = outcomes.iter().map(describe_outcome).collect();
    match parts.len() {
        0 => "nothing (the case only records behaviour)".to_owned(),
        1 => parts.join(""),
        _ => format!("any of: {}", parts.join("; ")),
    }
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Return(v) => format!("return {v}"),
        Outcome::ReturnContains(v) => format!("a return value containing {v}"),
        Outcome::ReturnType(t) => format!("a return value of type {t:?}").to_lowercase(),
        Outcome::Error(e) => match &e.desc_contains {
            Some(d) => format!("agent error {} with a desc containing {d:?}", e.class),
            None => format!("agent error {}", e.class),
        },
        Outcome::ClientError(c) => {
            let class = match c.class {
                ClientErrorClass::Any => "any client error".to_owned(),
                other => format!("client error {other:?}"),
            };
            match (c.min_ms, c.max_ms) {
                (Some(min), Some(max)) => format!("{class} after {min} to {max} ms"),
                (Some(min), None) => format!("{class} after at least {min} ms"),
                (None, Some(max)) => format!("{class} within {max} ms"),
                (None, None) => class,
            }
        }
    }
}

#[cfg(test)]
mod tests;
