//! Real libvirt as a client under test: a built-in client adapter, not a target.
//!
//! The runner's agent (the mock, one per case, on its own socket) sits behind a real
//! libvirt 9 through `<source mode='connect'>`: QEMU's chardev for the guest's agent port
//! connects to a relay the harness owns, and libvirt's own agent connection is passed to
//! the case's mock. The relay holds QEMU's connection (the first one) idle, as the guest's
//! real qemu-ga then talks to nobody, and relays every later connection, byte for byte, to
//! the mock of the case that is running. So one transient TCG domain serves every case: at
//! the start of a case the guest's agent is restarted through the control port of the
//! image from `qemu-images/`, its port closes and opens, and libvirt drops its agent
//! connection (and any error state it was in) and opens a new one, which the relay hands to
//! the new case's mock.
//!
//! Each step is a `virsh qemu-agent-command DOMAIN JSON --timeout S` (whole seconds, so runs
//! use a time scale: [`crate::scenario::scale_time`]); no-reply commands go through
//! libvirt's own API (`virsh shutdown|reboot --mode agent`). libvirt keeps an agent error's
//! desc and drops its class: such errors are reported with
//! [`crate::runner::UNKNOWN_CLASS`] and judged on the desc.
//!
//! - `daemon`: virtlogd and libvirtd started by hand (no systemd), or the running ones.
//! - `domain`: the transient domain, destroyed on every exit path.
//! - `relay`: the agent channel's relay.
//! - `client`: the [`crate::runner::InProcessClient`] that drives libvirt per case.

mod client;
mod daemon;
mod domain;
mod relay;

pub use client::{LibvirtClient, LibvirtOptions, DEFAULT_TIME_SCALE};
pub use daemon::Daemons;
pub use domain::{destroy_all_owned, destroy_stale_domains, Domain, DOMAIN_PREFIX};

use std::path::PathBuf;

/// Why libvirt could not be used. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// A program is missing.
    #[error("{program} was not found; install {package} (apt-get install {package})")]
    Missing {
        program: &'static str,
        package: &'static str,
    },
    /// The daemons did not come up.
    #[error("libvirtd did not start: {message} (its log: {})", log.display())]
    Daemon { message: String, log: PathBuf },
    /// A virsh command failed.
    #[error("virsh {command} failed: {message}")]
    Virsh { command: String, message: String },
    /// The guest image could not be built or the guest did not come up.
    #[error("{0}")]
    Guest(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl LibvirtError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LibvirtError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The agent channel's state as libvirt shows it for `domain` (`connected`,
/// `disconnected`).
pub(crate) fn domain_agent_state(domain: &str) -> Option<String> {
    let xml = virsh(&["dumpxml", domain]).ok()?;
    let at = xml.find("name='org.qemu.guest_agent.0'")?;
    let state = xml[at..].split("state='").nth(1)?;
    Some(state.split('\'').next()?.to_owned())
}

/// The libvirt connection every call uses.
pub const URI: &str = "qemu:///system";

/// Runs `virsh -c URI ARGS...` and returns its stdout, or its stderr as the error.
pub(crate) fn virsh(args: &[&str]) -> Result<String, LibvirtError> {
    let output = std::process::Command::new("virsh")
        .arg("-q")
        .arg("-c")
        .arg(URI)
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LibvirtError::Missing {
                program: "virsh",
                package: "libvirt-clients",
            },
            _ => LibvirtError::io("cannot run virsh", e),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(LibvirtError::Virsh {
            command: args.first().copied().unwrap_or_default().to_owned(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
