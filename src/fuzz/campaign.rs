//! `qga-harness fuzz`: a seeded campaign of hostile guests against any client.
//!
//! Each case is a scenario drawn from the seed and the case number: a few read-only and
//! side-effecting commands, each expected to return exactly what the simulated guest
//! answers (computed by running the same requests through the agent and a fresh default
//! guest), or to fail as a client error; and fault rules drawn from the fault model
//! (every action of the `--fault` syntax with drawn parameters, on a step's command or on
//! the sync commands, at a drawn occurrence). The case runs through the runner exactly as
//! `qga-harness run` runs a file (per-case mock, adapter, process hygiene, judge), and
//! what the judge FAILs becomes a finding, sorted into kinds: a duty missed, a wrong
//! result, a crash, a hang, a malformed answer.
//!
//! The first case of a kind is minimised (fault rules, then steps, then each rule's
//! parameters, one at a time: greedy delta debugging, each candidate kept only when it
//! still shows the kind) and written to the output directory as a standalone scenario
//! with its requirement and the transcript of its last run; later cases of a known kind
//! are only counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

use crate::agent::{AgentConfig, Dispatcher};
use crate::guest::{Guest, Profile};
use crate::runner::{
    run_case, Answer, BrokenKind, CaseResult, LoadedCase, RunOptions, Severity, Verdict, Wire,
};
use crate::scenario::Scenario;
use crate::wire::{Parsed, Value};

/// Commands a case draws from, with their arguments; `true` marks a side-effecting one.
const COMMANDS: &[(&str, Option<&str>, bool)] = &[
    ("guest-ping", None, false),
    ("guest-get-host-name", None, false),
    ("guest-get-osinfo", None, false),
    ("guest-get-timezone", None, false),
    ("guest-get-users", None, false),
    ("guest-get-vcpus", None, false),
    ("guest-fsfreeze-status", None, false),
    (
        "guest-file-open",
        Some(r#"{"path": "/etc/hostname", "mode": "r"}"#),
        true,
    ),
];

/// The fault actions a case draws from, as `--fault` text with `{}` for a drawn number.
const ACTIONS: &[&str] = &[
    "delay={}ms",
    "hang",
    "drip=1/{}ms",
    "slice={}",
    "coalesce",
    "die-before-read,restart={}ms",
    "die-after-read,restart={}ms",
    "die-mid-reply={},restart={}ms",
    "close-client",
    "stop-reading={}ms",
    "spurious",
    "wrong-sync-id",
    "duplicate",
    "swap",
    "garbage=text",
    "garbage=invalid-utf8",
    "garbage=nul",
    "garbage=half-object",
    "oversize=1",
    "nesting-bomb=100000",
    "error-not-object",
    "return-and-error",
    "neither",
];

/// Where faults fire besides the steps' own commands.
const SYNC_COMMANDS: &[&str] = &["guest-sync-delimited", "guest-sync"];

const DUTIES: &[&str] = &[
    "no-stale-attribution",
    "total-deadline",
    "no-repeated-side-effects",
    "bounded-memory",
];

/// A drawn case, in the pieces minimisation removes or simplifies.
#[derive(Clone, Debug)]
pub struct Draft {
    pub steps: Vec<DraftStep>,
    pub faults: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct DraftStep {
    pub execute: String,
    pub arguments: Option<Json>,
    pub timeout_ms: u64,
}

/// A kind of finding, and what a correct client does instead.
fn requirement(kind: &str) -> String {
    match kind {
        "wrong-result" => "Each call returns exactly the value the guest agent answered to that request, or fails; never another request's reply or a made-up one.".into(),
        "crash" => "The client survives any guest output: it never dies from a signal.".into(),
        "hang" => "The client answers every call within its timeout, whatever the guest does.".into(),
        "exited" => "The client answers every call (a value or an error) instead of exiting before it answers.".into(),
        "malformed-answer" => "The client reports every call's outcome in its adapter's format.".into(),
        "no-stale-attribution" => "A reply is taken only for the request it answers: stale, duplicate, spurious or foreign replies are discarded.".into(),
        "total-deadline" => "A call ends within its total deadline, however slowly or strangely the guest answers.".into(),
        "no-repeated-side-effects" => "A command that changes the guest is never sent twice for one call.".into(),
        "bounded-memory" => "The client's memory stays bounded whatever the guest sends.".into(),
        other => format!("The client meets the duty {other}."),
    }
}

/// Draws case `index` of the campaign `seed`.
pub fn draw(seed: u64, index: u64) -> Draft {
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut steps = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let (execute, arguments, _) = COMMANDS[rng.random_range(0..COMMANDS.len())];
        steps.push(DraftStep {
            execute: execute.to_owned(),
            arguments: arguments.map(|a| serde_json::from_str(a).expect("valid arguments")),
            timeout_ms: rng.random_range(3..=15) * 100,
        });
    }
    let mut faults = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let target = if rng.random_bool(0.3) {
            SYNC_COMMANDS[rng.random_range(0..SYNC_COMMANDS.len())].to_owned()
        } else {
            steps[rng.random_range(0..steps.len())].execute.clone()
        };
        let nth = rng.random_range(1..=2);
        let mut action = ACTIONS[rng.random_range(0..ACTIONS.len())].to_owned();
        while let Some(at) = action.find("{}") {
            let n: u64 = rng.random_range(1..=20) * 50;
            action.replace_range(at..at + 2, &n.to_string());
        }
        let spec = format!("{target}#{nth}:{action}");
        if crate::fault::parse_spec(&spec).is_ok() {
            faults.push(spec);
        }
    }
    Draft { steps, faults }
}

/// What the simulated guest answers to each step, run in order on a fresh default guest.
fn true_returns(steps: &[DraftStep]) -> Vec<Option<Json>> {
    let mut dispatcher = Dispatcher::new(AgentConfig::default());
    let mut guest = Guest::new(Profile::default_linux());
    steps
        .iter()
        .map(|step| {
            let mut request = json!({ "execute": step.execute });
            if let Some(arguments) = &step.arguments {
                request["arguments"] = arguments.clone();
            }
            let item = Parsed::Value(Value::from_serde(&request));
            let reply = dispatcher.dispatch(item, &mut guest).reply?;
            let reply: Json = serde_json::from_slice(&reply).ok()?;
            reply.get("return").cloned()
        })
        .collect()
}

impl Draft {
    /// The scenario file of this case.
    pub fn scenario(&self, id: &str, kind: Option<&str>) -> Json {
        let returns = true_returns(&self.steps);
        let steps: Vec<Json> = self
            .steps
            .iter()
            .zip(returns)
            .map(|(step, value)| {
                let mut expect = Vec::new();
                if let Some(value) = value {
                    expect.push(json!({ "return": value }));
                }
                expect.push(json!({"client-error": {"class": "Any"}}));
                let mut out = json!({
                    "execute": step.execute,
                    "timeout_ms": step.timeout_ms,
                    "expect": expect,
                });
                if let Some(arguments) = &step.arguments {
                    out["arguments"] = arguments.clone();
                }
                out
            })
            .collect();
        let requirement = kind.map_or_else(
            || "The client survives a drawn hostile guest.".to_owned(),
            requirement,
        );
        json!({
            "id": id,
            "title": format!("Found by a fuzzing campaign: {}", kind.unwrap_or("drawn case")),
            "requirement": requirement,
            "grounding": ["a hostile guest drawn by `qga-harness fuzz` from the fault model"],
            "tags": ["fuzz"],
            "agent": { "faults": self.faults },
            "steps": steps,
            "duties": DUTIES,
        })
    }

    fn loaded(&self, id: &str, kind: Option<&str>) -> Option<LoadedCase> {
        let text = serde_json::to_string_pretty(&self.scenario(id, kind)).ok()?;
        let path = PathBuf::from(format!("{id}.json"));
        let scenario = Scenario::parse(&text, &path).ok()?;
        Some(LoadedCase { path, scenario })
    }
}

/// The kinds of failure a case result shows (empty when it passed), judged with `wire`,
/// the agent's ground truth of the run.
///
/// A step whose answer is not the value the campaign computed in advance is a wrong
/// result only when the agent never wrote that answer to a request of the step's command:
/// faults change replies (an error in place of a return, a restart between a timed-out
/// command and the next, which moves a handle number on), and a client that returns
/// exactly what the agent answered its request is right whatever the prediction said. An
/// answer the agent wrote to another request is the judge's `no-stale-attribution`.
pub fn kinds(result: &CaseResult, wire: &Wire) -> Vec<String> {
    let mut kinds = Vec::new();
    if result.verdict != Verdict::Fail || result.error.is_some() {
        return kinds;
    }
    for step in &result.run.steps {
        if let Answer::Broken { why, .. } = &step.answer {
            let kind = match why {
                BrokenKind::Crashed => "crash",
                BrokenKind::Hung => "hang",
                BrokenKind::Exited => "exited",
                BrokenKind::Malformed => "malformed-answer",
                BrokenKind::NotFound | BrokenKind::Spawn => continue,
            };
            kinds.push(kind.to_owned());
        }
    }
    if let Some(judgement) = &result.judgement {
        for finding in &judgement.findings {
            if finding.severity != Severity::Fail {
                continue;
            }
            if let Some(duty) = finding.subject.strip_prefix("duty ") {
                kinds.push(duty.to_owned());
            } else if finding.subject.starts_with("step ") {
                let index = finding
                    .subject
                    .trim_start_matches("step ")
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0);
                let Some(step) = result.run.steps.iter().find(|s| s.index + 1 == index) else {
                    continue;
                };
                if matches!(
                    step.answer,
                    Answer::Return { .. } | Answer::AgentError { .. }
                ) && !agent_wrote(wire, &step.execute, &step.answer)
                {
                    kinds.push("wrong-result".to_owned());
                }
            }
        }
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

/// True when the agent wrote `answer` as its reply to a request for `execute` (the
/// transcript's reply records say which request each output answers).
fn agent_wrote(wire: &Wire, execute: &str, answer: &Answer) -> bool {
    wire.replies.iter().any(|reply| {
        let Some(request) = reply.answers().and_then(|n| wire.item(n)) else {
            return false;
        };
        if request.execute() != Some(execute) {
            return false;
        }
        let Some(value) = &reply.value else {
            return false;
        };
        match answer {
            Answer::Return { value: returned } => {
                value.get("error").is_none() && value.get("return") == Some(returned)
            }
            Answer::AgentError { class, desc } => {
                let error = value.get("error");
                error.and_then(|e| e.get("class")).and_then(|c| c.as_str()) == Some(class.as_str())
                    && error.and_then(|e| e.get("desc")).and_then(|d| d.as_str())
                        == Some(desc.as_str())
            }
            _ => false,
        }
    })
}

/// Runs `case` and reads the kinds it shows from its result and its transcript (kept in
/// `work` only as long as it is read).
async fn judged(case: &LoadedCase, options: &RunOptions, work: &Path) -> (CaseResult, Vec<String>) {
    let mut options = options.clone();
    if options.artifacts.is_none() {
        options.artifacts = Some(work.to_owned());
    }
    let result = run_case(case, &options).await;
    let wire = result
        .transcript
        .as_deref()
        .and_then(|path| Wire::read(path).ok())
        .unwrap_or_default();
    if options.artifacts.as_deref() == Some(work) {
        if let Some(path) = &result.transcript {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(path.with_extension("client.txt"));
        }
    }
    let kinds = kinds(&result, &wire);
    (result, kinds)
}

/// What a campaign is given.
pub struct Campaign {
    pub options: RunOptions,
    pub seed: u64,
    pub cases: Option<u64>,
    pub duration: Option<Duration>,
    pub out: PathBuf,
    /// Stop once the first kind is found (and written): the time to the first finding.
    pub stop_at_first: bool,
}

/// One kind found.
#[derive(Clone, Debug)]
pub struct KindFound {
    pub kind: String,
    /// Cases that showed it.
    pub count: u64,
    /// The minimal scenario written for it.
    pub file: Option<PathBuf>,
    /// Of three reruns of the minimal scenario, how many showed the kind again.
    pub reproduced: u32,
    /// The first case number that showed it.
    pub first_case: u64,
    /// Campaign time when that case ended (before its minimisation).
    pub first_after: Duration,
}

/// Progress and the final summary.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub cases: u64,
    pub elapsed: Duration,
    /// Cases the harness itself could not run.
    pub harness_errors: u64,
    pub kinds: BTreeMap<String, KindFound>,
    /// Time the harness spent outside the client processes, summed over cases.
    pub harness_time: Duration,
}

impl Summary {
    pub fn line(&self) -> String {
        let rate = self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let kinds: Vec<String> = self
            .kinds
            .values()
            .map(|k| format!("{}×{}", k.kind, k.count))
            .collect();
        format!(
            "{} cases ({rate:.1}/s), {} kinds found{}{}",
            self.cases,
            self.kinds.len(),
            if kinds.is_empty() { "" } else { ": " },
            kinds.join(", ")
        )
    }
}

async fn shows(campaign: &Campaign, draft: &Draft, kind: &str, id: &str, work: &Path) -> bool {
    let Some(case) = draft.loaded(id, Some(kind)) else {
        return false;
    };
    let (_, kinds) = judged(&case, &campaign.options, work).await;
    kinds.iter().any(|k| k == kind)
}

/// Greedy delta debugging: drops fault rules, then steps, then shortens numbers in the
/// rules, keeping each change that still shows `kind`.
async fn minimise(
    campaign: &Campaign,
    mut draft: Draft,
    kind: &str,
    id: &str,
    work: &Path,
) -> Draft {
    let mut i = 0;
    while i < draft.faults.len() {
        let mut candidate = draft.clone();
        candidate.faults.remove(i);
        if shows(campaign, &candidate, kind, id, work).await {
            draft = candidate;
        } else {
            i += 1;
        }
    }
    let mut i = 0;
    while draft.steps.len() > 1 && i < draft.steps.len() {
        let mut candidate = draft.clone();
        candidate.steps.remove(i);
        if shows(campaign, &candidate, kind, id, work).await {
            draft = candidate;
        } else {
            i += 1;
        }
    }
    // Bytes: each number of each rule halved while the kind still shows.
    for f in 0..draft.faults.len() {
        for _ in 0..4 {
            let Some(smaller) = halve_numbers(&draft.faults[f]) else {
                break;
            };
            if crate::fault::parse_spec(&smaller).is_err() {
                break;
            }
            let mut candidate = draft.clone();
            candidate.faults[f] = smaller;
            if !shows(campaign, &candidate, kind, id, work).await {
                break;
            }
            draft = candidate;
        }
    }
    draft
}

/// The spec with every number after the trigger halved, or `None` when none changes.
fn halve_numbers(spec: &str) -> Option<String> {
    let (trigger, action) = spec.split_once(':')?;
    let mut out = String::new();
    let mut digits = String::new();
    let mut changed = false;
    let flush = |digits: &mut String, out: &mut String, changed: &mut bool| {
        if let Ok(n) = digits.parse::<u64>() {
            let half = (n / 2).max(1);
            *changed |= half != n;
            out.push_str(&half.to_string());
        }
        digits.clear();
    };
    for c in action.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out, &mut changed);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out, &mut changed);
    changed.then(|| format!("{trigger}:{out}"))
}

/// Runs the campaign until `cases`, `duration` or `stop` ends it; `progress` sees the
/// summary after every case. Findings are written as they are found, so an interrupted
/// campaign keeps them.
pub async fn run(
    campaign: &Campaign,
    mut progress: impl FnMut(&Summary),
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<Summary> {
    std::fs::create_dir_all(&campaign.out)?;
    // Each case's transcript, read for its ground truth and removed.
    let work = tempfile::Builder::new().prefix("qga-fuzz-").tempdir()?;
    let work = work.path();
    let started = Instant::now();
    let mut summary = Summary::default();
    tokio::pin!(stop);
    let mut index = 0u64;
    loop {
        if campaign.cases.is_some_and(|n| index >= n)
            || campaign.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        let draft = draw(campaign.seed, index);
        let id = format!("fuzz.{}", index + 1);
        let Some(case) = draft.loaded(&id, None) else {
            index += 1;
            continue;
        };
        let case_started = Instant::now();
        let (result, found) = tokio::select! {
            biased;
            () = &mut stop => break,
            judged = judged(&case, &campaign.options, work) => judged,
        };
        // The client's own time is what it took to answer each step.
        let client_time: Duration = result
            .run
            .steps
            .iter()
            .map(|s| Duration::from_micros(s.elapsed_us))
            .sum();
        summary.harness_time += case_started.elapsed().saturating_sub(client_time);
        summary.cases += 1;
        if result.error.is_some() {
            summary.harness_errors += 1;
        }
        let found_after = started.elapsed();
        for kind in found {
            if let Some(found) = summary.kinds.get_mut(&kind) {
                found.count += 1;
                continue;
            }
            let minimal = tokio::select! {
                biased;
                () = &mut stop => draft.clone(),
                minimal = minimise(campaign, draft.clone(), &kind, &id, work) => minimal,
            };
            let ordinal = summary.kinds.len() + 1;
            let mut found = write_finding(campaign, &minimal, &kind, index, ordinal, work).await?;
            found.first_after = found_after;
            summary.kinds.insert(kind, found);
        }
        index += 1;
        if campaign.stop_at_first && !summary.kinds.is_empty() {
            break;
        }
        summary.elapsed = started.elapsed();
        progress(&summary);
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Writes the minimal scenario of `kind` and its transcript, after three reruns.
async fn write_finding(
    campaign: &Campaign,
    draft: &Draft,
    kind: &str,
    index: u64,
    ordinal: usize,
    work: &Path,
) -> std::io::Result<KindFound> {
    // Unique within the output directory, so the findings run together.
    let id = format!("fuzz.{}.{ordinal}", index + 1);
    let file = campaign.out.join(format!("{kind}.json"));
    let text = serde_json::to_string_pretty(&draft.scenario(&id, Some(kind)))?;
    std::fs::write(&file, format!("{text}\n"))?;
    let mut reproduced = 0;
    let artifacts = campaign.out.join(format!("{kind}.artifacts"));
    for attempt in 0..3 {
        let mut options = campaign.options.clone();
        if attempt == 2 {
            std::fs::create_dir_all(&artifacts)?;
            options.artifacts = Some(artifacts.clone());
        }
        let scenario = Scenario::parse(&text, &file).map_err(std::io::Error::other)?;
        let case = LoadedCase {
            path: file.clone(),
            scenario,
        };
        let (_, kinds) = judged(&case, &options, work).await;
        if kinds.iter().any(|k| k == kind) {
            reproduced += 1;
        }
    }
    Ok(KindFound {
        kind: kind.to_owned(),
        count: 1,
        file: Some(file),
        reproduced,
        first_case: index + 1,
        first_after: Duration::ZERO,
    })
}

/// The campaign's output directory relative to the current one, for messages.
pub fn shown(path: &Path) -> String {
    path.display().to_string()
}
