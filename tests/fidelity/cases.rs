//! The byte sequences sent to both agents. Each case runs on a clean parser (after a resync)
//! and ends with a resync marker, so its reply stream is exactly the bytes between the two.

use qga_harness::internals::real_agent::safe_block_list;

/// How two reply streams are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// Byte for byte.
    Exact,
    /// Values that move between two asks (time, traffic counters) are masked: every run of
    /// digits is replaced by `0` on both sides before comparing.
    Shape,
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    /// Written one after the other; between two chunks the runner waits until the agent has
    /// read everything so far (a sync round trip is not possible mid-message, so it waits for
    /// the bytes to leave the socket buffer).
    pub chunks: Vec<Vec<u8>>,
    pub compare: Compare,
}

fn case(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        name: name.into(),
        chunks: vec![bytes.into()],
        compare: Compare::Exact,
    }
}

fn shape(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        compare: Compare::Shape,
        ..case(name, bytes)
    }
}

fn split(name: impl Into<String>, chunks: &[&[u8]]) -> Case {
    Case {
        name: name.into(),
        chunks: chunks.iter().map(|c| c.to_vec()).collect(),
        compare: Compare::Exact,
    }
}

fn exec(command: &str) -> String {
    format!(r#"{{"execute":"{command}"}}"#)
}

fn exec_args(command: &str, args: &str) -> String {
    format!(r#"{{"execute":"{command}","arguments":{args}}}"#)
}

const PING: &str = r#"{"execute":"guest-ping"}"#;

/// Commands the safe block list leaves enabled that read the guest and whose replies do not
/// move between two asks on an idle machine.
const STABLE_READS: &[&str] = &[
    "guest-ping",
    "guest-info",
    "guest-get-osinfo",
    "guest-get-timezone",
    "guest-get-host-name",
    "guest-get-users",
    "guest-get-vcpus",
    "guest-get-disks",
    "guest-get-memory-blocks",
    "guest-get-memory-block-info",
    "guest-fsfreeze-status",
    "guest-get-devices",
];

/// Read commands whose values move (clock, counters, disk usage).
const MOVING_READS: &[&str] = &[
    "guest-get-time",
    "guest-get-fsinfo",
    "guest-network-get-interfaces",
    "guest-get-diskstats",
    "guest-get-cpustats",
];

pub fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    sync_cases(&mut cases);
    sync_delimited_cases(&mut cases);
    stray_byte_cases(&mut cases);
    framing_cases(&mut cases);
    string_cases(&mut cases);
    dispatch_cases(&mut cases);
    id_echo_cases(&mut cases);
    argument_cases(&mut cases);
    command_cases(&mut cases);
    split_write_cases(&mut cases);
    limit_cases(&mut cases);
    cases
}

fn sync_cases(cases: &mut Vec<Case>) {
    for id in [
        "0",
        "1",
        "123",
        "-1",
        "-0",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "99999999999999999999999999999",
        "1e3",
        "1.0",
        "1.5",
        "\"abc\"",
        "\"1\"",
        "true",
        "null",
        "[]",
        "{}",
        "007",
    ] {
        cases.push(case(
            format!("sync id {id}"),
            exec_args("guest-sync", &format!(r#"{{"id":{id}}}"#)),
        ));
    }
    cases.push(case("sync without arguments", exec("guest-sync")));
    cases.push(case("sync empty arguments", exec_args("guest-sync", "{}")));
    cases.push(case("sync null arguments", exec_args("guest-sync", "null")));
    cases.push(case(
        "sync extra argument",
        exec_args("guest-sync", r#"{"id":1,"x":2}"#),
    ));
    cases.push(case(
        "sync with request id",
        r#"{"execute":"guest-sync","arguments":{"id":1},"id":"req-1"}"#,
    ));
    cases.push(case(
        "sync arguments before execute",
        r#"{"arguments":{"id":5},"execute":"guest-sync"}"#,
    ));
}

fn sync_delimited_cases(cases: &mut Vec<Case>) {
    let d = "guest-sync-delimited";
    cases.push(case("delimited 5", exec_args(d, r#"{"id":5}"#)));
    cases.push(case("delimited -1", exec_args(d, r#"{"id":-1}"#)));
    cases.push(case(
        "delimited with request id",
        format!(r#"{{"execute":"{d}","arguments":{{"id":5}},"id":"x"}}"#),
    ));
    cases.push(case("delimited missing id", exec(d)));
    cases.push(case("delimited string id", exec_args(d, r#"{"id":"a"}"#)));
    cases.push(case(
        "delimited id 2^63",
        exec_args(d, r#"{"id":9223372036854775808}"#),
    ));
    cases.push(case(
        "delimited then ping in one write",
        format!("{}{PING}", exec_args(d, r#"{"id":6}"#)),
    ));
    cases.push(case(
        "two delimited in one write",
        format!(
            "{}{}",
            exec_args(d, r#"{"id":7}"#),
            exec_args(d, r#"{"id":8}"#)
        ),
    ));
    let mut handshake = vec![0xff];
    handshake.extend_from_slice(exec_args(d, r#"{"id":9}"#).as_bytes());
    cases.push(case("standard handshake", handshake));
    let mut after_partial = br#"{"execute":"guest-ping", "arguments": {"#.to_vec();
    after_partial.push(0xff);
    after_partial.extend_from_slice(exec_args(d, r#"{"id":10}"#).as_bytes());
    cases.push(case("handshake after a partial object", after_partial));
}

fn with_byte_at(text: &str, at: usize, byte: u8) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.insert(at, byte);
    bytes
}

fn stray_byte_cases(cases: &mut Vec<Case>) {
    cases.push(case("lone FF", vec![0xff]));
    cases.push(case("three FF", vec![0xff, 0xff, 0xff]));
    cases.push(case("FF newline", vec![0xff, b'\n']));
    for byte in [
        0xfe_u8, 0x80, 0x04, 0x7f, 0x00, 0x01, 0x1b, b'A', b'%', b'+',
    ] {
        cases.push(case(format!("lone byte {byte:#04x}"), vec![byte]));
    }
    cases.push(case("e-acute outside a string", vec![0xc3, 0xa9]));
    // 0xFF and 0xFE in every position of a ping request, and 0x00 in some.
    for at in 0..=PING.len() {
        cases.push(case(
            format!("FF at {at} of ping"),
            with_byte_at(PING, at, 0xff),
        ));
    }
    for at in (0..=PING.len()).step_by(3) {
        cases.push(case(
            format!("FE at {at} of ping"),
            with_byte_at(PING, at, 0xfe),
        ));
        cases.push(case(
            format!("NUL at {at} of ping"),
            with_byte_at(PING, at, 0x00),
        ));
    }
    let sync12 = r#"{"execute":"guest-sync","arguments":{"id":1234}}"#;
    cases.push(case(
        "FF inside a number",
        with_byte_at(sync12, sync12.find("34").unwrap_or(0), 0xff),
    ));
    let tr = r#"{"execute":"guest-ping","id":true}"#;
    cases.push(case(
        "FF inside a keyword",
        with_byte_at(tr, tr.find("ue}").unwrap_or(0), 0xff),
    ));
    let mut discard = br#"{"execute":"guest-ping""#.to_vec();
    discard.push(0xff);
    discard.extend_from_slice(exec_args("guest-sync", r#"{"id":2}"#).as_bytes());
    cases.push(case("FF discards a partial object", discard));
}

fn framing_cases(cases: &mut Vec<Case>) {
    let rows: &[(&str, &str)] = &[
        (
            "two requests back to back",
            r#"{"execute":"guest-ping"}{"execute":"guest-sync","arguments":{"id":1}}"#,
        ),
        (
            "whitespace between requests",
            "{\"execute\":\"guest-ping\"} {\"execute\":\"guest-sync\",\"arguments\":{\"id\":2}}\n{\"execute\":\"guest-sync\",\"arguments\":{\"id\":3}}\r\n",
        ),
        ("leading whitespace", "\n\n \t\r\n  {\"execute\":\"guest-ping\"}"),
        ("whitespace only", " \n\t\r\n "),
        ("empty object", "{}"),
        ("arguments only", r#"{"arguments":{}}"#),
        ("array", "[1,2]"),
        ("empty array", "[]"),
        ("array of a request", r#"[{"execute":"guest-ping"}]"#),
        ("bare string", r#""hello""#),
        ("true", "true\n"),
        ("null", "null\n"),
        ("bare number then newline", "42\n"),
        ("number then request", r#"42{"execute":"guest-ping"}"#),
        ("bare keyword", "hello\n"),
        ("execute is a number", r#"{"execute": 1}"#),
        ("execute is null", r#"{"execute": null}"#),
        ("unexpected top-level member", r#"{"execute":"guest-ping","foo":1}"#),
        ("exec-oob", r#"{"exec-oob":"guest-ping"}"#),
        ("control member", r#"{"execute":"guest-ping","control":{}}"#),
        ("duplicate key", r#"{"execute":"guest-nope","execute":"guest-ping"}"#),
        ("single quotes", "{'execute':'guest-ping'}"),
        ("escaped command name", r#"{"execute":"guest-\u0070ing"}"#),
        ("trailing comma", r#"{"execute":"guest-ping",}"#),
        ("missing value", r#"{"execute":}"#),
        ("lone close brace", "}"),
        ("lone close bracket", "]"),
        ("empty member value", r#"{"a":,}"#),
        ("array trailing comma", "[1,]"),
        ("comma only object", "{,}"),
        ("missing colon", r#"{"execute" "guest-ping"}"#),
        ("key without value", r#"{"a"}"#),
        ("missing comma", r#"{"a":1 "b":2}"#),
        ("garbage after number", r#"{"execute":"guest-ping","id":12x}"#),
        ("list missing comma", "[1 2]"),
        ("number key", "{1:2}"),
        ("unquoted value", r#"{"execute":guest-ping}"#),
        ("unquoted key", r#"{execute:"guest-ping"}"#),
        ("extra close brace", r#"{"execute":"guest-ping"}}"#),
        ("trailing word", "{\"execute\":\"guest-ping\"} xyz\n"),
        ("percent value", r#"{"execute":"guest-ping","id":%d}"#),
        ("leading zero", r#"{"execute":"guest-ping","id":01}"#),
        ("plus sign", r#"{"execute":"guest-ping","id":+1}"#),
        ("upper-case keyword", r#"{"execute":"guest-ping","id":TRUE}"#),
        ("minus then object", r#"-{"execute":"guest-ping"}"#),
        ("dot then object", r#"1.{"execute":"guest-ping"}"#),
        ("exponent then object", r#"1e{"execute":"guest-ping"}"#),
        ("NUL after request", "{\"execute\":\"guest-ping\"}\u{0}"),
        ("NUL before request", "\u{0}{\"execute\":\"guest-ping\"}"),
        ("NUL inside a name", "{\"execute\":\"guest-p\u{0}ing\"}"),
        ("NUL after a key", "{\"execute\"\u{0}:\"guest-ping\"}"),
        ("case-sensitive command", r#"{"execute":"GUEST-PING"}"#),
        ("command with a space", r#"{"execute":"guest-ping "}"#),
        ("empty command", r#"{"execute":""}"#),
        ("unknown command", r#"{"execute":"guest-foo"}"#),
        ("upper-case member", r#"{"Execute":"guest-ping"}"#),
        ("nested empty containers", r#"{"execute":"guest-ping","id":{"a":[],"b":{}}}"#),
    ];
    for (name, bytes) in rows {
        cases.push(case(*name, *bytes));
    }
}

fn string_cases(cases: &mut Vec<Case>) {
    let ids: &[(&str, &[u8])] = &[
        ("escaped apostrophe", br#""a\'b""#),
        ("invalid escape", br#""a\xb""#),
        ("short unicode escape", br#""\u12""#),
        ("bad unicode escape", br#""\uZZZZ""#),
        ("lone high surrogate", br#""\ud800""#),
        ("lone low surrogate", br#""\udc00""#),
        ("unpaired surrogate", br#""\ud800\u0041""#),
        ("paired surrogate", br#""\ud83d\ude00""#),
        (
            "escapes",
            br#""q\"b\\s/\/ \b\f\n\r\t\u0001\u001f\u007f\u0080\u00e9\u20ac<>&'""#,
        ),
        ("raw UTF-8", b"\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""),
        ("invalid UTF-8 C3 paren", b"\"\xc3(\""),
        ("invalid UTF-8 lone continuation", b"\"\x80\""),
        ("overlong slash", b"\"\xc0\xaf\""),
        ("encoded surrogate", b"\"\xed\xa0\x80\""),
        ("modified UTF-8 NUL", b"\"a\xc0\x80b\""),
        ("escaped NUL", br#""a\u0000b""#),
        ("raw control byte", b"\"a\x01b\""),
        ("raw tab", b"\"a\tb\""),
        ("raw newline", b"\"a\nb\""),
        ("single-quoted with double quote", br#"'say "hi"'"#),
        ("empty string", br#""""#),
        ("DEL raw", b"\"a\x7fb\""),
        ("four-byte max", b"\"\xf4\x8f\xbf\xbf\""),
        ("beyond U+10FFFF", b"\"\xf4\x90\x80\x80\""),
    ];
    for (name, id) in ids {
        let mut bytes = br#"{"execute":"guest-ping","id":"#.to_vec();
        bytes.extend_from_slice(id);
        bytes.push(b'}');
        cases.push(case(format!("id string: {name}"), bytes));
    }
    cases.push(case(
        "invalid UTF-8 in the command name",
        b"{\"execute\":\"guest-p\xc3(ing\"}".to_vec(),
    ));
}

fn dispatch_cases(cases: &mut Vec<Case>) {
    let rows: &[(&str, &str)] = &[
        ("foo before execute", r#"{"foo":1,"execute":"guest-ping"}"#),
        ("execute number and foo", r#"{"execute":1,"foo":2}"#),
        (
            "arguments number and foo",
            r#"{"execute":"guest-ping","arguments":1,"foo":2}"#,
        ),
        (
            "unknown command with bad arguments",
            r#"{"execute":"guest-nope","arguments":1}"#,
        ),
        (
            "arguments array",
            r#"{"execute":"guest-ping","arguments":[]}"#,
        ),
        (
            "arguments number",
            r#"{"execute":"guest-ping","arguments":1}"#,
        ),
        (
            "arguments null",
            r#"{"execute":"guest-ping","arguments":null}"#,
        ),
        (
            "arguments string",
            r#"{"execute":"guest-ping","arguments":"x"}"#,
        ),
        (
            "ping empty arguments",
            r#"{"execute":"guest-ping","arguments":{}}"#,
        ),
        (
            "ping unexpected argument",
            r#"{"execute":"guest-ping","arguments":{"x":1}}"#,
        ),
        (
            "ping unexpected foo",
            r#"{"execute":"guest-ping","arguments":{"foo":42}}"#,
        ),
        (
            "disabled beats bad arguments",
            r#"{"execute":"guest-set-time","arguments":{"time":"x"}}"#,
        ),
        ("lacks execute with id", r#"{"id":3,"arguments":{}}"#),
        (
            "unknown command with id",
            r#"{"execute":"guest-foo","id":4}"#,
        ),
        (
            "disabled command with id",
            r#"{"execute":"guest-shutdown","id":5}"#,
        ),
        ("exec-oob with id", r#"{"exec-oob":"guest-ping","id":6}"#),
        (
            "several unexpected members",
            r#"{"execute":"guest-ping","zz":1,"aa":2,"mm":3}"#,
        ),
        (
            "sync missing id, extra foo",
            r#"{"execute":"guest-sync","arguments":{"foo":2}}"#,
        ),
        (
            "sync wrong type and extra",
            r#"{"execute":"guest-sync","arguments":{"id":"x","foo":1}}"#,
        ),
        (
            "sync case-sensitive id",
            r#"{"execute":"guest-sync","arguments":{"ID":1}}"#,
        ),
    ];
    for (name, bytes) in rows {
        cases.push(case(*name, *bytes));
    }
    for (i, extra) in [
        r#""foo":2,"bar":3"#,
        r#""zz":3,"aa":2"#,
        r#""a":1,"b":2,"c":3"#,
        r#""c":1,"b":2,"a":3"#,
        r#""xyz":1,"count":2,"buf":3,"handle2":4"#,
        r#""q":1,"w":2,"e":3,"r":4,"t":5,"y":6,"u":7,"i":8,"o":9"#,
        r#""aa":1,"aq":2"#,
        r#""aq":1,"aa":2"#,
        r#""pid":1"#,
        r#""id2":1,"id3":2,"id4":3"#,
    ]
    .iter()
    .enumerate()
    {
        cases.push(case(
            format!("leftover arguments {i}"),
            exec_args("guest-sync", &format!(r#"{{"id":1,{extra}}}"#)),
        ));
    }
}

fn id_echo_cases(cases: &mut Vec<Case>) {
    for id in [
        "42",
        "\"abc\"",
        "null",
        "true",
        "false",
        "\"\"",
        "{}",
        "[1,\"a\",null]",
        "1.5",
        "0.1",
        "1e3",
        "1E400",
        "-1E400",
        "99999999999999999999999",
        "18446744073709551615",
        "-9223372036854775808",
        "-0",
        "-0.0",
        "1e-7",
        "123456789012345678",
        "0.000001",
        "1e21",
        "{\"aa\":1,\"aq\":2}",
        "{\"aq\":2,\"aa\":1}",
        "{\"b\":1,\"a\":2,\"c\":{\"z\":0,\"y\":[]}}",
        "[[[[[]]]]]",
        "{\"return\":1,\"error\":2,\"id\":3}",
    ] {
        cases.push(case(
            format!("id echo {id}"),
            format!(r#"{{"execute":"guest-ping","id":{id}}}"#),
        ));
    }
    cases.push(case(
        "id before execute",
        r#"{"id":7,"execute":"guest-ping"}"#,
    ));
    cases.push(case(
        "id on an error",
        r#"{"execute":"guest-ping","arguments":{"x":1},"id":[true]}"#,
    ));
}

fn argument_cases(cases: &mut Vec<Case>) {
    let rows: &[(&str, &str, &str)] = &[
        (
            "file-read unknown handle",
            "guest-file-read",
            r#"{"handle":12345}"#,
        ),
        (
            "file-read negative count",
            "guest-file-read",
            r#"{"handle":12345,"count":-1}"#,
        ),
        (
            "file-read string handle",
            "guest-file-read",
            r#"{"handle":"x"}"#,
        ),
        (
            "file-read float count",
            "guest-file-read",
            r#"{"handle":1,"count":1.5}"#,
        ),
        (
            "file-read missing handle",
            "guest-file-read",
            r#"{"count":1}"#,
        ),
        (
            "file-read extra",
            "guest-file-read",
            r#"{"handle":1,"extra":1}"#,
        ),
        (
            "file-close unknown",
            "guest-file-close",
            r#"{"handle":12345}"#,
        ),
        (
            "file-flush unknown",
            "guest-file-flush",
            r#"{"handle":12345}"#,
        ),
        (
            "seek whence int",
            "guest-file-seek",
            r#"{"handle":12345,"offset":0,"whence":0}"#,
        ),
        (
            "seek whence set",
            "guest-file-seek",
            r#"{"handle":12345,"offset":0,"whence":"set"}"#,
        ),
        (
            "seek whence bogus",
            "guest-file-seek",
            r#"{"handle":12345,"offset":0,"whence":"bogus"}"#,
        ),
        (
            "seek whence bool",
            "guest-file-seek",
            r#"{"handle":12345,"offset":0,"whence":true}"#,
        ),
        (
            "seek whence float",
            "guest-file-seek",
            r#"{"handle":12345,"offset":0,"whence":1.5}"#,
        ),
        (
            "seek whence missing",
            "guest-file-seek",
            r#"{"handle":12345,"offset":0}"#,
        ),
        (
            "seek offset missing",
            "guest-file-seek",
            r#"{"handle":12345,"whence":"end"}"#,
        ),
        (
            "seek whence 7",
            "guest-file-seek",
            r#"{"handle":12345,"offset":0,"whence":7}"#,
        ),
        (
            "exec-status unknown pid",
            "guest-exec-status",
            r#"{"pid":999999}"#,
        ),
        ("exec-status pid 0", "guest-exec-status", r#"{"pid":0}"#),
        (
            "exec-status string pid",
            "guest-exec-status",
            r#"{"pid":"1"}"#,
        ),
        ("exec-status no pid", "guest-exec-status", "{}"),
        (
            "ssh keys unknown user",
            "guest-ssh-get-authorized-keys",
            r#"{"username":"no-such-user-qga-probe"}"#,
        ),
        (
            "ssh keys number user",
            "guest-ssh-get-authorized-keys",
            r#"{"username":1}"#,
        ),
        ("ssh keys no user", "guest-ssh-get-authorized-keys", "{}"),
        ("osinfo with an argument", "guest-get-osinfo", r#"{"a":1}"#),
        ("info with an argument", "guest-info", r#"{"version":1}"#),
        (
            "blocked exec with arguments",
            "guest-exec",
            r#"{"path":"/bin/true"}"#,
        ),
        (
            "blocked set-vcpus bad arguments",
            "guest-set-vcpus",
            r#"{"vcpus":1}"#,
        ),
    ];
    for (name, command, args) in rows {
        cases.push(case(*name, exec_args(command, args)));
    }
}

fn command_cases(cases: &mut Vec<Case>) {
    for command in STABLE_READS {
        cases.push(case(format!("read {command}"), exec(command)));
        cases.push(case(
            format!("read {command} with id"),
            format!(r#"{{"execute":"{command}","id":"r-{command}"}}"#),
        ));
    }
    for command in MOVING_READS {
        cases.push(shape(format!("read {command}"), exec(command)));
    }
    for command in safe_block_list() {
        cases.push(case(format!("blocked {command}"), exec(command)));
    }
}

fn split_write_cases(cases: &mut Vec<Case>) {
    cases.push(split(
        "request in four writes",
        &[
            br#"{"exec"#,
            br#"ute":"guest-sy"#,
            br#"nc","arguments":{"id":"#,
            b"77}}",
        ],
    ));
    cases.push(split(
        "number split across writes",
        &[
            br#"{"execute":"guest-sync","arguments":{"id":1"#,
            b"2",
            b"3",
            b"}",
            b"}",
        ],
    ));
    cases.push(split("bare number then newline later", &[b"42", b"\n"]));
    cases.push(split(
        "partial then FF then request",
        &[
            br#"{"execute":"guest-sync", "arguments": {"id": 7"#,
            b"\xff",
            br#"{"execute":"guest-ping"}"#,
        ],
    ));
    for at in [1, 5, 12, 23] {
        let (a, b) = PING.as_bytes().split_at(at);
        cases.push(split(format!("ping split at {at}"), &[a, b]));
    }
    cases.push(split(
        "escape split across writes",
        &[br#"{"execute":"guest-ping","id":"a\"#, br#"u00e9"}"#],
    ));
    cases.push(split(
        "UTF-8 split across writes",
        &[b"{\"execute\":\"guest-ping\",\"id\":\"\xe2\x82", b"\xac\"}"],
    ));
}

fn limit_cases(cases: &mut Vec<Case>) {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    cases.push(case("nesting 1024", nest(1024)));
    cases.push(case("nesting 1025", nest(1025)));
    cases.push(case("nesting 2000", nest(2000)));
    cases.push(case(
        "nesting 2000 inside arguments",
        format!(
            r#"{{"execute":"guest-ping","arguments":{{"x":{}}}}}"#,
            nest(2000)
        ),
    ));
    cases.push(case(
        "object nesting 2000",
        format!("{}1{}", r#"{"a":"#.repeat(2000), "}".repeat(2000)),
    ));
    cases.push(case(
        "1 MiB id echoed",
        format!(
            r#"{{"execute":"guest-ping","id":"{}"}}"#,
            "A".repeat(1 << 20)
        ),
    ));
    cases.push(case(
        "1 MiB unexpected argument",
        format!(
            r#"{{"execute":"guest-ping","arguments":{{"pad":"{}"}}}}"#,
            "A".repeat(1 << 20)
        ),
    ));
    cases.push(case(
        "1 MiB of spaces then ping",
        format!("{}{PING}", " ".repeat(1 << 20)),
    ));
    cases.push(case(
        "string token over 64 MiB",
        format!("\"{}\"", "A".repeat((64 << 20) + 16)),
    ));
    cases.push(case(
        "array of 2^20+1 elements",
        format!("[{}0]", "0,".repeat(1 << 20)),
    ));
}
