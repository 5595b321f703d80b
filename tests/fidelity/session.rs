//! Sending one case to an agent and taking back exactly its reply stream.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Long enough for the 64 MiB cases on a debug build of the mock; a case that runs into it
/// has failed anyway.
const CASE_DEADLINE: Duration = Duration::from_secs(60);

/// A connection to an agent whose parser is known to be clean.
pub struct Session {
    stream: UnixStream,
    next_marker: i64,
    pending: Vec<u8>,
}

impl Session {
    pub fn connect(socket: &Path) -> io::Result<Session> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut session = Session {
            stream,
            next_marker: 1_000_000,
            pending: Vec::new(),
        };
        session.resync()?;
        Ok(session)
    }

    /// Sends `0xFF` + `guest-sync-delimited` and returns every byte that came before the
    /// marker's reply. The 0xFF ends whatever state the case left the lexer in.
    pub fn resync(&mut self) -> io::Result<Vec<u8>> {
        self.next_marker += 1;
        let marker = self.next_marker;
        let mut request = vec![0xff];
        request.extend_from_slice(
            format!(r#"{{"execute":"guest-sync-delimited","arguments":{{"id":{marker}}}}}"#)
                .as_bytes(),
        );
        self.stream.write_all(&request)?;
        let mut expected = vec![0xff];
        expected.extend_from_slice(format!("{{\"return\": {marker}}}\n").as_bytes());
        self.read_until_suffix(&expected)
    }

    /// Runs one case: writes its chunks (waiting between chunks until the agent has taken
    /// the previous one off the socket), then the marker.
    pub fn run(&mut self, chunks: &[Vec<u8>]) -> io::Result<Vec<u8>> {
        for (i, chunk) in chunks.iter().enumerate() {
            self.write_draining(chunk)?;
            if i + 1 < chunks.len() {
                self.wait_drained()?;
            }
        }
        self.resync()
    }

    /// Writes while also reading, so a case whose replies are larger than the socket
    /// buffers cannot deadlock both sides.
    fn write_draining(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.set_nonblocking(true)?;
        let result = (|| {
            let deadline = Instant::now() + CASE_DEADLINE;
            let mut written = 0;
            let mut buf = vec![0u8; 64 * 1024];
            while written < bytes.len() {
                match self.stream.write(&bytes[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                match self.stream.read(&mut buf) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        wait_ready(&self.stream, Duration::from_millis(50))?;
                    }
                    Err(e) => return Err(e),
                }
                if Instant::now() > deadline {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Ok(())
        })();
        self.stream.set_nonblocking(false)?;
        result
    }

    /// Polls the socket's send queue until the agent has read everything written.
    fn wait_drained(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + CASE_DEADLINE;
        loop {
            let mut unread: libc::c_int = 0;
            // SAFETY: TIOCOUTQ writes one int through the pointer, which outlives the call.
            let rc = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::TIOCOUTQ, &mut unread) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            if unread == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
            std::thread::yield_now();
        }
    }

    fn read_until_suffix(&mut self, suffix: &[u8]) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + CASE_DEADLINE;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.pending.ends_with(suffix) {
                let mut out = std::mem::take(&mut self.pending);
                out.truncate(out.len() - suffix.len());
                return Ok(out);
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no marker reply; got {} bytes ending {:?}",
                        self.pending.len(),
                        String::from_utf8_lossy(
                            &self.pending[self.pending.len().saturating_sub(200)..]
                        )
                    ),
                ));
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn wait_ready(stream: &UnixStream, limit: Duration) -> io::Result<()> {
    let mut fds = [libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    }];
    let ms = limit.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
