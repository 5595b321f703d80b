//! Generators shared by the oracles: JSON values and protocol-shaped requests drawn from
//! fuzzer bytes.

use arbitrary::{Result, Unstructured};

use crate::wire::{Object, Value};

/// Deepest nesting a generated value reaches: far below the parser's limit of 1024, deep
/// enough for every framing path.
const MAX_DEPTH: u32 = 6;

/// Command names worth hitting often: the protocol commands, a few of each family, and
/// near misses.
pub const COMMAND_NAMES: &[&str] = &[
    "guest-sync",
    "guest-sync-delimited",
    "guest-ping",
    "guest-info",
    "guest-get-osinfo",
    "guest-get-time",
    "guest-set-time",
    "guest-get-host-name",
    "guest-get-timezone",
    "guest-get-users",
    "guest-get-vcpus",
    "guest-get-fsinfo",
    "guest-network-get-interfaces",
    "guest-fsfreeze-status",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-file-open",
    "guest-file-read",
    "guest-file-write",
    "guest-file-seek",
    "guest-file-flush",
    "guest-file-close",
    "guest-exec",
    "guest-exec-status",
    "guest-shutdown",
    "guest-suspend-ram",
    "guest-suspend-disk",
    "guest-suspend-hybrid",
    "guest-set-user-password",
    "guest-get-memory-blocks",
    "guest-fstrim",
    "guest-ssh-get-authorized-keys",
    "guest-get-disks",
    "guest-nosuch",
    "",
];

/// Member names worth hitting often.
const MEMBER_NAMES: &[&str] = &[
    "execute",
    "arguments",
    "id",
    "path",
    "mode",
    "handle",
    "count",
    "buf-b64",
    "offset",
    "whence",
    "pid",
    "arg",
    "capture-output",
    "time",
    "mountpoints",
    "username",
    "password",
    "crypted",
    "return",
    "error",
    "class",
    "desc",
    "call",
];

/// A string: usually a protocol name, sometimes any text.
pub fn name(u: &mut Unstructured<'_>, names: &[&str]) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(names)?).to_owned())
    } else {
        u.arbitrary()
    }
}

/// A finite double other than -0.0, whose `%.17g` text reads back to itself.
fn finite(u: &mut Unstructured<'_>) -> Result<f64> {
    let x: f64 = u.arbitrary()?;
    Ok(if x.is_finite() && x != 0.0 { x } else { 0.5 })
}

/// Any JSON value of bounded depth.
pub fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let leaf_only = depth >= MAX_DEPTH;
    let kinds = if leaf_only { 7 } else { 9 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Int(u.arbitrary()?),
        3 => Value::UInt(u.int_in_range(i64::MAX as u64 + 1..=u64::MAX)?),
        4 => Value::Float(finite(u)?),
        5 => Value::String(u.arbitrary()?),
        6 => Value::String(name(u, MEMBER_NAMES)?),
        7 => {
            let n = u.int_in_range(0..=4)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(u, depth + 1)?);
            }
            Value::Array(items)
        }
        _ => Value::Object(object(u, depth + 1)?),
    })
}

/// A JSON object of bounded depth with protocol-like member names.
pub fn object(u: &mut Unstructured<'_>, depth: u32) -> Result<Object> {
    let n = u.int_in_range(0..=4)?;
    let mut members = Object::with_capacity(n);
    for _ in 0..n {
        let key = name(u, MEMBER_NAMES)?;
        members.insert(key, value(u, depth)?);
    }
    Ok(members)
}

/// A request as a client might send it: mostly `{"execute": NAME, "arguments": {...},
/// "id": ...}` with a known command, sometimes any value.
pub fn request(u: &mut Unstructured<'_>) -> Result<Value> {
    if u.ratio(1, 8)? {
        return value(u, 0);
    }
    let mut request = Object::new();
    let mut fields = vec!["execute", "arguments", "id", "extra"];
    // Member order matters to QEMU's checks: let the fuzzer choose it.
    for i in (1..fields.len()).rev() {
        let j = u.int_in_range(0..=i)?;
        fields.swap(i, j);
    }
    for field in fields {
        match field {
            "execute" if u.ratio(15, 16)? => {
                let execute = if u.ratio(7, 8)? {
                    Value::String(name(u, COMMAND_NAMES)?)
                } else {
                    value(u, 1)?
                };
                request.insert("execute", execute);
            }
            "arguments" if u.ratio(1, 2)? => {
                let arguments = if u.ratio(7, 8)? {
                    Value::Object(object(u, 1)?)
                } else {
                    value(u, 1)?
                };
                request.insert("arguments", arguments);
            }
            "id" if u.ratio(1, 2)? => request.insert("id", value(u, 2)?),
            "extra" if u.ratio(1, 8)? => {
                let key = name(u, MEMBER_NAMES)?;
                request.insert(key, value(u, 2)?);
            }
            _ => {}
        }
    }
    Ok(Value::Object(request))
}

/// Splits `bytes` into chunks whose sizes the fuzzer chooses (at least one byte each).
pub fn chunks<'a>(u: &mut Unstructured<'_>, bytes: &'a [u8]) -> Result<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = if u.is_empty() {
            rest.len()
        } else {
            u.int_in_range(1..=rest.len().min(64))?
        };
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    Ok(out)
}
