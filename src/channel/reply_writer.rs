//! How the agent's replies reach the channel when faults change the writes: chunked
//! (`slice`, `drip`), cut off (`die-mid-reply`), held back until after the next reply
//! (`swap`), or gathered into one write (`coalesce`).
//!
//! Without faults a reply is one write, exactly as before.
//!
//! A coalesce group holds replies until it has its count, or until the agent has handled
//! everything it has read and would wait for more: buffered output is flushed when the
//! writer goes idle, so a client that waits for each reply still gets it, and replies to
//! requests that arrive together go out together. A swapped reply waits for the next reply,
//! however long that takes.

use std::collections::VecDeque;
use std::sync::Arc;

use super::faults::{Chunking, Out, PIECE};
use super::origin::{Parts, Tag};

/// Where the agent's writes go (the port or the agent's own socket).
pub(crate) trait Sink {
    /// One write, with the outputs it carries; waits until the channel took it.
    async fn write(&mut self, bytes: Vec<u8>, parts: Parts);
    /// True while host connection `conn` is the one connected (an endless output stops
    /// when the connection it was written for has gone).
    fn serves(&self, conn: u64) -> bool;
}

/// The most a coalesce group gathers in memory: a larger reply is written on its own, and
/// a group that grows past it goes out at once.
const GROUP_LIMIT: usize = 1 << 20;

#[derive(Debug)]
struct Group {
    want: usize,
    replies: usize,
    bytes: Vec<u8>,
    parts: Parts,
}

/// The agent process's reply writer and what it holds back.
#[derive(Debug, Default)]
pub(crate) struct ReplyWriter {
    swapped: VecDeque<(Out, Arc<Tag>)>,
    group: Option<Group>,
}

impl ReplyWriter {
    /// From now on, replies gather until `count` are ready (unless a group is open).
    pub(crate) fn open_group(&mut self, count: usize) {
        if count > 1 && self.group.is_none() {
            self.group = Some(Group {
                want: count,
                replies: 0,
                bytes: Vec::new(),
                parts: Parts::default(),
            });
        }
    }

    /// Holds `reply` back until the next reply has been written.
    pub(crate) fn hold(&mut self, reply: Out, tag: Arc<Tag>) {
        self.swapped.push_back((reply, tag));
    }

    /// True when a reply waits for the next one.
    pub(crate) fn holds_swapped(&self) -> bool {
        !self.swapped.is_empty()
    }

    /// True when nothing is held back.
    pub(crate) fn is_idle(&self) -> bool {
        self.swapped.is_empty() && self.group.is_none()
    }

    /// Writes what a coalesce group gathered so far, in one write.
    pub(crate) async fn flush_group(&mut self, sink: &mut impl Sink) {
        if let Some(group) = self.group.take() {
            if !group.bytes.is_empty() {
                sink.write(group.bytes, group.parts).await;
            }
        }
    }

    /// Writes one reply: whole, chunked, or (with `cut`) only its first bytes, never the
    /// whole of it. Replies held by `swap` follow a reply written in full.
    pub(crate) async fn write(
        &mut self,
        sink: &mut impl Sink,
        reply: Out,
        tag: Arc<Tag>,
        chunking: &Chunking,
        cut: Option<usize>,
    ) {
        if *chunking != Chunking::Whole || cut.is_some() {
            self.flush_group(sink).await;
            write_out(sink, reply, &tag, chunking, cut).await;
            if cut.is_none() {
                self.release_swapped(sink).await;
            }
            return;
        }
        if self.group.is_some() && reply.len() <= GROUP_LIMIT {
            self.gather(reply, &tag);
            // Replies held by `swap` follow this one, in the same group.
            while let Some((held, held_tag)) = self.swapped.pop_front() {
                if self.group.is_some() && held.len() <= GROUP_LIMIT {
                    self.gather(held, &held_tag);
                } else {
                    self.flush_group(sink).await;
                    write_out(sink, held, &held_tag, &Chunking::Whole, None).await;
                }
            }
            if self
                .group
                .as_ref()
                .is_some_and(|g| g.replies >= g.want || g.bytes.len() > GROUP_LIMIT)
            {
                self.flush_group(sink).await;
            }
            return;
        }
        // A reply too large to gather: what was gathered goes first.
        self.flush_group(sink).await;
        write_out(sink, reply, &tag, &Chunking::Whole, None).await;
        self.release_swapped(sink).await;
    }

    fn gather(&mut self, reply: Out, tag: &Arc<Tag>) {
        if let Some(group) = &mut self.group {
            let bytes = reply.into_vec();
            group
                .parts
                .append(group.bytes.len(), Parts::whole(bytes.len(), tag));
            group.bytes.extend(bytes);
            group.replies += 1;
        }
    }

    async fn release_swapped(&mut self, sink: &mut impl Sink) {
        while let Some((held, tag)) = self.swapped.pop_front() {
            write_out(sink, held, &tag, &Chunking::Whole, None).await;
        }
    }
}

/// An endless output goes on only while the connection it was written for is connected;
/// any other output is written whole, to whoever is connected when it gets there.
fn still_wanted(sink: &impl Sink, out: &Out, tag: &Tag) -> bool {
    !out.is_endless() || tag.for_conn.is_some_and(|conn| sink.serves(conn))
}

/// One write of a piece of the output `tag` names.
async fn write_piece(sink: &mut impl Sink, piece: Vec<u8>, tag: &Arc<Tag>) {
    let parts = Parts::whole(piece.len(), tag);
    sink.write(piece, parts).await;
}

/// Writes `out` in the requested chunks; a large whole reply goes in channel-sized pieces
/// produced as they are written.
async fn write_out(
    sink: &mut impl Sink,
    mut out: Out,
    tag: &Arc<Tag>,
    chunking: &Chunking,
    cut: Option<usize>,
) {
    if let Some(n) = cut {
        // A reply cut short never ends: at most all but its last byte.
        out.truncate(n.min(out.len().saturating_sub(1)));
    }
    match chunking {
        Chunking::Whole => {
            if out.as_single_buffer().is_some() {
                let bytes = out.into_vec();
                if !bytes.is_empty() {
                    write_piece(sink, bytes, tag).await;
                }
            } else {
                while !out.is_empty() && still_wanted(sink, &out, tag) {
                    write_piece(sink, out.take(PIECE), tag).await;
                }
            }
        }
        Chunking::Sizes(sizes) => {
            let mut next = 0;
            while !out.is_empty() && still_wanted(sink, &out, tag) {
                let size = sizes
                    .get(next)
                    .or(sizes.last())
                    .copied()
                    .unwrap_or(PIECE)
                    .max(1);
                next += 1;
                write_piece(sink, out.take(size), tag).await;
            }
        }
        Chunking::Drip { bytes, interval } => {
            let mut first = true;
            while !out.is_empty() && still_wanted(sink, &out, tag) {
                if !first {
                    tokio::time::sleep(*interval).await;
                }
                first = false;
                write_piece(sink, out.take((*bytes).max(1)), tag).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Sink for Writes {
        async fn write(&mut self, bytes: Vec<u8>, _: Parts) {
            self.0.push(bytes);
        }

        /// The client of an endless output leaves after its fourth write.
        fn serves(&self, _: u64) -> bool {
            self.0.len() < 4
        }
    }

    fn tag() -> Arc<Tag> {
        Arc::new(Tag {
            output: 1,
            origin: crate::transcript::Origin::Preloaded,
            for_conn: None,
        })
    }

    fn out(text: &str) -> Out {
        Out::bytes(text.as_bytes().to_vec())
    }

    fn strings(writes: &Writes) -> Vec<String> {
        writes
            .0
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn an_endless_output_stops_when_its_client_leaves_and_a_finite_one_does_not() {
        let for_conn = |conn| {
            Arc::new(Tag {
                output: 1,
                origin: crate::transcript::Origin::Preloaded,
                for_conn: conn,
            })
        };
        let mut writer = ReplyWriter::default();
        let mut sink = Writes::default();
        let endless = Out::endless(b"{\"return\": \"".to_vec(), b'A');
        writer
            .write(
                &mut sink,
                endless,
                for_conn(Some(1)),
                &Chunking::Whole,
                None,
            )
            .await;
        // The sink's client leaves after its fourth write.
        assert_eq!(sink.0.len(), 4);
        assert!(sink.0[0].starts_with(b"{\"return\": \"AAA"));
        // Written for no connection, an endless output is not written at all.
        let mut sink = Writes::default();
        let endless = Out::endless(Vec::new(), b'A');
        writer
            .write(&mut sink, endless, for_conn(None), &Chunking::Whole, None)
            .await;
        assert!(sink.0.is_empty());
        // A large finite output is written whole, whoever is connected.
        let mut sink = Writes::default();
        let mut big = Out::default();
        big.push_repeat(b'A', 10 * PIECE);
        writer
            .write(&mut sink, big, for_conn(Some(1)), &Chunking::Whole, None)
            .await;
        assert_eq!(sink.0.len(), 10);
    }

    #[tokio::test]
    async fn whole_sliced_and_cut_writes() {
        let mut writer = ReplyWriter::default();
        let mut sink = Writes::default();
        writer
            .write(&mut sink, out("abcdef\n"), tag(), &Chunking::Whole, None)
            .await;
        writer
            .write(
                &mut sink,
                out("abcdef\n"),
                tag(),
                &Chunking::Sizes(vec![1, 2]),
                None,
            )
            .await;
        writer
            .write(&mut sink, out("abcdef\n"), tag(), &Chunking::Whole, Some(4))
            .await;
        writer
            .write(&mut sink, out("ab\n"), tag(), &Chunking::Whole, Some(100))
            .await;
        assert_eq!(
            strings(&sink),
            ["abcdef\n", "a", "bc", "de", "f\n", "abcd", "ab"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drips_wait_between_writes() {
        let mut writer = ReplyWriter::default();
        let mut sink = Writes::default();
        let started = tokio::time::Instant::now();
        let drip = Chunking::Drip {
            bytes: 2,
            interval: Duration::from_millis(10),
        };
        writer
            .write(&mut sink, out("abcde"), tag(), &drip, None)
            .await;
        assert_eq!(strings(&sink), ["ab", "cd", "e"]);
        assert_eq!(started.elapsed(), Duration::from_millis(20));
    }

    #[tokio::test]
    async fn a_swapped_reply_follows_the_next_one() {
        let mut writer = ReplyWriter::default();
        let mut sink = Writes::default();
        writer.hold(out("first\n"), tag());
        assert!(!writer.is_idle());
        assert!(writer.holds_swapped());
        assert!(sink.0.is_empty());
        writer
            .write(&mut sink, out("second\n"), tag(), &Chunking::Whole, None)
            .await;
        assert_eq!(strings(&sink), ["second\n", "first\n"]);
        assert!(writer.is_idle());
    }

    #[tokio::test]
    async fn coalesced_replies_go_in_one_write() {
        let mut writer = ReplyWriter::default();
        let mut sink = Writes::default();
        writer.open_group(3);
        for reply in ["a\n", "b\n"] {
            writer
                .write(&mut sink, out(reply), tag(), &Chunking::Whole, None)
                .await;
        }
        assert!(sink.0.is_empty());
        writer
            .write(&mut sink, out("c\n"), tag(), &Chunking::Whole, None)
            .await;
        assert_eq!(strings(&sink), ["a\nb\nc\n"]);
        // An idle agent flushes a group that is not full.
        writer.open_group(2);
        writer
            .write(&mut sink, out("d\n"), tag(), &Chunking::Whole, None)
            .await;
        writer.flush_group(&mut sink).await;
        assert_eq!(strings(&sink), ["a\nb\nc\n", "d\n"]);
    }

    #[tokio::test]
    async fn a_large_reply_is_streamed_in_pieces() {
        let mut big = Out::bytes(b"{".to_vec());
        big.push_repeat(b'x', PIECE * 2);
        big.push_slice(b"}\n");
        let mut writer = ReplyWriter::default();
        let mut sink = Writes::default();
        writer
            .write(&mut sink, big, tag(), &Chunking::Whole, None)
            .await;
        assert_eq!(sink.0.len(), 3);
        assert!(sink.0.iter().all(|w| w.len() <= PIECE));
        assert_eq!(sink.0.iter().map(Vec::len).sum::<usize>(), PIECE * 2 + 3);
    }
}
