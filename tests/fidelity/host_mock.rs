//! A mock on the host on a runtime of its own, for the fidelity tests that compare it with
//! a real agent (on the host, or in a guest). Shared by the host fidelity test and the
//! real-guest tests.
#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::path::Path;

use qga_harness::{AgentLife, MockAgent, MockAgentBuilder};

/// A mock on the host, on its own runtime, for comparing with a real agent: a fresh
/// socket in a temp dir it owns, shut down cleanly when dropped.
pub struct HostMock {
    mock: Option<MockAgent>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl HostMock {
    pub fn start(builder: MockAgentBuilder) -> HostMock {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let mock = runtime
            .block_on(builder.start_in(dir.path()))
            .expect("start the mock");
        HostMock {
            mock: Some(mock),
            runtime,
            _dir: dir,
        }
    }

    pub fn socket(&self) -> &Path {
        self.mock.as_ref().expect("running").socket_path()
    }

    pub fn life(&self) -> AgentLife {
        self.mock.as_ref().expect("running").life()
    }

    /// Runs `future` to its end on the mock's runtime.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Drop for HostMock {
    fn drop(&mut self) {
        if let Some(mock) = self.mock.take() {
            let _ = self.runtime.block_on(mock.shutdown());
        }
    }
}
