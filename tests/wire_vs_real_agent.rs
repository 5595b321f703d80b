//! Byte-level cross-check of the wire module against the real qemu-ga.
//!
//! Each case is sent to the real agent on a fresh connection, followed by `0xFF` and a
//! `guest-sync-delimited` whose reply delimits the case. The same bytes go through
//! [`Streamer`]; every error it produces must match the agent's reply line byte for byte
//! (through [`write_json`]), every non-object value must get the not-an-object error, and
//! every object value must get a reply line that is not a parse error. Values are the agent
//! module's business; here they only prove that framing matches.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::Duration;

use qga_harness::internals::real_agent::RealAgent;
use qga_harness::wire::{write_json, Object, Parsed, Streamer, Value};
use rand::{Rng, SeedableRng};

/// Long enough for the 64 MiB cases on a slow machine.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

fn sync_delimited(id: u64) -> Vec<u8> {
    format!(r#"{{"execute":"guest-sync-delimited","arguments":{{"id":{id}}}}}"#).into_bytes()
}

fn delimiter(id: u64) -> Vec<u8> {
    format!("\u{FF}{{\"return\": {id}}}\n")
        .chars()
        .map(|c| u32::from(c) as u8)
        .collect()
}

fn error_line(desc: &str) -> Vec<u8> {
    let error = Object::new()
        .with("class", Value::from("GenericError"))
        .with("desc", Value::from(desc));
    let reply = Value::Object(Object::new().with("error", Value::Object(error)));
    let mut line = Vec::new();
    write_json(&reply, &mut line);
    line.push(b'\n');
    line
}

/// Reads until the stream ends with `until`; returns everything before it.
fn read_until(stream: &mut UnixStream, until: &[u8]) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !got.ends_with(until) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "agent closed the connection",
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
    got.truncate(got.len() - until.len());
    Ok(got)
}

/// Runs one case on a fresh connection; returns the reply bytes before the delimiter.
fn real_replies(socket: &Path, input: &[u8], id: u64) -> io::Result<Vec<u8>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(CASE_TIMEOUT))?;
    // Resynchronise whatever an earlier connection left behind, and skip its replies.
    let mut resync = vec![0xFF];
    resync.extend(sync_delimited(id * 2));
    stream.write_all(&resync)?;
    read_until(&mut stream, &delimiter(id * 2))?;

    let mut reader = stream.try_clone()?;
    let end = delimiter(id * 2 + 1);
    // Read while writing: a large case's replies could otherwise fill both socket buffers.
    let replies = thread::spawn(move || read_until(&mut reader, &end));
    stream.write_all(input)?;
    let mut trailer = vec![0xFF];
    trailer.extend(sync_delimited(id * 2 + 1));
    stream.write_all(&trailer)?;
    replies
        .join()
        .map_err(|_| io::Error::other("reader thread panicked"))?
}

fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split_inclusive(|&b| b == b'\n').collect::<Vec<_>>()
}

fn show(bytes: &[u8]) -> String {
    let text: String = bytes.escape_ascii().to_string();
    if text.len() > 300 {
        format!("{}… ({} bytes)", &text[..300], bytes.len())
    } else {
        text
    }
}

/// Compares the agent's replies for `input` with the streamer's items; returns a
/// description of the first difference.
fn compare(input: &[u8], trailer_id: u64, replies: &[u8]) -> Result<(), String> {
    let mut stream = input.to_vec();
    stream.push(0xFF);
    stream.extend(sync_delimited(trailer_id));
    let mut items = Vec::new();
    Streamer::new().feed(&stream, &mut |item| items.push(item));
    match items.pop() {
        Some(Parsed::Value(Value::Object(ref o))) if o.get("execute").is_some() => {}
        other => {
            return Err(format!(
                "the trailer did not parse as the last value: {other:?}"
            ))
        }
    }
    let got = lines(replies);
    if got.len() != items.len() {
        return Err(format!(
            "{} reply lines from the agent, {} items from the streamer\n  agent: {}\n  items: {:?}",
            got.len(),
            items.len(),
            show(replies),
            items
        ));
    }
    let parse_error_prefix = br#"{"error": {"class": "GenericError", "desc": "JSON "#;
    let not_object = error_line("QMP input must be a JSON object");
    for (n, (line, item)) in got.iter().zip(&items).enumerate() {
        match item {
            Parsed::Error(desc) => {
                let expected = error_line(desc);
                if *line != expected.as_slice() {
                    return Err(format!(
                        "line {n}: agent {}\n  expected {}",
                        show(line),
                        show(&expected)
                    ));
                }
            }
            Parsed::Value(Value::Object(_)) => {
                if line.starts_with(parse_error_prefix) {
                    return Err(format!("line {n}: agent sent a parse error {}", show(line)));
                }
            }
            Parsed::Value(_) => {
                if *line != not_object.as_slice() {
                    return Err(format!(
                        "line {n}: agent {} for a non-object value",
                        show(line)
                    ));
                }
            }
        }
    }
    Ok(())
}

fn repeat(parts: &[(&[u8], usize)]) -> Vec<u8> {
    parts
        .iter()
        .flat_map(|(bytes, n)| bytes.repeat(*n))
        .collect()
}

/// Parse-level cases: the measured rows of qemu-ga 7.2's behaviour, and more lexer paths.
fn table_cases() -> Vec<(String, Vec<u8>)> {
    let rows: &[&[u8]] = &[
        br#"{"execute":"guest-sync","arguments":{"id":007}}"#,
        b"\xff",
        b"\xff\xff\xff",
        b"\xff\n",
        b"\xff{\"execute\":\"guest-ping\"}",
        b"{\"execute\":\"guest-ping\"}\xff",
        b"{\"execute\":\"guest-ping\"\xff{\"execute\":\"guest-sync\",\"arguments\":{\"id\":2}}",
        b"{\"execute\":\"guest-pi\xffng\"}",
        b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":12\xff34}}",
        b"{\"execute\":\"guest-ping\",\"id\":tr\xffue}",
        b"{\"execute\":\"guest-ping\", \"arguments\": {\xff{\"execute\":\"guest-ping\"}",
        b"\xfe",
        b"\x80",
        b"\xc3\xa9",
        b"\x04",
        b"\x7f",
        b"\x00",
        br#"{"execute":"guest-ping"}{"execute":"guest-sync","arguments":{"id":1}}"#,
        b"\n\n \t\r\n  {\"execute\":\"guest-ping\"}",
        b" \t\r\n \n",
        b"{}",
        br#"{"arguments":{}}"#,
        b"[1,2]",
        b"[]",
        br#"[{"execute":"guest-ping"}]"#,
        br#""hello""#,
        b"true\n",
        b"null\n",
        b"42",
        b"42\n",
        br#"42{"execute":"guest-ping"}"#,
        b"hello\n",
        br#"{"execute": 1}"#,
        br#"{"execute":"guest-nope","execute":"guest-ping"}"#,
        b"{'execute':'guest-ping'}",
        br#"{"execute":"guest-\u0070ing"}"#,
        br#"{"execute":"guest-ping","id":"a\'b"}"#,
        br#"{"execute":"guest-ping","id":"a\xb"}"#,
        br#"{"execute":"guest-ping","id":"\u12"}"#,
        br#"{"execute":"guest-ping","id":"\u1"}"#,
        br#"{"execute":"guest-ping","id":"\uZZZZ"}"#,
        br#"{"execute":"guest-ping","id":"\ud800"}"#,
        br#"{"execute":"guest-ping","id":"\udc00"}"#,
        br#"{"execute":"guest-ping","id":"\ud800\u0041"}"#,
        br#"{"execute":"guest-ping","id":"\ud800\uZZZZ"}"#,
        br#"{"execute":"guest-ping","id":"\uFFFF"}"#,
        br#"{"execute":"guest-ping","id":"\uFDD0"}"#,
        br#"{"execute":"guest-ping","id":"\uDBFF\uDFFF"}"#,
        br#"{"execute":"guest-ping","id":"\uD83D\uDE00"}"#,
        br#"{"execute":"guest-ping","id":"q\"b\\s/\/ \b\f\n\r\t\u0001\u001f\u007f\u0080\u00e9\u20ac<>&'"}"#,
        b"{\"execute\":\"guest-ping\",\"id\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}",
        b"{\"execute\":\"guest-ping\",\"id\":\"\xc3(\"}",
        b"{\"execute\":\"guest-ping\",\"id\":\"\x80\"}",
        b"{\"execute\":\"guest-ping\",\"id\":\"\xc0\xaf\"}",
        b"{\"execute\":\"guest-ping\",\"id\":\"\xed\xa0\x80\"}",
        b"{\"execute\":\"guest-ping\",\"id\":\"\xef\xbf\xbf\"}",
        b"{\"execute\":\"guest-p\xc3(ing\"}",
        b"{\"execute\":\"guest-ping\",\"id\":\"a\xc0\x80b\"}",
        b"{\"execute\":\"guest-ping\",\"id\":\"a\x01b\"}",
        b"{\"execute\":\"guest-ping\",\"id\":\"a\tb\"}",
        b"{\"execute\":\"guest-ping\",\"id\":\"a\nb\"}",
        b"{\"execute\":\"guest-ping\"}\x00",
        b"\x00{\"execute\":\"guest-ping\"}",
        b"{\"execute\":\"guest-p\x00ing\"}",
        b"{\"execute\"\x00:\"guest-ping\"}",
        br#"{"execute":"guest-ping",}"#,
        br#"{"execute":}"#,
        b"}",
        b"]",
        br#"{"a":,}"#,
        b"[1,]",
        b"{,}",
        br#"{"execute" "guest-ping"}"#,
        br#"{"a"}"#,
        br#"{"a":1 "b":2}"#,
        br#"{"execute":"guest-ping","id":12x}"#,
        b"[1 2]",
        b"{1:2}",
        br#"{"execute":guest-ping}"#,
        br#"{execute:"guest-ping"}"#,
        br#"{"execute":"guest-ping"}}"#,
        b"{\"execute\":\"guest-ping\"} xyz\n",
        br#"{"execute":"guest-sync","arguments":{"id":%d}}"#,
        br#"{"execute":"guest-sync","arguments":{"id":01}}"#,
        br#"{"execute":"guest-sync","arguments":{"id":+1}}"#,
        br#"{"execute":"guest-sync","arguments":{"id":TRUE}}"#,
        br#"-{"execute":"guest-ping"}"#,
        br#"1.{"execute":"guest-ping"}"#,
        br#"1e{"execute":"guest-ping"}"#,
        br#"{"execute":"guest-ping"{"execute":"guest-sync","arguments":{"id":6}}{"execute":"guest-sync","arguments":{"id":7}}}"#,
        b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":\"ab{\"execute\":\"guest-sync\",\"arguments\":{\"id\":9}}",
        b"\"a\\\xff",
        b"\"a\\",
        b"\"abc",
        b"'abc",
        b"trueX",
        b"tr",
        b"-",
        b"1.",
        b"1e",
        b"1e+",
        b"[0e5]",
        b"[0E5]",
        b"[-0e1]",
        b"[0.e1]",
        b"[1.5E+3,1e-2,2E5]",
        b"[-0,-1.5e-3,-7]",
        b"[-0.0]",
        b"%abc\tdef\nnull ",
        b"%abc\x01",
        b"%abc",
        br#"['a"b']"#,
        b"[}",
        b"[{]}",
        b"[1}",
        br#"{"a":1]"#,
        br#"{[1]:2}"#,
        br#"{[1 2]:2}"#,
        br#"{"a":1,"a":[1 2]}"#,
        b"{true:1}",
        b"{tru:1}",
        b"\"\xc3\xa9\x01",
        b"\"\xc0\x80\x01",
        b"\"\xf0\x9f\x98\x01",
        b"\"\xfc\x84\x80\x80\x80\x80\x01",
        b"\"\xef\xbf\xbf\x01",
        br#"{"a\u0000":1}"#,
        br#"{"execute":"guest-ping","id":1.5}"#,
        br#"{"execute":"guest-ping","id":1E400}"#,
        br#"{"execute":"guest-ping","id":99999999999999999999999}"#,
        br#"{"execute":"guest-sync","arguments":{"id":-0}}"#,
        b"\x1b[A",
        b"\r\x0b\x0c",
    ];
    let mut cases: Vec<(String, Vec<u8>)> =
        rows.iter().map(|row| (show(row), row.to_vec())).collect();
    let keyword = "k".repeat(2000);
    cases.push((
        "long invalid keyword".into(),
        format!("[{keyword}]").into_bytes(),
    ));
    cases.push((
        "long stray token".into(),
        format!("\"{}\x01", "é".repeat(3000)).into_bytes(),
    ));
    cases.push(("depth 1024".into(), repeat(&[(b"[", 1024), (b"]", 1024)])));
    cases.push(("depth 1025".into(), repeat(&[(b"[", 1025), (b"]", 1025)])));
    cases.push(("depth 2000".into(), repeat(&[(b"[", 2000), (b"]", 2000)])));
    cases.push((
        "depth 2000 in arguments".into(),
        repeat(&[
            (br#"{"execute":"guest-ping","arguments":"#, 1),
            (b"[", 2000),
            (b"]", 2000),
            (b"}", 1),
        ]),
    ));
    cases.push((
        "nested objects 2000".into(),
        repeat(&[(br#"{"a":"#, 2000), (b"1", 1), (b"}", 2000)]),
    ));
    cases.push((
        "string token of 64 MiB + 16".into(),
        repeat(&[
            (br#"{"execute":"guest-ping","id":""#, 1),
            (b"A", (64 << 20) + 16),
            (br#""}"#, 1),
        ]),
    ));
    cases.push((
        "number token of 64 MiB + 5".into(),
        repeat(&[(b"[", 1), (b"7", (64 << 20) + 5), (b"]", 1)]),
    ));
    cases.push((
        "array of 2^20 + 1 elements".into(),
        repeat(&[(b"[", 1), (b"1,", 1 << 20), (b"1]", 1)]),
    ));
    for second in [(32 << 20) - 2, (32 << 20) - 5, (32 << 20) - 6] {
        cases.push((
            format!("message of two strings, second {second} bytes"),
            repeat(&[
                (b"[\"", 1),
                (b"B", (32 << 20) - 2),
                (b"\",\"", 1),
                (b"C", second),
                (b"\"]", 1),
            ]),
        ));
    }
    cases
}

/// Random inputs drawn mostly from JSON's own alphabet, with stray and UTF-8 bytes mixed in.
fn random_cases(count: usize) -> Vec<(String, Vec<u8>)> {
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"\"",
        b"'",
        b"\\",
        b" ",
        b"\n",
        b"\t",
        b"0",
        b"1",
        b"9",
        b"-",
        b".",
        b"e",
        b"E",
        b"+",
        b"true",
        b"null",
        b"fals",
        b"x",
        b"\"execute\"",
        b"\"guest-ping\"",
        b"\"id\"",
        b"\\u00e9",
        b"\\ud83d\\ude00",
        b"\\u",
        b"\xff",
        b"\xfe",
        b"\x00",
        b"\x01",
        b"\x7f",
        b"\xc3\xa9",
        b"\xc3",
        b"\xa9",
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\xf0\x9f\x98\x80",
        b"\xef\xbf\xbe",
        b"A",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x51DE);
    (0..count)
        .map(|n| {
            let input: Vec<u8> = if n % 3 == 2 {
                // Any bytes at all.
                let len = rng.random_range(1..200);
                (0..len).map(|_| rng.random::<u8>()).collect()
            } else {
                let len = rng.random_range(1..40);
                (0..len)
                    .flat_map(|_| PIECES[rng.random_range(0..PIECES.len())].iter().copied())
                    .collect()
            };
            (format!("random #{n}: {}", show(&input)), input)
        })
        .collect()
}

#[test]
fn streamer_errors_match_the_real_agent_byte_for_byte() {
    let agent = RealAgent::start(&[]).expect(
        "this test needs the real qemu-ga (Debian package qemu-guest-agent, or QGA_HARNESS_QEMU_GA)",
    );
    let mut cases = table_cases();
    cases.extend(random_cases(450));
    let mut failures = Vec::new();
    for (n, (name, input)) in cases.iter().enumerate() {
        let id = 1_000_000 + n as u64;
        match real_replies(agent.socket(), input, id) {
            Ok(replies) => {
                if let Err(difference) = compare(input, id * 2 + 1, &replies) {
                    failures.push(format!("case {name}: {difference}"));
                }
            }
            Err(err) => failures.push(format!("case {name}: talking to the agent failed: {err}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from the real agent:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn random_id(rng: &mut rand::rngs::StdRng, depth: u32) -> Value {
    const CHARS: &[char] = &[
        'a',
        'q',
        'Z',
        '"',
        '\\',
        '/',
        '\'',
        '\0',
        '\u{1}',
        '\u{8}',
        '\t',
        '\n',
        '\u{1f}',
        '\u{7f}',
        '\u{80}',
        '\u{e9}',
        '\u{7ff}',
        '\u{800}',
        '\u{20ac}',
        '\u{fdd0}',
        '\u{fffd}',
        '\u{ffff}',
        '\u{10000}',
        '\u{1f600}',
        '\u{10fffd}',
        ' ',
        '<',
        '&',
    ];
    let text = |rng: &mut rand::rngs::StdRng, max: usize| -> String {
        let len = rng.random_range(0..max);
        (0..len)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())])
            .collect()
    };
    let kinds = if depth >= 3 { 8 } else { 10 };
    match rng.random_range(0..kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => Value::Int(rng.random()),
        3 => Value::from(rng.random::<u64>()),
        4 => Value::Int(rng.random_range(-1000..1000)),
        5 => loop {
            let f = f64::from_bits(rng.random());
            if f.is_finite() {
                break Value::Float(f);
            }
        },
        6 => Value::Float(f64::from(rng.random_range(-100_000..100_000i32)) / 64.0),
        7 => Value::String(text(rng, 10)),
        8 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_id(rng, depth + 1))
                .collect(),
        ),
        _ => {
            // Short keys from a small alphabet share QDict buckets often (`aa` and `aq` do).
            let mut object = Object::new();
            for _ in 0..rng.random_range(0..12) {
                let key: String = (0..rng.random_range(1..3))
                    .map(|_| ['a', 'q', 'b', 'r', 'c'][rng.random_range(0..5)])
                    .collect();
                object.insert(key, random_id(rng, depth + 1));
            }
            if rng.random_range(0..4) == 0 {
                object.insert(text(rng, 4), Value::Null);
            }
            Value::Object(object)
        }
    }
}

/// A JSON number literal: int64, uint64 or double by QEMU's rules, with up to 40 digits so
/// that `strtod` must round.
fn random_number(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let digits = |rng: &mut rand::rngs::StdRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect()
    };
    let mut text = String::new();
    if rng.random() {
        text.push('-');
    }
    let zero = rng.random_range(0..8) == 0;
    if zero {
        text.push('0');
    } else {
        text.push(char::from(b'1' + rng.random_range(0..9u8)));
        let n = rng.random_range(0..40);
        text.push_str(&digits(rng, n));
    }
    let fraction = rng.random();
    if fraction {
        text.push('.');
        let n = rng.random_range(1..30);
        text.push_str(&digits(rng, n));
    }
    // QEMU's lexer ends a lone `0` at an `e`: `0e5` is not one number (a parse case).
    if rng.random() && (fraction || !zero) {
        text.push(if rng.random() { 'e' } else { 'E' });
        match rng.random_range(0..3) {
            0 => text.push('+'),
            1 => text.push('-'),
            _ => {}
        }
        let n = rng.random_range(1..4);
        text.push_str(&digits(rng, n));
    }
    text.into_bytes()
}

/// qemu-ga echoes a request's `id` as it parsed it, so random ids test the writer against
/// the real one byte for byte: QDict key order with bucket collisions, `%.17g`, integer
/// classes and string escapes.
#[test]
fn writer_matches_the_real_agent_echo_of_random_ids() {
    let agent = RealAgent::start(&[]).expect(
        "this test needs the real qemu-ga (Debian package qemu-guest-agent, or QGA_HARNESS_QEMU_GA)",
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xEC40);
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for n in 0..3000 {
        let mut request = br#"{"execute":"guest-ping","id":"#.to_vec();
        if n % 3 == 2 {
            request.extend(random_number(&mut rng));
        } else {
            write_json(&random_id(&mut rng, 0), &mut request);
        }
        request.push(b'}');
        // The reply carries the id as parsed: the streamer's reading of the request.
        let mut items = Vec::new();
        Streamer::new().feed(&request, &mut |item| items.push(item));
        let [Parsed::Value(Value::Object(parsed))] = items.as_slice() else {
            panic!("request did not parse: {items:?}");
        };
        let id = parsed.get("id").cloned().expect("the id member");
        let reply = Object::new()
            .with("return", Value::Object(Object::new()))
            .with("id", id);
        let mut line = Vec::new();
        write_json(&Value::Object(reply), &mut line);
        line.push(b'\n');
        expected.push(line);
        requests.extend_from_slice(&request);
    }
    let replies = real_replies(agent.socket(), &requests, 1).expect("the agent replies");
    let got = lines(&replies);
    // The trailing 0xFF of the delimiting step adds one error line.
    assert_eq!(got.len(), expected.len() + 1);
    for (n, (line, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            show(line),
            show(want),
            "reply {n} differs from the writer's bytes"
        );
    }
}
