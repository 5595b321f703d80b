//! The points where the agent's behaviour can be changed from outside: once per parsed
//! request, before it is dispatched; once when an agent process starts; and whenever a
//! client connected (queued for the agent). What the agent then does instead is a
//! [`Plan`], carried out by the process (see `process.rs`).
//!
//! Without fault rules every request is dispatched and every reply written whole, as the
//! real agent does, and asking costs one atomic load.

use std::sync::Arc;

use super::faults::{FaultHub, Plan, RequestInfo, SyncRequest};
use crate::received::{PendingRecord, Recorder};
use crate::wire::{Parsed, Value};

/// What the agent knows about a request before it dispatches it.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The streamer's item: a value or a parse error.
    pub(crate) item: &'a Parsed,
    /// The `execute` member, when the item is an object with a string `execute`.
    pub(crate) command: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(item: &'a Parsed) -> Self {
        let command = match item {
            Parsed::Value(Value::Object(object)) => object.get("execute").and_then(Value::as_str),
            _ => None,
        };
        Self { item, command }
    }

    /// The id and form of a guest-sync or guest-sync-delimited with an integer id.
    pub(crate) fn sync(&self) -> Option<SyncRequest> {
        let delimited = match self.command? {
            "guest-sync" => false,
            "guest-sync-delimited" => true,
            _ => return None,
        };
        let Parsed::Value(Value::Object(object)) = self.item else {
            return None;
        };
        let id = object
            .get("arguments")
            .and_then(Value::as_object)
            .and_then(|args| args.get("id"))
            .and_then(Value::as_i64)?;
        Some(SyncRequest { id, delimited })
    }

    /// What a reply-shaped fault needs: the id qemu-ga would echo (when `echo_id`), and
    /// whether this is a sync.
    pub(crate) fn info(&self, echo_id: bool) -> RequestInfo {
        let id = match self.item {
            Parsed::Value(Value::Object(object)) if echo_id => object.get("id").cloned(),
            _ => None,
        };
        RequestInfo {
            id,
            sync: self.sync(),
            delimited: self.command == Some("guest-sync-delimited"),
        }
    }
}

/// Asks the mock's faults what to do; without faults, the real agent's behaviour. Also
/// where the agent records what it received, when the mock keeps records.
#[derive(Clone, Debug, Default)]
pub(crate) struct Interceptor {
    hub: Option<Arc<FaultHub>>,
    recorder: Option<Arc<Recorder>>,
}

impl Interceptor {
    pub(crate) fn new(hub: Option<Arc<FaultHub>>, recorder: Option<Arc<Recorder>>) -> Self {
        Self { hub, recorder }
    }

    /// Starts the record of a request the agent is about to handle.
    pub(crate) fn begin_record(&self, item: &Parsed) -> Option<PendingRecord> {
        Some(self.recorder.as_ref()?.begin(item))
    }

    /// The agent is done with a request: `reply` is what it wrote for it.
    pub(crate) fn commit_record(
        &self,
        pending: Option<PendingRecord>,
        reply: Option<&[u8]>,
        faulted: bool,
    ) {
        if let (Some(recorder), Some(pending)) = (&self.recorder, pending) {
            recorder.commit(pending, reply, faulted);
        }
    }

    /// The plan for a request, and what its reply needs to know; `None`: dispatch it
    /// and write the reply whole.
    pub(crate) fn on_request(&self, request: &Request<'_>) -> Option<(Plan, RequestInfo)> {
        let hub = self.hub.as_ref()?;
        hub.on_request(request.command, request.sync(), |echo_id| {
            request.info(echo_id)
        })
    }

    /// The plan for a starting agent process.
    pub(crate) fn on_start(&self) -> Option<Plan> {
        self.hub.as_ref()?.on_start()
    }

    /// A client was accepted (number `conn`).
    pub(crate) fn connected(&self, conn: u64) {
        if let Some(hub) = &self.hub {
            hub.connected(conn);
        }
    }

    pub(crate) fn disconnected(&self) {
        if let Some(hub) = &self.hub {
            hub.disconnected();
        }
    }

    /// A plan queued by a connect, for the agent to carry out now.
    pub(crate) fn take_event(&self) -> Option<Plan> {
        self.hub.as_ref()?.take_event()
    }

    /// Completes when a connect plan may be waiting; never without faults.
    pub(crate) async fn event_ready(&self) {
        match &self.hub {
            Some(hub) => hub.event_ready().await,
            None => std::future::pending().await,
        }
    }

    /// The agent wrote this reply.
    pub(crate) fn wrote_reply(&self, reply: &[u8]) {
        if let Some(hub) = &self.hub {
            hub.wrote_reply(reply);
        }
    }

    /// True when the agent must keep the raw bytes of requests it has not handled yet.
    pub(crate) fn tracks_raw_input(&self) -> bool {
        self.hub.as_ref().is_some_and(|hub| hub.tracks_raw_input())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Object;

    fn request_value(members: Object) -> Parsed {
        Parsed::Value(Value::Object(members))
    }

    #[test]
    fn the_command_name_is_peeked_from_execute() {
        let item = request_value(Object::new().with("execute", Value::String("guest-ping".into())));
        assert_eq!(Request::new(&item).command, Some("guest-ping"));
        let item = request_value(Object::new().with("execute", Value::Int(1)));
        assert_eq!(Request::new(&item).command, None);
        let item = Parsed::Error("JSON parse error, stray '\u{FFFD}'".into());
        assert_eq!(Request::new(&item).command, None);
    }

    #[test]
    fn sync_requests_and_echoed_ids() {
        let item = request_value(
            Object::new()
                .with("execute", Value::from("guest-sync-delimited"))
                .with(
                    "arguments",
                    Value::Object(Object::new().with("id", Value::Int(42))),
                )
                .with("id", Value::from("r")),
        );
        let request = Request::new(&item);
        assert_eq!(
            request.sync(),
            Some(SyncRequest {
                id: 42,
                delimited: true
            })
        );
        let info = request.info(true);
        assert_eq!(info.id, Some(Value::from("r")));
        assert!(info.delimited);
        // Agents before 4.0 echo no id.
        assert_eq!(request.info(false).id, None);
        let ping = request_value(Object::new().with("execute", Value::from("guest-ping")));
        assert_eq!(Request::new(&ping).sync(), None);
    }

    #[test]
    fn without_faults_every_request_is_dispatched() {
        let item = Parsed::Value(Value::Null);
        let faithful = Interceptor::default();
        assert!(faithful.on_request(&Request::new(&item)).is_none());
        assert!(faithful.on_start().is_none());
        assert!(!faithful.tracks_raw_input());
    }
}
