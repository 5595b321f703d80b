//! A real QEMU guest as the agent side of a case (`run --target qemu`).
//!
//! One guest serves case after case: between cases its agent is restarted through the
//! control port and the channel drained (a `guest-sync-delimited` with a fresh id, read up
//! to its reply) and thawed; a guest that ended (guest-shutdown), went to sleep
//! (guest-suspend-*) or cannot be reset is dropped (QEMU killed, its sockets removed) and a
//! fresh one booted. The client connects to a socket of the harness in front of QEMU's
//! chardev socket ([`crate::qemu::serve_front`]), which records the host side.
//!
//! With the real qemu-ga inside, a case runs only when its agent side is the real agent's
//! own behaviour (no fault rules, no scripted state, no other version or command lists);
//! every other case is UNSUPPORTED with the reason.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use super::adapter::BoxFuture;
use super::agent::{AgentLauncher, LaunchError, LaunchRequest, RunningAgent};
use crate::qemu::{self, BootOptions, FrontRecord, Guest, GuestAgentKind, QemuError};
use crate::scenario::{AgentSetup, AgentState, Transport};

/// How long a reset (agent restart, drain, thaw) may take before the guest is replaced.
const RESET_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a guest may take to answer `status` after a case before it counts as gone.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts (or reuses) a real guest for each case.
#[derive(Debug)]
pub struct QemuLauncher {
    boot: BootOptions,
    guest: Arc<Mutex<Option<Guest>>>,
}

impl QemuLauncher {
    pub fn new(boot: BootOptions) -> Self {
        Self {
            boot,
            guest: Arc::new(Mutex::new(None)),
        }
    }

    /// Boots the first guest now, so a bad environment shows before any case runs.
    /// Blocking.
    pub fn prepare(&self) -> Result<Duration, QemuError> {
        let mut slot = lock(&self.guest);
        let guest = qemu::boot(&self.boot)?;
        let boot_time = guest.boot_time;
        *slot = Some(guest);
        Ok(boot_time)
    }

    /// Kills the guest and removes its sockets. Blocking.
    pub fn shut_down(&self) {
        drop(lock(&self.guest).take());
    }

    /// QEMU's resident memory and its peak, in KiB, when a guest runs.
    pub fn guest_rss_kib(&self) -> Option<(u64, u64)> {
        lock(&self.guest).as_ref().and_then(Guest::rss_kib)
    }
}

fn lock(guest: &Mutex<Option<Guest>>) -> MutexGuard<'_, Option<Guest>> {
    guest.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why the real qemu-ga cannot stand for this case's agent side, if it cannot.
pub fn real_agent_cannot_run(agent: &AgentSetup) -> Option<String> {
    let mut needs = Vec::new();
    if !agent.faults.is_empty() {
        needs.push("scripted faults");
    }
    if agent.state != AgentState::default() {
        needs.push("a scripted agent state");
    }
    if agent.version.is_some() {
        needs.push("another agent version");
    }
    if !agent.block_rpcs.is_empty() || agent.allow_rpcs.is_some() {
        needs.push("block or allow lists");
    }
    if agent.profile.is_some() {
        needs.push("a guest profile");
    }
    if agent.transport != Transport::VirtioSerial {
        needs.push("the unix-listen transport");
    }
    (!needs.is_empty()).then(|| {
        format!(
            "the real qemu-ga in the guest cannot reproduce {}; run it with --guest-agent mock",
            needs.join(", ")
        )
    })
}

/// Makes the guest's agent and channel fresh: a new agent process, nothing left in the
/// port, file systems thawed.
fn reset(guest: &mut Guest) -> Result<(), String> {
    guest
        .control()
        .command_with_timeout("restart", RESET_TIMEOUT)
        .map_err(|e| e.to_string())?;
    drain(guest.agent_socket()).map_err(|e| format!("draining the agent's channel: {e}"))
}

/// Reads everything a previous client left in the channel, up to the reply to a sync of
/// our own, and thaws the file systems.
fn drain(socket: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + RESET_TIMEOUT;
    let mut stream = UnixStream::connect(socket)?;
    let id: u32 = rand::random::<u32>() >> 1;
    // 0xFF resets the agent's parser (half a request a client left behind).
    stream.write_all(&[0xFF])?;
    stream.write_all(
        format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}")
            .as_bytes(),
    )?;
    let want = format!("{{\"return\": {id}}}\n");
    read_until(&mut stream, want.as_bytes(), deadline)?;
    stream.write_all(b"{\"execute\":\"guest-fsfreeze-thaw\"}")?;
    read_until(&mut stream, b"\n", deadline)?;
    Ok(())
}

fn read_until(stream: &mut UnixStream, end: &[u8], deadline: Instant) -> std::io::Result<()> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(end.len()).any(|w| w == end) {
            return Ok(());
        }
        // Only the tail can still hold the end.
        if seen.len() > 1 << 20 {
            seen.drain(..seen.len() - end.len());
        }
    }
}

/// A guest ready for a case: reset, or booted afresh. Blocking.
fn ready_guest(boot: &BootOptions, slot: &mut Option<Guest>) -> Result<PathBuf, LaunchError> {
    if let Some(guest) = slot.as_mut() {
        if guest.exit_status().is_none() && reset(guest).is_ok() {
            return Ok(guest.agent_socket().to_owned());
        }
        // Ended, asleep or stuck: replace it.
        drop(slot.take());
    }
    let guest =
        qemu::boot(boot).map_err(|e| LaunchError::with_source("cannot boot the QEMU guest", e))?;
    drain(guest.agent_socket()).map_err(|e| {
        LaunchError::with_source("the freshly booted guest's agent does not answer", e)
    })?;
    let socket = guest.agent_socket().to_owned();
    *slot = Some(guest);
    Ok(socket)
}

impl AgentLauncher for QemuLauncher {
    fn launch<'a>(
        &'a self,
        request: LaunchRequest<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn RunningAgent>, LaunchError>> {
        Box::pin(async move {
            if self.boot.agent == GuestAgentKind::Real {
                if let Some(reason) = real_agent_cannot_run(&request.case.scenario.agent) {
                    return Err(LaunchError::unsupported(reason));
                }
            }
            let boot = self.boot.clone();
            let slot = self.guest.clone();
            let upstream = tokio::task::spawn_blocking(move || {
                let mut slot = lock(&slot);
                ready_guest(&boot, &mut slot)
            })
            .await
            .map_err(|e| LaunchError::with_source("the guest's set-up task failed", e))??;
            let record = FrontRecord::create(request.transcript).map_err(|e| {
                LaunchError::with_source(
                    format!("cannot create {}", request.transcript.display()),
                    e,
                )
            })?;
            let listener = UnixListener::bind(request.socket).map_err(|e| {
                LaunchError::with_source(
                    format!("cannot listen on {}", request.socket.display()),
                    e,
                )
            })?;
            let task = tokio::spawn(qemu::serve_front(listener, upstream, record.clone()));
            Ok(Box::new(RunningFront {
                task,
                record,
                socket: request.socket.to_owned(),
                guest: self.guest.clone(),
            }) as Box<dyn RunningAgent>)
        })
    }
}

struct RunningFront {
    task: JoinHandle<()>,
    record: FrontRecord,
    socket: PathBuf,
    guest: Arc<Mutex<Option<Guest>>>,
}

impl RunningAgent for RunningFront {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.task.abort();
            let _ = self.task.await;
            self.record.flush();
            let _ = std::fs::remove_file(&self.socket);
            // A guest the case ended or put to sleep is replaced now, not at the next case.
            let slot = self.guest.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let mut slot = lock(&slot);
                let alive = slot.as_mut().is_some_and(|guest| {
                    guest.exit_status().is_none()
                        && guest
                            .control()
                            .command_with_timeout("status", ALIVE_TIMEOUT)
                            .is_ok()
                });
                if !alive {
                    drop(slot.take());
                }
            })
            .await;
        })
    }
}
