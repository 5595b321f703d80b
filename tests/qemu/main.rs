//! Real QEMU guests (TCG): the real qemu-ga and the mock inside, driven through QEMU's
//! chardev and virtio-serial and the control port.

mod channel_probes;
mod cli;
mod fidelity;
#[path = "../fidelity/host_mock.rs"]
mod host_mock;
mod libvirt;
#[path = "../fidelity/mask.rs"]
mod mask;
mod mock_inside;
mod real_agent;
mod real_judge;
#[path = "../fidelity/session.rs"]
mod session;
mod support;
