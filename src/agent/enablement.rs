//! Which commands are enabled, and why the others are not: qemu-ga's block list (`-b`),
//! allow list (`-a`), the commands a Linux agent disables itself, and the frozen state.
//!
//! Two generations of QEMU qga/main.c are modelled, because their results differ:
//!
//! - Before 9.1 the state is edited step by step. At start: frozen → disable everything
//!   outside the freeze allowlist (reason "frozen"); then, with an allow list, disable what
//!   it lacks (reason "not allowed"); then disable each blocked name, user's and the
//!   agent's own (no reason, which overwrites an earlier reason). Freezing disables
//!   everything outside the allowlist again (reason "frozen", overwriting the reason of
//!   blocked commands too); thawing re-enables every disabled command that is neither
//!   blocked nor missing from the allow list, and leaves the rest with their last reason.
//! - From 9.1 one filter decides (`ga_apply_command_filters`): allowed unless an allow
//!   list lacks it, blocked wins over allowed, and while frozen only the allowlist is
//!   allowed; every change to disabled carries the reason "the command is not allowed".

use super::schema::{self, CommandSpec, Platform};
use super::{AgentConfig, AgentVersion};

/// The commands that still work while the filesystems are frozen (QEMU qga/main.c
/// `ga_freeze_allowlist`).
pub(crate) const FREEZE_ALLOWLIST: &[&str] = &[
    "guest-ping",
    "guest-info",
    "guest-sync",
    "guest-sync-delimited",
    "guest-fsfreeze-status",
    "guest-fsfreeze-thaw",
];

/// Why a command is disabled, when qemu-ga records a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    Frozen,
    NotAllowed,
}

impl Reason {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Reason::Frozen => "the agent is in frozen state",
            Reason::NotAllowed => "the command is not allowed",
        }
    }
}

/// The state of one registered command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Enabled,
    Disabled(Option<Reason>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Model {
    /// qga/main.c before 9.1: step-by-step edits.
    Stepwise,
    /// qga/main.c from 9.1: one filter applied on every change.
    Filter,
}

/// The registered commands and their enabled states.
#[derive(Debug)]
pub(crate) struct Enablement {
    model: Model,
    commands: Vec<&'static CommandSpec>,
    slots: Vec<Slot>,
    /// `-b`, plus (before 9.1) the commands the agent blocks itself.
    blocked: Vec<String>,
    /// `-a`; an empty list counts as none, as it does in qemu-ga.
    allowed: Option<Vec<String>>,
    frozen: bool,
}

impl Enablement {
    /// The state qemu-ga sets up at start, given whether the frozen marker exists.
    pub(crate) fn start(config: &AgentConfig, frozen: bool) -> Self {
        let version = config.version;
        let model = if version.at_least(9, 1) {
            Model::Filter
        } else {
            Model::Stepwise
        };
        let commands: Vec<&'static CommandSpec> = schema::registered(version).collect();
        let mut blocked = config.block_rpcs.clone();
        if model == Model::Stepwise {
            blocked.extend(self_blocked(version).map(str::to_owned));
        }
        let allowed = config.allow_rpcs.clone().filter(|list| !list.is_empty());
        let mut state = Enablement {
            model,
            slots: vec![Slot::Enabled; commands.len()],
            commands,
            blocked,
            allowed,
            frozen,
        };
        match model {
            Model::Stepwise => state.start_stepwise(),
            Model::Filter => state.apply_filter(),
        }
        state
    }

    fn start_stepwise(&mut self) {
        if self.frozen {
            self.disable_outside_freeze_allowlist();
        }
        if let Some(allowed) = self.allowed.clone() {
            for i in 0..self.commands.len() {
                if !allowed.iter().any(|a| a == self.commands[i].name) {
                    self.slots[i] = Slot::Disabled(Some(Reason::NotAllowed));
                }
            }
        }
        for name in self.blocked.clone() {
            // qmp_disable_command ignores names it does not know.
            if let Some(i) = self.index_of(&name) {
                self.slots[i] = Slot::Disabled(None);
            }
        }
    }

    fn disable_outside_freeze_allowlist(&mut self) {
        for (command, slot) in self.commands.iter().zip(self.slots.iter_mut()) {
            if !FREEZE_ALLOWLIST.contains(&command.name) {
                *slot = Slot::Disabled(Some(Reason::Frozen));
            }
        }
    }

    fn is_blocked(&self, name: &str) -> bool {
        self.blocked.iter().any(|b| b == name)
    }

    fn is_outside_allow_list(&self, name: &str) -> bool {
        self.allowed
            .as_ref()
            .is_some_and(|allowed| !allowed.iter().any(|a| a == name))
    }

    /// `ga_command_is_allowed` (9.1 and later).
    fn filter_allows(&self, name: &str) -> bool {
        if self.frozen {
            return FREEZE_ALLOWLIST.contains(&name);
        }
        !self.is_outside_allow_list(name) && !self.is_blocked(name)
    }

    fn apply_filter(&mut self) {
        for i in 0..self.commands.len() {
            let want = self.filter_allows(self.commands[i].name);
            let have = self.slots[i] == Slot::Enabled;
            if want != have {
                self.slots[i] = if have {
                    Slot::Disabled(Some(Reason::NotAllowed))
                } else {
                    Slot::Enabled
                };
            }
        }
    }

    /// `ga_set_frozen`: the filesystems were frozen.
    pub(crate) fn set_frozen(&mut self) {
        if self.frozen {
            return;
        }
        self.frozen = true;
        match self.model {
            Model::Stepwise => self.disable_outside_freeze_allowlist(),
            Model::Filter => self.apply_filter(),
        }
    }

    /// `ga_unset_frozen`: the filesystems were thawed.
    pub(crate) fn unset_frozen(&mut self) {
        if !self.frozen {
            return;
        }
        self.frozen = false;
        match self.model {
            Model::Stepwise => {
                for i in 0..self.commands.len() {
                    let name = self.commands[i].name;
                    if self.slots[i] != Slot::Enabled
                        && !self.is_blocked(name)
                        && !self.is_outside_allow_list(name)
                    {
                        self.slots[i] = Slot::Enabled;
                    }
                }
            }
            Model::Filter => self.apply_filter(),
        }
    }

    #[cfg(test)]
    pub(crate) fn is_frozen(&self) -> bool {
        self.frozen
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.commands.iter().position(|c| c.name == name)
    }

    /// The registered command called `name` and its state.
    pub(crate) fn lookup(&self, name: &str) -> Option<(&'static CommandSpec, Slot)> {
        self.index_of(name)
            .map(|i| (self.commands[i], self.slots[i]))
    }

    /// Every registered command with its state, in registration order.
    pub(crate) fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&'static CommandSpec, Slot)> + '_ {
        self.commands
            .iter()
            .copied()
            .zip(self.slots.iter().copied())
    }
}

/// The commands a Linux agent before 9.1 puts on its own block list
/// (`ga_command_init_blockedrpcs` in QEMU qga/commands-posix.c): the Windows-only ones.
fn self_blocked(version: AgentVersion) -> impl Iterator<Item = &'static str> {
    schema::registered(version)
        .filter(|c| c.platform == Platform::WindowsOnly)
        .map(|c| c.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn config(version: &str, block: &[&str], allow: Option<&[&str]>) -> AgentConfig {
        AgentConfig {
            version: version.parse().expect("version"),
            block_rpcs: block.iter().map(|s| (*s).to_owned()).collect(),
            allow_rpcs: allow.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn slot(state: &Enablement, name: &str) -> Option<Slot> {
        state.lookup(name).map(|(_, slot)| slot)
    }

    const ENABLED: Option<Slot> = Some(Slot::Enabled);
    const BLOCKED: Option<Slot> = Some(Slot::Disabled(None));
    const FROZEN: Option<Slot> = Some(Slot::Disabled(Some(Reason::Frozen)));
    const NOT_ALLOWED: Option<Slot> = Some(Slot::Disabled(Some(Reason::NotAllowed)));

    #[test]
    fn seven_two_blocks_its_own_windows_command() {
        let state = Enablement::start(&config("7.2.22", &[], None), false);
        assert_eq!(slot(&state, "guest-get-devices"), BLOCKED);
        assert_eq!(slot(&state, "guest-exec"), ENABLED);
        let disabled = state.iter().filter(|(_, s)| *s != Slot::Enabled).count();
        assert_eq!(disabled, 1);
    }

    #[test]
    fn nine_one_does_not_register_it() {
        let state = Enablement::start(&config("9.1.0", &[], None), false);
        assert_eq!(slot(&state, "guest-get-devices"), None);
        assert!(state.iter().all(|(_, s)| s == Slot::Enabled));
    }

    #[test]
    fn unknown_block_names_are_ignored() {
        let state = Enablement::start(&config("7.2.22", &["guest-nope", ""], None), false);
        assert_eq!(state.iter().filter(|(_, s)| *s != Slot::Enabled).count(), 1);
    }

    #[test]
    fn stepwise_freeze_overwrites_the_reason_of_blocked_commands() {
        let mut state = Enablement::start(&config("7.2.22", &["guest-exec"], None), false);
        assert_eq!(slot(&state, "guest-exec"), BLOCKED);
        state.set_frozen();
        assert_eq!(slot(&state, "guest-exec"), FROZEN);
        assert_eq!(slot(&state, "guest-get-time"), FROZEN);
        assert_eq!(slot(&state, "guest-ping"), ENABLED);
        state.unset_frozen();
        // Thaw re-enables only what is not blocked; the blocked ones keep the frozen reason.
        assert_eq!(slot(&state, "guest-get-time"), ENABLED);
        assert_eq!(slot(&state, "guest-exec"), FROZEN);
        assert_eq!(slot(&state, "guest-get-devices"), FROZEN);
    }

    #[test]
    fn stepwise_start_frozen_lets_the_block_list_win() {
        let state = Enablement::start(&config("7.2.22", &["guest-ping", "guest-exec"], None), true);
        // Blocked after the frozen pass: no reason.
        assert_eq!(slot(&state, "guest-ping"), BLOCKED);
        assert_eq!(slot(&state, "guest-exec"), BLOCKED);
        assert_eq!(slot(&state, "guest-get-time"), FROZEN);
        assert_eq!(slot(&state, "guest-sync"), ENABLED);
    }

    #[test]
    fn set_and_unset_are_idempotent() {
        let mut state = Enablement::start(&config("7.2.22", &[], None), true);
        state.set_frozen();
        assert_eq!(slot(&state, "guest-get-time"), FROZEN);
        state.unset_frozen();
        state.unset_frozen();
        assert!(!state.is_frozen());
        assert_eq!(slot(&state, "guest-get-time"), ENABLED);
    }

    #[test]
    fn stepwise_allow_list() {
        let mut state = Enablement::start(
            &config("8.1.0", &[], Some(&["guest-ping", "guest-get-time"])),
            false,
        );
        assert_eq!(slot(&state, "guest-ping"), ENABLED);
        assert_eq!(slot(&state, "guest-info"), NOT_ALLOWED);
        // The agent's own block still applies.
        assert_eq!(slot(&state, "guest-get-devices"), BLOCKED);
        state.set_frozen();
        // The freeze pass only disables: what the allow list lacks stays disabled.
        assert_eq!(slot(&state, "guest-info"), NOT_ALLOWED);
        assert_eq!(slot(&state, "guest-get-time"), FROZEN);
        state.unset_frozen();
        assert_eq!(slot(&state, "guest-get-time"), ENABLED);
        assert_eq!(slot(&state, "guest-info"), NOT_ALLOWED);
        assert_eq!(slot(&state, "guest-file-open"), FROZEN);
    }

    #[test]
    fn empty_allow_list_allows_everything() {
        let state = Enablement::start(&config("8.1.0", &[], Some(&[])), false);
        assert_eq!(slot(&state, "guest-info"), ENABLED);
    }

    #[rstest]
    #[case::blocked("guest-exec", NOT_ALLOWED, NOT_ALLOWED, NOT_ALLOWED)]
    #[case::plain("guest-get-time", ENABLED, NOT_ALLOWED, ENABLED)]
    #[case::allowlisted("guest-ping", ENABLED, ENABLED, ENABLED)]
    // Frozen wins over everything, even over the block list for allowlisted commands.
    #[case::blocked_allowlisted("guest-info", NOT_ALLOWED, ENABLED, NOT_ALLOWED)]
    fn filter_model_from_9_1(
        #[case] name: &str,
        #[case] at_start: Option<Slot>,
        #[case] frozen: Option<Slot>,
        #[case] thawed: Option<Slot>,
    ) {
        let mut state =
            Enablement::start(&config("9.1.0", &["guest-exec", "guest-info"], None), false);
        assert_eq!(slot(&state, name), at_start);
        state.set_frozen();
        assert_eq!(slot(&state, name), frozen);
        state.unset_frozen();
        assert_eq!(slot(&state, name), thawed);
    }

    #[test]
    fn filter_model_blocked_beats_allowed() {
        let state = Enablement::start(
            &config(
                "9.1.0",
                &["guest-ping"],
                Some(&["guest-ping", "guest-info"]),
            ),
            false,
        );
        assert_eq!(slot(&state, "guest-ping"), NOT_ALLOWED);
        assert_eq!(slot(&state, "guest-info"), ENABLED);
        assert_eq!(slot(&state, "guest-get-time"), NOT_ALLOWED);
    }
}
