//! Typed helpers for the common commands, and the types of their results.
//!
//! Result types follow qemu-ga's QAPI schema (qga/qapi-schema.json) but are lenient where
//! agents differ: members the schema marks optional are `Option`, and unknown members
//! are ignored. A reply of the wrong shape is [`ProtocolError::UnexpectedReturn`].
//! Binary data travels as base64 and is decoded here.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::core::{deadline_after, Client};
use super::error::{Error, ProtocolError, Result, Stage};
use super::mutation::Mutation;

/// `guest-info`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct GuestInfo {
    /// The agent's version, e.g. `7.2.22`.
    pub version: String,
    /// Every command the agent knows, with its enabled state.
    pub supported_commands: Vec<CommandInfo>,
}

/// One entry of [`GuestInfo::supported_commands`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct CommandInfo {
    pub name: String,
    pub enabled: bool,
    /// False for commands that send no reply when they succeed.
    #[serde(default = "yes")]
    pub success_response: bool,
}

fn yes() -> bool {
    true
}

/// `guest-get-osinfo`: every member is optional in the schema.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct OsInfo {
    pub kernel_release: Option<String>,
    pub kernel_version: Option<String>,
    pub machine: Option<String>,
    pub id: Option<String>,
    pub name: Option<String>,
    pub pretty_name: Option<String>,
    pub version: Option<String>,
    pub version_id: Option<String>,
    pub variant: Option<String>,
    pub variant_id: Option<String>,
}

/// One entry of `guest-network-get-interfaces`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct NetworkInterface {
    pub name: String,
    /// Absent for interfaces without a MAC (the Python client's KeyError).
    pub hardware_address: Option<String>,
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
    pub statistics: Option<NetworkStats>,
}

/// An address of a [`NetworkInterface`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct IpAddress {
    /// `ipv4` or `ipv6`.
    pub ip_address_type: String,
    pub ip_address: String,
    pub prefix: i64,
}

/// Counters of a [`NetworkInterface`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct NetworkStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_dropped: u64,
}

/// What `guest-exec` captures of the process's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Capture {
    /// Nothing: output goes to /dev/null.
    #[default]
    None,
    /// Stdout and stderr, separately (`capture-output: true`, every qemu-ga version).
    Separated,
    /// Stderr merged into stdout (qemu-ga ≥ 8.0, not on Windows).
    Merged,
    /// Stdout only (qemu-ga ≥ 8.0).
    Stdout,
    /// Stderr only (qemu-ga ≥ 8.0).
    Stderr,
}

/// A `guest-exec` request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Exec {
    path: String,
    args: Vec<String>,
    env: Vec<String>,
    input: Option<Vec<u8>>,
    capture: Capture,
}

impl Exec {
    /// Runs `path` (searched in the guest's `PATH`).
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            args: Vec::new(),
            env: Vec::new(),
            input: None,
            capture: Capture::None,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment entry, `NAME=value`.
    pub fn env(mut self, entry: impl Into<String>) -> Self {
        self.env.push(entry.into());
        self
    }

    /// Bytes written to the process's stdin, which is then closed.
    pub fn input(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.input = Some(data.into());
        self
    }

    pub fn capture(mut self, capture: Capture) -> Self {
        self.capture = capture;
        self
    }

    /// The `arguments` object of the request.
    pub fn to_arguments(&self) -> Value {
        let mut args = serde_json::Map::new();
        args.insert("path".into(), json!(self.path));
        if !self.args.is_empty() {
            args.insert("arg".into(), json!(self.args));
        }
        if !self.env.is_empty() {
            args.insert("env".into(), json!(self.env));
        }
        if let Some(input) = &self.input {
            args.insert("input-data".into(), json!(BASE64.encode(input)));
        }
        let capture = match self.capture {
            Capture::None => None,
            Capture::Separated => Some(json!(true)),
            Capture::Merged => Some(json!("merged")),
            Capture::Stdout => Some(json!("stdout")),
            Capture::Stderr => Some(json!("stderr")),
        };
        if let Some(capture) = capture {
            args.insert("capture-output".into(), capture);
        }
        Value::Object(args)
    }
}

/// `guest-exec-status`, with the output decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecStatus {
    /// The process has been reaped and its captured pipes have closed. qemu-ga forgets
    /// the pid once it has reported this.
    pub exited: bool,
    /// The exit code, for a normal exit.
    pub exit_code: Option<i64>,
    /// The signal that killed it.
    pub signal: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The agent dropped stdout beyond its 16 MiB cap.
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ExecStatusWire {
    exited: bool,
    exitcode: Option<i64>,
    signal: Option<i64>,
    out_data: Option<String>,
    err_data: Option<String>,
    #[serde(default)]
    out_truncated: bool,
    #[serde(default)]
    err_truncated: bool,
}

/// What `guest-file-read` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileRead {
    pub data: Vec<u8>,
    pub eof: bool,
}

#[derive(Deserialize)]
struct FileReadWire {
    count: u64,
    #[serde(rename = "buf-b64")]
    buf_b64: String,
    eof: bool,
}

/// What `guest-file-write` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct FileWrite {
    /// Bytes written.
    pub count: u64,
    pub eof: bool,
}

/// What `guest-file-seek` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct FileSeek {
    pub position: u64,
    pub eof: bool,
}

/// The origin of a `guest-file-seek`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    Set,
    Cur,
    End,
}

/// `guest-fsfreeze-status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsfreezeStatus {
    Thawed,
    Frozen,
}

/// The `mode` of `guest-shutdown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    Powerdown,
    Halt,
    Reboot,
}

/// Which `guest-suspend-*` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspendMode {
    Disk,
    Ram,
    Hybrid,
}

/// The shortest and longest pause between `guest-exec-status` polls.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(100);

impl Client {
    /// `guest-ping`.
    pub async fn ping(&mut self) -> Result<()> {
        self.execute("guest-ping", None).await.map(drop)
    }

    /// `guest-info`.
    pub async fn info(&mut self) -> Result<GuestInfo> {
        let ret = self.execute("guest-info", None).await?;
        decode("guest-info", ret)
    }

    /// `guest-get-osinfo`.
    pub async fn osinfo(&mut self) -> Result<OsInfo> {
        let ret = self.execute("guest-get-osinfo", None).await?;
        decode("guest-get-osinfo", ret)
    }

    /// `guest-network-get-interfaces`.
    pub async fn network_interfaces(&mut self) -> Result<Vec<NetworkInterface>> {
        let ret = self.execute("guest-network-get-interfaces", None).await?;
        decode("guest-network-get-interfaces", ret)
    }

    /// `guest-exec`: starts a process and returns its guest pid. Never retried: a call
    /// that fails at [`Stage::Reply`] may have started the process.
    pub async fn exec(&mut self, exec: &Exec) -> Result<i64> {
        #[derive(Deserialize)]
        struct Pid {
            pid: i64,
        }
        let ret = self
            .execute("guest-exec", Some(&exec.to_arguments()))
            .await?;
        decode::<Pid>("guest-exec", ret).map(|p| p.pid)
    }

    /// `guest-exec-status` once.
    pub async fn exec_status(&mut self, pid: i64) -> Result<ExecStatus> {
        self.exec_status_within(pid, self.timeout()).await
    }

    async fn exec_status_within(&mut self, pid: i64, timeout: Duration) -> Result<ExecStatus> {
        let ret = self
            .execute_within("guest-exec-status", Some(&json!({ "pid": pid })), timeout)
            .await?;
        let wire: ExecStatusWire = decode("guest-exec-status", ret)?;
        Ok(ExecStatus {
            exited: wire.exited,
            exit_code: wire.exitcode,
            signal: wire.signal,
            stdout: decode_base64("guest-exec-status", wire.out_data.as_deref())?,
            stderr: decode_base64("guest-exec-status", wire.err_data.as_deref())?,
            stdout_truncated: wire.out_truncated,
            stderr_truncated: wire.err_truncated,
        })
    }

    /// Polls `guest-exec-status` until the process has exited, all within `timeout`.
    /// The pause between polls grows from 2 ms to 100 ms.
    pub async fn exec_wait(&mut self, pid: i64, timeout: Duration) -> Result<ExecStatus> {
        let deadline = deadline_after(timeout);
        let mut pause = POLL_FIRST;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    stage: Stage::Reply,
                    timeout,
                });
            }
            let status = match self.exec_status_within(pid, left).await {
                Err(Error::Timeout { stage, .. }) => return Err(Error::Timeout { stage, timeout }),
                other => other?,
            };
            if status.exited {
                return Ok(status);
            }
            tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// `guest-exec`, then [`Client::exec_wait`] with what is left of `timeout`.
    pub async fn exec_and_wait(&mut self, exec: &Exec, timeout: Duration) -> Result<ExecStatus> {
        let start = Instant::now();
        let pid = self.exec(exec).await?;
        let left = timeout.saturating_sub(start.elapsed());
        self.exec_wait(pid, left).await
    }

    /// `guest-file-open`; `mode` is fopen's (`r` when `None`). Returns the handle.
    pub async fn file_open(&mut self, path: &str, mode: Option<&str>) -> Result<i64> {
        let mut args = json!({ "path": path });
        if let (Some(mode), Some(obj)) = (mode, args.as_object_mut()) {
            obj.insert("mode".into(), json!(mode));
        }
        let ret = self.execute("guest-file-open", Some(&args)).await?;
        decode("guest-file-open", ret)
    }

    /// `guest-file-read` of at most `count` bytes.
    pub async fn file_read(&mut self, handle: i64, count: u64) -> Result<FileRead> {
        let ret = self
            .execute(
                "guest-file-read",
                Some(&json!({ "handle": handle, "count": count })),
            )
            .await?;
        let wire: FileReadWire = decode("guest-file-read", ret)?;
        let data = decode_base64("guest-file-read", Some(&wire.buf_b64))?;
        if data.len() as u64 != wire.count {
            return Err(unexpected(
                "guest-file-read",
                format!("count {} but {} bytes of data", wire.count, data.len()),
            ));
        }
        Ok(FileRead {
            data,
            eof: wire.eof,
        })
    }

    /// `guest-file-write` of `data`. Never retried.
    pub async fn file_write(&mut self, handle: i64, data: &[u8]) -> Result<FileWrite> {
        let args = json!({ "handle": handle, "buf-b64": BASE64.encode(data) });
        let ret = self.execute("guest-file-write", Some(&args)).await?;
        decode("guest-file-write", ret)
    }

    /// `guest-file-seek`.
    pub async fn file_seek(
        &mut self,
        handle: i64,
        offset: i64,
        whence: Whence,
    ) -> Result<FileSeek> {
        let whence = match whence {
            Whence::Set => "set",
            Whence::Cur => "cur",
            Whence::End => "end",
        };
        let args = json!({ "handle": handle, "offset": offset, "whence": whence });
        let ret = self.execute("guest-file-seek", Some(&args)).await?;
        decode("guest-file-seek", ret)
    }

    /// `guest-file-flush`.
    pub async fn file_flush(&mut self, handle: i64) -> Result<()> {
        self.execute("guest-file-flush", Some(&json!({ "handle": handle })))
            .await
            .map(drop)
    }

    /// `guest-file-close`.
    pub async fn file_close(&mut self, handle: i64) -> Result<()> {
        self.execute("guest-file-close", Some(&json!({ "handle": handle })))
            .await
            .map(drop)
    }

    /// `guest-fsfreeze-status`.
    pub async fn fsfreeze_status(&mut self) -> Result<FsfreezeStatus> {
        match self.execute("guest-fsfreeze-status", None).await? {
            Value::String(s) if s == "thawed" => Ok(FsfreezeStatus::Thawed),
            Value::String(s) if s == "frozen" => Ok(FsfreezeStatus::Frozen),
            other => Err(unexpected(
                "guest-fsfreeze-status",
                format!("expected \"thawed\" or \"frozen\", got {other}"),
            )),
        }
    }

    /// `guest-fsfreeze-freeze`: the number of filesystems frozen.
    pub async fn fsfreeze_freeze(&mut self) -> Result<i64> {
        let ret = self.execute("guest-fsfreeze-freeze", None).await?;
        decode("guest-fsfreeze-freeze", ret)
    }

    /// `guest-fsfreeze-freeze-list` of these mount points.
    pub async fn fsfreeze_freeze_list(&mut self, mountpoints: &[&str]) -> Result<i64> {
        let args = json!({ "mountpoints": mountpoints });
        let ret = self
            .execute("guest-fsfreeze-freeze-list", Some(&args))
            .await?;
        decode("guest-fsfreeze-freeze-list", ret)
    }

    /// `guest-fsfreeze-thaw`: the number of filesystems thawed.
    pub async fn fsfreeze_thaw(&mut self) -> Result<i64> {
        let ret = self.execute("guest-fsfreeze-thaw", None).await?;
        decode("guest-fsfreeze-thaw", ret)
    }

    /// `guest-shutdown`. Success is the absence of an error (see
    /// [`Client::execute`]); the agent is synced first, so a dead agent is a
    /// [`Error::Timeout`] at [`Stage::Sync`], never a success.
    pub async fn shutdown(&mut self, mode: Option<ShutdownMode>) -> Result<()> {
        let args = mode.map(|mode| {
            json!({ "mode": match mode {
                ShutdownMode::Powerdown => "powerdown",
                ShutdownMode::Halt => "halt",
                ShutdownMode::Reboot => "reboot",
            } })
        });
        self.execute("guest-shutdown", args.as_ref())
            .await
            .map(drop)
    }

    /// `guest-suspend-disk`, `-ram` or `-hybrid`; like [`Client::shutdown`].
    pub async fn suspend(&mut self, mode: SuspendMode) -> Result<()> {
        let command = match mode {
            SuspendMode::Disk => "guest-suspend-disk",
            SuspendMode::Ram => "guest-suspend-ram",
            SuspendMode::Hybrid => "guest-suspend-hybrid",
        };
        self.execute(command, None).await.map(drop)
    }
}

fn unexpected(command: &str, what: String) -> Error {
    ProtocolError::UnexpectedReturn {
        command: command.into(),
        what,
    }
    .into()
}

fn decode<T: DeserializeOwned>(command: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| unexpected(command, e.to_string()))
}

fn decode_base64(command: &str, data: Option<&str>) -> Result<Vec<u8>> {
    match data {
        None => Ok(Vec::new()),
        Some(text) => BASE64
            .decode(text)
            .map_err(|e| unexpected(command, format!("bad base64: {e}"))),
    }
}

/// The result members the agent's schema types `uint64` (qga/qapi-schema.json:
/// GuestMemoryBlockInfo, GuestFilesystemInfo, GuestMemoryBlock and
/// GuestMemoryBlockResponse), by command. The agent's output visitor prints a uint64
/// unsigned, so a negative one never comes from it.
const UNSIGNED_MEMBERS: &[(&str, &[&str])] = &[
    ("guest-get-memory-block-info", &["size"]),
    (
        "guest-get-fsinfo",
        &["used-bytes", "total-bytes", "total-bytes-privileged"],
    ),
    ("guest-get-memory-blocks", &["phys-index"]),
    ("guest-set-memory-blocks", &["phys-index"]),
];

/// The result's objects: the result itself, or each element of a list result.
fn result_objects(value: &mut Value) -> Vec<&mut serde_json::Map<String, Value>> {
    match value {
        Value::Object(members) => vec![members],
        Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => Vec::new(),
    }
}

fn unsigned_members(command: &str) -> &'static [&'static str] {
    UNSIGNED_MEMBERS
        .iter()
        .find(|(name, _)| *name == command)
        .map_or(&[], |(_, members)| members)
}

/// A protocol error when a member the schema types `uint64` is negative: taken as is it
/// would be a size below zero, wrapped it would be a size near 2^64.
pub(crate) fn check_unsigned(command: &str, value: &Value) -> Result<()> {
    let members = unsigned_members(command);
    if members.is_empty() {
        return Ok(());
    }
    let mut value = value.clone();
    for object in result_objects(&mut value) {
        for &name in members {
            if let Some(n) = object.get(name).and_then(Value::as_i64).filter(|n| *n < 0) {
                return Err(unexpected(
                    command,
                    format!("{name} is {n}, but the schema types it uint64"),
                ));
            }
        }
    }
    Ok(())
}

/// What a mutant client reports for a command's result (see [`Mutation`]): the value it
/// would print after decoding the agent's reply into its own idea of the result. The
/// reference client (no mutation, or a mutation of another layer) reports it unchanged.
pub(crate) fn misread(mutation: Mutation, command: &str, mut value: Value) -> Value {
    if mutation == Mutation::LossyNumbers {
        let members = unsigned_members(command);
        for object in result_objects(&mut value) {
            for &name in members {
                if let Some(n) = object.get(name).and_then(Value::as_i64).filter(|n| *n < 0) {
                    // Two's complement, as strtoull reads "-1".
                    object.insert(name.to_owned(), Value::from(n as u64));
                }
            }
        }
        return value;
    }
    let Some(members) = value.as_object_mut() else {
        return value;
    };
    match (mutation, command) {
        (Mutation::ExitedFalseIsFinal, "guest-exec-status")
            if members.get("exited") == Some(&Value::Bool(false)) =>
        {
            members.insert("exited".into(), Value::Bool(true));
            members.entry("exitcode").or_insert(Value::from(0));
        }
        (Mutation::DropSignal, "guest-exec-status") => {
            members.remove("signal");
        }
        (Mutation::IgnoreTruncation, "guest-exec-status") => {
            for flag in ["out-truncated", "err-truncated"] {
                if let Some(set @ Value::Bool(true)) = members.get_mut(flag) {
                    *set = Value::Bool(false);
                }
            }
        }
        (Mutation::CoerceTypes, "guest-exec-status") => {
            for (name, member) in members.iter_mut() {
                match name.as_str() {
                    "exited" | "out-truncated" | "err-truncated" => *member = truthy(member),
                    "exitcode" | "signal" => *member = numeric(member),
                    _ => {}
                }
            }
        }
        (Mutation::LenientBase64, "guest-file-read" | "guest-exec-status") => {
            for name in ["buf-b64", "out-data", "err-data"] {
                if let Some(Value::String(data)) = members.get_mut(name) {
                    *data = BASE64.encode(lenient_base64(data));
                }
            }
        }
        (Mutation::TrustCount, "guest-file-read") => {
            let count = members.get("count").and_then(Value::as_u64);
            let data = members.get("buf-b64").and_then(Value::as_str);
            if let (Some(count), Some(data)) = (count, data) {
                if let (Ok(mut bytes), Ok(count)) = (BASE64.decode(data), usize::try_from(count)) {
                    // A count past the data is a zero-filled buffer; bound it as the
                    // agent's own read is bounded.
                    bytes.resize(count.min(48 << 20), 0);
                    members.insert("buf-b64".into(), Value::from(BASE64.encode(bytes)));
                }
            }
        }
        (Mutation::EmptyReadIsEof, "guest-file-read")
            if members.get("count").and_then(Value::as_u64) == Some(0) =>
        {
            members.insert("eof".into(), Value::Bool(true));
        }
        _ => {}
    }
    value
}

/// A lenient decoder's reading of a flag: a non-empty string or a non-zero number is true.
fn truthy(member: &Value) -> Value {
    Value::Bool(match member {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty() && s != "false" && s != "0",
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    })
}

/// A lenient decoder's reading of an integer: a numeric string is its number, a flag 0/1.
fn numeric(member: &Value) -> Value {
    match member {
        Value::String(s) => s.trim().parse::<i64>().map_or(Value::from(0), Value::from),
        Value::Bool(b) => Value::from(i64::from(*b)),
        other => other.clone(),
    }
}

/// Base64 read the lenient way: characters outside the alphabet skipped, padding optional,
/// a dangling sixth of a byte dropped.
fn lenient_base64(text: &str) -> Vec<u8> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let mut kept: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '+' || *c == '/')
        .collect();
    if kept.len() % 4 == 1 {
        kept.pop();
    }
    lenient.decode(kept).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use rstest::rstest;

    #[rstest]
    #[case::exited_false(Mutation::ExitedFalseIsFinal, "guest-exec-status",
        json!({"exited": false}), json!({"exited": true, "exitcode": 0}))]
    #[case::signal(Mutation::DropSignal, "guest-exec-status",
        json!({"exited": true, "signal": 9}), json!({"exited": true}))]
    #[case::truncation(Mutation::IgnoreTruncation, "guest-exec-status",
        json!({"exited": true, "out-data": "aGkK", "out-truncated": true}),
        json!({"exited": true, "out-data": "aGkK", "out-truncated": false}))]
    #[case::types(Mutation::CoerceTypes, "guest-exec-status",
        json!({"exited": "yes", "exitcode": "0"}), json!({"exited": true, "exitcode": 0}))]
    #[case::base64(Mutation::LenientBase64, "guest-file-read",
        json!({"count": 3, "buf-b64": "!!!!", "eof": false}),
        json!({"count": 3, "buf-b64": "", "eof": false}))]
    #[case::base64_padding(Mutation::LenientBase64, "guest-file-read",
        json!({"count": 2, "buf-b64": "aGk", "eof": true}),
        json!({"count": 2, "buf-b64": "aGk=", "eof": true}))]
    #[case::count(Mutation::TrustCount, "guest-file-read",
        json!({"count": 4, "buf-b64": "aGkK", "eof": true}),
        json!({"count": 4, "buf-b64": "aGkKAA==", "eof": true}))]
    #[case::negative_uint64(Mutation::LossyNumbers, "guest-get-memory-block-info",
        json!({"size": -1}), json!({"size": u64::MAX}))]
    #[case::negative_uint64_in_a_list(Mutation::LossyNumbers, "guest-get-fsinfo",
        json!([{"used-bytes": -2, "name": "sda1"}]), json!([{"used-bytes": u64::MAX - 1, "name": "sda1"}]))]
    #[case::empty_read(Mutation::EmptyReadIsEof, "guest-file-read",
        json!({"count": 0, "buf-b64": "", "eof": false}),
        json!({"count": 0, "buf-b64": "", "eof": true}))]
    fn each_command_level_mutant_misreads_its_deformation(
        #[case] mutation: Mutation,
        #[case] command: &str,
        #[case] sent: Value,
        #[case] reported: Value,
    ) {
        assert_eq!(misread(mutation, command, sent), reported);
    }

    /// What qemu-ga 7.2 sends when nothing is deformed: every mutant reports it as sent,
    /// so the cases that kill a mutant are the ones with its deformation.
    #[test]
    fn well_formed_results_are_reported_as_sent_by_every_mutant() {
        let results = [
            (
                "guest-exec-status",
                json!({"exited": true, "exitcode": 0, "out-data": "aGkK", "out-truncated": false}),
            ),
            ("guest-exec-status", json!({"exited": true, "signal": 9})),
            (
                "guest-file-read",
                json!({"count": 3, "buf-b64": "aGkK", "eof": true}),
            ),
            (
                "guest-file-read",
                json!({"count": 0, "buf-b64": "", "eof": true}),
            ),
            ("guest-get-osinfo", json!({"id": "debian"})),
        ];
        for mutation in Mutation::ALL {
            for (command, value) in &results {
                let reported = misread(mutation, command, value.clone());
                let deformed_on_purpose =
                    mutation == Mutation::DropSignal && value.get("signal").is_some();
                if !deformed_on_purpose {
                    assert_eq!(&reported, value, "{} on {command}", mutation.name());
                }
            }
        }
    }

    #[test]
    fn exec_arguments_follow_the_schema() {
        let exec = Exec::new("/bin/sh")
            .args(["-c", "cat"])
            .env("A=1")
            .input(b"hi\n".to_vec())
            .capture(Capture::Separated);
        assert_eq!(
            exec.to_arguments(),
            json!({"path": "/bin/sh", "arg": ["-c", "cat"], "env": ["A=1"],
                   "input-data": "aGkK", "capture-output": true})
        );
        assert_eq!(Exec::new("true").to_arguments(), json!({"path": "true"}));
        assert_eq!(
            Exec::new("x").capture(Capture::Merged).to_arguments()["capture-output"],
            json!("merged")
        );
    }

    #[test]
    fn decodes_the_measured_guest_info_shape() {
        let info: GuestInfo = decode(
            "guest-info",
            json!({"version": "7.2.22", "supported_commands": [
                {"enabled": false, "name": "guest-shutdown", "success-response": false}]}),
        )
        .unwrap();
        assert_eq!(info.version, "7.2.22");
        assert!(!info.supported_commands[0].success_response);
    }

    #[test]
    fn interfaces_without_mac_or_addresses_decode() {
        let ifaces: Vec<NetworkInterface> = decode(
            "guest-network-get-interfaces",
            json!([{"name": "lo", "hardware-address": "00:00:00:00:00:00"}, {"name": "tun0"}]),
        )
        .unwrap();
        assert_eq!(ifaces[1].hardware_address, None);
        assert!(ifaces[1].ip_addresses.is_empty());
    }

    #[test]
    fn a_type_confused_return_is_a_protocol_error() {
        let e = decode::<i64>("guest-fsfreeze-freeze", json!("3")).unwrap_err();
        assert!(matches!(
            e,
            Error::Protocol(ProtocolError::UnexpectedReturn { .. })
        ));
        let e = decode_base64("guest-file-read", Some("@@@")).unwrap_err();
        assert!(matches!(
            e,
            Error::Protocol(ProtocolError::UnexpectedReturn { .. })
        ));
    }
}
