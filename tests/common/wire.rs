//! Request and reply bytes as a host client sends them and qemu-ga 7.2 writes them.

use serde::Serialize;

/// The bytes, printable (escapes for the rest), for assertion messages.
pub fn show(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

/// A JSON id as it stands in a request and in qemu-ga's reply: a number bare, a string
/// quoted.
fn id_json(id: impl Serialize) -> String {
    serde_json::to_string(&id).expect("an id serialises")
}

pub fn ping(id: impl Serialize) -> Vec<u8> {
    format!(r#"{{"execute":"guest-ping","id":{}}}"#, id_json(id)).into_bytes()
}

pub fn ping_reply(id: impl Serialize) -> Vec<u8> {
    format!("{{\"return\": {{}}, \"id\": {}}}\n", id_json(id)).into_bytes()
}

pub fn execute(command: &str, id: u64) -> Vec<u8> {
    format!(r#"{{"execute":"{command}","id":{id}}}"#).into_bytes()
}

pub fn sync(id: i64) -> Vec<u8> {
    format!(r#"{{"execute":"guest-sync","arguments":{{"id":{id}}}}}"#).into_bytes()
}

pub fn sync_reply(id: i64) -> Vec<u8> {
    format!("{{\"return\": {id}}}\n").into_bytes()
}

pub fn sync_delimited(id: i64) -> Vec<u8> {
    format!(r#"{{"execute":"guest-sync-delimited","arguments":{{"id":{id}}}}}"#).into_bytes()
}

pub fn sync_delimited_reply(id: i64) -> Vec<u8> {
    let mut reply = vec![0xff];
    reply.extend(sync_reply(id));
    reply
}
