//! The hash-order models checked against the real qemu-ga: random argument objects whose
//! leftover key depends on QDict order, GLib's table layout, tombstones and resizes.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::test_json::parse;
use super::tests::FakeGuest;
use super::*;
use crate::real_agent::{safe_block_list, RealAgent};

/// Sends one request per line and reads one reply line for each.
struct Line {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Line {
    fn connect(agent: &RealAgent) -> Line {
        let writer = UnixStream::connect(agent.socket()).expect("connect to qemu-ga");
        let reader = BufReader::new(writer.try_clone().expect("clone socket"));
        Line { reader, writer }
    }

    fn ask(&mut self, request: &str) -> serde_json::Value {
        self.writer
            .write_all(request.as_bytes())
            .expect("write request");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read reply");
        serde_json::from_str(&line).expect("reply is JSON")
    }
}

fn random_key(rng: &mut StdRng) -> String {
    const ALPHABET: &[&str] = &[
        "a", "b", "z", "q", "-", "_", "0", "9", "\u{e9}", "\u{20ac}", "K",
    ];
    let len = rng.random_range(1..=6);
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// The real agent's `desc` for `request`, and ours.
fn both_descs(line: &mut Line, dispatcher: &mut Dispatcher, request: &str) -> (String, String) {
    let real = line.ask(request);
    let real_desc = real["error"]["desc"]
        .as_str()
        .unwrap_or("<no error>")
        .to_owned();
    let (answer, _) = dispatcher.answer(Parsed::Value(parse(request)), &mut FakeGuest::default());
    let ours = match answer {
        Answer::Error { desc, .. } => desc,
        other => format!("<no error: {other:?}>"),
    };
    (real_desc, ours)
}

#[test]
fn leftover_keys_match_the_real_agent() {
    let agent = RealAgent::start(&[]).expect("start qemu-ga");
    let mut line = Line::connect(&agent);
    let mut dispatcher = Dispatcher::new(AgentConfig {
        version: AgentVersion::V7_2_22,
        block_rpcs: safe_block_list().iter().map(|s| (*s).to_owned()).collect(),
        allow_rpcs: None,
    });
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let commands: &[(&str, &[(&str, &str)])] = &[
        ("guest-sync", &[("id", "1")]),
        (
            "guest-file-seek",
            &[("handle", "5"), ("offset", "0"), ("whence", "\"set\"")],
        ),
        ("guest-file-read", &[("handle", "5"), ("count", "1")]),
    ];
    let mut mismatches = Vec::new();
    for case in 0..400 {
        let (command, members) = commands[case % commands.len()];
        let extra = match case % 4 {
            0 => rng.random_range(1..=3),
            1 => rng.random_range(4..=12),
            _ => rng.random_range(13..=70),
        };
        let mut keys: Vec<String> = (0..extra).map(|_| random_key(&mut rng)).collect();
        keys.retain(|k| !members.iter().any(|(m, _)| m == k));
        keys.sort();
        keys.dedup();
        let mut entries: Vec<(String, String)> =
            keys.into_iter().map(|k| (k, "0".to_owned())).collect();
        entries.extend(
            members
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        entries.shuffle(&mut rng);
        let args: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_string(k)))
            .collect();
        let request = format!(
            r#"{{"execute":"{command}","arguments":{{{}}}}}"#,
            args.join(",")
        );
        let (real, ours) = both_descs(&mut line, &mut dispatcher, &request);
        if real != ours {
            mismatches.push(format!("{request}\n  real: {real}\n  ours: {ours}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn top_level_member_order_matches_the_real_agent() {
    let agent = RealAgent::start(&[]).expect("start qemu-ga");
    let mut line = Line::connect(&agent);
    let mut dispatcher = Dispatcher::new(AgentConfig {
        version: AgentVersion::V7_2_22,
        block_rpcs: safe_block_list().iter().map(|s| (*s).to_owned()).collect(),
        allow_rpcs: None,
    });
    let mut rng = StdRng::seed_from_u64(0x0de5);
    let mut mismatches = Vec::new();
    for _ in 0..200 {
        let mut entries: Vec<String> = vec![
            r#""execute":1"#.to_owned(),
            r#""arguments":[]"#.to_owned(),
            r#""id":0"#.to_owned(),
        ];
        entries.truncate(rng.random_range(1..=3));
        for _ in 0..rng.random_range(1..=4) {
            let key = random_key(&mut rng);
            if !["execute", "arguments", "id"].contains(&key.as_str())
                && !entries.iter().any(|e| e.starts_with(&json_string(&key)))
            {
                entries.push(format!("{}:0", json_string(&key)));
            }
        }
        entries.shuffle(&mut rng);
        let request = format!("{{{}}}", entries.join(","));
        let (real, ours) = both_descs(&mut line, &mut dispatcher, &request);
        if real != ours {
            mismatches.push(format!("{request}\n  real: {real}\n  ours: {ours}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
