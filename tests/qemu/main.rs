//! Real QEMU guests (TCG): the real qemu-ga and the mock inside, driven through QEMU's
//! chardev and virtio-serial and the control port.

mod cli;
mod libvirt;
mod mock_inside;
mod real_agent;
mod real_judge;
mod support;
