//! The reference client against a hostile agent drawn from fuzzer bytes.
//!
//! The agent runs in the same task over the client's in-memory transport, under tokio's
//! paused clock: no socket, no real time, and the same input gives the same run. It
//! answers what it parses, but a script drawn from the input decides, request by
//! request, to delay, stay silent, close, drip, cut a reply off, repeat it, write a
//! wrong-id sync reply, an error, or to put foreign output (replies under other ids,
//! copies of earlier replies, id-less replies, garbage) before the true answer. It
//! records the ground truth: every true answer it wrote, for which call, and how many
//! times each call's request reached it.
//!
//! Oracles, per call: no panic; the call returns within its own timeout; a value or an
//! agent error it returns is one the agent wrote as the true answer to that call's
//! request (never a reply meant for another request); no request reaches the agent
//! twice. Memory is bounded by the reply limit the case draws (libFuzzer's malloc limit
//! enforces it on the target).
//!
//! Fairness: with an agent that echoes ids, foreign output may come anywhere. With one
//! that does not (the client then syncs before every command and takes the first reply
//! after the sync), foreign output only comes before a sync reply, as stale output
//! does; a guest that makes up a reply after it cannot be told from the agent by any
//! client, so it is not drawn.

use std::cell::RefCell;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use crate::client::{memory_channel, ClientBuilder, Error, MemoryListener};

/// The oracle of the `client` target.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(case) = Case::arbitrary(&mut u) else {
        return;
    };
    run_case(&case);
}

/// What a call asks.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum CallKind {
    Ping,
    Osinfo,
    /// A no-reply command.
    Shutdown,
    /// A request with an id the caller chose.
    GivenId,
    /// A forced handshake.
    Sync,
    /// Closes the connection first, then pings.
    Reconnect,
}

/// One call of the client and its timeout.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Call {
    pub kind: CallKind,
    pub timeout_ms: u16,
}

/// Foreign output: nothing a correct client may take for the answer.
#[derive(Arbitrary, Clone, Debug)]
pub enum Foreign {
    /// A reply under another (random) id.
    OtherId(u64),
    /// An error under another id.
    OtherIdError(u64),
    /// A copy of an earlier line the agent wrote (index modulo their number).
    Stale(u8),
    /// A reply without an id.
    NoId,
    /// A sync reply with a number the client did not send.
    StaleSync(u64),
    /// Any bytes, then a newline.
    Garbage(Vec<u8>),
    /// A lone 0xFF.
    Delimiter,
}

/// What the agent does with one request.
#[derive(Arbitrary, Clone, Debug)]
pub enum Act {
    Answer,
    Silence,
    /// Closes the connection without answering.
    Close,
    /// Waits, then answers.
    Delay(u16),
    /// Writes the answer in pieces of this many bytes, a millisecond apart.
    Drip(u8),
    Twice,
    /// Answers with an error.
    Error,
    /// Writes the first bytes of the answer, then 0xFF.
    CutOff(u8),
    /// Writes the first bytes of the answer, then closes.
    CutAndClose(u8),
    /// Foreign output first, then the act.
    Before(Foreign, Box<Act>),
}

/// A whole case: the agent's script and the calls.
#[derive(Arbitrary, Clone, Debug)]
pub struct Case {
    pub echo_ids: bool,
    pub max_reply: u16,
    pub script: Vec<Act>,
    pub calls: Vec<Call>,
}

const MAX_CALLS: usize = 8;
const MAX_SCRIPT: usize = 32;
const MAX_ACT_DEPTH: usize = 4;

/// The agent's record of the truth.
#[derive(Debug, Default)]
struct Truth {
    /// Per call: the `seq` of each true answer written to its request (the answer's
    /// value is `{"call": CALL, "seq": SEQ}`).
    answers: Vec<Vec<u64>>,
    /// Per call: the descs of the true error answers written to its request.
    errors: Vec<Vec<String>>,
    /// Per call: how many times its request reached the agent.
    requests: Vec<u32>,
    /// Every line written, for stale copies.
    lines: Vec<Vec<u8>>,
    seq: u64,
}

struct Agent<'a> {
    case: &'a Case,
    truth: &'a RefCell<Truth>,
    /// Bytes of the connection's requests not framed yet.
    pending: Vec<u8>,
    step: usize,
}

/// One request as the agent framed it.
enum Request {
    Value(Json),
    /// Bytes that are not JSON.
    Invalid(String),
}

/// A true answer's content, recorded for its call when it is written: the `seq` of a
/// `{"call": CALL, "seq": SEQ}` return, or an error's desc.
type Recorded = Option<(usize, Result<u64, String>)>;

/// What the agent's true answer to one request is.
enum Answer {
    /// Bytes to write (a sync reply may start with 0xFF), the request's id when the
    /// agent echoes it, and for a call's request what it answers.
    Line(Vec<u8>, Option<Json>, Recorded),
    /// A successful no-reply command.
    Nothing,
}

impl Agent<'_> {
    async fn serve(mut self, mut listener: MemoryListener) {
        while let Some(conn) = listener.accept().await {
            self.serve_connection(conn).await;
        }
    }

    async fn serve_connection(&mut self, mut conn: DuplexStream) {
        let mut buf = [0u8; 4096];
        self.pending.clear();
        loop {
            let n = match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for request in self.frame(&buf[..n]) {
                if !self.handle(&mut conn, request).await {
                    return;
                }
            }
        }
    }

    /// The requests completed by `bytes`. The client's requests are JSON objects one
    /// after another with no separator (qemu-ga frames by brace balance), and a 0xFF
    /// resets the parser: what is pending before one is dropped. Framing with serde_json
    /// instead of the harness's QEMU-faithful streamer costs a fraction of the time;
    /// the agent is not what this target tests.
    fn frame(&mut self, bytes: &[u8]) -> Vec<Request> {
        let mut requests = Vec::new();
        let mut segments = bytes.split(|&b| b == 0xFF).peekable();
        while let Some(segment) = segments.next() {
            self.pending.extend_from_slice(segment);
            let mut stream = serde_json::Deserializer::from_slice(&self.pending).into_iter();
            let mut used = 0;
            loop {
                match stream.next() {
                    Some(Ok(value)) => {
                        requests.push(Request::Value(value));
                        used = stream.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        requests.push(Request::Invalid(e.to_string()));
                        used = self.pending.len();
                        break;
                    }
                    None => {
                        used = self.pending.len();
                        break;
                    }
                }
            }
            self.pending.drain(..used);
            if segments.peek().is_some() {
                // A 0xFF follows: the parser starts over.
                self.pending.clear();
            }
        }
        requests
    }

    /// Handles one request; false when the connection is closed.
    async fn handle(&mut self, conn: &mut DuplexStream, request: Request) -> bool {
        let answer = self.answer(&request);
        let is_sync = matches!(&answer, Answer::Line(_, _, None));
        let act = match &request {
            Request::Value(_) if !self.case.script.is_empty() => {
                let act = self.case.script[self.step % self.case.script.len()].clone();
                self.step += 1;
                act
            }
            _ => Act::Answer,
        };
        self.perform(conn, &act, answer, is_sync, 0).await
    }

    fn answer(&self, request: &Request) -> Answer {
        let mut truth = self.truth.borrow_mut();
        truth.seq += 1;
        let seq = truth.seq;
        let request = match request {
            Request::Value(Json::Object(request)) => request,
            Request::Value(_) => return error_line("not an object"),
            Request::Invalid(desc) => return error_line(desc),
        };
        let id = request.get("id").filter(|_| self.case.echo_ids);
        let execute = request.get("execute").and_then(Json::as_str);
        let arguments = request.get("arguments").and_then(Json::as_object);
        if let Some(sync @ ("guest-sync-delimited" | "guest-sync")) = execute {
            let number = arguments.and_then(|a| a.get("id")).unwrap_or(&Json::Null);
            let mut bytes = Vec::with_capacity(64);
            if sync == "guest-sync-delimited" {
                bytes.push(0xFF);
            }
            push_reply(&mut bytes, number, id);
            return Answer::Line(bytes, id.cloned(), None);
        }
        let call = arguments
            .and_then(|a| a.get("call"))
            .and_then(Json::as_u64)
            .map(|c| c as usize);
        if let Some(call) = call {
            if let Some(count) = truth.requests.get_mut(call) {
                *count += 1;
            }
        }
        if execute == Some("guest-shutdown") {
            return Answer::Nothing;
        }
        let mut bytes = Vec::with_capacity(64);
        match call {
            Some(call) => {
                bytes.extend_from_slice(b"{\"return\":{\"call\":");
                bytes.extend_from_slice(call.to_string().as_bytes());
                bytes.extend_from_slice(b",\"seq\":");
                bytes.extend_from_slice(seq.to_string().as_bytes());
                bytes.push(b'}');
                push_id(&mut bytes, id);
            }
            // The client's own requests (the marker ping after a no-reply command).
            None => push_reply(&mut bytes, &json!({}), id),
        }
        Answer::Line(bytes, id.cloned(), call.map(|c| (c, Ok(seq))))
    }

    /// Performs `act`; false when the connection is closed.
    async fn perform(
        &mut self,
        conn: &mut DuplexStream,
        act: &Act,
        answer: Answer,
        is_sync: bool,
        depth: usize,
    ) -> bool {
        let (bytes, id, call) = match answer {
            Answer::Line(bytes, id, call) => (bytes, id, call),
            Answer::Nothing => (Vec::new(), None, None),
        };
        match act {
            Act::Answer => self.write_true(conn, &bytes, call).await,
            Act::Silence => true,
            Act::Close => false,
            Act::Delay(ms) => {
                tokio::time::sleep(Duration::from_millis(u64::from(*ms))).await;
                self.write_true(conn, &bytes, call).await
            }
            Act::Drip(size) => {
                self.record(call);
                for piece in bytes.chunks(usize::from(*size).max(1)) {
                    if conn.write_all(piece).await.is_err() {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                self.truth.borrow_mut().lines.push(bytes);
                true
            }
            // Without id echo a second copy of a sync reply, arriving after the first,
            // is foreign output after a sync (see the module docs): no client can tell
            // it from the answer to its next command, so it is written once.
            Act::Twice if is_sync && !self.case.echo_ids => {
                self.write_true(conn, &bytes, call).await
            }
            Act::Twice => {
                let call2 = call.clone();
                self.write_true(conn, &bytes, call).await
                    && self.write_true(conn, &bytes, call2).await
            }
            Act::Error => {
                let Some((call, _)) = call else {
                    return self.write_true(conn, &bytes, None).await;
                };
                let desc = format!("call {call} failed, seq {}", self.truth.borrow().seq);
                let mut reply = json!({"error": {"class": "GenericError", "desc": desc}});
                if let Some(id) = id {
                    reply["id"] = id;
                }
                self.write_true(conn, &line(&reply), Some((call, Err(desc))))
                    .await
            }
            Act::CutOff(n) | Act::CutAndClose(n) => {
                let cut = &bytes[..usize::from(*n).min(bytes.len().saturating_sub(2))];
                let mut out = cut.to_vec();
                if matches!(act, Act::CutOff(_)) {
                    out.push(0xFF);
                }
                let ok = write(conn, &out).await;
                ok && matches!(act, Act::CutOff(_))
            }
            Act::Before(foreign, then) => {
                // Without id echo, foreign output only before a sync reply (see the
                // module docs).
                if (self.case.echo_ids || is_sync) && depth < MAX_ACT_DEPTH {
                    let out = self.foreign(foreign);
                    if !write(conn, &out).await {
                        return false;
                    }
                    self.truth.borrow_mut().lines.push(out);
                }
                let answer = Answer::Line(bytes, id, call);
                Box::pin(self.perform(conn, then, answer, is_sync, depth + 1)).await
            }
        }
    }

    fn foreign(&self, foreign: &Foreign) -> Vec<u8> {
        let mut truth = self.truth.borrow_mut();
        truth.seq += 1;
        let seq = truth.seq;
        match foreign {
            Foreign::OtherId(id) => {
                line(&json!({"return": {"foreign": seq}, "id": format!("x{id}")}))
            }
            Foreign::OtherIdError(id) => line(&json!({
                "error": {"class": "GenericError", "desc": format!("foreign {seq}")},
                "id": id,
            })),
            Foreign::Stale(i) => match truth.lines.len() {
                0 => Vec::new(),
                n => truth.lines[usize::from(*i) % n].clone(),
            },
            Foreign::NoId => line(&json!({"return": {"foreign": seq}})),
            Foreign::StaleSync(n) => {
                let mut out = vec![0xFF];
                out.extend(line(&json!({"return": n})));
                out
            }
            Foreign::Garbage(bytes) => {
                let mut out = bytes.clone();
                out.push(b'\n');
                out
            }
            Foreign::Delimiter => vec![0xFF],
        }
    }

    fn record(&self, call: Recorded) {
        let mut truth = self.truth.borrow_mut();
        match call {
            Some((call, Ok(seq))) => truth.answers[call].push(seq),
            Some((call, Err(desc))) => truth.errors[call].push(desc),
            None => {}
        }
    }

    async fn write_true(&mut self, conn: &mut DuplexStream, bytes: &[u8], call: Recorded) -> bool {
        // Recorded before the write: a client may read the first bytes at once.
        self.record(call);
        self.truth.borrow_mut().lines.push(bytes.to_vec());
        write(conn, bytes).await
    }
}

fn line(value: &Json) -> Vec<u8> {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// `{"return":VALUE[,"id":ID]}` and a newline.
fn push_reply(out: &mut Vec<u8>, value: &Json, id: Option<&Json>) {
    out.extend_from_slice(b"{\"return\":");
    serde_json::to_writer(&mut *out, value).expect("a JSON value prints");
    push_id(out, id);
}

/// Ends a reply object: `[,"id":ID]}` and a newline.
fn push_id(out: &mut Vec<u8>, id: Option<&Json>) {
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        serde_json::to_writer(&mut *out, id).expect("a JSON value prints");
    }
    out.extend_from_slice(b"}\n");
}

/// An error answer to input that is no request (no call, no id).
fn error_line(desc: &str) -> Answer {
    let reply = json!({"error": {"class": "GenericError", "desc": desc}});
    Answer::Line(line(&reply), None, None)
}

async fn write(conn: &mut DuplexStream, bytes: &[u8]) -> bool {
    conn.write_all(bytes).await.is_ok()
}

thread_local! {
    /// One runtime per thread, with the clock paused: building one per input would cost
    /// more than the case.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
}

/// Whether `value` is `{"call": CALL, "seq": SEQ}` for call `call` and one of `seqs`.
fn is_true_answer(value: &Json, call: usize, seqs: &[u64]) -> bool {
    let Some(members) = value.as_object() else {
        return false;
    };
    members.len() == 2
        && members.get("call").and_then(Json::as_u64) == Some(call as u64)
        && members
            .get("seq")
            .and_then(Json::as_u64)
            .is_some_and(|seq| seqs.contains(&seq))
}

/// Runs one case and checks its oracles; returns each call's outcome.
pub fn run_case(case: &Case) -> Vec<Result<Json, Error>> {
    let mut case = case.clone();
    case.calls.truncate(MAX_CALLS);
    case.script.truncate(MAX_SCRIPT);
    RUNTIME.with(|runtime| runtime.block_on(drive(&case)))
}

async fn drive(case: &Case) -> Vec<Result<Json, Error>> {
    let truth = RefCell::new(Truth {
        answers: vec![Vec::new(); case.calls.len()],
        errors: vec![Vec::new(); case.calls.len()],
        requests: vec![0; case.calls.len()],
        ..Truth::default()
    });
    let (connector, listener) = memory_channel();
    let agent = Agent {
        case,
        truth: &truth,
        pending: Vec::new(),
        step: 0,
    };
    let mut client = ClientBuilder::in_memory(connector)
        .max_reply_bytes(usize::from(case.max_reply).max(64))
        .no_reply_grace(Duration::from_millis(200))
        .seeded_ids(0x5eed)
        .build();
    let calls = async {
        let mut outcomes = Vec::new();
        for (k, call) in case.calls.iter().enumerate() {
            let timeout = Duration::from_millis(u64::from(call.timeout_ms % 3000) + 1);
            let start = Instant::now();
            let arguments = json!({ "call": k });
            let result = match call.kind {
                CallKind::Ping => {
                    client
                        .execute_within("guest-ping", Some(&arguments), timeout)
                        .await
                }
                CallKind::Osinfo => {
                    client
                        .execute_within("guest-get-osinfo", Some(&arguments), timeout)
                        .await
                }
                CallKind::Shutdown => {
                    client
                        .execute_within("guest-shutdown", Some(&arguments), timeout)
                        .await
                }
                CallKind::GivenId => {
                    let request = json!({
                        "execute": "guest-info", "arguments": arguments, "id": format!("given-{k}"),
                    });
                    client.execute_raw_within(&request, timeout).await
                }
                CallKind::Sync => client.sync().await.map(|()| Json::Null),
                CallKind::Reconnect => {
                    client.disconnect();
                    client
                        .execute_within("guest-ping", Some(&arguments), timeout)
                        .await
                }
            };
            let timeout = match call.kind {
                CallKind::Sync => client.timeout(),
                _ => timeout,
            };
            let elapsed = start.elapsed();
            assert!(
                elapsed <= timeout + Duration::from_millis(1),
                "call {k} ({:?}) took {elapsed:?}, its timeout is {timeout:?}",
                call.kind
            );
            outcomes.push(result);
        }
        outcomes
    };
    let outcomes = tokio::select! {
        biased;
        outcomes = calls => outcomes,
        () = agent.serve(listener) => unreachable!("the listener outlives the client"),
    };
    let truth = truth.into_inner();
    for (k, (call, outcome)) in case.calls.iter().zip(&outcomes).enumerate() {
        assert!(
            truth.requests[k] <= 1,
            "call {k} ({:?}) reached the agent {} times",
            call.kind,
            truth.requests[k]
        );
        match outcome {
            Ok(value) => {
                let no_reply_success = matches!(call.kind, CallKind::Shutdown)
                    && value.as_object().is_some_and(serde_json::Map::is_empty);
                let sync = matches!(call.kind, CallKind::Sync);
                assert!(
                    sync || no_reply_success || is_true_answer(value, k, &truth.answers[k]),
                    "call {k} ({:?}) returned {value}, not an answer to its request \
                     (true answers: {:?})",
                    call.kind,
                    truth.answers[k]
                );
            }
            Err(Error::Timeout { .. } | Error::Disconnected { .. } | Error::Protocol(_)) => {}
            Err(Error::Connect { .. }) => panic!("in-memory connect failed for call {k}"),
            Err(e) => {
                let desc = &e.agent_error().expect("an agent error").desc;
                assert!(
                    matches!(call.kind, CallKind::Sync) || truth.errors[k].contains(desc),
                    "call {k} ({:?}) failed with an error not meant for it: {desc}",
                    call.kind
                );
            }
        }
    }
    outcomes
}
