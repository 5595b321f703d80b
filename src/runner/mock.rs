//! The crate's mock agent as the agent side of a case.

use std::path::Path;

use super::adapter::BoxFuture;
use super::agent::{AgentLauncher, LaunchError, LaunchRequest, RunningAgent};
use crate::scenario::AgentSetup;
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
            let builder = builder_for(
                &request.case.scenario.agent,
                &request.case.path,
                request.seed,
            )?
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

/// The mock a scenario's `agent` part describes: profile (relative to the scenario file),
/// transport, version, block and allow lists, state and fault rules. The case's seed is
/// used unless the scenario fixes its own.
fn builder_for(
    setup: &AgentSetup,
    scenario_file: &Path,
    seed: u64,
) -> Result<MockAgentBuilder, LaunchError> {
    let base_dir = scenario_file.parent().unwrap_or(Path::new("."));
    let builder = MockAgent::builder().seed(seed);
    builder.scenario_agent(setup, base_dir).map_err(|e| {
        LaunchError::with_source(format!("bad agent setup in {}", scenario_file.display()), e)
    })
}
