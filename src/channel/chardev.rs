//! virtio-serial, host side: QEMU's `-chardev socket,server=on,wait=off` in front of the
//! guest's port (QEMU chardev/char-socket.c, hw/char/virtio-serial-bus.c).
//!
//! - The socket exists and accepts from the start, whatever the agent does; one client is
//!   served at a time, the others wait in the listen backlog and are served in order.
//! - Host bytes are read only while the agent has the port open and the guest has room
//!   (`virtio_serial_guest_ready`); until then they stay in the kernel's socket buffer, so a
//!   writer blocks once that is full, as with QEMU.
//! - Agent death and restart are invisible here: no EOF, no bytes.
//! - Reading EOF drops the client at once, so a half-close is a full disconnect. A client
//!   that hangs up while nothing is read is noticed by the hang-up alone (QEMU's HUP watch),
//!   and its unread bytes die with its socket.
//! - Replies the agent wrote that were not yet written to a client go to the next one.

use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};

use super::intercept::Interceptor;
use super::port::Port;
use super::status::StatusBoard;
use crate::transcript::writer::{Direction, MaybeTranscript, Transcript};

/// The most the chardev reads from the host socket at once.
const READ_CHUNK: usize = 64 * 1024;

/// A pause after a failed accept (out of file descriptors, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// How often a client that shut down its writing half while nothing was read is checked
/// for a full hang-up. epoll reports nothing new for it (the read-closed state stays set),
/// so this is polled; QEMU's HUP watch would see it at once.
const HANGUP_CHECK: Duration = Duration::from_millis(100);

/// QEMU's chardev socket for the agent's port.
#[derive(Debug)]
pub(crate) struct Chardev {
    listener: UnixListener,
    port: Arc<Port>,
    fresh_parser_per_connection: bool,
    transcript: Option<Transcript>,
    status: StatusBoard,
    faults: Interceptor,
}

impl Chardev {
    pub(crate) fn new(
        listener: UnixListener,
        port: Arc<Port>,
        fresh_parser_per_connection: bool,
        transcript: Option<Transcript>,
        status: StatusBoard,
        faults: Interceptor,
    ) -> Self {
        Self {
            listener,
            port,
            fresh_parser_per_connection,
            transcript,
            status,
            faults,
        }
    }

    /// Serves clients one after the other, for as long as the VM runs (until dropped).
    pub(crate) async fn run(mut self) -> Infallible {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    self.transcript.event("accept-failed", Some(e.to_string()));
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let number = self.status.connected();
            self.transcript.conn_event(number, "connected", None);
            self.port
                .host_connected(number, self.fresh_parser_per_connection);
            self.faults.connected(number);
            let detail = self.serve(&stream, number).await;
            self.port.host_disconnected();
            self.faults.disconnected();
            self.status.disconnected();
            self.transcript
                .conn_event(number, "disconnected", Some(detail));
        }
    }

    /// Moves bytes both ways until the client goes; returns why it went.
    async fn serve(&mut self, stream: &UnixStream, number: u64) -> String {
        let fd = stream.as_raw_fd();
        // The client shut down its writing half while nothing was read.
        let mut half_closed = false;
        // Whether a read could find bytes: false once a read drained the socket, until
        // epoll reports more (tokio's cached readiness is cleared along with it).
        let mut maybe_readable = true;
        // Bytes read from and written to this client so far: the offsets the transcript
        // joins requests and outputs to.
        let mut read_at: u64 = 0;
        let mut written_at: u64 = 0;
        let mut buf: Option<Box<[u8]>> = None;
        loop {
            if self.port.take_drop_request() {
                return "closed by a fault".into();
            }
            // Replies first: a new client gets stale replies before anything else.
            let mut write_blocked = false;
            loop {
                let (transcript, status) = (&self.transcript, &self.status);
                let at = written_at;
                let written = self.port.write_front(|bytes, parts| {
                    let begun = tokio::time::Instant::now();
                    let n = stream.try_write(bytes)?;
                    status.wrote(n);
                    transcript.bytes_written(begun, number, at, &bytes[..n]);
                    parts.record(transcript.as_ref(), number, at, 0..n);
                    Ok::<usize, io::Error>(n)
                });
                if let Some(Ok(n)) = &written {
                    written_at += *n as u64;
                }
                match written {
                    None => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        write_blocked = true;
                        break;
                    }
                    Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Some(Err(e)) => return e.to_string(),
                }
            }

            let room = self.port.input_room();
            if room > 0 && maybe_readable {
                // Allocated while a client is connected only: an idle guest of a fleet of
                // thousands holds no read buffer.
                let buf = buf.get_or_insert_with(|| vec![0u8; READ_CHUNK].into_boxed_slice());
                let want = room.min(buf.len());
                match recv_nonblocking(fd, &mut buf[..want]) {
                    Ok(0) => return "eof".into(),
                    Ok(n) => {
                        self.status.read(n);
                        self.transcript
                            .bytes(number, Direction::In, read_at, &buf[..n]);
                        self.port.push_input(&buf[..n], number, read_at);
                        read_at += n as u64;
                        // Read on until the socket is drained: if the client shut down its
                        // writing half after these bytes, EOF comes next, and QEMU reads it
                        // at once, long before the guest could answer, so the client must
                        // be dropped before any reply is written to it.
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        clear_read_readiness(stream);
                        maybe_readable = false;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return e.to_string(),
                }
            }

            // Not reading, a half-closed client can only hang up: it is checked for that
            // on a timer rather than by a readiness that stays set.
            let watch_read = !(room == 0 && half_closed);
            let interest = match (watch_read, write_blocked) {
                (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
                (true, false) => Some(Interest::READABLE),
                (false, true) => Some(Interest::WRITABLE),
                (false, false) => None,
            };
            tokio::select! {
                biased;
                ready = stream.ready(interest.unwrap_or(Interest::READABLE)), if interest.is_some() => {
                    let ready = match ready {
                        Ok(ready) => ready,
                        Err(e) => return e.to_string(),
                    };
                    if ready.is_readable() || ready.is_read_closed() {
                        // Bytes (or EOF) to read, now or once the guest has room again.
                        maybe_readable = true;
                        if room == 0 {
                            // Nothing is read now, but QEMU still notices a hang-up.
                            if peer_hung_up(fd) {
                                return "hangup".into();
                            }
                            half_closed |= ready.is_read_closed();
                            clear_read_readiness(stream);
                        }
                    }
                }
                () = self.port.host_notified() => {}
                // An async block, so no timer is set up on the loops that do not need one.
                () = async { tokio::time::sleep(HANGUP_CHECK).await }, if !watch_read => {
                    if peer_hung_up(fd) {
                        return "hangup".into();
                    }
                }
            }
        }
    }
}

/// Reads without tokio's readiness cache, which may have been cleared while data waited.
fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and `fd` is an open socket
    // owned by the caller for the duration of the call.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        // `n` is non-negative and at most `buf.len()`.
        Ok(n.unsigned_abs())
    }
}

/// Forgets a read readiness event tokio cached, so the next wait needs a new one.
fn clear_read_readiness(stream: &UnixStream) {
    let _ = stream.try_io(Interest::READABLE, || {
        Err::<(), io::Error>(io::ErrorKind::WouldBlock.into())
    });
}

/// True when the peer closed its socket completely (not just its writing half).
fn peer_hung_up(fd: RawFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&mut pollfd, 1, 0) };
    rc > 0 && pollfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
}
