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
//!
//! With the mock inside (`qga-harness guest-agent` on the port device), each case's agent
//! side is loaded into it over the control port before the client starts, and unloaded
//! after; its transcript comes back over the control port and is joined with the host's
//! record by the bytes' places in the streams ([`crate::qemu::join_records`]), so the judge
//! gets the same ground truth as on the simulated channel. Between cases nothing else is
//! reset: closing the port device discards what the guest held for the agent. A case that
//! powers the VM off takes the guest with it (the next case boots a fresh one).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;

use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use super::adapter::BoxFuture;
use super::agent::{AgentLauncher, LaunchError, LaunchRequest, RunningAgent};
use crate::fault::EventKind;
use crate::qemu::{self, BootOptions, FrontRecord, Guest, GuestAgentKind, LoadCase, QemuError};
use crate::scenario::{
    AgentSetup, FaultEntry, Outcome, ProfileSource, StartState, Step, Transport,
};

/// How long a reset (agent restart, drain, thaw) may take before the guest is replaced.
const RESET_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a guest may take to answer `status` after a case before it counts as gone.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts (or reuses) a real guest for each case.
#[derive(Debug)]
pub struct QemuLauncher {
    boot: BootOptions,
    guest: Arc<Mutex<Option<Guest>>>,
    /// The last case asked the real agent to power the guest off, reboot or suspend it:
    /// the guest goes down a second later (the agent answers first), so it may still
    /// pass a reset; the next case gets a fresh one.
    power_asked: Arc<std::sync::atomic::AtomicBool>,
}

impl QemuLauncher {
    pub fn new(boot: BootOptions) -> Self {
        Self {
            boot,
            guest: Arc::new(Mutex::new(None)),
            power_asked: Arc::default(),
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
    if agent.state != StartState::default() {
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

/// Commands the real qemu-ga in the guest (Debian's 7.2) answers as the mock's default
/// profile does: the agent's own answers, and the freeze state of a guest where nothing
/// is frozen ("thawed", a thaw of 0), as the real-guest fidelity test compares them.
const AGENT_OWN_ANSWERS: &[&str] = &[
    "guest-ping",
    "guest-sync",
    "guest-sync-delimited",
    "guest-info",
    "guest-fsfreeze-status",
    "guest-fsfreeze-thaw",
];

/// Why a real guest cannot meet this case's expectations, if it cannot: a step expects a
/// value of the mock's default profile (a pid of 1200, file handle 1000, host name `vm`,
/// its file systems, vCPUs, users...), which a real guest's data do not hold. Such a case
/// would FAIL a correct client; the real agent's own answers are compared with the mock's
/// byte for byte by the fidelity tests instead. A step that also accepts any value of a
/// type, or only `{}`, is not bound to the profile.
pub fn real_guest_lacks_expected_values(steps: &[Step]) -> Option<String> {
    steps.iter().enumerate().find_map(|(index, step)| {
        if AGENT_OWN_ANSWERS.contains(&step.execute.as_str()) {
            return None;
        }
        let outcomes = || step.expect.iter().chain(&step.non_strict);
        if outcomes().any(|o| matches!(o, Outcome::ReturnType(_))) {
            return None;
        }
        let value = outcomes().find_map(|o| match o {
            Outcome::Return(v) | Outcome::ReturnContains(v) if !is_empty_object(v) => Some(v),
            _ => None,
        })?;
        Some(format!(
            "step {} expects {} to return {} from the mock's default profile, which a real guest's data do not hold; run it with --guest-agent mock",
            index + 1,
            step.execute,
            crate::transcript::excerpt(&value.to_string())
        ))
    })
}

/// The commands that take the guest down (or to sleep) a moment after they are answered.
const POWER_COMMANDS: &[&str] = &[
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
];

/// Why the guest built by `qemu-images/` cannot do what a step expects of the mock's
/// default profile, if it cannot: suspend (the image has no swap and no suspend support
/// the agent accepts) or refuse commands in the frozen state (its root is an initramfs,
/// which does not freeze: a freeze freezes nothing and leaves the agent unfrozen).
pub fn real_guest_lacks_capability(steps: &[Step]) -> Option<String> {
    steps.iter().enumerate().find_map(|(index, step)| {
        let outcomes = || step.expect.iter().chain(&step.non_strict);
        let suspend_succeeds = step.execute.starts_with("guest-suspend-")
            && outcomes().any(|o| matches!(o, Outcome::Return(_)));
        let frozen_refusal = outcomes().any(|o| {
            matches!(o, Outcome::Error(e) if e.desc_contains.as_deref().is_some_and(|d| d.contains("frozen state")))
        });
        let lacks = if suspend_succeeds {
            "a guest that can suspend"
        } else if frozen_refusal {
            "a file system that freezes (the agent refuses commands only while something is frozen)"
        } else {
            return None;
        };
        Some(format!(
            "step {} ({}) expects {lacks}, which the mock's default profile has and the guest image does not; run it with --guest-agent mock",
            index + 1,
            step.execute
        ))
    })
}

fn is_empty_object(value: &serde_json::Value) -> bool {
    value.as_object().is_some_and(serde_json::Map::is_empty)
}

/// Why the mock inside the guest cannot reproduce this case, if it cannot.
pub fn mock_inside_cannot_run(agent: &AgentSetup) -> Option<String> {
    if agent.transport != Transport::VirtioSerial {
        return Some(
            "the unix-listen transport is qemu-ga's own socket in the guest, which no host reaches through QEMU; the guest's agent port is virtio-serial".into(),
        );
    }
    let on_connect = agent.faults.iter().any(|entry| {
        let rule = match entry {
            FaultEntry::Rule(rule) => Some(rule.clone()),
            FaultEntry::Spec(spec) => crate::fault::parse_spec(spec).ok(),
        };
        rule.is_some_and(|rule| rule.when.event == EventKind::Connect)
    });
    on_connect.then(|| {
        "a fault fired by the host's connect: inside the guest the agent cannot see host connections (QEMU's chardev owns them)".into()
    })
}

/// The case's agent side as the mock inside the guest takes it: the profile inline (the
/// guest has no scenario files), the case's seed unless the scenario fixes its own.
fn load_case(request: &LaunchRequest<'_>) -> Result<String, LaunchError> {
    let mut agent = request.case.scenario.agent.clone();
    if let Some(ProfileSource::Named(name)) = &agent.profile {
        if name != "default" {
            let base = request.case.path.parent().unwrap_or(Path::new("."));
            let path = base.join(name);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                LaunchError::with_source(format!("cannot read {}", path.display()), e)
            })?;
            let map = serde_json::from_str(&text).map_err(|e| {
                LaunchError::with_source(format!("{}: not a profile", path.display()), e)
            })?;
            agent.profile = Some(ProfileSource::Inline(map));
        }
    }
    let case = LoadCase {
        seed: agent.seed.unwrap_or(request.seed),
        agent,
    };
    let json = serde_json::to_vec(&case)
        .map_err(|e| LaunchError::with_source("cannot encode the case's agent side", e))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(json))
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
    let mock = boot.agent == GuestAgentKind::Mock;
    if let Some(guest) = slot.as_mut() {
        // The mock inside was unloaded at the end of the last case: nothing to reset.
        if guest.exit_status().is_none() && (mock || reset(guest).is_ok()) {
            return Ok(guest.agent_socket().to_owned());
        }
        // Ended, asleep or stuck: replace it.
        drop(slot.take());
    }
    let guest =
        qemu::boot(boot).map_err(|e| LaunchError::with_source("cannot boot the QEMU guest", e))?;
    if !mock {
        drain(guest.agent_socket()).map_err(|e| {
            LaunchError::with_source("the freshly booted guest's agent does not answer", e)
        })?;
    }
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
            let agent = &request.case.scenario.agent;
            let load = match self.boot.agent {
                GuestAgentKind::Real => {
                    let steps = &request.case.scenario.steps;
                    if let Some(reason) = real_agent_cannot_run(agent)
                        .or_else(|| real_guest_lacks_expected_values(steps))
                        .or_else(|| real_guest_lacks_capability(steps))
                    {
                        return Err(LaunchError::unsupported(reason));
                    }
                    None
                }
                GuestAgentKind::Mock => {
                    if let Some(reason) = mock_inside_cannot_run(agent) {
                        return Err(LaunchError::unsupported(reason));
                    }
                    Some(load_case(&request)?)
                }
            };
            // With the mock inside, the host's record is joined with the guest's into the
            // case's transcript at the end.
            let host_path = match load {
                Some(_) => request.transcript.with_extension("host.jsonl"),
                None => request.transcript.to_owned(),
            };
            let record = FrontRecord::create(&host_path).map_err(|e| {
                LaunchError::with_source(format!("cannot create {}", host_path.display()), e)
            })?;
            if load.is_none() {
                // The real agent tells nothing of what it read or wrote: the judge reads
                // the requests from the bytes and pairs replies only by the ids they carry.
                record.event(
                    crate::transcript::BYTES_ONLY_EVENT,
                    Some("the real qemu-ga keeps no records; requests are framed from the client's bytes, replies known only by the id they carry"),
                );
            }
            let boot = self.boot.clone();
            let slot = self.guest.clone();
            let power_asked = self.power_asked.clone();
            let asks_power = request
                .case
                .scenario
                .steps
                .iter()
                .any(|step| POWER_COMMANDS.contains(&step.execute.as_str()));
            let clock = record.clone();
            let (upstream, guest_offset_us) = tokio::task::spawn_blocking(move || {
                let mut slot = lock(&slot);
                if power_asked.swap(asks_power, std::sync::atomic::Ordering::SeqCst) {
                    drop(slot.take());
                }
                let socket = ready_guest(&boot, &mut slot)?;
                let Some(load) = load else {
                    return Ok((socket, None));
                };
                let guest = slot
                    .as_mut()
                    .ok_or_else(|| LaunchError::new("the guest is gone"))?;
                let sent = clock.now_us();
                guest
                    .control()
                    .command(&format!("load {load}"))
                    .map_err(|e| {
                        LaunchError::with_source("cannot load the case into the guest's mock", e)
                    })?;
                let answered = clock.now_us();
                // The guest's transcript clock started between the two.
                let offset = i64::try_from(sent / 2 + answered / 2).unwrap_or(i64::MAX);
                Ok::<_, LaunchError>((socket, Some(offset)))
            })
            .await
            .map_err(|e| LaunchError::with_source("the guest's set-up task failed", e))??;
            let listener = UnixListener::bind(request.socket).map_err(|e| {
                LaunchError::with_source(
                    format!("cannot listen on {}", request.socket.display()),
                    e,
                )
            })?;
            let task = tokio::spawn(qemu::serve_front(listener, upstream, record.clone()));
            let state = &agent.state;
            Ok(Box::new(RunningFront {
                task,
                record,
                socket: request.socket.to_owned(),
                guest: self.guest.clone(),
                inside: guest_offset_us.map(|offset_us| MockInside {
                    offset_us,
                    host_path,
                    transcript: request.transcript.to_owned(),
                    delayed_start: state.starts_late(),
                }),
            }) as Box<dyn RunningAgent>)
        })
    }
}

/// A case served by the mock inside the guest.
struct MockInside {
    /// Guest transcript times plus this are host record times.
    offset_us: i64,
    host_path: PathBuf,
    transcript: PathBuf,
    delayed_start: bool,
}

/// Fetches the in-guest mock's transcript, joins it with the host's record into the
/// case's transcript; says whether the guest must be replaced.
fn finish_inside(guest: Option<&mut Guest>, inside: &MockInside) -> bool {
    let host_text = std::fs::read_to_string(&inside.host_path).unwrap_or_default();
    let host = qemu::parse_lines(host_text.lines());
    let (guest_lines, replace, note) = match guest.map(|g| g.control().finish_case()) {
        Some(Ok(end)) => (end.transcript, end.vm_exit, None),
        Some(Err(e)) => (Vec::new(), true, Some(e.to_string())),
        None => (Vec::new(), true, Some("the guest was gone".to_owned())),
    };
    let guest_records = qemu::parse_lines(guest_lines.iter().map(String::as_str));
    let mut joined = qemu::join_records(&host, &guest_records, inside.offset_us);
    if let Some(note) = note {
        joined.push(serde_json::json!({
            "t_us": joined.last().and_then(|r| r.get("t_us")).cloned().unwrap_or(0.into()),
            "event": "guest-transcript-lost",
            "detail": note,
        }));
    }
    let mut text = String::new();
    for record in &joined {
        text.push_str(&record.to_string());
        text.push('\n');
    }
    if std::fs::write(&inside.transcript, text).is_ok() {
        let _ = std::fs::remove_file(&inside.host_path);
    }
    replace
}

struct RunningFront {
    task: JoinHandle<()>,
    record: FrontRecord,
    socket: PathBuf,
    guest: Arc<Mutex<Option<Guest>>>,
    inside: Option<MockInside>,
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
            let inside = self.inside;
            let _ = tokio::task::spawn_blocking(move || {
                let mut slot = lock(&slot);
                if let Some(inside) = &inside {
                    if finish_inside(slot.as_mut(), inside) {
                        drop(slot.take());
                        return;
                    }
                }
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

    fn client_began(&self) -> BoxFuture<'static, ()> {
        let delayed = self
            .inside
            .as_ref()
            .is_some_and(|inside| inside.delayed_start);
        let slot = self.guest.clone();
        Box::pin(async move {
            if !delayed {
                return;
            }
            // The agent's delayed start counts from here, as on the simulated channel.
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(guest) = lock(&slot).as_mut() {
                    let _ = guest.control().command("begin");
                }
            })
            .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// No reason where none is wanted; where one is, a reason that contains it.
    fn assert_reason(want: Option<&str>, got: Option<String>) {
        match (want, &got) {
            (None, None) => {}
            (Some(want), Some(got)) => assert!(got.contains(want), "{got}"),
            _ => panic!("expected {want:?}, got {got:?}"),
        }
    }

    fn steps(value: serde_json::Value) -> Vec<Step> {
        serde_json::from_value(value).expect("steps")
    }

    /// A value of the mock's default profile cannot be met by a real guest (UNSUPPORTED);
    /// the agent's own answers, `{}`, a type and errors can.
    #[rstest]
    #[case::exec_pid(
        serde_json::json!([{"execute": "guest-exec", "arguments": {"path": "/bin/true"}, "timeout_ms": 400, "expect": [{"return": {"pid": 1200}}]}]),
        Some("step 1 expects guest-exec to return {\"pid\":1200}")
    )]
    #[case::host_name_contains(
        serde_json::json!([
            {"execute": "guest-ping", "timeout_ms": 400, "expect": [{"return": {}}]},
            {"execute": "guest-get-host-name", "timeout_ms": 400, "expect": [{"return-contains": {"host-name": "vm"}}]}
        ]),
        Some("step 2 expects guest-get-host-name")
    )]
    #[case::file_handle_non_strict(
        serde_json::json!([{"execute": "guest-file-open", "arguments": {"path": "/tmp/x"}, "timeout_ms": 400,
            "expect": [{"client-error": {"class": "Timeout"}}], "non_strict": [{"return": 1000}]}]),
        Some("guest-file-open to return 1000")
    )]
    #[case::agent_own(
        serde_json::json!([{"execute": "guest-info", "timeout_ms": 400, "expect": [{"return-contains": {"version": "7.2.22"}}]}]),
        None
    )]
    #[case::empty(
        serde_json::json!([{"execute": "guest-set-time", "timeout_ms": 400, "expect": [{"return": {}}]}]),
        None
    )]
    #[case::typed(
        serde_json::json!([{"execute": "guest-get-host-name", "timeout_ms": 400,
            "expect": [{"return-contains": {"host-name": "vm"}}, {"return-type": "object"}]}]),
        None
    )]
    #[case::error(
        serde_json::json!([{"execute": "guest-file-open", "arguments": {"path": "/nonexistent"}, "timeout_ms": 400,
            "expect": [{"error": {"class": "GenericError"}}]}]),
        None
    )]
    fn expectations_a_real_guest_cannot_meet(
        #[case] value: serde_json::Value,
        #[case] reason: Option<&str>,
    ) {
        assert_reason(reason, real_guest_lacks_expected_values(&steps(value)));
    }

    #[rstest]
    #[case::suspend_disk(
        serde_json::json!([{"execute": "guest-suspend-disk", "timeout_ms": 3000, "expect": [{"return": {}}]}]),
        Some("step 1 (guest-suspend-disk) expects a guest that can suspend")
    )]
    #[case::frozen(
        serde_json::json!([
            {"execute": "guest-fsfreeze-freeze", "timeout_ms": 400, "expect": [{"return-type": "integer"}]},
            {"execute": "guest-fsfreeze-freeze", "timeout_ms": 400, "expect": [{"error": {"class": "CommandNotFound", "desc_contains": "frozen state"}}]}
        ]),
        Some("step 2 (guest-fsfreeze-freeze) expects a file system that freezes")
    )]
    #[case::suspend_refused(
        serde_json::json!([{"execute": "guest-suspend-ram", "timeout_ms": 3000, "expect": [{"error": {"class": "GenericError"}}]}]),
        None
    )]
    #[case::shutdown(
        serde_json::json!([{"execute": "guest-shutdown", "timeout_ms": 3000, "expect": [{"return": {}}]}]),
        None
    )]
    fn capabilities_the_guest_image_lacks(
        #[case] value: serde_json::Value,
        #[case] reason: Option<&str>,
    ) {
        assert_reason(reason, real_guest_lacks_capability(&steps(value)));
    }
}
