//! The dispatcher against the real qemu-ga: every dispatch-level request is sent to a real
//! agent (read-only, the safe block list) and fed, as the same bytes, to the streamer and a
//! `Dispatcher` configured with the same block list; the reply bytes must be identical.
//!
//! The first table holds requests that never reach the guest (every error path, the
//! agent's own commands, blocked commands, id echo, argument checks), run over the default
//! profile. The second runs commands on a guest captured from that same real agent: the
//! read-only commands whose replies do not move, and the guest's own error paths.

#[path = "fidelity/session.rs"]
mod session;

use qga_harness::agent::{AgentConfig, AgentVersion, Dispatcher};
use qga_harness::guest::capture::{capture, CaptureOptions};
use qga_harness::guest::{Guest, Profile};
use qga_harness::internals::real_agent::{safe_block_list, RealAgent};
use qga_harness::wire::Streamer;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use session::Session;

/// One request, and whether its reply can be compared byte for byte.
struct Case {
    name: String,
    bytes: Vec<u8>,
    /// False for replies with values that move between two asks (disk usage): their digits
    /// are masked on both sides.
    exact: bool,
}

impl Case {
    fn exact(request: String) -> Case {
        Case {
            name: request.clone(),
            bytes: request.into_bytes(),
            exact: true,
        }
    }
}

/// Replaces every run of digits by one `0`.
fn mask_digits(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if !b.is_ascii_digit() {
            out.push(b);
        } else if out.last().is_none_or(|l: &u8| !l.is_ascii_digit()) {
            out.push(b'0');
        }
    }
    out
}

fn safe_config() -> AgentConfig {
    AgentConfig {
        version: AgentVersion::V7_2_22,
        block_rpcs: safe_block_list().iter().map(|s| (*s).to_owned()).collect(),
        allow_rpcs: None,
    }
}

/// The bytes our streamer and dispatcher write for `input`, followed by the 0xFF the
/// session sends before its marker (the real agent answers it with a stray error, which
/// the session returns as part of the case).
fn ours(dispatcher: &mut Dispatcher, guest: &mut Guest, input: &[u8]) -> Vec<u8> {
    let mut streamer = Streamer::new();
    let mut out = Vec::new();
    let mut bytes = input.to_vec();
    bytes.push(0xFF);
    streamer.feed(&bytes, &mut |parsed| {
        if let Some(reply) = dispatcher.dispatch(parsed, guest).reply {
            out.extend_from_slice(&reply);
        }
    });
    out
}

fn show(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

fn exec(command: &str) -> String {
    format!(r#"{{"execute":"{command}"}}"#)
}

fn exec_args(command: &str, args: &str) -> String {
    format!(r#"{{"execute":"{command}","arguments":{args}}}"#)
}

/// Requests whose replies the agent makes without the guest.
fn cases() -> Vec<Case> {
    let mut cases: Vec<String> = Vec::new();
    // Not an object, and the request-level member checks in QDict order.
    for request in [
        "[1,2]",
        "[]",
        r#"[{"execute":"guest-ping"}]"#,
        r#""hello""#,
        "true\n",
        "null\n",
        "42\n",
        "{}",
        r#"{"arguments":{}}"#,
        r#"{"execute": 1}"#,
        r#"{"execute": null}"#,
        r#"{"execute": ["guest-ping"]}"#,
        r#"{"execute":"guest-ping","foo":1}"#,
        r#"{"foo":1,"execute":"guest-ping"}"#,
        r#"{"exec-oob":"guest-ping"}"#,
        r#"{"execute":"guest-ping","control":{}}"#,
        r#"{"Execute":"guest-ping"}"#,
        r#"{"execute":1,"foo":2}"#,
        r#"{"foo":2,"execute":1}"#,
        r#"{"execute":"guest-ping","arguments":1,"foo":2}"#,
        r#"{"execute":"guest-nope","arguments":1}"#,
        r#"{"execute":"guest-ping","arguments":[]}"#,
        r#"{"execute":"guest-ping","arguments":null}"#,
        r#"{"execute":"guest-ping","arguments":"x"}"#,
        r#"{"arguments":1,"id":2}"#,
        r#"{"id":1,"execute":{}}"#,
        r#"{"a":1,"b":2,"c":3,"execute":"guest-ping"}"#,
        r#"{"zz":1,"execute":"guest-ping","aa":2}"#,
        r#"{"arguments":{"id":5},"execute":"guest-sync"}"#,
        r#"{"execute":"guest-ping","arguments":{}}"#,
        r#"{"execute":"guest-ping","arguments":{"x":1}}"#,
    ] {
        cases.push(request.to_owned());
    }
    // Command lookup: unknown names, then disabled ones (blocked, and the agent's own).
    for name in [
        "guest-foo",
        "GUEST-PING",
        "guest-ping ",
        "",
        "guest-p\\u0069ng",
        "guest-ping\\u0000",
    ] {
        cases.push(exec(name));
    }
    for name in safe_block_list()
        .iter()
        .copied()
        .chain(["guest-get-devices"])
    {
        cases.push(exec(name));
        cases.push(exec_args(name, r#"{"bogus":[1,{"x":null}]}"#));
        cases.push(format!(r#"{{"execute":"{name}","id":"blocked"}}"#));
    }
    cases.push(exec_args("guest-set-time", r#"{"time":"x"}"#));
    // The agent's own commands.
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
        r#""abc""#,
        r#""1""#,
        "true",
        "null",
        "[]",
        "{}",
    ] {
        cases.push(exec_args("guest-sync", &format!(r#"{{"id":{id}}}"#)));
        cases.push(exec_args(
            "guest-sync-delimited",
            &format!(r#"{{"id":{id}}}"#),
        ));
    }
    for request in [
        exec("guest-sync"),
        exec_args("guest-sync", "{}"),
        exec_args("guest-sync", r#"{"id":1,"x":2}"#),
        exec_args("guest-sync", r#"{"id":1,"foo":2,"bar":3}"#),
        exec_args("guest-sync", r#"{"id":1,"zz":3,"aa":2}"#),
        exec_args("guest-sync", r#"{"foo":2}"#),
        exec_args("guest-sync", r#"{"id":"x","foo":1}"#),
        exec_args("guest-sync", r#"{"ID":1}"#),
        exec_args("guest-sync", r#"{"id\u0000x":5}"#),
        exec("guest-sync-delimited"),
        r#"{"execute":"guest-sync-delimited","arguments":{"id":5},"id":"x"}"#.to_owned(),
        format!(
            "{}{}",
            exec_args("guest-sync-delimited", r#"{"id":6}"#),
            exec("guest-ping")
        ),
        format!(
            "{}{}",
            exec_args("guest-sync-delimited", r#"{"id":7}"#),
            exec_args("guest-sync-delimited", r#"{"id":8}"#)
        ),
        exec("guest-ping"),
        exec("guest-info"),
        r#"{"execute":"guest-info","id":{"z":1,"a":[]}}"#.to_owned(),
        exec_args("guest-info", r#"{"verbose":true}"#),
    ] {
        cases.push(request);
    }
    // Id echo of every JSON type, on success and on every kind of error.
    for id in [
        "42",
        r#""abc""#,
        "null",
        "true",
        "false",
        r#""""#,
        "{}",
        "[]",
        r#"[1,"a",null]"#,
        "1.5",
        "0.1",
        "1e3",
        "1E400",
        "99999999999999999999999",
        "-0",
        "18446744073709551615",
        r#"{"aa":1,"aq":2}"#,
        r#"{"aq":2,"aa":1}"#,
        r#"{"b":1,"a":2,"c":{"z":0,"y":[]}}"#,
        r#""\u00e9\u20ac\ud83d\ude00""#,
        r#""q\"b\\s/\/ \b\f\n\r\t\u0001\u001f\u007f""#,
    ] {
        cases.push(format!(r#"{{"execute":"guest-ping","id":{id}}}"#));
        cases.push(format!(
            r#"{{"id":{id},"execute":"guest-sync","arguments":{{"id":9}}}}"#
        ));
        cases.push(format!(r#"{{"id":{id}}}"#));
        cases.push(format!(r#"{{"id":{id},"foo":1}}"#));
        cases.push(format!(r#"{{"execute":"guest-nope","id":{id}}}"#));
        cases.push(format!(r#"{{"execute":"guest-exec","id":{id}}}"#));
        cases.push(format!(r#"{{"execute":"guest-sync","id":{id}}}"#));
        cases.push(format!(r#"{{"execute":1,"id":{id}}}"#));
    }
    // Argument checks that stop before the guest: types, missing members, enums and the
    // alternate, in schema order, and leftover keys.
    for request in [
        exec_args("guest-file-read", r#"{"handle":"x"}"#),
        exec_args("guest-file-read", r#"{"count":1}"#),
        exec_args("guest-file-read", r#"{"handle":1,"count":"x"}"#),
        exec_args("guest-file-read", r#"{"handle":1.5}"#),
        exec_args("guest-file-read", r#"{"handle":1,"bogus":1}"#),
        exec_args("guest-file-close", "{}"),
        exec_args("guest-file-close", r#"{"handle":null}"#),
        exec_args("guest-file-flush", r#"{"handle":true}"#),
        exec_args("guest-file-seek", r#"{"handle":1,"offset":0}"#),
        exec_args("guest-file-seek", r#"{"handle":1,"whence":0}"#),
        exec_args(
            "guest-file-seek",
            r#"{"handle":1,"offset":0,"whence":"bogus"}"#,
        ),
        exec_args(
            "guest-file-seek",
            r#"{"handle":1,"offset":0,"whence":true}"#,
        ),
        exec_args(
            "guest-file-seek",
            r#"{"handle":1,"offset":0,"whence":null}"#,
        ),
        exec_args("guest-file-seek", r#"{"handle":1,"offset":0,"whence":[]}"#),
        exec_args("guest-file-seek", r#"{"handle":1,"offset":0,"whence":{}}"#),
        exec_args("guest-file-seek", r#"{"handle":1,"offset":0,"whence":1.5}"#),
        exec_args(
            "guest-file-seek",
            r#"{"handle":1,"offset":0,"whence":"SET"}"#,
        ),
        exec_args(
            "guest-file-seek",
            r#"{"handle":1,"offset":0,"whence":"set\u0000"}"#,
        ),
        exec_args("guest-file-seek", r#"{"offset":"x","handle":"y"}"#),
        exec_args(
            "guest-file-seek",
            r#"{"handle":1,"offset":0,"whence":"end","x":1}"#,
        ),
        exec_args("guest-exec-status", "{}"),
        exec_args("guest-exec-status", r#"{"pid":"1"}"#),
        exec_args("guest-exec-status", r#"{"pid":1,"pad":"x"}"#),
        exec_args("guest-ssh-get-authorized-keys", r#"{"username":1}"#),
        exec_args("guest-ssh-get-authorized-keys", "{}"),
        exec_args("guest-ssh-get-authorized-keys", r#"{"user":"root"}"#),
        exec_args("guest-get-osinfo", r#"{"x":1}"#),
        exec_args("guest-get-time", r#"{"a":1,"b":2}"#),
        exec_args("guest-fsfreeze-status", r#"{"\u00e9":1}"#),
    ] {
        cases.push(request);
    }
    // Parse errors never reach dispatch and carry no id.
    for request in [
        r#"{"execute":"guest-nope","execute":"guest-ping"}"#,
        r#"{"execute":"guest-ping",}"#,
        r#"{"execute" "guest-ping"}"#,
        "hello\n",
        r#"{"id":"a\xb"}"#,
    ] {
        cases.push(request.to_owned());
    }
    let mut all: Vec<Case> = cases.into_iter().map(Case::exact).collect();
    all.extend(random_leftover_cases());
    all
}

/// Argument objects with many unknown keys, inserted in random order: the key reported as
/// unexpected depends on QDict order, GLib's table layout and its resizes.
fn random_leftover_cases() -> Vec<Case> {
    const ALPHABET: &[&str] = &["a", "b", "z", "q", "-", "_", "0", "9", "\u{e9}", "K"];
    let mut rng = StdRng::seed_from_u64(0x1ef7);
    let mut cases = Vec::new();
    for case in 0..60 {
        let (command, members): (&str, &[(&str, &str)]) = match case % 3 {
            0 => ("guest-sync", &[("id", "1")]),
            1 => (
                "guest-file-seek",
                &[("handle", "5"), ("offset", "0"), ("whence", "\"set\"")],
            ),
            _ => ("guest-ping", &[]),
        };
        let extra = rng.random_range(1..=40);
        let mut keys: Vec<String> = (0..extra)
            .map(|_| {
                (0..rng.random_range(1..=5))
                    .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                    .collect()
            })
            .collect();
        keys.retain(|k| !members.iter().any(|(m, _)| m == k));
        keys.sort();
        keys.dedup();
        let mut entries: Vec<String> = keys.iter().map(|k| format!("\"{k}\":0")).collect();
        entries.extend(members.iter().map(|(k, v)| format!("\"{k}\":{v}")));
        entries.shuffle(&mut rng);
        let request = exec_args(command, &format!("{{{}}}", entries.join(",")));
        cases.push(Case {
            name: format!("random leftover {case}"),
            bytes: request.into_bytes(),
            exact: true,
        });
    }
    cases
}

/// Commands that run on the guest, whose replies stay the same between two asks on an idle
/// machine, and the guest's own errors (unknown handles and pids, a missing user).
fn guest_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for command in [
        "guest-get-osinfo",
        "guest-get-timezone",
        "guest-get-host-name",
        "guest-get-users",
        "guest-get-vcpus",
        "guest-get-disks",
        "guest-get-memory-blocks",
        "guest-get-memory-block-info",
        "guest-fsfreeze-status",
    ] {
        cases.push(exec(command));
        cases.push(format!(r#"{{"execute":"{command}","id":"r-{command}"}}"#));
        cases.push(exec_args(command, "{}"));
    }
    for request in [
        exec_args("guest-file-read", r#"{"handle":12345}"#),
        exec_args("guest-file-read", r#"{"handle":12345,"count":-1}"#),
        exec_args(
            "guest-file-read",
            r#"{"handle":12345,"count":999999999999}"#,
        ),
        exec_args("guest-file-read", r#"{"handle":-1}"#),
        exec_args("guest-file-close", r#"{"handle":12345}"#),
        exec_args("guest-file-flush", r#"{"handle":0}"#),
        exec_args(
            "guest-file-seek",
            r#"{"handle":12345,"offset":0,"whence":0}"#,
        ),
        exec_args(
            "guest-file-seek",
            r#"{"handle":12345,"offset":-5,"whence":"set"}"#,
        ),
        exec_args(
            "guest-file-seek",
            r#"{"handle":12345,"offset":0,"whence":7}"#,
        ),
        exec_args("guest-exec-status", r#"{"pid":999999}"#),
        exec_args("guest-exec-status", r#"{"pid":0}"#),
        exec_args("guest-exec-status", r#"{"pid":-1}"#),
        exec_args(
            "guest-ssh-get-authorized-keys",
            r#"{"username":"no-such-user-qga-probe"}"#,
        ),
        r#"{"execute":"guest-file-close","arguments":{"handle":1},"id":{"k":[true]}}"#.to_owned(),
    ] {
        cases.push(request);
    }
    let mut all: Vec<Case> = cases.into_iter().map(Case::exact).collect();
    // Disk usage moves on a busy machine: same shape, digits masked.
    for request in [
        exec("guest-get-fsinfo"),
        r#"{"execute":"guest-get-fsinfo","id":"fs"}"#.to_owned(),
    ] {
        all.push(Case {
            exact: false,
            ..Case::exact(request)
        });
    }
    all
}

/// Runs `cases` through the real agent and through `dispatcher` over `guest`; one line per
/// case that differs.
fn compare(
    agent: &RealAgent,
    dispatcher: &mut Dispatcher,
    guest: &mut Guest,
    cases: &[Case],
) -> Vec<String> {
    let mut session = Session::connect(agent.socket()).expect("connect");
    let mut failures = Vec::new();
    for Case { name, bytes, exact } in cases {
        let real = session
            .run(std::slice::from_ref(bytes))
            .expect("real agent");
        let mock = ours(dispatcher, guest, bytes);
        let (real, mock) = if *exact {
            (real, mock)
        } else {
            (mask_digits(&real), mask_digits(&mock))
        };
        if real != mock {
            failures.push(format!(
                "{name}\n  real: {}\n  ours: {}",
                show(&real),
                show(&mock)
            ));
        }
    }
    failures
}

#[test]
fn dispatch_matches_the_real_agent_byte_for_byte() {
    let agent = RealAgent::start(&[]).expect("start qemu-ga");
    let mut dispatcher = Dispatcher::new(safe_config());
    let mut guest = Guest::new(Profile::default_linux());
    let cases = cases();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let failures = compare(&agent, &mut dispatcher, &mut guest, &cases);
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn guest_commands_match_the_real_agent_with_a_captured_profile() {
    let agent = RealAgent::start(&[]).expect("start qemu-ga");
    let captured = capture(agent.socket(), &CaptureOptions::default()).expect("capture");
    let profile = captured.profile;
    let config = AgentConfig {
        version: profile.agent_version(),
        block_rpcs: profile.agent.block_rpcs.clone().unwrap_or_default(),
        allow_rpcs: profile.agent.allow_rpcs.clone(),
    };
    let mut dispatcher = Dispatcher::new(config);
    let mut guest = Guest::new(profile);
    let cases = guest_cases();
    let failures = compare(&agent, &mut dispatcher, &mut guest, &cases);
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
