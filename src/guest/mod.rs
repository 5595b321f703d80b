//! The simulated guest behind the commands, described by a profile. Never touches the host.
//!
//! Contract (the agent and the channel rely on it):
//! - [`Guest::run`] executes one command whose arguments the agent already checked against
//!   the QAPI schema (types, required members, no unexpected members). It returns the
//!   `return` value, built with members inserted in QAPI schema order (the writer derives
//!   qemu-ga's key order from that), or the desc of a GenericError.
//! - The guest outlives agent restarts: [`Guest::agent_restarted`] drops what dies with the
//!   qemu-ga process and keeps what it persists.

use crate::agent::AgentVersion;
use crate::wire::{Object, Value};

/// The simulated guest, as described by a profile.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    _todo: (),
}

impl Profile {
    /// The built-in default Linux guest.
    #[must_use]
    pub fn default_linux() -> Self {
        todo!("default profile")
    }

    /// The agent version the profile emulates.
    pub fn agent_version(&self) -> AgentVersion {
        todo!("profile version")
    }
}

/// A failed command: qemu-ga reports it as class GenericError with this desc.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GuestError(pub String);

/// What a successful no-reply command set in motion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PowerEvent {
    /// guest-shutdown with its mode: "powerdown", "halt" or "reboot".
    Shutdown { mode: String },
    /// guest-suspend-disk, -ram or -hybrid: "disk", "ram" or "hybrid".
    Suspend { kind: String },
}

/// The simulated guest's state.
#[derive(Debug)]
pub struct Guest {
    profile: Profile,
}

impl Guest {
    #[must_use]
    pub fn new(profile: Profile) -> Self {
        Self { profile }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Runs `command` with checked `args`.
    pub fn run(&mut self, command: &str, args: &Object) -> Result<Value, GuestError> {
        let _ = (command, args);
        todo!("guest commands")
    }

    /// True while the filesystems are frozen (the marker file exists).
    pub fn is_frozen(&self) -> bool {
        todo!()
    }

    /// The qemu-ga process restarted: open file handles and exec records are gone; the
    /// handle counter and the frozen marker persist.
    pub fn agent_restarted(&mut self) {
        todo!()
    }

    /// Takes the power event set by the last successful shutdown or suspend, if any.
    pub fn take_power_event(&mut self) -> Option<PowerEvent> {
        todo!()
    }
}
