//! Capturing a real agent: ask it every enabled read-only command and build the profile
//! under which the simulated guest answers those commands with the same data.
//!
//! A plain blocking client: it resynchronises the way careful host clients do (0xFF, then
//! guest-sync-delimited with a random id, then everything up to the 0xFF and the matching
//! reply is discarded), and sends nothing that changes the guest.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value as Json};

use super::profile::{Account, Profile};
use super::qapi::MemoryBlockInfo;

/// The longest reply line accepted: qemu-ga's biggest read-only replies are a few
/// hundred KiB; this bounds the memory a misbehaving peer can make us use.
const MAX_REPLY: usize = 64 * 1024 * 1024;

/// How to capture.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// The longest wait for any one reply.
    pub timeout: Duration,
    /// Users whose authorized keys to ask for (guest-ssh-get-authorized-keys), which also
    /// tells which accounts exist and their home directories.
    pub ssh_users: Vec<String>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            timeout: Duration::from_secs(10),
            ssh_users: vec!["root".to_owned(), "nobody".to_owned()],
        }
    }
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot connect to {}: {source}; is the agent running and listening on this socket?", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no reply to {command} from the agent on {} within {} ms; check that the agent is running and not frozen or busy, or raise --timeout-ms", socket.display(), timeout.as_millis())]
    Timeout {
        socket: PathBuf,
        command: String,
        timeout: Duration,
    },
    #[error("talking to the agent on {}: {source}", socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the peer on {} answered {command} with something that is not a qemu-ga reply ({detail}); is this a qemu-ga socket?", socket.display())]
    Garbage {
        socket: PathBuf,
        command: String,
        detail: String,
    },
    #[error("the agent's reply to {command} does not fit the profile format: {detail}")]
    Unfit { command: String, detail: String },
}

/// A reply: the return value, or the error's class and desc.
type Reply = Result<Json, (String, String)>;

struct Connection<'a> {
    socket: &'a Path,
    stream: UnixStream,
    timeout: Duration,
    pending: Vec<u8>,
}

impl<'a> Connection<'a> {
    fn open(socket: &'a Path, timeout: Duration) -> Result<Self, CaptureError> {
        let stream = UnixStream::connect(socket).map_err(|source| CaptureError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
        Ok(Connection {
            socket,
            stream,
            timeout,
            pending: Vec::new(),
        })
    }

    fn io(&self, source: io::Error) -> CaptureError {
        CaptureError::Io {
            socket: self.socket.to_owned(),
            source,
        }
    }

    fn garbage(&self, command: &str, detail: impl Into<String>) -> CaptureError {
        CaptureError::Garbage {
            socket: self.socket.to_owned(),
            command: command.to_owned(),
            detail: detail.into(),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), CaptureError> {
        self.stream
            .set_write_timeout(Some(self.timeout))
            .map_err(|e| self.io(e))?;
        self.stream.write_all(bytes).map_err(|e| self.io(e))
    }

    /// Reads more bytes into `pending`, before `deadline`.
    fn fill(&mut self, command: &str, deadline: Instant) -> Result<(), CaptureError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timeout_error(command));
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| self.io(e))?;
        let mut buf = [0u8; 65536];
        match self.stream.read(&mut buf) {
            Ok(0) => Err(self.io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the agent closed the connection",
            ))),
            Ok(n) => {
                if self.pending.len() + n > MAX_REPLY {
                    return Err(self.garbage(command, "a reply longer than 64 MiB"));
                }
                self.pending.extend_from_slice(&buf[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(self.timeout_error(command))
            }
            Err(e) => Err(self.io(e)),
        }
    }

    fn timeout_error(&self, command: &str) -> CaptureError {
        CaptureError::Timeout {
            socket: self.socket.to_owned(),
            command: command.to_owned(),
            timeout: self.timeout,
        }
    }

    /// Reads one reply line (without the newline).
    fn read_line(&mut self, command: &str, deadline: Instant) -> Result<Vec<u8>, CaptureError> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                return Ok(line[..line.len() - 1].to_vec());
            }
            self.fill(command, deadline)?;
        }
    }

    /// Sends 0xFF and guest-sync-delimited; skips everything up to the 0xFF that precedes
    /// the matching reply.
    fn resync(&mut self) -> Result<(), CaptureError> {
        const COMMAND: &str = "guest-sync-delimited";
        let id: i64 = rand::random_range(1..=i64::from(i32::MAX));
        let request = json!({"execute": COMMAND, "arguments": {"id": id}});
        let mut bytes = vec![0xFF];
        bytes.extend_from_slice(request.to_string().as_bytes());
        self.send(&bytes)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            // Discard up to and including the next 0xFF.
            loop {
                if let Some(at) = self.pending.iter().position(|&b| b == 0xFF) {
                    self.pending.drain(..=at);
                    break;
                }
                self.pending.clear();
                self.fill(COMMAND, deadline)?;
            }
            let line = self.read_line(COMMAND, deadline)?;
            let reply: Json = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if reply.get("return").and_then(Json::as_i64) == Some(id) {
                return Ok(());
            }
        }
    }

    fn call(&mut self, command: &str, arguments: Option<Json>) -> Result<Reply, CaptureError> {
        let mut request = json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        self.send(request.to_string().as_bytes())?;
        let deadline = Instant::now() + self.timeout;
        let line = self.read_line(command, deadline)?;
        let reply: Json = serde_json::from_slice(&line).map_err(|e| {
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            self.garbage(command, format!("{e}: {shown:?}"))
        })?;
        if let Some(value) = reply.get("return") {
            return Ok(Ok(value.clone()));
        }
        let error = reply
            .get("error")
            .ok_or_else(|| self.garbage(command, "neither `return` nor `error`"))?;
        let field = |name: &str| {
            error
                .get(name)
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned()
        };
        Ok(Err((field("class"), field("desc"))))
    }
}

fn fit<T: serde::de::DeserializeOwned>(command: &str, value: Json) -> Result<T, CaptureError> {
    serde_json::from_value(value).map_err(|e| CaptureError::Unfit {
        command: command.to_owned(),
        detail: e.to_string(),
    })
}

/// The leading `N.N[.N]` of a version string.
fn version_prefix(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text[..end].trim_end_matches('.')
}

/// A captured profile, and what the capture could not see.
#[derive(Debug)]
pub struct Captured {
    pub profile: Profile,
    /// Things the user should know, e.g. that a frozen agent hid its guest data.
    pub warnings: Vec<String>,
}

/// Captures the agent listening on `socket`.
pub fn capture(socket: &Path, options: &CaptureOptions) -> Result<Captured, CaptureError> {
    let mut warnings = Vec::new();
    let mut conn = Connection::open(socket, options.timeout)?;
    conn.resync()?;

    let info = match conn.call("guest-info", None)? {
        Ok(info) => info,
        Err((class, desc)) => {
            return Err(conn.garbage("guest-info", format!("an error: {class}: {desc}")))
        }
    };
    let mut profile = Profile::default_linux();
    let version_text = info
        .get("version")
        .and_then(Json::as_str)
        .ok_or_else(|| conn.garbage("guest-info", "no version string"))?;
    profile.agent.version =
        version_prefix(version_text)
            .parse()
            .map_err(|e| CaptureError::Unfit {
                command: "guest-info".into(),
                detail: format!("{e}"),
            })?;
    let commands = info
        .get("supported_commands")
        .and_then(Json::as_array)
        .ok_or_else(|| conn.garbage("guest-info", "no supported_commands list"))?;
    let mut enabled = Vec::new();
    let mut disabled = Vec::new();
    // The list is in reverse registration order; keep registration order.
    for entry in commands.iter().rev() {
        let Some(name) = entry.get("name").and_then(Json::as_str) else {
            continue;
        };
        if entry.get("enabled").and_then(Json::as_bool) == Some(true) {
            enabled.push(name.to_owned());
        } else {
            disabled.push(name.to_owned());
        }
    }
    profile.agent.allow_rpcs = None;
    let has = |name: &str| enabled.iter().any(|c| c == name);

    // A frozen agent disables everything outside its allowlist: those are not blocked by
    // the administrator, and the guest data cannot be read until a thaw.
    if has("guest-fsfreeze-status") {
        if let Ok(status) = conn.call("guest-fsfreeze-status", None)? {
            profile.fsfreeze.frozen = status.as_str() == Some("frozen");
        }
    }
    if profile.fsfreeze.frozen {
        disabled.retain(|c| crate::agent::FREEZE_ALLOWLIST.contains(&c.as_str()));
        warnings.push(
            "the agent is frozen: its block list and guest data cannot be seen; \
             thaw it (guest-fsfreeze-thaw) and capture again"
                .to_owned(),
        );
    }
    profile.agent.block_rpcs = (!disabled.is_empty()).then_some(disabled);

    // Every list of guest data starts empty: only what the agent reports goes in.
    profile.users.clear();
    profile.vcpus.clear();
    profile.memory_blocks.clear();
    profile.network_interfaces.clear();
    profile.network_routes.clear();
    profile.fsinfo.clear();
    profile.disks.clear();
    profile.diskstats.clear();
    profile.cpustats.clear();
    profile.errors.clear();

    // Only commands the agent's table marks read-only are ever sent.
    macro_rules! read_only {
        ($command:literal, |$value:ident| $store:expr) => {
            if has($command) && crate::agent::command_facts($command).is_some_and(|f| f.read_only())
            {
                match conn.call($command, None)? {
                    Ok($value) => $store,
                    Err((_, desc)) => {
                        profile.errors.insert($command.to_owned(), desc);
                    }
                }
            }
        };
    }
    read_only!("guest-get-osinfo", |v| profile.osinfo =
        fit("guest-get-osinfo", v)?);
    read_only!("guest-get-host-name", |v| {
        profile.host_name = v
            .get("host-name")
            .and_then(Json::as_str)
            .ok_or_else(|| conn.garbage("guest-get-host-name", "no host-name"))?
            .to_owned()
    });
    read_only!("guest-get-timezone", |v| profile.timezone =
        fit("guest-get-timezone", v)?);
    read_only!("guest-get-users", |v| profile.users =
        fit("guest-get-users", v)?);
    read_only!("guest-get-vcpus", |v| profile.vcpus =
        fit("guest-get-vcpus", v)?);
    read_only!("guest-get-memory-blocks", |v| {
        profile.memory_blocks = fit("guest-get-memory-blocks", v)?
    });
    read_only!("guest-get-memory-block-info", |v| {
        let info: MemoryBlockInfo = fit("guest-get-memory-block-info", v)?;
        profile.memory_block_size = info.size;
    });
    read_only!("guest-network-get-interfaces", |v| {
        profile.network_interfaces = fit("guest-network-get-interfaces", v)?
    });
    read_only!("guest-network-get-route", |v| {
        profile.network_routes = fit("guest-network-get-route", v)?
    });
    read_only!("guest-get-load", |v| profile.load =
        fit("guest-get-load", v)?);
    read_only!("guest-get-fsinfo", |v| profile.fsinfo =
        fit("guest-get-fsinfo", v)?);
    read_only!("guest-get-disks", |v| profile.disks =
        fit("guest-get-disks", v)?);
    read_only!("guest-get-diskstats", |v| {
        profile.diskstats = fit("guest-get-diskstats", v)?
    });
    read_only!("guest-get-cpustats", |v| profile.cpustats =
        fit("guest-get-cpustats", v)?);
    if has("guest-get-time") {
        let before = host_now_ns();
        let reply = conn.call("guest-get-time", None)?;
        let after = host_now_ns();
        match reply {
            Ok(v) => {
                let guest = v
                    .as_i64()
                    .ok_or_else(|| conn.garbage("guest-get-time", "not an integer"))?;
                let offset = guest.saturating_sub(before / 2 + after / 2);
                // Below a second the difference is the round trip, not the guest's clock.
                profile.clock.offset_ns = if offset.abs() < 1_000_000_000 {
                    0
                } else {
                    offset / 1_000_000 * 1_000_000
                };
                profile.clock.rtc_offset_ns = None;
            }
            Err((_, desc)) => {
                profile.errors.insert("guest-get-time".into(), desc);
            }
        }
    }
    if has("guest-ssh-get-authorized-keys") {
        profile.accounts.clear();
        for user in &options.ssh_users {
            let reply = conn.call(
                "guest-ssh-get-authorized-keys",
                Some(json!({ "username": user })),
            )?;
            if let Some(account) = account_from_reply(user, reply) {
                profile.accounts.push(account);
            }
        }
    }
    Ok(Captured { profile, warnings })
}

/// What a guest-ssh-get-authorized-keys answer tells about a user.
fn account_from_reply(user: &str, reply: Reply) -> Option<Account> {
    const SUFFIX: &str = "/.ssh/authorized_keys";
    let default_home = || {
        if user == "root" {
            "/root".to_owned()
        } else {
            format!("/home/{user}")
        }
    };
    match reply {
        Ok(value) => {
            let keys: Vec<String> = value
                .get("keys")
                .and_then(Json::as_array)
                .map(|k| {
                    k.iter()
                        .filter_map(Json::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            // qemu-ga lists the file's keys last first; store them in file order.
            Some(Account {
                name: user.to_owned(),
                home: default_home(),
                authorized_keys: Some(keys.into_iter().rev().collect()),
            })
        }
        Err((_, desc)) if desc.starts_with("failed to lookup user") => None,
        Err((_, desc)) => {
            // "failed to read '<home>/.ssh/authorized_keys': ..." names the home directory.
            let home = desc
                .strip_prefix("failed to read '")
                .and_then(|rest| rest.split_once(SUFFIX))
                .map(|(home, _)| {
                    if home.is_empty() {
                        "/".to_owned()
                    } else {
                        home.to_owned()
                    }
                })
                .unwrap_or_else(default_home);
            Some(Account {
                name: user.to_owned(),
                home,
                authorized_keys: None,
            })
        }
    }
}

fn host_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
