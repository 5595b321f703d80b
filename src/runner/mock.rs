//! The crate's mock agent as the agent side of a case.

use std::path::Path;

use super::adapter::BoxFuture;
use super::agent::{AgentLauncher, LaunchError, LaunchRequest, RunningAgent};
use crate::MockAgent;

/// Starts the crate's mock qemu-ga for each case, as the scenario's `agent` part describes
/// it (profile, transport, version, block and allow lists, state, fault rules), with the
/// case's seed unless the scenario fixes its own.
#[derive(Clone, Debug, Default)]
pub struct MockLauncher {}

struct RunningMock {
    mock: MockAgent,
    /// The scenario delays the agent's first start.
    delayed_start: bool,
}

impl RunningAgent for RunningMock {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // The transcript is complete once the mock's task has ended.
            let _ = self.mock.shutdown().await;
        })
    }

    fn shares_clock(&self) -> bool {
        true
    }

    fn client_began(&self) -> BoxFuture<'static, ()> {
        let life = self.delayed_start.then(|| self.mock.life());
        Box::pin(async move {
            if let Some(life) = life {
                // Not applicable once the agent has started (or was never to start).
                let _ = life.boot_from_now().await;
            }
        })
    }
}

impl AgentLauncher for MockLauncher {
    fn launch<'a>(
        &'a self,
        request: LaunchRequest<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn RunningAgent>, LaunchError>> {
        Box::pin(async move {
            let scenario_file = &request.case.path;
            let base = scenario_file.parent().unwrap_or(Path::new("."));
            let builder = MockAgent::builder()
                .seed(request.seed)
                .scenario_agent(&request.case.scenario.agent, base)
                .map_err(|e| {
                    LaunchError::with_source(
                        format!("{}: bad agent part", scenario_file.display()),
                        e,
                    )
                })?
                .transcript(request.transcript)
                .transcript_origin(request.origin);
            let mock = builder.bind(request.socket).await.map_err(|e| {
                LaunchError::with_source(
                    format!(
                        "cannot start the mock agent on {}",
                        request.socket.display()
                    ),
                    e,
                )
            })?;
            let state = &request.case.scenario.agent.state;
            let delayed_start = state.starts_late();
            Ok(Box::new(RunningMock {
                mock,
                delayed_start,
            }) as Box<dyn RunningAgent>)
        })
    }
}
