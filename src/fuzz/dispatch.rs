//! Oracles of the agent's dispatch over arbitrary requests.
//!
//! For every item the streamer can produce (a value, or a parse error), on an agent of a
//! drawn version with drawn block and allow lists, over a guest whose state the earlier
//! requests changed:
//! - no panic;
//! - no reply only for a successful no-reply command (`success-response: false`);
//! - otherwise exactly one line: the 0xFF prefix only on `guest-sync-delimited`'s
//!   return, then one JSON object of `return` or `error` (`class` and `desc`, both
//!   strings) plus, when the request was an object carrying an `id`, that id; and the
//!   line is what the writer prints for the value it holds.

use arbitrary::Unstructured;

use super::gen;
use crate::agent::{AgentConfig, AgentVersion, Dispatcher};
use crate::client::is_no_reply_command;
use crate::guest::{Guest, Profile};
use crate::wire::{write_json, Parsed, Streamer, Value};

/// The oracle of the `dispatch` target.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
}

const VERSIONS: &[AgentVersion] = &[
    AgentVersion::V7_2_22,
    AgentVersion::new(2, 5, 0),
    AgentVersion::new(4, 2, 0),
    AgentVersion::new(6, 0, 0),
    AgentVersion::new(8, 1, 0),
    AgentVersion::new(9, 1, 0),
];

fn config(u: &mut Unstructured<'_>) -> arbitrary::Result<AgentConfig> {
    let mut config = AgentConfig {
        version: *u.choose(VERSIONS)?,
        ..AgentConfig::default()
    };
    if u.ratio(1, 4)? {
        for _ in 0..u.int_in_range(0..=3)? {
            config.block_rpcs.push(gen::name(u, gen::COMMAND_NAMES)?);
        }
    }
    if u.ratio(1, 8)? {
        let mut allow = Vec::new();
        for _ in 0..u.int_in_range(0..=3)? {
            allow.push(gen::name(u, gen::COMMAND_NAMES)?);
        }
        config.allow_rpcs = Some(allow);
    }
    Ok(config)
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let config = config(u)?;
    let echoes = config.version.at_least(4, 0);
    let mut dispatcher = Dispatcher::new(config);
    let mut guest = Guest::new(Profile::default_linux());
    for _ in 0..u.int_in_range(1..=8)? {
        let item = if u.ratio(1, 16)? {
            Parsed::Error(u.arbitrary()?)
        } else {
            Parsed::Value(gen::request(u)?)
        };
        let dispatched = dispatcher.dispatch(item.clone(), &mut guest);
        check_reply(&item, dispatched.reply.as_deref(), echoes);
    }
    Ok(())
}

fn execute_name(item: &Parsed) -> Option<&str> {
    match item {
        Parsed::Value(Value::Object(request)) => request.get("execute")?.as_str(),
        _ => None,
    }
}

fn check_reply(item: &Parsed, reply: Option<&[u8]>, dispatcher_echoes: bool) {
    let execute = execute_name(item);
    let Some(reply) = reply else {
        assert!(
            execute.is_some_and(is_no_reply_command),
            "no reply to {item:?}"
        );
        return;
    };
    let shown = String::from_utf8_lossy(reply);
    let (delimited, line) = match reply.split_first() {
        Some((0xFF, rest)) => (true, rest),
        _ => (false, reply),
    };
    let Some((b'\n', body)) = line.split_last() else {
        panic!("reply to {item:?} does not end its line: {shown:?}");
    };
    assert!(
        !body.contains(&b'\n') && !body.contains(&0xFF),
        "reply to {item:?} is more than one line: {shown:?}"
    );
    let mut items = Vec::new();
    let mut streamer = Streamer::new();
    streamer.feed(line, &mut |i| items.push(i));
    let [Parsed::Value(Value::Object(response))] = items.as_slice() else {
        panic!("reply to {item:?} is not one object: {shown:?} -> {items:?}");
    };
    let mut again = Vec::new();
    write_json(&Value::Object(response.clone()), &mut again);
    assert_eq!(again, body, "reply to {item:?} is not the writer's bytes");
    let returns = response.contains_key("return");
    assert!(
        returns != response.contains_key("error"),
        "reply to {item:?} has not exactly one of return and error: {shown:?}"
    );
    if delimited {
        assert!(
            returns && execute == Some("guest-sync-delimited"),
            "0xFF before a reply other than guest-sync-delimited's return: {shown:?}"
        );
    }
    if let Some(error) = response.get("error") {
        let error = error.as_object().expect("error is an object");
        assert!(
            error.len() == 2
                && error.get("class").and_then(Value::as_str).is_some()
                && error.get("desc").and_then(Value::as_str).is_some(),
            "malformed error to {item:?}: {shown:?}"
        );
    }
    for key in response.keys() {
        assert!(
            matches!(key, "return" | "error" | "id"),
            "reply to {item:?} has member {key}: {shown:?}"
        );
    }
    if let Parsed::Value(Value::Object(request)) = item {
        if let Some(id) = request.get("id") {
            // Agents before 4.0 echo no id; from 4.0 every reply to an object with an
            // id echoes it. Compared as printed: `1.0` is read back as the integer 1.
            match response.get("id") {
                Some(echoed) => assert_eq!(
                    printed(echoed),
                    printed(id),
                    "reply to {item:?} has another id: {shown:?}"
                ),
                None => assert!(
                    !dispatcher_echoes,
                    "reply to {item:?} lost its id: {shown:?}"
                ),
            }
        } else {
            assert!(
                response.get("id").is_none(),
                "reply to an id-less {item:?} has an id: {shown:?}"
            );
        }
    }
}

fn printed(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_json(value, &mut bytes);
    bytes
}
