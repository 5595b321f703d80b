//! The agent side of a case: something that serves a scenario's agent on a unix socket and
//! writes a transcript. The runner only needs to start it, point the client at its socket,
//! and stop it; [`MockLauncher`] does that with the crate's mock agent.

use std::path::Path;

use super::adapter::BoxFuture;
use super::discover::LoadedCase;

/// What the launcher must provide for one case.
#[derive(Clone, Copy, Debug)]
pub struct LaunchRequest<'a> {
    pub case: &'a LoadedCase,
    /// Where to listen (inside the case's own temp dir).
    pub socket: &'a Path,
    /// Where to write the transcript (JSON lines, the mock's format).
    pub transcript: &'a Path,
    /// The seed of the agent's random source.
    pub seed: u64,
    /// The runner's clock origin for the case: step times count from it. A launcher
    /// whose transcript counts from it too says so ([`RunningAgent::shares_clock`]).
    pub origin: tokio::time::Instant,
}

/// Why an agent could not be started for a case.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LaunchError {
    message: String,
    /// The target cannot reproduce the case: UNSUPPORTED with this reason, not an error.
    unsupported: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl LaunchError {
    pub fn new(message: impl Into<String>) -> LaunchError {
        LaunchError {
            message: message.into(),
            unsupported: false,
            source: None,
        }
    }

    /// The target cannot reproduce this case (the message says why).
    pub fn unsupported(reason: impl Into<String>) -> LaunchError {
        LaunchError {
            message: reason.into(),
            unsupported: true,
            source: None,
        }
    }

    /// The reason, when the case is one the target cannot reproduce.
    pub fn unsupported_reason(&self) -> Option<&str> {
        self.unsupported.then_some(self.message.as_str())
    }

    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> LaunchError {
        LaunchError {
            message: message.into(),
            unsupported: false,
            source: Some(Box::new(source)),
        }
    }
}

/// Starts agents for cases.
pub trait AgentLauncher: Send + Sync {
    /// Starts the case's agent; returns once its socket accepts connections.
    fn launch<'a>(
        &'a self,
        request: LaunchRequest<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn RunningAgent>, LaunchError>>;
}

/// A running agent.
pub trait RunningAgent: Send {
    /// Stops the agent, removes its socket and completes the transcript file.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;

    /// Whether the transcript's times count from [`LaunchRequest::origin`], so that they
    /// and the runner's step times are one clock. When not, the transcript's clock
    /// started somewhere inside the launch, and the judge allows for the launch's span.
    fn shares_clock(&self) -> bool {
        false
    }

    /// What to do when the client begins its first step (a session client read it): an
    /// agent whose start the scenario delays counts the delay from there, so a client's
    /// own start-up time does not eat into it. The runner awaits it at that moment.
    fn client_began(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
