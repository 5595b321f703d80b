//! The crate's mock agent as the agent side of a case.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::adapter::BoxFuture;
use super::agent::{AgentLauncher, LaunchError, LaunchRequest, RunningAgent};
use crate::guest::Profile;
use crate::scenario::{AgentSetup, ProfileSource, Transport};
use crate::{MockAgent, MockAgentBuilder};

/// Starts the crate's mock qemu-ga for each case, as the scenario's `agent` describes it.
#[derive(Clone, Debug, Default)]
pub struct MockLauncher {}

struct RunningMock {
    mock: MockAgent,
}

impl RunningAgent for RunningMock {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // The transcript is complete once the mock's task has ended.
            let _ = self.mock.shutdown().await;
        })
    }
}

impl AgentLauncher for MockLauncher {
    fn launch<'a>(
        &'a self,
        request: LaunchRequest<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn RunningAgent>, LaunchError>> {
        Box::pin(async move {
            let builder = builder_for(&request.case.scenario.agent, &request.case.path)?
                .transcript(request.transcript);
            let mock = builder.bind(request.socket).await.map_err(|e| {
                LaunchError::with_source(
                    format!(
                        "cannot start the mock agent on {}",
                        request.socket.display()
                    ),
                    e,
                )
            })?;
            Ok(Box::new(RunningMock { mock }) as Box<dyn RunningAgent>)
        })
    }
}

/// The mock a scenario's `agent` part describes. Profile paths are relative to the scenario
/// file.
fn builder_for(setup: &AgentSetup, scenario_file: &Path) -> Result<MockAgentBuilder, LaunchError> {
    let unsupported = unsupported(setup);
    if !unsupported.is_empty() {
        return Err(LaunchError::new(format!(
            "the mock does not support {} yet",
            unsupported.join(", ")
        )));
    }
    let mut profile = match &setup.profile {
        None => Profile::default_linux(),
        Some(ProfileSource::Named(name)) if name == "default" => Profile::default_linux(),
        Some(ProfileSource::Named(name)) => {
            let path = relative_to(scenario_file, name);
            Profile::load(&path).map_err(|e| {
                LaunchError::with_source(format!("bad profile {}", path.display()), e)
            })?
        }
        Some(ProfileSource::Inline(map)) => Profile::from_value(
            serde_json::Value::Object(map.clone()),
            &format!("{} (agent.profile)", scenario_file.display()),
        )
        .map_err(|e| LaunchError::with_source("bad inline profile", e))?,
    };
    if let Some(version) = &setup.version {
        profile.agent.version = version
            .parse()
            .map_err(|e| LaunchError::with_source(format!("bad agent.version '{version}'"), e))?;
    }
    let block = if setup.block_rpcs.is_empty() {
        profile.agent.block_rpcs.clone().unwrap_or_default()
    } else {
        setup.block_rpcs.clone()
    };
    let allow = setup
        .allow_rpcs
        .clone()
        .or_else(|| profile.agent.allow_rpcs.clone());
    let mut builder = MockAgent::builder()
        .profile(profile)
        .transport(match setup.transport {
            Transport::VirtioSerial => crate::Transport::VirtioSerial,
            Transport::UnixListen => crate::Transport::UnixListen,
        })
        .block_rpcs(block);
    if let Some(allow) = allow {
        builder = builder.allow_rpcs(allow);
    }
    if !setup.state.started {
        builder = builder.start_manually();
    } else if let Some(ms) = setup.state.start_delay_ms {
        builder = builder.start_delay(Duration::from_millis(ms));
    }
    Ok(builder)
}

/// The parts of the agent setup the mock cannot do yet.
fn unsupported(setup: &AgentSetup) -> Vec<&'static str> {
    let state = &setup.state;
    let mut missing = Vec::new();
    if !setup.faults.is_empty() {
        missing.push("fault rules (agent.faults)");
    }
    if state.frozen {
        missing.push("a frozen start (agent.state.frozen)");
    }
    if state.parser_input.is_some() {
        missing.push("leftover parser input (agent.state.parser_input)");
    }
    if state.pending_output.is_some() {
        missing.push("pending output (agent.state.pending_output)");
    }
    missing
}

fn relative_to(scenario_file: &Path, name: &str) -> PathBuf {
    let path = Path::new(name);
    if path.is_absolute() {
        return path.to_owned();
    }
    scenario_file
        .parent()
        .map_or_else(|| path.to_owned(), |dir| dir.join(path))
}
