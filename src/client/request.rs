//! Writing requests: compact JSON with a top-level `id`, into a reused buffer.
//!
//! Requests are written without a trailing newline: qemu-ga frames input by brace
//! balance (QEMU qobject/json-streamer.c), so a newline would only be whitespace.

use serde_json::Value;

/// The byte that resets qemu-ga's JSON lexer (QEMU docs/interop/qmp-spec §2.6).
pub(crate) const PARSER_RESET: u8 = 0xFF;

/// Appends `{"execute":NAME[,"arguments":ARGS],"id":ID}`.
pub(crate) fn push_command(out: &mut Vec<u8>, execute: &str, arguments: Option<&Value>, id: u64) {
    out.extend_from_slice(b"{\"execute\":");
    push_json_string(out, execute);
    if let Some(arguments) = arguments {
        out.extend_from_slice(b",\"arguments\":");
        out.extend_from_slice(arguments.to_string().as_bytes());
    }
    out.extend_from_slice(b",\"id\":");
    push_u64(out, id);
    out.push(b'}');
}

/// Appends a `guest-sync-delimited` request whose argument and top-level id are both
/// `id`: the argument comes back as the `return` value in any agent, the top-level id
/// only from an agent that echoes ids (qemu-ga ≥ 4.0), which is how the client tells.
pub(crate) fn push_sync(out: &mut Vec<u8>, id: u64) {
    out.extend_from_slice(b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":");
    push_u64(out, id);
    out.extend_from_slice(b"},\"id\":");
    push_u64(out, id);
    out.push(b'}');
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x00..=0x1F => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xF)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command(execute: &str, arguments: Option<&Value>, id: u64) -> Value {
        let mut out = Vec::new();
        push_command(&mut out, execute, arguments, id);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn writes_a_command_with_its_id() {
        let mut out = Vec::new();
        push_command(&mut out, "guest-ping", None, 42);
        assert_eq!(out, br#"{"execute":"guest-ping","id":42}"#);
        assert_eq!(
            command(
                "guest-exec",
                Some(&json!({"path": "/bin/echo", "arg": ["a\"b"]})),
                u64::MAX
            ),
            json!({"execute": "guest-exec", "arguments": {"path": "/bin/echo", "arg": ["a\"b"]}, "id": u64::MAX})
        );
    }

    #[test]
    fn escapes_any_command_name() {
        let name = "we\"ird\\na\u{1}me\u{e9}";
        assert_eq!(command(name, None, 0)["execute"], json!(name));
    }

    #[test]
    fn writes_a_sync_with_the_same_id_twice() {
        let mut out = Vec::new();
        push_sync(&mut out, 1234567890123);
        assert_eq!(
            out,
            br#"{"execute":"guest-sync-delimited","arguments":{"id":1234567890123},"id":1234567890123}"#
        );
    }
}
