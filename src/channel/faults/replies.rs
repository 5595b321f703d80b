//! The bytes of reply-shaped faults, in qemu-ga's exact format.
//!
//! Every reply a fault makes up is written by the wire writer, so it has qemu-ga's
//! separators, escapes and key order, and carries the request's `id` where qemu-ga (from
//! 4.0) would echo it. Only what the fault is about differs from a real reply: a float
//! where qemu-ga writes an integer, raw invalid UTF-8, an endless string.

use crate::fault::{Garbage, SpuriousKind, WrongId};
use crate::wire::{write_json, Object, Parsed, Streamer, Value};

use super::out::Out;

/// What a fault needs to know about the request it answers.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RequestInfo {
    /// The `id` qemu-ga would echo (none before 4.0, or when the request had none).
    pub(crate) id: Option<Value>,
    /// The request was a guest-sync or guest-sync-delimited with an integer id.
    pub(crate) sync: Option<SyncRequest>,
    /// The request named guest-sync-delimited: a success reply starts with 0xFF.
    pub(crate) delimited: bool,
}

/// A sync request's id and form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SyncRequest {
    pub(crate) id: i64,
    pub(crate) delimited: bool,
}

/// What a spurious reply is made of, resolved when its rule fired.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SpuriousSource<'a> {
    /// The latest sync request before this one, if any.
    pub(crate) earlier_sync: Option<SyncRequest>,
    /// The latest reply written before this one, if it was kept.
    pub(crate) previous_reply: Option<&'a [u8]>,
    /// A number from the mock's seeded source, for made-up ids.
    pub(crate) draw: u64,
}

/// The 0xFF that starts a guest-sync-delimited reply.
const DELIMITER: u8 = 0xFF;

/// A line of text that is not JSON, as a log message leaking into the port would be.
const TEXT_LINE: &[u8] = b"qemu-ga: garbage on the channel, not JSON\n";

/// A Latin-1 'é', an invalid continuation byte and an encoded surrogate: three ways a
/// guest string can be invalid UTF-8 (qemu-ga itself would write `\uFFFD`).
const INVALID_UTF8: &[u8] = b"caf\xe9 \xc3( \xed\xa0\x80";

/// A line of NUL bytes.
const NULS: &[u8] = b"\0\0\0\0\0\0\0\0\n";

/// Encodes `object` as qemu-ga writes a reply line.
fn line(object: Object) -> Vec<u8> {
    let mut out = Vec::new();
    write_json(&Value::Object(object), &mut out);
    out.push(b'\n');
    out
}

fn with_id(object: Object, info: &RequestInfo) -> Object {
    match &info.id {
        Some(id) => object.with("id", id.clone()),
        None => object,
    }
}

/// `{"<member>": <raw>, "id": ...}\n` where `raw` is written as given: the writer places
/// the members in qemu-ga's order (`return` before `id`, `id` before `error`), and a
/// marker value is swapped for the raw bytes.
fn with_raw_member(member: &str, info: &RequestInfo) -> (Vec<u8>, Vec<u8>) {
    const MARKER: &str = "qga-harness-raw-member";
    let bytes = line(with_id(
        Object::new().with(member, Value::from(MARKER)),
        info,
    ));
    let quoted = format!("\"{MARKER}\"");
    match bytes
        .windows(quoted.len())
        .position(|w| w == quoted.as_bytes())
    {
        Some(at) => (bytes[..at].to_vec(), bytes[at + quoted.len()..].to_vec()),
        // The marker is plain ASCII, so the writer leaves it as it is.
        None => (format!("{{\"{member}\": ").into_bytes(), b"}\n".to_vec()),
    }
}

/// `{"return": VALUE}` with the request's id; 0xFF first for guest-sync-delimited, as
/// every success reply to it has.
pub(crate) fn return_value(value: Value, info: &RequestInfo) -> Out {
    let mut bytes = Vec::new();
    if info.delimited {
        bytes.push(DELIMITER);
    }
    bytes.extend(line(with_id(Object::new().with("return", value), info)));
    Out::bytes(bytes)
}

/// `{"error": {"class": C, "desc": D}}` with the request's id.
pub(crate) fn error(class: &str, desc: &str, info: &RequestInfo) -> Out {
    let error = Object::new()
        .with("class", Value::from(class))
        .with("desc", Value::from(desc));
    Out::bytes(line(with_id(
        Object::new().with("error", Value::Object(error)),
        info,
    )))
}

/// `{"error": VALUE}` where the value is not an object.
pub(crate) fn error_not_object(value: Value, info: &RequestInfo) -> Out {
    Out::bytes(line(with_id(Object::new().with("error", value), info)))
}

/// A reply with neither `return` nor `error`: only the id, or `{}`.
pub(crate) fn neither(info: &RequestInfo) -> Out {
    Out::bytes(line(with_id(Object::new(), info)))
}

/// `{"return": {}}` with the id: what a no-reply command's success would look like if
/// the agent answered it.
pub(crate) fn empty_return(info: &RequestInfo) -> Out {
    Out::bytes(line(with_id(
        Object::new().with("return", Value::Object(Object::new())),
        info,
    )))
}

/// Both `return` and `error`: the reply's own member and a made-up other one.
pub(crate) fn return_and_error(current: Option<&Out>, info: &RequestInfo) -> Out {
    let parsed = current.and_then(parse_reply);
    let member = |name: &str| parsed.as_ref().and_then(|o| o.get(name).cloned());
    let returned = member("return").unwrap_or_else(|| Value::Object(Object::new()));
    let error = member("error").unwrap_or_else(|| {
        Value::Object(
            Object::new()
                .with("class", Value::from("GenericError"))
                .with("desc", Value::from("An unexpected error occurred")),
        )
    });
    Out::bytes(line(with_id(
        Object::new().with("return", returned).with("error", error),
        info,
    )))
}

/// The largest reply parsed back to rebuild it (a reply of a fault that needs its
/// members); larger ones are rebuilt from scratch.
const PARSE_LIMIT: usize = 4 << 20;

/// The object of a reply line (after an optional 0xFF), if it is one.
fn parse_reply(reply: &Out) -> Option<Object> {
    if reply.len() > PARSE_LIMIT {
        return None;
    }
    let mut bytes = reply.head(reply.len());
    if bytes.first() == Some(&DELIMITER) {
        bytes.remove(0);
    }
    let mut streamer = Streamer::new();
    let mut first = None;
    streamer.feed(&bytes, &mut |item| {
        if first.is_none() {
            first = Some(item);
        }
    });
    match first {
        Some(Parsed::Value(Value::Object(object))) => Some(object),
        _ => None,
    }
}

/// A reply of `mib` MiB: one string return of that many bytes, with the request's id,
/// produced as it is written.
pub(crate) fn oversize(mib: usize, newline: bool, info: &RequestInfo) -> Out {
    let (head, mut tail) = with_raw_member("return", info);
    let mut out = Out::bytes(head);
    out.push_slice(b"\"");
    out.push_repeat(b'A', mib.saturating_mul(1 << 20));
    out.push_slice(b"\"");
    if !newline && tail.last() == Some(&b'\n') {
        tail.pop();
    }
    out.push(tail);
    out
}

/// A reply that never ends: `{"return": "AAAA…` and no end, no newline.
pub(crate) fn flood(info: &RequestInfo) -> Out {
    let (mut head, _) = with_raw_member("return", info);
    head.push(b'"');
    Out::endless(head, b'A')
}

/// A return value nested `depth` arrays deep, with the request's id.
pub(crate) fn nesting_bomb(depth: usize, info: &RequestInfo) -> Out {
    let (head, tail) = with_raw_member("return", info);
    let mut out = Out::bytes(head);
    out.push_repeat(b'[', depth);
    out.push_repeat(b']', depth);
    out.push(tail);
    out
}

/// Garbage that replaces the reply (the kinds that do not deform it).
pub(crate) fn garbage_line(kind: Garbage, info: &RequestInfo) -> Option<Out> {
    match kind {
        Garbage::Text => Some(Out::bytes(TEXT_LINE.to_vec())),
        Garbage::Nul => Some(Out::bytes(NULS.to_vec())),
        Garbage::InvalidUtf8 => {
            let (head, tail) = with_raw_member("return", info);
            let mut out = Out::bytes(head);
            out.push_slice(b"\"");
            out.push_slice(INVALID_UTF8);
            out.push_slice(b"\"");
            out.push(tail);
            Some(out)
        }
        Garbage::Ff | Garbage::HalfObject | Garbage::Crlf | Garbage::FfPrefix => None,
    }
}

/// The stray byte `garbage=ff` writes on its own before the reply.
pub(crate) fn stray_ff() -> Out {
    Out::bytes(vec![DELIMITER])
}

/// The first half of the reply (or of an empty return), then a newline.
pub(crate) fn half_object(current: Option<Out>, info: &RequestInfo) -> Out {
    let mut reply = current.unwrap_or_else(|| empty_return(info));
    if reply.last_byte() == Some(b'\n') {
        reply.pop_last();
    }
    let half = (reply.len() / 2).max(1);
    reply.truncate(half);
    reply.push_slice(b"\n");
    reply
}

/// The reply with `\r\n` line ending.
pub(crate) fn crlf(mut reply: Out) -> Out {
    if reply.last_byte() == Some(b'\n') {
        reply.pop_last();
    }
    reply.push_slice(b"\r\n");
    reply
}

/// The reply with a 0xFF before it, as if it answered guest-sync-delimited.
pub(crate) fn ff_prefix(mut reply: Out) -> Out {
    if reply.head(1) != [DELIMITER] {
        reply.prepend(&[DELIMITER]);
    }
    reply
}

/// True when `reply` is a success reply (`{"return": ...`, after an optional 0xFF).
fn is_success(reply: &Out) -> bool {
    let head = reply.head(12);
    let head = head.strip_prefix(&[DELIMITER]).unwrap_or(&head);
    head.starts_with(b"{\"return\": ")
}

/// A sync reply whose id is wrong in the way asked; other replies stay as they are.
/// `other` is a number from the seeded source for [`WrongId::Other`].
pub(crate) fn wrong_sync_id(kind: WrongId, reply: Out, info: &RequestInfo, other: u64) -> Out {
    let Some(sync) = info.sync else {
        return reply;
    };
    if !is_success(&reply) {
        return reply;
    }
    let id = sync.id;
    let text = match kind {
        WrongId::Other => {
            // A plausible id (below 2^31) that is not the one asked.
            let mut n = (other % (1 << 31)) as i64;
            if n == id {
                n += 1;
            }
            n.to_string()
        }
        WrongId::String => {
            let mut quoted = Vec::new();
            write_json(&Value::from(id.to_string()), &mut quoted);
            String::from_utf8_lossy(&quoted).into_owned()
        }
        // qemu-ga would print an integral double without a fraction; a hostile agent
        // makes the type visible.
        WrongId::Float => format!("{id}.0"),
        WrongId::OffByOne => (i128::from(id) + 1).to_string(),
        WrongId::Truncate32 => (id as u64 & 0xFFFF_FFFF).to_string(),
    };
    let (head, tail) = with_raw_member("return", info);
    let mut bytes = Vec::with_capacity(head.len() + text.len() + tail.len() + 1);
    if sync.delimited {
        bytes.push(DELIMITER);
    }
    bytes.extend(head);
    bytes.extend(text.into_bytes());
    bytes.extend(tail);
    Out::bytes(bytes)
}

/// An unsolicited reply of the given kind.
pub(crate) fn spurious(kind: SpuriousKind, info: &RequestInfo, source: &SpuriousSource) -> Out {
    let ping = || Out::bytes(b"{\"return\": {}}\n".to_vec());
    match kind {
        SpuriousKind::StaleSync => {
            let (id, delimited) = match source.earlier_sync {
                Some(sync) => (sync.id, sync.delimited),
                // A made-up old id: small and positive, as clients' counters are.
                None => ((source.draw % 100_000) as i64 + 1, false),
            };
            let mut bytes = Vec::new();
            if delimited {
                bytes.push(DELIMITER);
            }
            bytes.extend(line(Object::new().with("return", Value::Int(id))));
            Out::bytes(bytes)
        }
        SpuriousKind::Duplicate => match source.previous_reply {
            Some(previous) => Out::bytes(previous.to_vec()),
            None => ping(),
        },
        SpuriousKind::OtherCommand => ping(),
        SpuriousKind::UnknownId => {
            // An id of another type than the request's, never one the client sent.
            let id = match &info.id {
                Some(Value::String(_)) => Value::Int((source.draw % 1_000_000) as i64 + 1_000_000),
                _ => Value::from(format!("spurious-{:08x}", source.draw as u32)),
            };
            Out::bytes(line(
                Object::new()
                    .with("return", Value::Object(Object::new()))
                    .with("id", id),
            ))
        }
        SpuriousKind::Event => {
            // The shape of a QMP event; qemu-ga never sends one. The time is drawn from
            // the seeded source so a run repeats byte for byte.
            let seconds = 1_700_000_000 + (source.draw % 100_000_000) as i64;
            let micros = ((source.draw >> 32) % 1_000_000) as i64;
            let event = Object::new()
                .with("event", Value::from("SHUTDOWN"))
                .with(
                    "data",
                    Value::Object(
                        Object::new()
                            .with("guest", Value::Bool(true))
                            .with("reason", Value::from("guest-shutdown")),
                    ),
                )
                .with(
                    "timestamp",
                    Value::Object(
                        Object::new()
                            .with("seconds", Value::Int(seconds))
                            .with("microseconds", Value::Int(micros)),
                    ),
                );
            Out::bytes(line(event))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: Option<Value>) -> RequestInfo {
        RequestInfo {
            id,
            sync: None,
            delimited: false,
        }
    }

    fn sync_info(id: i64, delimited: bool, request_id: Option<Value>) -> RequestInfo {
        RequestInfo {
            id: request_id,
            sync: Some(SyncRequest { id, delimited }),
            delimited,
        }
    }

    fn text(out: Out) -> Vec<u8> {
        out.into_vec()
    }

    #[test]
    fn made_up_replies_carry_the_id_last_as_qemu_ga_does() {
        let with = info(Some(Value::from("req-1")));
        assert_eq!(
            text(return_value(Value::Int(5), &with)),
            b"{\"return\": 5, \"id\": \"req-1\"}\n"
        );
        assert_eq!(
            text(error("CommandDisabled", "it's off", &with)),
            b"{\"id\": \"req-1\", \"error\": {\"class\": \"CommandDisabled\", \"desc\": \"it's off\"}}\n"
                .as_slice()
        );
        assert_eq!(
            text(error_not_object(Value::from("random error"), &info(None))),
            b"{\"error\": \"random error\"}\n"
        );
        assert_eq!(text(neither(&info(None))), b"{}\n");
        assert_eq!(text(neither(&with)), b"{\"id\": \"req-1\"}\n");
        assert_eq!(
            text(empty_return(&with)),
            b"{\"return\": {}, \"id\": \"req-1\"}\n"
        );
    }

    #[test]
    fn a_return_to_guest_sync_delimited_keeps_its_delimiter() {
        let delimited = sync_info(7, true, None);
        assert_eq!(
            text(return_value(Value::from("x"), &delimited)),
            b"\xff{\"return\": \"x\"}\n"
        );
    }

    #[test]
    fn return_and_error_keeps_the_real_member() {
        let real = Out::bytes(b"{\"return\": {\"host-name\": \"vm\"}}\n".to_vec());
        assert_eq!(
            text(return_and_error(Some(&real), &info(None))),
            b"{\"return\": {\"host-name\": \"vm\"}, \"error\": {\"class\": \"GenericError\", \"desc\": \"An unexpected error occurred\"}}\n"
                .as_slice()
        );
    }

    #[test]
    fn oversize_is_a_string_return_of_n_mib() {
        let out = oversize(2, true, &info(Some(Value::Int(3))));
        assert_eq!(
            out.len(),
            2 * 1024 * 1024 + b"{\"return\": \"\", \"id\": 3}\n".len()
        );
        let head = out.head(14);
        assert_eq!(head, b"{\"return\": \"AA");
        let bytes = text(out);
        assert!(bytes.ends_with(b"AA\", \"id\": 3}\n"));
        let no_newline = oversize(1, false, &info(None));
        assert_eq!(no_newline.last_byte(), Some(b'}'));
    }

    #[test]
    fn a_nesting_bomb_nests_arrays() {
        assert_eq!(
            text(nesting_bomb(3, &info(Some(Value::Int(1))))),
            b"{\"return\": [[[]]], \"id\": 1}\n"
        );
    }

    #[test]
    fn garbage_lines_and_deformations() {
        let i = info(None);
        assert_eq!(
            text(garbage_line(Garbage::Text, &i).expect("text")),
            TEXT_LINE
        );
        assert_eq!(text(garbage_line(Garbage::Nul, &i).expect("nul")), NULS);
        assert_eq!(
            text(garbage_line(Garbage::InvalidUtf8, &i).expect("utf8")),
            b"{\"return\": \"caf\xe9 \xc3( \xed\xa0\x80\"}\n"
        );
        let reply = || Out::bytes(b"{\"return\": {}}\n".to_vec());
        assert_eq!(text(half_object(Some(reply()), &i)), b"{\"retur\n");
        assert_eq!(text(crlf(reply())), b"{\"return\": {}}\r\n");
        assert_eq!(text(ff_prefix(reply())), b"\xff{\"return\": {}}\n");
        assert_eq!(
            text(ff_prefix(Out::bytes(b"\xff{}\n".to_vec()))),
            b"\xff{}\n"
        );
    }

    #[test]
    fn wrong_sync_ids() {
        let plain = || Out::bytes(b"{\"return\": 4294967301}\n".to_vec());
        let i = sync_info(4_294_967_301, false, None);
        let wrong = |kind| text(wrong_sync_id(kind, plain(), &i, 42));
        assert_eq!(wrong(WrongId::Other), b"{\"return\": 42}\n");
        assert_eq!(wrong(WrongId::String), b"{\"return\": \"4294967301\"}\n");
        assert_eq!(wrong(WrongId::Float), b"{\"return\": 4294967301.0}\n");
        assert_eq!(wrong(WrongId::OffByOne), b"{\"return\": 4294967302}\n");
        assert_eq!(wrong(WrongId::Truncate32), b"{\"return\": 5}\n");

        let delimited = sync_info(9, true, Some(Value::from("s")));
        let reply = Out::bytes(b"\xff{\"return\": 9, \"id\": \"s\"}\n".to_vec());
        assert_eq!(
            text(wrong_sync_id(WrongId::OffByOne, reply, &delimited, 0)),
            b"\xff{\"return\": 10, \"id\": \"s\"}\n"
        );
        // Not a sync, or not a success: unchanged.
        let error = Out::bytes(b"{\"error\": {}}\n".to_vec());
        assert_eq!(
            text(wrong_sync_id(WrongId::Other, error, &i, 1)),
            b"{\"error\": {}}\n"
        );
        assert_eq!(
            text(wrong_sync_id(WrongId::Other, plain(), &info(None), 1)),
            b"{\"return\": 4294967301}\n"
        );
    }

    #[test]
    fn spurious_replies() {
        let i = info(Some(Value::from("req")));
        let source = SpuriousSource {
            earlier_sync: Some(SyncRequest {
                id: 77,
                delimited: true,
            }),
            previous_reply: Some(b"{\"return\": 1000}\n"),
            draw: 0x1234_5678_9abc,
        };
        let s = |kind| text(spurious(kind, &i, &source));
        assert_eq!(s(SpuriousKind::StaleSync), b"\xff{\"return\": 77}\n");
        assert_eq!(s(SpuriousKind::Duplicate), b"{\"return\": 1000}\n");
        assert_eq!(s(SpuriousKind::OtherCommand), b"{\"return\": {}}\n");
        let unknown = s(SpuriousKind::UnknownId);
        assert!(
            unknown.starts_with(b"{\"return\": {}, \"id\": "),
            "{unknown:?}"
        );
        assert!(!unknown.windows(5).any(|w| w == b"\"req\""));
        let event = String::from_utf8(s(SpuriousKind::Event)).expect("ascii");
        assert!(event.contains("\"event\": \"SHUTDOWN\""), "{event}");
        let none = SpuriousSource {
            earlier_sync: None,
            previous_reply: None,
            draw: 41,
        };
        assert_eq!(
            text(spurious(SpuriousKind::StaleSync, &i, &none)),
            b"{\"return\": 42}\n"
        );
        assert_eq!(
            text(spurious(SpuriousKind::Duplicate, &i, &none)),
            b"{\"return\": {}}\n"
        );
    }
}
