//! The mock qemu-ga as a library: build it, point it at a unix socket, drive its life.
//!
//! Two ways to run it:
//!
//! - [`MockAgentBuilder::serve`] takes an already-bound [`tokio::net::UnixListener`] and a
//!   shutdown future and runs until either the shutdown completes or the VM exits; it is
//!   what the `qga-harness mock` command runs.
//! - [`MockAgentBuilder::bind`] and [`MockAgentBuilder::start_in`] create the socket and
//!   spawn the mock on the current tokio runtime, returning a [`MockAgent`] handle with the
//!   socket's path and the agent's [`AgentLife`]; the mock shuts down when the handle is
//!   dropped.
//!
//! The mock runs on the caller's runtime, so a test that pauses tokio's clock controls the
//! mock's timers too (start delays, restart delays, power-off timings). Talk to it with
//! tokio's non-blocking sockets from the same runtime, or from another thread.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent::{AgentConfig, ConfigError};
use crate::channel::{
    self, AgentLife, AgentStart, BindError, ChannelConfig, LifeInbox, PowerPolicy, TranscriptError,
    Transport, VmEnd,
};
use crate::guest::{Guest, Profile};

/// The file name [`MockAgentBuilder::start_in`] gives the socket.
pub(crate) const SOCKET_FILE_NAME: &str = "qga.sock";

/// Why a mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// The socket could not be created at its path.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The transcript file could not be created.
    #[error(transparent)]
    Transcript(#[from] TranscriptError),
    /// The emulated qemu-ga version would refuse these block and allow lists.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tokio listener could not be registered with the runtime.
    #[error("cannot register the socket {} with the runtime", path.display())]
    Register {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The task serving the mock panicked or was cancelled.
    #[error("the mock agent's task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

/// Builds a mock qemu-ga. Every setting has the real agent's default.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use qga_harness::{MockAgent, Transport};
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// // Arrange: a mock behind QEMU's virtio-serial chardev semantics, in a temp dir.
/// let dir = tempfile::tempdir()?;
/// let mock = MockAgent::builder()
///     .transport(Transport::VirtioSerial)
///     .block_rpcs(["guest-shutdown"])
///     .start_in(dir.path())
///     .await?;
///
/// // Act
/// let mut client = tokio::net::UnixStream::connect(mock.socket_path()).await?;
/// client.write_all(br#"{"execute":"guest-sync","arguments":{"id":42}}"#).await?;
/// let mut reply = String::new();
/// BufReader::new(client).read_line(&mut reply).await?;
///
/// // Assert
/// assert_eq!(reply, "{\"return\": 42}\n");
/// # Ok(())
/// # }
/// ```
#[must_use = "a MockAgentBuilder does nothing until it serves, binds or starts"]
#[derive(Debug)]
pub struct MockAgentBuilder {
    profile: Option<Profile>,
    block_rpcs: Option<Vec<String>>,
    allow_rpcs: Option<Vec<String>>,
    config: ChannelConfig,
    transcript: Option<PathBuf>,
    life: AgentLife,
    inbox: LifeInbox,
}

/// A builder's settings, checked and ready to serve.
struct Prepared {
    config: ChannelConfig,
    guest: Guest,
    inbox: LifeInbox,
    transcript: Option<channel::TranscriptFile>,
}

/// A running mock qemu-ga on its own socket; it shuts down when dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use qga_harness::MockAgent;
///
/// // Arrange
/// let dir = tempfile::tempdir()?;
/// let mock = MockAgent::builder().start_in(dir.path()).await?;
/// let path = mock.socket_path().to_owned();
/// assert!(path.exists());
///
/// // Act
/// mock.shutdown().await?;
///
/// // Assert: the socket file is gone, as when QEMU exits.
/// assert!(!path.exists());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MockAgent {
    socket: PathBuf,
    life: AgentLife,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<VmEnd>>,
}

impl MockAgent {
    /// Starts building a mock agent.
    pub fn builder() -> MockAgentBuilder {
        let (life, inbox) = channel::life_channel(crate::AgentState::NotStarted);
        MockAgentBuilder {
            profile: None,
            block_rpcs: None,
            allow_rpcs: None,
            config: ChannelConfig::default(),
            transcript: None,
            life,
            inbox,
        }
    }

    /// The unix socket clients connect to.
    #[must_use]
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The agent's life controller.
    #[must_use]
    pub fn life(&self) -> AgentLife {
        self.life.clone()
    }

    /// Waits until the VM exits by itself (guest power-off, [`AgentLife::vm_exit`]).
    pub async fn exited(&mut self) -> Result<VmEnd, MockError> {
        self.join().await
    }

    /// Shuts the mock down and waits until its socket is closed and removed.
    pub async fn shutdown(mut self) -> Result<VmEnd, MockError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join().await
    }

    async fn join(&mut self) -> Result<VmEnd, MockError> {
        match self.task.take() {
            Some(task) => task.await.map_err(MockError::Task),
            None => Ok(VmEnd::Shutdown),
        }
    }
}

impl Drop for MockAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl MockAgentBuilder {
    /// The simulated guest (default: [`Profile::default_linux`]). The profile's agent
    /// version selects the version-dependent behaviour.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = Some(profile);
        self
    }

    /// The transport (default: [`Transport::VirtioSerial`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.config.transport = transport;
        self
    }

    /// Commands that answer "has been disabled", as qemu-ga's `--block-rpcs`. Replaces
    /// the profile's list.
    pub fn block_rpcs<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.block_rpcs = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The only commands left enabled, as qemu-ga's `--allow-rpcs`. Replaces the
    /// profile's list.
    pub fn allow_rpcs<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allow_rpcs = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The agent starts this long after the mock (the guest is booting); until then the
    /// virtio-serial socket accepts and buffers, and the unix-listen socket does not exist.
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.config.start = if delay.is_zero() {
            AgentStart::Now
        } else {
            AgentStart::After(delay)
        };
        self
    }

    /// The agent starts only when [`AgentLife::start`] is called.
    pub fn start_manually(mut self) -> Self {
        self.config.start = AgentStart::Manually;
        self
    }

    /// Gives every client a fresh parser. The real agent does not: its one parser keeps a
    /// gone client's partial input, which the next client's bytes complete. Off by default.
    pub fn fresh_parser_per_connection(mut self, fresh: bool) -> Self {
        self.config.fresh_parser_per_connection = fresh;
        self
    }

    /// What guest-shutdown and guest-suspend-* do to the VM (see [`PowerPolicy`]).
    pub fn power_policy(mut self, policy: PowerPolicy) -> Self {
        self.config.power = policy;
        self
    }

    /// Records every byte both ways and every connection and life event in `path`, as JSON
    /// lines. Each line has `t_us` (microseconds since the mock started) and either
    /// `conn`, `dir` (`"in"` from the client, `"out"` to it) and the bytes, in `text` when
    /// they are valid UTF-8 with no control characters but tab, LF and CR, else in `b64`
    /// (standard base64); or an `event` (`connected`, `disconnected`, `agent-started`,
    /// `agent-killed`, `vm-exit`...) with `conn` when it concerns a connection and a
    /// `detail` when there is more to say.
    ///
    /// ```text
    /// {"t_us":0,"event":"mock-started","detail":"virtio-serial"}
    /// {"t_us":3,"event":"agent-started"}
    /// {"t_us":418,"conn":1,"event":"connected"}
    /// {"t_us":502,"conn":1,"dir":"in","b64":"/3siZXhlY3V0ZSI6Imd1ZXN0LXBpbmcifQ=="}
    /// {"t_us":547,"conn":1,"dir":"out","text":"{\"return\": {}}\n"}
    /// {"t_us":901,"conn":1,"event":"disconnected","detail":"eof"}
    /// ```
    pub fn transcript(mut self, path: impl Into<PathBuf>) -> Self {
        self.transcript = Some(path.into());
        self
    }

    /// A controller for the agent's life, usable before and while the mock serves.
    #[must_use]
    pub fn life(&self) -> AgentLife {
        self.life.clone()
    }

    /// Everything `serve` needs, checked. The agent's lists come from the builder when
    /// set, else from the profile (as a qemu-ga command line overrides its configuration
    /// file).
    fn prepare(self) -> Result<Prepared, MockError> {
        let profile = self.profile.unwrap_or_else(Profile::default_linux);
        let mut config = self.config;
        config.agent = AgentConfig {
            version: profile.agent_version(),
            block_rpcs: self
                .block_rpcs
                .or_else(|| profile.agent.block_rpcs.clone())
                .unwrap_or_default(),
            allow_rpcs: self.allow_rpcs.or_else(|| profile.agent.allow_rpcs.clone()),
        };
        config.agent.validate()?;
        let transcript = self
            .transcript
            .as_deref()
            .map(channel::open_transcript)
            .transpose()?;
        Ok(Prepared {
            config,
            guest: Guest::new(profile),
            inbox: self.inbox,
            transcript,
        })
    }

    /// Serves on `listener` until `shutdown` completes or the VM exits, then closes the
    /// socket and removes its file (as QEMU does when it exits).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use qga_harness::{MockAgent, VmEnd};
    ///
    /// // Arrange
    /// let dir = tempfile::tempdir()?;
    /// let listener = tokio::net::UnixListener::bind(dir.path().join("qga.sock"))?;
    /// let builder = MockAgent::builder();
    /// let life = builder.life();
    ///
    /// // Act: the VM powers off while the mock serves.
    /// let (end, _) = tokio::join!(builder.serve(listener, std::future::pending()), life.vm_exit());
    ///
    /// // Assert
    /// assert_eq!(end?, VmEnd::VmExit);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<VmEnd, MockError> {
        let p = match self.prepare() {
            Ok(prepared) => prepared,
            Err(e) => {
                // serve owns the socket: it goes away however serve ends.
                channel::remove_listener_file(&listener);
                return Err(e);
            }
        };
        Ok(channel::serve(p.config, p.guest, listener, p.inbox, p.transcript, shutdown).await)
    }

    /// Creates the socket at `path` (replacing a stale socket file, refusing a live one
    /// and any other file) and spawns the mock on the current tokio runtime.
    pub async fn bind(self, path: impl AsRef<Path>) -> Result<MockAgent, MockError> {
        let path = path.as_ref();
        let life = self.life.clone();
        let p = self.prepare()?;
        let std_listener = channel::bind_socket(path)?;
        let listener =
            UnixListener::from_std(std_listener).map_err(|source| MockError::Register {
                path: path.to_owned(),
                source,
            })?;
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender is a shutdown too.
            let _ = rx.await;
        };
        let task = tokio::spawn(channel::serve(
            p.config,
            p.guest,
            listener,
            p.inbox,
            p.transcript,
            shutdown,
        ));
        // Return once the socket is as the transport wants it (with unix-listen and a
        // delayed start: gone until the agent starts).
        life.serving().await;
        Ok(MockAgent {
            socket: path.to_owned(),
            life,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// [`MockAgentBuilder::bind`] at `dir/qga.sock`.
    pub async fn start_in(self, dir: impl AsRef<Path>) -> Result<MockAgent, MockError> {
        self.bind(dir.as_ref().join(SOCKET_FILE_NAME)).await
    }
}
