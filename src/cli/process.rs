//! What every subcommand needs of its process, in one place: the async runtime, the
//! shutdown signals, the socket-path check and errors printed with their causes.

use std::path::Path;

use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// How many threads the runtime runs tasks on.
#[derive(Clone, Copy, Debug)]
pub(super) enum Threads {
    /// The calling thread only: the mock, the proxy and the one-connection clients, where
    /// one thread has the shortest path from a socket event to the reply.
    One,
    /// A pool of worker threads (at least 1).
    Workers(usize),
}

impl Threads {
    /// One worker per core.
    pub(super) fn per_core() -> Threads {
        Threads::Workers(std::thread::available_parallelism().map_or(2, usize::from))
    }
}

/// The runtime every subcommand runs on: I/O and timers enabled.
pub(super) fn runtime(threads: Threads) -> Result<Runtime, String> {
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::Workers(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n.max(1));
            builder
        }
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// A runtime with SIGINT and SIGTERM caught on it: what every long-running command
/// starts with, before anything binds.
pub(super) fn runtime_with_shutdown(threads: Threads) -> Result<(Runtime, Shutdown), String> {
    let runtime = runtime(threads)?;
    let shutdown = Shutdown::catch(&runtime)?;
    Ok((runtime, shutdown))
}

/// SIGINT (Ctrl-C) and SIGTERM, caught from the moment this is made: a signal that
/// arrives before anyone waits is kept, not lost, and neither kills the process before
/// it could clean up (sockets removed, guests stopped, reports written).
pub(super) struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    /// Installs the handlers in `runtime`.
    pub(super) fn catch(runtime: &Runtime) -> Result<Shutdown, String> {
        let _context = runtime.enter();
        let interrupt =
            signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
        let terminate =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        Ok(Shutdown {
            interrupt,
            terminate,
        })
    }

    /// Completes on the next SIGINT or SIGTERM (or on one that came since the last wait).
    pub(super) async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    /// Completes on the next SIGINT or SIGTERM, owning the handlers (for a server's
    /// shutdown future).
    pub(super) async fn into_wait(mut self) {
        self.wait().await;
    }
}

/// Rejects a path that cannot name a unix socket (empty, or longer than `sun_path`
/// holds) before anything connects or binds, with the message the bind gives.
pub(super) fn check_socket_path(path: &Path) -> Result<(), String> {
    crate::channel::check_socket_path(path).map_err(|e| e.to_string())
}

/// The error and every cause under it, each cause on a line of its own.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!("\n  caused by: {cause}"));
        source = cause.source();
    }
    text
}
