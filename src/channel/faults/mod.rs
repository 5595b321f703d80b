//! Carrying out fault rules: one [`FaultHub`] per mock holds the rules, the seeded random
//! source and what faults need to remember (earlier sync ids, the previous reply); the
//! agent process asks it at each event what to do, as a [`Plan`].
//!
//! Events fire at three points:
//! - a request, before it is dispatched (by the agent process);
//! - a connect, when a client is accepted (by the channel: the chardev or qemu-ga's own
//!   socket); its plan is queued and carried out by the agent as soon as it is idle, like
//!   anything else the agent writes, so a dead or hung agent carries it out when it runs
//!   again;
//! - a start, when an agent process starts (by the process, before it reads).
//!
//! Every rule that fires is recorded in the transcript with the request's sequence number.

mod out;
mod plan;
mod replies;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::fault::{
    Action, Context, Distribution, EventKind, FaultEngine, Fired, Rule, RuleId, SpuriousKind,
};
use crate::AgentLife;

use crate::transcript::writer::Transcript;

pub(crate) use out::{Out, PIECE};
pub(crate) use plan::{Chunking, Injected, Plan};
pub(crate) use replies::{RequestInfo, SyncRequest};

/// How many sync requests are remembered for stale sync replies.
const SYNC_HISTORY: usize = 16;

/// The largest reply kept for `spurious=duplicate`; a larger one is not repeated.
const KEPT_REPLY: usize = 64 * 1024;

/// Connect plans waiting for an agent that does not run; older ones are dropped beyond
/// this, so a client that reconnects in a loop cannot grow the queue.
const QUEUED_EVENTS: usize = 64;

/// A rule as listed: its id, the rule, and how often it fired.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedRule {
    pub id: RuleId,
    pub rule: Rule,
    pub fired: u64,
}

/// A rule that cannot be carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(String);

impl From<crate::fault::SpecError> for RuleError {
    fn from(e: crate::fault::SpecError) -> Self {
        RuleError(e.to_string())
    }
}

/// Checks what the rule's types cannot say (see [`Rule::check`]).
pub(crate) fn check_rule(rule: &Rule) -> Result<(), RuleError> {
    rule.check().map_err(RuleError)
}

/// Where the numbers a plan draws come from: the engine's seeded source, and memory.
struct HubDraws<'a> {
    engine: &'a mut FaultEngine,
    syncs: &'a VecDeque<SyncRequest>,
    previous_reply: Option<&'a [u8]>,
}

impl plan::Draws for HubDraws<'_> {
    fn delay(&mut self, ms: u64, jitter_ms: u64, distribution: Distribution) -> Duration {
        self.engine.draw_delay(ms, jitter_ms, distribution)
    }

    fn number(&mut self) -> u64 {
        self.engine.draw_u64()
    }

    fn earlier_sync(&self) -> Option<SyncRequest> {
        self.syncs.back().copied()
    }

    fn previous_reply(&self) -> Option<&[u8]> {
        self.previous_reply
    }
}

#[derive(Debug)]
struct HubState {
    engine: FaultEngine,
    connected_at: Option<Instant>,
    syncs: VecDeque<SyncRequest>,
    previous_reply: Option<Vec<u8>>,
    events: VecDeque<Plan>,
}

/// The faults of one mock.
#[derive(Debug)]
pub(crate) struct FaultHub {
    state: Mutex<HubState>,
    /// Any rule loaded: while false, events cost one atomic load.
    armed: AtomicBool,
    /// Some rule can kill the agent before it reads a request, so the agent keeps the raw
    /// bytes of what it has not handled yet.
    raw_input: AtomicBool,
    /// Some rule repeats the previous reply (`spurious=duplicate`), so it is kept.
    keeps_replies: AtomicBool,
    /// The highest request number handled so far by any agent process of the mock (the
    /// numbers are the process's, see `process.rs`).
    requests: AtomicU64,
    origin: Instant,
    /// The emulated qemu-ga echoes request ids (from 4.0).
    echo_id: bool,
    life: AgentLife,
    transcript: Mutex<Option<Transcript>>,
    event_ready: Notify,
}

impl FaultHub {
    /// A hub with these rules (checked by the caller), seeded with `seed`.
    pub(crate) fn new(
        seed: u64,
        rules: Vec<Rule>,
        echo_id: bool,
        life: AgentLife,
        origin: Instant,
    ) -> FaultHub {
        let mut engine = FaultEngine::new(seed);
        for rule in rules {
            engine.add(rule);
        }
        let hub = FaultHub {
            state: Mutex::new(HubState {
                engine,
                connected_at: None,
                syncs: VecDeque::new(),
                previous_reply: None,
                events: VecDeque::new(),
            }),
            armed: AtomicBool::new(false),
            raw_input: AtomicBool::new(false),
            keeps_replies: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            origin,
            echo_id,
            life,
            transcript: Mutex::new(None),
            event_ready: Notify::new(),
        };
        hub.rearm(&hub.lock());
        hub
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rearm(&self, state: &HubState) {
        self.armed
            .store(!state.engine.is_empty(), Ordering::Release);
        let any = |wanted: fn(&Action) -> bool| {
            state
                .engine
                .list()
                .any(|(_, rule, _)| rule.actions.iter().any(wanted))
        };
        let raw = any(|a| matches!(a, Action::DieBeforeRead));
        self.raw_input.store(raw, Ordering::Release);
        let keeps = any(|a| {
            matches!(
                a,
                Action::Spurious {
                    kind: SpuriousKind::Duplicate,
                    ..
                }
            )
        });
        self.keeps_replies.store(keeps, Ordering::Release);
    }

    fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    fn attach_transcript(&self, transcript: Option<Transcript>) {
        *self
            .transcript
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = transcript;
    }

    fn record(&self, event: &'static str, fields: serde_json::Map<String, serde_json::Value>) {
        let transcript = self
            .transcript
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(transcript) = transcript.as_ref() {
            transcript.fields(event, fields);
        }
    }

    fn record_fired(&self, fired: &[Fired], on: EventKind, extra: &[(&str, serde_json::Value)]) {
        for f in fired {
            let mut fields = serde_json::Map::new();
            fields.insert("rule".into(), f.rule.into());
            fields.insert(
                "on".into(),
                serde_json::to_value(on).unwrap_or(serde_json::Value::Null),
            );
            fields.insert(
                "actions".into(),
                f.actions
                    .iter()
                    .map(Action::name)
                    .collect::<Vec<_>>()
                    .into(),
            );
            for (key, value) in extra {
                fields.insert((*key).to_owned(), value.clone());
            }
            self.record("fault", fields);
        }
    }

    fn context<'a>(&self, state: &HubState, command: &'a str) -> Context<'a> {
        let now = Instant::now();
        let channel = self.life.channel_status();
        Context {
            command,
            since_start: now.saturating_duration_since(self.origin),
            since_connect: state
                .connected_at
                .map(|at| now.saturating_duration_since(at)),
            bytes_in: channel.bytes_in,
            bytes_out: channel.bytes_out,
        }
    }

    fn compile(state: &mut HubState, fired: &[Fired], info: &RequestInfo) -> Plan {
        let HubState {
            engine,
            syncs,
            previous_reply,
            ..
        } = state;
        let mut draws = HubDraws {
            engine,
            syncs,
            previous_reply: previous_reply.as_deref(),
        };
        let actions = fired
            .iter()
            .flat_map(|f| f.actions.iter().map(move |a| (f.rule, a)));
        plan::compile(actions, info, &mut draws)
    }

    /// A request is about to be dispatched: what to do instead, if any rule fires.
    /// `command` is its `execute` name; `info` builds what the reply needs to know.
    pub(crate) fn on_request(
        &self,
        sequence: u64,
        command: Option<&str>,
        sync: Option<SyncRequest>,
        info: impl FnOnce(bool) -> RequestInfo,
    ) -> Option<(Plan, RequestInfo)> {
        self.requests.fetch_max(sequence, Ordering::Relaxed);
        if !self.is_armed() {
            if let Some(sync) = sync {
                remember_sync(&mut self.lock(), sync);
            }
            return None;
        }
        let mut state = self.lock();
        let name = command.unwrap_or("");
        let fired = if state.engine.may_fire(EventKind::Request, name) {
            let context = self.context(&state, name);
            state.engine.on_event(EventKind::Request, &context)
        } else {
            Vec::new()
        };
        if fired.is_empty() {
            if let Some(sync) = sync {
                remember_sync(&mut state, sync);
            }
            return None;
        }
        let info = info(self.echo_id);
        let plan = Self::compile(&mut state, &fired, &info);
        if let Some(sync) = sync {
            remember_sync(&mut state, sync);
        }
        drop(state);
        let command = serde_json::Value::from(command.unwrap_or(""));
        self.record_fired(
            &fired,
            EventKind::Request,
            &[("request", sequence.into()), ("command", command)],
        );
        Some((plan, info))
    }

    /// An agent process starts: what it does first, if any rule fires.
    pub(crate) fn on_start(&self) -> Option<Plan> {
        if !self.is_armed() {
            return None;
        }
        let mut state = self.lock();
        let context = self.context(&state, "");
        let fired = state.engine.on_event(EventKind::Start, &context);
        if fired.is_empty() {
            return None;
        }
        let plan = Self::compile(&mut state, &fired, &RequestInfo::default());
        drop(state);
        self.record_fired(&fired, EventKind::Start, &[]);
        Some(plan)
    }

    /// A client was accepted: its connection's clock starts, and what connect rules fire
    /// is queued for the agent.
    pub(crate) fn connected(&self, conn: u64) {
        let mut state = self.lock();
        state.connected_at = Some(Instant::now());
        if !self.is_armed() {
            return;
        }
        let context = self.context(&state, "");
        let fired = state.engine.on_event(EventKind::Connect, &context);
        if fired.is_empty() {
            return;
        }
        let mut plan = Self::compile(&mut state, &fired, &RequestInfo::default());
        plan.conn = Some(conn);
        if state.events.len() >= QUEUED_EVENTS {
            state.events.pop_front();
        }
        state.events.push_back(plan);
        drop(state);
        self.record_fired(&fired, EventKind::Connect, &[("conn", conn.into())]);
        self.event_ready.notify_one();
    }

    pub(crate) fn disconnected(&self) {
        self.lock().connected_at = None;
    }

    /// The next queued connect plan.
    pub(crate) fn take_event(&self) -> Option<Plan> {
        self.lock().events.pop_front()
    }

    /// Completes when a connect plan may have been queued.
    pub(crate) async fn event_ready(&self) {
        self.event_ready.notified().await;
    }

    /// The agent wrote this reply (kept while a `spurious=duplicate` rule is loaded).
    pub(crate) fn wrote_reply(&self, reply: &[u8]) {
        if self.keeps_replies.load(Ordering::Acquire) && reply.len() <= KEPT_REPLY {
            self.lock().previous_reply = Some(reply.to_vec());
        }
    }

    pub(crate) fn tracks_raw_input(&self) -> bool {
        self.raw_input.load(Ordering::Acquire)
    }

    // ---- run-time control -----------------------------------------------------------

    pub(crate) fn seed(&self) -> u64 {
        self.lock().engine.seed()
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Adds a rule at run time; it takes part from the next event on.
    pub(crate) fn add(&self, rule: Rule) -> Result<RuleId, RuleError> {
        check_rule(&rule)?;
        let mut state = self.lock();
        let id = state.engine.add(rule.clone());
        self.rearm(&state);
        drop(state);
        let mut fields = serde_json::Map::new();
        fields.insert("rule".into(), id.into());
        fields.insert(
            "definition".into(),
            serde_json::to_value(&rule).unwrap_or_default(),
        );
        self.record("rule-added", fields);
        Ok(id)
    }

    /// Removes a rule; false when there is none with that id.
    pub(crate) fn remove(&self, id: RuleId) -> bool {
        let mut state = self.lock();
        let removed = state.engine.remove(id);
        self.rearm(&state);
        drop(state);
        if removed {
            let mut fields = serde_json::Map::new();
            fields.insert("rule".into(), id.into());
            self.record("rule-removed", fields);
        }
        removed
    }

    /// Removes every rule; returns how many there were.
    pub(crate) fn clear(&self) -> usize {
        let mut state = self.lock();
        let count = state.engine.list().count();
        state.engine.clear();
        self.rearm(&state);
        drop(state);
        let mut fields = serde_json::Map::new();
        fields.insert("removed".into(), count.into());
        self.record("rules-cleared", fields);
        count
    }

    pub(crate) fn list(&self) -> Vec<ListedRule> {
        self.lock()
            .engine
            .list()
            .map(|(id, rule, fired)| ListedRule {
                id,
                rule: rule.clone(),
                fired,
            })
            .collect()
    }
}

/// Records fired rules in a transcript until dropped. The hub outlives the serving (the
/// mock's handle keeps it), but the transcript's writer waits for every handle to go.
pub(crate) struct Recording(std::sync::Arc<FaultHub>);

impl Recording {
    pub(crate) fn attach(hub: std::sync::Arc<FaultHub>, transcript: Option<Transcript>) -> Self {
        hub.attach_transcript(transcript);
        Recording(hub)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.0.attach_transcript(None);
    }
}

/// Changes a running mock's fault rules (what the control socket does, from code).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use qga_harness::{fault, MockAgent};
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// // Arrange
/// let dir = tempfile::tempdir()?;
/// let mock = MockAgent::builder().start_in(dir.path()).await?;
/// let id = mock.faults().add(fault::parse_spec("guest-ping:return=5")?)?;
///
/// // Act
/// let mut client = tokio::net::UnixStream::connect(mock.socket_path()).await?;
/// client.write_all(br#"{"execute":"guest-ping","id":1}"#).await?;
/// let mut reply = String::new();
/// BufReader::new(client).read_line(&mut reply).await?;
///
/// // Assert
/// assert_eq!(reply, "{\"return\": 5, \"id\": 1}\n");
/// assert_eq!(mock.faults().list()[0].fired, 1);
/// assert!(mock.faults().remove(id));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct FaultControl(pub(crate) std::sync::Arc<FaultHub>);

impl FaultControl {
    /// Adds a rule; it takes part from the next event on. Returns its id.
    pub fn add(&self, rule: Rule) -> Result<RuleId, RuleError> {
        self.0.add(rule)
    }

    /// Removes a rule; false when there is none with that id.
    pub fn remove(&self, id: RuleId) -> bool {
        self.0.remove(id)
    }

    /// Removes every rule; returns how many there were.
    pub fn clear(&self) -> usize {
        self.0.clear()
    }

    /// The rules, in the order they were added, with how often each fired.
    #[must_use]
    pub fn list(&self) -> Vec<ListedRule> {
        self.0.list()
    }

    /// The seed of the mock's random source.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.0.seed()
    }

    /// Requests the agent handled so far, over all its processes.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.0.requests()
    }
}

fn remember_sync(state: &mut HubState, sync: SyncRequest) {
    if state.syncs.len() >= SYNC_HISTORY {
        state.syncs.pop_front();
    }
    state.syncs.push_back(sync);
}

/// A rule that fires on every request of `command` (used by tests).
#[cfg(test)]
pub(crate) fn on_command(command: &str, actions: Vec<Action>) -> Rule {
    Rule {
        when: crate::fault::Trigger {
            command: Some(command.to_owned()),
            ..crate::fault::Trigger::default()
        },
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::parse_spec;

    fn hub(rules: &[&str]) -> FaultHub {
        let (life, _inbox) = crate::channel::life_channel(crate::AgentState::NotStarted);
        let rules = rules.iter().map(|s| parse_spec(s).expect("spec")).collect();
        FaultHub::new(5, rules, true, life, Instant::now())
    }

    fn sync(id: i64) -> SyncRequest {
        SyncRequest {
            id,
            delimited: false,
        }
    }

    #[tokio::test]
    async fn an_idle_hub_only_counts_and_remembers_syncs() {
        let hub = hub(&[]);
        assert!(hub
            .on_request(1, Some("guest-sync"), Some(sync(3)), |_| {
                RequestInfo::default()
            })
            .is_none());
        assert_eq!(hub.requests(), 1);
        hub.add(parse_spec("guest-ping:spurious=stale-sync").expect("spec"))
            .expect("add");
        let (plan, _) = hub
            .on_request(2, Some("guest-ping"), None, |_| RequestInfo::default())
            .expect("fires");
        assert_eq!(
            plan.before[0].out.clone().into_vec(),
            b"{\"return\": 3}\n".to_vec()
        );
    }

    #[tokio::test]
    async fn rules_can_be_listed_removed_and_cleared() {
        let hub = hub(&["guest-ping:hang", "connect:close-client"]);
        let listed = hub.list();
        assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2]);
        assert!(hub.remove(1));
        assert!(!hub.remove(1));
        assert!(hub
            .on_request(3, Some("guest-ping"), None, |_| RequestInfo::default())
            .is_none());
        hub.connected(1);
        assert!(hub.take_event().is_some_and(|p| p.close_client));
        assert_eq!(hub.clear(), 1);
        assert!(!hub.is_armed());
    }

    #[tokio::test]
    async fn die_before_read_rules_ask_for_raw_input() {
        let hub = hub(&["guest-ping:delay=1ms"]);
        assert!(!hub.tracks_raw_input());
        let id = hub
            .add(on_command("guest-ping", vec![Action::DieBeforeRead]))
            .expect("add");
        assert!(hub.tracks_raw_input());
        hub.remove(id);
        assert!(!hub.tracks_raw_input());
    }
}
