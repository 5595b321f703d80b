//! Bytes on their way to the channel, possibly too large to hold at once.
//!
//! A faithful reply is one buffer. An oversize reply (up to hundreds of MiB of string) or a
//! nesting bomb is mostly one byte repeated, so it is kept as segments and produced piece
//! by piece as it is written: the mock never holds such a reply, let alone twice.

use std::collections::VecDeque;

/// The largest piece produced at once when a large reply is streamed: the port's queue
/// takes pieces of this size.
pub(crate) const PIECE: usize = 64 * 1024;

/// One part of an [`Out`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Bytes(Vec<u8>),
    Repeat { byte: u8, len: usize },
}

impl Segment {
    fn len(&self) -> usize {
        match self {
            Segment::Bytes(b) => b.len(),
            Segment::Repeat { len, .. } => *len,
        }
    }
}

/// Bytes to write: a sequence of buffers and runs of one repeated byte.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Out {
    segments: VecDeque<Segment>,
    /// Bytes already taken from the front segment.
    front_taken: usize,
    len: usize,
    /// It never ends (a flood): the writer stops it when its client leaves.
    endless: bool,
}

/// The length of an endless output's run: more than any client could ever read (at
/// 1 GB/s, longer than a century), and far enough below `usize::MAX` for the sums here.
const ENDLESS: usize = usize::MAX / 4;

impl Out {
    pub(crate) fn bytes(bytes: Vec<u8>) -> Out {
        let mut out = Out::default();
        out.push(bytes);
        out
    }

    pub(crate) fn push(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.segments.push_back(Segment::Bytes(bytes));
        }
    }

    pub(crate) fn push_slice(&mut self, bytes: &[u8]) {
        self.push(bytes.to_vec());
    }

    pub(crate) fn push_repeat(&mut self, byte: u8, len: usize) {
        if len > 0 {
            self.len += len;
            self.segments.push_back(Segment::Repeat { byte, len });
        }
    }

    /// `byte` repeated without end, after `head`.
    pub(crate) fn endless(head: Vec<u8>, byte: u8) -> Out {
        let mut out = Out::bytes(head);
        out.push_repeat(byte, ENDLESS);
        out.endless = true;
        out
    }

    /// True for an output that never ends.
    pub(crate) fn is_endless(&self) -> bool {
        self.endless
    }

    /// Bytes left to write.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the whole of it is one buffer (the common case: written as it is).
    pub(crate) fn as_single_buffer(&self) -> Option<&[u8]> {
        match (self.segments.len(), self.segments.front()) {
            (1, Some(Segment::Bytes(b))) if self.front_taken == 0 => Some(b),
            _ => None,
        }
    }

    /// The whole of it as one buffer (only for sizes the caller has bounded).
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        if self.front_taken == 0 && self.segments.len() == 1 {
            if let Some(Segment::Bytes(b)) = self.segments.pop_front() {
                return b;
            }
        }
        let len = self.len;
        self.take(len)
    }

    /// Removes and returns the next `n` bytes (fewer when fewer are left).
    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len);
        let mut piece = Vec::with_capacity(n);
        while piece.len() < n {
            let Some(front) = self.segments.front() else {
                break;
            };
            let left_in_front = front.len() - self.front_taken;
            let want = (n - piece.len()).min(left_in_front);
            match front {
                Segment::Bytes(b) => {
                    piece.extend_from_slice(&b[self.front_taken..self.front_taken + want]);
                }
                Segment::Repeat { byte, .. } => piece.resize(piece.len() + want, *byte),
            }
            self.front_taken += want;
            if self.front_taken == front.len() {
                self.segments.pop_front();
                self.front_taken = 0;
            }
        }
        self.len -= piece.len();
        piece
    }

    /// Keeps only the first `n` bytes.
    pub(crate) fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        let mut kept = VecDeque::new();
        let mut left = n;
        let mut first = true;
        while left > 0 {
            let Some(segment) = self.segments.pop_front() else {
                break;
            };
            let skip = if first { self.front_taken } else { 0 };
            first = false;
            let available = segment.len() - skip;
            let keep = available.min(left);
            kept.push_back(match segment {
                Segment::Bytes(b) => Segment::Bytes(b[skip..skip + keep].to_vec()),
                Segment::Repeat { byte, .. } => Segment::Repeat { byte, len: keep },
            });
            left -= keep;
        }
        self.segments = kept;
        self.front_taken = 0;
        self.len = n;
    }

    /// The first `n` bytes, without consuming them (for small peeks).
    pub(crate) fn head(&self, n: usize) -> Vec<u8> {
        let mut copy = self.clone();
        copy.take(n)
    }

    /// The last byte, if any.
    pub(crate) fn last_byte(&self) -> Option<u8> {
        match self.segments.back()? {
            Segment::Bytes(b) => b.last().copied(),
            Segment::Repeat { byte, .. } => Some(*byte),
        }
    }

    /// Removes the last byte.
    pub(crate) fn pop_last(&mut self) {
        if self.len == 0 {
            return;
        }
        let single = self.segments.len() == 1;
        let Some(back) = self.segments.back_mut() else {
            return;
        };
        match back {
            Segment::Bytes(b) => {
                b.pop();
            }
            Segment::Repeat { len, .. } => *len -= 1,
        }
        self.len -= 1;
        let taken = if single { self.front_taken } else { 0 };
        if back.len() <= taken {
            self.segments.pop_back();
            if single {
                self.front_taken = 0;
            }
        }
    }

    /// Puts bytes in front.
    pub(crate) fn prepend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.front_taken > 0 {
            // Materialise the partly taken front so the new bytes can go before it.
            if let Some(front) = self.segments.pop_front() {
                let rest = match front {
                    Segment::Bytes(b) => Segment::Bytes(b[self.front_taken..].to_vec()),
                    Segment::Repeat { byte, len } => Segment::Repeat {
                        byte,
                        len: len - self.front_taken,
                    },
                };
                self.segments.push_front(rest);
            }
            self.front_taken = 0;
        }
        self.len += bytes.len();
        self.segments.push_front(Segment::Bytes(bytes.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Out {
        let mut out = Out::bytes(b"{\"return\": \"".to_vec());
        out.push_repeat(b'A', 10);
        out.push_slice(b"\"}\n");
        out
    }

    #[test]
    fn takes_across_segments() {
        let mut out = sample();
        assert_eq!(out.len(), 25);
        assert_eq!(out.take(14), b"{\"return\": \"AA");
        assert_eq!(out.take(100), b"AAAAAAAA\"}\n");
        assert!(out.is_empty());
        assert!(out.take(3).is_empty());
    }

    #[test]
    fn truncates_and_peeks() {
        let mut out = sample();
        out.take(3);
        assert_eq!(out.head(4), b"eturn"[..4]);
        out.truncate(12);
        assert_eq!(out.clone().into_vec(), b"eturn\": \"AAA");
        let mut whole = sample();
        whole.truncate(100);
        assert_eq!(whole.len(), 25);
    }

    #[test]
    fn the_last_byte_can_be_replaced() {
        let mut out = sample();
        assert_eq!(out.last_byte(), Some(b'\n'));
        out.pop_last();
        out.push_slice(b"\r\n");
        out.prepend(b"\xff");
        assert_eq!(
            out.into_vec(),
            b"\xff{\"return\": \"AAAAAAAAAA\"}\r\n".to_vec()
        );
        let mut repeat = Out::default();
        repeat.push_repeat(b'x', 2);
        repeat.pop_last();
        repeat.pop_last();
        assert!(repeat.is_empty());
        assert_eq!(repeat.last_byte(), None);
    }

    #[test]
    fn a_single_buffer_is_recognised() {
        assert_eq!(
            Out::bytes(b"x\n".to_vec()).as_single_buffer(),
            Some(&b"x\n"[..])
        );
        assert_eq!(sample().as_single_buffer(), None);
    }
}
