//! What can go wrong in a call, as types a caller can match.
//!
//! The agent's own errors keep their class and desc verbatim ([`AgentError`]); the
//! variants [`Error::Frozen`], [`Error::CommandDisabled`] and [`Error::CommandNotFound`]
//! are the agent errors callers most often need to tell apart (libvirt, for one, reads a
//! frozen agent as "command unsupported"). Client-side failures say at which [`Stage`]
//! they happened, because that tells whether the command reached the agent.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The result type of every client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in a call a failure happened.
///
/// Only [`Stage::Reply`] means the command itself was (at least partly) written to the
/// agent; a side-effecting command that failed earlier never left the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Opening the socket.
    Connect,
    /// The `guest-sync-delimited` handshake that precedes the command.
    Sync,
    /// Writing the command or waiting for its reply.
    Reply,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connecting",
            Stage::Sync => "waiting for the sync reply",
            Stage::Reply => "waiting for the reply",
        })
    }
}

/// An error reply from the agent: `{"error": {"class": C, "desc": D}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentError {
    /// The error class, verbatim (qemu-ga sends `GenericError` or `CommandNotFound`;
    /// other agents send other names, which are kept).
    pub class: String,
    /// The human-readable description, verbatim; empty when the agent sent none.
    pub desc: String,
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.desc)
    }
}

impl std::error::Error for AgentError {}

/// The suffix qemu-ga appends to "has been disabled" while filesystems are frozen
/// (QEMU qga/main.c, `ga_disable_not_allowed_freeze`).
const FROZEN_SUFFIX: &str = "the agent is in frozen state";

impl AgentError {
    /// Sorts an agent error into the variant a caller can match.
    pub(crate) fn into_error(self) -> Error {
        if self.desc.ends_with(FROZEN_SUFFIX) {
            Error::Frozen(self)
        } else if self.class == "CommandDisabled"
            || (self.class == "CommandNotFound" && self.desc.contains("has been disabled"))
        {
            // qemu-ga ≥ 4.2 reports a disabled command as CommandNotFound "Command X has
            // been disabled"; older agents and libvirt's test agent use the class
            // CommandDisabled.
            Error::CommandDisabled(self)
        } else if self.class == "CommandNotFound" {
            Error::CommandNotFound(self)
        } else {
            Error::Agent(self)
        }
    }
}

/// What was wrong with the bytes the agent sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A reply line that is not JSON (or is nested deeper than the parser allows).
    #[error("reply is not valid JSON ({reason}): {preview}")]
    NotJson { reason: String, preview: String },
    /// A reply line longer than the configured limit; it was discarded unread.
    #[error("reply longer than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// Bytes of a reply cut off by a 0xFF (the start of a new frame).
    #[error("reply cut off by a 0xFF byte: {preview}")]
    CutOff { preview: String },
    /// A reply that is not a JSON object.
    #[error("reply is not a JSON object: {preview}")]
    NotAnObject { preview: String },
    /// A reply object with neither `return` nor `error`.
    #[error("reply has neither \"return\" nor \"error\": {preview}")]
    NoResult { preview: String },
    /// A reply object with both `return` and `error`.
    #[error("reply has both \"return\" and \"error\": {preview}")]
    BothResults { preview: String },
    /// An `error` member that is not an object with a string `class`.
    #[error("malformed \"error\" member: {preview}")]
    MalformedError { preview: String },
    /// A reply object that names `return`, `error` or `id` twice: which one the agent
    /// meant cannot be known (QEMU's own JSON parser rejects a duplicate key).
    #[error("reply has the member \"{member}\" twice: {preview}")]
    DuplicateMember {
        member: &'static str,
        preview: String,
    },
    /// A reply holding a number no QEMU agent writes: an integer beyond 64 bits or a
    /// number beyond the double range. Any value made of it would be rounded, wrapped or
    /// infinite, not the one sent.
    #[error("reply has a number no agent writes ({number}): {preview}")]
    ImpossibleNumber { number: String, preview: String },
    /// The agent answered the sync handshake itself with an error (the sync command is
    /// disabled, unknown, or a hostile agent refused it): the command was never sent, so
    /// the agent's error is not the command's answer.
    #[error("the agent refused the sync handshake ({class}: {desc}); the command was not sent")]
    SyncRefused { class: String, desc: String },
    /// A `return` value that does not have the shape the command's schema gives.
    #[error("unexpected return value of {command}: {what}")]
    UnexpectedReturn { command: String, what: String },
}

/// Every way a call can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket could not be opened.
    #[error("cannot connect to {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The call's total deadline passed.
    #[error("no answer within {} ms ({stage})", timeout.as_millis())]
    Timeout { stage: Stage, timeout: Duration },
    /// The connection closed or broke.
    #[error("the agent connection closed ({stage})")]
    Disconnected {
        stage: Stage,
        #[source]
        source: Option<io::Error>,
    },
    /// The agent sent something that breaks the protocol.
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    /// The command is disabled because the guest's filesystems are frozen.
    #[error("the agent is frozen")]
    Frozen(#[source] AgentError),
    /// The command is disabled in the agent (block or allow list).
    #[error("the command is disabled")]
    CommandDisabled(#[source] AgentError),
    /// The agent does not know the command.
    #[error("the command is not known to the agent")]
    CommandNotFound(#[source] AgentError),
    /// Any other error reply from the agent.
    #[error("the agent returned an error")]
    Agent(#[source] AgentError),
}

impl Error {
    /// The agent's error reply behind this error, if it is one.
    pub fn agent_error(&self) -> Option<&AgentError> {
        match self {
            Error::Frozen(e)
            | Error::CommandDisabled(e)
            | Error::CommandNotFound(e)
            | Error::Agent(e) => Some(e),
            _ => None,
        }
    }

    /// The class a session-mode driver reports: the agent's own class for its errors,
    /// else `Timeout`, `Disconnected` or `Protocol`.
    pub fn class(&self) -> &str {
        match self {
            Error::Timeout { .. } => "Timeout",
            Error::Connect { .. } | Error::Disconnected { .. } => "Disconnected",
            Error::Protocol(_) => "Protocol",
            Error::Frozen(e)
            | Error::CommandDisabled(e)
            | Error::CommandNotFound(e)
            | Error::Agent(e) => &e.class,
        }
    }

    /// A one-line description: the agent's desc verbatim for its errors, else this error
    /// and its sources joined by ": ".
    pub fn desc(&self) -> String {
        if let Some(e) = self.agent_error() {
            return e.desc.clone();
        }
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    pub(crate) fn disconnected(stage: Stage, source: Option<io::Error>) -> Error {
        Error::Disconnected { stage, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(class: &str, desc: &str) -> Error {
        AgentError {
            class: class.into(),
            desc: desc.into(),
        }
        .into_error()
    }

    #[test]
    fn sorts_agent_errors_by_what_callers_need() {
        assert!(matches!(
            agent(
                "CommandNotFound",
                "Command guest-file-open has been disabled: the agent is in frozen state"
            ),
            Error::Frozen(_)
        ));
        assert!(matches!(
            agent("CommandNotFound", "Command guest-exec has been disabled"),
            Error::CommandDisabled(_)
        ));
        assert!(matches!(
            agent(
                "CommandDisabled",
                "The command guest-exec has been disabled for this instance"
            ),
            Error::CommandDisabled(_)
        ));
        assert!(matches!(
            agent(
                "CommandNotFound",
                "The command guest-nosuch has not been found"
            ),
            Error::CommandNotFound(_)
        ));
        assert!(matches!(
            agent("GenericError", "Parameter 'x' is unexpected"),
            Error::Agent(_)
        ));
    }

    #[test]
    fn class_and_desc_keep_agent_text_and_name_client_failures() {
        let e = agent("GenericError", "PID ld does not exist");
        assert_eq!(e.class(), "GenericError");
        assert_eq!(e.desc(), "PID ld does not exist");
        let t = Error::Timeout {
            stage: Stage::Sync,
            timeout: Duration::from_millis(250),
        };
        assert_eq!(t.class(), "Timeout");
        assert_eq!(
            t.desc(),
            "no answer within 250 ms (waiting for the sync reply)"
        );
        let p = Error::from(ProtocolError::TooLarge { limit: 10 });
        assert_eq!(p.class(), "Protocol");
        assert_eq!(
            p.desc(),
            "protocol error: reply longer than the limit of 10 bytes"
        );
    }
}
