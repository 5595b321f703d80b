//! A real QEMU guest: the image built from `qemu-images/`, booting it with virtio-serial
//! ports exposed as host unix sockets, and its control port.
//!
//! - `image`: builds (or finds in its cache) the guest's kernel and initramfs, with the
//!   real qemu-ga and, optionally, a static build of this program as the mock inside.
//! - [`boot`]: starts `qemu-system-x86_64` with the agent port, the control port and any
//!   further named ports; [`Guest`] owns the process and its socket directory and tears
//!   both down when dropped.
//! - `control`: the line protocol of the control port (`org.qga-harness.control.0`).
//!
//! Everything here is blocking (std sockets and processes): callers on a tokio runtime run
//! it in `spawn_blocking`. The QEMU process is spawned by a thread that lives as long as the
//! [`Guest`] and dies with the parent (`PR_SET_PDEATHSIG`), so no QEMU outlives the
//! harness, whichever way the harness ends.

mod boot;
mod control;
mod front;
mod image;
mod inside;
mod join;

pub use boot::{
    boot, cancel_boots, Accel, BootOptions, Guest, GuestAgentKind, AGENT_PORT, CONTROL_PORT,
};
pub use control::{CaseEnd, Control, ControlError};
pub use front::{serve_front, FrontRecord};
pub use image::{build_image, find_static_binary, static_binary_hint, Image, ImageOptions};
pub use inside::{run_guest_agent, LoadCase};
pub use join::join_records;
pub(crate) use join::parse_lines;

use std::path::PathBuf;

/// Why a guest could not be built, booted or driven. Every message names what to do.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// A program the guest needs is not installed.
    #[error("{program} was not found; install {package}")]
    Missing {
        program: String,
        package: &'static str,
    },
    /// The image builder failed.
    #[error("building the guest image in {} failed: {message}", dir.display())]
    Image { dir: PathBuf, message: String },
    /// QEMU could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited before the guest was ready.
    #[error("QEMU exited during boot ({status}); its output: {output}")]
    Exited { status: String, output: String },
    /// The guest did not report ready in time.
    #[error("the guest did not answer within {seconds} s (console: {console}); check the kernel and the image")]
    NoAnswer { seconds: u64, console: String },
    /// A socket or file operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The harness was interrupted while the guest booted.
    #[error("interrupted while the guest booted")]
    Cancelled,
    /// The control port failed.
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl QemuError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        QemuError::Io {
            what: what.into(),
            source,
        }
    }
}
