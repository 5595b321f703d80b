//! Where the client's bytes travel: a unix socket (the agent's chardev or its own
//! socket), or an in-memory pipe to an agent running in the same process.
//!
//! The in-memory transport lets a test or a fuzz target drive the client against a
//! scripted agent with no socket file and under tokio's paused clock, so a run takes no
//! real time and is reproducible. Each connect opens a fresh pipe and hands the agent's
//! end to the [`MemoryListener`]; a listener that is gone refuses the connection, as a
//! socket without a listener does.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Bytes in flight each way on an in-memory connection before a writer waits, like a
/// socket buffer.
const MEMORY_PIPE_BYTES: usize = 64 * 1024;

/// The client's side of an in-memory agent: every connect opens a new pipe to its
/// [`MemoryListener`]. Made with [`memory_channel`].
#[derive(Clone, Debug)]
pub struct MemoryConnector {
    accepted: mpsc::UnboundedSender<DuplexStream>,
}

/// The agent's side of an in-memory transport: yields one pipe per client connect.
#[derive(Debug)]
pub struct MemoryListener {
    incoming: mpsc::UnboundedReceiver<DuplexStream>,
}

/// A connected in-memory connector and listener.
pub fn memory_channel() -> (MemoryConnector, MemoryListener) {
    let (accepted, incoming) = mpsc::unbounded_channel();
    (MemoryConnector { accepted }, MemoryListener { incoming })
}

impl MemoryListener {
    /// The agent's end of the next connection; `None` once every connector is gone.
    pub async fn accept(&mut self) -> Option<DuplexStream> {
        self.incoming.recv().await
    }

    /// The agent's end of a connection already made, without waiting.
    pub fn try_accept(&mut self) -> Option<DuplexStream> {
        self.incoming.try_recv().ok()
    }
}

impl MemoryConnector {
    /// Opens a pipe and hands its far end to the listener; refused when the listener is
    /// gone.
    pub(crate) fn connect(&self) -> io::Result<Stream> {
        let (ours, theirs) = tokio::io::duplex(MEMORY_PIPE_BYTES);
        self.accepted
            .send(theirs)
            .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
        Ok(Stream::Memory(ours))
    }
}

/// One open connection to the agent.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Memory(DuplexStream),
}

impl Stream {
    /// Reads what is available without waiting (`WouldBlock` when nothing is).
    pub(crate) fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.try_read_buf(buf),
            Stream::Memory(s) => {
                // A pipe has no readiness API: poll it once with a waker that does
                // nothing; the next real read registers a real one.
                let mut chunk = [0u8; 4096];
                let mut read = ReadBuf::new(&mut chunk);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match Pin::new(s).poll_read(&mut cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        buf.extend_from_slice(read.filled());
                        Ok(read.filled().len())
                    }
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
