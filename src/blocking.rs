//! The mock for tests without an async runtime: it runs on a thread of its own, with its
//! own current-thread tokio runtime, so it works under any test runtime or none.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::channel::{FaultControl, RuleError};
use crate::expect::{Expectation, Spy, Verification};
use crate::fault::Rule;
use crate::mock::{FaultGuard, MockAgentBuilder, MockError};
use crate::received::Received;

/// A running mock qemu-ga on a thread of its own, for plain `#[test]` functions; it shuts
/// down, removes its temp dir and checks its expectations when dropped.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::os::unix::net::UnixStream;
/// use qga_harness::{Expectation, MockAgent};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Arrange
/// let mock = MockAgent::builder().start_blocking()?;
/// mock.expect(Expectation::sync_delimited_before_first_command());
///
/// // Act
/// let mut client = UnixStream::connect(mock.socket_path())?;
/// client.write_all(br#"{"execute":"guest-sync-delimited","arguments":{"id":5}}"#)?;
/// client.write_all(br#"{"execute":"guest-ping"}"#)?;
/// let mut replies = BufReader::new(client);
/// let (mut sync, mut ping) = (Vec::new(), String::new());
/// replies.read_until(b'\n', &mut sync)?;
/// replies.read_line(&mut ping)?;
///
/// // Assert
/// assert_eq!(sync, b"\xff{\"return\": 5}\n");
/// assert_eq!(ping, "{\"return\": {}}\n");
/// assert!(mock.verify().is_met());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct BlockingMockAgent {
    socket: PathBuf,
    faults: FaultControl,
    spy: Spy,
    /// The mock thread's runtime, for [`BlockingMockAgent::settle`].
    runtime: tokio::runtime::Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the mock's thread hands back once the mock serves.
struct Started {
    socket: PathBuf,
    faults: FaultControl,
    records: Option<std::sync::Arc<crate::received::Records>>,
    runtime: tokio::runtime::Handle,
}

impl BlockingMockAgent {
    pub(crate) fn start(builder: MockAgentBuilder) -> Result<BlockingMockAgent, MockError> {
        let (started_tx, started_rx) = mpsc::channel::<Result<Started, MockError>>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("qga-mock".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Err(MockError::Thread(format!(
                            "cannot start its runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mock = match builder.start().await {
                        Ok(mock) => mock,
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    let started = Started {
                        socket: mock.socket_path().to_owned(),
                        faults: mock.faults(),
                        records: mock.records(),
                        runtime: tokio::runtime::Handle::current(),
                    };
                    if started_tx.send(Ok(started)).is_err() {
                        return;
                    }
                    // A dropped sender is a shutdown too.
                    let _ = shutdown_rx.await;
                    let _ = mock.shutdown().await;
                });
            })
            .map_err(|e| MockError::Thread(format!("cannot spawn it: {e}")))?;
        let started = match started_rx.recv() {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(MockError::Thread("it ended before the mock started".into()));
            }
        };
        Ok(BlockingMockAgent {
            socket: started.socket,
            faults: started.faults,
            spy: Spy::new(started.records),
            runtime: started.runtime,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// The unix socket clients connect to.
    #[must_use]
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Changes the fault rules while the mock runs.
    #[must_use]
    pub fn faults(&self) -> FaultControl {
        self.faults.clone()
    }

    /// Adds a fault rule while the mock runs, for as long as the returned guard lives.
    pub fn fault_scoped(&self, rule: impl Into<Rule>) -> Result<FaultGuard, RuleError> {
        FaultGuard::add(&self.faults, rule.into())
    }

    /// Every request the agent read so far, as it parsed it, with the answer it wrote, in
    /// request-number order (see [`crate::MockAgent::received`]). Every reply a client
    /// has read is in it.
    #[must_use]
    pub fn received(&self) -> Vec<Received> {
        self.settle();
        self.spy.received()
    }

    /// Adds an expectation, checked when the mock is dropped.
    pub fn expect(&self, expectation: Expectation) {
        self.spy.expect(expectation);
    }

    /// Checks the expectations now.
    pub fn verify(&self) -> Verification {
        self.settle();
        self.spy.verify()
    }

    /// Waits until the mock's thread is between two steps. The agent records an output in
    /// the same step that writes its bytes, so once a task spawned now has run, every
    /// output a client could have read is recorded. (The runtime is current-thread: the
    /// task runs only after the step in progress.)
    fn settle(&self) {
        let (tx, rx) = mpsc::channel::<()>();
        drop(self.runtime.spawn(async move {
            let _ = tx.send(());
        }));
        // An error: the mock's thread has ended, and with it every step.
        let _ = rx.recv();
    }
}

impl Drop for BlockingMockAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.spy.check_on_drop();
    }
}
