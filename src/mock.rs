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
//! mock's timers too (start delays, restart delays, power-off timings, fault delays). Talk
//! to it with tokio's non-blocking sockets from the same runtime, or from another thread.
//!
//! Faults: [`MockAgentBuilder::fault`] loads rules, [`MockAgentBuilder::seed`] seeds their
//! random source, [`MockAgentBuilder::scenario_agent`] takes a scenario's whole agent side,
//! [`MockAgentBuilder::replay`] a transcript's, and [`MockAgent::faults`] or a control
//! socket ([`MockAgentBuilder::control`]) change them while the mock runs.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent::{AgentConfig, AgentVersion, ConfigError, VersionError};
use crate::blocking::BlockingMockAgent;
use crate::channel::control::ControlServer;
use crate::channel::{
    self, AgentLife, BindError, ChannelConfig, FaultControl, FaultHub, LifeInbox, PowerPolicy,
    Replay, ReplayError, RuleError, StartState, TranscriptError, Transport, VmEnd,
};
use crate::expect::{Expectation, Spy, Verification};
use crate::fault::{Rule, RuleId};
use crate::guest::{Guest, Identity, Profile, ProfileError};
use crate::received::{Received, Records};
use crate::scenario::{AgentSetup, FaultEntry, ProfileSource};

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
    /// A real guest's port device could not be opened.
    #[error("cannot open the port device {}", path.display())]
    PortDevice {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The task serving the mock panicked or was cancelled.
    #[error("the mock agent's task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
    /// The profile could not be loaded or is invalid.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The agent version is not a version.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// A fault rule cannot be carried out.
    #[error("fault rule {index} (counting from 0): {reason}")]
    Fault { index: usize, reason: RuleError },
    /// A fleet's shares of dead, slow and hostile agents do not add up.
    #[error("fleet shares: {0}")]
    FleetShares(String),
    /// The temp dir for the socket or the records could not be created.
    #[error("cannot create a temp dir for the mock's socket or records")]
    TempDir {
        #[source]
        source: std::io::Error,
    },
    /// The thread that runs a blocking mock could not be started or ended abnormally.
    #[error("the blocking mock's thread: {0}")]
    Thread(String),
    /// The control socket could not be created.
    #[error("cannot open the control socket")]
    Control(#[source] BindError),
    /// The transcript to replay could not be read.
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// Where the guest's profile came from, as the transcript records it for a replay.
#[derive(Clone, Debug, Default)]
enum ProfileOrigin {
    #[default]
    Default,
    File(PathBuf),
    Value,
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
    profile_origin: ProfileOrigin,
    version: Option<AgentVersion>,
    block_rpcs: Option<Vec<String>>,
    allow_rpcs: Option<Vec<String>>,
    seed: u64,
    rules: Vec<Rule>,
    control: Option<PathBuf>,
    config: ChannelConfig,
    transcript: Option<PathBuf>,
    /// Where the transcript's clock starts (default: when the mock starts).
    transcript_origin: Option<tokio::time::Instant>,
    life: AgentLife,
    inbox: LifeInbox,
    record_received: bool,
    /// A profile shared with other mocks (a fleet's), with this guest's own identity.
    shared_profile: Option<Arc<Profile>>,
    identity: Option<Identity>,
}

/// A builder's settings, checked and ready to serve.
struct Prepared {
    config: ChannelConfig,
    guest: Guest,
    inbox: LifeInbox,
    transcript: Option<channel::TranscriptFile>,
    control: Option<ControlServer>,
    faults: FaultControl,
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
    faults: FaultControl,
    spy: Spy,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<VmEnd>>,
    /// The temp dir holding the socket, when the mock made it ([`MockAgent::start`]);
    /// declared last, so it is removed after the shutdown was sent.
    _dir: Option<tempfile::TempDir>,
}

impl MockAgent {
    /// Starts building a mock agent.
    pub fn builder() -> MockAgentBuilder {
        let (life, inbox) = channel::life_channel(crate::AgentState::NotStarted);
        MockAgentBuilder {
            profile: None,
            profile_origin: ProfileOrigin::Default,
            version: None,
            block_rpcs: None,
            allow_rpcs: None,
            seed: 0,
            rules: Vec::new(),
            control: None,
            config: ChannelConfig::default(),
            transcript: None,
            transcript_origin: None,
            life,
            inbox,
            record_received: true,
            shared_profile: None,
            identity: None,
        }
    }

    /// Starts a mock with the real agent's defaults on a fresh socket in a temp dir it
    /// owns (removed when the mock is dropped); see [`MockAgentBuilder::start`].
    pub async fn start() -> Result<MockAgent, MockError> {
        MockAgent::builder().start().await
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

    /// Every request the agent read so far, as it parsed it, with the answer it wrote,
    /// in request-number order; read back from the agent's own request and output records
    /// (its transcript). A reply your client has read was recorded when it was written;
    /// on a multi-threaded runtime, call this from the task that read it.
    #[must_use]
    pub fn received(&self) -> Vec<Received> {
        self.spy.received()
    }

    /// Adds an expectation, checked when the mock is dropped: a failed one panics with a
    /// report of every expectation and everything received.
    pub fn expect(&self, expectation: Expectation) {
        self.spy.expect(expectation);
    }

    /// Checks the expectations now.
    pub fn verify(&self) -> Verification {
        self.spy.verify()
    }

    pub(crate) fn records(&self) -> Option<Arc<Records>> {
        self.spy.records()
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
        self.spy.check_on_drop();
    }
}

/// A fault rule added while a mock runs; removed when the guard is dropped.
#[must_use = "the fault is removed as soon as its guard is dropped"]
#[derive(Debug)]
pub struct FaultGuard {
    faults: FaultControl,
    id: RuleId,
}

impl FaultGuard {
    pub(crate) fn add(faults: &FaultControl, rule: Rule) -> Result<FaultGuard, RuleError> {
        Ok(FaultGuard {
            faults: faults.clone(),
            id: faults.add(rule)?,
        })
    }

    /// The rule's id, as [`FaultControl::list`] shows it.
    #[must_use]
    pub fn id(&self) -> RuleId {
        self.id
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        self.faults.remove(self.id);
    }
}

impl MockAgentBuilder {
    /// The simulated guest (default: [`Profile::default_linux`]). The profile's agent
    /// version selects the version-dependent behaviour.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = Some(profile);
        self.profile_origin = ProfileOrigin::Value;
        self
    }

    /// The simulated guest from a profile file; the transcript records the file's path.
    pub fn profile_file(mut self, path: impl AsRef<Path>) -> Result<Self, MockError> {
        let path = path.as_ref();
        self.profile = Some(Profile::load(path)?);
        self.profile_origin =
            ProfileOrigin::File(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()));
        Ok(self)
    }

    /// The emulated qemu-ga version, instead of the profile's.
    pub fn agent_version(mut self, version: AgentVersion) -> Self {
        self.version = Some(version);
        self
    }

    /// The seed of the mock's one random source (default 0): the same seed and the same
    /// client bytes give the same faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Adds a fault rule (see [`crate::fault`]); rules apply in the order added.
    pub fn fault(mut self, rule: impl Into<Rule>) -> Self {
        self.rules.push(rule.into());
        self
    }

    /// Adds fault rules, in order.
    pub fn faults(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.rules.extend(rules);
        self
    }

    /// The guest's filesystems are frozen when the agent starts: a previous agent left
    /// the frozen marker behind, so the agent starts in the frozen state.
    pub fn frozen(mut self, frozen: bool) -> Self {
        self.config.state.frozen = frozen;
        self
    }

    /// Bytes the first agent process finds in its parser before any client writes, as a
    /// previous client's half request leaves them.
    pub fn parser_input(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config.state.parser_input = Some(bytes.into());
        self
    }

    /// Bytes waiting in the channel for the first client, as replies a previous client
    /// never read do (virtio-serial; with unix-listen they are written to the first
    /// client as soon as it is accepted).
    pub fn pending_output(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config.state.pending_output = Some(bytes.into());
        self
    }

    /// Opens a control socket at `path` (JSON lines; see `qga-harness ctl`) to change the
    /// fault rules and drive the agent's life while the mock runs.
    pub fn control(mut self, path: impl Into<PathBuf>) -> Self {
        self.control = Some(path.into());
        self
    }

    /// Takes the agent side of a scenario: profile (`"default"`, a file relative to
    /// `base_dir`, or inline), transport, version, block and allow lists, seed, state, and
    /// fault rules (added before any added later).
    pub fn scenario_agent(
        mut self,
        agent: &AgentSetup,
        base_dir: &Path,
    ) -> Result<Self, MockError> {
        match &agent.profile {
            None => {}
            Some(ProfileSource::Named(name)) if name == "default" => {
                self.profile = None;
                self.profile_origin = ProfileOrigin::Default;
            }
            Some(ProfileSource::Named(path)) => {
                self = self.profile_file(base_dir.join(path))?;
            }
            Some(ProfileSource::Inline(map)) => {
                let profile =
                    Profile::from_value(serde_json::Value::Object(map.clone()), "agent.profile")?;
                self = self.profile(profile);
            }
        }
        self.config.transport = agent.transport;
        if let Some(version) = &agent.version {
            self.version = Some(version.parse()?);
        }
        if !agent.block_rpcs.is_empty() {
            self.block_rpcs = Some(agent.block_rpcs.clone());
        }
        if let Some(allow) = &agent.allow_rpcs {
            self.allow_rpcs = Some(allow.clone());
        }
        if let Some(seed) = agent.seed {
            self.seed = seed;
        }
        self = self.start_state(agent.state.clone());
        for entry in &agent.faults {
            let rule = match entry {
                FaultEntry::Rule(rule) => rule.clone(),
                FaultEntry::Spec(spec) => {
                    crate::fault::parse_spec(spec).map_err(|e| MockError::Fault {
                        index: self.rules.len(),
                        reason: RuleError::from(e),
                    })?
                }
            };
            self.rules.push(rule);
        }
        Ok(self)
    }

    /// Takes the agent side recorded in a transcript (see [`Replay`]): the same seed and
    /// the same client bytes give the same agent bytes.
    pub fn replay(self, transcript: impl AsRef<Path>) -> Result<Self, MockError> {
        let transcript = transcript.as_ref();
        let replay = Replay::from_transcript(transcript)?;
        let base = transcript.parent().unwrap_or(Path::new("."));
        self.scenario_agent(&replay.agent, base)
    }

    /// A guest that shares `profile` with other mocks (one copy in memory for all) and
    /// differs from them in its `identity`.
    pub fn shared_profile(mut self, profile: Arc<Profile>, identity: Identity) -> Self {
        self.profile = None;
        self.profile_origin = ProfileOrigin::Value;
        self.shared_profile = Some(profile);
        self.identity = Some(identity);
        self
    }

    /// Keeps the agent's records of every request and its answer for
    /// [`MockAgent::received`] and the expectations (default: on). They are the mock's
    /// transcript: the file given to [`MockAgentBuilder::transcript`], else one in a temp
    /// dir of the mock's own. Off for a long-running mock that nobody inspects.
    pub fn record_received(mut self, record: bool) -> Self {
        self.record_received = record;
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
    /// Whole milliseconds, as a scenario file gives it; a part of one counts as one.
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.config.state.set_start_delay(delay);
        self
    }

    /// The agent starts only when [`AgentLife::start`] is called.
    pub fn start_manually(mut self) -> Self {
        self.config.state.started = false;
        self
    }

    /// The whole state the agent and its channel start in, as a scenario's `agent.state`
    /// gives it (replaces what [`MockAgentBuilder::start_delay`],
    /// [`MockAgentBuilder::start_manually`], [`MockAgentBuilder::frozen`],
    /// [`MockAgentBuilder::parser_input`] and [`MockAgentBuilder::pending_output`] set).
    pub fn start_state(mut self, state: StartState) -> Self {
        self.config.state = state;
        self
    }

    /// Gives every client a fresh parser. The real agent does not: its one parser keeps a
    /// gone client's partial input, which the next client's bytes complete. Off by default.
    pub fn fresh_parser_per_connection(mut self, fresh: bool) -> Self {
        self.config.fresh_parser_per_connection = fresh;
        self
    }

    /// Forwards every request to the real agent at `path` instead of the simulated guest
    /// (see [`crate::proxy`]).
    pub(crate) fn upstream(mut self, path: PathBuf) -> Self {
        self.config.upstream = Some(path);
        self
    }

    /// What guest-shutdown and guest-suspend-* do to the VM (see [`PowerPolicy`]).
    pub fn power_policy(mut self, policy: PowerPolicy) -> Self {
        self.config.power = policy;
        self
    }

    /// Records every byte both ways, every connection and life event, the mock's setup and
    /// every fault rule that fired in `path`, as JSON lines. Each line has `t_us` (microseconds since the mock started) and either
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

    /// Counts the transcript's time from `origin` instead of the mock's start: the
    /// scenario runner passes its own clock's origin, so a step's times and the
    /// transcript's are readings of one clock and the judge needs no allowance for two.
    pub(crate) fn transcript_origin(mut self, origin: tokio::time::Instant) -> Self {
        self.transcript_origin = Some(origin);
        self
    }

    /// A controller for the agent's life, usable before and while the mock serves.
    #[must_use]
    pub fn life(&self) -> AgentLife {
        self.life.clone()
    }

    /// The agent side of a scenario that reproduces this mock's setup, as the transcript
    /// records it.
    /// The profile with this guest's identity, as a replay needs it.
    fn with_identity(&self, profile: &Profile) -> Profile {
        let mut profile = profile.clone();
        if let Some(identity) = &self.identity {
            profile.host_name = identity.host_name.clone();
            profile.network_interfaces = identity.network_interfaces.clone();
        }
        profile
    }

    fn setup_record(&self, agent: &AgentConfig, profile: &Profile) -> AgentSetup {
        let profile_source = match &self.profile_origin {
            ProfileOrigin::Default => None,
            ProfileOrigin::File(path) => Some(ProfileSource::Named(path.display().to_string())),
            ProfileOrigin::Value => match serde_json::to_value(self.with_identity(profile)) {
                Ok(serde_json::Value::Object(map)) => Some(ProfileSource::Inline(map)),
                _ => None,
            },
        };
        AgentSetup {
            profile: profile_source,
            transport: self.config.transport,
            version: Some(agent.version.to_string()),
            block_rpcs: agent.block_rpcs.clone(),
            allow_rpcs: agent.allow_rpcs.clone(),
            seed: Some(self.seed),
            state: self.config.state.clone(),
            faults: self.rules.iter().cloned().map(FaultEntry::Rule).collect(),
        }
    }

    /// The fault hub with the rules, checked.
    fn hub(&self) -> Result<Arc<FaultHub>, MockError> {
        for (index, rule) in self.rules.iter().enumerate() {
            channel::check_rule(rule).map_err(|reason| MockError::Fault { index, reason })?;
        }
        let version = self
            .version
            .or_else(|| self.profile.as_ref().map(Profile::agent_version))
            .or_else(|| self.shared_profile.as_deref().map(Profile::agent_version))
            .unwrap_or_default();
        Ok(Arc::new(FaultHub::new(
            self.seed,
            self.rules.clone(),
            version.at_least(4, 0),
            self.life.clone(),
            tokio::time::Instant::now(),
        )))
    }

    /// Everything `serve` needs, checked. The agent's lists come from the builder when
    /// set, else from the profile (as a qemu-ga command line overrides its configuration
    /// file).
    fn prepare(self) -> Result<Prepared, MockError> {
        let hub = self.hub()?;
        let mut profile: Arc<Profile> = match &self.shared_profile {
            Some(shared) => shared.clone(),
            None => Arc::new(self.profile.clone().unwrap_or_else(Profile::default_linux)),
        };
        if let Some(version) = self.version {
            Arc::make_mut(&mut profile).agent.version = version;
        }
        if self.config.state.frozen {
            Arc::make_mut(&mut profile).fsfreeze.frozen = true;
        }
        let agent = AgentConfig {
            version: profile.agent_version(),
            block_rpcs: self
                .block_rpcs
                .clone()
                .or_else(|| profile.agent.block_rpcs.clone())
                .unwrap_or_default(),
            allow_rpcs: self
                .allow_rpcs
                .clone()
                .or_else(|| profile.agent.allow_rpcs.clone()),
        };
        agent.validate()?;
        // Only a transcript records the setup: a fleet of thousands has none, and saves the
        // profile's JSON per agent.
        let record = self.transcript.is_some().then(|| {
            let setup = self.setup_record(&agent, &profile);
            let mut record = serde_json::Map::new();
            record.insert("seed".into(), self.seed.into());
            record.insert(
                "agent".into(),
                serde_json::to_value(&setup).unwrap_or_default(),
            );
            record
        });
        let mut config = self.config;
        config.agent = agent;
        config.faults = Some(hub.clone());
        config.setup_record = record;
        let origin = self.transcript_origin;
        let transcript = self
            .transcript
            .as_deref()
            .map(|path| channel::open_transcript(path, origin))
            .transpose()?;
        let control = self
            .control
            .as_deref()
            .map(|path| ControlServer::bind(path, hub.clone(), self.life.clone()))
            .transpose()
            .map_err(MockError::Control)?;
        Ok(Prepared {
            config,
            guest: match self.identity {
                Some(identity) => Guest::with_identity(profile, identity),
                None => Guest::new(profile),
            },
            inbox: self.inbox,
            transcript,
            control,
            faults: FaultControl(hub),
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
        Ok(serve_prepared(p, listener, shutdown).await)
    }

    /// Serves on a real guest's virtio-serial port device (`/dev/virtio-ports/<name>`)
    /// instead of a socket: the mock inside a QEMU guest. The device is one stream each way
    /// for the whole run (the host's connections are QEMU's, invisible here), recorded as
    /// connection 1. Returns when `shutdown` completes or the simulated VM exits (a
    /// guest-shutdown's power-off: the caller powers the real guest off then). Only the
    /// virtio-serial transport fits a port device.
    pub(crate) async fn serve_port_device(
        self,
        device: &Path,
        shutdown: impl Future<Output = ()>,
    ) -> Result<VmEnd, MockError> {
        let fd = channel::open_port_device(device).map_err(|source| MockError::PortDevice {
            path: device.to_owned(),
            source,
        })?;
        let p = self.prepare()?;
        Ok(channel::serve_host(
            p.config,
            p.guest,
            channel::HostSide::PortDevice(fd),
            p.inbox,
            p.transcript,
            shutdown,
        )
        .await)
    }

    /// Creates the socket at `path` (replacing a stale socket file, refusing a live one
    /// and any other file) and spawns the mock on the current tokio runtime.
    pub async fn bind(self, path: impl AsRef<Path>) -> Result<MockAgent, MockError> {
        let path = path.as_ref();
        let mut builder = self;
        let life = builder.life.clone();
        // The records are the transcript: the user's, else one in a temp dir of our own.
        let mut records_dir = None;
        if builder.record_received && builder.transcript.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("qga-mock-records-")
                .tempdir()
                .map_err(|source| MockError::TempDir { source })?;
            builder.transcript = Some(dir.path().join("transcript.jsonl"));
            records_dir = Some(dir);
        }
        let transcript_path = builder
            .transcript
            .clone()
            .filter(|_| builder.record_received);
        let p = builder.prepare()?;
        let records = match (&transcript_path, &p.transcript) {
            (Some(path), Some(file)) => {
                Some(Arc::new(Records::new(path, file.progress(), records_dir)))
            }
            _ => None,
        };
        let faults = p.faults.clone();
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
        let task = tokio::spawn(serve_prepared(p, listener, shutdown));
        // Return once the socket is as the transport wants it (with unix-listen and a
        // delayed start: gone until the agent starts).
        life.serving().await;
        Ok(MockAgent {
            socket: path.to_owned(),
            life,
            faults,
            spy: Spy::new(records),
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
        })
    }

    /// Binds a fresh socket in a new temp dir that the mock owns and removes when it is
    /// dropped, and spawns the mock on the current tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use qga_harness::{Expectation, MockAgent, Rule};
    /// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    ///
    /// // Arrange: the second guest-ping hangs.
    /// let mock = MockAgent::builder()
    ///     .fault("guest-ping@2:hang".parse::<Rule>()?)
    ///     .seed(7)
    ///     .start()
    ///     .await?;
    /// mock.expect(Expectation::received("guest-ping", 1..));
    ///
    /// // Act
    /// let mut client = BufReader::new(tokio::net::UnixStream::connect(mock.socket_path()).await?);
    /// client.get_mut().write_all(br#"{"execute":"guest-ping"}"#).await?;
    /// let mut reply = String::new();
    /// client.read_line(&mut reply).await?;
    ///
    /// // Assert
    /// assert_eq!(reply, "{\"return\": {}}\n");
    /// let received = mock.received();
    /// assert_eq!(received[0].command(), Some("guest-ping"));
    /// assert_eq!(received[0].reply_json(), Some(&serde_json::json!({"return": {}})));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(self) -> Result<MockAgent, MockError> {
        let dir = tempfile::Builder::new()
            .prefix("qga-mock-")
            .tempdir()
            .map_err(|source| MockError::TempDir { source })?;
        let mut mock = self.start_in(dir.path()).await?;
        mock._dir = Some(dir);
        Ok(mock)
    }

    /// Runs the mock on a thread of its own, with its own runtime, for tests that do not
    /// use tokio; see [`BlockingMockAgent`].
    pub fn start_blocking(self) -> Result<BlockingMockAgent, MockError> {
        BlockingMockAgent::start(self)
    }

    /// [`MockAgentBuilder::bind`] at `dir/qga.sock`.
    pub async fn start_in(self, dir: impl AsRef<Path>) -> Result<MockAgent, MockError> {
        self.bind(dir.as_ref().join(SOCKET_FILE_NAME)).await
    }
}

/// How long answers to control requests in flight may take once the mock stopped serving.
const CONTROL_GRACE: Duration = Duration::from_secs(1);

/// Serves a prepared mock, with its control socket if it has one.
///
/// A plain function that takes `p` apart and boxes the serving future: an async function
/// keeps its arguments next to what it moves out of them, and this future lives as long
/// as the mock (one per agent of a fleet), so it holds only a pointer to the serving future
/// and the control server.
fn serve_prepared(
    p: Prepared,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = VmEnd> {
    let Prepared {
        config,
        guest,
        inbox,
        transcript,
        control,
        faults: _,
    } = p;
    let serving = Box::pin(channel::serve(
        config, guest, listener, inbox, transcript, shutdown,
    ));
    serve_with_control(serving, control)
}

async fn serve_with_control(
    serving: impl Future<Output = VmEnd>,
    control: Option<ControlServer>,
) -> VmEnd {
    match control {
        Some(control) => {
            let run = control.run();
            tokio::pin!(run);
            let end = tokio::select! {
                end = serving => end,
                never = &mut run => match never {},
            };
            // A control request that ended the mock (vm-exit) still gets its answer.
            let settled = async {
                tokio::select! {
                    () = control.settled() => {}
                    never = &mut run => match never {},
                }
            };
            let _ = tokio::time::timeout(CONTROL_GRACE, settled).await;
            end
        }
        None => serving.await,
    }
}
