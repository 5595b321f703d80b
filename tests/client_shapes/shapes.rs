//! Correct qemu-ga host clients of four shapes, as in-process session clients for the
//! runner (no process to start, so a loaded machine does not race a client's start-up
//! against the agent).
//!
//! Each shape is as correct as its shape allows; where a real client of that shape has a
//! trait that a hostile guest can exploit, the shape keeps the trait (it is what the
//! catalogue must catch) and fixes everything else. The wire bytes follow the real
//! clients:
//!
//! - `libvirt`: libvirt's qemu_agent.c. A plain `guest-sync` whose id is the clock in
//!   milliseconds (`virTimeMillisNow`), written as
//!   `{"execute":"guest-sync", "arguments":{"id":N}}` on its own; no 0xFF ever. While the
//!   sync is pending, a reply whose return is not the id is ignored; once synced, the
//!   connection stays synced until a timeout (or a protocol error), and then the next call
//!   syncs first. Commands carry no id; the next reply object after the sync is the
//!   answer. Lines that arrive while no call is pending are dropped, as libvirt's event
//!   loop drops them ("Ignoring delayed reply").
//! - `proxmox`: Proxmox VE's PVE::QMPClient for the agent. `guest-sync-delimited` with the
//!   id `int("$$" . "0" . seq)` and the command, without an id, in one write; everything up
//!   to the last 0xFF that two complete lines follow is skipped; the first line must return
//!   the sync id (a smaller id is an older sync and is skipped, another one is an error);
//!   the second line is the answer. A batch of calls shares one connection
//!   (`queue_execute`); any error closes it.
//! - `per-call`: a fresh connection for every call: 0xFF, then `guest-sync-delimited` with a
//!   random 63-bit id, everything up to the 0xFF-prefixed reply with that id skipped, then
//!   the command without an id and the next reply object as its answer; the connection is
//!   closed after the call.
//! - `id-routed`: one 0xFF + `guest-sync-delimited` (random 63-bit id) when the connection
//!   is opened, then every command carries its own random id and only the reply with that
//!   id answers it; no sync per call, not even after a timeout (a late reply is dropped by
//!   its id).
//!
//! All shapes: one total deadline per call (connect, sync and reply), a bounded line
//! buffer, a reconnect after the connection was lost, no command sent twice, and a reply
//! that names a member twice is not JSON to them (QEMU's parser and libvirt's virJSON
//! reject a duplicate key). A no-reply command (guest-shutdown, guest-suspend-*) is
//! followed by a marker (a sync, or an id'd guest-ping for the id-routed shape): its
//! answer, or the channel closing, proves the agent got past the command; silence is a
//! timeout.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qga_harness::runner::{
    Answer, BoxFuture, FailureClass, InProcessClient, InProcessSession, StepRequest,
};
use rand::Rng;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// The longest line a shape buffers: a guest-exec-status reply with both streams at
/// qemu-ga's 16 MiB cap is about 43 MiB of base64.
const MAX_LINE: usize = 48 << 20;

const NO_REPLY: [&str; 4] = [
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
];

/// The four shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Libvirt,
    Proxmox,
    PerCall,
    IdRouted,
}

impl Kind {
    pub fn parse(name: &str) -> Kind {
        match name {
            "libvirt" => Kind::Libvirt,
            "proxmox" => Kind::Proxmox,
            "per-call" => Kind::PerCall,
            "id-routed" => Kind::IdRouted,
            other => panic!("no shape named {other}"),
        }
    }
}

/// A shape as the runner's in-process client.
pub struct ShapeClient(pub Kind);

impl InProcessClient for ShapeClient {
    fn name(&self) -> String {
        format!("the {:?} shape", self.0)
    }

    fn open<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Box<dyn InProcessSession>> {
        let session = Session {
            kind: self.0,
            path: socket.to_owned(),
            conn: None,
            in_sync: false,
            seq: 0,
        };
        Box::pin(async move { Box::new(session) as Box<dyn InProcessSession> })
    }
}

/// How a call failed, in the session contract's classes.
#[derive(Debug)]
enum Class {
    Timeout,
    Disconnected,
    Protocol,
    Agent(String),
}

#[derive(Debug)]
struct Fail {
    class: Class,
    desc: String,
    /// The connection is gone or its stream cannot be followed: drop it.
    lost: bool,
    /// Lost before the command was sent: a new connection may be tried.
    retry: bool,
}

impl Fail {
    fn new(class: Class, desc: impl fmt::Display) -> Fail {
        Fail {
            class,
            desc: desc.to_string(),
            lost: false,
            retry: false,
        }
    }
    fn lost(desc: impl fmt::Display) -> Fail {
        Fail {
            lost: true,
            ..Fail::new(Class::Disconnected, desc)
        }
    }
    fn timeout(what: &str) -> Fail {
        Fail::new(
            Class::Timeout,
            format!("no {what} before the call's deadline"),
        )
    }
    fn protocol(desc: impl fmt::Display) -> Fail {
        Fail::new(Class::Protocol, desc)
    }
}

type Outcome<T> = Result<T, Fail>;

/// One socket with a line buffer; every read is bounded by a deadline.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Where the search for the next newline resumes.
    scanned: usize,
    chunk: Vec<u8>,
}

impl Conn {
    /// A refused or missing socket (a unix-listen agent restarting) is retried every
    /// 20 ms until the call's deadline, as PVE::QMPClient retries its connect.
    async fn open(path: &Path, deadline: Instant) -> Outcome<Conn> {
        loop {
            match tokio::time::timeout_at(deadline, UnixStream::connect(path)).await {
                Ok(Ok(stream)) => {
                    return Ok(Conn {
                        stream,
                        buf: Vec::new(),
                        scanned: 0,
                        chunk: vec![0; 1 << 20],
                    })
                }
                Ok(Err(e)) => {
                    if deadline.saturating_duration_since(Instant::now())
                        <= Duration::from_millis(20)
                    {
                        return Err(Fail::new(Class::Disconnected, format!("connect: {e}")));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => return Err(Fail::timeout("connection")),
            }
        }
    }

    async fn send(&mut self, data: &[u8], deadline: Instant) -> Outcome<()> {
        match tokio::time::timeout_at(deadline, self.stream.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Fail::lost(format!("write: {e}"))),
            Err(_) => Err(Fail {
                lost: true,
                ..Fail::timeout("room to write the request")
            }),
        }
    }

    /// Reads what the socket has, waiting until `deadline`; false on timeout.
    async fn fill(&mut self, deadline: Instant) -> Outcome<bool> {
        match tokio::time::timeout_at(deadline, self.stream.read(&mut self.chunk)).await {
            Err(_) => Ok(false),
            Ok(Ok(0)) => Err(Fail::lost("the agent closed the connection")),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&self.chunk[..n]);
                Ok(true)
            }
            Ok(Err(e)) => Err(Fail::lost(format!("read: {e}"))),
        }
    }

    /// The next complete line in the buffer (without its newline), or None.
    fn take_line(&mut self) -> Outcome<Option<Vec<u8>>> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = self.scanned + at;
                let line = self.buf[..end].to_vec();
                self.buf.drain(..=end);
                self.scanned = 0;
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > MAX_LINE {
                    return Err(Fail {
                        lost: true,
                        ..Fail::protocol(format!("a line longer than {MAX_LINE} bytes"))
                    });
                }
                Ok(None)
            }
        }
    }

    /// The next line, or None when `deadline` passes first.
    async fn read_line(&mut self, deadline: Instant) -> Outcome<Option<Vec<u8>>> {
        loop {
            if let Some(line) = self.take_line()? {
                return Ok(Some(line));
            }
            if !self.fill(deadline).await? {
                return Ok(None);
            }
        }
    }

    /// Drops the complete lines the socket holds now (what arrived between calls).
    fn drop_pending(&mut self) -> Outcome<()> {
        loop {
            match self.stream.try_read(&mut self.chunk) {
                Ok(0) => return Err(Fail::lost("the agent closed the connection")),
                Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Fail::lost(format!("read: {e}"))),
            }
        }
        if let Some(end) = self.buf.iter().rposition(|&b| b == b'\n') {
            self.buf.drain(..=end);
        }
        self.scanned = 0;
        Ok(())
    }

    /// Reads what the socket holds now, keeping it; false when the agent closed it.
    fn still_open(&mut self) -> bool {
        loop {
            match self.stream.try_read(&mut self.chunk) {
                Ok(0) => return false,
                Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.scanned = 0;
    }
}

/// A JSON value whose objects name each member once.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(value) = map.next_value()?;
            if members.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key}")));
            }
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

/// A line as JSON, or None when it is not JSON (garbage, bad UTF-8, too deep, a member
/// named twice) or holds a number no QEMU agent writes (an integer beyond 64 bits, a
/// magnitude beyond the double range: a decoder would round or saturate it). Leading 0xFF
/// bytes are framing (qemu-ga prefixes a guest-sync-delimited reply with one), not part
/// of the JSON.
fn parse(line: &[u8]) -> Option<Value> {
    let start = line.iter().position(|&b| b != 0xFF).unwrap_or(line.len());
    if qga_harness::internals::impossible_number(&line[start..]).is_some() {
        return None;
    }
    let parse = || {
        serde_json::from_slice::<Unique>(&line[start..])
            .ok()
            .map(|u| u.0)
    };
    // A reply of many MiB (hostile.19's is 22) takes a while to parse on a loaded machine:
    // the runtime moves the other tasks on this thread (agents and clients of the cases
    // running at the same time) to another meanwhile, so their timers are not held up.
    if line.len() > BIG_LINE {
        tokio::task::block_in_place(parse)
    } else {
        parse()
    }
}

/// A line longer than this is parsed off the runtime's worker.
const BIG_LINE: usize = 1 << 20;

/// The JSON after a line's last 0xFF.
fn parse_after_last_ff(line: &[u8]) -> Option<Value> {
    let at = line.iter().rposition(|&b| b == 0xFF)?;
    parse(&line[at + 1..])
}

fn is_reply(obj: &Value) -> bool {
    obj.get("return").is_some() || obj.get("error").is_some()
}

fn is_event(obj: &Value) -> bool {
    obj.get("event").is_some()
}

/// A reply object as the call's result, or a failure.
fn answer_of(obj: &Value) -> Outcome<Value> {
    if let Some(error) = obj.get("error") {
        if obj.get("return").is_some() {
            return Err(Fail::protocol("a reply with both return and error"));
        }
        let Some(class) = error.get("class").and_then(Value::as_str) else {
            return Err(Fail::protocol(format!("a malformed error member: {error}")));
        };
        let desc = error.get("desc").and_then(Value::as_str).unwrap_or("");
        return Err(Fail::new(Class::Agent(class.to_owned()), desc));
    }
    Ok(obj.get("return").cloned().unwrap_or(Value::Null))
}

fn same_integer(returned: Option<&Value>, sent: u64) -> bool {
    returned.and_then(Value::as_u64) == Some(sent)
}

fn random_id() -> u64 {
    (rand::rng().random::<u64>() >> 1) | 1 << 62
}

/// A request line with its members in the order real clients write them: `execute`, then
/// `arguments` (when given, or `always_arguments`), then `id`.
fn request_line(
    name: &str,
    arguments: &Map<String, Value>,
    always_arguments: bool,
    id: Option<u64>,
) -> Vec<u8> {
    let mut line = format!("{{\"execute\":{}", Value::from(name));
    if always_arguments || !arguments.is_empty() {
        line.push_str(&format!(
            ",\"arguments\":{}",
            Value::Object(arguments.clone())
        ));
    }
    if let Some(id) = id {
        line.push_str(&format!(",\"id\":{id}"));
    }
    line.push_str("}\n");
    line.into_bytes()
}

fn sync_line(execute: &str, id: u64) -> Vec<u8> {
    format!("{{\"execute\":\"{execute}\",\"arguments\":{{\"id\":{id}}}}}\n").into_bytes()
}

struct Session {
    kind: Kind,
    path: PathBuf,
    conn: Option<Conn>,
    /// libvirt: the connection is synced.
    in_sync: bool,
    /// proxmox: the sync id's sequence number.
    seq: u64,
}

impl InProcessSession for Session {
    fn execute<'a>(&'a mut self, step: &'a StepRequest) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let deadline = Instant::now() + Duration::from_millis(step.timeout_ms);
            let arguments = step.arguments.clone().unwrap_or_default();
            let result = match self.kind {
                Kind::Libvirt => self.libvirt(&step.execute, &arguments, deadline).await,
                Kind::Proxmox => self.proxmox(&step.execute, &arguments, deadline).await,
                Kind::PerCall => self.per_call(&step.execute, &arguments, deadline).await,
                Kind::IdRouted => self.id_routed(&step.execute, &arguments, deadline).await,
            };
            match result {
                Ok(value) => Answer::Return { value },
                Err(fail) => {
                    if fail.lost {
                        self.conn = None;
                    }
                    let class = match fail.class {
                        Class::Timeout => FailureClass::Timeout,
                        Class::Disconnected => FailureClass::Disconnected,
                        Class::Protocol => FailureClass::Protocol,
                        Class::Agent(class) => {
                            return Answer::AgentError {
                                class,
                                desc: fail.desc,
                            }
                        }
                    };
                    Answer::ClientError {
                        class,
                        desc: fail.desc,
                    }
                }
            }
        })
    }
}

impl Session {
    // ---- libvirt ----

    async fn libvirt(
        &mut self,
        name: &str,
        arguments: &Map<String, Value>,
        deadline: Instant,
    ) -> Outcome<Value> {
        let idle_ok = match self.conn.as_mut() {
            Some(conn) => conn.drop_pending().is_ok(),
            None => false,
        };
        if !idle_ok {
            // None yet, or closed while idle (the agent's end of a unix-listen socket).
            self.conn = Some(Conn::open(&self.path, deadline).await?);
            self.in_sync = false;
        }
        if !self.in_sync {
            if let Err(fail) = self.libvirt_sync(deadline).await {
                if !fail.lost || Instant::now() >= deadline {
                    return Err(fail);
                }
                // Lost before the command was written (a unix-listen agent that died with
                // the connection open): a new connection repeats nothing.
                self.conn = Some(Conn::open(&self.path, deadline).await?);
                self.libvirt_sync(deadline).await?;
            }
        }
        let line = request_line(name, arguments, false, None);
        let no_reply = NO_REPLY.contains(&name);
        let conn = self.conn.as_mut().expect("connected");
        conn.send(&line, deadline).await?;
        if no_reply {
            let marker = clock_ms() + 1;
            conn.send(
                format!("{{\"execute\":\"guest-sync\", \"arguments\":{{\"id\":{marker}}}}}\n")
                    .as_bytes(),
                deadline,
            )
            .await?;
            return match self.libvirt_next_reply(deadline).await {
                Err(fail) if fail.lost => Ok(Value::Object(Map::new())),
                Err(fail) => Err(fail),
                Ok(None) => {
                    self.in_sync = false;
                    Err(Fail::timeout(&format!("sign of life after {name}")))
                }
                Ok(Some(obj)) if same_integer(obj.get("return"), marker) => {
                    Ok(Value::Object(Map::new()))
                }
                Ok(Some(obj)) => answer_of(&obj),
            };
        }
        match self.libvirt_next_reply(deadline).await? {
            None => {
                self.in_sync = false;
                Err(Fail::timeout("reply"))
            }
            Some(obj) => answer_of(&obj),
        }
    }

    /// qemuAgentGuestSync: garbage on the first sync is expected (a previous session's
    /// partial line); it ends that sync and a second one is sent.
    async fn libvirt_sync(&mut self, deadline: Instant) -> Outcome<()> {
        let conn = self.conn.as_mut().expect("connected");
        let mut first = true;
        let mut sid = libvirt_send_sync(conn, deadline).await?;
        loop {
            let Some(line) = conn.read_line(deadline).await? else {
                return Err(Fail::timeout("reply to guest-sync"));
            };
            let obj = parse(&line);
            if obj.is_none() && first {
                first = false;
                sid = libvirt_send_sync(conn, deadline).await?;
                continue;
            }
            // Events, errors and other returns are not this sync's reply.
            if let Some(obj) = obj {
                if is_reply(&obj) && same_integer(obj.get("return"), sid) {
                    self.in_sync = true;
                    return Ok(());
                }
            }
        }
    }

    /// The next reply; a line that is not one ends the sync (libvirt's agentError), so the
    /// next call syncs first.
    async fn libvirt_next_reply(&mut self, deadline: Instant) -> Outcome<Option<Value>> {
        let conn = self.conn.as_mut().expect("connected");
        let reply = next_reply(conn, deadline).await;
        if reply.is_err() {
            self.in_sync = false;
        }
        reply
    }

    // ---- proxmox ----

    async fn proxmox(
        &mut self,
        name: &str,
        arguments: &Map<String, Value>,
        deadline: Instant,
    ) -> Outcome<Value> {
        let result = self.proxmox_exchange(name, arguments, deadline).await;
        if result.is_err() {
            // Any error closes the connection (check_queue closes it on error).
            self.conn = None;
        }
        result
    }

    fn proxmox_next_id(&mut self) -> u64 {
        self.seq += 1;
        format!("{}0{}", std::process::id(), self.seq)
            .parse()
            .expect("an id")
    }

    async fn proxmox_exchange(
        &mut self,
        name: &str,
        arguments: &Map<String, Value>,
        deadline: Instant,
    ) -> Outcome<Value> {
        // A connection the agent closed between calls (a unix-listen agent that died) is
        // replaced before anything is written to it, as a closed socket shows at once.
        if self.conn.as_mut().is_some_and(|conn| !conn.still_open()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.path, deadline).await?);
        }
        let sid = self.proxmox_next_id();
        let mut data = sync_line("guest-sync-delimited", sid);
        data.extend(request_line(name, arguments, true, None));
        let marker = NO_REPLY.contains(&name).then(|| self.proxmox_next_id());
        if let Some(marker) = marker {
            data.extend(sync_line("guest-sync-delimited", marker));
        }
        let conn = self.conn.as_mut().expect("connected");
        conn.send(&data, deadline).await?;
        if let Some(marker) = marker {
            return proxmox_no_reply(conn, sid, marker, deadline).await;
        }
        // Where the buffer may hold a newline not yet looked at (a 22 MiB line is not
        // searched again for every piece of it).
        let mut fresh = 0;
        loop {
            let mut found = None;
            if conn.buf[fresh.min(conn.buf.len())..].contains(&b'\n') {
                found = split_at_last_ff(&conn.buf);
            }
            fresh = conn.buf.len();
            if let Some((sync, answer, used)) = found {
                fresh = 0;
                conn.buf.drain(..used);
                conn.scanned = 0;
                if proxmox_sync_state(&sync, sid)? == SyncState::Older {
                    continue;
                }
                return match parse(&answer) {
                    Some(obj) if is_reply(&obj) => answer_of(&obj),
                    _ => Err(Fail::protocol(format!(
                        "not a reply: {}",
                        String::from_utf8_lossy(&answer[..answer.len().min(200)])
                    ))),
                };
            }
            if conn.buf.len() > MAX_LINE {
                return Err(Fail {
                    lost: true,
                    ..Fail::protocol(format!("more than {MAX_LINE} bytes without an answer"))
                });
            }
            if !conn.fill(deadline).await? {
                return Err(Fail::timeout("reply"));
            }
        }
    }

    // ---- per-call ----

    async fn per_call(
        &mut self,
        name: &str,
        arguments: &Map<String, Value>,
        deadline: Instant,
    ) -> Outcome<Value> {
        loop {
            let mut conn = Conn::open(&self.path, deadline).await?;
            match per_call_exchange(&mut conn, name, arguments, deadline).await {
                // Lost before the command went out (a unix-listen agent that died with the
                // connection in its backlog): nothing was sent twice, so try again.
                Err(fail) if fail.retry => continue,
                Err(mut fail) => {
                    // The connection is closed after every call anyway.
                    fail.lost = false;
                    return Err(fail);
                }
                Ok(value) => return Ok(value),
            }
        }
    }

    // ---- id-routed ----

    async fn id_routed(
        &mut self,
        name: &str,
        arguments: &Map<String, Value>,
        deadline: Instant,
    ) -> Outcome<Value> {
        while self.conn.is_none() {
            let mut conn = Conn::open(&self.path, deadline).await?;
            // A connection whose sync failed is not kept: the next call starts over, or
            // this one, when the connection was lost before the command was written.
            match delimited_sync(&mut conn, deadline).await {
                Ok(()) => self.conn = Some(conn),
                Err(fail) if fail.lost && Instant::now() < deadline => continue,
                Err(fail) => return Err(fail),
            }
        }
        let conn = self.conn.as_mut().expect("connected");
        let cid = random_id();
        let mut data = request_line(name, arguments, false, Some(cid));
        let marker = NO_REPLY.contains(&name).then(random_id);
        if let Some(marker) = marker {
            data.extend(request_line("guest-ping", &Map::new(), false, Some(marker)));
        }
        conn.send(&data, deadline).await?;
        let obj = loop {
            let line = match conn.read_line(deadline).await {
                Ok(line) => line,
                Err(fail) if fail.lost && marker.is_some() => {
                    return Ok(Value::Object(Map::new()));
                }
                Err(fail) => return Err(fail),
            };
            let Some(line) = line else {
                // Whatever partial line is buffered may never be completed (an agent that
                // died mid-reply): drop it, so the next reply starts a clean line.
                conn.clear();
                return Err(Fail::timeout("reply with the command's id"));
            };
            if let Some(obj) = parse(&line) {
                let id = obj.get("id").and_then(Value::as_u64);
                if id.is_some() && (id == Some(cid) || id == marker) {
                    break obj;
                }
            }
        };
        if marker.is_some() && obj.get("id").and_then(Value::as_u64) == marker {
            return Ok(Value::Object(Map::new()));
        }
        if !is_reply(&obj) {
            return Err(Fail::protocol(
                "a reply with the command's id but neither return nor error",
            ));
        }
        answer_of(&obj)
    }
}

fn clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn libvirt_send_sync(conn: &mut Conn, deadline: Instant) -> Outcome<u64> {
    let sid = clock_ms();
    conn.send(
        format!("{{\"execute\":\"guest-sync\", \"arguments\":{{\"id\":{sid}}}}}\n").as_bytes(),
        deadline,
    )
    .await?;
    Ok(sid)
}

/// PVE's `^.*\xff([^\n]+}\r?\n[^\n]+})\r?\n(.*)$` (QMPClient.pm `mux_input`): the last
/// 0xFF that two complete lines follow, each ending in `}`. A line that does not end in
/// `}` (`42`, `[]`, a cut-off object) makes the regex backtrack to an earlier 0xFF, or
/// wait for more input.
fn split_at_last_ff(buf: &[u8]) -> Option<(Vec<u8>, Vec<u8>, usize)> {
    let mut end = buf.len();
    loop {
        let ff = buf[..end].iter().rposition(|&b| b == 0xFF)?;
        let first = buf[ff + 1..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| ff + 1 + p);
        let second = first.and_then(|f| {
            buf[f + 1..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| f + 1 + p)
        });
        if let (Some(first), Some(second)) = (first, second) {
            let line1 = &buf[ff + 1..first];
            let line2 = &buf[first + 1..second];
            if ends_in_brace(line1) && ends_in_brace(line2) {
                return Some((line1.to_vec(), line2.to_vec(), second + 1));
            }
        }
        end = ff;
    }
}

/// `[^\n]+}\r?` : at least one byte, then `}`, then at most one carriage return.
fn ends_in_brace(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.len() >= 2 && line.ends_with(b"}")
}

#[derive(PartialEq, Eq)]
enum SyncState {
    Ok,
    Older,
}

/// Perl compares the id as a number: 850201.0 is 850201; a string is not an id here.
fn proxmox_sync_state(line: &[u8], sid: u64) -> Outcome<SyncState> {
    let returned = parse(line).and_then(|obj| obj.get("return").cloned());
    let Some(Value::Number(n)) = returned else {
        return Err(Fail::protocol(format!(
            "sync reply without the id: {}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        )));
    };
    let older = match n.as_u64() {
        Some(u) => u < sid,
        None => n.as_f64().is_some_and(|f| f < sid as f64),
    };
    let same = match n.as_u64() {
        Some(u) => u == sid,
        None => n.as_f64().is_some_and(|f| f == sid as f64),
    };
    if older {
        Ok(SyncState::Older)
    } else if same {
        Ok(SyncState::Ok)
    } else {
        Err(Fail::protocol(format!(
            "got wrong command id {n} (expected {sid})"
        )))
    }
}

/// The command's sync, then its error or the marker's sync reply (or EOF).
async fn proxmox_no_reply(
    conn: &mut Conn,
    sid: u64,
    marker: u64,
    deadline: Instant,
) -> Outcome<Value> {
    let mut synced = false;
    loop {
        let line = match conn.read_line(deadline).await {
            Ok(line) => line,
            Err(fail) if fail.lost && synced => return Ok(Value::Object(Map::new())),
            Err(fail) => return Err(fail),
        };
        let Some(line) = line else {
            return Err(Fail::timeout("sign of life"));
        };
        if line.contains(&0xFF) {
            let returned = parse_after_last_ff(&line).and_then(|o| o.get("return").cloned());
            if same_integer(returned.as_ref(), sid) {
                synced = true;
            } else if synced && same_integer(returned.as_ref(), marker) {
                return Ok(Value::Object(Map::new()));
            }
            continue;
        }
        if synced {
            if let Some(obj) = parse(&line) {
                if is_reply(&obj) {
                    return answer_of(&obj);
                }
            }
        }
    }
}

/// 0xFF and a guest-sync-delimited with a random id; everything up to its 0xFF-prefixed
/// reply is skipped.
async fn delimited_sync(conn: &mut Conn, deadline: Instant) -> Outcome<()> {
    let sid = random_id();
    let mut data = vec![0xFF];
    data.extend(sync_line("guest-sync-delimited", sid));
    conn.send(&data, deadline).await?;
    loop {
        let Some(line) = conn.read_line(deadline).await? else {
            return Err(Fail::timeout("reply to guest-sync-delimited"));
        };
        if !line.contains(&0xFF) {
            continue;
        }
        if let Some(obj) = parse_after_last_ff(&line) {
            if is_reply(&obj) && same_integer(obj.get("return"), sid) {
                return Ok(());
            }
        }
    }
}

/// The next reply object (events skipped); anything else is a protocol error.
async fn next_reply(conn: &mut Conn, deadline: Instant) -> Outcome<Option<Value>> {
    loop {
        let Some(line) = conn.read_line(deadline).await? else {
            return Ok(None);
        };
        match parse(&line) {
            Some(obj) if is_event(&obj) => continue,
            Some(obj) if is_reply(&obj) => return Ok(Some(obj)),
            _ => {
                return Err(Fail::protocol(format!(
                    "not a reply: {}",
                    String::from_utf8_lossy(&line[..line.len().min(200)])
                )))
            }
        }
    }
}

async fn per_call_exchange(
    conn: &mut Conn,
    name: &str,
    arguments: &Map<String, Value>,
    deadline: Instant,
) -> Outcome<Value> {
    if let Err(mut fail) = delimited_sync(conn, deadline).await {
        if fail.lost && Instant::now() < deadline {
            fail.retry = true;
        }
        return Err(fail);
    }
    let mut data = request_line(name, arguments, false, None);
    if NO_REPLY.contains(&name) {
        let marker = random_id();
        data.extend(sync_line("guest-sync", marker));
        conn.send(&data, deadline).await?;
        return match next_reply(conn, deadline).await {
            Err(fail) if fail.lost => Ok(Value::Object(Map::new())),
            Err(fail) => Err(fail),
            Ok(None) => Err(Fail::timeout(&format!("sign of life after {name}"))),
            Ok(Some(obj)) if same_integer(obj.get("return"), marker) => {
                Ok(Value::Object(Map::new()))
            }
            Ok(Some(obj)) => answer_of(&obj),
        };
    }
    conn.send(&data, deadline).await?;
    match next_reply(conn, deadline).await? {
        None => Err(Fail::timeout("reply")),
        Some(obj) => answer_of(&obj),
    }
}
