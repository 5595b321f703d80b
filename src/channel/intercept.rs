//! The two points where the agent's behaviour can be changed from outside: once per parsed
//! request, before it is dispatched, and once per reply, before it is written.
//!
//! The faithful agent dispatches every request and writes every reply whole, in one
//! write. Fault rules act here: they see the request (and the command it names) and the
//! reply bytes, and decide what the agent does instead.

use crate::wire::{Parsed, Value};

/// What the agent knows about a request before it dispatches it.
// The faithful agent looks at none of it; rules that act on requests do.
#[allow(dead_code)]
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The streamer's item: a value or a parse error.
    pub(crate) item: &'a Parsed,
    /// The `execute` member, when the item is an object with a string `execute`.
    pub(crate) command: Option<&'a str>,
    /// How many items this agent process handled before this one.
    pub(crate) sequence: u64,
}

impl<'a> Request<'a> {
    pub(crate) fn new(item: &'a Parsed, sequence: u64) -> Self {
        let command = match item {
            Parsed::Value(Value::Object(object)) => object.get("execute").and_then(Value::as_str),
            _ => None,
        };
        Self {
            item,
            command,
            sequence,
        }
    }
}

/// What the agent does with a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RequestAction {
    /// Hand it to the dispatcher, as qemu-ga does.
    Dispatch,
}

/// The writes that carry one reply to the channel, in order.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplyAction {
    /// Write these bytes in one write.
    Write(Vec<u8>),
}

/// Decides, per request and per reply, what the agent does.
pub(crate) trait Interceptor: Send {
    fn on_request(&mut self, request: &Request<'_>) -> RequestAction;
    fn on_reply(&mut self, command: Option<&str>, reply: Vec<u8>) -> ReplyAction;
}

/// The real agent: every request dispatched, every reply written whole.
#[derive(Debug, Default)]
pub(crate) struct Faithful;

impl Interceptor for Faithful {
    fn on_request(&mut self, _request: &Request<'_>) -> RequestAction {
        RequestAction::Dispatch
    }

    fn on_reply(&mut self, _command: Option<&str>, reply: Vec<u8>) -> ReplyAction {
        ReplyAction::Write(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Object;

    #[test]
    fn the_command_name_is_peeked_from_execute() {
        let item = Parsed::Value(Value::Object(
            Object::new().with("execute", Value::String("guest-ping".into())),
        ));
        assert_eq!(Request::new(&item, 0).command, Some("guest-ping"));
        let item = Parsed::Value(Value::Object(Object::new().with("execute", Value::Int(1))));
        assert_eq!(Request::new(&item, 0).command, None);
        let item = Parsed::Error("JSON parse error, stray '\u{FFFD}'".into());
        assert_eq!(Request::new(&item, 3).command, None);
    }

    #[test]
    fn the_faithful_agent_dispatches_and_writes_whole() {
        let item = Parsed::Value(Value::Null);
        let mut faithful = Faithful;
        assert_eq!(
            faithful.on_request(&Request::new(&item, 0)),
            RequestAction::Dispatch
        );
        assert_eq!(
            faithful.on_reply(None, b"{}\n".to_vec()),
            ReplyAction::Write(b"{}\n".to_vec())
        );
    }
}
