//! virtlogd and libvirtd, started by hand as root (there may be no systemd), or the ones
//! already running. Daemons this process started are stopped, by their pids, when the
//! [`Daemons`] is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{virsh, LibvirtError};

/// How long libvirtd may take to answer after it was started.
const START_LIMIT: Duration = Duration::from_secs(15);

/// How long a stopped daemon may take to exit before SIGKILL.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// The daemons in use; the ones started here stop when this is dropped.
#[derive(Debug)]
pub struct Daemons {
    started: Vec<(&'static str, u32)>,
    run_dir: PathBuf,
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/sbin")])
                .any(|dir| dir.join(program).is_file())
        })
        .unwrap_or(false)
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

impl Daemons {
    /// Uses the running libvirtd, or starts virtlogd and libvirtd with their pid files and
    /// logs in `run_dir`.
    pub fn ensure(run_dir: &Path) -> Result<Daemons, LibvirtError> {
        let mut daemons = Daemons {
            started: Vec::new(),
            run_dir: run_dir.to_owned(),
        };
        if virsh(&["uri"]).is_ok() {
            return Ok(daemons);
        }
        for (program, package) in [
            ("libvirtd", "libvirt-daemon-system"),
            ("virtlogd", "libvirt-daemon-system"),
            ("virsh", "libvirt-clients"),
        ] {
            if !which(program) {
                return Err(LibvirtError::Missing { program, package });
            }
        }
        std::fs::create_dir_all(run_dir)
            .map_err(|e| LibvirtError::io(format!("cannot create {}", run_dir.display()), e))?;
        let log = run_dir.join("libvirtd.log");
        for daemon in ["virtlogd", "libvirtd"] {
            let pid_file = run_dir.join(format!("{daemon}.pid"));
            let _ = std::fs::remove_file(&pid_file);
            // No journald or syslog here: the log goes to a file through the environment,
            // with no change to libvirt's configuration. libvirtd stays on one CPU, because
            // CPUs with different CPUID data make it re-probe QEMU (4 s) on each change.
            let mut command = if daemon == "libvirtd" && which("taskset") {
                let mut c = Command::new("taskset");
                c.args(["-c", "0", daemon]);
                c
            } else {
                Command::new(daemon)
            };
            let status = command
                .arg("-d")
                .arg("-p")
                .arg(&pid_file)
                .env(
                    "LIBVIRT_LOG_OUTPUTS",
                    format!("3:file:{}", run_dir.join(format!("{daemon}.log")).display()),
                )
                .status()
                .map_err(|e| LibvirtError::io(format!("cannot run {daemon}"), e))?;
            if !status.success() {
                drop(daemons);
                return Err(LibvirtError::Daemon {
                    message: format!("{daemon} -d exited with {status}"),
                    log,
                });
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(pid) = read_pid(&pid_file) {
                    daemons.started.push((daemon, pid));
                    break;
                }
                if Instant::now() > deadline {
                    drop(daemons);
                    return Err(LibvirtError::Daemon {
                        message: format!("{daemon} wrote no pid file"),
                        log,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match virsh(&["uri"]) {
                Ok(_) => return Ok(daemons),
                Err(e) if Instant::now() > deadline => {
                    drop(daemons);
                    return Err(LibvirtError::Daemon {
                        message: format!("it did not answer in {} s: {e}", START_LIMIT.as_secs()),
                        log,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// True when this process started the daemons (and stops them).
    pub fn owned(&self) -> bool {
        !self.started.is_empty()
    }

    /// Where the daemons' pid files and logs are.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        // libvirtd first, then virtlogd.
        for (_, pid) in self.started.drain(..).rev() {
            if !alive(pid) {
                continue;
            }
            // SAFETY: a plain signal to a daemon this process started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_LIMIT;
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}
