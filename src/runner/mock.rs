//! The crate's mock agent as the agent side of a case.

use super::adapter::BoxFuture;
use super::agent::{AgentLauncher, LaunchError, LaunchRequest, RunningAgent};

/// Starts the crate's mock qemu-ga for each case.
#[derive(Clone, Debug, Default)]
pub struct MockLauncher {}

impl AgentLauncher for MockLauncher {
    fn launch<'a>(
        &'a self,
        request: LaunchRequest<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn RunningAgent>, LaunchError>> {
        let _ = request;
        Box::pin(async { Err(LaunchError::new("the mock agent is not in this build yet")) })
    }
}
