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
//! are counted, by cause: what the client said when it failed (`cause`). The first case
//! of each cause is written as drawn, so one kind that hides several bugs shows each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

use crate::agent::{AgentConfig, Dispatcher};
use crate::guest::{Guest, Profile};
use crate::runner::{
    run_case, Answer, BrokenKind, CaseResult, LoadedCase, RunOptions, Severity, StepRecord,
    Verdict, Wire,
};
use crate::scenario::Scenario;
use crate::wire::{Parsed, Value};

/// Commands a case draws alone, with their arguments.
const COMMANDS: &[(&str, Option<&str>)] = &[
    ("guest-ping", None),
    ("guest-get-host-name", None),
    ("guest-get-osinfo", None),
    ("guest-get-timezone", None),
    ("guest-get-users", None),
    ("guest-get-vcpus", None),
    ("guest-fsfreeze-status", None),
    (
        "guest-file-open",
        Some(r#"{"path": "/etc/hostname", "mode": "r"}"#),
    ),
    // An unknown command: the agent's error has its own class (CommandNotFound), which a
    // client must report as it is.
    ("guest-invalid-cmd", None),
];

/// The fault actions a case draws from, as `--fault` text with `{}` for a drawn number:
/// every action of the `--fault` syntax that leaves the VM running (`vm-exit` ends the
/// case's guest; a no-reply command is drawn on its own below), in families drawn with
/// equal weight (timing, framing, the agent's life, the connection, others' replies, sync
/// ids, garbage, size, reply shapes), so a family of many variants does not crowd out one
/// of few.
const ACTION_FAMILIES: &[&[&str]] = &[
    &[
        "delay={}ms",
        "hang",
        "hang=nonblocking",
        "drip=1/{}ms",
        "stop-reading={}ms",
    ],
    &["slice={}", "coalesce"],
    &[
        "die-before-read,restart={}ms",
        "die-after-read,restart={}ms",
        "die-mid-reply={},restart={}ms",
    ],
    &["close-client"],
    &[
        "spurious=stale-sync",
        "spurious=duplicate/after",
        "spurious=other-command",
        "spurious=unknown-id",
        "spurious=event",
        "duplicate",
        "swap",
    ],
    &[
        "wrong-sync-id=other",
        "wrong-sync-id=string",
        "wrong-sync-id=float",
        "wrong-sync-id=off-by-one",
        "wrong-sync-id=truncate32",
    ],
    &[
        "garbage=text",
        "garbage=invalid-utf8",
        "garbage=nul",
        "garbage=ff",
        "garbage=half-object",
        "garbage=crlf",
        "garbage=ff-prefix",
    ],
    // Size: a reply too big to buffer whole, one nested too deep, one that never ends
    // (a flood for as long as the client stays connected; only a buffer cap bounds the
    // client's memory).
    &[
        "oversize=1",
        "oversize=1/no-newline",
        "nesting-bomb=100000",
        "flood",
    ],
    &[
        "error=GenericError/'drawn'",
        "error-not-object='\"drawn\"'",
        "return-and-error",
        "neither",
    ],
];

/// Which occurrences of its command a rule fires on, each form as likely: the first, the
/// first two, the second only, or every one (a fault that keeps coming back, as on every
/// sync).
const TRIGGER_MODIFIERS: &[&str] = &["#1", "#2", "@2", ""];

/// Lines a hostile guest writes besides its replies (the catalogue's hostile cases): an
/// error without an id, lines that are not objects, an event whose string holds a 0xFF,
/// a reply with a duplicate member, raw UTF-8, and replies that look like sync replies to
/// small, guessable ids.
const RAW_LINES: &[&[u8]] = &[
    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray 'x'\"}}\n",
    b"42\n",
    b"[]\n",
    b"\"text\"\n",
    b"{\"event\": \"GUEST_NOTE\", \"data\": {\"text\": \"\xff\"}}\n",
    b"{\"return\": {\"host-name\": \"vm\"}, \"return\": {\"host-name\": \"forged\"}}\n",
    "{\"return\": {\"host-name\": \"h\u{f4}te-\u{20ac}\"}}\n".as_bytes(),
    b"\xff{\"return\": 0}\n",
    b"\xff{\"return\": 1}\n",
    b"{\"return\": 2}\n",
    b"{\"return\": 4294967295}\n",
    b"{\"return\": {}, \"id\": \"old\"}\n",
    b"{\"return\": {\"host-name\": \"stale\"}}\n",
];

/// Hostile values of exec-status and file-read replies: not exited yet, a signal, the
/// truncation flags, members of the wrong type, invalid base64, a count that does not
/// match, an empty read that is not the end.
const EXEC_STATUS_RETURNS: &[&str] = &[
    r#"{"exited": false}"#,
    r#"{"exited": true, "signal": 9}"#,
    r#"{"exited": true, "exitcode": 0, "out-data": "aGkK", "out-truncated": true}"#,
    r#"{"exited": "yes", "exitcode": "0"}"#,
    r#"{"exited": true, "exitcode": 0, "out-data": "aG!kK"}"#,
];
const FILE_READ_RETURNS: &[&str] = &[
    r#"{"count": 3, "buf-b64": "!!!!", "eof": false}"#,
    r#"{"count": 10, "buf-b64": "aGkK", "eof": true}"#,
    r#"{"count": 0, "buf-b64": "", "eof": false}"#,
];

/// Whole replies a hostile guest writes in place of the agent's, to a request of an agent
/// before 4.0 (its replies carry no id, so a client takes the line as the answer): a
/// member named twice, raw UTF-8, numbers no agent writes (beyond the double range,
/// beyond 64 bits). A correct client reports the value exactly as sent or fails.
const REPLY_LINES: &[&[u8]] = &[
    b"{\"return\": {\"host-name\": \"vm\"}, \"return\": {\"host-name\": \"forged\"}}\n",
    "{\"return\": {\"host-name\": \"h\u{f4}te-\u{20ac}-\u{1f600}\"}}\n".as_bytes(),
    b"{\"return\": 1e400}\n",
    b"{\"return\": 18446744073709551616}\n",
    b"{\"return\": [1, 2], \"return\": {}}\n",
];

/// Where faults fire besides the steps' own commands.
const SYNC_COMMANDS: &[&str] = &["guest-sync-delimited", "guest-sync"];

const DUTIES: &[&str] = &[
    "no-stale-attribution",
    "unpredictable-sync-ids",
    "total-deadline",
    "no-repeated-side-effects",
    "bounded-memory",
];

/// A drawn case, in the pieces minimisation removes or simplifies.
#[derive(Clone, Debug, Default)]
pub struct Draft {
    pub steps: Vec<DraftStep>,
    /// Fault rules: `--fault` specs (strings) or rule objects of the scenario format.
    pub faults: Vec<Json>,
    /// The agent's state at the start (`pending_output`, `parser_input`, `start_delay_ms`).
    pub state: Option<Json>,
    /// An older agent (one that echoes no id).
    pub version: Option<String>,
    /// Another transport than virtio-serial.
    pub transport: Option<String>,
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
        "needless-failure" => "A call the guest answers in time returns that answer: stale output at connect, half a request left in the agent's parser, an older agent or a reply slower than a twentieth of the timeout are no reason to fail it.".into(),
        "crash" => "The client survives any guest output: it never dies from a signal.".into(),
        "hang" => "The client answers every call within its timeout, whatever the guest does.".into(),
        "exited" => "The client answers every call (a value or an error) instead of exiting before it answers.".into(),
        "malformed-answer" => "The client reports every call's outcome in its adapter's format.".into(),
        "no-stale-attribution" => "A reply is taken only for the request it answers: stale, duplicate, spurious or foreign replies are discarded.".into(),
        "total-deadline" => "A call ends within its total deadline, however slowly or strangely the guest answers.".into(),
        "no-repeated-side-effects" => "A command that changes the guest is never sent twice for one call.".into(),
        "unpredictable-sync-ids" => "Sync ids cannot be guessed by the guest (no small numbers, counters or clock readings): a reply forged in advance must not complete a handshake.".into(),
        "bounded-memory" => "The client's memory stays bounded whatever the guest sends.".into(),
        other => format!("The client meets the duty {other}."),
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn parse_json(text: &str) -> Json {
    serde_json::from_str(text).expect("a valid built-in value")
}

/// A rule object of the scenario format: `actions` on the first `command`.
fn rule(command: &str, actions: Json) -> Json {
    json!({ "when": { "command": command, "times": 1 }, "do": actions })
}

/// Raw bytes as the scenario format carries them: text when it is UTF-8, else base64.
fn raw_bytes(bytes: &[u8]) -> Json {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

/// Draws case `index` of the campaign `seed`.
pub fn draw(seed: u64, index: u64) -> Draft {
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut steps: Vec<DraftStep> = Vec::new();
    let timeout = |rng: &mut StdRng| rng.random_range(3..=15) * 100;
    for _ in 0..rng.random_range(1..=3) {
        match rng.random_range(0..10) {
            // A command and the status or read that follows it.
            0 | 1 => {
                steps.push(DraftStep {
                    execute: "guest-exec".into(),
                    arguments: Some(
                        json!({"path": "/bin/echo", "arg": ["hi"], "capture-output": true}),
                    ),
                    timeout_ms: timeout(&mut rng),
                });
                steps.push(DraftStep {
                    execute: "guest-exec-status".into(),
                    arguments: Some(json!({"pid": 0})),
                    timeout_ms: timeout(&mut rng),
                });
            }
            2 | 3 => {
                steps.push(DraftStep {
                    execute: "guest-file-open".into(),
                    arguments: Some(json!({"path": "/etc/hostname", "mode": "r"})),
                    timeout_ms: timeout(&mut rng),
                });
                steps.push(DraftStep {
                    execute: "guest-file-read".into(),
                    arguments: Some(json!({"handle": 0, "count": 64})),
                    timeout_ms: timeout(&mut rng),
                });
            }
            _ => {
                let (execute, arguments) = pick(&mut rng, COMMANDS);
                steps.push(DraftStep {
                    execute: execute.to_owned(),
                    arguments: arguments.map(parse_json),
                    timeout_ms: timeout(&mut rng),
                });
            }
        }
    }
    // A no-reply command ends some cases (the guest powers off after it).
    if rng.random_bool(0.1) {
        steps.push(DraftStep {
            execute: "guest-shutdown".into(),
            arguments: None,
            timeout_ms: rng.random_range(15..=30) * 100,
        });
    }
    let mut draft = Draft {
        steps,
        ..Draft::default()
    };
    // An agent before 4.0 echoes no id: its replies can be replaced by lines of the
    // guest's own, which a client takes as the answer.
    if rng.random_bool(0.25) {
        draft.version = Some("3.1.0".into());
    }
    draft.resolve_handles();
    for _ in 0..rng.random_range(0..=3) {
        let target = if rng.random_bool(0.3) {
            pick(&mut rng, SYNC_COMMANDS).to_owned()
        } else {
            draft.steps[rng.random_range(0..draft.steps.len())]
                .execute
                .clone()
        };
        if target == "guest-shutdown" {
            // An agent that dies or a connection that closes on a shutdown looks to every
            // client like the shutdown itself; only the dropped shutdown below is fair.
            continue;
        }
        let fault = match rng.random_range(0..10) {
            // Bytes of its own before or after the reply, sometimes in the same write.
            0..=2 => Some(raw_rule(&mut rng, &target)),
            // A hostile reply in place of the agent's.
            3 | 4 => hostile_reply(&mut rng, &draft),
            // A reply slow enough to matter, well within the timeout.
            5 => draft
                .steps
                .iter()
                .find(|s| s.execute == target)
                .map(|step| {
                    let ms = step.timeout_ms * rng.random_range(8..=25) / 100;
                    json!(format!("{target}#1:delay={ms}ms"))
                }),
            _ => None,
        };
        let fault = fault.or_else(|| {
            let modifier = pick(&mut rng, TRIGGER_MODIFIERS);
            let family = pick(&mut rng, ACTION_FAMILIES);
            let mut action = pick(&mut rng, family).to_owned();
            while let Some(at) = action.find("{}") {
                let n: u64 = rng.random_range(1..=20) * 50;
                action.replace_range(at..at + 2, &n.to_string());
            }
            let spec = format!("{target}{modifier}:{action}");
            crate::fault::parse_spec(&spec).is_ok().then(|| json!(spec))
        });
        draft.faults.extend(fault);
    }
    if rng.random_bool(0.1) {
        // A no-reply command dropped by the agent while the VM stays up.
        if draft.steps.iter().any(|s| s.execute == "guest-shutdown") {
            draft.faults.push(json!("guest-shutdown:hang"));
        }
    }
    draft.state = match rng.random_range(0..10) {
        0 | 1 => {
            let mut output = Vec::new();
            for _ in 0..rng.random_range(1..=3) {
                output.extend_from_slice(pick(&mut rng, RAW_LINES));
            }
            Some(json!({ "pending_output": raw_bytes(&output) }))
        }
        2 => Some(json!({ "parser_input": "{\"execute\":\"guest-ping\",\"arguments\":{" })),
        3 => Some(json!({ "start_delay_ms": rng.random_range(1..=16) * 50 })),
        _ => None,
    };
    if draft.version.is_some() {
        // Without ids, a line the agent writes besides its replies after the sync reply
        // cannot be told from the reply by any client, so such faults are not drawn with
        // an older agent (stale output before the sync still is).
        draft.faults.retain(|fault| !adds_lines(fault));
    }
    if rng.random_bool(0.4) {
        // Where a closed connection is seen as such (on virtio-serial the host's end stays
        // open whatever the guest does).
        draft.transport = Some("unix-listen".into());
    }
    draft
}

/// A rule that writes one of [`RAW_LINES`] before or after the reply to `target`; half
/// the time in the same write as the reply (coalesced), where a parser that scans the
/// bytes in hand sees both at once.
fn raw_rule(rng: &mut StdRng, target: &str) -> Json {
    let mut raw = raw_bytes(pick(rng, RAW_LINES));
    raw["action"] = json!("raw");
    let after = rng.random_bool(0.5);
    raw["position"] = json!(if after { "after" } else { "before" });
    let mut actions = Vec::new();
    if after && rng.random_bool(0.5) {
        actions.push(json!({ "action": "coalesce", "count": 2 }));
    }
    actions.push(raw);
    rule(target, json!(actions))
}

/// A hostile reply in place of the agent's: one of the hostile values of a status or read
/// step when the case has one, or, from an agent before 4.0, one of [`REPLY_LINES`] on a
/// step's command. `None` when the case has neither.
fn hostile_reply(rng: &mut StdRng, draft: &Draft) -> Option<Json> {
    let valued: Vec<&str> = draft
        .steps
        .iter()
        .map(|s| s.execute.as_str())
        .filter(|c| matches!(*c, "guest-exec-status" | "guest-file-read"))
        .collect();
    let old_agent = draft.version.is_some();
    // Without a status or read step, or half the time from an older agent: a whole line.
    let whole_line = valued.is_empty() || (old_agent && rng.random_bool(0.5));
    if !whole_line {
        let command = pick(rng, &valued);
        let values = if command == "guest-exec-status" {
            EXEC_STATUS_RETURNS
        } else {
            FILE_READ_RETURNS
        };
        let value = parse_json(pick(rng, values));
        return Some(rule(
            command,
            json!([{ "action": "return", "value": value }]),
        ));
    }
    if !old_agent {
        return None;
    }
    let answered: Vec<&str> = draft
        .steps
        .iter()
        .map(|s| s.execute.as_str())
        .filter(|c| *c != "guest-shutdown")
        .collect();
    if answered.is_empty() {
        return None;
    }
    let command = pick(rng, &answered);
    let mut raw = raw_bytes(pick(rng, REPLY_LINES));
    raw["action"] = json!("raw");
    raw["position"] = json!("replace");
    Some(rule(command, json!([raw])))
}

/// The guest agent of a draft, as the case's mock is configured (its version).
fn dispatcher(version: Option<&str>) -> Dispatcher {
    let mut config = AgentConfig::default();
    if let Some(version) = version.and_then(|v| v.parse().ok()) {
        config.version = version;
    }
    Dispatcher::new(config)
}

/// One request through the agent: its reply, parsed.
fn dispatch(dispatcher: &mut Dispatcher, guest: &mut Guest, step: &DraftStep) -> Option<Json> {
    let mut request = json!({ "execute": step.execute });
    if let Some(arguments) = &step.arguments {
        request["arguments"] = arguments.clone();
    }
    let item = Parsed::Value(Value::from_serde(&request));
    let reply = dispatcher.dispatch(item, guest).reply?;
    serde_json::from_slice(&reply).ok()
}

/// What the simulated guest answers to each step (its reply), run in order on a fresh
/// default guest.
fn true_replies(draft: &Draft) -> Vec<Option<Json>> {
    let mut dispatcher = dispatcher(draft.version.as_deref());
    let mut guest = Guest::new(Profile::default_linux());
    draft
        .steps
        .iter()
        .map(|step| dispatch(&mut dispatcher, &mut guest, step))
        .collect()
}

/// What a fault does to the timing or the framing of a reply only, or beside it: a
/// correct client still gets its answer in time. Lines of the guest's own before or
/// after the reply are harmless to an agent that echoes ids (they carry none of the
/// client's), unless a 0xFF inside one, ahead of the step's reply, starts a frame that
/// swallows what follows (lines after a sync reply come ahead of the command's).
fn harmless(fault: &Json, timeout_ms: u64, echoes_ids: bool, on_sync: bool) -> bool {
    let Some(spec) = fault.as_str() else {
        return echoes_ids && raw_beside_reply(fault, on_sync);
    };
    let Some((_, action)) = spec.split_once(':') else {
        return false;
    };
    if let Some(ms) = action
        .strip_prefix("delay=")
        .and_then(|v| v.strip_suffix("ms"))
        .and_then(|v| v.parse::<u64>().ok())
    {
        return ms * 4 <= timeout_ms;
    }
    action.starts_with("slice=") || action == "coalesce"
}

/// Whether a rule object only writes raw lines after the step's reply, or ahead of it
/// without a 0xFF past their first byte (and coalesces). On a sync, every line it writes
/// comes ahead of the step's reply.
fn raw_beside_reply(fault: &Json, on_sync: bool) -> bool {
    let Some(actions) = fault["do"].as_array() else {
        return false;
    };
    actions
        .iter()
        .all(|action| match action["action"].as_str() {
            Some("coalesce") => true,
            Some("raw") => match action["position"].as_str() {
                Some("after") if !on_sync => true,
                Some("before" | "after") => raw_of(action).iter().skip(1).all(|&b| b != 0xFF),
                _ => false,
            },
            _ => false,
        })
}

/// The bytes of a raw action (its text or its base64).
fn raw_of(action: &Json) -> Vec<u8> {
    use base64::Engine;
    if let Some(text) = action["text"].as_str() {
        return text.as_bytes().to_vec();
    }
    action["base64"]
        .as_str()
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .unwrap_or_default()
}

/// Whether a fault writes lines besides the agent's replies, or another request's reply.
fn adds_lines(fault: &Json) -> bool {
    match fault.as_str() {
        Some(spec) => spec.split_once(':').is_some_and(|(_, action)| {
            ["spurious", "duplicate", "return-and-error", "swap"]
                .iter()
                .any(|a| action.starts_with(a))
        }),
        None => fault["do"].as_array().is_some_and(|actions| {
            actions.iter().any(|action| {
                action["action"] == "raw"
                    && matches!(action["position"].as_str(), Some("before" | "after"))
            })
        }),
    }
}

/// Whether a fault leaves the agent dead, stopped, busy or gone for a while, so that the
/// calls after the one it hits may fail too.
fn spoils_later_calls(fault: &Json, timeout_ms: u64) -> bool {
    let Some(spec) = fault.as_str() else {
        // Raw lines and scripted values leave the agent well; but a 0xFF inside a line
        // starts a new frame for a client, and the rest of that line may cost it the next
        // call too (as the catalogue's sync.17 allows).
        return raw_has_ff(fault);
    };
    let Some((_, action)) = spec.split_once(':') else {
        return true;
    };
    if action.starts_with("delay=") {
        return !harmless(fault, timeout_ms, true, false);
    }
    action == "hang"
        || [
            "die-",
            "restart",
            "stop-reading",
            "drip",
            "vm-exit",
            "oversize",
            "nesting-bomb",
            // An endless reply runs on until the client hangs up; a call that timed out
            // before its client's line cap may leave the next one reading the flood
            // (the catalogue's hostile.6 holds a client to hanging up, with 2 s to do it).
            "flood",
            // Output that runs into the next line, or a 0xFF in the middle of one.
            "garbage=half-object",
            "garbage=ff",
        ]
        .iter()
        .any(|a| action.starts_with(a))
}

/// Whether a rule object writes raw bytes with a 0xFF among them.
fn raw_has_ff(fault: &Json) -> bool {
    fault["do"]
        .as_array()
        .is_some_and(|actions| actions.iter().any(|action| raw_of(action).contains(&0xFF)))
}

/// The command a fault rule fires on (`None`: any, or an event).
fn fault_command(fault: &Json) -> Option<String> {
    match fault {
        Json::String(spec) => {
            let trigger = spec.split_once(':')?.0;
            Some(trigger.split(['#', '@', '*']).next()?.to_owned())
        }
        other => other["when"]["command"].as_str().map(str::to_owned),
    }
}

impl Draft {
    /// Points each exec-status at the pid of the guest-exec before it, and each file-read
    /// at the handle of the file-open before it, as the simulated guest numbers them.
    fn resolve_handles(&mut self) {
        let mut dispatcher = dispatcher(self.version.as_deref());
        let mut guest = Guest::new(Profile::default_linux());
        let (mut pid, mut handle) = (None, None);
        for step in &mut self.steps {
            match (step.execute.as_str(), &mut step.arguments) {
                ("guest-exec-status", Some(arguments)) => {
                    if let Some(pid) = pid {
                        arguments["pid"] = json!(pid);
                    }
                }
                ("guest-file-read", Some(arguments)) => {
                    if let Some(handle) = handle {
                        arguments["handle"] = json!(handle);
                    }
                }
                _ => {}
            }
            let reply = dispatch(&mut dispatcher, &mut guest, step);
            let returned = reply.as_ref().and_then(|r| r.get("return"));
            match step.execute.as_str() {
                "guest-exec" => pid = returned.and_then(|r| r["pid"].as_u64()),
                "guest-file-open" => handle = returned.and_then(Json::as_u64),
                _ => {}
            }
        }
    }

    /// Whether a correct client may fail step `index` (a client error): a fault that is
    /// not harmless fires on its command, on a sync, or on an earlier step's command (which
    /// may leave the agent dead, restarting or behind), or the agent starts late. Stale
    /// output, half a request in the parser, an older agent and another transport are no
    /// excuse: a correct client gets its answer through them.
    fn may_fail(&self, index: usize) -> bool {
        let step = &self.steps[index];
        let fault_hits = self.faults.iter().any(|fault| {
            let Some(command) = fault_command(fault) else {
                return true;
            };
            let on_sync = SYNC_COMMANDS.contains(&command.as_str());
            if command == step.execute || on_sync {
                let echoes_ids = self.version.is_none();
                return !harmless(fault, step.timeout_ms, echoes_ids, on_sync);
            }
            // A fault on an earlier step's command spoils this one only when it leaves the
            // agent dead, stopped or busy; after stale, garbled or missing output on another
            // call (or a closed connection, which a client reopens), this call must work.
            self.steps[..index]
                .iter()
                .any(|s| s.execute == command && spoils_later_calls(fault, s.timeout_ms))
        });
        // Until the agent starts, a virtio-serial channel takes the bytes and leaves them
        // unanswered (a step ends at its timeout); a listening socket does not exist yet
        // (a step may end at once), so every step may come before the start.
        let started_late = self
            .state
            .as_ref()
            .and_then(|s| s["start_delay_ms"].as_u64())
            .is_some_and(|delay| {
                let before: u64 = self.steps[..index].iter().map(|s| s.timeout_ms).sum();
                self.transport.is_some() || before <= delay + 500
            });
        // A no-reply command is done when the guest goes away; a short timeout may end
        // before the agent's shutdown is seen.
        fault_hits || started_late || step.execute == "guest-shutdown"
    }

    /// The scenario file of this case.
    pub fn scenario(&self, id: &str, kind: Option<&str>) -> Json {
        let mut replies = true_replies(self);
        // A value the agent is made to return in place of its own is the answer a correct
        // client reports (or refuses): the first request of its command gets it.
        for fault in &self.faults {
            let Some(value) = fault["do"].as_array().and_then(|actions| {
                actions
                    .iter()
                    .find(|a| a["action"] == "return")
                    .map(|a| a["value"].clone())
            }) else {
                continue;
            };
            let command = fault_command(fault);
            if let Some(index) = self
                .steps
                .iter()
                .position(|s| Some(&s.execute) == command.as_ref())
            {
                replies[index] = Some(json!({ "return": value }));
            }
        }
        let steps: Vec<Json> = self
            .steps
            .iter()
            .zip(replies)
            .enumerate()
            .map(|(index, (step, reply))| {
                let mut expect = Vec::new();
                let dropped = step.execute == "guest-shutdown"
                    && self
                        .faults
                        .iter()
                        .any(|f| f.as_str() == Some("guest-shutdown:hang"));
                match reply {
                    Some(reply) => {
                        if let Some(value) = reply.get("return") {
                            expect.push(json!({ "return": value }));
                        } else if let Some(class) = reply["error"]["class"].as_str() {
                            expect.push(json!({ "error": { "class": class } }));
                        }
                    }
                    // No reply: done when the guest shuts down, unless the agent dropped it.
                    None if !dropped => expect.push(json!({ "return": {} })),
                    None => {}
                }
                if dropped || self.may_fail(index) {
                    expect.push(json!({"client-error": {"class": "Any"}}));
                }
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
        let mut agent = json!({ "faults": self.faults });
        if let Some(state) = &self.state {
            agent["state"] = state.clone();
        }
        if let Some(version) = &self.version {
            agent["version"] = json!(version);
        }
        if let Some(transport) = &self.transport {
            agent["transport"] = json!(transport);
        }
        json!({
            "id": id,
            "title": format!("Found by a fuzzing campaign: {}", kind.unwrap_or("drawn case")),
            "requirement": requirement,
            "grounding": ["a hostile guest drawn by `qga-harness fuzz` from the fault model"],
            "tags": ["fuzz"],
            "agent": agent,
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
        let duties = judgement
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .filter_map(|f| f.subject.strip_prefix("duty "));
        kinds.extend(duties.map(str::to_owned));
    }
    for step in failed_steps(result) {
        match step.answer {
            Answer::Return { .. } | Answer::AgentError { .. }
                if !agent_wrote(wire, &step.execute, &step.answer) =>
            {
                kinds.push("wrong-result".to_owned());
            }
            // The case allows a client error only where the drawn guest gives a correct
            // client a reason to fail.
            Answer::ClientError { .. } => kinds.push("needless-failure".to_owned()),
            _ => {}
        }
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

/// The steps the judge FAILed, in the order of its findings (a step finding's subject is
/// `step N (COMMAND)`).
pub(super) fn failed_steps(result: &CaseResult) -> impl Iterator<Item = &StepRecord> {
    result
        .judgement
        .iter()
        .flat_map(|judgement| &judgement.findings)
        .filter(|f| f.severity == Severity::Fail)
        .filter_map(|f| f.subject.strip_prefix("step "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .filter_map(|number| result.run.steps.iter().find(|s| s.index + 1 == number))
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
        // A reply no single value stands for: whatever a client made of it, the agent did
        // not write that value.
        let Some(value) = reply.value.as_ref().filter(|_| !reply.ambiguous) else {
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

/// The kinds of failure `draft` shows with the client of `options`, run once as a
/// campaign runs its cases (empty when it passed).
pub async fn kinds_of(draft: &Draft, options: &RunOptions) -> std::io::Result<Vec<String>> {
    let work = tempfile::Builder::new().prefix("qga-fuzz-").tempdir()?;
    let case = draft
        .loaded("fuzz.1", None)
        .ok_or_else(|| std::io::Error::other("the draft is not a valid scenario"))?;
    Ok(judged(&case, options, work.path()).await.1)
}

/// What a campaign is given.
pub struct Campaign {
    pub options: RunOptions,
    pub seed: u64,
    pub cases: Option<u64>,
    pub duration: Option<Duration>,
    pub out: PathBuf,
    /// Stop once a kind is found whose minimal scenario showed it again in at least one of
    /// its three reruns: the time to the first finding that reproduces (a flag that does
    /// not, such as a deadline missed under load, does not end the search).
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
    /// Its number among the kinds, in the order found (its scenarios' ids are
    /// `fuzz.CASE.ORDINAL` and, per cause, `fuzz.CASE.ORDINAL.N`).
    pub ordinal: usize,
    /// The causes its cases showed, in the order first seen (at most
    /// `MAX_CAUSES_PER_KIND`; empty for a kind whose finding names its own cause).
    pub causes: Vec<CauseFound>,
    /// Cases of causes past that bound.
    pub other_causes: u64,
}

/// One cause behind a kind: what the client said (`cause::cause`).
#[derive(Clone, Debug)]
pub struct CauseFound {
    pub cause: String,
    /// Cases that showed it.
    pub count: u64,
    /// The first case number that showed it.
    pub first_case: u64,
    /// That case as drawn, not minimised: `KIND.causes/N.json`.
    pub file: PathBuf,
}

/// Causes kept per kind; a client that words each failure differently cannot fill the
/// output directory.
const MAX_CAUSES_PER_KIND: usize = 32;

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

/// Greedy delta debugging: drops fault rules, then the agent's state, version and
/// transport, then steps, then shortens numbers in the rules, keeping each change that
/// still shows `kind`.
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
    for drop in [
        (|d: &mut Draft| d.state.take().is_some()) as fn(&mut Draft) -> bool,
        |d| d.version.take().is_some(),
        |d| d.transport.take().is_some(),
    ] {
        let mut candidate = draft.clone();
        if drop(&mut candidate) && shows(campaign, &candidate, kind, id, work).await {
            draft = candidate;
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
            let Some(smaller) = draft.faults[f].as_str().and_then(halve_numbers) else {
                break;
            };
            if crate::fault::parse_spec(&smaller).is_err() {
                break;
            }
            let mut candidate = draft.clone();
            candidate.faults[f] = Json::String(smaller);
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
            let cause = super::cause::cause(&result, &kind);
            if let Some(found) = summary.kinds.get_mut(&kind) {
                found.count += 1;
                count_cause(campaign, found, cause, &draft, index)?;
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
            count_cause(campaign, &mut found, cause, &draft, index)?;
            summary.kinds.insert(kind, found);
        }
        index += 1;
        if campaign.stop_at_first && summary.kinds.values().any(|k| k.reproduced > 0) {
            break;
        }
        summary.elapsed = started.elapsed();
        progress(&summary);
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Counts the case `index` (drawn as `draft`) under its cause in `found`; the first case
/// of a cause is written, as drawn, to `KIND.causes/N.json`, its title naming the cause.
fn count_cause(
    campaign: &Campaign,
    found: &mut KindFound,
    cause: Option<String>,
    draft: &Draft,
    index: u64,
) -> std::io::Result<()> {
    let Some(cause) = cause else {
        return Ok(());
    };
    if let Some(seen) = found.causes.iter_mut().find(|c| c.cause == cause) {
        seen.count += 1;
        return Ok(());
    }
    if found.causes.len() == MAX_CAUSES_PER_KIND {
        found.other_causes += 1;
        return Ok(());
    }
    let dir = campaign.out.join(format!("{}.causes", found.kind));
    std::fs::create_dir_all(&dir)?;
    let ordinal = found.causes.len() + 1;
    let file = dir.join(format!("{ordinal}.json"));
    // Unique within the output directory, beside the minimal scenarios.
    let id = format!("fuzz.{}.{}.{ordinal}", index + 1, found.ordinal);
    let mut scenario = draft.scenario(&id, Some(&found.kind));
    let title = format!(
        "{}, cause: {cause}",
        scenario["title"].as_str().unwrap_or("")
    );
    scenario["title"] = json!(title);
    let text = serde_json::to_string_pretty(&scenario)?;
    std::fs::write(&file, format!("{text}\n"))?;
    found.causes.push(CauseFound {
        cause,
        count: 1,
        first_case: index + 1,
        file,
    });
    Ok(())
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
        ordinal,
        causes: Vec::new(),
        other_causes: 0,
    })
}

/// The campaign's output directory relative to the current one, for messages.
pub fn shown(path: &Path) -> String {
    path.display().to_string()
}
