//! virtio-serial, guest side: the agent's port device (`/dev/virtio-ports/<name>`, a
//! character device of the virtio-console driver) as the mock's host side, when the mock
//! runs inside a real guest.
//!
//! Unlike [`super::chardev`] (which emulates QEMU's chardev socket on the host), this is a
//! file the agent opens, reads and writes: the host's connections are invisible here (QEMU
//! owns them), so the whole life of the guest is one stream each way, recorded as
//! connection 1. The harness in front of QEMU's socket records the host's connections, and
//! the two records are joined by their offsets in these streams.
//!
//! What the driver does (Linux drivers/char/virtio_console.c): a read returns the bytes the
//! host sent, or 0 while no host is connected and nothing waits; a write blocks (EAGAIN
//! when non-blocking) while no host is connected; poll reports POLLHUP while no host is
//! connected. Like qemu-ga (qga/main.c, `channel_event_cb`), the transport then looks
//! again every 100 ms instead of spinning on the hang-up.

use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::port::Port;
use super::status::StatusBoard;
use crate::transcript::writer::{Direction, MaybeTranscript, Transcript};

/// The most read from the device at once.
const READ_CHUNK: usize = 64 * 1024;

/// How often the device is looked at while no host is connected (qemu-ga's 100 ms).
const NO_HOST_RETRY: Duration = Duration::from_millis(100);

/// The guest's end of the agent port.
#[derive(Debug)]
pub(crate) struct PortDevice {
    /// Always `Some` between calls; taken only to register the descriptor afresh.
    device: Option<AsyncFd<OwnedFd>>,
    port: Arc<Port>,
    transcript: Option<Transcript>,
    status: StatusBoard,
}

impl PortDevice {
    /// Takes a device [`open_port_device`] opened.
    pub(crate) fn new(
        device: AsyncFd<OwnedFd>,
        port: Arc<Port>,
        transcript: Option<Transcript>,
        status: StatusBoard,
    ) -> Self {
        Self {
            device: Some(device),
            port,
            transcript,
            status,
        }
    }

    /// Moves bytes both ways for as long as the VM runs (until dropped). An I/O error other
    /// than "try again" is recorded and retried after a pause: the device does not go away
    /// while the guest runs.
    pub(crate) async fn run(mut self) -> Infallible {
        let number = self.status.connected();
        self.transcript
            .conn_event(number, "connected", Some("the guest's port device".into()));
        self.port.host_connected(number, false);
        let fd = self.device().get_ref().as_raw_fd();
        // Offsets in everything read from and written to the device.
        let mut read_at: u64 = 0;
        let mut written_at: u64 = 0;
        let mut buf = vec![0u8; READ_CHUNK].into_boxed_slice();
        loop {
            // A fault cannot close the host's connection from inside the guest.
            let _ = self.port.take_drop_request();
            let mut progressed = false;
            let mut write_blocked = false;
            loop {
                let (transcript, status) = (&self.transcript, &self.status);
                let at = written_at;
                let written = self.port.write_front(|bytes, parts| {
                    let begun = tokio::time::Instant::now();
                    let n = write_nonblocking(fd, bytes)?;
                    status.wrote(n);
                    transcript.bytes_written(begun, number, at, &bytes[..n]);
                    parts.record(transcript.as_ref(), number, at, 0..n);
                    Ok::<usize, io::Error>(n)
                });
                match written {
                    None => break,
                    Some(Ok(n)) => {
                        written_at += n as u64;
                        progressed = true;
                    }
                    Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Some(Err(e)) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            self.transcript
                                .event("port-device-error", Some(format!("write: {e}")));
                        }
                        write_blocked = true;
                        break;
                    }
                }
            }
            let room = self.port.input_room();
            let mut no_host = false;
            if room > 0 {
                let want = room.min(buf.len());
                match read_nonblocking(fd, &mut buf[..want]) {
                    Ok(0) => no_host = true,
                    Ok(n) => {
                        self.status.read(n);
                        self.transcript
                            .bytes(number, Direction::In, read_at, &buf[..n]);
                        self.port.push_input(&buf[..n], number, read_at);
                        read_at += n as u64;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.transcript
                            .event("port-device-error", Some(format!("read: {e}")));
                        no_host = true;
                    }
                }
            }
            if progressed {
                continue;
            }
            no_host |= host_absent(fd);
            if no_host {
                // The hang-up stays reported while no host is connected: look again later.
                tokio::select! {
                    biased;
                    () = self.port.host_notified() => {}
                    () = tokio::time::sleep(NO_HOST_RETRY) => {}
                }
                continue;
            }
            let interest = match (room > 0, write_blocked) {
                (true, true) => Interest::READABLE | Interest::WRITABLE,
                (true, false) => Interest::READABLE,
                (false, true) => Interest::WRITABLE,
                (false, false) => {
                    self.port.host_notified().await;
                    continue;
                }
            };
            let mut closed = false;
            tokio::select! {
                biased;
                ready = self.device().ready(interest) => {
                    if let Ok(mut guard) = ready {
                        let seen = guard.ready();
                        closed = seen.is_read_closed() || seen.is_write_closed();
                        // Tried already and found nothing: wait for a new edge.
                        guard.clear_ready();
                    }
                }
                () = self.port.host_notified() => {}
                // Only bounds a wait the driver never ends.
                () = tokio::time::sleep(NO_HOST_RETRY) => {}
            }
            if closed && !host_absent(fd) {
                // tokio never clears a hang-up it saw (while no host was connected): a
                // fresh registration forgets it, or every wait would return at once.
                self.register_afresh();
            }
        }
    }

    fn device(&self) -> &AsyncFd<OwnedFd> {
        self.device.as_ref().expect("the device is registered")
    }

    fn register_afresh(&mut self) {
        let Some(old) = self.device.take() else {
            return;
        };
        let fd = old.into_inner();
        // SAFETY: as in `open_port_device`: an OwnedFd, owned by the AsyncFd.
        match unsafe {
            AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE)
        } {
            Ok(device) => self.device = Some(device),
            Err(e) => {
                // Registering the same descriptor again only fails when the runtime is
                // going away; keep serving by polling.
                self.transcript
                    .event("port-device-error", Some(format!("register: {e}")));
                let (fd, _) = e.into_parts();
                // SAFETY: as above.
                self.device = unsafe {
                    AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE)
                }
                .ok();
            }
        }
    }
}

fn read_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `fd` is open for the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast::<libc::c_void>(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

fn write_nonblocking(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of `data.len()` bytes; `fd` is open for the call.
    let n = unsafe { libc::write(fd, data.as_ptr().cast::<libc::c_void>(), data.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

/// True while no host is connected to the port (the driver reports a hang-up).
fn host_absent(fd: RawFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&mut pollfd, 1, 0) };
    rc > 0 && pollfd.revents & libc::POLLHUP != 0
}

/// Opens a port device read-write and non-blocking, registered with the current tokio
/// runtime.
pub(crate) fn open_port_device(path: &std::path::Path) -> io::Result<AsyncFd<OwnedFd>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // SAFETY: an OwnedFd is a valid open descriptor that stays open, and its as_raw_fd is
    // always the same, for as long as the AsyncFd owns it.
    unsafe {
        AsyncFd::register_with_interest(
            OwnedFd::from(file),
            Interest::READABLE | Interest::WRITABLE,
        )
    }
    .map_err(io::Error::from)
}
