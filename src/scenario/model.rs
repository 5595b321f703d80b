//! The scenario file model (JSON). One file is one case: what the agent is and does
//! (`agent`), what the client is asked to do (`steps`), and what counts as right
//! (`expect`, `non_strict`, `duties`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::channel::{StartState, Transport};
use crate::fault::Rule;

/// One conformance case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Stable hierarchical id, `category.number` (e.g. `sync.3`); never reused for another case.
    pub id: String,
    pub title: String,
    /// What a correct client must do, in plain words.
    pub requirement: String,
    /// Where the requirement comes from: a source line, a bug report, a reference note.
    #[serde(default)]
    pub grounding: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The agent side: the mock's profile, transport, state and faults.
    #[serde(default)]
    pub agent: AgentSetup,
    /// What the client is asked to do, in order, on one connection (session mode) or one
    /// process per step (oneshot mode).
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Duties checked on the wire, beyond the outcomes: a miss is a FAIL.
    #[serde(default)]
    pub duties: Vec<Duty>,
    /// Duties that are recommended rather than required: a miss makes the case NON-STRICT.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recommended: Vec<Duty>,
    /// The steps only make sense on one connection (a late reply to one step arriving
    /// during the next): a oneshot client, one process per step, cannot express the case,
    /// and its verdict is UNSUPPORTED.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_connection: bool,
    /// Another client the harness itself connects to the agent's socket before the first
    /// step: it writes its lines, keeps the channel for a while and hangs up, so the client
    /// under test connects while the channel serves someone else and gets what the agent
    /// writes after that client left. Its requests are its own, never the tested client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_client: Option<OtherClient>,
    /// Why this case exists when it only records behaviour: its verdict is INFO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// Why no mutant of the reference client (one deliberate bug each) FAILs this case:
    /// what it guards that the mutants do not model. Every other case must kill one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_mutant: Option<String>,
    /// Where the case races the clock (a restart, a delay or a retry against a timeout
    /// with little margin), and what a loaded machine may change in its verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing_sensitive: Option<String>,
}

/// A connection the harness holds beside the client under test (see
/// [`Scenario::other_client`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtherClient {
    /// Lines written at once after connecting, each followed by a newline.
    pub lines: Vec<String>,
    /// How long the connection is kept after connecting, in ms; then it is closed without
    /// reading anything (what it was sent is lost with it, as with a client that left).
    pub hold_ms: u64,
}

/// Where the guest's data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProfileSource {
    /// `"default"` for the built-in Linux guest, or a profile file's path, relative to the
    /// scenario file.
    Named(String),
    /// A whole profile, inline.
    Inline(serde_json::Map<String, serde_json::Value>),
}

/// The agent side of a case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSetup {
    /// The simulated guest (default: the built-in Linux guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileSource>,
    #[serde(default)]
    pub transport: Transport,
    /// Overrides the profile's agent version, e.g. `"3.1.0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Commands blocked as with qemu-ga `-b`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_rpcs: Vec<String>,
    /// When set, only these commands are enabled, as with qemu-ga `-a`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_rpcs: Option<Vec<String>>,
    /// The seed of the mock's random source (the runner's `--seed` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub state: StartState,
    /// Fault rules: JSON rules or compact `--fault` specs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultEntry>,
}

/// A fault rule, as JSON or as a compact spec string.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum FaultEntry {
    /// A compact spec, e.g. `"guest-ping@2:hang"`.
    Spec(String),
    Rule(Rule),
}

/// One thing the client is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub execute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
    /// The client's timeout for this step, in ms.
    pub timeout_ms: u64,
    /// Acceptable outcomes: the step passes when any matches.
    pub expect: Vec<Outcome>,
    /// Outcomes that are acceptable but miss a recommendation: NON-STRICT.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_strict: Vec<Outcome>,
}

/// What a step ended with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Outcome {
    /// Exactly this return value.
    Return(serde_json::Value),
    /// A return value that contains these members (recursively for objects).
    ReturnContains(serde_json::Value),
    /// A return value of this JSON type.
    ReturnType(JsonType),
    /// An error from the agent.
    Error(ErrorOutcome),
    /// A failure of the client itself, within time bounds.
    ClientError(ClientErrorOutcome),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JsonType {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

/// An agent error: its class, and optionally text its desc contains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorOutcome {
    pub class: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc_contains: Option<String>,
}

/// The client's own failure classes (see the adapter contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ClientErrorClass {
    Timeout,
    Disconnected,
    Protocol,
    /// Any of the three.
    Any,
}

/// A client-side failure, optionally bounded in time (elapsed since the step started).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientErrorOutcome {
    pub class: ClientErrorClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
}

/// Duties checked from the transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Duty {
    /// A guest-sync or guest-sync-delimited before the first command of a connection.
    SyncFirst,
    /// A sync after every timeout, before the next command.
    SyncAfterTimeout,
    /// Sync ids that are not predictable (not small, not sequential, not a clock).
    UnpredictableSyncIds,
    /// A 0xFF flush before guest-sync-delimited.
    FlushBeforeSync,
    /// No reply is attributed to a command it did not answer.
    NoStaleAttribution,
    /// Every step ends within its timeout plus a small grace.
    TotalDeadline,
    /// The client's memory stays bounded on huge replies.
    BoundedMemory,
    /// guest-exec, guest-file-write and the like are not sent again after a timeout.
    NoRepeatedSideEffects,
}

impl Duty {
    /// Every duty, in the order reports list them.
    pub const ALL: [Duty; 8] = [
        Duty::SyncFirst,
        Duty::SyncAfterTimeout,
        Duty::UnpredictableSyncIds,
        Duty::FlushBeforeSync,
        Duty::NoStaleAttribution,
        Duty::TotalDeadline,
        Duty::BoundedMemory,
        Duty::NoRepeatedSideEffects,
    ];

    /// The duty's name as written in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Duty::SyncFirst => "sync-first",
            Duty::SyncAfterTimeout => "sync-after-timeout",
            Duty::UnpredictableSyncIds => "unpredictable-sync-ids",
            Duty::FlushBeforeSync => "flush-before-sync",
            Duty::NoStaleAttribution => "no-stale-attribution",
            Duty::TotalDeadline => "total-deadline",
            Duty::BoundedMemory => "bounded-memory",
            Duty::NoRepeatedSideEffects => "no-repeated-side-effects",
        }
    }
}

impl<'de> Deserialize<'de> for FaultEntry {
    /// Hand-written so that a rule object's own error (an unknown field, a wrong type)
    /// reaches the user instead of serde's "did not match any variant".
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(spec) => Ok(FaultEntry::Spec(spec)),
            value @ serde_json::Value::Object(_) => serde_json::from_value(value)
                .map(FaultEntry::Rule)
                .map_err(|e| D::Error::custom(e.to_string())),
            other => Err(D::Error::custom(format!(
                "expected a fault rule object or a compact spec string, found {other}"
            ))),
        }
    }
}
