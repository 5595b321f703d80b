//! Transports and their semantics (virtio-serial, unix-listen) and the agent's life.
//!
//! # The model
//!
//! A mock VM has one guest ([`crate::guest::Guest`]) that outlives its agent, and at most
//! one agent *process* at a time. The process owns one parser and one dispatcher: a
//! restart loses them, a reconnecting client does not. It is single-threaded like
//! qemu-ga: it reads at most 4096 bytes, handles every item they complete in order, writes
//! each reply in one write (waiting until it is written), and only then reads again.
//!
//! Between the process and the host client sits the transport:
//!
//! | | virtio-serial (default) | unix-listen |
//! |---|---|---|
//! | socket exists | from the start (QEMU) | only while the agent runs |
//! | host bytes while no agent | buffered in the kernel, answered when it starts | connect refused |
//! | agent death | invisible: no EOF, no bytes; later input answered by the next process | the client gets EOF |
//! | half-close | a full disconnect: EOF at once, replies go to the next client | replies, then EOF |
//! | a gone client's buffered commands | run; replies go to the next client | run; replies fail with EPIPE |
//! | VM exit | EOF; the socket file is removed | — |
//!
//! In both, one client is served at a time and the others wait in the listen backlog
//! (backlog 1, as QEMU and qemu-ga listen), served in order; partial input from a client
//! that left is still in the parser when the next one writes (unless the parser is made
//! per-connection); a client that never reads stops the agent once the pending output
//! passes a bound, so memory stays bounded.
//!
//! # Bounds
//!
//! - virtio-serial host → guest: the kernel's socket buffer, then at most 512 KiB held in
//!   the guest for the agent (the virtio-console receive queue: 128 pages).
//! - guest → host: at most 128 KiB of replies wait in the port, on top of the kernel's
//!   socket buffer: a reply of up to 64 KiB goes in whole once less than 64 KiB waits, a
//!   larger one in 64 KiB pieces (so a kill mid-reply leaves a cut-off prefix, as on a real
//!   guest). unix-listen writes straight to the socket.
//! - the parser's own limits (64 MiB per token, see [`crate::wire`]).
//!
//! [`AgentLife`] drives the process's life; the transcript records every byte both ways and
//! every life event (format in the `transcript` module docs, repeated on
//! [`crate::MockAgentBuilder::transcript`]).
//!
//! # Faults
//!
//! Fault rules (see [`crate::fault`]) are carried out here, on the wire: the process asks
//! the mock's rules what to do before it dispatches each request and when it starts, and
//! the transport side reports each accepted client; the answer is a plan (delay, die,
//! replace or deform the reply, write it in pieces...) that the single-threaded process
//! carries out, so a fault holds up what a real agent's would. [`FaultControl`] and the
//! control socket change the rules at run time; [`Replay`] reads a transcript's setup back.

mod bind;
mod chardev;
pub(crate) mod control;
mod faults;
mod intercept;
mod life;
mod listen;
mod origin;
mod port;
mod port_device;
mod process;
mod replay;
mod reply_writer;
mod start;
mod status;
mod supervisor;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::time::Instant;

pub use crate::transcript::TranscriptError;
pub use bind::{check_socket_path, BindError, MAX_SOCKET_PATH};
pub use faults::{FaultControl, ListedRule, RuleError};
pub use life::{AgentLife, AgentState, LifeError};
pub use replay::{Replay, ReplayError};
pub use start::StartState;
pub use status::ChannelStatus;
pub use supervisor::VmEnd;

pub(crate) use crate::transcript::writer::Transcript;

pub(crate) use bind::bind_socket;
pub(crate) use faults::{check_rule, FaultHub};
pub(crate) use life::{life_channel, LifeInbox};
pub(crate) use port_device::open_port_device;
pub(crate) use start::AgentStart;

use crate::agent::AgentConfig;
use crate::guest::Guest;
use crate::transcript::writer::{MaybeTranscript, TranscriptWriter};
use chardev::Chardev;
use intercept::Interceptor;
use port::Port;
use supervisor::{Side, Supervisor};

/// How the host reaches the agent: one type for the library, the scenario files
/// (`"transport": "unix-listen"`) and the command line (`--transport unix-listen`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// QEMU's chardev socket in front of a virtio-serial port (what libvirt and Proxmox use).
    #[default]
    VirtioSerial,
    /// qemu-ga's own listening socket (`qemu-ga -m unix-listen`).
    UnixListen,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::VirtioSerial => "virtio-serial",
            Transport::UnixListen => "unix-listen",
        })
    }
}

/// The text was not a transport name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport '{0}': expected virtio-serial or unix-listen")]
pub struct TransportError(String);

impl FromStr for Transport {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "virtio-serial" => Ok(Transport::VirtioSerial),
            "unix-listen" => Ok(Transport::UnixListen),
            _ => Err(TransportError(s.to_owned())),
        }
    }
}

/// What a successful guest-shutdown or guest-suspend-* does to the VM.
///
/// On a real guest (QEMU 7.2, measured) the agent kept answering for about half a second
/// after guest-shutdown, then the port went silent (the agent was stopped), and about half
/// a second later QEMU closed the socket (EOF) and exited. The defaults repeat those
/// timings; with systemd the gaps are typically several seconds.
///
/// - shutdown (any mode; reboot as QEMU with `-no-reboot`) and suspend-disk (hibernation
///   powers the VM off): answer for [`PowerPolicy::answer_for`], then silence for
///   [`PowerPolicy::silent_for`], then the VM exits.
/// - suspend-ram and suspend-hybrid: answer for `answer_for`, then the guest sleeps: the
///   agent is frozen, nothing is answered and nothing is closed, and host bytes are
///   buffered, until [`AgentLife::resume`] (QMP `system_wakeup`) or, when set,
///   [`PowerPolicy::wake_after`]; then the agent answers everything late, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerPolicy {
    /// How long the agent keeps answering after the command (540 ms by default).
    pub answer_for: Duration,
    /// How long the port is silent between the agent's end and the VM's exit (530 ms).
    pub silent_for: Duration,
    /// When a suspended guest wakes up by itself (`None`, the default: never).
    pub wake_after: Option<Duration>,
}

impl Default for PowerPolicy {
    fn default() -> Self {
        Self {
            answer_for: supervisor::DEFAULT_ANSWER_FOR,
            silent_for: supervisor::DEFAULT_SILENT_FOR,
            wake_after: None,
        }
    }
}

/// Everything the channel needs to serve.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChannelConfig {
    pub(crate) transport: Transport,
    /// How the agent starts and what the previous one left behind; the guest's part of it
    /// (`frozen`) is in the guest already.
    pub(crate) state: StartState,
    pub(crate) fresh_parser_per_connection: bool,
    pub(crate) power: PowerPolicy,
    pub(crate) agent: AgentConfig,
    /// The mock's fault rules; none: the real agent's behaviour.
    pub(crate) faults: Option<Arc<FaultHub>>,
    /// The agent's setup, recorded at the top of the transcript (the fields of the
    /// `agent-setup` record).
    pub(crate) setup_record: Option<serde_json::Map<String, serde_json::Value>>,
    /// A real agent's socket: requests are forwarded there instead of being dispatched on
    /// the simulated guest (a proxy; see [`crate::proxy`]).
    pub(crate) upstream: Option<std::path::PathBuf>,
}

/// A transcript file being written, started at the mock's start.
#[derive(Debug)]
pub(crate) struct TranscriptFile(TranscriptWriter);

/// Removes the socket file a listener is bound to.
pub(crate) fn remove_listener_file(listener: &UnixListener) {
    if let Some(path) = bind::listener_path(listener) {
        bind::remove_socket_file(&path);
    }
}

/// Creates (truncates) the transcript file; its clock counts from `origin` (now, unless
/// the caller shares its own clock with the transcript).
pub(crate) fn open_transcript(
    path: &Path,
    origin: Option<Instant>,
) -> Result<TranscriptFile, TranscriptError> {
    TranscriptWriter::create(path, origin.unwrap_or_else(Instant::now)).map(TranscriptFile)
}

impl TranscriptFile {
    /// How far its writer got (see `Progress::wait_written`).
    pub(crate) fn progress(&self) -> Arc<crate::transcript::writer::Progress> {
        self.0.progress()
    }
}

/// Serves the VM on `listener` until it exits or `shutdown` completes, then closes the
/// socket and removes its file.
pub(crate) async fn serve(
    config: ChannelConfig,
    guest: Guest,
    listener: UnixListener,
    life: LifeInbox,
    transcript_file: Option<TranscriptFile>,
    shutdown: impl Future<Output = ()>,
) -> VmEnd {
    serve_host(
        config,
        guest,
        HostSide::Socket(listener),
        life,
        transcript_file,
        shutdown,
    )
    .await
}

/// Where the host's bytes come from.
pub(crate) enum HostSide {
    /// A socket this program listens on: QEMU's chardev (virtio-serial) or qemu-ga's own
    /// (unix-listen), emulated.
    Socket(UnixListener),
    /// Inside a real guest: the agent's virtio-serial port device, open read-write and
    /// non-blocking (see `open_port_device`; virtio-serial only).
    PortDevice(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
}

/// [`serve`] with either host side; a port device serves until the VM exits or `shutdown`
/// completes, and is closed then.
pub(crate) async fn serve_host(
    config: ChannelConfig,
    guest: Guest,
    host: HostSide,
    life: LifeInbox,
    transcript_file: Option<TranscriptFile>,
    shutdown: impl Future<Output = ()>,
) -> VmEnd {
    let writer = transcript_file.map(|file| file.0);
    let transcript = writer.as_ref().map(TranscriptWriter::handle);
    transcript.event("mock-started", Some(config.transport.to_string()));
    if let (Some(t), Some(fields)) = (&transcript, config.setup_record) {
        t.fields("agent-setup", fields);
    }
    // Detached when serving ends, however it ends (even cancelled): declared after the
    // writer, so it goes first, and the writer's thread is not left waiting for the hub.
    let _recording = config
        .faults
        .as_ref()
        .map(|hub| faults::Recording::attach(hub.clone(), transcript.clone()));
    let faults = Interceptor::new(config.faults.clone());
    let path = match &host {
        HostSide::Socket(listener) => bind::listener_path(listener),
        HostSide::PortDevice(_) => None,
    };
    let guest = Arc::new(Mutex::new(guest));
    let status = life.status.clone();
    // Output that waited in the channel before the mock started: the first output.
    let start = config.state.first_start();
    let parser_input = config.state.parser_input;
    let mut pending_output = config.state.pending_output.map(|bytes| {
        let tag = Arc::new(origin::Tag {
            output: status.next_output(),
            origin: crate::transcript::Origin::Preloaded,
            for_conn: None,
        });
        let parts = origin::Parts::whole(bytes.len(), &tag);
        (bytes, parts)
    });
    let first_output = match config.transport {
        Transport::UnixListen => pending_output.take(),
        Transport::VirtioSerial => None,
    };
    let supervisor = |side| Supervisor {
        side,
        guest: guest.clone(),
        config: config.agent.clone(),
        start,
        power: config.power,
        fresh_parser_per_connection: config.fresh_parser_per_connection,
        life,
        transcript: transcript.clone(),
        status: status.clone(),
        faults: faults.clone(),
        parser_input,
        first_output,
        upstream: config.upstream.clone(),
    };
    let end = match (config.transport, host) {
        (_, HostSide::PortDevice(device)) => {
            let port = Arc::new(Port::default());
            if let Some((bytes, parts)) = pending_output {
                port.preload_output(bytes, parts);
            }
            let device = port_device::PortDevice::new(
                device,
                port.clone(),
                transcript.clone(),
                status.clone(),
            );
            let end = tokio::select! {
                biased;
                end = supervisor(Side::VirtioSerial { port }).run(shutdown) => end,
                never = device.run() => match never {},
            };
            if let Some(conn) = status.serving() {
                status.disconnected();
                transcript.conn_event(conn, "disconnected", Some("closed".into()));
            }
            end
        }
        (Transport::VirtioSerial, HostSide::Socket(listener)) => {
            let port = Arc::new(Port::default());
            if let Some((bytes, parts)) = pending_output {
                port.preload_output(bytes, parts);
            }
            let chardev = Chardev::new(
                listener,
                port.clone(),
                config.fresh_parser_per_connection,
                transcript.clone(),
                status.clone(),
                faults.clone(),
            );
            // Biased: no random branch order, so a run is as repeatable as the kernel lets it.
            let end = tokio::select! {
                biased;
                end = supervisor(Side::VirtioSerial { port }).run(shutdown) => end,
                never = chardev.run() => match never {},
            };
            // The chardev is gone, and with it the client's connection: EOF.
            if let Some(conn) = status.serving() {
                status.disconnected();
                transcript.conn_event(conn, "disconnected", Some("vm-exit".into()));
            }
            end
        }
        (Transport::UnixListen, HostSide::Socket(listener)) => {
            supervisor(Side::UnixListen {
                path: path.clone(),
                listener: Some(listener),
            })
            .run(shutdown)
            .await
        }
    };
    if let Some(path) = &path {
        bind::remove_socket_file(path);
    }
    drop(_recording);
    drop(transcript);
    if let Some(writer) = writer {
        writer.finish();
    }
    end
}
