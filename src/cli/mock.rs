//! `qga-harness mock`: runs a mock qemu-ga behind a unix socket.

use std::path::PathBuf;
use std::time::Duration;

use super::process::{error_chain, runtime_with_shutdown, Shutdown, Threads};
use crate::channel::bind_socket;
use crate::fault;
use crate::scenario::Scenario;
use crate::{MockAgent, MockAgentBuilder, Transport};

/// Runs a mock qemu-ga behind a unix socket until SIGINT or SIGTERM (or until the emulated
/// VM powers off after guest-shutdown), then removes the socket.
#[derive(Debug, clap::Args)]
pub struct MockArgs {
    /// The unix socket to create (a stale socket file there is replaced).
    #[arg(long, value_name = "PATH", required_unless_present = "fleet")]
    socket: Option<PathBuf>,

    /// Run N agents in this process, one socket each (DIR/vm-00001.sock, ...), each with
    /// its own host name and interface addresses; needs --dir.
    #[arg(long, value_name = "N", requires = "dir", conflicts_with_all = ["socket", "scenario", "replay", "transcript"])]
    pub(crate) fleet: Option<usize>,

    /// The directory of the fleet's sockets (created when missing).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,

    /// The share of the fleet's agents that are not running, in percent (seeded).
    #[arg(long, value_name = "PCT", default_value_t = 0.0, requires = "fleet")]
    pub(crate) dead: f64,

    /// The share of the fleet's agents that answer 100-400 ms late, in percent (seeded).
    #[arg(long, value_name = "PCT", default_value_t = 0.0, requires = "fleet")]
    pub(crate) slow: f64,

    /// The share of the fleet's agents that send wrong sync ids and stale replies, in
    /// percent (seeded).
    #[arg(long, value_name = "PCT", default_value_t = 0.0, requires = "fleet")]
    pub(crate) hostile: f64,

    /// virtio-serial (the default): QEMU's chardev socket in front of the agent (the socket
    /// outlives the agent, one client at a time). unix-listen: qemu-ga's own socket
    /// (`-m unix-listen`).
    #[arg(long, value_enum)]
    pub(crate) transport: Option<Transport>,

    /// Serve the agent side of a scenario file: its profile, transport, version, block and
    /// allow lists, seed, state and faults. Other options override it.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    scenario: Option<PathBuf>,

    /// Serve the agent side recorded in a transcript (written with --transcript), to rerun
    /// what a client saw: the same seed and client bytes give the same agent bytes.
    #[arg(long, value_name = "TRANSCRIPT")]
    replay: Option<PathBuf>,

    /// A fault rule in the compact syntax, e.g. 'guest-ping@3:die-mid-reply=10,restart=500ms'
    /// (see the README, "Faults"); repeatable, added after the scenario's rules.
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<String>,

    /// The seed of the mock's random source (default: the scenario's, else 0).
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,

    /// A control socket (JSON lines) to change the faults and drive the agent's life at
    /// run time; `qga-harness ctl --control PATH` talks to it.
    #[arg(long, value_name = "PATH")]
    pub(crate) control: Option<PathBuf>,

    /// The simulated guest, as a JSON profile (default: a built-in Linux guest).
    #[arg(long, value_name = "FILE")]
    pub(crate) profile: Option<PathBuf>,

    /// Commands to disable, comma-separated (qemu-ga's --block-rpcs); replaces the
    /// profile's list.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    block_rpcs: Option<Vec<String>>,

    /// The only commands to enable, comma-separated (qemu-ga's --allow-rpcs); replaces the
    /// profile's list.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    allow_rpcs: Option<Vec<String>>,

    /// Record every byte both ways and every life event in FILE, as JSON lines.
    #[arg(long, value_name = "FILE")]
    transcript: Option<PathBuf>,

    /// Start the agent MS milliseconds after the socket exists (a booting guest).
    #[arg(long, value_name = "MS")]
    start_delay: Option<u64>,

    /// Give every client a fresh parser (the real agent keeps a gone client's partial input).
    #[arg(long)]
    fresh_parser_per_connection: bool,
}

/// A failure that ends the command with exit code 2.
#[derive(Debug)]
pub(super) struct Usage(pub(super) String);

/// The builder the options describe: the scenario's or transcript's agent first, then
/// the options over it.
fn builder(args: &MockArgs) -> Result<MockAgentBuilder, Usage> {
    let mut builder = MockAgent::builder();
    if let Some(path) = &args.scenario {
        let scenario = Scenario::load(path).map_err(|e| Usage(error_chain(&e)))?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        builder = builder
            .scenario_agent(&scenario.agent, base)
            .map_err(|e| Usage(format!("{}: {}", path.display(), error_chain(&e))))?;
    }
    if let Some(path) = &args.replay {
        builder = builder.replay(path).map_err(|e| Usage(error_chain(&e)))?;
    }
    if let Some(transport) = args.transport {
        builder = builder.transport(transport);
    }
    if let Some(seed) = args.seed {
        builder = builder.seed(seed);
    }
    for spec in &args.faults {
        let rule = fault::parse_spec(spec).map_err(|e| Usage(format!("--fault: {e}")))?;
        builder = builder.fault(rule);
    }
    if let Some(path) = &args.control {
        builder = builder.control(path);
    }
    Ok(builder)
}

async fn serve(args: MockArgs, shutdown: Shutdown) -> Result<(), Usage> {
    let mut builder = builder(&args)?.fresh_parser_per_connection(args.fresh_parser_per_connection);
    if let Some(path) = &args.profile {
        builder = builder
            .profile_file(path)
            .map_err(|e| Usage(error_chain(&e)))?;
    }
    if let Some(block) = args.block_rpcs {
        builder = builder.block_rpcs(block);
    }
    if let Some(allow) = args.allow_rpcs {
        builder = builder.allow_rpcs(allow);
    }
    if let Some(ms) = args.start_delay {
        builder = builder.start_delay(Duration::from_millis(ms));
    }
    if let Some(path) = &args.transcript {
        builder = builder.transcript(path);
    }
    let Some(socket) = &args.socket else {
        return Err(Usage("--socket is needed".into()));
    };
    let listener = bind_socket(socket).map_err(|e| Usage(error_chain(&e)))?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| Usage(format!("cannot use socket {}: {e}", socket.display())))?;
    builder
        .serve(listener, shutdown.into_wait())
        .await
        .map_err(|e| Usage(error_chain(&e)))?;
    Ok(())
}

pub fn run(args: MockArgs) -> i32 {
    if args.fleet.is_some() {
        return super::fleet::run(args);
    }
    // One thread: the agent is single-threaded, and a current-thread runtime has the
    // shortest path from a socket event to the reply.
    let started = runtime_with_shutdown(Threads::One);
    let (runtime, shutdown) = match started {
        Ok(started) => started,
        Err(message) => {
            eprintln!("qga-harness mock: {message}");
            return 2;
        }
    };
    // Served from a spawned task rather than as the block_on future: a spawned task that
    // wakes itself (the chardev and the agent take turns) is simply queued again, while a
    // block_on future that wakes itself costs a round through the I/O driver each time.
    match runtime.block_on(async { tokio::spawn(serve(args, shutdown)).await }) {
        Ok(Ok(())) => 0,
        Ok(Err(Usage(message))) => {
            eprintln!("qga-harness mock: {message}");
            2
        }
        Err(e) => {
            eprintln!("qga-harness mock: the mock failed: {e}");
            1
        }
    }
}
