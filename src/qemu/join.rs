//! Joining the two records of a case run through a real guest with the mock inside.
//!
//! - The host side (the harness in front of QEMU's socket, [`super::FrontRecord`]) knows the
//!   client's connections and the bytes each sent and received, but nothing of what the
//!   agent made of them.
//! - The guest side (the mock on the port device) knows its ground truth: which bytes made
//!   which request, what each output is. It sees one stream each way (connection 1): the
//!   port device cannot see host connections.
//!
//! The port's input stream is the host connections' input, in order, minus what QEMU never
//! delivered (bytes a client sent just before it left); its output stream is what reached
//! the host connections, plus what never reached one. The join aligns the streams by their
//! bytes, connection after connection, and re-expresses every guest offset as (host
//! connection, offset in that connection): the result is a transcript in the mock's format
//! (the `transcript` module docs) with the same ground truth as on the simulated channel.
//! Guest times are moved onto the host's clock by the offset measured when the case was
//! loaded; a request is never placed before the bytes that completed it nor after its reply.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Map, Value};

/// One bytes record's place in a direction's stream.
#[derive(Clone, Debug)]
struct Chunk {
    /// Index of the host record.
    record: usize,
    conn: u64,
    /// Offset in the connection's stream.
    at: u64,
    len: u64,
    t_us: u64,
}

/// A run of the guest's stream that reached one host connection.
#[derive(Clone, Copy, Debug)]
struct Segment {
    guest_from: u64,
    len: u64,
    conn: u64,
    conn_at: u64,
}

fn data_of(record: &Value) -> Option<Vec<u8>> {
    if let Some(text) = record.get("text").and_then(Value::as_str) {
        return Some(text.as_bytes().to_vec());
    }
    record
        .get("b64")
        .and_then(Value::as_str)
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
}

fn u64_of(record: &Value, key: &str) -> Option<u64> {
    record.get(key).and_then(Value::as_u64)
}

fn dir_of(record: &Value) -> Option<&str> {
    record.get("dir").and_then(Value::as_str)
}

/// Host connections' streams in one direction: each connection's bytes, in the order the
/// connections came, and the chunks that carried them.
fn host_streams(host: &[Value], dir: &str) -> (Vec<(u64, Vec<u8>)>, Vec<Chunk>) {
    let mut conns: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut chunks = Vec::new();
    for (index, record) in host.iter().enumerate() {
        if dir_of(record) != Some(dir) {
            continue;
        }
        let (Some(conn), Some(data)) = (u64_of(record, "conn"), data_of(record)) else {
            continue;
        };
        let position = match conns.iter().position(|(c, _)| *c == conn) {
            Some(p) => p,
            None => {
                conns.push((conn, Vec::new()));
                conns.len() - 1
            }
        };
        let stream = &mut conns[position].1;
        chunks.push(Chunk {
            record: index,
            conn,
            at: stream.len() as u64,
            len: data.len() as u64,
            t_us: u64_of(record, "t_us").unwrap_or(0),
        });
        stream.extend_from_slice(&data);
    }
    (conns, chunks)
}

/// The guest's stream in one direction (connection 1, the port device).
fn guest_stream(guest: &[Value], dir: &str) -> Vec<u8> {
    let mut stream = Vec::new();
    for record in guest {
        if dir_of(record) == Some(dir) {
            if let Some(data) = data_of(record) {
                stream.extend_from_slice(&data);
            }
        }
    }
    stream
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Host input reached the guest in connection order; a connection's tail may be missing.
fn align_input(guest: &[u8], conns: &[(u64, Vec<u8>)]) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut g = 0usize;
    for (conn, bytes) in conns {
        let n = common_prefix(&guest[g..], bytes);
        if n > 0 {
            segments.push(Segment {
                guest_from: g as u64,
                len: n as u64,
                conn: *conn,
                conn_at: 0,
            });
        }
        g += n;
    }
    segments
}

/// Each host connection's output is a run of the guest's output; guest bytes between runs
/// reached no connection.
fn align_output(guest: &[u8], conns: &[(u64, Vec<u8>)]) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut g = 0usize;
    for (conn, bytes) in conns {
        if bytes.is_empty() {
            continue;
        }
        let rest = &guest[g.min(guest.len())..];
        let start = if rest.starts_with(bytes) {
            Some(0)
        } else {
            rest.windows(bytes.len())
                .position(|w| w == bytes.as_slice())
        };
        let (start, n) = match start {
            Some(s) => (s, bytes.len()),
            None => (0, common_prefix(rest, bytes)),
        };
        if n > 0 {
            segments.push(Segment {
                guest_from: (g + start) as u64,
                len: n as u64,
                conn: *conn,
                conn_at: 0,
            });
        }
        g += start + n;
    }
    segments
}

/// The pieces of guest range `from..to` as host (conn, from, to), in order.
fn pieces(segments: &[Segment], from: u64, to: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for s in segments {
        let lo = from.max(s.guest_from);
        let hi = to.min(s.guest_from + s.len);
        if lo < hi {
            out.push((
                s.conn,
                s.conn_at + lo - s.guest_from,
                s.conn_at + hi - s.guest_from,
            ));
        }
    }
    out
}

/// The chunk holding byte `at` of `conn`.
fn chunk_at(chunks: &[Chunk], conn: u64, at: u64) -> Option<&Chunk> {
    chunks
        .iter()
        .find(|c| c.conn == conn && at >= c.at && at < c.at + c.len)
}

/// Joins the host's record and the guest mock's transcript of one case into one transcript
/// in the mock's format. `offset_us` moves guest times onto the host's clock
/// (host = guest + offset).
pub fn join_records(host: &[Value], guest: &[Value], offset_us: i64) -> Vec<Value> {
    let (host_in, in_chunks) = host_streams(host, "in");
    let (host_out, out_chunks) = host_streams(host, "out");
    let guest_in = guest_stream(guest, "in");
    let guest_out = guest_stream(guest, "out");
    let in_segments = align_input(&guest_in, &host_in);
    let out_segments = align_output(&guest_out, &host_out);
    let to_host = |t: u64| -> u64 { u64::try_from(t as i64 + offset_us).unwrap_or(0) };

    // Requests: their input re-placed, and the connection that completed each.
    let mut request_conn: HashMap<u64, u64> = HashMap::new();
    let mut request_t: HashMap<u64, u64> = HashMap::new();
    let mut floating: Vec<(u64, Value)> = Vec::new();
    // Output records, attached after the host record of the chunk that carried them.
    let mut children: HashMap<usize, Vec<Value>> = HashMap::new();
    let mut setup = None;
    // Guest output records: (record, guest at, len), handled once requests are placed.
    let mut outputs = Vec::new();
    for record in guest {
        let event = record.get("event").and_then(Value::as_str);
        let t = to_host(u64_of(record, "t_us").unwrap_or(0));
        match event {
            Some("agent-setup") => setup = Some(record.clone()),
            Some("request") => {
                let mut value = record.clone();
                let mut spans = Vec::new();
                let mut last: Option<(u64, u64)> = None;
                for span in record
                    .get("input")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let conn = u64_of(span, "conn").unwrap_or(0);
                    let (from, to) = (
                        u64_of(span, "from").unwrap_or(0),
                        u64_of(span, "to").unwrap_or(0),
                    );
                    if conn == 0 {
                        spans.push(serde_json::json!({"conn": 0, "from": from, "to": to}));
                        continue;
                    }
                    for (c, f, t) in pieces(&in_segments, from, to) {
                        spans.push(serde_json::json!({"conn": c, "from": f, "to": t}));
                        last = Some((c, t));
                    }
                }
                value["input"] = Value::Array(spans);
                let mut placed = t;
                if let Some((conn, end)) = last {
                    value["conn"] = conn.into();
                    if let Some(chunk) = chunk_at(&in_chunks, conn, end.saturating_sub(1)) {
                        placed = placed.max(chunk.t_us);
                    }
                    if let Some(number) = u64_of(record, "request") {
                        request_conn.insert(number, conn);
                    }
                }
                if let Some(number) = u64_of(record, "request") {
                    request_t.insert(number, placed);
                }
                floating.push((placed, value));
            }
            Some("output") => {
                if let (Some(at), Some(len)) = (u64_of(record, "at"), u64_of(record, "len")) {
                    outputs.push((record.clone(), at, len));
                }
            }
            // The guest's own view of the port: replaced by the host's.
            Some("mock-started" | "connected" | "disconnected" | "write-failed") => {}
            Some(_) => floating.push((t, record.clone())),
            None => {} // bytes
        }
    }
    // A request comes before the reply that answers it.
    let mut reply_t: HashMap<u64, u64> = HashMap::new();
    for (record, at, len) in outputs {
        let request = u64_of(&record, "request");
        let origin = record.get("origin").and_then(Value::as_str).unwrap_or("");
        let for_conn = match (request, origin) {
            (_, "preloaded") => None,
            (Some(r), _) => request_conn.get(&r).copied(),
            (None, _) => None,
        };
        for (conn, from, to) in pieces(&out_segments, at, at + len) {
            // Split further by the host chunks that carried the piece.
            for chunk in out_chunks.iter().filter(|c| c.conn == conn) {
                let lo = from.max(chunk.at);
                let hi = to.min(chunk.at + chunk.len);
                if lo >= hi {
                    continue;
                }
                let mut value = record.clone();
                let object = value.as_object_mut().expect("a record is an object");
                object.insert("t_us".into(), chunk.t_us.into());
                object.insert("conn".into(), conn.into());
                object.insert("at".into(), lo.into());
                object.insert("len".into(), (hi - lo).into());
                object.remove("stale");
                object.remove("for_conn");
                let reached_for = for_conn.or(match origin {
                    "preloaded" => None,
                    _ => Some(conn),
                });
                if let Some(f) = reached_for {
                    object.insert("for_conn".into(), f.into());
                    if f != conn {
                        object.insert("stale".into(), true.into());
                    }
                }
                if let (Some(r), "reply" | "parse-error") = (request, origin) {
                    let t = reply_t.entry(r).or_insert(chunk.t_us);
                    *t = (*t).min(chunk.t_us);
                }
                children.entry(chunk.record).or_default().push(value);
            }
        }
    }
    for (t, value) in &mut floating {
        let Some(r) = u64_of(value, "request") else {
            continue;
        };
        match value.get("event").and_then(Value::as_str) {
            Some("request") => {
                if let Some(&reply) = reply_t.get(&r) {
                    *t = (*t).min(reply.saturating_sub(1));
                }
                request_t.insert(r, *t);
            }
            Some("fault") => {
                if let Some(&rt) = request_t.get(&r) {
                    *t = rt;
                }
            }
            // It takes back a request the agent recorded before: it must come after it.
            Some("request-unread") => {
                if let Some(&rt) = request_t.get(&r) {
                    *t = (*t).max(rt);
                }
            }
            _ => {}
        }
        value["t_us"] = (*t).into();
    }
    for (t, value) in &mut floating {
        value["t_us"] = (*t).into();
    }
    floating.sort_by_key(|(t, _)| *t);

    let mut out = Vec::with_capacity(host.len() + floating.len() + 1);
    let mut pending = floating.into_iter().peekable();
    let mut setup_written = false;
    for (index, record) in host.iter().enumerate() {
        let t = u64_of(record, "t_us").unwrap_or(0);
        let is_start = record.get("event").and_then(Value::as_str) == Some("mock-started");
        if !is_start {
            while let Some((ft, _)) = pending.peek() {
                if *ft >= t {
                    break;
                }
                out.push(pending.next().expect("peeked").1);
            }
        }
        out.push(with_at(record, &in_chunks, &out_chunks, index));
        if let Some(list) = children.remove(&index) {
            out.extend(list);
        }
        if is_start && !setup_written {
            if let Some(setup) = setup.take() {
                let mut setup = setup;
                setup["t_us"] = t.into();
                out.push(setup);
            }
            setup_written = true;
        }
    }
    out.extend(pending.map(|(_, v)| v));
    out
}

/// A host bytes record with its offset in its connection's stream.
fn with_at(record: &Value, in_chunks: &[Chunk], out_chunks: &[Chunk], index: usize) -> Value {
    let chunks = match dir_of(record) {
        Some("in") => in_chunks,
        Some("out") => out_chunks,
        _ => return record.clone(),
    };
    let mut value = record.clone();
    if let Some(chunk) = chunks.iter().find(|c| c.record == index) {
        if value.get("at").is_none() {
            value["at"] = chunk.at.into();
        }
    }
    value
}

/// Parses JSON lines, skipping any that are not objects.
pub(crate) fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Value> {
    lines
        .into_iter()
        .filter_map(|line| serde_json::from_str::<Map<String, Value>>(line).ok())
        .map(Value::Object)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two clients; the first leaves half a request behind, the second completes it and
    /// its reply goes to it; a reply written after the first left reaches the second.
    #[test]
    fn guest_offsets_become_host_connections() {
        let host = vec![
            json!({"t_us": 0, "event": "mock-started", "detail": "virtio-serial"}),
            json!({"t_us": 10, "conn": 1, "event": "connected"}),
            json!({"t_us": 20, "conn": 1, "dir": "in", "text": "{\"execute\":\"guest-ping\"}{\"exe"}),
            json!({"t_us": 30, "conn": 1, "event": "disconnected", "detail": "eof"}),
            json!({"t_us": 40, "conn": 2, "event": "connected"}),
            json!({"t_us": 45, "conn": 2, "dir": "out", "text": "{\"return\": {}}\n"}),
            json!({"t_us": 50, "conn": 2, "dir": "in", "text": "cute\":\"guest-ping\"}"}),
            json!({"t_us": 60, "conn": 2, "dir": "out", "text": "{\"return\": {}}\n"}),
        ];
        let guest = vec![
            json!({"t_us": 0, "event": "mock-started", "detail": "virtio-serial"}),
            json!({"t_us": 0, "event": "agent-setup", "seed": 1, "agent": {}}),
            json!({"t_us": 1, "conn": 1, "event": "connected"}),
            json!({"t_us": 5, "conn": 1, "dir": "in", "at": 0, "text": "{\"execute\":\"guest-ping\"}{\"exe"}),
            json!({"t_us": 6, "event": "request", "request": 1, "conn": 1, "input": [{"conn": 1, "from": 0, "to": 24}], "command": "guest-ping", "value": {"execute": "guest-ping"}}),
            json!({"t_us": 30, "conn": 1, "dir": "out", "at": 0, "text": "{\"return\": {}}\n"}),
            json!({"t_us": 30, "conn": 1, "event": "output", "output": 1, "at": 0, "len": 15, "origin": "reply", "request": 1, "for_conn": 1}),
            json!({"t_us": 40, "conn": 1, "dir": "in", "at": 29, "text": "cute\":\"guest-ping\"}"}),
            json!({"t_us": 41, "event": "request", "request": 2, "conn": 1, "input": [{"conn": 1, "from": 24, "to": 48}], "command": "guest-ping", "value": {"execute": "guest-ping"}}),
            json!({"t_us": 42, "conn": 1, "dir": "out", "at": 15, "text": "{\"return\": {}}\n"}),
            json!({"t_us": 42, "conn": 1, "event": "output", "output": 2, "at": 15, "len": 15, "origin": "reply", "request": 2, "for_conn": 1}),
        ];
        let joined = join_records(&host, &guest, 0);
        let find = |event: &str, number: u64, key: &str| {
            joined
                .iter()
                .find(|r| r["event"] == event && r[key] == number)
                .cloned()
                .unwrap_or_else(|| panic!("no {event} {number} in {joined:#?}"))
        };
        assert_eq!(joined[1]["event"], "agent-setup");
        let second = find("request", 2, "request");
        assert_eq!(
            second["input"],
            json!([{"conn": 1, "from": 24, "to": 29}, {"conn": 2, "from": 0, "to": 19}])
        );
        assert_eq!(second["conn"], 2);
        let first_reply = find("output", 1, "output");
        assert_eq!(first_reply["conn"], 2);
        assert_eq!(first_reply["for_conn"], 1);
        assert_eq!(first_reply["stale"], true);
        assert_eq!(first_reply["at"], 0);
        let second_reply = find("output", 2, "output");
        assert_eq!(second_reply["at"], 15);
        assert!(second_reply.get("stale").is_none());
        // Each output record follows the bytes record that carried it, and each request
        // comes before its reply.
        let position = |v: &Value| joined.iter().position(|r| r == v).expect("present");
        assert_eq!(
            joined[position(&second_reply) - 1]["t_us"],
            60,
            "{joined:#?}"
        );
        assert!(position(&second) < position(&second_reply));
        assert!(position(&find("request", 1, "request")) < position(&first_reply));
    }

    /// A request the agent died before reading is taken back after it was recorded, even
    /// when the guest's clock would put the taking-back first.
    #[test]
    fn a_request_taken_back_comes_after_the_request() {
        let host = vec![
            json!({"t_us": 0, "event": "mock-started"}),
            json!({"t_us": 100, "conn": 1, "dir": "in", "text": "{\"execute\":\"guest-ping\"}"}),
        ];
        let guest = vec![
            json!({"t_us": 0, "conn": 1, "dir": "in", "at": 0, "text": "{\"execute\":\"guest-ping\"}"}),
            json!({"t_us": 10, "event": "request", "request": 1, "conn": 1, "input": [{"conn": 1, "from": 0, "to": 24}], "command": "guest-ping"}),
            json!({"t_us": 20, "event": "request-unread", "request": 1}),
        ];
        let joined = join_records(&host, &guest, 0);
        let events: Vec<_> = joined.iter().map(|r| r["event"].clone()).collect();
        assert_eq!(
            events,
            vec![
                json!("mock-started"),
                Value::Null,
                json!("request"),
                json!("request-unread")
            ]
        );
    }

    #[test]
    fn input_a_client_left_in_qemu_is_skipped() {
        let host = vec![
            json!({"t_us": 0, "event": "mock-started"}),
            json!({"t_us": 1, "conn": 1, "dir": "in", "text": "AAAAlost"}),
            json!({"t_us": 2, "conn": 2, "dir": "in", "text": "BBBB"}),
        ];
        let guest = vec![
            json!({"t_us": 0, "conn": 1, "dir": "in", "at": 0, "text": "AAAABBBB"}),
            json!({"t_us": 1, "event": "request", "request": 1, "conn": 1, "input": [{"conn": 1, "from": 4, "to": 8}], "error": "x"}),
        ];
        let joined = join_records(&host, &guest, 0);
        let request = joined
            .iter()
            .find(|r| r["event"] == "request")
            .expect("request");
        assert_eq!(request["input"], json!([{"conn": 2, "from": 0, "to": 4}]));
        assert_eq!(joined[1]["at"], 0);
        assert_eq!(joined[2]["at"], 0);
    }
}
