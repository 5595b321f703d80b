//! The libvirt client adapter: one domain for the whole run, each case's mock handed to
//! libvirt by restarting the guest's agent, each step a virsh call.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Mutex;

use super::daemon::Daemons;
use super::domain::{destroy_stale_domains, Domain, DomainSpec, DOMAIN_PREFIX};
use super::relay::Relay;
use super::LibvirtError;
use crate::qemu::{build_image, Control, ImageOptions};
use crate::runner::{
    Answer, BoxFuture, FailureClass, InProcessClient, InProcessSession, StepRequest, UNKNOWN_CLASS,
};

/// The time scale a libvirt run uses by default: the catalogue's 200-400 ms timeouts
/// become 1-2 s, which libvirt's whole-second timeouts can express.
pub const DEFAULT_TIME_SCALE: u64 = 5;

/// How long the guest may take to boot (6.6 s measured cold, TCG; a loaded machine more).
const BOOT_LIMIT: Duration = Duration::from_secs(90);

/// How long libvirt may take to connect to a case's mock after the guest's agent restarts.
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// The start-up allowance per case (a restart of the guest's agent and libvirt's
/// reconnection take 1-3 s; the first case also boots the domain).
const STARTUP: Duration = Duration::from_secs(30);

/// Settings of a libvirt run.
#[derive(Clone, Debug)]
pub struct LibvirtOptions {
    /// Where the guest image is built and cached.
    pub image_cache: PathBuf,
    /// Where the daemons' pid files and logs, the relay and the domain's files go (must be
    /// reachable by the `libvirt-qemu` user: not under a 0700 directory).
    pub run_dir: PathBuf,
}

impl LibvirtOptions {
    /// Defaults under the system's temp dir.
    pub fn new() -> Self {
        let tmp = std::env::temp_dir();
        LibvirtOptions {
            image_cache: tmp.join("qga-harness-image"),
            run_dir: tmp.join(format!("qga-harness-libvirt-{}", std::process::id())),
        }
    }
}

impl Default for LibvirtOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// What the run holds: dropped in order, the domain before the daemons.
struct Live {
    control: Arc<StdMutex<Control>>,
    relay: Relay,
    domain: Domain,
    _daemons: Daemons,
}

/// Real libvirt as the client under test (see the module docs).
pub struct LibvirtClient {
    options: LibvirtOptions,
    live: Mutex<Option<Live>>,
    /// Set once a start failed: every later case fails at once with it.
    failed: StdMutex<Option<String>>,
}

impl LibvirtClient {
    /// Starts the daemons (or uses running ones) and builds the guest image; the domain
    /// boots with the first case. Blocking: call it before the run, outside the runtime's
    /// workers or in `spawn_blocking`.
    pub fn prepare(options: LibvirtOptions) -> Result<(LibvirtClient, Daemons), LibvirtError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&options.run_dir).map_err(|e| {
            LibvirtError::io(format!("cannot create {}", options.run_dir.display()), e)
        })?;
        // QEMU runs as libvirt-qemu: it must reach the relay and the console here.
        let _ = std::fs::set_permissions(&options.run_dir, std::fs::Permissions::from_mode(0o755));
        let daemons = Daemons::ensure(&options.run_dir)?;
        destroy_stale_domains();
        build_image(&ImageOptions {
            cache_dir: options.image_cache.clone(),
            ..ImageOptions::default()
        })
        .map_err(|e| LibvirtError::Guest(e.to_string()))?;
        Ok((
            LibvirtClient {
                options,
                live: Mutex::new(None),
                failed: StdMutex::new(None),
            },
            daemons,
        ))
    }

    /// Destroys the domain and stops what this run started.
    pub async fn close(&self) {
        let live = self.live.lock().await.take();
        if let Some(live) = live {
            let _ = tokio::task::spawn_blocking(move || drop(live)).await;
        }
    }

    async fn boot(&self, daemons: Daemons) -> Result<Live, LibvirtError> {
        let image = build_image(&ImageOptions {
            cache_dir: self.options.image_cache.clone(),
            ..ImageOptions::default()
        })
        .map_err(|e| LibvirtError::Guest(e.to_string()))?;
        let dir = self.options.run_dir.clone();
        let agent_socket = dir.join("agent-relay.sock");
        let control_socket = dir.join("control.sock");
        let _ = std::fs::remove_file(&agent_socket);
        let _ = std::fs::remove_file(&control_socket);
        let relay = Relay::bind(&agent_socket).map_err(|e| {
            LibvirtError::io(format!("cannot listen at {}", agent_socket.display()), e)
        })?;
        relay.expect_qemu();
        let name = format!("{DOMAIN_PREFIX}{}-1", std::process::id());
        let console = dir.join("console.log");
        let spec_dir = dir.clone();
        let domain = tokio::task::spawn_blocking(move || {
            Domain::create(
                &name,
                &DomainSpec {
                    kernel: &image.kernel,
                    initrd: &image.initrd,
                    agent_socket: &agent_socket,
                    control_socket: &control_socket,
                    console: &console,
                    kernel_args: "qgah.agent=real",
                },
                &spec_dir,
            )
            .map(|domain| (domain, control_socket))
        })
        .await
        .map_err(|e| LibvirtError::Guest(format!("domain creation panicked: {e}")))??;
        let (domain, control_socket) = domain;
        let control = tokio::task::spawn_blocking(move || wait_ready(&control_socket))
            .await
            .map_err(|e| LibvirtError::Guest(format!("boot wait panicked: {e}")))?;
        let control = match control {
            Ok(control) => control,
            Err(e) => {
                let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
                drop(domain);
                let tail: String = console
                    .chars()
                    .rev()
                    .take(600)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(LibvirtError::Guest(format!(
                    "the guest did not report ready within {} s: {e}; console: {tail}",
                    BOOT_LIMIT.as_secs()
                )));
            }
        };
        Ok(Live {
            control: Arc::new(StdMutex::new(control)),
            relay,
            domain,
            _daemons: daemons,
        })
    }

    /// Hands the case's mock at `socket` to libvirt; returns the domain's name.
    async fn attach(&self, socket: &Path) -> Result<String, String> {
        if let Some(why) = self
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Err(why);
        }
        let mut guard = self.live.lock().await;
        let first = guard.is_none();
        if first {
            let run_dir = self.options.run_dir.clone();
            let daemons = tokio::task::spawn_blocking(move || Daemons::ensure(&run_dir))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string());
            let live = match daemons {
                Ok(daemons) => self.boot(daemons).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match live {
                Ok(live) => *guard = Some(live),
                Err(why) => {
                    *self.failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(why.clone());
                    return Err(why);
                }
            }
        }
        let Some(live) = guard.as_mut() else {
            return Err("no domain".into());
        };
        live.relay.set_target(socket);
        let before = live.relay.relayed();
        {
            // The guest's agent closes and reopens its port: libvirt drops its connection
            // (with any error state) and opens a new one, which reaches this case's mock.
            // The first case too: libvirt may have opened the channel while the domain
            // started, before the relay had a target, and would not open it again.
            let control = live.control.clone();
            tokio::task::spawn_blocking(move || {
                control
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .command("restart")
                    .map(|_| ())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot restart the guest's agent: {e}"))?;
        }
        tokio::time::timeout(CONNECT_LIMIT, live.relay.wait_relayed_beyond(before))
            .await
            .map_err(|_| {
                format!(
                    "libvirt did not connect to the agent within {} s",
                    CONNECT_LIMIT.as_secs()
                )
            })?;
        // libvirt opened the socket; its channel state says when its agent code is ready.
        let deadline = tokio::time::Instant::now() + CONNECT_LIMIT;
        loop {
            let name = live.domain.name().to_owned();
            let state = tokio::task::spawn_blocking(move || super::domain_agent_state(&name))
                .await
                .ok()
                .flatten();
            if state.as_deref() == Some("connected") {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err("libvirt never marked the agent channel connected".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(live.domain.name().to_owned())
    }
}

/// Connects to the control port and waits for the guest's `ready`.
fn wait_ready(socket: &Path) -> Result<Control, String> {
    let deadline = std::time::Instant::now() + BOOT_LIMIT;
    let stream = loop {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(stream) => break stream,
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(format!("no control socket {}: {e}", socket.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut control = Control::new(stream).map_err(|e| e.to_string())?;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err("no ready line".into());
        }
        match control.read_line(left) {
            Ok(Some(line)) if line.starts_with("ready") => return Ok(control),
            Ok(Some(_)) => {}
            Ok(None) => return Err("the control port closed".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl InProcessClient for LibvirtClient {
    fn name(&self) -> String {
        "libvirt 9 (virsh qemu-agent-command)".into()
    }

    fn startup(&self) -> Duration {
        STARTUP
    }

    fn cannot_run(&self, scenario: &crate::scenario::Scenario) -> Option<String> {
        scenario.other_client.as_ref().map(|_| {
            "libvirt owns the guest's agent channel: it connects only when the guest's agent restarts, seconds into the case, so no other client can be made to hold the channel while it connects".to_owned()
        })
    }

    fn open<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Box<dyn InProcessSession>> {
        Box::pin(async move {
            let session: Box<dyn InProcessSession> = match self.attach(socket).await {
                Ok(domain) => Box::new(Session { domain: Ok(domain) }),
                Err(why) => Box::new(Session { domain: Err(why) }),
            };
            session
        })
    }
}

struct Session {
    domain: Result<String, String>,
}

impl InProcessSession for Session {
    fn execute<'a>(&'a mut self, request: &'a StepRequest) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            match &self.domain {
                Ok(domain) => step(domain, request).await,
                Err(why) => Answer::Broken {
                    why: crate::runner::BrokenKind::Spawn,
                    detail: format!("libvirt could not be set up: {why}"),
                },
            }
        })
    }
}

/// libvirt's timeouts are whole seconds: the step's timeout rounded down (at least 1 s),
/// so libvirt never waits longer than the case allows.
fn whole_seconds(timeout_ms: u64) -> u64 {
    (timeout_ms / 1000).max(1)
}

/// The virsh command line for a step.
fn virsh_args(domain: &str, request: &StepRequest) -> Vec<String> {
    let mut args = vec!["-q".into(), "-c".into(), super::URI.into()];
    let mode = request
        .arguments
        .as_ref()
        .and_then(|a| a.get("mode"))
        .and_then(Value::as_str);
    match request.execute.as_str() {
        // No reply on success: libvirt's own API knows to wait for the channel instead.
        "guest-shutdown" if mode == Some("reboot") => {
            args.extend([
                "reboot".into(),
                domain.into(),
                "--mode".into(),
                "agent".into(),
            ]);
        }
        "guest-shutdown" => {
            args.extend([
                "shutdown".into(),
                domain.into(),
                "--mode".into(),
                "agent".into(),
            ]);
        }
        _ => {
            args.extend([
                "qemu-agent-command".into(),
                domain.into(),
                request.request_json(),
                "--timeout".into(),
                whole_seconds(request.timeout_ms).to_string(),
            ]);
        }
    }
    args
}

async fn step(domain: &str, request: &StepRequest) -> Answer {
    let output = tokio::process::Command::new("virsh")
        .args(virsh_args(domain, request))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    match output {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            if request.execute == "guest-shutdown" {
                return Answer::Return {
                    value: Value::Object(Default::default()),
                };
            }
            match serde_json::from_str::<Value>(text.trim()) {
                Ok(Value::Object(map)) if map.contains_key("return") => Answer::Return {
                    value: map["return"].clone(),
                },
                _ => Answer::ClientError {
                    class: FailureClass::Protocol,
                    desc: format!("virsh printed no reply object: {}", text.trim()),
                },
            }
        }
        Ok(output) => classify(&String::from_utf8_lossy(&output.stderr)),
        Err(e) => Answer::Broken {
            why: crate::runner::BrokenKind::Spawn,
            detail: format!("cannot run virsh: {e}"),
        },
    }
}

/// Reads virsh's error message (libvirt 9.0's texts, src/qemu/qemu_agent.c).
fn classify(stderr: &str) -> Answer {
    let message = stderr
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .filter(|l| !l.starts_with("Failed to"))
        .or_else(|| stderr.lines().rev().find_map(|l| l.strip_prefix("error: ")))
        .unwrap_or(stderr.trim())
        .to_owned();
    // "internal error: unable to execute QEMU agent command 'X': DESC": the agent's error,
    // its class dropped by libvirt.
    if let Some(at) = message.find("unable to execute QEMU agent command '") {
        let rest = &message[at..];
        if let Some(desc_at) = rest.find("': ") {
            return Answer::AgentError {
                class: UNKNOWN_CLASS.into(),
                desc: rest[desc_at + 3..].to_owned(),
            };
        }
    }
    let class = if message.contains("Guest agent not available for now")
        || message.contains("timed out")
        || message.contains("Timed out")
    {
        FailureClass::Timeout
    } else if message.contains("not connected")
        || message.contains("disappeared")
        || message.contains("End of file")
    {
        FailureClass::Disconnected
    } else {
        FailureClass::Protocol
    };
    Answer::ClientError {
        class,
        desc: message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_messages_are_classified() {
        match classify("error: internal error: unable to execute QEMU agent command 'guest-nosuch': The command guest-nosuch has not been found\n") {
            Answer::AgentError { class, desc } => {
                assert_eq!(class, UNKNOWN_CLASS);
                assert_eq!(desc, "The command guest-nosuch has not been found");
            }
            other => panic!("{other:?}"),
        }
        let class = |text: &str| match classify(text) {
            Answer::ClientError { class, .. } => class,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            class("error: Guest agent is not responding: Guest agent not available for now\n"),
            FailureClass::Timeout
        );
        assert_eq!(
            class("error: Guest agent is not responding: QEMU guest agent is not connected\n"),
            FailureClass::Disconnected
        );
        assert_eq!(
            class("error: internal error: QEMU guest agent is not available due to an error\n"),
            FailureClass::Protocol
        );
    }

    #[test]
    fn timeouts_are_whole_seconds_never_longer_than_asked() {
        assert_eq!(whole_seconds(200), 1);
        assert_eq!(whole_seconds(1999), 1);
        assert_eq!(whole_seconds(2000), 2);
    }
}
