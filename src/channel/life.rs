//! The agent's life as the host can drive it: the states a qemu-ga process goes through
//! inside a guest, and a controller to move it between them while clients stay connected.

use std::fmt;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::status::{status_board, ChannelStatus, StatusBoard, StatusCloser, StatusView};

/// Where the emulated qemu-ga process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgentState {
    /// The VM is up but the agent has not started yet (the guest is still booting).
    NotStarted,
    /// The agent reads, handles and answers.
    Running,
    /// The agent is frozen (as by SIGSTOP): it reads nothing and answers nothing; what it
    /// was doing resumes where it stopped.
    Hung,
    /// The guest is suspended (guest-suspend-ram or -hybrid): like [`AgentState::Hung`],
    /// until it wakes up.
    Suspended,
    /// No agent process (killed, stopped, or failed to start).
    Dead,
    /// The agent died and a new process will start after a delay.
    Restarting,
    /// The VM exited: the socket is closed and gone. Final.
    VmExited,
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentState::NotStarted => "not-started",
            AgentState::Running => "running",
            AgentState::Hung => "hung",
            AgentState::Suspended => "suspended",
            AgentState::Dead => "dead",
            AgentState::Restarting => "restarting",
            AgentState::VmExited => "vm-exited",
        })
    }
}

/// A request to change the agent's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LifeCommand {
    Start,
    Stop,
    Kill,
    Hang,
    Resume,
    Restart {
        after: Duration,
    },
    VmExit,
    /// A delayed first start counts its delay from now (see [`AgentLife::boot_from_now`]).
    BootFromNow,
}

impl fmt::Display for LifeCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LifeCommand::Start => f.write_str("start"),
            LifeCommand::Stop => f.write_str("stop"),
            LifeCommand::Kill => f.write_str("kill"),
            LifeCommand::Hang => f.write_str("hang"),
            LifeCommand::Resume => f.write_str("resume"),
            LifeCommand::Restart { after } => write!(f, "restart after {after:?}"),
            LifeCommand::VmExit => f.write_str("vm-exit"),
            LifeCommand::BootFromNow => f.write_str("boot-from-now"),
        }
    }
}

/// Why a life command did not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LifeError {
    /// The command makes no sense in the current state (for example `resume` of a running
    /// agent, or `start` of a running one).
    #[error("cannot {command} the agent: it is {state}")]
    NotApplicable {
        /// The command, as text (`start`, `hang`...).
        command: String,
        /// The state the agent was in.
        state: AgentState,
    },
    /// A new agent process could not start (with unix-listen: its socket could not be
    /// bound again).
    #[error("the agent failed to start: {reason}")]
    StartFailed {
        /// What went wrong.
        reason: String,
    },
    /// The mock is no longer serving (shut down, or the VM exited).
    #[error("the mock agent is no longer running")]
    Gone,
}

pub(crate) type LifeReply = Result<AgentState, LifeError>;

/// One command on its way to the supervisor, with where to send the outcome.
#[derive(Debug)]
pub(crate) struct LifeRequest {
    pub(crate) command: LifeCommand,
    pub(crate) reply: oneshot::Sender<LifeReply>,
}

/// Drives the agent's life at run time: start, stop, kill, hang, resume, restart, VM exit.
///
/// Each method waits until the change took effect and returns the state it left the agent
/// in. Cheap to clone; every clone drives the same agent.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use qga_harness::{AgentState, MockAgent};
///
/// // Arrange: an agent that waits to be started.
/// let dir = tempfile::tempdir()?;
/// let mock = MockAgent::builder().start_manually().start_in(dir.path()).await?;
/// let life = mock.life();
/// assert_eq!(life.state(), AgentState::NotStarted);
///
/// // Act
/// life.start().await?;
/// life.hang().await?;
///
/// // Assert
/// assert_eq!(life.state(), AgentState::Hung);
/// assert_eq!(life.kill().await?, AgentState::Dead);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AgentLife {
    tx: mpsc::UnboundedSender<LifeRequest>,
    state: watch::Receiver<AgentState>,
    status: StatusView,
}

/// The supervisor's end of an [`AgentLife`].
#[derive(Debug)]
pub(crate) struct LifeInbox {
    pub(crate) commands: mpsc::UnboundedReceiver<LifeRequest>,
    pub(crate) state: watch::Sender<AgentState>,
    pub(crate) status: StatusBoard,
    /// Tells waiters on the status that serving ended, when the inbox is dropped.
    _closer: StatusCloser,
}

/// Creates a controller and the supervisor's end of it.
pub(crate) fn life_channel(initial: AgentState) -> (AgentLife, LifeInbox) {
    let (tx, commands) = mpsc::unbounded_channel();
    let (state_tx, state) = watch::channel(initial);
    let (board, status, closer) = status_board();
    (
        AgentLife { tx, state, status },
        LifeInbox {
            commands,
            state: state_tx,
            status: board,
            _closer: closer,
        },
    )
}

impl AgentLife {
    async fn send(&self, command: LifeCommand) -> LifeReply {
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send(LifeRequest { command, reply })
            .map_err(|_| LifeError::Gone)?;
        outcome.await.map_err(|_| LifeError::Gone)?
    }

    /// Waits until the supervisor published its first state, that is, until the mock has
    /// set up its socket as the transport wants it.
    pub(crate) async fn serving(&self) {
        let mut rx = self.state.clone();
        let _ = rx.changed().await;
    }

    /// The agent's state now.
    #[must_use]
    pub fn state(&self) -> AgentState {
        *self.state.borrow()
    }

    /// Waits until the agent is in `state` (at once if it already is).
    pub async fn wait_for(&self, state: AgentState) -> Result<(), LifeError> {
        let mut rx = self.state.clone();
        rx.wait_for(|s| *s == state)
            .await
            .map(|_| ())
            .map_err(|_| LifeError::Gone)
    }

    /// What the socket side has seen so far (connections, bytes each way).
    #[must_use]
    pub fn channel_status(&self) -> ChannelStatus {
        self.status.get()
    }

    /// Waits until the socket side's status satisfies `ready` (at once if it does), and
    /// returns that status: "the mock has read my 48 bytes", "my client was dropped".
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use qga_harness::MockAgent;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// // Arrange
    /// let dir = tempfile::tempdir()?;
    /// let mock = MockAgent::builder().start_in(dir.path()).await?;
    /// let mut client = tokio::net::UnixStream::connect(mock.socket_path()).await?;
    ///
    /// // Act
    /// client.write_all(b"{\"execute\":").await?;
    /// let status = mock.life().wait_channel(|s| s.bytes_in >= 11).await?;
    ///
    /// // Assert
    /// assert_eq!(status.serving, Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_channel(
        &self,
        ready: impl FnMut(&ChannelStatus) -> bool,
    ) -> Result<ChannelStatus, LifeError> {
        self.status
            .wait_for(ready)
            .await
            .map_err(|_| LifeError::Gone)
    }

    /// Starts a fresh agent process now (from not started or dead; cancels a pending start).
    pub async fn start(&self) -> Result<AgentState, LifeError> {
        self.send(LifeCommand::Start).await
    }

    /// Stops the agent as SIGTERM stops qemu-ga: it finishes what it already read, then
    /// exits; what is still unread in the guest is lost. A hung agent cannot finish, so it
    /// is killed. Waits until the agent is gone, which is never while the agent is blocked
    /// writing a reply nobody takes (as with the real agent); use [`AgentLife::kill`] then.
    pub async fn stop(&self) -> Result<AgentState, LifeError> {
        self.send(LifeCommand::Stop).await
    }

    /// Kills the agent at once (SIGKILL): commands it read but did not answer are never
    /// answered, and a reply it was writing stays cut off on the wire.
    pub async fn kill(&self) -> Result<AgentState, LifeError> {
        self.send(LifeCommand::Kill).await
    }

    /// Freezes the agent (SIGSTOP) exactly where it is.
    pub async fn hang(&self) -> Result<AgentState, LifeError> {
        self.send(LifeCommand::Hang).await
    }

    /// Lets a hung agent or a suspended guest go on (SIGCONT, or a wake-up).
    pub async fn resume(&self) -> Result<AgentState, LifeError> {
        self.send(LifeCommand::Resume).await
    }

    /// Kills the agent and starts a new process at once, as a service manager does: the
    /// parser state is lost, what qemu-ga persists is kept.
    pub async fn restart(&self) -> Result<AgentState, LifeError> {
        self.restart_after(Duration::ZERO).await
    }

    /// Kills the agent now and starts a new process after `delay`.
    pub async fn restart_after(&self, delay: Duration) -> Result<AgentState, LifeError> {
        self.send(LifeCommand::Restart { after: delay }).await
    }

    /// The guest's boot time (a delayed first start) counts from now instead of from the
    /// mock's start, when the agent has not started yet. The scenario runner calls it when
    /// the client begins its first step, so that "the agent starts 500 ms into the case"
    /// means the same to a client that takes 300 ms to start up as to one that takes 1 ms.
    pub(crate) async fn boot_from_now(&self) -> Result<AgentState, LifeError> {
        self.send(LifeCommand::BootFromNow).await
    }

    /// The VM exits: the client gets EOF, the socket closes and its file is removed.
    pub async fn vm_exit(&self) -> Result<AgentState, LifeError> {
        self.send(LifeCommand::VmExit).await
    }
}
