//! `qga-harness guest-agent`: the mock inside a real QEMU guest (started by the guest
//! image's `/init`; see `qemu-images/README.md`). Hidden from the help: it is useful only
//! inside the image.

use std::path::PathBuf;

/// Serves the agent port device with the mock and obeys the control port, until killed.
#[derive(Debug, clap::Args)]
pub struct GuestAgentArgs {
    /// The agent's virtio-serial port device.
    #[arg(
        long,
        value_name = "DEVICE",
        default_value = "/dev/virtio-ports/org.qemu.guest_agent.0"
    )]
    port: PathBuf,

    /// The control port device.
    #[arg(
        long,
        value_name = "DEVICE",
        default_value = "/dev/virtio-ports/org.qga-harness.control.0"
    )]
    control: PathBuf,
}

pub fn run(args: GuestAgentArgs) -> i32 {
    crate::qemu::run_guest_agent(&args.port, &args.control)
}
