//! qemu-ga's JSON output, byte for byte (QEMU qobject/json-writer.c and qobject/qjson.c).
//!
//! - Compact form with `": "` and `", "` separators, `{}` and `[]` for empty containers.
//! - Strings are pure ASCII: every other character becomes an uppercase `\uXXXX` escape
//!   (a surrogate pair above U+FFFF), and characters QEMU does not accept become `\uFFFD`.
//! - Doubles are printed with C's `%.17g`, integers as integers.
//! - Object members come in QDict iteration order: by `tdb_hash(key) % 512`, and within one
//!   bucket the newest-inserted key first (QEMU qobject/qdict.c inserts at the bucket head).

use std::io::Write as _;

use super::utf8::is_valid_code_point;
use super::value::{Object, Value};

/// Number of hash buckets in a QDict (`QDICT_BUCKET_MAX`).
const QDICT_BUCKETS: u32 = 512;

/// Objects up to this many members are ordered without a heap allocation.
const INLINE_ORDER: usize = 32;

/// Appends `value` to `out` exactly as qemu-ga's writer would (no trailing newline).
pub fn write_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_i64(*i, out),
        Value::UInt(u) => write_u64(*u, out),
        Value::Float(f) => write_double(*f, out),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.extend_from_slice(b", ");
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(object) => write_object(object, out),
    }
}

fn write_object(object: &Object, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut inline = [(0u32, 0usize); INLINE_ORDER];
    let mut heap = Vec::new();
    let order: &mut [(u32, usize)] = if object.len() <= INLINE_ORDER {
        &mut inline[..object.len()]
    } else {
        heap.resize(object.len(), (0, 0));
        &mut heap
    };
    qdict_order(object, order);
    let members = object.members();
    for (n, &(_, index)) in order.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        if let Some((key, value)) = members.get(index) {
            write_str(key, out);
            out.extend_from_slice(b": ");
            write_json(value, out);
        }
    }
    out.push(b'}');
}

/// Fills `order` (one slot per member) with `(bucket, insertion index)` pairs in QDict
/// iteration order: ascending bucket, and within a bucket the newest insertion first.
pub(crate) fn qdict_order(object: &Object, order: &mut [(u32, usize)]) {
    for (slot, (index, key)) in order.iter_mut().zip(object.keys().enumerate()) {
        *slot = (qdict_bucket(key), index);
    }
    order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
}

/// The QDict bucket of `key`: `tdb_hash(key) % 512`.
pub(crate) fn qdict_bucket(key: &str) -> u32 {
    tdb_hash(key) % QDICT_BUCKETS
}

/// QEMU's `tdb_hash` over the key as QEMU stores it: modified UTF-8, where U+0000 is the
/// two bytes `C0 80` (so a NUL never ends the key early).
fn tdb_hash(key: &str) -> u32 {
    let stored_len = key.len() + key.bytes().filter(|&b| b == 0).count();
    let mut value = 0x238F_13AFu32.wrapping_mul(stored_len as u32);
    let mut index = 0u32;
    let mut add = |value: u32, byte: u8| {
        let shift = index.wrapping_mul(5) % 24;
        index = index.wrapping_add(1);
        value.wrapping_add(u32::from(byte) << shift)
    };
    for byte in key.bytes() {
        if byte == 0 {
            value = add(value, 0xC0);
            value = add(value, 0x80);
        } else {
            value = add(value, byte);
        }
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345)
}

/// Writes a quoted string the way `quoted_str` in QEMU's json-writer.c does.
fn write_str(s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if !needs_escape(byte) {
            at += 1;
            continue;
        }
        out.extend_from_slice(&bytes[run_start..at]);
        // `at` is always on a character boundary: it moves by whole characters.
        let c = s
            .get(at..)
            .and_then(|rest| rest.chars().next())
            .unwrap_or('\u{FFFD}');
        write_escape(c, out);
        at += c.len_utf8();
        run_start = at;
    }
    out.extend_from_slice(bytes.get(run_start..).unwrap_or_default());
    out.push(b'"');
}

/// Whether a byte cannot be copied as it is: anything outside printable ASCII, `"` and `\`.
fn needs_escape(byte: u8) -> bool {
    !(0x20..0x7F).contains(&byte) || byte == b'"' || byte == b'\\'
}

fn write_escape(c: char, out: &mut Vec<u8>) {
    match c {
        '"' => out.extend_from_slice(b"\\\""),
        '\\' => out.extend_from_slice(b"\\\\"),
        '\u{8}' => out.extend_from_slice(b"\\b"),
        '\u{c}' => out.extend_from_slice(b"\\f"),
        '\n' => out.extend_from_slice(b"\\n"),
        '\r' => out.extend_from_slice(b"\\r"),
        '\t' => out.extend_from_slice(b"\\t"),
        _ => {
            let cp = u32::from(c);
            // QEMU's decoder rejects noncharacters, and the writer prints them as U+FFFD.
            let cp = if is_valid_code_point(cp) { cp } else { 0xFFFD };
            if cp > 0xFFFF {
                let offset = cp - 0x1_0000;
                write_u_escape(0xD800 + (offset >> 10), out);
                write_u_escape(0xDC00 + (offset & 0x3FF), out);
            } else {
                write_u_escape(cp, out);
            }
        }
    }
}

fn write_u_escape(unit: u32, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((unit >> shift) & 0xF) as usize]);
    }
}

fn write_u64(mut n: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

fn write_i64(n: i64, out: &mut Vec<u8>) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(n.unsigned_abs(), out);
}

/// Writes `v` as C's `printf("%.17g", v)` does with glibc in the C locale.
fn write_double(v: f64, out: &mut Vec<u8>) {
    const PRECISION: i32 = 17;
    if v.is_nan() {
        out.extend_from_slice(if v.is_sign_negative() {
            b"-nan"
        } else {
            b"nan"
        });
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v < 0.0 { b"-inf" } else { b"inf" });
        return;
    }
    // `{:.16e}` rounds exactly (ties to even) to 17 significant digits, as glibc does; %g
    // then picks the style from the exponent of that rounded form. At most 24 bytes, e.g.
    // `-1.2345678901234567e-308`.
    let mut buf = [0u8; 32];
    let written = {
        let mut cursor = &mut buf[..];
        let room = cursor.len();
        match write!(cursor, "{v:.16e}") {
            Ok(()) => room - cursor.len(),
            Err(_) => 0,
        }
    };
    let scientific = &buf[..written];
    let (mantissa, exponent) = match scientific.iter().position(|&b| b == b'e') {
        Some(e) => (&scientific[..e], &scientific[e + 1..]),
        None => (scientific, &b"0"[..]),
    };
    let exponent: i32 = std::str::from_utf8(exponent)
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let negative = mantissa.first() == Some(&b'-');
    let mut digits = [b'0'; PRECISION as usize];
    for (slot, &d) in digits
        .iter_mut()
        .zip(mantissa.iter().filter(|b| b.is_ascii_digit()))
    {
        *slot = d;
    }
    if negative {
        out.push(b'-');
    }
    if (0..PRECISION).contains(&exponent) {
        let (integer, fraction) = digits.split_at(exponent as usize + 1);
        out.extend_from_slice(integer);
        let fraction = trim_zeros(fraction);
        if !fraction.is_empty() {
            out.push(b'.');
            out.extend_from_slice(fraction);
        }
    } else if (-4..0).contains(&exponent) {
        out.extend_from_slice(b"0.");
        for _ in 0..(-exponent - 1) {
            out.push(b'0');
        }
        out.extend_from_slice(trim_zeros(&digits));
    } else {
        let (first, fraction) = digits.split_at(1);
        out.extend_from_slice(first);
        let fraction = trim_zeros(fraction);
        if !fraction.is_empty() {
            out.push(b'.');
            out.extend_from_slice(fraction);
        }
        out.push(b'e');
        out.push(if exponent < 0 { b'-' } else { b'+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push(b'0');
        }
        write_u64(u64::from(magnitude), out);
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let end = digits.iter().rposition(|&d| d != b'0').map_or(0, |p| p + 1);
    &digits[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn json(value: &Value) -> String {
        let mut out = Vec::new();
        write_json(value, &mut out);
        String::from_utf8(out).expect("the writer's output is ASCII")
    }

    fn obj(members: &[(&str, Value)]) -> Value {
        let mut object = Object::new();
        for (k, v) in members {
            object.insert(*k, v.clone());
        }
        Value::Object(object)
    }

    #[rstest]
    #[case("execute", 299)]
    #[case("arguments", 447)]
    #[case("return", 401)]
    #[case("id", 486)]
    #[case("error", 489)]
    #[case("class", 211)]
    #[case("desc", 377)]
    #[case("aa", 110)]
    #[case("aq", 110)]
    fn known_buckets(#[case] key: &str, #[case] bucket: u32) {
        assert_eq!(qdict_bucket(key), bucket);
    }

    #[test]
    fn nul_in_a_key_hashes_as_modified_utf8() {
        // "a\0" is stored as 61 C0 80: length 3.
        let expected = {
            let mut v = 0x238F_13AFu32.wrapping_mul(3);
            for (i, b) in [0x61u32, 0xC0, 0x80].into_iter().enumerate() {
                v = v.wrapping_add(b << ((i as u32 * 5) % 24));
            }
            1_103_515_243u32.wrapping_mul(v).wrapping_add(12345)
        };
        assert_eq!(tdb_hash("a\0"), expected);
    }

    #[rstest]
    #[case::quote_backslash("a\"b\\c", r#""a\"b\\c""#)]
    #[case::short_escapes("\u{8}\u{c}\n\r\t", r#""\b\f\n\r\t""#)]
    #[case::nul("a\0b", r#""a\u0000b""#)]
    #[case::controls("\u{1}\u{1f}\u{7f}", r#""\u0001\u001F\u007F""#)]
    #[case::latin_and_euro("\u{80}\u{e9}\u{20ac}", r#""\u0080\u00E9\u20AC""#)]
    #[case::astral("\u{1F600}", r#""\uD83D\uDE00""#)]
    #[case::max_astral("\u{10FFFD}", r#""\uDBFF\uDFFD""#)]
    #[case::unescaped_ascii("/'<>&", r#""/'<>&""#)]
    #[case::replacement("\u{FFFD}", r#""\uFFFD""#)]
    #[case::noncharacter_ffff("\u{FFFF}", r#""\uFFFD""#)]
    #[case::noncharacter_fdd0("x\u{FDD0}y", r#""x\uFFFDy""#)]
    #[case::noncharacter_10ffff("\u{10FFFF}", r#""\uFFFD""#)]
    #[case::empty("", r#""""#)]
    #[case::id_row(
        "q\"b\\s// \u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}\u{80}\u{e9}\u{20ac}<>&'",
        r#""q\"b\\s// \b\f\n\r\t\u0001\u001F\u007F\u0080\u00E9\u20AC<>&'""#
    )]
    fn string_escapes(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(json(&Value::from(input)), expected);
    }

    #[rstest]
    #[case::one_and_a_half(1.5, "1.5")]
    #[case::tenth(0.1, "0.10000000000000001")]
    #[case::thousand(1e3, "1000")]
    #[case::big(99999999999999999999999.0, "9.9999999999999992e+22")]
    #[case::inf(f64::INFINITY, "inf")]
    #[case::minus_inf(f64::NEG_INFINITY, "-inf")]
    #[case::nan(f64::NAN, "nan")]
    #[case::minus_nan(-f64::NAN, "-nan")]
    #[case::zero(0.0, "0")]
    #[case::minus_zero(-0.0, "-0")]
    #[case::one(1.0, "1")]
    #[case::minus_tenth(-0.1, "-0.10000000000000001")]
    #[case::sixteen_digits(1e16, "10000000000000000")]
    #[case::seventeen_digits(1e17, "1e+17")]
    #[case::small_fixed(0.0001, "0.0001")]
    #[case::small_exponent(0.00001, "1.0000000000000001e-05")]
    #[case::e100(1e100, "1e+100")]
    #[case::e_minus_300(1e-300, "1e-300")]
    #[case::max(f64::MAX, "1.7976931348623157e+308")]
    #[case::min_positive(f64::MIN_POSITIVE, "2.2250738585072014e-308")]
    #[case::smallest_subnormal(5e-324, "4.9406564584124654e-324")]
    #[case::third(1.0 / 3.0, "0.33333333333333331")]
    #[case::two_to_60(1152921504606846976.0, "1.152921504606847e+18")]
    fn doubles_as_percent_17g(#[case] v: f64, #[case] expected: &str) {
        assert_eq!(json(&Value::Float(v)), expected);
    }

    /// Compares with the C library's own `%.17g` on many doubles, ties and edges included.
    #[test]
    fn doubles_match_libc_printf() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x17);
        let mut samples: Vec<f64> = (0..200_000)
            .map(|_| f64::from_bits(rng.random::<u64>()))
            .collect();
        for e in -30..=30 {
            for m in [1.0, 1.5, 2.5, 5.0, 0.5, 0.125, 9.999_999_999_999_999_9] {
                samples.push(m * 10f64.powi(e));
            }
        }
        for i in 0..2_000 {
            // Dyadic values with short exact expansions exercise round-half-even.
            samples.push(f64::from(i) / 1024.0);
            samples.push(f64::from(i) * 2f64.powi(50) + 0.5);
            samples.push((1u64 << 53) as f64 + f64::from(i) * 2.0);
        }
        for v in samples {
            let mut buf = [0u8; 64];
            // SAFETY: the buffer is 64 bytes and its length is passed; the format takes
            // exactly one double.
            let n =
                unsafe { libc::snprintf(buf.as_mut_ptr().cast(), buf.len(), c"%.17g".as_ptr(), v) };
            let expected = std::str::from_utf8(&buf[..n as usize]).expect("ASCII");
            assert_eq!(json(&Value::Float(v)), expected, "bits {:#x}", v.to_bits());
        }
    }

    #[rstest]
    #[case::i64_min(Value::Int(i64::MIN), "-9223372036854775808")]
    #[case::i64_max(Value::Int(i64::MAX), "9223372036854775807")]
    #[case::zero(Value::Int(0), "0")]
    #[case::minus_one(Value::Int(-1), "-1")]
    #[case::u64_max(Value::UInt(u64::MAX), "18446744073709551615")]
    #[case::u64_above_i64(Value::UInt(9223372036854775808), "9223372036854775808")]
    #[case::null(Value::Null, "null")]
    #[case::bools(Value::Array(vec![Value::Bool(true), Value::Bool(false)]), "[true, false]")]
    #[case::empty_array(Value::Array(vec![]), "[]")]
    #[case::empty_object(Value::Object(Object::new()), "{}")]
    #[case::nested(
        Value::Array(vec![Value::Int(1), Value::from("a"), Value::Null, Value::Array(vec![])]),
        r#"[1, "a", null, []]"#
    )]
    fn scalars_and_separators(#[case] value: Value, #[case] expected: &str) {
        assert_eq!(json(&value), expected);
    }

    #[test]
    fn collision_bucket_newest_first() {
        let a = obj(&[("aa", Value::Int(1)), ("aq", Value::Int(2))]);
        assert_eq!(json(&a), r#"{"aq": 2, "aa": 1}"#);
        let b = obj(&[("aq", Value::Int(2)), ("aa", Value::Int(1))]);
        assert_eq!(json(&b), r#"{"aa": 1, "aq": 2}"#);
    }

    #[test]
    fn qdict_order_is_the_written_order() {
        let object = Object::new()
            .with("foo", Value::Int(1))
            .with("execute", Value::from("guest-ping"))
            .with("aa", Value::Int(2))
            .with("aq", Value::Int(3))
            .with("arguments", Value::Object(Object::new()));
        let keys: Vec<&str> = object.iter_qdict_order().map(|(k, _)| k).collect();
        // qemu-ga checks `execute` before `arguments` before `foo` (buckets 299, 447, 490).
        assert_eq!(keys, ["aq", "aa", "execute", "arguments", "foo"]);
        let written = json(&Value::Object(object.clone()));
        let mut at = 0;
        for key in keys {
            at += written[at..]
                .find(&format!("\"{key}\""))
                .expect("key written in order");
        }
    }

    #[test]
    fn echoed_objects_are_reordered() {
        let inner = obj(&[("z", Value::Int(0)), ("y", Value::Array(vec![]))]);
        let outer = obj(&[("b", Value::Int(1)), ("a", Value::Int(2)), ("c", inner)]);
        assert_eq!(json(&outer), r#"{"a": 2, "b": 1, "c": {"y": [], "z": 0}}"#);
    }

    #[test]
    fn replies_put_id_by_hash_order() {
        let ok = obj(&[
            ("return", Value::Object(Object::new())),
            ("id", Value::Int(7)),
        ]);
        assert_eq!(json(&ok), r#"{"return": {}, "id": 7}"#);
        let error = obj(&[
            ("class", Value::from("GenericError")),
            ("desc", Value::from("x")),
        ]);
        let err = obj(&[("error", error), ("id", Value::Int(7))]);
        assert_eq!(
            json(&err),
            r#"{"id": 7, "error": {"class": "GenericError", "desc": "x"}}"#
        );
    }

    #[test]
    fn guest_info_entry_and_osinfo_orders() {
        let entry = obj(&[
            ("name", Value::from("guest-ping")),
            ("enabled", Value::Bool(true)),
            ("success-response", Value::Bool(true)),
        ]);
        assert_eq!(
            json(&entry),
            r#"{"enabled": true, "name": "guest-ping", "success-response": true}"#
        );
        let info = obj(&[
            ("version", Value::from("7.2.22")),
            ("supported_commands", Value::Array(vec![entry])),
        ]);
        assert!(json(&info).starts_with(r#"{"version": "7.2.22", "supported_commands": [{"#));
        // QAPI's output visitor inserts members in schema order.
        let osinfo = obj(&[
            ("kernel-release", Value::from("6.18.44-fc-v657")),
            ("kernel-version", Value::from("#1 SMP PREEMPT_DYNAMIC @0")),
            ("machine", Value::from("x86_64")),
            ("id", Value::from("debian")),
            ("name", Value::from("Debian GNU/Linux")),
            ("pretty-name", Value::from("Debian GNU/Linux 12 (bookworm)")),
            ("version", Value::from("12 (bookworm)")),
            ("version-id", Value::from("12")),
        ]);
        assert_eq!(
            json(&obj(&[("return", osinfo)])),
            r##"{"return": {"name": "Debian GNU/Linux", "kernel-release": "6.18.44-fc-v657", "version": "12 (bookworm)", "pretty-name": "Debian GNU/Linux 12 (bookworm)", "version-id": "12", "kernel-version": "#1 SMP PREEMPT_DYNAMIC @0", "machine": "x86_64", "id": "debian"}}"##
        );
    }

    /// The whole guest-info reply of qemu-ga 7.2 (with the safe block list), rebuilt the way QAPI's output
    /// visitor builds it (members in schema order, commands in reverse registration order).
    #[test]
    fn guest_info_reply_is_byte_exact() {
        const REGISTERED: [&str; 42] = [
            "guest-sync-delimited",
            "guest-sync",
            "guest-ping",
            "guest-get-time",
            "guest-set-time",
            "guest-info",
            "guest-shutdown",
            "guest-file-open",
            "guest-file-close",
            "guest-file-read",
            "guest-file-write",
            "guest-file-seek",
            "guest-file-flush",
            "guest-fsfreeze-status",
            "guest-fsfreeze-freeze",
            "guest-fsfreeze-freeze-list",
            "guest-fsfreeze-thaw",
            "guest-fstrim",
            "guest-suspend-disk",
            "guest-suspend-ram",
            "guest-suspend-hybrid",
            "guest-network-get-interfaces",
            "guest-get-vcpus",
            "guest-set-vcpus",
            "guest-get-disks",
            "guest-get-fsinfo",
            "guest-set-user-password",
            "guest-get-memory-blocks",
            "guest-set-memory-blocks",
            "guest-get-memory-block-info",
            "guest-exec-status",
            "guest-exec",
            "guest-get-host-name",
            "guest-get-users",
            "guest-get-timezone",
            "guest-get-osinfo",
            "guest-get-devices",
            "guest-ssh-get-authorized-keys",
            "guest-ssh-add-authorized-keys",
            "guest-ssh-remove-authorized-keys",
            "guest-get-diskstats",
            "guest-get-cpustats",
        ];
        let disabled = |name: &str| {
            crate::real_agent::safe_block_list().contains(&name) || name == "guest-get-devices"
        };
        let no_reply = |name: &str| name == "guest-shutdown" || name.starts_with("guest-suspend-");
        let commands = REGISTERED
            .iter()
            .rev()
            .map(|name| {
                obj(&[
                    ("name", Value::from(*name)),
                    ("enabled", Value::Bool(!disabled(name))),
                    ("success-response", Value::Bool(!no_reply(name))),
                ])
            })
            .collect();
        let info = obj(&[
            ("version", Value::from("7.2.22")),
            ("supported_commands", Value::Array(commands)),
        ]);
        let expected = concat!(
            r#"{"return": {"version": "7.2.22", "supported_commands": [{"enabled": true, "name": "guest-g"#,
            r#"et-cpustats", "success-response": true}, {"enabled": true, "name": "guest-get-diskstats", "#,
            r#""success-response": true}, {"enabled": false, "name": "guest-ssh-remove-authorized-keys", "#,
            r#""success-response": true}, {"enabled": false, "name": "guest-ssh-add-authorized-keys", "su"#,
            r#"ccess-response": true}, {"enabled": true, "name": "guest-ssh-get-authorized-keys", "succes"#,
            r#"s-response": true}, {"enabled": false, "name": "guest-get-devices", "success-response": tr"#,
            r#"ue}, {"enabled": true, "name": "guest-get-osinfo", "success-response": true}, {"enabled": "#,
            r#"true, "name": "guest-get-timezone", "success-response": true}, {"enabled": true, "name": ""#,
            r#"guest-get-users", "success-response": true}, {"enabled": true, "name": "guest-get-host-nam"#,
            r#"e", "success-response": true}, {"enabled": false, "name": "guest-exec", "success-response""#,
            r#": true}, {"enabled": true, "name": "guest-exec-status", "success-response": true}, {"enabl"#,
            r#"ed": true, "name": "guest-get-memory-block-info", "success-response": true}, {"enabled": f"#,
            r#"alse, "name": "guest-set-memory-blocks", "success-response": true}, {"enabled": true, "nam"#,
            r#"e": "guest-get-memory-blocks", "success-response": true}, {"enabled": false, "name": "gues"#,
            r#"t-set-user-password", "success-response": true}, {"enabled": true, "name": "guest-get-fsin"#,
            r#"fo", "success-response": true}, {"enabled": true, "name": "guest-get-disks", "success-resp"#,
            r#"onse": true}, {"enabled": false, "name": "guest-set-vcpus", "success-response": true}, {"e"#,
            r#"nabled": true, "name": "guest-get-vcpus", "success-response": true}, {"enabled": true, "na"#,
            r#"me": "guest-network-get-interfaces", "success-response": true}, {"enabled": false, "name":"#,
            r#" "guest-suspend-hybrid", "success-response": false}, {"enabled": false, "name": "guest-sus"#,
            r#"pend-ram", "success-response": false}, {"enabled": false, "name": "guest-suspend-disk", "s"#,
            r#"uccess-response": false}, {"enabled": false, "name": "guest-fstrim", "success-response": t"#,
            r#"rue}, {"enabled": false, "name": "guest-fsfreeze-thaw", "success-response": true}, {"enabl"#,
            r#"ed": false, "name": "guest-fsfreeze-freeze-list", "success-response": true}, {"enabled": f"#,
            r#"alse, "name": "guest-fsfreeze-freeze", "success-response": true}, {"enabled": true, "name""#,
            r#": "guest-fsfreeze-status", "success-response": true}, {"enabled": true, "name": "guest-fil"#,
            r#"e-flush", "success-response": true}, {"enabled": true, "name": "guest-file-seek", "success"#,
            r#"-response": true}, {"enabled": false, "name": "guest-file-write", "success-response": true"#,
            r#"}, {"enabled": true, "name": "guest-file-read", "success-response": true}, {"enabled": tru"#,
            r#"e, "name": "guest-file-close", "success-response": true}, {"enabled": false, "name": "gues"#,
            r#"t-file-open", "success-response": true}, {"enabled": false, "name": "guest-shutdown", "suc"#,
            r#"cess-response": false}, {"enabled": true, "name": "guest-info", "success-response": true},"#,
            r#" {"enabled": false, "name": "guest-set-time", "success-response": true}, {"enabled": true,"#,
            r#" "name": "guest-get-time", "success-response": true}, {"enabled": true, "name": "guest-pin"#,
            r#"g", "success-response": true}, {"enabled": true, "name": "guest-sync", "success-response":"#,
            r#" true}, {"enabled": true, "name": "guest-sync-delimited", "success-response": true}]}}"#,
        );
        assert_eq!(json(&obj(&[("return", info)])), expected);
    }

    #[test]
    fn large_objects_keep_hash_order() {
        let mut object = Object::new();
        for i in 0..100 {
            object.insert(format!("k{i}"), Value::Int(i));
        }
        let text = json(&Value::Object(object.clone()));
        let mut expected: Vec<(u32, i64, String)> = object
            .iter()
            .enumerate()
            .map(|(n, (k, _))| (qdict_bucket(k), -(n as i64), k.to_owned()))
            .collect();
        expected.sort();
        let keys: Vec<String> = expected.into_iter().map(|(_, _, k)| k).collect();
        let mut at = 0;
        for key in keys {
            let needle = format!("\"{key}\": ");
            let found = text[at..].find(&needle).expect("every key is written");
            at += found + needle.len();
        }
    }
}
