//! Reading one reply line: its `id`, `return` and `error` members, nothing else.
//!
//! Nesting is bounded by serde_json's recursion limit (128 levels), so a hostile reply of
//! a million `[` is a parse error, not a stack overflow. Real replies nest a few levels.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::error::{AgentError, Error, ProtocolError};

/// How much of an offending line an error message quotes.
const PREVIEW_BYTES: usize = 160;

/// The members of a reply object that matter to a client.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Reply {
    pub(crate) id: Option<Value>,
    pub(crate) ret: Option<Value>,
    pub(crate) error: Option<Value>,
    /// The first of `id`, `return`, `error` that the object has twice (the later value
    /// is the one kept above).
    pub(crate) duplicate: Option<&'static str>,
}

/// A reply line that is JSON but not an object.
#[derive(Debug, PartialEq)]
pub(crate) struct NotAnObject;

impl Reply {
    /// Parses one line. `Ok(Err(NotAnObject))` is valid JSON of another type.
    pub(crate) fn parse(line: &[u8]) -> Result<Result<Reply, NotAnObject>, ProtocolError> {
        let mut de = serde_json::Deserializer::from_slice(line);
        let parsed = de.deserialize_any(ReplyVisitor);
        let parsed = parsed.and_then(|r| de.end().map(|()| r));
        parsed.map_err(|e| ProtocolError::NotJson {
            reason: e.to_string(),
            preview: preview(line),
        })
    }

    /// True when `return` is exactly the integer `id` (the reply to our sync).
    pub(crate) fn returns_sync_id(&self, id: u64) -> bool {
        matches!(&self.ret, Some(Value::Number(n)) if n.as_u64() == Some(id))
    }

    /// True when the reply carries `id` as its top-level id.
    pub(crate) fn has_id(&self, id: &Value) -> bool {
        self.id.as_ref().is_some_and(|mine| same_id(mine, id))
    }

    /// The call's result from a reply known to answer it.
    pub(crate) fn into_result(self, line: &[u8]) -> Result<Value, Error> {
        if let Some(member) = self.duplicate {
            return Err(ProtocolError::DuplicateMember {
                member,
                preview: preview(line),
            }
            .into());
        }
        match (self.ret, self.error) {
            (Some(ret), None) => Ok(ret),
            (None, Some(error)) => Err(agent_error(error, line)?.into_error()),
            (Some(_), Some(_)) => Err(ProtocolError::BothResults {
                preview: preview(line),
            }
            .into()),
            (None, None) => Err(ProtocolError::NoResult {
                preview: preview(line),
            }
            .into()),
        }
    }
}

/// Compares ids as the agent echoes them: QEMU re-prints an integral float as an
/// integer (`1.0` comes back as `1`), so a float compares by value. Integers compare
/// exactly: as floats, 63-bit ids a few apart would look equal.
fn same_id(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

fn agent_error(error: Value, line: &[u8]) -> Result<AgentError, ProtocolError> {
    let malformed = || ProtocolError::MalformedError {
        preview: preview(line),
    };
    let Value::Object(mut members) = error else {
        return Err(malformed());
    };
    let Some(Value::String(class)) = members.remove("class") else {
        return Err(malformed());
    };
    let desc = match members.remove("desc") {
        Some(Value::String(desc)) => desc,
        None => String::new(),
        Some(_) => return Err(malformed()),
    };
    Ok(AgentError { class, desc })
}

/// The first number token in `line` that no QEMU agent writes, outside strings. The
/// agent's JSON writer prints an integer only when it fits int64 or uint64 and any other
/// number as a finite double with `%.17g` (so `99999999999999999999999` goes out as
/// `9.9999999999999992e+22`): an integer token beyond [-2^63, 2^64-1], or a number whose
/// magnitude is beyond the double range (`1e400`), came from something else, and any value
/// a decoder makes of it (rounded, saturated, infinite) is not one the agent meant.
pub fn impossible_number(line: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => i = string_end(line, i + 1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < line.len()
                    && matches!(line[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = String::from_utf8_lossy(&line[start..i]);
                if !number_is_writable(&token) {
                    return Some(token.into_owned());
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether the agent's writer could have printed `token` (see [`impossible_number`]).
/// A token that is not a number at all is left to the JSON parser.
fn number_is_writable(token: &str) -> bool {
    if token.contains(['.', 'e', 'E']) {
        return token.parse::<f64>().map_or(true, f64::is_finite);
    }
    let digits = token.strip_prefix('-').unwrap_or(token);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok()
}

/// The index just past the string whose contents start at `i` (escapes skipped).
fn string_end(line: &[u8], mut i: usize) -> usize {
    while i < line.len() {
        match line[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// `line` as a decoder that saturates out-of-range doubles reads it
/// ([`Mutation::LossyNumbers`](super::mutation::Mutation::LossyNumbers)): a number beyond
/// the double range becomes the largest double (the nearest value JSON can carry; Python
/// and JavaScript make it infinity). Integers beyond 64 bits need no rewrite: the JSON
/// parser already rounds them to the nearest double.
pub(crate) fn saturate_numbers(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => {
                let end = string_end(line, i + 1);
                out.extend_from_slice(&line[i..end]);
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < line.len()
                    && matches!(line[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let token = &line[start..i];
                match std::str::from_utf8(token)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                {
                    Some(x) if x.is_infinite() => {
                        out.extend_from_slice(format!("{:e}", f64::MAX.copysign(x)).as_bytes())
                    }
                    _ => out.extend_from_slice(token),
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The start of a line, for error messages.
pub(crate) fn preview(line: &[u8]) -> String {
    let cut = &line[..line.len().min(PREVIEW_BYTES)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if line.len() > PREVIEW_BYTES {
        text.push('…');
    }
    text
}

/// Reads only `id`, `return` and `error`, skipping other members without building them.
struct ReplyVisitor;

impl<'de> Visitor<'de> for ReplyVisitor {
    type Value = Result<Reply, NotAnObject>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut reply = Reply::default();
        while let Some(key) = map.next_key::<Key>()? {
            let (slot, member) = match key {
                Key::Id => (&mut reply.id, "id"),
                Key::Return => (&mut reply.ret, "return"),
                Key::Error => (&mut reply.error, "error"),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.replace(map.next_value()?).is_some() && reply.duplicate.is_none() {
                reply.duplicate = Some(member);
            }
        }
        Ok(Ok(reply))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(NotAnObject))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(NotAnObject))
    }
}

enum Key {
    Id,
    Return,
    Error,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "id" => Key::Id,
                    "return" => Key::Return,
                    "error" => Key::Error,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(line: &str) -> Reply {
        match Reply::parse(line.as_bytes()) {
            Ok(Ok(r)) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn reads_return_error_and_id_in_any_order() {
        let r = parse(r#"{"return": {"a": [1, 2]}, "id": 7}"#);
        assert_eq!(r.id, Some(json!(7)));
        assert_eq!(r.ret, Some(json!({"a": [1, 2]})));
        let r =
            parse(r#"{"id": "x", "error": {"class": "GenericError", "desc": "d"}, "extra": [{}]}"#);
        assert!(r.has_id(&json!("x")));
        let e = r.into_result(b"").unwrap_err();
        assert_eq!(e.class(), "GenericError");
        assert_eq!(e.desc(), "d");
    }

    #[rstest::rstest]
    #[case(
        r#"{"return": {"host-name": "vm"}, "return": {"host-name": "forged"}}"#,
        "return"
    )]
    #[case(r#"{"id": 1, "return": 5, "id": 2}"#, "id")]
    #[case(
        r#"{"error": {"class": "A"}, "return": 1, "error": {"class": "B"}}"#,
        "error"
    )]
    fn a_duplicate_member_is_a_protocol_error(#[case] line: &str, #[case] member: &str) {
        let e = parse(line).into_result(line.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, Error::Protocol(ProtocolError::DuplicateMember { member: m, .. }) if *m == member),
            "{e:?}"
        );
    }

    #[rstest::rstest]
    #[case(r#"{"return": 1e400}"#, Some("1e400"))]
    #[case(r#"{"return": {"t": -1E+309}}"#, Some("-1E+309"))]
    #[case(r#"{"return": 18446744073709551616}"#, Some("18446744073709551616"))]
    #[case(r#"{"return": [-9223372036854775809]}"#, Some("-9223372036854775809"))]
    #[case(
        r#"{"return": 18446744073709551615, "id": -9223372036854775808}"#,
        None
    )]
    #[case(r#"{"return": 9.9999999999999992e+22}"#, None)]
    #[case(r#"{"return": 1.7976931348623157e308}"#, None)]
    #[case(r#"{"return": "1e400 and 99999999999999999999999 \" 1e999"}"#, None)]
    #[case(r#"{"return": -0.0}"#, None)]
    fn finds_numbers_no_agent_writes(#[case] line: &str, #[case] found: Option<&str>) {
        assert_eq!(impossible_number(line.as_bytes()).as_deref(), found);
    }

    #[test]
    fn saturates_only_numbers_beyond_the_double_range() {
        let line = br#"{"return": [1e400, -1e400, 5, "1e400"], "id": 2.5}"#;
        let read: Value = serde_json::from_slice(&saturate_numbers(line)).unwrap();
        assert_eq!(
            read,
            json!({"return": [f64::MAX, -f64::MAX, 5, "1e400"], "id": 2.5})
        );
    }

    #[test]
    fn a_null_return_is_a_return() {
        let r = parse(r#"{"return": null}"#);
        assert_eq!(r.into_result(b"").unwrap(), Value::Null);
    }

    #[test]
    fn matches_the_sync_id_exactly() {
        assert!(parse(r#"{"return": 9223372036854775807}"#).returns_sync_id(i64::MAX as u64));
        assert!(!parse(r#"{"return": 5.0}"#).returns_sync_id(5));
        assert!(!parse(r#"{"return": "5"}"#).returns_sync_id(5));
        assert!(!parse(r#"{"return": 6}"#).returns_sync_id(5));
        assert!(!parse(r#"{"return": -5}"#).returns_sync_id(5));
    }

    #[test]
    fn ids_compare_as_the_agent_reprints_them() {
        assert!(parse(r#"{"return": {}, "id": 1}"#).has_id(&json!(1.0)));
        assert!(!parse(r#"{"return": {}, "id": "1"}"#).has_id(&json!(1)));
        let id = (1u64 << 62) + 2;
        assert!(!parse(&format!(r#"{{"return": {{}}, "id": {}}}"#, id + 1)).has_id(&json!(id)));
        assert!(!parse(&format!(r#"{{"return": {{}}, "id": {}}}"#, id ^ 1)).has_id(&json!(id)));
        assert!(parse(&format!(r#"{{"return": {{}}, "id": {id}}}"#)).has_id(&json!(id)));
        assert!(!parse(r#"{"return": {}}"#).has_id(&json!(1)));
    }

    #[test]
    fn tells_non_objects_from_garbage() {
        assert_eq!(Reply::parse(b"42").unwrap(), Err(NotAnObject));
        assert_eq!(Reply::parse(b"[1, {\"a\": 2}]").unwrap(), Err(NotAnObject));
        assert!(Reply::parse(b"{\"return\": 1} x").is_err());
        assert!(Reply::parse(b"{\"return\": \xc3}").is_err());
        assert!(Reply::parse(b"inf").is_err());
    }

    #[test]
    fn bounds_nesting() {
        let deep = format!("{{\"return\": {}}}", "[".repeat(100_000));
        assert!(matches!(
            Reply::parse(deep.as_bytes()),
            Err(ProtocolError::NotJson { .. })
        ));
        let ok = format!("{{\"return\": {}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(Reply::parse(ok.as_bytes()).is_ok());
    }

    #[rstest::rstest]
    #[case(r#"{"error": "random error"}"#)]
    #[case(r#"{"error": {"desc": "no class"}}"#)]
    #[case(r#"{"error": {"class": 1, "desc": "x"}}"#)]
    #[case(r#"{"error": {"class": "C", "desc": 2}}"#)]
    fn malformed_errors_are_protocol_errors(#[case] line: &str) {
        let e = parse(line).into_result(line.as_bytes()).unwrap_err();
        assert!(
            matches!(e, Error::Protocol(ProtocolError::MalformedError { .. })),
            "{e:?}"
        );
    }

    #[test]
    fn an_error_without_desc_keeps_its_class() {
        let e = parse(r#"{"error": {"class": "CommandDisabled"}}"#)
            .into_result(b"")
            .unwrap_err();
        assert!(matches!(e, Error::CommandDisabled(_)));
        assert_eq!(e.desc(), "");
    }

    #[test]
    fn neither_or_both_results_are_protocol_errors() {
        assert!(matches!(
            parse(r#"{"id": 1}"#).into_result(b""),
            Err(Error::Protocol(ProtocolError::NoResult { .. }))
        ));
        assert!(matches!(
            parse(r#"{"return": 1, "error": {"class": "C"}}"#).into_result(b""),
            Err(Error::Protocol(ProtocolError::BothResults { .. }))
        ));
    }
}
