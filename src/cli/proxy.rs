//! `qga-harness proxy`: the fault proxy in front of a real agent's socket.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use super::mock::Usage;
use super::process::{error_chain, runtime_with_shutdown, Shutdown, Threads};
use crate::channel::{bind_socket, Transport};
use crate::fault;
use crate::scenario::Scenario;

/// Listens on a socket and forwards every request to a real agent, carrying out fault
/// rules on the way (the mock's rules, control socket and transcript), until SIGINT or
/// SIGTERM; then removes its socket.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The unix socket clients connect to (a stale socket file there is replaced).
    #[arg(long, value_name = "PATH")]
    listen: PathBuf,

    /// The real agent's unix socket: qemu-ga's own (`-m unix-listen`) or the chardev socket
    /// of a guest's virtio-serial port.
    #[arg(long, value_name = "PATH")]
    upstream: PathBuf,

    /// The proxy's own socket semantics: virtio-serial (default: one client at a time, the
    /// socket outlives the agent) or unix-listen.
    #[arg(long, value_enum)]
    transport: Option<Transport>,

    /// Take the fault rules, seed and transport of a scenario file's agent side.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,

    /// A fault rule in the compact syntax (see the README, "Faults"); repeatable, added
    /// after the scenario's rules.
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<String>,

    /// The seed of the proxy's random source (default: the scenario's, else 0).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// A control socket to change the faults and drive the proxied agent's life at run
    /// time (`qga-harness ctl --control PATH`).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,

    /// Record every byte both ways (client and real agent), every event and every fault
    /// that fired in FILE, as JSON lines.
    #[arg(long, value_name = "FILE")]
    transcript: Option<PathBuf>,
}

/// The upstream must be a unix socket now; a missing one is a set-up mistake.
fn check_upstream(path: &std::path::Path) -> Result<(), Usage> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Usage(format!(
            "--upstream {}: {e}; start the real agent first (qemu-ga -m unix-listen -p PATH, or a guest's chardev socket)",
            path.display()
        ))
    })?;
    if !meta.file_type().is_socket() {
        return Err(Usage(format!(
            "--upstream {}: not a unix socket; give the real agent's socket",
            path.display()
        )));
    }
    Ok(())
}

async fn serve(args: ProxyArgs, shutdown: Shutdown) -> Result<(), Usage> {
    check_upstream(&args.upstream)?;
    let mut builder = crate::proxy::builder(&args.upstream);
    if let Some(path) = &args.scenario {
        let scenario = Scenario::load(path).map_err(|e| Usage(error_chain(&e)))?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        builder = builder
            .scenario_agent(&scenario.agent, base)
            .map_err(|e| Usage(format!("{}: {}", path.display(), error_chain(&e))))?;
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
    if let Some(path) = &args.transcript {
        builder = builder.transcript(path);
    }
    let listener = bind_socket(&args.listen).map_err(|e| Usage(error_chain(&e)))?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| Usage(format!("cannot use socket {}: {e}", args.listen.display())))?;
    builder
        .serve(listener, shutdown.into_wait())
        .await
        .map_err(|e| Usage(error_chain(&e)))?;
    Ok(())
}

pub fn run(args: ProxyArgs) -> i32 {
    let started = runtime_with_shutdown(Threads::One);
    let (runtime, shutdown) = match started {
        Ok(started) => started,
        Err(message) => {
            eprintln!("qga-harness proxy: {message}");
            return 2;
        }
    };
    match runtime.block_on(async { tokio::spawn(serve(args, shutdown)).await }) {
        Ok(Ok(())) => 0,
        Ok(Err(Usage(message))) => {
            eprintln!("qga-harness proxy: {message}");
            2
        }
        Err(e) => {
            eprintln!("qga-harness proxy: the proxy failed: {e}");
            1
        }
    }
}
