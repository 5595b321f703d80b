//! The simulated guest behind the commands, described by a profile. Never touches the host:
//! files, processes, clocks, freezes and power changes are all simulated in memory.
//!
//! Contract (the agent and the channel rely on it):
//! - [`Guest::run`] executes one command whose arguments the agent already checked against
//!   the QAPI schema (types, required members, no unexpected members). It returns the
//!   `return` value, built with members inserted in QAPI schema order (the writer derives
//!   qemu-ga's key order from that), or the desc of a GenericError.
//! - The guest outlives agent restarts: [`Guest::agent_restarted`] drops what dies with the
//!   qemu-ga process and keeps what it persists.
//!
//! Texts and semantics follow QEMU 7.2's qga/commands.c, qga/commands-posix.c,
//! qga/commands-posix-ssh.c and qga/main.c, and the measured qemu-ga 7.2.22.

mod b64;
pub mod capture;
mod exec;
mod fs;
mod profile;
mod qapi;
mod shell;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use profile::{
    Account, AgentProfile, ClockProfile, ExecProfile, FileContent, FsfreezeHook, FsfreezeProfile,
    Hwclock, PowerProfile, ProcessOutput, Profile, ProfileError, ScriptedProcess, Termination,
};
pub use qapi::{
    CcwAddress, CpuStats, DiskAddress, DiskBusType, DiskInfo, DiskSmart, DiskStats, DiskStatsInfo,
    FilesystemInfo, InterfaceStats, IpAddress, IpAddressType, LinuxCpuStats, LoadAverage,
    MemoryBlock, MemoryBlockInfo, NetworkInterface, NetworkRoute, NvmeSmart, OsInfo, PciAddress,
    Timezone, TrimOutcome, User, Vcpu,
};

use crate::agent::AgentVersion;
use crate::wire::{Object, Value};
use exec::{CaptureMode, ExecRequest, Processes};
use fs::{FileSystem, Handles};
use qapi::ToQapi;

/// A failed command: qemu-ga reports it as class GenericError with this desc.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GuestError(pub String);

impl From<String> for GuestError {
    fn from(s: String) -> Self {
        GuestError(s)
    }
}

/// What a successful no-reply command set in motion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PowerEvent {
    /// guest-shutdown with its mode: "powerdown", "halt" or "reboot".
    Shutdown { mode: String },
    /// guest-suspend-disk, -ram or -hybrid: "disk", "ram" or "hybrid".
    Suspend { kind: String },
}

/// `QGA_READ_COUNT_DEFAULT` and `GUEST_FILE_READ_COUNT_MAX`.
const READ_COUNT_DEFAULT: i64 = 4096;
const READ_COUNT_MAX: i64 = 48 * 1024 * 1024;

/// `QERR_UNSUPPORTED`.
const UNSUPPORTED: &str = "this feature or command is not currently supported";

/// The simulated guest's state.
#[derive(Debug)]
pub struct Guest {
    /// Shared, never changed: many guests of a fleet use one copy.
    profile: Arc<Profile>,
    /// This guest's own host name and interfaces, over the profile's.
    identity: Option<Box<Identity>>,
    version: AgentVersion,
    /// Guest system time minus host time, in microseconds (the guest clock's resolution
    /// as qemu-ga reads it).
    clock_offset_us: i64,
    rtc_offset_us: i64,
    /// The vCPUs once changed by guest-set-vcpus; until then the profile's.
    vcpus: Option<Vec<Vcpu>>,
    /// The memory blocks once changed; until then the profile's.
    memory_blocks: Option<Vec<MemoryBlock>>,
    fs: FileSystem,
    handles: Handles,
    processes: Processes,
    /// The frozen marker file (`qga.state.isfrozen`).
    frozen: bool,
    /// Devices (fsinfo `name`) currently frozen by FIFREEZE.
    frozen_devices: Vec<String>,
    power_event: Option<PowerEvent>,
}

/// What makes one guest of a fleet differ from the others that share its profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// What guest-get-host-name returns.
    pub host_name: String,
    /// What guest-network-get-interfaces returns.
    pub network_interfaces: Vec<NetworkInterface>,
}

impl Guest {
    /// A guest with its own identity over a shared profile.
    #[must_use]
    pub fn with_identity(profile: Arc<Profile>, identity: Identity) -> Self {
        let fs = shared_initial_fs(&profile);
        let mut guest = Guest::with_fs(profile, fs);
        guest.identity = Some(Box::new(identity));
        guest
    }

    #[must_use]
    pub fn new(profile: impl Into<Arc<Profile>>) -> Self {
        let profile: Arc<Profile> = profile.into();
        let fs = initial_fs(&profile);
        Guest::with_fs(profile, fs)
    }

    fn with_fs(profile: Arc<Profile>, fs: FileSystem) -> Self {
        let clock_offset_us = profile.clock.offset_ns / 1000;
        let rtc_offset_us = profile
            .clock
            .rtc_offset_ns
            .map_or(clock_offset_us, |ns| ns / 1000);
        let frozen = profile.fsfreeze.frozen;
        // A guest that starts frozen has every freezable filesystem frozen.
        let frozen_devices = if frozen {
            freezable_devices(&profile.fsinfo)
        } else {
            Vec::new()
        };
        Guest {
            version: profile.agent.version,
            clock_offset_us,
            rtc_offset_us,
            vcpus: None,
            memory_blocks: None,
            identity: None,
            fs,
            handles: Handles::new(),
            processes: Processes::new(profile.exec.first_pid),
            frozen,
            frozen_devices,
            power_event: None,
            profile,
        }
    }

    /// The profile the guest started from (shared; without this guest's [`Identity`]).
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn vcpus(&self) -> &[Vcpu] {
        self.vcpus.as_deref().unwrap_or(&self.profile.vcpus)
    }

    fn memory_blocks(&self) -> &[MemoryBlock] {
        self.memory_blocks
            .as_deref()
            .unwrap_or(&self.profile.memory_blocks)
    }

    /// Runs `command` with checked `args`.
    pub fn run(&mut self, command: &str, args: &Object) -> Result<Value, GuestError> {
        if let Some(desc) = self.profile.errors.get(command) {
            return Err(GuestError(desc.clone()));
        }
        let p = &self.profile;
        let value = match command {
            "guest-ping" => empty(),
            "guest-sync" | "guest-sync-delimited" => Value::Int(int(args, "id")?),
            "guest-get-time" => Value::Int(self.now_us().saturating_mul(1000)),
            "guest-set-time" => self.set_time(opt_int(args, "time")?)?,
            "guest-shutdown" => self.shutdown(opt_str(args, "mode")?)?,
            "guest-suspend-disk" => self.suspend("disk")?,
            "guest-suspend-ram" => self.suspend("ram")?,
            "guest-suspend-hybrid" => self.suspend("hybrid")?,
            "guest-file-open" => self.file_open(args)?,
            "guest-file-close" => {
                let file = self.handles.remove(int(args, "handle")?)?;
                file.close(&mut self.fs);
                empty()
            }
            "guest-file-read" => self.file_read(args)?,
            "guest-file-write" => self.file_write(args)?,
            "guest-file-seek" => self.file_seek(args)?,
            "guest-file-flush" => {
                self.handles.get(int(args, "handle")?)?.flush(&mut self.fs);
                empty()
            }
            "guest-fsfreeze-status" => Value::from(if self.frozen { "frozen" } else { "thawed" }),
            "guest-fsfreeze-freeze" => Value::Int(self.freeze(None)?),
            "guest-fsfreeze-freeze-list" => {
                let only = opt_str_list(args, "mountpoints")?;
                Value::Int(self.freeze(only)?)
            }
            "guest-fsfreeze-thaw" => Value::Int(self.thaw()?),
            "guest-fstrim" => self.fstrim(opt_int(args, "minimum")?),
            "guest-network-get-interfaces" => match &self.identity {
                Some(identity) => identity.network_interfaces.to_qapi(),
                None => p.network_interfaces.to_qapi(),
            },
            "guest-network-get-route" => p.network_routes.to_qapi(),
            "guest-get-load" => p.load.to_qapi(),
            "guest-get-vcpus" => self.vcpus().to_qapi(),
            "guest-set-vcpus" => self.set_vcpus(args)?,
            "guest-get-disks" => p.disks.to_qapi(),
            "guest-get-fsinfo" => {
                let privileged = self.version.at_least(9, 1);
                Value::Array(
                    p.fsinfo
                        .iter()
                        .map(|f| f.to_qapi_versioned(privileged))
                        .collect(),
                )
            }
            "guest-set-user-password" => self.set_user_password(args)?,
            "guest-get-memory-blocks" => self.memory_blocks().to_qapi(),
            "guest-set-memory-blocks" => self.set_memory_blocks(args)?,
            "guest-get-memory-block-info" => {
                if self.memory_blocks().is_empty() {
                    return Err(GuestError(
                        "open(\"/sys/devices/system/memory/\"): No such file or directory".into(),
                    ));
                }
                MemoryBlockInfo {
                    size: p.memory_block_size,
                }
                .to_qapi()
            }
            "guest-exec" => self.exec(args)?,
            "guest-exec-status" => self.exec_status(int(args, "pid")?)?,
            "guest-get-host-name" => qapi::host_name(
                self.identity
                    .as_ref()
                    .map_or(&p.host_name, |identity| &identity.host_name),
            ),
            "guest-get-users" => p.users.to_qapi(),
            "guest-get-timezone" => p.timezone.to_qapi(),
            "guest-get-osinfo" => p.osinfo.to_qapi(),
            "guest-ssh-get-authorized-keys" => self.ssh_get(&string(args, "username")?)?,
            "guest-ssh-add-authorized-keys" => {
                let reset = opt_bool(args, "reset")?.unwrap_or(false);
                self.ssh_add(&string(args, "username")?, &str_list(args, "keys")?, reset)?
            }
            "guest-ssh-remove-authorized-keys" => {
                self.ssh_remove(&string(args, "username")?, &str_list(args, "keys")?)?
            }
            "guest-get-diskstats" => p.diskstats.to_qapi(),
            "guest-get-cpustats" => p.cpustats.to_qapi(),
            // guest-get-devices is Windows-only: a Linux agent disables it itself.
            _ => return Err(GuestError(UNSUPPORTED.into())),
        };
        Ok(value)
    }

    /// True while the filesystems are frozen (the marker file exists).
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// The qemu-ga process restarted: open file handles (with their unflushed buffers) and
    /// exec records are gone; files, the handle counter and the frozen marker persist.
    pub fn agent_restarted(&mut self) {
        self.handles.drop_all(&mut self.fs);
        self.processes.forget_all();
    }

    /// Takes the power event set by the last successful shutdown or suspend, if any.
    pub fn take_power_event(&mut self) -> Option<PowerEvent> {
        self.power_event.take()
    }

    /// The open file handles, in ascending order (for inspection).
    pub fn open_handles(&self) -> Vec<i64> {
        self.handles.open_handles().into_iter().collect()
    }

    /// The content of a simulated file, if it exists (for inspection).
    pub fn file_content(&self, path: &str) -> Option<Vec<u8>> {
        match self.fs.node(path) {
            Some(fs::Node::File(data)) => Some(data.clone()),
            _ => None,
        }
    }

    /// The guest's system time in microseconds since the epoch.
    fn now_us(&self) -> i64 {
        host_now_us().saturating_add(self.clock_offset_us)
    }

    fn set_time(&mut self, time_ns: Option<i64>) -> Result<Value, GuestError> {
        if self.profile.clock.hwclock == Hwclock::Missing {
            return Err(GuestError(UNSUPPORTED.into()));
        }
        if let Some(ns) = time_ns {
            let sec = ns / 1_000_000_000;
            let usec = (ns % 1_000_000_000) / 1000;
            // g_date_set_time_t works in local time.
            let year = civil_year(sec.saturating_add(self.profile.timezone.offset));
            if !(1970..2070).contains(&year) {
                return Err(GuestError("Invalid time: Success".into()));
            }
            // settimeofday(2) refuses a negative tv_usec, and (Linux's do_settimeofday64)
            // a wall time earlier than the monotonic clock, i.e. before the guest booted:
            // the simulated guest booted when the host did.
            if usec < 0 || sec.saturating_mul(1_000_000).saturating_add(usec) < monotonic_us() {
                return Err(GuestError(
                    "Failed to set time to guest: Invalid argument".into(),
                ));
            }
            self.clock_offset_us = (sec * 1_000_000 + usec) - host_now_us();
        }
        if self.profile.clock.hwclock == Hwclock::Fails {
            return Err(GuestError(
                "hwclock failed to set hardware clock to system time".into(),
            ));
        }
        if time_ns.is_some() {
            // hwclock -w: the RTC follows the system time.
            self.rtc_offset_us = self.clock_offset_us;
        } else {
            // hwclock -s: the system time follows the RTC.
            self.clock_offset_us = self.rtc_offset_us;
        }
        Ok(empty())
    }

    fn shutdown(&mut self, mode: Option<String>) -> Result<Value, GuestError> {
        let mode = mode.unwrap_or_else(|| "powerdown".to_owned());
        if !matches!(mode.as_str(), "powerdown" | "halt" | "reboot") {
            // (sic: no closing parenthesis)
            return Err(GuestError(
                "mode is invalid (valid values are: halt|powerdown|reboot".into(),
            ));
        }
        if let Some(e) = &self.profile.power.shutdown_error {
            return Err(GuestError(e.clone()));
        }
        self.power_event = Some(PowerEvent::Shutdown { mode });
        Ok(empty())
    }

    fn suspend(&mut self, kind: &str) -> Result<Value, GuestError> {
        let power = &self.profile.power;
        let error = match kind {
            "disk" => &power.suspend_disk_error,
            "ram" => &power.suspend_ram_error,
            _ => &power.suspend_hybrid_error,
        };
        if let Some(e) = error {
            return Err(GuestError(e.clone()));
        }
        self.power_event = Some(PowerEvent::Suspend {
            kind: kind.to_owned(),
        });
        Ok(empty())
    }

    fn file_open(&mut self, args: &Object) -> Result<Value, GuestError> {
        let path = string(args, "path")?;
        let mode = opt_str(args, "mode")?.unwrap_or_else(|| "r".to_owned());
        if self.handles.full() {
            return Err(GuestError(format!(
                "failed to open file '{path}' (mode: '{mode}'): Too many open files"
            )));
        }
        let file = self.fs.open(&path, &mode)?;
        Ok(Value::Int(self.handles.add(file)))
    }

    fn file_read(&mut self, args: &Object) -> Result<Value, GuestError> {
        let handle = int(args, "handle")?;
        let file = self.handles.get(handle)?;
        let count = opt_int(args, "count")?.unwrap_or(READ_COUNT_DEFAULT);
        if !(0..=READ_COUNT_MAX).contains(&count) {
            return Err(GuestError(format!(
                "value '{count}' is invalid for argument count"
            )));
        }
        let read = file.read(&mut self.fs, count as usize)?;
        Ok(qapi::file_read(
            read.data.len() as i64,
            b64::encode(&read.data),
            read.eof,
        ))
    }

    fn file_write(&mut self, args: &Object) -> Result<Value, GuestError> {
        let handle = int(args, "handle")?;
        let file = self.handles.get(handle)?;
        file.prepare_write(&mut self.fs);
        let data = b64::decode_qemu(&string(args, "buf-b64")?)?;
        let count = match opt_int(args, "count")? {
            None => data.len(),
            Some(c) if c < 0 || c as u64 > data.len() as u64 => {
                return Err(GuestError(format!(
                    "value '{c}' is invalid for argument count"
                )))
            }
            Some(c) => c as usize,
        };
        let written = file.write(&mut self.fs, &data[..count])?;
        // fwrite never sets the EOF flag, and qemu-ga clears the flags after each call.
        Ok(qapi::file_write(written as i64, false))
    }

    fn file_seek(&mut self, args: &Object) -> Result<Value, GuestError> {
        let handle = int(args, "handle")?;
        let file = self.handles.get(handle)?;
        let offset = int(args, "offset")?;
        let whence = match args.get("whence") {
            Some(Value::String(name)) => match name.as_str() {
                "set" => 0,
                "cur" => 1,
                "end" => 2,
                other => {
                    return Err(GuestError(format!(
                        "Parameter 'whence' does not accept value '{other}'"
                    )))
                }
            },
            Some(v) => match v.as_i64() {
                Some(n @ 0..=2) => n as i32,
                Some(n) => return Err(GuestError(format!("invalid whence code {n}"))),
                None => {
                    return Err(GuestError(
                        "Invalid parameter type for 'whence', expected: QGASeek".into(),
                    ))
                }
            },
            None => return Err(GuestError("Parameter 'whence' is missing".into())),
        };
        let position = file.seek(&mut self.fs, offset, whence)?;
        // A successful fseek clears the EOF flag.
        Ok(qapi::file_seek(position, false))
    }

    /// guest-fsfreeze-freeze(-list): `mountpoints` None freezes all.
    fn freeze(&mut self, mountpoints: Option<Vec<String>>) -> Result<i64, GuestError> {
        self.run_hook("freeze")?;
        // The agent enters the frozen state before the first FIFREEZE.
        self.frozen = true;
        let mut count = 0;
        for fs in &self.profile.fsinfo {
            if let Some(list) = &mountpoints {
                if !list.contains(&fs.mountpoint) {
                    continue;
                }
            }
            // EOPNOTSUPP (not freezable) and EBUSY (already frozen) are not counted.
            if !fs.freezable || self.frozen_devices.contains(&fs.name) {
                continue;
            }
            self.frozen_devices.push(fs.name.clone());
            count += 1;
        }
        if count == 0 {
            self.frozen = false;
        }
        Ok(count)
    }

    fn thaw(&mut self) -> Result<i64, GuestError> {
        let count = self.frozen_devices.len() as i64;
        self.frozen_devices.clear();
        self.frozen = false;
        self.run_hook("thaw")?;
        Ok(count)
    }

    fn run_hook(&self, arg: &str) -> Result<(), GuestError> {
        let Some(hook) = &self.profile.fsfreeze.hook else {
            return Ok(());
        };
        if !hook.present {
            return Err(GuestError(format!(
                "can't access fsfreeze hook '{}': No such file or directory",
                hook.path
            )));
        }
        let status = if arg == "freeze" {
            hook.freeze_status
        } else {
            hook.thaw_status
        };
        if status != 0 {
            return Err(GuestError(format!(
                "fsfreeze hook has failed with status {status}"
            )));
        }
        Ok(())
    }

    fn fstrim(&self, minimum: Option<i64>) -> Value {
        let minimum = minimum.unwrap_or(0);
        let paths = self
            .profile
            .fsinfo
            .iter()
            .map(|fs| match &fs.trim {
                TrimOutcome::Trimmed(bytes) => qapi::trim_result(
                    &fs.mountpoint,
                    Some(i64::try_from(*bytes).unwrap_or(i64::MAX)),
                    Some(minimum),
                    None,
                ),
                TrimOutcome::Error(e) => {
                    qapi::trim_result(&fs.mountpoint, None, None, Some(e.clone()))
                }
            })
            .collect();
        qapi::trim_response(paths)
    }

    fn set_vcpus(&mut self, args: &Object) -> Result<Value, GuestError> {
        let list = array(args, "vcpus")?;
        let mut processed = 0i64;
        let mut failure = None;
        for item in list {
            let (id, online) = match item.as_object() {
                Some(o) => (int(o, "logical-id")?, boolean(o, "online")?),
                None => return Err(type_error("vcpus", "object")),
            };
            let vcpus = self.vcpus.get_or_insert_with(|| self.profile.vcpus.clone());
            let Some(vcpu) = vcpus.iter_mut().find(|v| v.logical_id == id) else {
                failure = Some(format!(
                    "open(\"/sys/devices/system/cpu/cpu{id}/\"): No such file or directory"
                ));
                break;
            };
            if vcpu.can_offline == Some(false) {
                // No `online` file: it cannot go offline; re-onlining is a no-op.
                if !online {
                    failure = Some(format!("logical processor #{id} can't be offlined"));
                    break;
                }
            } else {
                vcpu.online = online;
            }
            processed += 1;
        }
        match failure {
            Some(e) if processed == 0 => Err(GuestError(e)),
            _ => Ok(Value::Int(processed)),
        }
    }

    fn set_memory_blocks(&mut self, args: &Object) -> Result<Value, GuestError> {
        const ENOENT: i64 = 2;
        const EBUSY: i64 = 16;
        let list = array(args, "mem-blks")?;
        let mut results = Vec::with_capacity(list.len());
        let no_sysfs = self.memory_blocks().is_empty();
        for item in list {
            let Some(o) = item.as_object() else {
                return Err(type_error("mem-blks", "object"));
            };
            let index = o
                .get("phys-index")
                .and_then(Value::as_u64)
                .ok_or_else(|| type_error("phys-index", "uint64"))?;
            let online = boolean(o, "online")?;
            let result = if no_sysfs {
                qapi::memory_block_response(index, "operation-not-supported", Some(ENOENT))
            } else {
                match self
                    .memory_blocks
                    .get_or_insert_with(|| self.profile.memory_blocks.clone())
                    .iter_mut()
                    .find(|b| b.phys_index == index)
                {
                    None => qapi::memory_block_response(index, "not-found", Some(ENOENT)),
                    Some(b) if b.online == online => {
                        qapi::memory_block_response(index, "success", None)
                    }
                    Some(b) if !online && b.can_offline == Some(false) => {
                        qapi::memory_block_response(index, "operation-failed", Some(EBUSY))
                    }
                    Some(b) => {
                        b.online = online;
                        qapi::memory_block_response(index, "success", None)
                    }
                }
            };
            results.push(result);
        }
        Ok(Value::Array(results))
    }

    fn set_user_password(&mut self, args: &Object) -> Result<Value, GuestError> {
        let username = string(args, "username")?;
        let raw = b64::decode_qemu(&string(args, "password")?)?;
        // The password is used as a C string.
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
        if raw.contains(&b'\n') {
            return Err(GuestError("forbidden characters in raw password".into()));
        }
        if username.contains('\n') || username.contains(':') {
            return Err(GuestError("forbidden characters in username".into()));
        }
        if !self.profile.chpasswd {
            return Err(GuestError("cannot find 'passwd' program in PATH".into()));
        }
        if self.account(&username).is_none() {
            // chpasswd rejects an unknown user with a non-zero exit.
            return Err(GuestError(
                "child process has failed to set user password".into(),
            ));
        }
        Ok(empty())
    }

    fn exec(&mut self, args: &Object) -> Result<Value, GuestError> {
        let path = string(args, "path")?;
        let capture = match args.get("capture-output") {
            None => CaptureMode::None,
            Some(Value::Bool(true)) => CaptureMode::Separated,
            Some(Value::Bool(false)) => CaptureMode::None,
            Some(Value::String(mode)) if self.version.at_least(8, 1) => {
                CaptureMode::from_name(mode).ok_or_else(|| {
                    GuestError(format!(
                        "Parameter 'capture-output' does not accept value '{mode}'"
                    ))
                })?
            }
            Some(_) => return Err(type_error("capture-output", "boolean")),
        };
        let input = match opt_str(args, "input-data")? {
            Some(data) => Some(b64::decode_qemu(&data)?),
            None => None,
        };
        let req = ExecRequest {
            path: &path,
            args: opt_str_list(args, "arg")?.unwrap_or_default(),
            env: opt_str_list(args, "env")?.unwrap_or_default(),
            input,
            capture,
        };
        let pid = self.processes.spawn(&self.fs, &self.profile.exec, req)?;
        Ok(qapi::exec(pid))
    }

    fn exec_status(&mut self, pid: i64) -> Result<Value, GuestError> {
        match self.processes.status(pid) {
            Some(status) => Ok(status.to_qapi()),
            // From 8.2 the format lacks its `%` (sic), so the text is literal.
            None if self.version.at_least(8, 2) => Err(GuestError("PID ld does not exist".into())),
            None => Err(GuestError("Invalid parameter 'pid'".into())),
        }
    }

    fn account(&self, name: &str) -> Option<&Account> {
        self.profile.accounts.iter().find(|a| a.name == name)
    }

    fn lookup_user(&self, name: &str) -> Result<String, GuestError> {
        self.account(name)
            .map(|a| a.home.clone())
            // getpwnam leaves errno 0 for an unknown user (sic: "Success").
            .ok_or_else(|| GuestError(format!("failed to lookup user '{name}': Success")))
    }

    /// glib's g_file_get_contents, with its error text.
    fn read_authkeys(&self, path: &str) -> Result<Vec<String>, String> {
        let resolved = self
            .fs
            .resolve(path)
            .map_err(|e| format!("Failed to open file \u{201C}{path}\u{201D}: {}", e.text()))?;
        match self.fs.read_file(&resolved.path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                // g_strsplit of an empty string gives no lines.
                if text.is_empty() {
                    Ok(Vec::new())
                } else {
                    Ok(text.split('\n').map(str::to_owned).collect())
                }
            }
            Err(fs::Errno::IsDir) => Err(format!(
                "Error reading file \u{201C}{path}\u{201D}: Is a directory"
            )),
            Err(e) => Err(format!(
                "Failed to open file \u{201C}{path}\u{201D}: {}",
                e.text()
            )),
        }
    }

    fn ssh_get(&self, username: &str) -> Result<Value, GuestError> {
        let home = self.lookup_user(username)?;
        let path = authorized_keys_path(&home);
        let lines = self
            .read_authkeys(&path)
            .map_err(|e| GuestError(format!("failed to read '{path}': {e}")))?;
        // Stripped, without blanks and comments, and reversed (qemu-ga prepends).
        let keys = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .rev()
            .map(str::to_owned)
            .collect();
        Ok(qapi::authorized_keys(keys))
    }

    fn ssh_add(
        &mut self,
        username: &str,
        keys: &[String],
        reset: bool,
    ) -> Result<Value, GuestError> {
        check_keys(keys)?;
        let home = self.lookup_user(username)?;
        let ssh_dir = format!("{}/.ssh", home.trim_end_matches('/'));
        let path = authorized_keys_path(&home);
        let existing = if reset {
            None
        } else {
            self.read_authkeys(&path).ok()
        };
        if existing.is_none() && !matches!(self.fs.node(&ssh_dir), Some(fs::Node::Dir)) {
            let made = self
                .fs
                .resolve(&ssh_dir)
                .and_then(|r| self.fs.make_dir(&r.path).map_err(|_| fs::Errno::NotDir));
            if let Err(e) = made {
                let text = if e == fs::Errno::NotDir && self.fs.node(&ssh_dir).is_some() {
                    "File exists"
                } else {
                    e.text()
                };
                return Err(GuestError(format!(
                    "failed to create directory '{ssh_dir}': {text}"
                )));
            }
        }
        let mut lines = existing.unwrap_or_default();
        for key in keys {
            if !lines.contains(key) {
                lines.push(key.clone());
            }
        }
        self.write_authkeys(&path, &lines)?;
        Ok(empty())
    }

    fn ssh_remove(&mut self, username: &str, keys: &[String]) -> Result<Value, GuestError> {
        check_keys(keys)?;
        let home = self.lookup_user(username)?;
        let path = authorized_keys_path(&home);
        if self.fs.node(&path).is_none() {
            return Ok(empty());
        }
        let lines = self
            .read_authkeys(&path)
            .map_err(|e| GuestError(format!("failed to read '{path}': {e}")))?;
        let kept: Vec<String> = lines.into_iter().filter(|l| !keys.contains(l)).collect();
        self.write_authkeys(&path, &kept)?;
        Ok(empty())
    }

    fn write_authkeys(&mut self, path: &str, lines: &[String]) -> Result<(), GuestError> {
        self.fs
            .write_file(path, lines.join("\n").into_bytes())
            .map_err(|e| {
                GuestError(format!(
                    "failed to write to '{path}': Failed to write file \u{201C}{path}\u{201D}: {}",
                    e.text()
                ))
            })
    }
}

fn check_keys(keys: &[String]) -> Result<(), GuestError> {
    for key in keys {
        if key.starts_with('#') || key.contains('\n') {
            return Err(GuestError(format!("invalid OpenSSH public key: '{key}'")));
        }
    }
    Ok(())
}

/// `g_build_filename(home, ".ssh", "authorized_keys")`.
/// The file system a guest of `profile` starts with: the profile's directories, files and
/// authorized keys.
fn initial_fs(profile: &Profile) -> FileSystem {
    let mut fs = FileSystem::new(profile.fs_capacity_bytes);
    for dir in &profile.directories {
        fs.add_dir_all(dir);
    }
    for (path, content) in &profile.files {
        let bytes = match content {
            FileContent::Text(t) => t.as_bytes().to_vec(),
            FileContent::Base64(b) => b64::decode_strict(b).unwrap_or_default(),
        };
        fs.add_file(path, bytes);
    }
    for account in &profile.accounts {
        if let Some(lines) = &account.authorized_keys {
            fs.add_file(
                &authorized_keys_path(&account.home),
                lines.join("\n").into_bytes(),
            );
        }
    }
    fs
}

/// [`initial_fs`] of a shared profile, built once for the many guests of a fleet that share
/// it (they copy the tree only when they change it). One entry: the last profile asked for.
fn shared_initial_fs(profile: &Arc<Profile>) -> FileSystem {
    static LAST: Mutex<Option<(std::sync::Weak<Profile>, FileSystem)>> = Mutex::new(None);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((weak, fs)) = last.as_ref() {
        if std::ptr::eq(weak.as_ptr(), Arc::as_ptr(profile)) && weak.strong_count() > 0 {
            return fs.clone();
        }
    }
    let fs = initial_fs(profile);
    *last = Some((Arc::downgrade(profile), fs.clone()));
    fs
}

fn authorized_keys_path(home: &str) -> String {
    format!("{}/.ssh/authorized_keys", home.trim_end_matches('/'))
}

/// The devices a full freeze would freeze, once each.
fn freezable_devices(fsinfo: &[FilesystemInfo]) -> Vec<String> {
    let mut devices: Vec<String> = Vec::new();
    for fs in fsinfo.iter().filter(|f| f.freezable) {
        if !devices.contains(&fs.name) {
            devices.push(fs.name.clone());
        }
    }
    devices
}

fn host_now_us() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The host's CLOCK_MONOTONIC in microseconds (about its uptime), which the simulated
/// guest takes for its own.
fn monotonic_us() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer that outlives the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    now.tv_sec
        .saturating_mul(1_000_000)
        .saturating_add(now.tv_nsec / 1000)
}

/// The proleptic Gregorian year of a time in seconds since the epoch.
fn civil_year(secs: i64) -> i64 {
    let days = secs.div_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

fn empty() -> Value {
    Value::Object(Object::new())
}

// Argument access. The agent checked types and presence against the schema; these still
// answer with QEMU's texts rather than panic if a caller skipped that.

fn type_error(name: &str, expected: &str) -> GuestError {
    GuestError(format!(
        "Invalid parameter type for '{name}', expected: {expected}"
    ))
}

fn missing(name: &str) -> GuestError {
    GuestError(format!("Parameter '{name}' is missing"))
}

fn opt_int(args: &Object, name: &str) -> Result<Option<i64>, GuestError> {
    match args.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| type_error(name, "integer")),
    }
}

fn int(args: &Object, name: &str) -> Result<i64, GuestError> {
    opt_int(args, name)?.ok_or_else(|| missing(name))
}

fn opt_bool(args: &Object, name: &str) -> Result<Option<bool>, GuestError> {
    match args.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| type_error(name, "boolean")),
    }
}

fn boolean(args: &Object, name: &str) -> Result<bool, GuestError> {
    opt_bool(args, name)?.ok_or_else(|| missing(name))
}

fn opt_str(args: &Object, name: &str) -> Result<Option<String>, GuestError> {
    match args.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_owned()))
            .ok_or_else(|| type_error(name, "string")),
    }
}

fn string(args: &Object, name: &str) -> Result<String, GuestError> {
    opt_str(args, name)?.ok_or_else(|| missing(name))
}

fn array<'a>(args: &'a Object, name: &str) -> Result<&'a [Value], GuestError> {
    args.get(name)
        .ok_or_else(|| missing(name))?
        .as_array()
        .ok_or_else(|| type_error(name, "array"))
}

fn opt_str_list(args: &Object, name: &str) -> Result<Option<Vec<String>>, GuestError> {
    let Some(value) = args.get(name) else {
        return Ok(None);
    };
    let items = value.as_array().ok_or_else(|| type_error(name, "array"))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| type_error(name, "string"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn str_list(args: &Object, name: &str) -> Result<Vec<String>, GuestError> {
    opt_str_list(args, name)?.ok_or_else(|| missing(name))
}

#[cfg(test)]
mod tests;
