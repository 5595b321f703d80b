//! One qemu-ga process: its parser, its dispatcher and its single-threaded loop.
//!
//! qemu-ga reads at most 4096 bytes at a time, feeds them to its one JSON parser, and
//! handles every finished item in order before it reads again, writing each reply in one
//! write (and blocking until it is written). The parser and the dispatcher belong to the
//! process: a new process starts with fresh ones. The guest outlives the process.
//!
//! Dropping the future returned by [`run`] is the process dying: what it read and did not
//! answer dies with it. Not polling it is the process being frozen. Fault plans (see
//! `faults`) are carried out here, on the same single thread: a delay or a hang holds up
//! every later request, as a slow command does in qemu-ga; a death ends the future with
//! [`Exit::Died`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::faults::{Chunking, Injected, Out, Plan, RequestInfo};
use super::intercept::{Interceptor, Request};
use super::listen::ListenLink;
use super::origin::{Parts, Tag};
use super::port::{Port, PortRead, ReadInto};
use super::reply_writer::{ReplyWriter, Sink};
use super::status::StatusBoard;
use crate::agent::{AgentConfig, Dispatcher};
use crate::fault::Restart;
use crate::guest::{Guest, PowerEvent};
use crate::proxy::Upstream;
use crate::transcript::writer::Transcript;
use crate::transcript::{ConnSpan, FaultOutput, Origin, RequestRecord};
use crate::wire::{write_json, ItemSpan, Parsed, Streamer, Value};

/// A request's value goes into its transcript record up to this input size; a larger one
/// is recorded by its size (its bytes are in the bytes records).
const RECORDED_VALUE_LIMIT: u64 = 64 << 10;

/// qemu-ga's read size (`QGA_READ_COUNT_DEFAULT`, qga/guest-agent-core.h).
pub(crate) const READ_SIZE: usize = 4096;

/// The most raw input kept for an agent that may die before reading a request: a request
/// longer than this goes back to the channel re-encoded rather than byte for byte.
const RAW_INPUT_LIMIT: usize = 1 << 20;

/// The guest, shared by the agent processes it sees come and go.
pub(crate) type SharedGuest = Arc<Mutex<Guest>>;

/// A request that the process exit at its next read, as SIGTERM makes qemu-ga quit its
/// main loop once the current read is handled.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    requested: AtomicBool,
    notify: Notify,
}

impl StopSignal {
    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Completes once a stop was requested.
    pub(crate) async fn requested(&self) {
        while !self.is_requested() {
            self.notify.notified().await;
        }
    }
}

/// Where the process's bytes come from and go to.
#[derive(Debug)]
// One per agent: boxing the larger variant would save about 200 bytes per agent (2 MB in a
// fleet of 10,000) at the cost of an indirection on every read and write.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Link {
    /// virtio-serial: the port, with QEMU's chardev on the other side.
    Port(Arc<Port>),
    /// unix-listen: the process's own listening socket and its one client.
    Listen(ListenLink),
}

/// What one read of the link gave the process.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// `n` bytes: bytes `at..at + n` of what connection `conn` sent.
    Bytes { n: usize, conn: u64, at: u64 },
    /// A new client's bytes begin here, and the parser starts afresh per connection.
    NewConnection,
    /// A stop was requested while the process waited for input.
    Stop,
}

/// The process's read buffer, allocated only once there is something to read and released
/// when the process waits again: an idle agent of a fleet of thousands holds none.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffer(Option<Box<[u8]>>);

impl ReadBuffer {
    /// The buffer, [`READ_SIZE`] bytes, allocated on first use.
    pub(crate) fn get(&mut self) -> &mut [u8] {
        self.0
            .get_or_insert_with(|| vec![0u8; READ_SIZE].into_boxed_slice())
    }

    /// Bytes `..n` of the buffer (allocated if it is not).
    fn filled(&mut self, n: usize) -> &[u8] {
        &self.get()[..n]
    }

    /// Frees the buffer until the next read.
    fn release(&mut self) {
        self.0 = None;
    }
}

impl ReadInto for ReadBuffer {
    fn buffer(&mut self) -> &mut [u8] {
        self.get()
    }
}

impl Link {
    /// Waits for input and reads it into `buf` (allocated only once there is input to read
    /// from the port).
    async fn read(&mut self, buf: &mut ReadBuffer, stop: &StopSignal) -> Input {
        match self {
            // A stop request wins over input that arrived at the same time.
            Link::Port(port) => tokio::select! {
                biased;
                () = stop.requested() => Input::Stop,
                read = port.read(buf) => match read {
                    PortRead::Bytes { n, conn, at } => Input::Bytes { n, conn, at },
                    PortRead::NewConnection => Input::NewConnection,
                },
            },
            Link::Listen(link) => link.read(buf, stop).await,
        }
    }

    /// True when more input can be read at once (the port has some); unknown for a
    /// socket, so false.
    fn has_input(&self) -> bool {
        match self {
            Link::Port(port) => port.has_input(),
            Link::Listen(_) => false,
        }
    }

    /// Closes the current client's connection; the agent goes on.
    fn close_client(&mut self) {
        match self {
            Link::Port(port) => port.drop_client(),
            Link::Listen(link) => link.close_client(),
        }
    }
}

impl Sink for Link {
    async fn write(&mut self, reply: Vec<u8>, parts: Parts) {
        match self {
            Link::Port(port) => port.write(reply, parts).await,
            Link::Listen(link) => link.write(&reply, &parts).await,
        }
    }

    fn serves(&self, conn: u64) -> bool {
        match self {
            Link::Port(port) => port.serves(conn),
            Link::Listen(link) => link.serves(conn),
        }
    }
}

/// Everything a new process starts with.
pub(crate) struct ProcessParts {
    pub(crate) guest: SharedGuest,
    pub(crate) config: AgentConfig,
    pub(crate) link: Link,
    pub(crate) stop: Arc<StopSignal>,
    /// Where a successful guest-shutdown or guest-suspend-* is reported.
    pub(crate) power: mpsc::UnboundedSender<PowerEvent>,
    pub(crate) faults: Interceptor,
    /// Bytes already in the parser when the process starts (a previous client's partial
    /// request, as a scenario sets it up).
    pub(crate) parser_input: Option<Vec<u8>>,
    /// A real agent that answers the requests instead of the simulated guest (a proxy).
    pub(crate) upstream: Option<Upstream>,
    /// The mock's counters (request and output numbers).
    pub(crate) status: StatusBoard,
    pub(crate) transcript: Option<Transcript>,
}

/// How a process ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It was asked to stop and exited cleanly.
    Stopped,
    /// A fault killed it; it is down for `downtime`. With `unread` it died before reading
    /// a request: those bytes go back to the channel ahead of what the process did not
    /// read, and nothing is lost; without, what it did not read is lost.
    Died {
        unread: Option<Vec<u8>>,
        downtime: Restart,
    },
    /// A fault made the VM exit.
    VmExited,
}

/// An item from the parser, with where its raw bytes start in [`RawInput`] when kept, and
/// where its bytes are in the parser's input (then, in what clients sent).
struct Item {
    parsed: Parsed,
    raw_from: Option<usize>,
    span: ItemSpan,
    input: Vec<ConnSpan>,
    /// The connection whose bytes completed it (0: input from before any client).
    conn: u64,
}

impl Item {
    fn new(parsed: Parsed, raw_from: Option<usize>, span: ItemSpan) -> Item {
        Item {
            parsed,
            raw_from,
            span,
            input: Vec::new(),
            conn: 0,
        }
    }
}

/// Which client sent each run of bytes the process fed its parser: an item's position in
/// the parser's input becomes spans of what clients sent, including a previous client's
/// leftover input that a later client's bytes completed.
#[derive(Debug, Default)]
struct InputMap {
    runs: VecDeque<Run>,
    /// Bytes fed to the parser so far (the lexer counts the same way).
    fed: u64,
}

#[derive(Clone, Copy, Debug)]
struct Run {
    start: u64,
    len: u64,
    conn: u64,
    conn_at: u64,
}

impl InputMap {
    fn push(&mut self, len: usize, conn: u64, conn_at: u64) {
        let start = self.fed;
        let len = len as u64;
        self.fed += len;
        match self.runs.back_mut() {
            Some(last)
                if last.conn == conn
                    && last.start + last.len == start
                    && last.conn_at + last.len == conn_at =>
            {
                last.len += len;
            }
            _ => self.runs.push_back(Run {
                start,
                len,
                conn,
                conn_at,
            }),
        }
    }

    /// The client bytes of parser input `from..to`.
    fn spans(&self, from: u64, to: u64) -> Vec<ConnSpan> {
        self.runs
            .iter()
            .filter_map(|run| {
                let start = from.max(run.start);
                let end = to.min(run.start + run.len);
                (start < end).then(|| ConnSpan {
                    conn: run.conn,
                    from: run.conn_at + (start - run.start),
                    to: run.conn_at + (end - run.start),
                })
            })
            .collect()
    }

    /// Items end in order: nothing before `offset` will be asked for again.
    fn forget_before(&mut self, offset: u64) {
        while self
            .runs
            .front()
            .is_some_and(|run| run.start + run.len <= offset)
        {
            self.runs.pop_front();
        }
    }
}

/// The raw bytes of the items not handled yet, kept only while some rule can kill the
/// agent before it reads a request: they go back to the channel then.
#[derive(Debug, Default)]
struct RawInput {
    bytes: Vec<u8>,
    /// Where the next item's bytes start in `bytes`.
    item_start: usize,
    /// False while the bytes of the current item are not all known (tracking started in
    /// its middle, or it outgrew the limit).
    valid: bool,
    on: bool,
}

impl RawInput {
    fn feed(
        &mut self,
        streamer: &mut Streamer,
        chunk: &[u8],
        items: &mut VecDeque<Item>,
        track: bool,
    ) {
        if !track {
            self.on = false;
            streamer.feed_spans(chunk, &mut |parsed, span| {
                items.push_back(Item::new(parsed, None, span));
            });
            return;
        }
        if !self.on {
            self.on = true;
            self.bytes.clear();
            self.item_start = 0;
            self.valid = streamer.is_idle();
        }
        // One byte at a time, so every item's first byte is known: slower, and only while
        // a die-before-read rule is loaded.
        for &byte in chunk {
            if self.valid && self.bytes.len() >= RAW_INPUT_LIMIT {
                self.valid = false;
            }
            if self.valid {
                self.bytes.push(byte);
            }
            let from = self.valid.then_some(self.item_start);
            let before = items.len();
            streamer.feed_spans(&[byte], &mut |parsed, span| {
                items.push_back(Item::new(parsed, from, span));
            });
            if items.len() > before {
                if !self.valid {
                    self.valid = true;
                    self.bytes.clear();
                }
                self.item_start = self.bytes.len();
            }
        }
    }

    /// Every item read so far was handled: their bytes are no longer needed.
    fn batch_done(&mut self) {
        let start = self.item_start.min(self.bytes.len());
        self.bytes.drain(..start);
        self.item_start = 0;
    }

    fn reset(&mut self) {
        self.bytes.clear();
        self.item_start = 0;
        self.valid = true;
    }

    /// The bytes from an item's start to the end of what was read.
    fn from(&self, start: usize) -> &[u8] {
        self.bytes.get(start..).unwrap_or_default()
    }
}

/// The running process.
struct Agent {
    guest: SharedGuest,
    dispatcher: Dispatcher,
    streamer: Streamer,
    link: Link,
    stop: Arc<StopSignal>,
    power: mpsc::UnboundedSender<PowerEvent>,
    faults: Interceptor,
    writer: ReplyWriter,
    raw: RawInput,
    items: VecDeque<Item>,
    inputs: InputMap,
    status: StatusBoard,
    transcript: Option<Transcript>,
    /// Reading stopped by a fault: until then, or (`Some(None)`) for good.
    not_reading: Option<Option<Instant>>,
    upstream: Option<Upstream>,
}

/// Runs one agent process until it is asked to stop or a fault ends it.
pub(crate) async fn run(parts: ProcessParts) -> Exit {
    let ProcessParts {
        guest,
        config,
        link,
        stop,
        power,
        faults,
        parser_input,
        upstream,
        status,
        transcript,
    } = parts;
    let mut agent = Agent {
        guest,
        dispatcher: Dispatcher::new(config),
        streamer: Streamer::new(),
        link,
        stop,
        power,
        faults,
        writer: ReplyWriter::default(),
        raw: RawInput {
            valid: true,
            ..RawInput::default()
        },
        items: VecDeque::new(),
        inputs: InputMap::default(),
        status,
        transcript,
        not_reading: None,
        upstream,
    };
    agent.run(parser_input).await
}

impl Agent {
    /// The process's loop. What it awaits between reads (handling items, carrying out a
    /// fault's plan) is boxed: those futures are large and live only while they run, so
    /// an idle agent of a fleet of thousands keeps just the small reading state.
    async fn run(&mut self, parser_input: Option<Vec<u8>>) -> Exit {
        if let Some(plan) = self.faults.on_start() {
            if let Some(exit) = Box::pin(self.execute(plan, None)).await {
                return exit;
            }
        }
        if let Some(bytes) = parser_input {
            // Input from before any client: connection 0.
            self.feed(&bytes, 0, 0);
            if let Some(exit) = Box::pin(self.handle_items()).await {
                return exit;
            }
        }
        let mut buf = ReadBuffer::default();
        loop {
            if !self.link.has_input() {
                buf.release();
            }
            if self.stop.is_requested() {
                return Exit::Stopped;
            }
            while let Some(plan) = self.faults.take_event() {
                if let Some(exit) = Box::pin(self.execute(plan, None)).await {
                    return exit;
                }
            }
            if let Some(until) = self.not_reading {
                let resumed = tokio::select! {
                    biased;
                    () = self.stop.requested() => return Exit::Stopped,
                    () = self.faults.event_ready() => false,
                    () = sleep_until_opt(until) => true,
                };
                if resumed {
                    self.not_reading = None;
                }
                continue;
            }
            let input = tokio::select! {
                biased;
                () = self.faults.event_ready() => continue,
                input = self.link.read(&mut buf, &self.stop) => input,
            };
            match input {
                Input::Bytes { n, conn, at } => self.feed(buf.filled(n), conn, at),
                Input::NewConnection => {
                    self.streamer.reset();
                    self.raw.reset();
                }
                Input::Stop => return Exit::Stopped,
            }
            if let Some(exit) = Box::pin(self.handle_items()).await {
                return exit;
            }
        }
    }

    /// Feeds bytes `at..` of what connection `conn` sent to the parser; each item it
    /// completes learns where its bytes came from.
    fn feed(&mut self, bytes: &[u8], conn: u64, at: u64) {
        let track = self.faults.tracks_raw_input();
        let before = self.items.len();
        self.inputs.push(bytes.len(), conn, at);
        self.raw
            .feed(&mut self.streamer, bytes, &mut self.items, track);
        let mut last_end = None;
        for item in self.items.iter_mut().skip(before) {
            item.input = self.inputs.spans(item.span.start, item.span.end);
            item.conn = item.input.last().map_or(conn, |s| s.conn);
            last_end = Some(item.span.end);
        }
        if let Some(end) = last_end {
            self.inputs.forget_before(end);
        }
    }

    /// Numbers a request and records what it is and where its bytes came from.
    fn record_request(&self, item: &Item) -> u64 {
        let number = self.status.next_request();
        let Some(transcript) = &self.transcript else {
            return number;
        };
        let size: u64 = item.input.iter().map(|s| s.to - s.from).sum();
        let mut record = RequestRecord {
            request: number,
            conn: item.conn,
            input: item.input.clone(),
            command: None,
            value: None,
            size: None,
            error: None,
            stray: None,
        };
        match &item.parsed {
            Parsed::Value(value) => {
                if let Value::Object(object) = value {
                    record.command = object
                        .get("execute")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                if size <= RECORDED_VALUE_LIMIT {
                    record.value = Some(value.to_serde());
                } else {
                    record.size = Some(size);
                }
            }
            Parsed::Error(desc) => {
                record.error = Some(desc.clone());
                record.stray = item.span.stray;
            }
        }
        transcript.request(&record);
        number
    }

    /// A new output: what it is and the connection it is for.
    fn tag(&self, origin: Origin, for_conn: Option<u64>) -> Arc<Tag> {
        Arc::new(Tag {
            output: self.status.next_output(),
            origin,
            for_conn,
        })
    }

    /// The tag of the agent's answer to a request.
    fn answer_tag(&self, handled: &Handled) -> Arc<Tag> {
        let origin = if handled.parse_error {
            Origin::ParseError {
                request: handled.number,
                input: handled.input.clone(),
            }
        } else {
            Origin::Reply {
                request: handled.number,
            }
        };
        self.tag(origin, Some(handled.conn))
    }

    /// Handles every item read so far, in order.
    async fn handle_items(&mut self) -> Option<Exit> {
        while let Some(item) = self.items.pop_front() {
            if let Some(exit) = self.handle(item).await {
                return Some(exit);
            }
        }
        self.raw.batch_done();
        // Idle now: what a coalesce group gathered goes out.
        if !self.link.has_input() {
            self.writer.flush_group(&mut self.link).await;
        }
        None
    }

    async fn handle(&mut self, item: Item) -> Option<Exit> {
        let number = self.record_request(&item);
        let fired = self.faults.on_request(&Request::new(&item.parsed, number));
        let handled = Handled {
            number,
            conn: item.conn,
            parse_error: matches!(item.parsed, Parsed::Error(_)),
            input: item.input.clone(),
        };
        match fired {
            None => {
                if let Some(reply) = self.dispatch(item.parsed).await {
                    self.faults.wrote_reply(&reply);
                    let tag = self.answer_tag(&handled);
                    if self.writer.is_idle() {
                        let parts = Parts::whole(reply.len(), &tag);
                        self.link.write(reply, parts).await;
                    } else {
                        self.writer
                            .write(
                                &mut self.link,
                                Out::bytes(reply),
                                tag,
                                &Chunking::Whole,
                                None,
                            )
                            .await;
                    }
                }
                None
            }
            Some((plan, info)) => self.execute(plan, Some((item, info, handled))).await,
        }
    }

    /// Dispatches one item on the guest, or forwards it to the real agent behind a proxy;
    /// returns the reply bytes, if any. What does not parse is answered here either way:
    /// the parser is qemu-ga's, and so are its error replies.
    async fn dispatch(&mut self, item: Parsed) -> Option<Vec<u8>> {
        if let (Some(upstream), Parsed::Value(request)) = (&mut self.upstream, &item) {
            return upstream.forward(request).await;
        }
        let (dispatched, power_event) = {
            let mut guest = self.guest.lock().unwrap_or_else(PoisonError::into_inner);
            let dispatched = self.dispatcher.dispatch(item, &mut guest);
            (dispatched, guest.take_power_event())
        };
        if let Some(event) = power_event {
            // The supervisor outlives every process, so the send cannot fail while anyone
            // listens; if it did, nobody would care about the event.
            let _ = self.power.send(event);
        }
        dispatched.reply
    }

    /// The bytes a request that was not read yet gives back to the channel: its own raw
    /// bytes and everything read after it, or (when those were not kept) the request
    /// re-encoded.
    fn unread(&self, item: &Item) -> Vec<u8> {
        match (item.raw_from, &item.parsed) {
            (Some(start), _) => self.raw.from(start).to_vec(),
            (None, Parsed::Value(value)) => {
                let mut bytes = Vec::new();
                write_json(value, &mut bytes);
                bytes
            }
            (None, Parsed::Error(_)) => Vec::new(),
        }
    }

    async fn write(&mut self, out: Out, tag: Arc<Tag>, chunking: &Chunking, cut: Option<usize>) {
        self.writer
            .write(&mut self.link, out, tag, chunking, cut)
            .await;
    }

    /// Writes what a fault rule adds beside a reply.
    async fn write_injected(
        &mut self,
        injected: Injected,
        request: Option<u64>,
        conn: Option<u64>,
    ) {
        let tag = self.tag(
            Origin::Fault {
                rule: injected.rule,
                fault: injected.kind,
                request,
            },
            conn,
        );
        self.write(injected.out, tag, &Chunking::Whole, None).await;
    }

    /// Carries out a plan: for a request (with its item and what its reply needs), or for
    /// a start or connect event (without).
    async fn execute(
        &mut self,
        mut plan: Plan,
        request: Option<(Item, RequestInfo, Handled)>,
    ) -> Option<Exit> {
        let died = |plan: &Plan, unread: Option<Vec<u8>>| {
            Some(Exit::Died {
                unread,
                downtime: plan.downtime(),
            })
        };
        if plan.die_before_read {
            if let (Some((_, _, handled)), Some(transcript)) = (&request, &self.transcript) {
                transcript.request_unread(handled.number);
            }
            let unread = request
                .as_ref()
                .map(|(item, _, _)| self.unread(item))
                .unwrap_or_default();
            return died(&plan, Some(unread));
        }
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        if plan.vm_exit {
            return Some(Exit::VmExited);
        }
        if plan.die_after_read {
            return died(&plan, None);
        }
        if plan.close_client {
            self.link.close_client();
        }
        let (dispatched, info, handled) = match request {
            Some((item, info, handled)) => {
                let reply = if plan.dispatch {
                    self.dispatch(item.parsed).await
                } else {
                    None
                };
                (reply, info, Some(handled))
            }
            None => (None, RequestInfo::default(), None),
        };
        let fired_on = handled.as_ref().map(|h| h.number);
        let for_conn = handled.as_ref().map(|h| h.conn).or(plan.conn);
        let reply = plan.shape_reply(dispatched.map(Out::bytes), &info);
        // Output injected before the reply counts in a coalesce group too: a stray line
        // and the answer can reach the client in one write.
        if let Some(count) = plan.coalesce {
            self.writer.open_group(count);
        }
        for injected in std::mem::take(&mut plan.before) {
            self.write_injected(injected, fired_on, for_conn).await;
        }
        if plan.hang {
            // Stuck in the command for good: nothing more is read or answered until the
            // process is killed. Buffered output still goes out, as a blocking call would
            // not hold it back.
            self.writer.flush_group(&mut self.link).await;
            return std::future::pending().await;
        }
        match reply {
            Some(reply) => {
                if let Some(bytes) = reply.as_single_buffer() {
                    self.faults.wrote_reply(bytes);
                }
                // A reply to no request (a connect or start rule's) is the rule's own.
                let tag = match &handled {
                    Some(handled) => self.answer_tag(handled),
                    None => self.tag(
                        Origin::Fault {
                            rule: plan.rules.first().copied().unwrap_or_default(),
                            fault: FaultOutput::MadeUpReply,
                            request: None,
                        },
                        for_conn,
                    ),
                };
                let copy = plan.duplicate.map(|rule| {
                    let tag = self.tag(
                        Origin::Fault {
                            rule,
                            fault: FaultOutput::Duplicate,
                            request: fired_on,
                        },
                        for_conn,
                    );
                    (reply.clone(), tag)
                });
                // A reply already waits for the next one: this is it, so two swapped
                // replies trade places instead of both waiting.
                if plan.swap && plan.cut.is_none() && !self.writer.holds_swapped() {
                    self.writer.hold(reply, tag);
                    if let Some((copy, tag)) = copy {
                        self.writer.hold(copy, tag);
                    }
                } else {
                    self.write(reply, tag, &plan.chunking, plan.cut).await;
                    if plan.cut.is_some() {
                        return died(&plan, None);
                    }
                    if let Some((copy, tag)) = copy {
                        self.write(copy, tag, &plan.chunking, None).await;
                    }
                }
            }
            None if plan.cut.is_some() => {
                // Nothing to cut short: the agent dies without writing.
                self.writer.flush_group(&mut self.link).await;
                return died(&plan, None);
            }
            None => {}
        }
        for injected in std::mem::take(&mut plan.after) {
            self.write_injected(injected, fired_on, for_conn).await;
        }
        if let Some(pause) = plan.stop_reading {
            self.not_reading = Some(pause.map(|d| Instant::now() + d));
        }
        if plan.restart.is_some() {
            // Alone, `restart` kills the agent right after its reply went out.
            self.writer.flush_group(&mut self.link).await;
            return died(&plan, None);
        }
        None
    }
}

/// What the process knows about the request it is handling.
struct Handled {
    number: u64,
    conn: u64,
    parse_error: bool,
    input: Vec<ConnSpan>,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(raw: &mut RawInput, streamer: &mut Streamer, chunk: &[u8]) -> Vec<Item> {
        let mut items = VecDeque::new();
        raw.feed(streamer, chunk, &mut items, true);
        items.into_iter().collect()
    }

    #[test]
    fn raw_input_knows_where_each_item_starts() {
        let mut raw = RawInput {
            valid: true,
            ..RawInput::default()
        };
        let mut streamer = Streamer::new();
        let items = feed(&mut raw, &mut streamer, b"{\"a\":1} {\"b\"");
        assert_eq!(items.len(), 1);
        assert_eq!(
            raw.from(items[0].raw_from.expect("kept")),
            b"{\"a\":1} {\"b\""
        );
        raw.batch_done();
        // The partial item spans reads: its bytes start in the earlier one.
        let items = feed(&mut raw, &mut streamer, b":2}\xff");
        assert_eq!(items.len(), 2, "a value and a stray-byte error");
        assert_eq!(
            raw.from(items[0].raw_from.expect("kept")),
            b" {\"b\":2}\xff"
        );
        assert_eq!(raw.from(items[1].raw_from.expect("kept")), b"\xff");
    }

    #[test]
    fn raw_input_that_starts_mid_item_is_not_trusted_until_the_next_item() {
        let mut raw = RawInput {
            valid: true,
            ..RawInput::default()
        };
        let mut streamer = Streamer::new();
        let mut items = VecDeque::new();
        raw.feed(&mut streamer, b"{\"a\"", &mut items, false);
        let items = feed(&mut raw, &mut streamer, b":1}{\"b\":2}");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].raw_from, None, "its first bytes were not kept");
        assert_eq!(raw.from(items[1].raw_from.expect("kept")), b"{\"b\":2}");
    }
}
