//! The virtio-serial port between QEMU's chardev (host side) and the agent (guest side).
//!
//! It holds what a real port holds in flight:
//! - host → guest: bytes QEMU has read from the host socket and handed to the guest, which
//!   the agent has not read yet. QEMU hands bytes over only while the agent has the port
//!   open; they are discarded when the agent closes it (dies), as the guest driver does.
//! - guest → host: replies the agent wrote that QEMU has not written to the host socket yet.
//!   They survive the agent's death and a host disconnect, so they reach the next client.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::origin::Parts;

/// How far behind the agent's reads the port remembers which connection sent which input
/// bytes: an agent that dies before reading a request gives back at most its raw input
/// (1 MiB, see `process.rs`) plus one read.
const SOURCE_MEMORY: u64 = 2 << 20;

/// Host bytes the guest side holds for an agent that has not read them: the virtio-console
/// driver's receive queue of 128 page-sized buffers.
pub(crate) const GUEST_INPUT_LIMIT: usize = 128 * 4096;

/// Reply bytes the agent may have written before its writes block while the host socket
/// does not take them (the port's queue; the host socket's own buffer comes on top). A
/// reply up to this size goes in whole once the queue is below it, a larger one in pieces
/// of this size, so at most twice this much waits, and an agent killed while writing a
/// large reply leaves a cut-off prefix on the wire, as a real one does.
pub(crate) const GUEST_OUTPUT_LIMIT: usize = 64 * 1024;

/// What an agent read from the port gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PortRead {
    /// `n` bytes were copied into the buffer: bytes `at..at + n` of what connection `conn`
    /// sent. A read never mixes two connections' bytes.
    Bytes { n: usize, conn: u64, at: u64 },
    /// The bytes that follow came from a new host connection, and the parser is set to
    /// start afresh for each connection.
    NewConnection,
}

#[derive(Debug, Default)]
struct State {
    /// The agent has the port open (it is running, hung or suspended).
    open: bool,
    /// A host client is connected to the chardev.
    host_connected: bool,
    /// The connection number of that client.
    serving: Option<u64>,
    input: VecDeque<u8>,
    /// Total bytes ever taken from `input` and ever put in: the offsets of `boundaries`.
    taken: u64,
    put: u64,
    /// Offsets in the input stream where a new host connection's bytes begin (only kept
    /// when the parser is reset per connection).
    boundaries: VecDeque<u64>,
    /// Where each connection's input begins in the input stream (offset `put`-based, the
    /// connection, and the connection's own offset there); runs of one connection merge.
    sources: VecDeque<Source>,
    /// Replies waiting for the host, each with the outputs it carries.
    output: VecDeque<(Vec<u8>, Parts)>,
    /// How much of the front reply is already written to the host.
    front_written: usize,
    output_bytes: usize,
    /// A fault asked the chardev to close the current client's connection.
    drop_client: bool,
}

/// Where a run of input bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Source {
    /// The offset of its first byte in the port's input stream.
    start: u64,
    len: u64,
    conn: u64,
    /// The offset of its first byte in what the connection sent.
    conn_at: u64,
}

impl State {
    /// The source of input stream offset `at`, and how many bytes from there are its.
    fn source_of(&self, at: u64) -> Option<(Source, u64)> {
        let index = self
            .sources
            .partition_point(|s| s.start <= at)
            .checked_sub(1)?;
        let source = self.sources[index];
        let within = at - source.start;
        (within < source.len).then(|| (source, source.len - within))
    }
}

/// Where a read puts its bytes: a buffer that may be allocated only once it is needed.
pub(crate) trait ReadInto {
    fn buffer(&mut self) -> &mut [u8];
}

impl<const N: usize> ReadInto for [u8; N] {
    fn buffer(&mut self) -> &mut [u8] {
        self
    }
}

/// The port, shared by the chardev and the agent process.
#[derive(Debug, Default)]
pub(crate) struct Port {
    state: Mutex<State>,
    /// Wakes the agent: input arrived, a host connected, output room freed.
    agent_wake: Notify,
    /// Wakes the chardev: output arrived, input room freed, the port opened or closed.
    host_wake: Notify,
}

impl Port {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- guest side -------------------------------------------------------------------

    /// The agent opened the port (a process started).
    pub(crate) fn open(&self) {
        self.lock().open = true;
        self.host_wake.notify_one();
    }

    /// The agent closed the port (its process died): unread host bytes are discarded.
    pub(crate) fn close(&self) {
        {
            let mut s = self.lock();
            s.open = false;
            let unread = s.input.len() as u64;
            s.input.clear();
            s.taken += unread;
            s.boundaries.clear();
        }
        self.host_wake.notify_one();
    }

    /// The agent died before it read `unread`, bytes it had already taken: they go back in
    /// front of what it has not taken, and nothing is discarded, as if they had never
    /// reached the guest (they were still in QEMU's or the kernel's hands).
    pub(crate) fn close_returning(&self, unread: &[u8]) {
        {
            let mut s = self.lock();
            s.open = false;
            for &byte in unread.iter().rev() {
                s.input.push_front(byte);
            }
            s.taken = s.taken.saturating_sub(unread.len() as u64);
        }
        self.host_wake.notify_one();
    }

    /// True when host bytes wait for the agent.
    pub(crate) fn has_input(&self) -> bool {
        !self.lock().input.is_empty()
    }

    /// Asks the chardev to close the current client's connection. Replies written after
    /// this wait for the next client.
    pub(crate) fn drop_client(&self) {
        {
            let mut s = self.lock();
            if !s.host_connected {
                return;
            }
            s.drop_client = true;
        }
        self.host_wake.notify_one();
    }

    /// Waits for host bytes and copies at most `buf.len()` of them, never past the start
    /// of another connection's bytes.
    pub(crate) async fn read(&self, buf: &mut impl ReadInto) -> PortRead {
        loop {
            {
                let mut s = self.lock();
                if s.boundaries.front() == Some(&s.taken) {
                    s.boundaries.pop_front();
                    return PortRead::NewConnection;
                }
                if !s.input.is_empty() {
                    let until_boundary = s.boundaries.front().map_or(usize::MAX, |b| {
                        usize::try_from(b - s.taken).unwrap_or(usize::MAX)
                    });
                    let (conn, at, source_left) = match s.source_of(s.taken) {
                        Some((source, left)) => (
                            source.conn,
                            source.conn_at + (s.taken - source.start),
                            usize::try_from(left).unwrap_or(usize::MAX),
                        ),
                        None => (0, 0, usize::MAX),
                    };
                    // The buffer is allocated only now that there is something to read.
                    let buf = buf.buffer();
                    let n = buf
                        .len()
                        .min(s.input.len())
                        .min(until_boundary)
                        .min(source_left);
                    let was_full = s.input.len() >= GUEST_INPUT_LIMIT;
                    for (dst, src) in buf.iter_mut().zip(s.input.drain(..n)) {
                        *dst = src;
                    }
                    s.taken += n as u64;
                    let forget_before = s.taken.saturating_sub(SOURCE_MEMORY);
                    while s
                        .sources
                        .front()
                        .is_some_and(|f| f.start + f.len <= forget_before)
                    {
                        s.sources.pop_front();
                    }
                    drop(s);
                    if was_full {
                        self.host_wake.notify_one();
                    }
                    return PortRead::Bytes { n, conn, at };
                }
            }
            self.agent_wake.notified().await;
        }
    }

    /// Writes one reply, with the outputs it carries. Blocks, as the guest driver does,
    /// while no host client is connected or while the port's queue is full.
    pub(crate) async fn write(&self, reply: Vec<u8>, parts: Parts) {
        if reply.len() <= GUEST_OUTPUT_LIMIT {
            self.push_when_room(reply, parts).await;
        } else {
            for (index, piece) in reply.chunks(GUEST_OUTPUT_LIMIT).enumerate() {
                let from = index * GUEST_OUTPUT_LIMIT;
                let piece_parts = parts.slice(from..from + piece.len());
                self.push_when_room(piece.to_vec(), piece_parts).await;
            }
        }
    }

    async fn push_when_room(&self, reply: Vec<u8>, parts: Parts) {
        if reply.is_empty() {
            return;
        }
        loop {
            {
                let mut s = self.lock();
                if s.host_connected && s.output_bytes < GUEST_OUTPUT_LIMIT {
                    s.output_bytes += reply.len();
                    s.output.push_back((reply, parts));
                    drop(s);
                    self.host_wake.notify_one();
                    return;
                }
            }
            self.agent_wake.notified().await;
        }
    }

    // ---- host side --------------------------------------------------------------------

    /// Host client `conn` connected; with `new_parser`, the agent's parser starts afresh
    /// at this client's first byte.
    pub(crate) fn host_connected(&self, conn: u64, new_parser: bool) {
        {
            let mut s = self.lock();
            s.host_connected = true;
            s.serving = Some(conn);
            if new_parser {
                let at = s.put;
                if s.boundaries.back() != Some(&at) {
                    s.boundaries.push_back(at);
                }
            }
        }
        self.agent_wake.notify_one();
    }

    pub(crate) fn host_disconnected(&self) {
        let mut s = self.lock();
        s.host_connected = false;
        s.serving = None;
        s.drop_client = false;
    }

    /// True while host client `conn` is connected: what the guest sees of the host side
    /// (its writes block while no host is connected), so a guest that floods one client
    /// can stop when that client leaves.
    pub(crate) fn serves(&self, conn: u64) -> bool {
        self.lock().serving == Some(conn)
    }

    /// True (once) when a fault asked to close the current client's connection.
    pub(crate) fn take_drop_request(&self) -> bool {
        std::mem::take(&mut self.lock().drop_client)
    }

    /// Bytes the agent wrote before the mock started (a previous session's replies that
    /// no client read): the next client gets them first.
    pub(crate) fn preload_output(&self, bytes: Vec<u8>, parts: Parts) {
        if bytes.is_empty() {
            return;
        }
        let mut s = self.lock();
        s.output_bytes += bytes.len();
        s.output.push_back((bytes, parts));
    }

    /// How many host bytes the guest would take now: none while the agent has the port
    /// closed.
    pub(crate) fn input_room(&self) -> usize {
        let s = self.lock();
        if s.open {
            GUEST_INPUT_LIMIT.saturating_sub(s.input.len())
        } else {
            0
        }
    }

    /// Hands host bytes to the guest: bytes `conn_at..` of what connection `conn` sent.
    /// Bytes beyond the room are never offered, as the chardev reads at most
    /// [`Port::input_room`].
    pub(crate) fn push_input(&self, bytes: &[u8], conn: u64, conn_at: u64) {
        {
            let mut s = self.lock();
            if !s.open {
                return;
            }
            let start = s.put;
            let len = bytes.len() as u64;
            match s.sources.back_mut() {
                Some(last)
                    if last.conn == conn
                        && last.start + last.len == start
                        && last.conn_at + last.len == conn_at =>
                {
                    last.len += len;
                }
                _ => s.sources.push_back(Source {
                    start,
                    len,
                    conn,
                    conn_at,
                }),
            }
            s.input.extend(bytes);
            s.put += len;
        }
        self.agent_wake.notify_one();
    }

    /// Calls `write` with the unwritten part of the oldest reply, if any, and the outputs
    /// that part carries; `write` returns how many bytes the host socket took. Returns that
    /// count, or `None` when nothing is pending.
    pub(crate) fn write_front<E>(
        &self,
        write: impl FnOnce(&[u8], &Parts) -> Result<usize, E>,
    ) -> Option<Result<usize, E>> {
        let mut s = self.lock();
        if s.drop_client {
            // The client is about to be dropped: nothing more goes to it.
            return None;
        }
        let at = s.front_written;
        let (front, parts) = s.output.front()?;
        let result = write(&front[at..], &parts.slice(at..front.len()));
        if let Ok(n) = result {
            let len = front.len();
            s.front_written += n;
            s.output_bytes -= n;
            let done = s.front_written >= len;
            let had_no_room = s.output_bytes + n >= GUEST_OUTPUT_LIMIT;
            if done {
                s.output.pop_front();
                s.front_written = 0;
            }
            drop(s);
            if had_no_room && n > 0 {
                self.agent_wake.notify_one();
            }
        }
        Some(result)
    }

    /// Waits until the agent changed something the chardev cares about.
    pub(crate) async fn host_notified(&self) {
        self.host_wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_port() -> Port {
        let port = Port::default();
        port.open();
        port
    }

    #[tokio::test]
    async fn a_closed_port_takes_no_input_and_close_discards_unread_bytes() {
        let port = Port::default();
        assert_eq!(port.input_room(), 0);
        port.push_input(b"lost", 1, 0);
        port.open();
        assert_eq!(port.input_room(), GUEST_INPUT_LIMIT);
        port.push_input(b"abc", 1, 0);
        assert_eq!(port.input_room(), GUEST_INPUT_LIMIT - 3);
        port.close();
        port.open();
        port.push_input(b"xy", 1, 0);
        let mut buf = [0u8; 16];
        assert!(matches!(
            port.read(&mut buf).await,
            PortRead::Bytes { n: 2, .. }
        ));
        assert_eq!(&buf[..2], b"xy");
    }

    #[tokio::test]
    async fn reads_stop_at_a_new_connection_when_asked() {
        let port = open_port();
        port.host_connected(1, true);
        port.push_input(b"{\"a\"", 1, 0);
        port.host_disconnected();
        port.host_connected(2, true);
        port.push_input(b"}", 1, 0);
        let mut buf = [0u8; 16];
        assert_eq!(port.read(&mut buf).await, PortRead::NewConnection);
        assert!(matches!(
            port.read(&mut buf).await,
            PortRead::Bytes { n: 4, .. }
        ));
        assert_eq!(port.read(&mut buf).await, PortRead::NewConnection);
        assert!(matches!(
            port.read(&mut buf).await,
            PortRead::Bytes { n: 1, .. }
        ));
        assert_eq!(buf[0], b'}');
    }

    #[tokio::test]
    async fn reads_run_across_connections_by_default_but_never_mix_them() {
        let port = open_port();
        port.host_connected(3, false);
        port.push_input(b"{\"a\"", 1, 0);
        port.host_disconnected();
        port.host_connected(4, false);
        port.push_input(b"}", 2, 0);
        let mut buf = [0u8; 16];
        // No new-connection mark: the parser goes on; but each read says whose bytes.
        assert_eq!(
            port.read(&mut buf).await,
            PortRead::Bytes {
                n: 4,
                conn: 1,
                at: 0
            }
        );
        assert_eq!(
            port.read(&mut buf).await,
            PortRead::Bytes {
                n: 1,
                conn: 2,
                at: 0
            }
        );
    }

    #[tokio::test]
    async fn reads_take_at_most_the_buffer() {
        let port = open_port();
        port.push_input(&[b' '; 10_000], 1, 0);
        let mut buf = [0u8; 4096];
        assert!(matches!(
            port.read(&mut buf).await,
            PortRead::Bytes { n: 4096, .. }
        ));
        assert!(matches!(
            port.read(&mut buf).await,
            PortRead::Bytes { n: 4096, .. }
        ));
        assert!(matches!(
            port.read(&mut buf).await,
            PortRead::Bytes { n: 1808, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_wait_for_a_host() {
        let port = std::sync::Arc::new(open_port());
        let writer = {
            let port = port.clone();
            tokio::spawn(async move { port.write(b"reply\n".to_vec(), Parts::default()).await })
        };
        tokio::task::yield_now().await;
        assert!(port
            .write_front(|_: &[u8], _: &Parts| Ok::<usize, ()>(0))
            .is_none());
        port.host_connected(5, false);
        writer.await.expect("writer");
        let mut seen = Vec::new();
        let n = port.write_front(|b: &[u8], _: &Parts| {
            seen.extend_from_slice(&b[..2]);
            Ok::<usize, ()>(2)
        });
        assert_eq!(n, Some(Ok(2)));
        port.write_front(|b: &[u8], _: &Parts| {
            seen.extend_from_slice(b);
            Ok::<usize, ()>(b.len())
        });
        assert_eq!(seen, b"reply\n");
        assert!(port
            .write_front(|_: &[u8], _: &Parts| Ok::<usize, ()>(0))
            .is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_reply_goes_in_pieces_as_the_host_takes_them() {
        let port = std::sync::Arc::new(open_port());
        port.host_connected(6, false);
        let reply: Vec<u8> = (0..GUEST_OUTPUT_LIMIT * 3 + 5).map(|i| i as u8).collect();
        let writer = {
            let port = port.clone();
            let reply = reply.clone();
            tokio::spawn(async move { port.write(reply, Parts::default()).await })
        };
        tokio::task::yield_now().await;
        let mut seen = Vec::new();
        let mut segments = 0;
        while seen.len() < reply.len() {
            let taken = port.write_front(|b: &[u8], _: &Parts| {
                assert!(b.len() <= GUEST_OUTPUT_LIMIT, "one piece at a time");
                seen.extend_from_slice(b);
                Ok::<usize, ()>(b.len())
            });
            if taken.is_some() {
                segments += 1;
            }
            tokio::task::yield_now().await;
        }
        writer.await.expect("writer");
        assert_eq!(seen, reply);
        assert_eq!(segments, 4);
    }

    #[tokio::test]
    async fn an_agent_that_died_before_reading_gives_its_bytes_back() {
        let port = open_port();
        port.push_input(b"{\"a\":1}{\"b\":2}", 1, 0);
        let mut buf = [0u8; 7];
        assert!(matches!(
            port.read(&mut buf).await,
            PortRead::Bytes { n: 7, .. }
        ));
        port.close_returning(b"{\"a\":1}");
        assert_eq!(port.input_room(), 0);
        assert!(port.has_input());
        port.open();
        let mut buf = [0u8; 64];
        assert!(matches!(
            port.read(&mut buf).await,
            PortRead::Bytes { n: 14, .. }
        ));
        assert_eq!(&buf[..14], b"{\"a\":1}{\"b\":2}");
    }

    #[test]
    fn a_drop_request_holds_back_output_until_the_client_is_gone() {
        let port = open_port();
        port.drop_client();
        assert!(!port.take_drop_request(), "no client, nothing to drop");
        port.host_connected(7, false);
        port.preload_output(b"stale\n".to_vec(), Parts::default());
        port.drop_client();
        assert!(port
            .write_front(|b: &[u8], _: &Parts| Ok::<usize, ()>(b.len()))
            .is_none());
        assert!(port.take_drop_request());
        port.host_disconnected();
        port.host_connected(8, false);
        let mut seen = Vec::new();
        port.write_front(|b: &[u8], _: &Parts| {
            seen.extend_from_slice(b);
            Ok::<usize, ()>(b.len())
        });
        assert_eq!(seen, b"stale\n");
    }

    #[tokio::test(start_paused = true)]
    async fn writes_block_when_the_queue_is_full() {
        let port = std::sync::Arc::new(open_port());
        port.host_connected(9, false);
        port.write(vec![b'x'; GUEST_OUTPUT_LIMIT], Parts::default())
            .await;
        let blocked = {
            let port = port.clone();
            tokio::spawn(async move { port.write(b"next\n".to_vec(), Parts::default()).await })
        };
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        port.write_front(|b: &[u8], _: &Parts| Ok::<usize, ()>(b.len()));
        blocked.await.expect("writer");
    }
}
