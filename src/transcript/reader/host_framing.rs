//! Requests and replies read from the bytes alone, for a transcript with no agent records
//! (the host side of a real agent: the front of a real QEMU guest, a proxy).
//!
//! What the bytes show for certain is kept; nothing is paired by order or timing:
//! - the client's requests: each connection's input framed by qemu-ga's own parser
//!   ([`crate::wire::Streamer`], one per connection, as a freshly reset agent would read
//!   it);
//! - the agent's replies: each complete line of a connection's output (qemu-ga ends every
//!   reply with a newline);
//! - which request a reply answers, only where the reply carries that request's id: a
//!   top-level `id` that exactly one request carried (qemu-ga echoes it), or the return of
//!   a sync equal to the `arguments.id` that exactly one sync sent. A sync return written
//!   as a float (`850201.0`) is the same number as an integer id, and pairs with the one
//!   sync whose id it equals (the judge then decides what taking it means); a float that
//!   several sent ids round to pairs with none. Every other line
//!   answers no known request and is left out of the replies (it stays among the
//!   unrecorded bytes), so no judgement can take it for an answer it is not known to be.

use std::collections::HashMap;

use serde_json::Value;

use super::{excerpt, show_bytes, Direction, Item, ItemKind, Reply, Wire, WriteRecord};
use crate::transcript::{ConnSpan, Origin};

/// Frames `kept` (each stream's first bytes, from offset 0) into `wire.items` and the
/// replies known by id into `wire.replies`.
pub(super) fn frame(wire: &mut Wire, kept: &HashMap<(u64, Direction), Vec<u8>>) {
    let mut writes: HashMap<(u64, Direction), Vec<WriteRecord>> = HashMap::new();
    for write in &wire.writes {
        writes
            .entry((write.conn, write.dir))
            .or_default()
            .push(*write);
    }
    let write_of = |conn: u64, dir: Direction, offset: u64| -> Option<WriteRecord> {
        let list = writes.get(&(conn, dir))?;
        let after = list.partition_point(|w| w.offset <= offset);
        list.get(after.checked_sub(1)?).copied()
    };

    let mut items = Vec::new();
    for &conn in &wire.connections {
        let Some(bytes) = kept.get(&(conn, Direction::In)) else {
            continue;
        };
        let mut streamer = crate::wire::Streamer::new();
        let mut parsed = Vec::new();
        streamer.feed_spans(bytes, &mut |item, span| parsed.push((item, span)));
        for (item, span) in parsed {
            let (Some(first), Some(last)) = (
                write_of(conn, Direction::In, span.start),
                write_of(conn, Direction::In, span.end.saturating_sub(1)),
            ) else {
                continue;
            };
            let kind = match item {
                crate::wire::Parsed::Value(value) => match value.to_serde() {
                    Value::Object(map) => ItemKind::Object(map),
                    other => ItemKind::NotObject(excerpt(&other.to_string())),
                },
                crate::wire::Parsed::Error(desc) => match span.stray {
                    Some(b)
                        if super::is_flush_byte(b) && (span.end - span.start == 1 || b >= 0xFE) =>
                    {
                        ItemKind::Flush(b)
                    }
                    _ => ItemKind::Garbage(excerpt(&desc)),
                },
            };
            items.push(Item {
                request: 0,
                conn,
                input: vec![ConnSpan {
                    conn,
                    from: span.start,
                    to: span.end,
                }],
                lines: (first.line, last.line),
                t_us: last.t_us,
                arrived_us: last.t_us,
                kind,
                preview: Vec::new(),
            });
        }
    }
    // Numbered in the order their last bytes crossed, across connections.
    items.sort_by_key(|i| (i.lines.1, i.input[0].from));
    for (n, item) in items.iter_mut().enumerate() {
        item.request = n as u64 + 1;
    }

    let unique = |key: &dyn Fn(&Item) -> Option<Value>| -> HashMap<String, u64> {
        let mut seen: HashMap<String, (u64, usize)> = HashMap::new();
        for item in &items {
            if let Some(id) = key(item) {
                let entry = seen.entry(id.to_string()).or_insert((item.request, 0));
                entry.1 += 1;
            }
        }
        seen.into_iter()
            .filter(|(_, (_, count))| *count == 1)
            .map(|(id, (request, _))| (id, request))
            .collect()
    };
    let by_id = unique(&|i: &Item| i.id().cloned());
    let by_sync_id = unique(&|i: &Item| i.sync_id().cloned());

    let mut replies = Vec::new();
    let mut answered: HashMap<u64, ()> = HashMap::new();
    for &conn in &wire.connections {
        let Some(bytes) = kept.get(&(conn, Direction::Out)) else {
            continue;
        };
        let mut start = 0usize;
        while let Some(newline) = bytes[start..].iter().position(|&b| b == b'\n') {
            let end = start + newline + 1;
            let line = &bytes[start..end];
            let from = start as u64;
            start = end;
            let body = super::reply_body(line);
            let Ok(value) = serde_json::from_slice::<Value>(body) else {
                continue;
            };
            let request = value
                .get("id")
                .and_then(|id| by_id.get(&id.to_string()).copied())
                .or_else(|| {
                    let returned = value.get("return")?;
                    if value.get("id").is_some() {
                        return None;
                    }
                    by_sync_id
                        .get(&returned.to_string())
                        .copied()
                        .or_else(|| sync_of_float(&items, returned))
                });
            let Some(request) = request else {
                continue;
            };
            if answered.insert(request, ()).is_some() {
                continue;
            }
            let (Some(first), Some(last)) = (
                write_of(conn, Direction::Out, from),
                write_of(conn, Direction::Out, end as u64 - 1),
            ) else {
                continue;
            };
            let for_conn = items.iter().find(|i| i.request == request).map(|i| i.conn);
            replies.push(Reply {
                conn,
                output: 0,
                origin: Origin::Reply { request },
                for_conn,
                stale: for_conn.is_some_and(|c| c != conn),
                at: from,
                lines: (first.line, last.line),
                t_us: last.t_us,
                ff_prefix: line.first() == Some(&0xFF),
                len: line.len(),
                ambiguous: super::is_ambiguous(body),
                value: Some(value),
                text: show_bytes(line),
                complete: true,
                preview: line[..line.len().min(super::PREVIEW_BYTES)].to_vec(),
            });
        }
    }
    replies.sort_by_key(|r| (r.lines.0, r.at));
    for (n, reply) in replies.iter_mut().enumerate() {
        reply.output = n as u64 + 1;
    }
    wire.items = items;
    wire.replies = replies;
    wire.framed_from_bytes = true;
}

/// The one sync whose integer id equals `returned`, a float with no fraction (`850201.0`):
/// qemu-ga's own writer never turns an integer id into a float, but a deformed reply can.
/// `None` when `returned` is not such a float, or when more than one id sent rounds to it.
fn sync_of_float(items: &[Item], returned: &Value) -> Option<u64> {
    let float = returned
        .as_f64()
        .filter(|f| returned.is_f64() && f.fract() == 0.0)?;
    let mut found = items.iter().filter(|item| {
        item.sync_id().is_some_and(|sent| {
            let as_float = sent
                .as_i64()
                .map(|n| n as f64)
                .or_else(|| sent.as_u64().map(|n| n as f64));
            as_float == Some(float)
        })
    });
    let first = found.next()?;
    found.next().is_none().then_some(first.request)
}
