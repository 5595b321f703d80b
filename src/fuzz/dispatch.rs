//! Oracles of the agent's dispatch over arbitrary requests.
//!
//! For every item the streamer can produce (a value, or a parse error), on an agent of a
//! drawn version with drawn block and allow lists, over a guest whose state the earlier
//! requests changed:
//! - no panic;
//! - no reply only for a successful no-reply command (`success-response: false`);
//! - otherwise exactly one line: the 0xFF prefix only on `guest-sync-delimited`'s
//!   return, then one JSON object of `return` or `error` (`class` and `desc`, both
//!   strings) plus, when the request was an object carrying an `id`, that id printed
//!   as the writer prints the request's value; and the line reads back to the value it
//!   holds, which the writer prints to the same bytes, or, where members share a QDict
//!   hash bucket (printing what was read back reverses them, as qemu-ga does when a
//!   client echoes an echoed id: reference qga-wire.md, point 4), to bytes that print
//!   back to the reply.

use arbitrary::Unstructured;

use super::gen;
use super::wire::printed_back;
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
    if again != body {
        assert!(
            printed_back(&again).as_deref() == Some(body),
            "reply to {item:?} is not the writer's bytes: {shown:?} printed back as {:?}",
            String::from_utf8_lossy(&again)
        );
    }
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
            // id echoes it, printed from the request's value: compared as printed (`1.0`
            // is read back as the integer 1), members sharing a bucket in the order the
            // request's insertion order gives them.
            match response.get("id") {
                Some(_) => {
                    // `id` (bucket 486) prints after `return` (401) and before `error`
                    // (489): the last member of a success, the first of an error.
                    let id = printed(id);
                    let first = [&b"{\"id\": "[..], &id, b", "].concat();
                    let last = [&b", \"id\": "[..], &id, b"}"].concat();
                    assert!(
                        body.starts_with(&first) || body.ends_with(&last),
                        "reply to {item:?} has another id than {:?}: {shown:?}",
                        String::from_utf8_lossy(&id)
                    );
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(bytes: &[u8]) -> Vec<Parsed> {
        let mut items = Vec::new();
        let mut streamer = Streamer::new();
        streamer.feed(bytes, &mut |i| items.push(i));
        streamer.feed(b"\n", &mut |i| items.push(i));
        items
    }

    fn request(line: &[u8]) -> Parsed {
        let mut items = parse_line(line);
        assert_eq!(items.len(), 1, "{items:?}");
        items.pop().unwrap()
    }

    /// What qemu-ga 7.2 answered (unix-listen on the host) to an id whose members
    /// `handle` and `"\necu4e\"{"` share a QDict bucket: the oracle accepts it, and
    /// rejects a wrong id or a reordering of members that share no bucket.
    #[test]
    fn the_oracle_takes_qemu_ga_s_bucket_order_and_nothing_else() {
        let item = request(
            br#"{"id": {"\necu4e\"{": [29556], "arg": 1.5, "handle": 2101572963, "execute": null}, "execute": null}"#,
        );
        let real = b"{\"id\": {\"handle\": 2101572963, \"\\necu4e\\\"{\": [29556], \"execute\": null, \"arg\": 1.5}, \"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member 'execute' must be a string\"}}\n";
        check_reply(&item, Some(real), true);
        let wrong_id = String::from_utf8_lossy(real).replace("2101572963", "2101572964");
        let reordered = String::from_utf8_lossy(real).replace(
            "\"execute\": null, \"arg\": 1.5",
            "\"arg\": 1.5, \"execute\": null",
        );
        for broken in [wrong_id, reordered] {
            let outcome =
                std::panic::catch_unwind(|| check_reply(&item, Some(broken.as_bytes()), true));
            assert!(outcome.is_err(), "the oracle took {broken:?}");
        }
    }
}
