//! What each output is, carried with its bytes from the agent process to the socket, where
//! the transcript records it beside the bytes of the write that delivered it (format in
//! `crate::transcript`). The agent knows what it writes when it writes it; the socket
//! knows which connection and which offsets it reached. Carrying the tag with the bytes
//! joins the two exactly, whatever buffering, chunking or reconnecting happens between.

use std::ops::Range;
use std::sync::Arc;

use crate::transcript::writer::Transcript;
use crate::transcript::{Origin, OutputRecord};

/// One output: its number, what it is, and the connection it was written for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) output: u64,
    pub(crate) origin: Origin,
    pub(crate) for_conn: Option<u64>,
}

/// The outputs a buffer carries, each with its byte range in the buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Parts(Vec<(Range<usize>, Arc<Tag>)>);

impl Parts {
    /// A buffer of `len` bytes that is all one output.
    pub(crate) fn whole(len: usize, tag: &Arc<Tag>) -> Parts {
        if len == 0 {
            return Parts::default();
        }
        Parts(vec![(0..len, tag.clone())])
    }

    /// Adds the parts of a buffer appended at `offset`.
    pub(crate) fn append(&mut self, offset: usize, other: Parts) {
        self.0.extend(
            other
                .0
                .into_iter()
                .map(|(range, tag)| (range.start + offset..range.end + offset, tag)),
        );
    }

    /// The parts of `range` of the buffer, as a buffer of its own.
    pub(crate) fn slice(&self, range: Range<usize>) -> Parts {
        Parts(
            self.0
                .iter()
                .filter_map(|(r, tag)| {
                    let start = r.start.max(range.start);
                    let end = r.end.min(range.end);
                    (start < end).then(|| (start - range.start..end - range.start, tag.clone()))
                })
                .collect(),
        )
    }

    /// Records the outputs in `written` (a range of the buffer) that just reached `conn`,
    /// the range starting at offset `at` of the connection's output stream.
    pub(crate) fn record(
        &self,
        transcript: Option<&Transcript>,
        conn: u64,
        at: u64,
        written: Range<usize>,
    ) {
        let Some(transcript) = transcript else {
            return;
        };
        for (range, tag) in &self.0 {
            let start = range.start.max(written.start);
            let end = range.end.min(written.end);
            if start >= end {
                continue;
            }
            transcript.output(&OutputRecord {
                conn,
                output: tag.output,
                at: at + (start - written.start) as u64,
                len: (end - start) as u64,
                origin: tag.origin.clone(),
                for_conn: tag.for_conn,
                stale: tag.for_conn.is_some_and(|c| c != conn),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(output: u64) -> Arc<Tag> {
        Arc::new(Tag {
            output,
            origin: Origin::Reply { request: output },
            for_conn: Some(1),
        })
    }

    #[test]
    fn parts_follow_their_bytes_through_appends_and_slices() {
        let mut parts = Parts::whole(10, &tag(1));
        parts.append(10, Parts::whole(5, &tag(2)));
        let middle = parts.slice(8..12);
        assert_eq!(middle, Parts(vec![(0..2, tag(1)), (2..4, tag(2))]));
        assert_eq!(parts.slice(12..15), Parts(vec![(0..3, tag(2))]));
        assert_eq!(Parts::whole(0, &tag(3)), Parts::default());
    }
}
