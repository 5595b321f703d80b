//! Correct clients of four shapes against the whole catalogue: a verdict is trusted only
//! when correct clients of every deployed shape are judged right.
//!
//! The clients (`tests/client_shapes/shapes.rs`, in-process session clients, so that no
//! process start-up races the agent on a loaded machine) follow the wire bytes of the real
//! ones: libvirt's (a plain guest-sync with a clock-based id, then the command
//! without an id; a new sync only after a timeout), Proxmox's (guest-sync-delimited and the
//! command in one write, the last 0xFF, the next line is the answer), a connection per call
//! (0xFF, a delimited sync, the command, close), and id-routed (one sync per connection,
//! then an id on every command and replies routed by it). Each is as correct as its shape
//! allows.
//!
//! For each shape a table lists the cases whose target is the shape's own defining trait:
//! there, and only there, FAIL is right, for the reason the table names. Everywhere else a
//! shape must not FAIL, and a NON-STRICT must come from a recommended duty or a tolerated
//! outcome the shape's table allows. A new case that FAILs a shape fails this test with a
//! message naming it: either the case or the judge is wrong, or FAIL is right and the case
//! goes into that shape's table with its reason.
//!
//! The four shapes run at the same time (each two cases at a time), each starting at another
//! quarter of the catalogue, so that the heavy cases (the floods of many MiB) of different
//! shapes do not run at once; the whole test takes about as long as the slowest shape. A
//! case that went wrong only by its timing (a missed deadline, a call timed out) is run
//! once more on its own, as the runner's own timers are late on a loaded machine; the
//! test says which.
//!
//! Where a shape's real client loses a race with the agent's writes some of the time, the
//! table lists the case under `may_fail` with the race: FAIL is then right when it comes.

mod common;
#[path = "client_shapes/shapes.rs"]
mod shapes;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use qga_harness::runner::{self, CaseResult, Client, LoadedCase, RunOptions, Severity, Verdict};

/// A case where FAIL is right for a shape: the finding that must say why (the start of its
/// subject), and why that is the shape's own trait.
struct ExpectedFail {
    case: &'static str,
    finding: &'static str,
    why: &'static str,
}

/// A NON-STRICT a shape may get: in `case` (`*`: any case), a finding whose subject starts
/// with `finding`.
struct AllowedNonStrict {
    case: &'static str,
    finding: &'static str,
    why: &'static str,
}

struct Shape {
    name: &'static str,
    expected_fail: &'static [ExpectedFail],
    allowed_non_strict: &'static [AllowedNonStrict],
    /// Cases that must be NON-STRICT with this finding (the reason is the point).
    expected_non_strict: &'static [ExpectedFail],
    /// Cases where the shape's trait loses a race with the agent some of the time: FAIL
    /// is right when it comes, with this finding, and so is not failing.
    may_fail: &'static [ExpectedFail],
}

const fn fail(case: &'static str, finding: &'static str, why: &'static str) -> ExpectedFail {
    ExpectedFail { case, finding, why }
}

const fn lenient(case: &'static str, finding: &'static str, why: &'static str) -> AllowedNonStrict {
    AllowedNonStrict { case, finding, why }
}

/// Commands without ids: after the sync, the next reply is taken as the answer.
const NEXT_REPLY: &str = "commands carry no id, so the next reply after the sync is the answer";

const LIBVIRT: Shape = Shape {
    name: "libvirt",
    expected_fail: &[
        fail("hostile.1", "duty no-stale-attribution", NEXT_REPLY),
        fail("hostile.15", "duty no-stale-attribution", NEXT_REPLY),
        fail("hostile.17", "duty no-stale-attribution", "the late reply, held back until after the resync's reply, is the next reply"),
        fail("hostile.28", "duty no-stale-attribution", NEXT_REPLY),
        fail("hostile.35", "duty no-stale-attribution", NEXT_REPLY),
        fail("sync.3", "step 1", "no 0xFF flush: a previous client's partial JSON in the agent's parser swallows the sync"),
        fail("sync.12", "step 1", "no 0xFF flush: a previous client's partial string in the agent's parser swallows the sync"),
        fail("sync.16", "duty unpredictable-sync-ids", "the sync id is the clock in milliseconds, which a guest can forge"),
    ],
    allowed_non_strict: &[
        lenient("*", "duty unpredictable-sync-ids", "the sync id is the clock in milliseconds"),
    ],
    expected_non_strict: &[],
    may_fail: &[
        fail(
            "hostile.16",
            "duty no-stale-attribution",
            "a duplicate reply that arrives between calls is dropped, as libvirt's event loop drops it; one that arrives after the next command was written is that command's next reply",
        ),
        fail(
            "hostile.23",
            "duty no-stale-attribution",
            "an unsolicited reply that arrives between calls is dropped; one that arrives after the next command was written is that command's next reply",
        ),
        fail(
            "hostile.30",
            "duty no-stale-attribution",
            "an id-less error that arrives between calls is dropped; one that arrives after the next command was written is that command's next reply",
        ),
    ],
};

/// PVE::QMPClient's parse (`mux_input`: `s/^.*\xff([^\n]+}\r?\n[^\n]+})\r?\n(.*)$/$2/`)
/// needs its sync reply and the answer in the input at once. When a stale 0xFF line comes
/// before its sync reply and the answer is not in yet, the last 0xFF that two lines follow
/// is the stale one: the stale line is taken as the sync reply and its own sync reply as
/// the answer. The agent writes the replies apart, so whether the answer is in the same
/// read is a race, which the real client loses as the shape does.
const PVE_TWO_LINES: &str = "the stale 0xFF line and its own sync reply, read before the answer arrived, are taken as the sync reply and the answer";

/// PVE's regex wants both lines after the 0xFF to end in `}`: a line that is not an object
/// (`42`, `[]`) after the sync reply never matches, and the call waits until it times out.
const PVE_BRACES: &str = "the two lines after the 0xFF must each end in }: a non-object line after the sync reply never matches, and the call times out";

const PROXMOX: Shape = Shape {
    name: "proxmox",
    expected_fail: &[
        fail("hostile.1", "duty no-stale-attribution", NEXT_REPLY),
        fail("hostile.17", "duty no-stale-attribution", "the late reply, held back until after the sync's reply, is the line after it"),
        fail("hostile.22", "step 1", "the line after the sync reply is the answer, even an event"),
        fail("hostile.28", "duty no-stale-attribution", NEXT_REPLY),
        fail("hostile.35", "duty no-stale-attribution", NEXT_REPLY),
        fail("hostile.26", "step 1", PVE_BRACES),
        fail("hostile.31", "step 1", PVE_BRACES),
        fail("sync.3", "step 1", "no 0xFF flush: a previous client's partial JSON in the agent's parser swallows the sync"),
        fail("sync.12", "step 1", "no 0xFF flush: a previous client's partial string in the agent's parser swallows the sync"),
    ],
    allowed_non_strict: &[
        lenient("*", "duty unpredictable-sync-ids", "the sync id is the process id, a 0 and a sequence number"),
        lenient("*", "duty flush-before-sync", "PVE::QMPClient sends no 0xFF before guest-sync-delimited"),
        lenient("sync.5", "sync reply with another id taken as the sync", "Perl reads 1956301.0 as the number 1956301 (the float form of the id: NON-STRICT, not FAIL)"),
        lenient("sync.5", "step", "the float form of its id is accepted, so the call returns"),
    ],
    expected_non_strict: &[fail(
        "sync.5",
        "sync reply with another id taken as the sync",
        "the float 1956301.0 taken for the id 1956301 is its own finding, not a stale reply",
    )],
    may_fail: &[
        // The pair's id is an older sync's: skipped, input and all, so no 0xFF is left
        // before the answer and the call times out.
        fail("sync.11", "step 2", PVE_TWO_LINES),
        // The pair's id is another client's, larger: "got wrong command id".
        fail("sync.19", "step ", PVE_TWO_LINES),
        // The copy of its own sync reply comes after a spurious reply: read before the
        // copy arrived, the spurious reply is the line after the sync reply.
        fail("hostile.15", "duty no-stale-attribution", PVE_TWO_LINES),
        // sync.16 requires unguessable ids: "$$0<seq>" is below 65536 while the process id
        // is below 6554 (as on a freshly booted machine), and the judge rightly calls it
        // guessable then.
        fail("sync.16", "duty unpredictable-sync-ids", "the sync id is the process id, a 0 and a sequence number: small enough to guess where the process id is small"),
    ],
};

const PER_CALL: Shape = Shape {
    name: "per-call",
    expected_fail: &[
        fail("hostile.1", "duty no-stale-attribution", NEXT_REPLY),
        fail("hostile.15", "duty no-stale-attribution", NEXT_REPLY),
        fail("hostile.28", "duty no-stale-attribution", NEXT_REPLY),
        fail("hostile.35", "duty no-stale-attribution", NEXT_REPLY),
    ],
    allowed_non_strict: &[],
    expected_non_strict: &[],
    may_fail: &[],
};

/// Without id echo (an agent before 4.0) no reply carries the command's id.
const NO_ECHO: &str = "an agent before 4.0 echoes no id, so no reply is ever routed to the command";

const ID_ROUTED: Shape = Shape {
    name: "id-routed",
    expected_fail: &[
        fail("version.2", "step 1", NO_ECHO),
        fail("timeout.16", "step 2", NO_ECHO),
        fail("hostile.31", "step 1", NO_ECHO),
        fail("hostile.32", "step 2", NO_ECHO),
        fail("hostile.33", "step 1", NO_ECHO),
        fail("hostile.34", "step 4", NO_ECHO),
    ],
    allowed_non_strict: &[
        lenient(
            "hostile.18",
            "step 1",
            "a reply nested too deep to parse cannot be routed by its id: the call times out (a tolerated outcome)",
        ),
    ],
    expected_non_strict: &[],
    may_fail: &[],
};

const SHAPES: [&Shape; 4] = [&LIBVIRT, &PROXMOX, &PER_CALL, &ID_ROUTED];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn catalogue() -> Vec<LoadedCase> {
    common::runner::load(&root().join("scenarios"))
}

fn session(shape: &str) -> Client {
    Client::InProcess(Arc::new(shapes::ShapeClient(shapes::Kind::parse(shape))))
}

/// One row of the failure table.
fn describe(result: &CaseResult) -> String {
    let mut text = format!("{:<12} {:<11}", result.id, result.verdict.as_str());
    if let Some(error) = &result.error {
        text.push_str(&format!(" error: {error}"));
    }
    if let Some(judgement) = &result.judgement {
        for f in &judgement.findings {
            let severity = match f.severity {
                Severity::Fail => "fail",
                Severity::NonStrict => "non-strict",
            };
            let actual: String = f.actual.chars().take(240).collect();
            text.push_str(&format!("\n      {severity} {}: {actual}", f.subject));
        }
    }
    text
}

/// The entries of a shape's table that name no case of the catalogue.
fn table_problems(shape: &Shape, cases: &[LoadedCase]) -> Vec<String> {
    let ids: BTreeSet<&str> = cases.iter().map(|c| c.scenario.id.as_str()).collect();
    let mut problems = Vec::new();
    for expected in shape
        .expected_fail
        .iter()
        .chain(shape.expected_non_strict)
        .chain(shape.may_fail)
    {
        if !ids.contains(expected.case) {
            problems.push(format!(
                "the table names {}, which is not in the catalogue: remove it",
                expected.case
            ));
        }
    }
    for allowed in shape.allowed_non_strict {
        if allowed.case != "*" && !ids.contains(allowed.case) {
            problems.push(format!(
                "the table names {}, which is not in the catalogue: remove it",
                allowed.case
            ));
        }
    }
    problems
}

/// What is wrong with one shape's results.
fn problems(shape: &Shape, results: &[CaseResult]) -> Vec<String> {
    let mut problems = Vec::new();
    for result in results {
        let may_fail = shape.may_fail.iter().find(|e| e.case == result.id);
        let expected = shape
            .expected_fail
            .iter()
            .chain(may_fail)
            .find(|e| e.case == result.id)
            .filter(|_| may_fail.is_none() || result.verdict == Verdict::Fail);
        let findings = result
            .judgement
            .as_ref()
            .map_or(&[][..], |j| j.findings.as_slice());
        if let Some(e) = shape
            .expected_non_strict
            .iter()
            .find(|e| e.case == result.id)
        {
            let named = findings.iter().any(|f| f.subject.starts_with(e.finding));
            let stale = findings
                .iter()
                .any(|f| f.subject.starts_with("duty no-stale-attribution"));
            if result.verdict != Verdict::NonStrict || !named || stale {
                problems.push(format!(
                    "{}\n    -> expected NON-STRICT with the finding `{}` and no stale attribution ({})",
                    describe(result),
                    e.finding,
                    e.why
                ));
            }
            continue;
        }
        let wrong = match (result.verdict, expected) {
            _ if result.error.is_some() => Some("the runner could not run the case".to_owned()),
            (Verdict::Fail, Some(e)) => {
                let named = findings
                    .iter()
                    .any(|f| f.severity == Severity::Fail && f.subject.starts_with(e.finding));
                (!named).then(|| {
                    format!(
                        "FAIL is right here ({}), but no failing finding is `{}`",
                        e.why, e.finding
                    )
                })
            }
            (_, Some(e)) => Some(format!(
                "expected FAIL ({}; finding `{}`), got {}",
                e.why, e.finding, result.verdict
            )),
            (Verdict::Fail, None) => Some(format!(
                "FAIL, and {} is in no expected-FAIL entry of the {} shape: a correct client of \
                 this shape must not FAIL it, unless the case targets the shape's own trait \
                 (then add it to the shape's table in tests/client_shapes.rs with the reason)",
                result.id, shape.name
            )),
            (Verdict::NonStrict, None) => {
                let unexplained: Vec<&str> = findings
                    .iter()
                    .filter(|f| {
                        !shape.allowed_non_strict.iter().any(|a| {
                            (a.case == "*" || a.case == result.id)
                                && f.subject.starts_with(a.finding)
                        })
                    })
                    .map(|f| f.subject.as_str())
                    .collect();
                (!unexplained.is_empty()).then(|| {
                    format!(
                        "NON-STRICT for a reason the shape's table does not allow: {}",
                        unexplained.join("; ")
                    )
                })
            }
            (Verdict::Unsupported, None) => Some("UNSUPPORTED".to_owned()),
            (Verdict::Pass | Verdict::Info, None) => None,
        };
        if let Some(wrong) = wrong {
            problems.push(format!("{}\n    -> {wrong}", describe(result)));
        }
    }
    problems
}

#[test]
fn correct_clients_of_every_shape_fail_only_their_own_traits() {
    let cases = catalogue();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // More threads than cores: a case that keeps a thread busy (a flood of MiB being
        // written and recorded) does not hold up the timers of the others.
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let lateness = Arc::new(AtomicU64::new(0));
    let (runs, reruns) = runtime.block_on(async {
        // How late the runtime's timers fire: on a loaded machine a missed deadline is
        // then told apart from a client that overran it.
        let probe = tokio::spawn(timer_lateness(lateness.clone()));
        let mut tasks = Vec::new();
        for (n, shape) in SHAPES.into_iter().enumerate() {
            let options = options(shape, 2);
            let mut cases = cases.clone();
            let start = n * cases.len() / SHAPES.len();
            cases.rotate_left(start);
            tasks.push(tokio::spawn(async move {
                let results = runner::run_all(cases, &options, |_, _| {}).await;
                (results, started.elapsed())
            }));
        }
        let mut runs = Vec::new();
        for task in tasks {
            runs.push(task.await.expect("a shape's run"));
        }
        // A case that went wrong only by its timing (a missed deadline, a call that timed
        // out) while 8 cases and their agents shared the runtime on a loaded machine is
        // run again on its own: a deadline measured while the runner's own timers were
        // hundreds of ms late says nothing about the client. Any other finding stands.
        let mut reruns = Vec::new();
        for (shape, (results, _)) in SHAPES.iter().zip(&mut runs) {
            let timed: BTreeSet<String> = results
                .iter()
                .filter(|r| !problems(shape, std::slice::from_ref(r)).is_empty() && only_timing(r))
                .map(|r| r.id.clone())
                .collect();
            if timed.is_empty() {
                continue;
            }
            let again: Vec<LoadedCase> = cases
                .iter()
                .filter(|c| timed.contains(&c.scenario.id))
                .cloned()
                .collect();
            let rerun = runner::run_all(again, &options(shape, 1), |_, _| {}).await;
            for result in rerun {
                if let Some(slot) = results.iter_mut().find(|r| r.id == result.id) {
                    *slot = result;
                }
            }
            reruns.push(format!(
                "{}: {}",
                shape.name,
                Vec::from_iter(timed).join(", ")
            ));
        }
        probe.abort();
        (runs, reruns)
    });
    let mut report = Vec::new();
    for (shape, (results, took)) in SHAPES.iter().zip(&runs) {
        let counts: Vec<String> = Verdict::ALL
            .iter()
            .map(|v| {
                let n = results.iter().filter(|r| r.verdict == *v).count();
                format!("{n} {v}")
            })
            .collect();
        eprintln!(
            "{}: {} ({} cases, done after {:.1} s)",
            shape.name,
            counts.join(", "),
            results.len(),
            took.as_secs_f64()
        );
        let mut found = table_problems(shape, &cases);
        found.extend(problems(shape, results));
        if !found.is_empty() {
            report.push(format!(
                "== shape {}: {} problem(s)\n{}",
                shape.name,
                found.len(),
                found.join("\n")
            ));
        }
    }
    let late =
        format!(
        "the runtime's timers fired up to {} ms late; run again on their own for their timing: {}",
        lateness.load(Ordering::Relaxed),
        if reruns.is_empty() { "none".to_owned() } else { reruns.join("; ") }
    );
    eprintln!(
        "all shapes: {:.1} s; {late}",
        started.elapsed().as_secs_f64()
    );
    assert!(report.is_empty(), "\n{}\n({late})", report.join("\n"));
}

/// How a shape is run: `jobs` cases at a time, every time in the cases doubled (the
/// in-process shapes share the runner's threads with the agents of the cases running at
/// the same time, and a loaded machine delays their timers by a tenth of a second and
/// more; doubled, a late timer mostly stays within a deadline's grace).
fn options(shape: &Shape, jobs: usize) -> RunOptions {
    RunOptions {
        time_scale: 2,
        client: session(shape.name),
        launcher: Arc::new(runner::MockLauncher::default()),
        jobs,
        seed: 7,
        max_rss_kib: runner::DEFAULT_MAX_RSS_KIB,
        artifacts: std::env::var_os("QGA_TEST_ARTIFACTS")
            .map(|dir| Path::new(&dir).join(shape.name)),
    }
}

/// Every failing finding of the case is about time: a missed deadline, or a call that
/// timed out.
fn only_timing(result: &CaseResult) -> bool {
    let Some(judgement) = &result.judgement else {
        return false;
    };
    result.error.is_none()
        && judgement
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .all(|f| {
                f.subject.starts_with("duty total-deadline")
                    || (f.subject.starts_with("step ")
                        && f.actual.starts_with("client error Timeout"))
            })
}

/// Keeps in `worst` how late (in ms) a 10 ms sleep on the runtime wakes, at most.
async fn timer_lateness(worst: Arc<AtomicU64>) {
    let period = std::time::Duration::from_millis(10);
    loop {
        let before = Instant::now();
        tokio::time::sleep(period).await;
        let late = before.elapsed().saturating_sub(period).as_millis();
        worst.fetch_max(u64::try_from(late).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The tables themselves: no case twice, every FAIL entry gives a reason.
#[test]
fn the_shape_tables_are_well_formed() {
    for shape in SHAPES {
        let mut seen = BTreeSet::new();
        for e in shape.expected_fail.iter().chain(shape.may_fail) {
            assert!(
                seen.insert(e.case),
                "{}: {} listed twice",
                shape.name,
                e.case
            );
            assert!(!e.why.is_empty() && !e.finding.is_empty());
        }
        for a in shape.allowed_non_strict {
            assert!(!a.why.is_empty() && !a.finding.is_empty());
            assert!(
                !shape.expected_fail.iter().any(|e| e.case == a.case),
                "{}: {} is both an expected FAIL and an allowed NON-STRICT",
                shape.name,
                a.case
            );
        }
    }
}
