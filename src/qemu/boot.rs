//! Booting a guest: `qemu-system-x86_64` with a virtio-serial controller, the agent's port,
//! the control port and any further named ports, each behind a chardev unix socket
//! (`server=on,wait=off`, as libvirt and the reference recipe use it) in a private temp dir.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::control::Control;
use super::image::Image;
use super::QemuError;

/// The agent's port name, as libvirt and qemu-ga use it.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";
/// The harness's control port name.
pub const CONTROL_PORT: &str = "org.qga-harness.control.0";

/// How long a KVM boot may take before KVM counts as unusable on this host.
const KVM_PROBE: Duration = Duration::from_secs(15);

/// Which agent serves the agent port inside the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum GuestAgentKind {
    /// This program's mock agent (needs the image's mock initramfs).
    #[default]
    Mock,
    /// The real qemu-ga from the Debian package, nothing blocked.
    Real,
}

impl GuestAgentKind {
    fn word(self) -> &'static str {
        match self {
            GuestAgentKind::Mock => "mock",
            GuestAgentKind::Real => "real",
        }
    }
}

/// The accelerator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accel {
    /// KVM when a probe boot with it reaches the guest's control port in time, else TCG.
    #[default]
    Auto,
    Tcg,
    Kvm,
}

/// How to boot.
#[derive(Clone, Debug)]
pub struct BootOptions {
    pub image: Image,
    pub agent: GuestAgentKind,
    /// Further virtio-serial ports by name; each gets a socket ([`Guest::port_socket`]).
    pub extra_ports: Vec<String>,
    pub memory_mib: u32,
    pub accel: Accel,
    /// How long the guest may take to report ready on its control port.
    pub boot_timeout: Duration,
    /// Extra kernel command line words (`qgah.args=...`, `qgah.delay=...`).
    pub kernel_args: Vec<String>,
    /// The program to run (default `qemu-system-x86_64` on PATH).
    pub qemu: PathBuf,
}

impl BootOptions {
    /// The defaults: 256 MiB, accelerator chosen by probe, 60 s to boot.
    pub fn new(image: Image, agent: GuestAgentKind) -> Self {
        Self {
            image,
            agent,
            extra_ports: Vec::new(),
            memory_mib: 256,
            accel: Accel::Auto,
            boot_timeout: Duration::from_secs(60),
            kernel_args: Vec::new(),
            qemu: PathBuf::from("qemu-system-x86_64"),
        }
    }
}

/// What the keeper thread knows about QEMU.
#[derive(Debug, Default)]
struct ProcessState {
    pid: u32,
    exit: Option<String>,
}

/// A running guest. Dropping it kills QEMU, waits for it, and removes its sockets.
#[derive(Debug)]
pub struct Guest {
    dir: Option<tempfile::TempDir>,
    agent: GuestAgentKind,
    accel: &'static str,
    state: Arc<Mutex<ProcessState>>,
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<JoinHandle<()>>,
    control: Control,
    ports: Vec<(String, PathBuf)>,
    /// From QEMU's start to the control port's `ready`.
    pub boot_time: Duration,
}

/// Boots a guest and returns once its control port reported ready. Blocking.
pub fn boot(options: &BootOptions) -> Result<Guest, QemuError> {
    let initrd = match options.agent {
        GuestAgentKind::Real => options.image.initrd.clone(),
        GuestAgentKind::Mock => {
            options
                .image
                .initrd_mock
                .clone()
                .ok_or_else(|| QemuError::Image {
                    dir: options
                        .image
                        .initrd
                        .parent()
                        .map(Path::to_owned)
                        .unwrap_or_default(),
                    message: "the image has no mock agent; build it with a static binary".into(),
                })?
        }
    };
    for file in [&options.image.kernel, &initrd] {
        if !file.is_file() {
            return Err(QemuError::Image {
                dir: file.parent().map(Path::to_owned).unwrap_or_default(),
                message: format!("{} is missing; rebuild the image", file.display()),
            });
        }
    }
    find_program(&options.qemu)?;
    match options.accel {
        Accel::Tcg => start(options, &initrd, "tcg", options.boot_timeout),
        Accel::Kvm => start(options, &initrd, "kvm", options.boot_timeout),
        Accel::Auto => {
            if kvm_usable(options, &initrd) {
                start(options, &initrd, "kvm", options.boot_timeout)
            } else {
                start(options, &initrd, "tcg", options.boot_timeout)
            }
        }
    }
}

/// Whether KVM really boots this guest: decided once per process by a probe boot, bounded
/// by [`KVM_PROBE`] (a `/dev/kvm` that opens does not mean a stock kernel boots on it).
fn kvm_usable(options: &BootOptions, initrd: &Path) -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        opens && start(options, initrd, "kvm", KVM_PROBE.min(options.boot_timeout)).is_ok()
    })
}

fn find_program(program: &Path) -> Result<(), QemuError> {
    let found = if program.components().count() > 1 {
        program.is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    };
    if found {
        Ok(())
    } else {
        Err(QemuError::Missing {
            program: program.display().to_string(),
            package: "qemu-system-x86 (apt-get install qemu-system-x86)",
        })
    }
}

fn start(
    options: &BootOptions,
    initrd: &Path,
    accel: &'static str,
    timeout: Duration,
) -> Result<Guest, QemuError> {
    // Short paths: a unix socket path must stay under 108 bytes.
    let dir = tempfile::Builder::new()
        .prefix("qgah-vm-")
        .tempdir_in(std::env::temp_dir())
        .map_err(|e| QemuError::io("cannot create the guest's temp dir", e))?;
    let mut names = vec![AGENT_PORT.to_owned(), CONTROL_PORT.to_owned()];
    names.extend(options.extra_ports.iter().cloned());
    let ports: Vec<(String, PathBuf)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), dir.path().join(format!("p{i}.sock"))))
        .collect();
    let console = dir.path().join("console.log");
    let mut append = format!(
        "console=ttyS0 quiet panic=-1 qgah.agent={}",
        options.agent.word()
    );
    for word in &options.kernel_args {
        append.push(' ');
        append.push_str(word);
    }
    let mut command = Command::new(&options.qemu);
    command.args([
        "-name",
        "qga-harness-guest",
        "-nodefaults",
        "-no-user-config",
    ]);
    command.args(["-display", "none", "-monitor", "none", "-no-reboot"]);
    match accel {
        "kvm" => command.args(["-accel", "kvm", "-cpu", "host"]),
        _ => command.args(["-accel", "tcg"]),
    };
    command.arg("-m").arg(options.memory_mib.to_string());
    command.arg("-kernel").arg(&options.image.kernel);
    command.arg("-initrd").arg(initrd);
    command.arg("-append").arg(&append);
    command
        .arg("-serial")
        .arg(format!("file:{}", console.display()));
    command.args(["-device", "virtio-serial-pci,id=vser0"]);
    for (i, (name, socket)) in ports.iter().enumerate() {
        command.arg("-chardev").arg(format!(
            "socket,path={},server=on,wait=off,id=ch{i}",
            socket.display()
        ));
        command.arg("-device").arg(format!(
            "virtserialport,bus=vser0.0,chardev=ch{i},id=port{i},name={name}"
        ));
    }
    let stderr_path = dir.path().join("qemu.stderr");
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| QemuError::io("cannot create QEMU's log", e))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // Its own process group: a Ctrl-C at the terminal is the harness's to handle.
            libc::setpgid(0, 0);
            // Dies with the thread that spawned it (the keeper, which lives as long as
            // the Guest), so no QEMU outlives the harness.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let started = Instant::now();
    let state = Arc::new(Mutex::new(ProcessState::default()));
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (spawned_tx, spawned_rx) = mpsc::channel::<Result<(), std::io::Error>>();
    let keeper_state = state.clone();
    let keeper = std::thread::Builder::new()
        .name("qemu-keeper".into())
        .spawn(move || keep(command, keeper_state, stop_rx, spawned_tx))
        .map_err(|e| QemuError::io("cannot start the QEMU keeper thread", e))?;
    let mut guest_dir = Some(dir);
    let mut partial = PartialGuest {
        stop: Some(stop_tx),
        keeper: Some(keeper),
    };
    match spawned_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(QemuError::Spawn {
                program: options.qemu.display().to_string(),
                source: e,
            })
        }
        Err(_) => {
            return Err(QemuError::io(
                "the QEMU keeper thread ended",
                std::io::ErrorKind::Other.into(),
            ))
        }
    }
    let exited = |state: &Arc<Mutex<ProcessState>>| {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .exit
            .clone()
    };
    let failure = |status: String| QemuError::Exited {
        status,
        output: read_tail(&stderr_path),
    };
    // The control socket exists once QEMU has parsed its options.
    let control_path = ports[1].1.clone();
    let deadline = started + timeout;
    let stream = loop {
        if let Some(status) = exited(&state) {
            return Err(failure(status));
        }
        if let Ok(stream) = UnixStream::connect(&control_path) {
            break stream;
        }
        if Instant::now() >= deadline {
            return Err(no_answer(timeout, &console));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut control =
        Control::new(stream).map_err(|e| QemuError::io("cannot use the control socket", e))?;
    loop {
        if let Some(status) = exited(&state) {
            return Err(failure(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(no_answer(timeout, &console));
        }
        // Short reads, so QEMU's exit is noticed while waiting.
        match control.read_line(left.min(Duration::from_millis(250))) {
            Ok(Some(line)) if line.starts_with("ready") => break,
            Ok(Some(_)) => {}
            Ok(None) => return Err(failure(exited(&state).unwrap_or_else(|| "closed".into()))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(QemuError::io("reading the control port", e)),
        }
    }
    Ok(Guest {
        dir: guest_dir.take(),
        agent: options.agent,
        accel,
        state,
        stop: partial.stop.take(),
        keeper: partial.keeper.take(),
        control,
        ports,
        boot_time: started.elapsed(),
    })
}

/// Kills QEMU when boot fails half way.
struct PartialGuest {
    stop: Option<mpsc::Sender<()>>,
    keeper: Option<JoinHandle<()>>,
}

impl Drop for PartialGuest {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

fn no_answer(timeout: Duration, console: &Path) -> QemuError {
    QemuError::NoAnswer {
        seconds: timeout.as_secs(),
        console: read_tail(console),
    }
}

/// The last lines of a log file, for an error message.
fn read_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

/// The keeper: spawns QEMU, watches it, and kills and reaps it when told (or when the
/// Guest is dropped, which drops the sender).
fn keep(
    mut command: Command,
    state: Arc<Mutex<ProcessState>>,
    stop: mpsc::Receiver<()>,
    spawned: mpsc::Sender<Result<(), std::io::Error>>,
) {
    let mut child: Child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = spawned.send(Err(e));
            return;
        }
    };
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pid = child.id();
    let _ = spawned.send(Ok(()));
    loop {
        match stop.recv_timeout(Duration::from_millis(50)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .exit = Some(status.to_string());
                    // Stay alive until told: the Guest still owns the dir.
                    let _ = stop.recv();
                    return;
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

impl Guest {
    /// The host socket of the agent's port.
    pub fn agent_socket(&self) -> &Path {
        &self.ports[0].1
    }

    /// The host socket of a named port.
    pub fn port_socket(&self, name: &str) -> Option<&Path> {
        self.ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_path())
    }

    /// The guest's private directory (sockets, console log).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/"), |d| d.path())
    }

    /// The control port.
    pub fn control(&mut self) -> &mut Control {
        &mut self.control
    }

    /// Which agent runs inside.
    pub fn agent(&self) -> GuestAgentKind {
        self.agent
    }

    /// `"kvm"` or `"tcg"`.
    pub fn accel(&self) -> &'static str {
        self.accel
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.lock_state().pid
    }

    /// How QEMU exited, once it has.
    pub fn exit_status(&self) -> Option<String> {
        self.lock_state().exit.clone()
    }

    /// QEMU's resident memory and its peak, in KiB (VmRSS, VmHWM).
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| {
            status.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// The serial console's log so far.
    pub fn console_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("console.log")).unwrap_or_default()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, ProcessState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
        // QEMU is gone; its socket files go with the dir.
        drop(self.dir.take());
    }
}
