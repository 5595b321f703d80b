//! The profile: a JSON description of a simulated guest and of the agent that runs in it.
//!
//! Every top-level member is optional: a missing one takes its value from the built-in
//! default Linux guest ([`Profile::default_linux`]), so `{"host-name": "web1"}` is a whole
//! profile. Unknown members are errors everywhere, so a typo never goes unnoticed.
//!
//! Guest data that qemu-ga reports (osinfo, fsinfo, disks, ...) uses the QAPI member names
//! and shapes of the replies, so `qga-harness capture` can store a real agent's answers
//! unchanged. Members that only steer the simulation are documented as such.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::qapi::{
    CpuStats, DiskInfo, DiskStatsInfo, FilesystemInfo, LoadAverage, MemoryBlock, NetworkInterface,
    NetworkRoute, OsInfo, Timezone, User, Vcpu,
};
use crate::agent::AgentVersion;

/// The built-in default Linux guest, modelled on a measured 2-vCPU Debian 12 VM.
const DEFAULT_LINUX: &str = include_str!("default_linux.json");

/// A simulated guest and the agent that runs in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
#[schemars(title = "qga-harness guest profile")]
pub struct Profile {
    /// The emulated qemu-ga: its version and the block or allow list it was started with.
    pub agent: AgentProfile,
    /// What guest-get-host-name returns.
    pub host_name: String,
    /// What guest-get-osinfo returns.
    pub osinfo: OsInfo,
    /// What guest-get-timezone returns.
    pub timezone: Timezone,
    /// What guest-get-users returns: logged-in users, in utmp order.
    pub users: Vec<User>,
    /// The vCPUs, in the order sysfs lists them (descending ids on the measured VM).
    /// guest-set-vcpus changes their `online` state.
    pub vcpus: Vec<Vcpu>,
    /// The memory blocks, in sysfs readdir order (not sorted). guest-set-memory-blocks
    /// changes their `online` state. An empty list means the guest has no
    /// /sys/devices/system/memory at all.
    pub memory_blocks: Vec<MemoryBlock>,
    /// The memory block size in bytes (guest-get-memory-block-info).
    pub memory_block_size: u64,
    /// What guest-network-get-interfaces returns, in order.
    pub network_interfaces: Vec<NetworkInterface>,
    /// What guest-network-get-route returns (qemu-ga 9.1 and later).
    pub network_routes: Vec<NetworkRoute>,
    /// What guest-get-load returns (qemu-ga 10.0 and later).
    pub load: LoadAverage,
    /// The mounted block-device filesystems, as guest-get-fsinfo reports them; also the
    /// filesystems that guest-fstrim and guest-fsfreeze-* work on.
    pub fsinfo: Vec<FilesystemInfo>,
    /// What guest-get-disks returns.
    pub disks: Vec<DiskInfo>,
    /// What guest-get-diskstats returns.
    pub diskstats: Vec<DiskStatsInfo>,
    /// What guest-get-cpustats returns.
    pub cpustats: Vec<CpuStats>,
    /// The user accounts (the passwd database): guest-ssh-* and guest-set-user-password
    /// look users up here.
    pub accounts: Vec<Account>,
    /// The guest's clocks.
    pub clock: ClockProfile,
    /// Files of the simulated file system at start, by absolute path. Their parent
    /// directories exist implicitly.
    pub files: BTreeMap<String, FileContent>,
    /// Directories of the simulated file system at start, besides the parents of `files`.
    pub directories: Vec<String>,
    /// The simulated file system's capacity in bytes; writes beyond it fail with "No space
    /// left on device". It bounds the memory the simulation uses.
    pub fs_capacity_bytes: u64,
    /// guest-exec: programs and process ids.
    pub exec: ExecProfile,
    /// guest-fsfreeze-*: the state at start and the freeze hook.
    pub fsfreeze: FsfreezeProfile,
    /// guest-shutdown and guest-suspend-*: whether they succeed.
    pub power: PowerProfile,
    /// Whether the guest has `chpasswd` (guest-set-user-password needs it).
    pub chpasswd: bool,
    /// Commands that fail: command name to the GenericError desc they answer with, before
    /// doing anything. `qga-harness capture` records the read-only commands that failed on
    /// the real agent here.
    pub errors: BTreeMap<String, String>,
}

/// The emulated agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AgentProfile {
    /// The qemu-ga version reported by guest-info, e.g. "7.2.22". It selects the
    /// version-dependent behaviour (command set, error texts, argument types).
    #[serde(with = "version_string")]
    #[schemars(with = "String", regex(pattern = r"^\d+\.\d+(\.\d+)?$"))]
    pub version: AgentVersion,
    /// The `--block-rpcs` list: these commands answer "has been disabled".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_rpcs: Option<Vec<String>>,
    /// The `--allow-rpcs` list: when present, only these commands are enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_rpcs: Option<Vec<String>>,
}

impl Default for AgentProfile {
    fn default() -> Self {
        AgentProfile {
            version: AgentVersion::V7_2_22,
            block_rpcs: None,
            allow_rpcs: None,
        }
    }
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Account {
    /// The user name.
    pub name: String,
    /// The home directory; `~/.ssh/authorized_keys` lives in the simulated file system.
    pub home: String,
    /// Lines of `~/.ssh/authorized_keys` at start; absent means the file does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_keys: Option<Vec<String>>,
}

/// The guest's clocks, relative to the host's wall clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ClockProfile {
    /// Guest system time minus host time, in nanoseconds (guest-set-time changes it).
    pub offset_ns: i64,
    /// Guest hardware clock (RTC) minus host time, in nanoseconds; guest-set-time without
    /// `time` copies it to the system time. Defaults to `offset-ns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtc_offset_ns: Option<i64>,
    /// What `/sbin/hwclock` does, which guest-set-time needs.
    pub hwclock: Hwclock,
}

impl Default for ClockProfile {
    fn default() -> Self {
        ClockProfile {
            offset_ns: 0,
            rtc_offset_ns: None,
            hwclock: Hwclock::Works,
        }
    }
}

/// The guest's `/sbin/hwclock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Hwclock {
    /// Present and exits 0.
    Works,
    /// Not installed: guest-set-time answers "this feature or command is not currently
    /// supported".
    Missing,
    /// Present but exits non-zero: "hwclock failed to set hardware clock to system time".
    Fails,
}

/// The content of a file: `{"text": "..."}` (UTF-8) or `{"base64": "..."}` (any bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FileContent {
    Text(String),
    Base64(String),
}

/// guest-exec's world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ExecProfile {
    /// The pid of the first process; later ones count up from it, as a quiet guest's
    /// kernel would hand them out.
    pub first_pid: i64,
    /// Directories searched for a program named without a slash (the agent's PATH), unless
    /// guest-exec's `env` sets PATH.
    pub search_path: Vec<String>,
    /// Scripted programs, matched by path (as given, or as found on the search path) and
    /// arguments; the first match wins. Programs not scripted here run as builtins (echo,
    /// true, false, sleep, cat, sh) or fail to start.
    pub processes: Vec<ScriptedProcess>,
}

impl Default for ExecProfile {
    fn default() -> Self {
        ExecProfile {
            first_pid: 1200,
            search_path: [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(String::from)
            .to_vec(),
            processes: Vec::new(),
        }
    }
}

/// A program whose behaviour the profile scripts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScriptedProcess {
    /// The program: an absolute path, or a bare name matched as guest-exec gives it.
    pub path: String,
    /// The arguments to match exactly; absent matches any arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// What it writes to stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<ProcessOutput>,
    /// What it writes to stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<ProcessOutput>,
    /// How it ends: `{"code": N}` or `{"signal": N}`. Default `{"code": 0}`.
    #[serde(default)]
    pub exit: Termination,
    /// How long it runs, in milliseconds: guest-exec-status answers `exited: false` until
    /// then.
    #[serde(default)]
    pub duration_ms: u64,
    /// When true, it never exits.
    #[serde(default)]
    pub runs_forever: bool,
}

/// Output of a scripted process: exactly one of `text` or `base64`, written `repeat` times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProcessOutput {
    /// The output as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The output as base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// How many times the output is written (for large outputs). Default 1.
    #[serde(default = "one")]
    pub repeat: u64,
}

fn one() -> u64 {
    1
}

/// How a process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Termination {
    /// A normal exit with this code (0-255).
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl Default for Termination {
    fn default() -> Self {
        Termination::Code(0)
    }
}

/// fsfreeze behaviour.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct FsfreezeProfile {
    /// The guest starts frozen: a previous agent left the frozen marker behind.
    pub frozen: bool,
    /// The `-F` fsfreeze hook, if the agent was started with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<FsfreezeHook>,
}

/// The fsfreeze hook script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FsfreezeHook {
    /// Its path, quoted in "can't access fsfreeze hook" errors.
    #[serde(default = "default_hook_path")]
    pub path: String,
    /// False when the script is missing: freeze and thaw fail with "can't access fsfreeze
    /// hook '`<path>`': No such file or directory".
    #[serde(default = "yes")]
    pub present: bool,
    /// Its exit status when run with "freeze"; non-zero fails the freeze.
    #[serde(default)]
    pub freeze_status: i32,
    /// Its exit status when run with "thaw"; non-zero fails the thaw (after thawing).
    #[serde(default)]
    pub thaw_status: i32,
}

fn default_hook_path() -> String {
    "/etc/qemu/fsfreeze-hook".to_owned()
}

fn yes() -> bool {
    true
}

/// Power commands: each succeeds (no reply, then the VM powers off or suspends) unless an
/// error text is given, which the agent then reports as a GenericError.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PowerProfile {
    /// guest-shutdown's error, e.g. "child process has failed to shutdown".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_error: Option<String>,
    /// guest-suspend-disk's error, e.g. "the requested suspend mode is not supported by the
    /// guest".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend_disk_error: Option<String>,
    /// guest-suspend-ram's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend_ram_error: Option<String>,
    /// guest-suspend-hybrid's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend_hybrid_error: Option<String>,
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read profile {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, or JSON that does not fit the profile format.
    #[error("{origin}:{line}:{column}: {message}{}", at_path(path))]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        /// Where in the document, e.g. `fsinfo[0].disk[0].bus-type`.
        path: String,
        message: String,
    },
    /// Well-formed, but a value is not usable.
    #[error("{origin}: {path}: {message}")]
    Invalid {
        origin: String,
        path: String,
        message: String,
    },
}

fn at_path(path: &str) -> String {
    if path.is_empty() || path == "." || path == "?" {
        String::new()
    } else {
        format!(" (at {path})")
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::default_linux()
    }
}

impl Profile {
    /// The built-in default Linux guest: the measured 2-vCPU Debian 12 VM running qemu-ga
    /// 7.2.22 (host "vm", UTC, vda ext4, lo and eth0), with a small file system.
    #[must_use]
    pub fn default_linux() -> Self {
        static DEFAULT: OnceLock<Profile> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                // A compile-time constant, checked by a unit test; this is not input.
                match serde_json::from_str::<BuiltIn>(DEFAULT_LINUX) {
                    Ok(BuiltIn(profile)) => profile,
                    Err(e) => panic!("the built-in default profile is invalid: {e}"),
                }
            })
            .clone()
    }

    /// The agent version the profile emulates.
    pub fn agent_version(&self) -> AgentVersion {
        self.agent.version
    }

    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Profile::from_json(&text, &path.display().to_string())
    }

    /// Parses and checks a profile; `origin` names it in errors (a file name).
    pub fn from_json(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let profile: Profile =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                parse_error(origin, path, &inner)
            })?;
        deserializer
            .end()
            .map_err(|e| parse_error(origin, String::new(), &e))?;
        profile
            .validate()
            .map_err(|(path, message)| ProfileError::Invalid {
                origin: origin.to_owned(),
                path,
                message,
            })?;
        Ok(profile)
    }

    /// Checks a profile given as a JSON value (e.g. inline in a scenario file); `origin`
    /// names it in errors. Errors carry the path inside the value, not a line.
    pub fn from_value(value: serde_json::Value, origin: &str) -> Result<Profile, ProfileError> {
        let invalid = |path: String, message: String| ProfileError::Invalid {
            origin: origin.to_owned(),
            path: if path.is_empty() || path == "?" {
                ".".to_owned()
            } else {
                path
            },
            message,
        };
        let profile: Profile = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            invalid(path, e.into_inner().to_string())
        })?;
        profile
            .validate()
            .map_err(|(path, message)| invalid(path, message))?;
        Ok(profile)
    }

    /// The profile as pretty JSON, in the format [`Profile::load`] reads.
    pub fn to_json_pretty(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A JSON Schema (draft 2020-12) of the profile format, for editors.
    pub fn json_schema() -> serde_json::Value {
        let schema = schemars::schema_for!(Profile);
        serde_json::to_value(&schema).unwrap_or_default()
    }

    /// Checks what the types cannot: returns the path of the bad value and why.
    fn validate(&self) -> Result<(), (String, String)> {
        for (path, content) in &self.files {
            check_absolute(path).map_err(|m| (format!("files.{path}"), m))?;
            if let FileContent::Base64(b) = content {
                super::b64::decode_strict(b)
                    .ok_or_else(|| (format!("files.{path}.base64"), "invalid base64".into()))?;
            }
        }
        for (i, dir) in self.directories.iter().enumerate() {
            check_absolute(dir).map_err(|m| (format!("directories[{i}]"), m))?;
        }
        for (i, account) in self.accounts.iter().enumerate() {
            check_absolute(&account.home).map_err(|m| (format!("accounts[{i}].home"), m))?;
        }
        for (i, p) in self.exec.processes.iter().enumerate() {
            for (stream, out) in [("stdout", &p.stdout), ("stderr", &p.stderr)] {
                let Some(out) = out else { continue };
                let at = format!("exec.processes[{i}].{stream}");
                match (&out.text, &out.base64) {
                    (Some(_), None) => {}
                    (None, Some(b)) => {
                        super::b64::decode_strict(b)
                            .ok_or_else(|| (format!("{at}.base64"), "invalid base64".into()))?;
                    }
                    _ => return Err((at, "give exactly one of `text` or `base64`".into())),
                }
            }
            match p.exit {
                Termination::Code(c) if !(0..=255).contains(&c) => {
                    return Err((
                        format!("exec.processes[{i}].exit.code"),
                        format!("exit code {c} is outside 0-255"),
                    ))
                }
                Termination::Signal(s) if !(1..=64).contains(&s) => {
                    return Err((
                        format!("exec.processes[{i}].exit.signal"),
                        format!("signal {s} is outside 1-64"),
                    ))
                }
                _ => {}
            }
        }
        if self.exec.first_pid < 2 {
            return Err((
                "exec.first-pid".into(),
                "expected a pid of 2 or more".into(),
            ));
        }
        Ok(())
    }
}

fn check_absolute(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(format!("expected an absolute path, got '{path}'"))
    }
}

fn parse_error(origin: &str, path: String, e: &serde_json::Error) -> ProfileError {
    // serde_json appends " at line L column C" to its message; the position is reported
    // separately here.
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(at) => full[..at].to_owned(),
        None => full,
    };
    ProfileError::Parse {
        origin: origin.to_owned(),
        line: e.line(),
        column: e.column(),
        path,
        message,
    }
}

/// The built-in profile is read without the top-level defaults, which would recurse.
struct BuiltIn(Profile);

impl<'de> Deserialize<'de> for BuiltIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct Full {
            agent: AgentProfile,
            host_name: String,
            osinfo: OsInfo,
            timezone: Timezone,
            users: Vec<User>,
            vcpus: Vec<Vcpu>,
            memory_blocks: Vec<MemoryBlock>,
            memory_block_size: u64,
            network_interfaces: Vec<NetworkInterface>,
            network_routes: Vec<NetworkRoute>,
            load: LoadAverage,
            fsinfo: Vec<FilesystemInfo>,
            disks: Vec<DiskInfo>,
            diskstats: Vec<DiskStatsInfo>,
            cpustats: Vec<CpuStats>,
            accounts: Vec<Account>,
            clock: ClockProfile,
            files: BTreeMap<String, FileContent>,
            directories: Vec<String>,
            fs_capacity_bytes: u64,
            exec: ExecProfile,
            fsfreeze: FsfreezeProfile,
            power: PowerProfile,
            chpasswd: bool,
            errors: BTreeMap<String, String>,
        }
        let f = Full::deserialize(d)?;
        Ok(BuiltIn(Profile {
            agent: f.agent,
            host_name: f.host_name,
            osinfo: f.osinfo,
            timezone: f.timezone,
            users: f.users,
            vcpus: f.vcpus,
            memory_blocks: f.memory_blocks,
            memory_block_size: f.memory_block_size,
            network_interfaces: f.network_interfaces,
            network_routes: f.network_routes,
            load: f.load,
            fsinfo: f.fsinfo,
            disks: f.disks,
            diskstats: f.diskstats,
            cpustats: f.cpustats,
            accounts: f.accounts,
            clock: f.clock,
            files: f.files,
            directories: f.directories,
            fs_capacity_bytes: f.fs_capacity_bytes,
            exec: f.exec,
            fsfreeze: f.fsfreeze,
            power: f.power,
            chpasswd: f.chpasswd,
            errors: f.errors,
        }))
    }
}

/// AgentVersion as a "7.2.22" string.
mod version_string {
    use crate::agent::AgentVersion;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &AgentVersion, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AgentVersion, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
