//! `qga-harness mock --fleet N --dir DIR`: N mock agents in one process.

use std::io::Write;
use std::sync::Arc;

use super::process::{runtime_with_shutdown, Shutdown, Threads};

use super::mock::MockArgs;
use crate::channel::bind_socket;
use crate::fleet::{self, Fleet, FleetConfig, Shares};
use crate::guest::Profile;

/// Descriptors kept free beyond one per agent: client connections, the control socket,
/// stdio and the runtime's own.
const SPARE_DESCRIPTORS: u64 = 256;

pub fn run(args: MockArgs) -> i32 {
    match execute(args) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("qga-harness mock --fleet: {message}");
            2
        }
    }
}

fn execute(args: MockArgs) -> Result<(), String> {
    let count = args.fleet.unwrap_or(0);
    if count == 0 {
        return Err("--fleet needs at least 1 agent".into());
    }
    let Some(dir) = args.dir.clone() else {
        return Err("--fleet needs --dir DIR for the sockets".into());
    };
    let shares = Shares {
        dead: args.dead / 100.0,
        slow: args.slow / 100.0,
        hostile: args.hostile / 100.0,
    };
    shares.check()?;
    let limit = fleet::raise_open_file_limit(count as u64 + SPARE_DESCRIPTORS)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the socket directory {}: {e}", dir.display()))?;
    let profile = match &args.profile {
        Some(path) => Some(Profile::load(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let config = FleetConfig {
        count,
        dir: dir.clone(),
        transport: args.transport.unwrap_or_default(),
        shares,
        seed: args.seed.unwrap_or(0),
        profile,
    };
    let (runtime, shutdown) = runtime_with_shutdown(Threads::per_core())?;
    runtime.block_on(serve(config, args.control, limit, shutdown))
}

async fn serve(
    config: FleetConfig,
    control: Option<std::path::PathBuf>,
    limit: fleet::OpenFileLimit,
    mut shutdown: Shutdown,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let fleet = Fleet::start(config).await.map_err(|e| e.to_string())?;
    let totals = fleet.totals();
    eprintln!(
        "qga-harness mock --fleet: {} agents in {} ({} healthy, {} dead, {} slow, {} hostile), started in {:.2} s; open-file limit {} (hard {})",
        totals.agents,
        fleet.dir().display(),
        totals.healthy,
        totals.dead,
        totals.slow,
        totals.hostile,
        started.elapsed().as_secs_f64(),
        limit.soft,
        limit.hard
    );
    let fleet = Arc::new(tokio::sync::Mutex::new(fleet));
    let control_task = match &control {
        Some(path) => {
            let listener = bind_socket(path).map_err(|e| e.to_string())?;
            let listener = tokio::net::UnixListener::from_std(listener)
                .map_err(|e| format!("cannot use the control socket {}: {e}", path.display()))?;
            Some(tokio::spawn(fleet::serve_control(listener, fleet.clone())))
        }
        None => None,
    };
    {
        // The line a supervisor waits for: every socket exists.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    shutdown.wait().await;
    if let Some(task) = control_task {
        task.abort();
    }
    if let Some(path) = &control {
        let _ = std::fs::remove_file(path);
    }
    let mut fleet = fleet.lock().await;
    let mut out = std::io::stdout().lock();
    for agent in fleet.summary() {
        let _ = writeln!(out, "{}", serde_json::to_string(&agent).unwrap_or_default());
    }
    let totals = fleet.totals();
    let _ = writeln!(out, "{}", serde_json::json!({"totals": totals}));
    let _ = out.flush();
    eprintln!(
        "qga-harness mock --fleet: served {} requests over {} agents",
        totals.requests, totals.agents
    );
    fleet.shutdown().await;
    Ok(())
}
