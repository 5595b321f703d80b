//! Splitting the agent's byte stream into reply frames, with bounded memory.
//!
//! qemu-ga writes one JSON object per line (QEMU qga/main.c `send_response`), and the
//! successful `guest-sync-delimited` reply starts with a 0xFF byte. A 0xFF can never be
//! part of valid UTF-8 JSON, so wherever one appears it ends whatever came before it:
//! the bytes before it are a fragment to discard (a truncated reply of a killed agent,
//! noise), and a new frame starts after it. A line longer than the limit is discarded up
//! to its end (newline or 0xFF) without being buffered, so no input can grow memory past
//! the limit plus one read.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::transport::Stream;

/// How much to ask the kernel for per read.
const READ_CHUNK: usize = 64 * 1024;

/// A buffer larger than this is shrunk once it is empty.
const KEEP_CAPACITY: usize = 1 << 20;

/// One unit of the agent's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete line (without its newline); read it with [`FrameReader::bytes`].
    Line {
        range: Range<usize>,
        /// The line started right after a 0xFF byte.
        delimited: bool,
    },
    /// A line longer than the limit: its bytes were dropped, and the rest of it will be.
    Oversize,
    /// Non-blank bytes that a 0xFF cut off (a truncated reply, noise).
    Fragment(Range<usize>),
    /// The peer closed the connection.
    Eof {
        /// Bytes of an unfinished line were pending (a reply cut short).
        truncated: bool,
    },
}

/// Buffered, bounded reader of reply frames.
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Start of the current, unfinished line in `buf`.
    start: usize,
    /// Bytes of `buf` before this index have been searched for delimiters.
    scanned: usize,
    /// The current line began right after a 0xFF.
    delimited: bool,
    /// The current line exceeded the limit: drop bytes until its end.
    skipping: bool,
    eof: bool,
    max_line: usize,
    /// Where the largest buffer ever held is recorded (see [`FrameReader::measured`]).
    peak: Option<Arc<AtomicUsize>>,
}

impl FrameReader {
    pub(crate) fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            delimited: false,
            skipping: false,
            eof: false,
            max_line,
            peak: None,
        }
    }

    /// Records in `peak` the most memory the buffer ever held (its capacity), so a client
    /// that runs in another program's process can still show that its memory stayed
    /// bounded.
    pub(crate) fn measured(mut self, peak: Arc<AtomicUsize>) -> Self {
        self.peak = Some(peak);
        self
    }

    /// The longest line accepted.
    pub(crate) fn max_line(&self) -> usize {
        self.max_line
    }

    /// The bytes of a frame returned by the latest [`FrameReader::next`].
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or_default()
    }

    /// The bytes already read behind the latest frame, not yet framed. Only a mutant
    /// client looks at them (a parser that skips to the last 0xFF of a read).
    pub(crate) fn unframed(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// The next frame, reading from `stream` as needed. Cancel-safe: bytes read are kept
    /// in the buffer if the future is dropped.
    pub(crate) async fn next(&mut self, stream: &mut Stream) -> io::Result<Frame> {
        loop {
            if let Some(frame) = self.next_buffered() {
                return Ok(frame);
            }
            if self.eof {
                return Ok(Frame::Eof {
                    truncated: self.start < self.buf.len() || self.skipping,
                });
            }
            self.make_room();
            let n = stream.read_buf(&mut self.buf).await?;
            if let Some(peak) = &self.peak {
                peak.fetch_max(self.buf.capacity(), Ordering::Relaxed);
            }
            if n == 0 {
                self.eof = true;
            }
        }
    }

    /// Takes what is already available, at most one read and without waiting; returns
    /// false when the peer has closed the connection. Used before reusing a connection,
    /// so a peer that went away is noticed before a command is written to it.
    pub(crate) fn poll_open(&mut self, stream: &mut Stream) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.make_room();
        match stream.try_read_buf(&mut self.buf) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Returns the next complete frame already in the buffer, if any.
    fn next_buffered(&mut self) -> Option<Frame> {
        loop {
            let found = self.buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n' || b == 0xFF)
                .map(|i| i + self.scanned);
            let Some(end) = found else {
                self.scanned = self.buf.len();
                if self.skipping {
                    // Nothing to keep: the whole pending run belongs to the skipped line.
                    self.buf.truncate(self.start);
                    self.scanned = self.start;
                    return None;
                }
                if self.buf.len() - self.start > self.max_line {
                    self.skipping = true;
                    self.buf.truncate(self.start);
                    self.scanned = self.start;
                    return Some(Frame::Oversize);
                }
                return None;
            };
            let line = self.start..end;
            let delimited = self.delimited;
            let was_skipping = self.skipping;
            self.start = end + 1;
            self.scanned = end + 1;
            self.skipping = false;
            if self.buf[end] == 0xFF {
                // Everything before a 0xFF is discarded; the next frame is delimited.
                self.delimited = true;
                if !was_skipping && !is_blank(&self.buf[line.clone()]) {
                    return Some(Frame::Fragment(line));
                }
                continue;
            }
            self.delimited = false;
            if was_skipping {
                continue;
            }
            if line.len() > self.max_line {
                return Some(Frame::Oversize);
            }
            if is_blank(&self.buf[line.clone()]) {
                continue;
            }
            return Some(Frame::Line {
                range: line,
                delimited,
            });
        }
    }

    /// Drops consumed bytes and makes sure a read has somewhere to go. The buffer grows
    /// by doubling (a long reply is not copied over and over) but never past the line
    /// limit plus two reads, and gives memory back once a big reply has been consumed.
    fn make_room(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf.shrink_to(READ_CHUNK);
            }
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        let len = self.buf.len();
        if self.buf.capacity() - len < READ_CHUNK / 4 {
            let ceiling = self.max_line.saturating_add(2 * READ_CHUNK);
            let target = (self.buf.capacity() * 2)
                .clamp(READ_CHUNK, ceiling)
                .max(len + READ_CHUNK / 4);
            self.buf.reserve_exact(target - len);
        }
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one at a time and collects the frames, as text.
    fn frames(max_line: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut r = FrameReader::new(max_line);
        let mut out = Vec::new();
        for chunk in chunks {
            r.make_room();
            r.buf.extend_from_slice(chunk);
            while let Some(f) = r.next_buffered() {
                out.push(match f {
                    Frame::Line { range, delimited } => format!(
                        "{}{}",
                        if delimited { "FF:" } else { "" },
                        String::from_utf8_lossy(r.bytes(range))
                    ),
                    Frame::Oversize => "OVERSIZE".into(),
                    Frame::Fragment(_) => "FRAGMENT".into(),
                    Frame::Eof { .. } => "EOF".into(),
                });
            }
            assert!(r.buf.len() - r.start <= max_line + chunk.len());
        }
        out
    }

    #[test]
    fn splits_lines_and_marks_the_delimited_one() {
        let f = frames(
            1000,
            &[b"{\"error\": 1}\n\xff{\"return\": 5}\r\n{\"return\": {}}\n"],
        );
        assert_eq!(
            f,
            ["{\"error\": 1}", "FF:{\"return\": 5}\r", "{\"return\": {}}"]
        );
    }

    #[test]
    fn discards_the_fragment_before_a_0xff() {
        let f = frames(
            1000,
            &[
                b"{\"return\": {\"count\": 12, \"buf",
                b"\xff{\"return\": 9}\n",
            ],
        );
        assert_eq!(f, ["FRAGMENT", "FF:{\"return\": 9}"]);
        assert_eq!(frames(1000, &[b" \r\n\xff\xff{}\n"]), ["FF:{}"]);
    }

    #[test]
    fn reassembles_a_drip() {
        let input = b"{\"return\": {}, \"id\": 3}\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let f = frames(1000, &chunks);
        assert_eq!(f, ["{\"return\": {}, \"id\": 3}"]);
    }

    #[test]
    fn skips_blank_lines() {
        let f = frames(1000, &[b"\n\r\n  \n{}\n"]);
        assert_eq!(f, ["{}"]);
    }

    #[test]
    fn drops_an_oversize_line_without_newline_in_bounded_memory() {
        let big = vec![b'a'; 300];
        let f = frames(100, &[&big, &big, &big, b"tail\n{\"return\": 1}\n"]);
        assert_eq!(f, ["OVERSIZE", "{\"return\": 1}"]);
    }

    #[test]
    fn drops_an_oversize_line_that_arrives_whole() {
        let mut line = vec![b'x'; 150];
        line.extend_from_slice(b"\n{\"return\": 2}\n");
        let f = frames(100, &[&line]);
        assert_eq!(f, ["OVERSIZE", "{\"return\": 2}"]);
    }

    #[test]
    fn a_0xff_ends_an_oversize_line() {
        let big = vec![b'a'; 300];
        let f = frames(100, &[&big, b"\xff{\"return\": 7}\n"]);
        assert_eq!(f, ["OVERSIZE", "FF:{\"return\": 7}"]);
    }

    #[test]
    fn capacity_stays_near_the_limit_and_shrinks_when_empty() {
        let max_line = 1 << 20;
        let mut r = FrameReader::new(max_line);
        let chunk = vec![b'a'; READ_CHUNK];
        for _ in 0..64 {
            r.make_room();
            let room = r.buf.capacity() - r.buf.len();
            r.buf.extend_from_slice(&chunk[..room.min(chunk.len())]);
            while r.next_buffered().is_some() {}
            assert!(
                r.buf.capacity() <= max_line + 2 * READ_CHUNK,
                "{}",
                r.buf.capacity()
            );
        }
        r.buf.extend_from_slice(b"\n");
        while r.next_buffered().is_some() {}
        r.make_room();
        assert!(r.buf.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn a_line_at_the_limit_is_kept() {
        let mut line = vec![b' '; 99];
        line.push(b'1');
        line.push(b'\n');
        let f = frames(100, &[&line]);
        assert_eq!(f.len(), 1);
    }
}
