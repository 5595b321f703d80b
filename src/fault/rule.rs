//! The fault model: a rule is a trigger (`when`) and the actions it fires (`do`).
//!
//! The same model is written in a scenario file's `agent.faults` (JSON, below) and in the
//! compact `--fault` syntax (see [`super::spec`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One fault rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// When the rule fires. An empty trigger matches every request.
    #[serde(default)]
    pub when: Trigger,
    /// What happens, in order, when it fires.
    #[serde(rename = "do")]
    pub actions: Vec<Action>,
}

/// The agent-side event a trigger listens to.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The agent is about to handle a request it parsed (the default).
    #[default]
    Request,
    /// A host client was accepted.
    Connect,
    /// The agent process started (at first start and after each restart).
    Start,
}

/// Where a time condition counts from.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Since {
    /// The mock's start.
    #[default]
    Start,
    /// The current client's connection.
    Connect,
}

/// When a rule fires. Every condition given must hold; counts (`nth`, `every`, `from`)
/// count the events that match `event` and `command`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    #[serde(default)]
    pub event: EventKind,
    /// A command name, exact or a glob with `*` and `?` (requests only). A request that is
    /// not an object with a string `execute` has the name `""`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Only the nth matching event (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth: Option<u64>,
    /// Only from the nth matching event on (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Only every k-th matching event (k, 2k, 3k, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Fires with this probability, drawn from the mock's seeded random source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Only once this many milliseconds have passed since `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    /// Only before this many milliseconds have passed since `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_ms: Option<u64>,
    #[serde(default)]
    pub since: Since,
    /// Only once the agent has read at least this many bytes in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_bytes_in: Option<u64>,
    /// Only once the agent has written at least this many bytes in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_bytes_out: Option<u64>,
    /// Fires at most this many times (`1`: once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
}

/// How a delay's random part is drawn.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Uniform in `[0, jitter_ms]`.
    #[default]
    Uniform,
    /// Exponential with mean `jitter_ms`, capped at ten times the mean.
    Exponential,
}

/// How long the agent stays down after it dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Stays dead (until started over the control socket).
    Never,
    /// Restarts after this many milliseconds.
    #[serde(untagged)]
    AfterMs(u64),
}

/// Which unsolicited reply a `spurious` action writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SpuriousKind {
    /// A guest-sync reply with an id the client used earlier (or a made-up old one).
    StaleSync,
    /// A copy of the previous reply the agent wrote.
    Duplicate,
    /// The reply another command would get (`{"return": {}}` of a ping).
    OtherCommand,
    /// A reply with an `id` the client never sent.
    UnknownId,
    /// An object shaped like a QMP event.
    Event,
}

/// Before or after the real reply.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Position {
    #[default]
    Before,
    After,
}

/// How a sync reply's id is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WrongId {
    /// Another number.
    Other,
    /// The same number as a string.
    String,
    /// The same number as a float (`5.0`).
    Float,
    /// One more than asked.
    OffByOne,
    /// Truncated to its low 32 bits.
    Truncate32,
}

/// What garbage replaces (or, for `crlf` and `ff-prefix`, deforms) the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Garbage {
    /// A line of text that is not JSON.
    Text,
    /// A line with invalid UTF-8 in a string.
    InvalidUtf8,
    /// NUL bytes.
    Nul,
    /// A stray 0xFF byte before the reply.
    Ff,
    /// The first half of the reply, then a newline.
    HalfObject,
    /// The reply with `\r\n` instead of `\n`.
    Crlf,
    /// The reply prefixed with 0xFF, as if it answered guest-sync-delimited.
    FfPrefix,
}

/// What a fired rule does. Reply actions act on the reply to the request that fired them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", tag = "action")]
pub enum Action {
    // --- timing ---
    /// Wait before writing the reply. The agent is single-threaded: later requests wait too.
    /// The delay is `ms` plus a random part of scale `jitter_ms` drawn from the seeded source.
    Delay {
        ms: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        jitter_ms: u64,
        #[serde(default)]
        distribution: Distribution,
    },
    /// Never answer. With `block` (the default) the agent hangs as qemu-ga does in a stuck
    /// command: later requests queue behind it until a restart.
    Hang {
        #[serde(default = "default_true")]
        block: bool,
    },
    /// Write the reply `bytes` at a time, one chunk every `interval_ms`.
    Drip { bytes: usize, interval_ms: u64 },
    /// Write the reply in chunks of these sizes (the last size repeats).
    Slice { sizes: Vec<usize> },
    /// Hold replies until `count` are ready, then write them in one write.
    Coalesce { count: usize },

    // --- life ---
    /// The agent dies before it reads the request; the request stays in the channel.
    DieBeforeRead,
    /// The agent dies after reading the request, which is never answered.
    DieAfterRead,
    /// The agent dies after writing `bytes` of its reply (a truncated prefix, no newline).
    DieMidReply { bytes: usize },
    /// After dying (or, alone, after replying), the agent is down this long, or for good.
    Restart { after: Restart },
    /// The VM exits: the channel closes and the client reads EOF.
    VmExit,
    /// The current client connection is closed (the agent lives on).
    CloseClient,
    /// The agent stops reading input for `ms` (for good when absent): backpressure.
    StopReading {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
    },

    // --- replies ---
    /// An unsolicited reply, before or after the real one.
    Spurious {
        kind: SpuriousKind,
        #[serde(default)]
        position: Position,
    },
    /// A guest-sync(-delimited) reply whose id is wrong.
    WrongSyncId { kind: WrongId },
    /// The reply is written twice.
    Duplicate,
    /// The reply is held back and written after the next reply.
    Swap,
    /// Garbage instead of (or around) the reply.
    Garbage { kind: Garbage },
    /// A reply of `mib` MiB (a huge string return), with or without the final newline.
    Oversize {
        mib: usize,
        #[serde(default = "default_true")]
        newline: bool,
    },
    /// A reply that never ends: a string return without end or newline, written for as
    /// long as the connection it answers stays connected (a hostile guest sees the host
    /// leave: the port's writes block while no host is connected) and stopped when it
    /// goes, so the next client is not flooded.
    Flood,
    /// A reply whose return value nests `depth` arrays deep.
    NestingBomb { depth: usize },
    /// The reply returns this value instead (with the request's id).
    Return { value: serde_json::Value },
    /// An error reply with this class and desc (with the request's id).
    Error { class: String, desc: String },
    /// `{"error": VALUE}` where the value is not an object.
    ErrorNotObject { value: serde_json::Value },
    /// A reply with both `return` and `error`.
    ReturnAndError,
    /// A reply with neither `return` nor `error`.
    Neither,
    /// An (unwanted) `{"return": {}}` for a command that must not reply.
    ReplyToNoReply,
    /// No reply at all, as a third-party agent that does not know the command.
    NoReply,
    /// These exact bytes instead of the reply (`text`, or `base64` for any bytes).
    Raw {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
        #[serde(default)]
        position: RawPosition,
    },
}

/// Where raw bytes go.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RawPosition {
    /// Instead of the reply.
    #[default]
    Replace,
    Before,
    After,
}

fn default_true() -> bool {
    true
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Action {
    /// The action's name, as written in a spec or a scenario.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Delay { .. } => "delay",
            Action::Hang { .. } => "hang",
            Action::Drip { .. } => "drip",
            Action::Slice { .. } => "slice",
            Action::Coalesce { .. } => "coalesce",
            Action::DieBeforeRead => "die-before-read",
            Action::DieAfterRead => "die-after-read",
            Action::DieMidReply { .. } => "die-mid-reply",
            Action::Restart { .. } => "restart",
            Action::VmExit => "vm-exit",
            Action::CloseClient => "close-client",
            Action::StopReading { .. } => "stop-reading",
            Action::Spurious { .. } => "spurious",
            Action::WrongSyncId { .. } => "wrong-sync-id",
            Action::Duplicate => "duplicate",
            Action::Swap => "swap",
            Action::Garbage { .. } => "garbage",
            Action::Oversize { .. } => "oversize",
            Action::Flood => "flood",
            Action::NestingBomb { .. } => "nesting-bomb",
            Action::Return { .. } => "return",
            Action::Error { .. } => "error",
            Action::ErrorNotObject { .. } => "error-not-object",
            Action::ReturnAndError => "return-and-error",
            Action::Neither => "neither",
            Action::ReplyToNoReply => "reply-to-no-reply",
            Action::NoReply => "no-reply",
            Action::Raw { .. } => "raw",
        }
    }
}

impl fmt::Display for Rule {
    /// The rule as JSON, for listings and transcripts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(text) => f.write_str(&text),
            Err(_) => f.write_str("<unprintable rule>"),
        }
    }
}
