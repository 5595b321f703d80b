//! Oracles of the lexer/streamer and the writer.
//!
//! 1. No input panics, and the chunking of the input does not change what comes out.
//! 2. Framing against a plain model: after any prefix and one 0xFF (the parser reset a
//!    client sends), the values written after it, separated by whitespace, come out as
//!    exactly those values, in order, whatever the chunking (the first one starting at
//!    a structural or control byte, where the lexer's recovery ends).
//! 3. A value the writer printed reads back to a value the writer prints to the same
//!    bytes, or (members sharing a QDict bucket reverse) to bytes that print back to
//!    them.

use arbitrary::Unstructured;

use super::gen;
use crate::wire::{write_json, Parsed, Streamer, Value};

/// The oracle of the `wire` target.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let prefix_len = u.int_in_range(0..=u.len().min(256))?;
    let prefix = u.bytes(prefix_len)?.to_vec();
    let count = u.int_in_range(0..=4)?;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        values.push(holdable_keys(gen::value(u, 0)?));
    }
    let mut written = Vec::with_capacity(values.len());
    let mut input = prefix.clone();
    input.push(0xFF);
    // After the stray 0xFF the lexer skips up to a structural or control byte, so a
    // scalar right behind it would be skipped: a newline ends the recovery first.
    if !matches!(values.first(), Some(Value::Object(_) | Value::Array(_))) {
        input.push(b'\n');
    }
    for value in &values {
        let mut bytes = Vec::new();
        write_json(value, &mut bytes);
        input.extend_from_slice(&bytes);
        // Whitespace ends a top-level number, which otherwise waits for one more byte.
        input.extend_from_slice(u.choose(&[&b"\n"[..], b" ", b"\r\n", b"\t\n "])?);
        written.push(bytes);
    }

    // 1. Chunking does not matter, for garbage too.
    let whole = parse_all(&[&input]);
    let chunks = gen::chunks(u, &input)?;
    assert_eq!(
        parse_all(&chunks),
        whole,
        "the chunking changed the output for {input:?}"
    );
    let garbage_chunks = gen::chunks(u, &prefix)?;
    assert_eq!(parse_all(&garbage_chunks), parse_all(&[&prefix]));

    // 2. The values after the reset come out as written, and nothing is left pending.
    assert!(
        whole.len() >= values.len(),
        "{} values written after 0xFF, {} items out: {whole:?}",
        values.len(),
        whole.len()
    );
    let tail = &whole[whole.len() - values.len()..];
    for ((item, value), bytes) in tail.iter().zip(&values).zip(&written) {
        let Parsed::Value(parsed) = item else {
            panic!(
                "{:?} after 0xFF gave {item:?}",
                String::from_utf8_lossy(bytes)
            );
        };
        // 3. Byte for byte through the writer.
        let mut again = Vec::new();
        write_json(parsed, &mut again);
        if again != *bytes {
            // Members that share a QDict hash bucket print newest first (qdict_put
            // inserts at the head of the bucket's list), so printing what was read back
            // reverses them, as QEMU does; reading back and printing once more restores
            // the bytes. Anything else must come out byte for byte.
            assert!(
                printed_back(&again).as_ref() == Some(bytes),
                "{value:?} read back as {parsed:?}: {:?} became {:?}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&again)
            );
        }
    }
    let mut streamer = Streamer::new();
    let mut sink = |_: Parsed| {};
    streamer.feed(&input, &mut sink);
    assert!(
        values.is_empty() || streamer.is_idle(),
        "input pending after whole values"
    );
    Ok(())
}

/// `value` with every object key made one QEMU can hold: a character it rejects (a
/// noncharacter, say) becomes U+FFFD, as the writer prints it. (Printing such a key
/// changes it, and with it the key's QDict hash bucket and so the members' printed
/// order: the writer's bytes would read back to a different object. A parsed key
/// never holds such a character: the parser rejects it.) Strings elsewhere keep them:
/// their `\uFFFD` reads back and prints the same.
fn holdable_keys(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(holdable_keys).collect()),
        Value::Object(object) => {
            let mut holdable = crate::wire::Object::with_capacity(object.len());
            for (key, member) in object.iter() {
                let key: String = key
                    .chars()
                    .map(|c| {
                        if crate::wire::is_valid_code_point(u32::from(c)) {
                            c
                        } else {
                            '\u{FFFD}'
                        }
                    })
                    .collect();
                holdable.insert(key, holdable_keys(member.clone()));
            }
            Value::Object(holdable)
        }
        other => other,
    }
}

/// The writer's bytes for the one value `bytes` reads back to (None if it is not one
/// value).
pub(super) fn printed_back(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut items = parse_all(&[bytes, b"\n"]);
    let (Some(Parsed::Value(value)), None) = (items.pop(), items.pop()) else {
        return None;
    };
    let mut out = Vec::new();
    write_json(&value, &mut out);
    Some(out)
}

fn parse_all(chunks: &[&[u8]]) -> Vec<Parsed> {
    let mut streamer = Streamer::new();
    let mut out = Vec::new();
    for chunk in chunks {
        streamer.feed(chunk, &mut |item| out.push(item));
    }
    out
}
