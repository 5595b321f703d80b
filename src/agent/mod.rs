//! The agent's logic: dispatch with QEMU's checks in QEMU's order and exact texts, id echo,
//! no-reply commands, block and allow lists, the frozen-state allowlist, `guest-info`.
//!
//! Contract (the channel and the guest rely on it):
//! - [`Dispatcher::dispatch`] takes one item from [`crate::wire::Streamer`] and returns the
//!   exact reply bytes qemu-ga would write for it (with the 0xFF prefix of a successful
//!   `guest-sync-delimited` and the trailing newline), or no reply for a successful
//!   `success-response: false` command.
//! - Commands other than the protocol ones (sync, sync-delimited, ping, info) run on the
//!   [`crate::guest::Guest`] with arguments already checked against the schema.
//! - A dispatcher reads the guest's frozen state on its first item, so one created over a
//!   frozen guest (an agent restarted while frozen) starts in the frozen state.
//!
//! The check order and texts are those of QEMU qapi/qmp-dispatch.c and the QAPI input
//! visitor, which have not changed from 4.0 to 10.x; the version-dependent parts are the
//! id echo (from 4.0), the disabled-command class and text (4.2, 6.0), the commands each
//! version registers (their "since", Windows-only commands gone from 9.1), the argument
//! schemas that changed (`guest-set-time` 2.0, `whence` 2.6, `capture-output` 8.1) and the
//! enable/disable bookkeeping (`--allow-rpcs` from 8.1, one filter from 9.1). Agents before
//! 4.0 wrote other texts for some request-level errors; only their missing id echo is
//! modelled.

mod enablement;

pub(crate) use enablement::FREEZE_ALLOWLIST;
mod hash_order;
#[cfg(test)]
mod real_agent_tests;
mod schema;
#[cfg(test)]
mod test_json;
#[cfg(test)]
mod tests;
mod visitor;

use std::fmt;
use std::str::FromStr;

use crate::guest::{Guest, GuestError};
use crate::wire::{write_json, Object, Parsed, Value};

use enablement::{Enablement, Reason, Slot};

/// What the agent's command table says about a command: the one source the judge, the
/// reference client, `capture` and the real agent's safe block list read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CommandFacts {
    /// It writes nothing when it succeeds (`success-response: false` in qemu-ga's schema).
    pub no_reply: bool,
    /// It changes the machine the agent runs on: a real agent on a host must block it.
    pub changes_machine: bool,
    /// Sending it twice is not sending it once (it changes the machine, or consumes state
    /// such as an exit status or a file position): never resent after a timeout.
    pub not_repeatable: bool,
}

impl CommandFacts {
    /// It only reads: safe to run anywhere and to repeat.
    pub fn read_only(self) -> bool {
        !self.changes_machine && !self.not_repeatable
    }
}

/// The facts about a command of qemu-ga's Linux table (any version); `None` for a name
/// the agent does not know.
pub(crate) fn command_facts(name: &str) -> Option<CommandFacts> {
    schema::COMMANDS
        .iter()
        .find(|c| c.name == name)
        .map(|c| CommandFacts {
            no_reply: !c.success_response,
            changes_machine: c.changes_machine,
            not_repeatable: c.not_repeatable,
        })
}

/// Every command that changes the machine, in the table's order.
pub(crate) fn commands_that_change_the_machine() -> impl Iterator<Item = &'static str> {
    schema::COMMANDS
        .iter()
        .filter(|c| c.changes_machine)
        .map(|c| c.name)
}
use schema::CommandSpec;

/// The version of the emulated qemu-ga, which selects version-dependent behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl AgentVersion {
    /// The agent measured in the reference notes: Debian's qemu-guest-agent 7.2.
    pub const V7_2_22: AgentVersion = AgentVersion::new(7, 2, 22);

    #[must_use]
    pub const fn new(major: u32, minor: u32, micro: u32) -> Self {
        Self {
            major,
            minor,
            micro,
        }
    }

    /// True when this version is `major.minor` or newer.
    #[must_use]
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl Default for AgentVersion {
    fn default() -> Self {
        Self::V7_2_22
    }
}

impl fmt::Display for AgentVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Why a version string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid agent version '{0}': expected MAJOR.MINOR or MAJOR.MINOR.MICRO, e.g. 7.2.22")]
pub struct VersionError(pub String);

impl FromStr for AgentVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        let mut next = |required: bool| -> Result<u32, VersionError> {
            match parts.next() {
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map_err(|_| VersionError(s.to_owned()))
                }
                None if !required => Ok(0),
                _ => Err(VersionError(s.to_owned())),
            }
        };
        let version = AgentVersion::new(next(true)?, next(true)?, next(false)?);
        if parts.next().is_some() {
            return Err(VersionError(s.to_owned()));
        }
        Ok(version)
    }
}

/// How the agent was started: the equivalents of qemu-ga's `-b` and `-a`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    pub version: AgentVersion,
    /// `--block-rpcs`: these commands answer "has been disabled". Unknown names are
    /// ignored, as qemu-ga ignores them.
    pub block_rpcs: Vec<String>,
    /// `--allow-rpcs`: when set (and not empty), only these commands are enabled.
    pub allow_rpcs: Option<Vec<String>>,
}

/// A configuration the emulated qemu-ga version would refuse to start with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("qemu-ga {version} has no --allow-rpcs (it was added in 8.1)")]
    AllowListUnsupported { version: AgentVersion },
    #[error(
        "qemu-ga {version} refuses --block-rpcs together with --allow-rpcs (allowed from 9.1)"
    )]
    BlockAndAllowList { version: AgentVersion },
}

impl AgentConfig {
    /// Checks the configuration the way the emulated qemu-ga checks its command line.
    ///
    /// The dispatcher itself accepts any configuration and applies the lists with the
    /// rules of its version; this tells a front end what the real agent would refuse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let version = self.version;
        let allow = self.allow_rpcs.as_ref().is_some_and(|a| !a.is_empty());
        if allow && !version.at_least(8, 1) {
            return Err(ConfigError::AllowListUnsupported { version });
        }
        if allow && !self.block_rpcs.is_empty() && !version.at_least(9, 1) {
            return Err(ConfigError::BlockAndAllowList { version });
        }
        Ok(())
    }
}

/// The result of dispatching one streamer item.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatched {
    /// Exact reply bytes, newline included; `None` when qemu-ga writes nothing.
    pub reply: Option<Vec<u8>>,
    /// The `execute` name, when the input was an object with a string `execute` member
    /// (for transcripts and fault triggers).
    pub command: Option<String>,
}

/// What the dispatcher needs from the guest; [`Guest`] is the real one.
pub(crate) trait GuestOps {
    fn run(&mut self, command: &str, args: &Object) -> Result<Value, GuestError>;
    fn is_frozen(&self) -> bool;
}

impl GuestOps for Guest {
    fn run(&mut self, command: &str, args: &Object) -> Result<Value, GuestError> {
        Guest::run(self, command, args)
    }

    fn is_frozen(&self) -> bool {
        Guest::is_frozen(self)
    }
}

/// The two error classes qemu-ga emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    GenericError,
    CommandNotFound,
}

impl ErrorClass {
    fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
        }
    }
}

/// What qemu-ga answers to one item, before it is written.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Answer {
    Return {
        value: Value,
        /// A successful guest-sync-delimited: the reply starts with 0xFF.
        delimited: bool,
        id: Option<Value>,
    },
    Error {
        class: ErrorClass,
        desc: String,
        id: Option<Value>,
    },
    /// A successful `success-response: false` command: nothing is written.
    Silent,
}

impl Answer {
    /// The bytes qemu-ga's `send_response` writes (QEMU qga/main.c).
    fn encode(&self) -> Option<Vec<u8>> {
        let (response, delimited) = match self {
            Answer::Silent => return None,
            Answer::Return {
                value,
                delimited,
                id,
            } => (
                with_id(Object::new().with("return", value.clone()), id),
                *delimited,
            ),
            Answer::Error { class, desc, id } => {
                let error = Object::new()
                    .with("class", Value::from(class.as_str()))
                    .with("desc", Value::from(desc.as_str()));
                (
                    with_id(Object::new().with("error", error.into()), id),
                    false,
                )
            }
        };
        let mut out = Vec::new();
        if delimited {
            out.push(0xFF);
        }
        write_json(&Value::Object(response), &mut out);
        out.push(b'\n');
        Some(out)
    }
}

/// qmp_dispatch puts the id last; the writer's key order then places it.
fn with_id(response: Object, id: &Option<Value>) -> Object {
    match id {
        Some(id) => response.with("id", id.clone()),
        None => response,
    }
}

/// The outcome of a request before the id is attached.
enum Outcome {
    Return { value: Value, delimited: bool },
    Fail { class: ErrorClass, desc: String },
    Silent,
}

fn fail(desc: impl Into<String>) -> Outcome {
    Outcome::Fail {
        class: ErrorClass::GenericError,
        desc: desc.into(),
    }
}

/// The agent's dispatcher: the command table, its enabled states, and the checks.
#[derive(Debug)]
pub struct Dispatcher {
    config: AgentConfig,
    /// Set up on the first item, when the guest's frozen marker can be read: a qemu-ga
    /// that starts over frozen filesystems starts in the frozen state.
    enablement: Option<Enablement>,
}

impl Dispatcher {
    #[must_use]
    pub fn new(config: AgentConfig) -> Self {
        Self {
            config,
            enablement: None,
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Handles one item from the streamer, running the command on `guest`.
    pub fn dispatch(&mut self, input: Parsed, guest: &mut Guest) -> Dispatched {
        let (answer, command) = self.answer(input, guest);
        Dispatched {
            reply: answer.encode(),
            command,
        }
    }

    /// The enabled states, started on first use and following the guest's frozen state.
    fn enablement(&mut self, frozen: bool) -> &mut Enablement {
        let config = &self.config;
        let state = self
            .enablement
            .get_or_insert_with(|| Enablement::start(config, frozen));
        if frozen {
            state.set_frozen();
        } else {
            state.unset_frozen();
        }
        state
    }

    /// QEMU's `process_event` and `qmp_dispatch`, up to the reply object.
    pub(crate) fn answer(
        &mut self,
        input: Parsed,
        guest: &mut impl GuestOps,
    ) -> (Answer, Option<String>) {
        self.enablement(guest.is_frozen());
        let request = match input {
            Parsed::Error(desc) => {
                let answer = Answer::Error {
                    class: ErrorClass::GenericError,
                    desc,
                    id: None,
                };
                return (answer, None);
            }
            Parsed::Value(Value::Object(request)) => request,
            Parsed::Value(_) => {
                let answer = Answer::Error {
                    class: ErrorClass::GenericError,
                    desc: "QMP input must be a JSON object".to_owned(),
                    id: None,
                };
                return (answer, None);
            }
        };
        let command = request
            .get("execute")
            .and_then(Value::as_str)
            .map(str::to_owned);
        // The id is taken before any check, so every later error echoes it (from 4.0).
        let id = if self.config.version.at_least(4, 0) {
            request.get("id").cloned()
        } else {
            None
        };
        let answer = match self.run_request(&request, guest) {
            Outcome::Return { value, delimited } => Answer::Return {
                value,
                delimited,
                id,
            },
            Outcome::Fail { class, desc } => Answer::Error { class, desc, id },
            Outcome::Silent => Answer::Silent,
        };
        (answer, command)
    }

    fn run_request(&mut self, request: &Object, guest: &mut impl GuestOps) -> Outcome {
        // QEMU qapi/qmp-dispatch.c qmp_dispatch_check_obj: members in QDict order.
        let mut execute = None;
        for (key, value) in hash_order::qdict_order(request) {
            match key {
                "execute" => match value.as_str() {
                    Some(name) => execute = Some(name),
                    None => return fail("QMP input member 'execute' must be a string"),
                },
                "arguments" => {
                    if value.as_object().is_none() {
                        return fail("QMP input member 'arguments' must be an object");
                    }
                }
                "id" => {}
                other => return fail(format!("QMP input member '{other}' is unexpected")),
            }
        }
        let Some(name) = execute else {
            return fail("QMP input lacks member 'execute'");
        };
        let version = self.config.version;
        let Some((spec, slot)) = self.enablement(guest.is_frozen()).lookup(name) else {
            return Outcome::Fail {
                class: ErrorClass::CommandNotFound,
                desc: format!("The command {name} has not been found"),
            };
        };
        if let Slot::Disabled(reason) = slot {
            return disabled(version, name, reason);
        }
        let empty = Object::new();
        let args = request
            .get("arguments")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if let Err(desc) = visitor::check_arguments(spec.members(version), args) {
            return fail(desc);
        }
        self.run_command(spec, args, guest)
    }

    fn run_command(
        &mut self,
        spec: &CommandSpec,
        args: &Object,
        guest: &mut impl GuestOps,
    ) -> Outcome {
        match spec.name {
            "guest-sync" | "guest-sync-delimited" => match args.get("id").and_then(Value::as_i64) {
                Some(id) => Outcome::Return {
                    value: Value::Int(id),
                    delimited: spec.name == "guest-sync-delimited",
                },
                // The visitor has checked the id; this is unreachable in practice.
                None => fail("Parameter 'id' is missing"),
            },
            "guest-ping" => Outcome::Return {
                value: Value::Object(Object::new()),
                delimited: false,
            },
            "guest-info" => Outcome::Return {
                value: self.guest_info(guest.is_frozen()),
                delimited: false,
            },
            name => {
                let result = guest.run(name, args);
                self.follow_freeze(name, &result, guest.is_frozen());
                match result {
                    Ok(_) if !spec.success_response => Outcome::Silent,
                    Ok(value) => Outcome::Return {
                        value,
                        delimited: false,
                    },
                    Err(GuestError(desc)) => fail(desc),
                }
            }
        }
    }

    /// Replays the `ga_set_frozen` / `ga_unset_frozen` calls a command made in qemu-ga.
    ///
    /// A freeze enters the frozen state before it freezes anything (QEMU
    /// qga/commands-posix.c) and leaves it again when nothing was frozen or a FIFREEZE
    /// failed, so such an attempt still runs both transitions, and the reasons they
    /// write stay behind. Errors from before that point (the hook, the mount list) do not.
    fn follow_freeze(&mut self, name: &str, result: &Result<Value, GuestError>, frozen_now: bool) {
        let Some(state) = self.enablement.as_mut() else {
            return;
        };
        if matches!(name, "guest-fsfreeze-freeze" | "guest-fsfreeze-freeze-list") {
            let reached_freeze = frozen_now
                || match result {
                    Ok(_) => true,
                    Err(GuestError(desc)) => desc.starts_with("failed to freeze"),
                };
            if reached_freeze {
                state.set_frozen();
            }
        }
        if frozen_now {
            state.set_frozen();
        } else {
            state.unset_frozen();
        }
    }

    /// QEMU qga/commands.c `qmp_guest_info`: the registered commands, newest first.
    fn guest_info(&mut self, frozen: bool) -> Value {
        let version = self.config.version.to_string();
        let commands: Vec<Value> = self
            .enablement(frozen)
            .iter()
            .rev()
            .map(|(spec, slot)| {
                Object::new()
                    .with("name", Value::from(spec.name))
                    .with("enabled", Value::Bool(slot == Slot::Enabled))
                    .with("success-response", Value::Bool(spec.success_response))
                    .into()
            })
            .collect();
        Object::new()
            .with("version", Value::from(version))
            .with("supported_commands", Value::Array(commands))
            .into()
    }
}

/// The disabled-command error of `version`: GenericError before 4.2, the old text before
/// 6.0, and the reason suffix from 6.0.
fn disabled(version: AgentVersion, name: &str, reason: Option<Reason>) -> Outcome {
    let class = if version.at_least(4, 2) {
        ErrorClass::CommandNotFound
    } else {
        ErrorClass::GenericError
    };
    let desc = if version.at_least(6, 0) {
        match reason {
            Some(reason) => format!("Command {name} has been disabled: {}", reason.text()),
            None => format!("Command {name} has been disabled"),
        }
    } else {
        format!("The command {name} has been disabled for this instance")
    };
    Outcome::Fail { class, desc }
}
