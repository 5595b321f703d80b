//! Test input through the real streamer, so objects keep QEMU's insertion order and numbers
//! QEMU's classes.

use crate::wire::{Object, Parsed, Streamer, Value};

/// The one value `text` holds.
pub(crate) fn parse(text: &str) -> Value {
    let mut items = Vec::new();
    // A top-level number or keyword ends only at the next byte.
    let input = format!("{text}\n");
    Streamer::new().feed(input.as_bytes(), &mut |item| items.push(item));
    match items.as_slice() {
        [Parsed::Value(value)] => value.clone(),
        other => panic!("{text:?} is not one JSON value: {other:?}"),
    }
}

pub(crate) fn object(text: &str) -> Object {
    match parse(text) {
        Value::Object(o) => o,
        other => panic!("not an object: {other:?}"),
    }
}
