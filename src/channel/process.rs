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

use super::faults::{Chunking, Out, Plan, RequestInfo};
use super::intercept::{Interceptor, Request};
use super::listen::ListenLink;
use super::port::{Port, PortRead};
use super::reply_writer::{ReplyWriter, Sink};
use crate::agent::{AgentConfig, Dispatcher};
use crate::fault::Restart;
use crate::guest::{Guest, PowerEvent};
use crate::received::PendingRecord;
use crate::wire::{write_json, Parsed, Streamer};

/// qemu-ga's read size (`QGA_READ_COUNT_DEFAULT`, qga/guest-agent-core.h).
pub(crate) const READ_SIZE: usize = 4096;

/// The most raw input kept for an agent that may die before reading a request: a request
/// longer than this goes back to the channel re-encoded rather than byte for byte.
const RAW_INPUT_LIMIT: usize = 1 << 20;

/// The most bytes of one reply a record keeps (an oversize fault writes hundreds of MiB).
const RECORDED_REPLY_LIMIT: usize = 1 << 20;

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
pub(crate) enum Link {
    /// virtio-serial: the port, with QEMU's chardev on the other side.
    Port(Arc<Port>),
    /// unix-listen: the process's own listening socket and its one client.
    Listen(ListenLink),
}

/// What one read of the link gave the process.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input {
    Bytes(usize),
    /// A new client's bytes begin here, and the parser starts afresh per connection.
    NewConnection,
    /// A stop was requested while the process waited for input.
    Stop,
}

impl Link {
    async fn read(&mut self, buf: &mut [u8], stop: &StopSignal) -> Input {
        match self {
            // A stop request wins over input that arrived at the same time.
            Link::Port(port) => tokio::select! {
                biased;
                () = stop.requested() => Input::Stop,
                read = port.read(buf) => match read {
                    PortRead::Bytes(n) => Input::Bytes(n),
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
    async fn write(&mut self, reply: Vec<u8>) {
        match self {
            Link::Port(port) => port.write(reply).await,
            Link::Listen(link) => link.write(&reply).await,
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

/// An item from the parser, with where its raw bytes start in [`RawInput`] when kept.
struct Item {
    parsed: Parsed,
    raw_from: Option<usize>,
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
            streamer.feed(chunk, &mut |parsed| {
                items.push_back(Item {
                    parsed,
                    raw_from: None,
                });
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
            streamer.feed(&[byte], &mut |parsed| {
                items.push_back(Item {
                    parsed,
                    raw_from: from,
                });
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
    /// Reading stopped by a fault: until then, or (`Some(None)`) for good.
    not_reading: Option<Option<Instant>>,
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
        not_reading: None,
    };
    agent.run(parser_input).await
}

impl Agent {
    async fn run(&mut self, parser_input: Option<Vec<u8>>) -> Exit {
        if let Some(plan) = self.faults.on_start() {
            if let Some(exit) = self.execute(plan, None).await {
                return exit;
            }
        }
        if let Some(bytes) = parser_input {
            self.feed(&bytes);
            if let Some(exit) = self.handle_items().await {
                return exit;
            }
        }
        let mut buf = vec![0u8; READ_SIZE].into_boxed_slice();
        loop {
            if self.stop.is_requested() {
                return Exit::Stopped;
            }
            while let Some(plan) = self.faults.take_event() {
                if let Some(exit) = self.execute(plan, None).await {
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
                Input::Bytes(n) => self.feed(&buf[..n]),
                Input::NewConnection => {
                    self.streamer.reset();
                    self.raw.reset();
                }
                Input::Stop => return Exit::Stopped,
            }
            if let Some(exit) = self.handle_items().await {
                return exit;
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let track = self.faults.tracks_raw_input();
        self.raw
            .feed(&mut self.streamer, bytes, &mut self.items, track);
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
        let record = self.faults.begin_record(&item.parsed);
        let fired = self.faults.on_request(&Request::new(&item.parsed));
        match fired {
            None => {
                let reply = self.dispatch(item.parsed);
                self.faults.commit_record(record, reply.as_deref(), false);
                if let Some(reply) = reply {
                    self.faults.wrote_reply(&reply);
                    if self.writer.is_idle() {
                        self.link.write(reply).await;
                    } else {
                        self.writer
                            .write(&mut self.link, Out::bytes(reply), &Chunking::Whole, None)
                            .await;
                    }
                }
                None
            }
            Some((plan, info)) => self.execute(plan, Some((item, info, record))).await,
        }
    }

    /// Dispatches one item on the guest; returns the reply bytes, if any.
    fn dispatch(&mut self, item: Parsed) -> Option<Vec<u8>> {
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

    async fn write(&mut self, out: Out, chunking: &Chunking, cut: Option<usize>) {
        self.writer.write(&mut self.link, out, chunking, cut).await;
    }

    /// Carries out a plan: for a request (with its item and what its reply needs), or for
    /// a start or connect event (without).
    async fn execute(
        &mut self,
        mut plan: Plan,
        request: Option<(Item, RequestInfo, Option<PendingRecord>)>,
    ) -> Option<Exit> {
        let died = |plan: &Plan, unread: Option<Vec<u8>>| {
            Some(Exit::Died {
                unread,
                downtime: plan.downtime(),
            })
        };
        if plan.die_before_read {
            // Not read: the request goes back to the channel, and is recorded when the
            // next process reads it.
            let unread = request
                .as_ref()
                .map(|(item, _, _)| self.unread(item))
                .unwrap_or_default();
            return died(&plan, Some(unread));
        }
        if !plan.delay.is_zero() {
            tokio::time::sleep(plan.delay).await;
        }
        let (item, info, mut record) = match request {
            Some((item, info, record)) => (Some(item), info, record),
            None => (None, RequestInfo::default(), None),
        };
        if plan.vm_exit || plan.die_after_read {
            // Read, never answered.
            self.faults.commit_record(record.take(), None, true);
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
        let dispatched = match item {
            Some(item) if plan.dispatch => self.dispatch(item.parsed),
            _ => None,
        };
        let reply = plan.shape_reply(dispatched.map(Out::bytes), &info);
        // The reply this request gets, as written (a reply in pieces is recorded whole,
        // a huge one by its first RECORDED_REPLY_LIMIT bytes).
        let written = match (&reply, &record) {
            (Some(out), Some(_)) => {
                let mut copy = out.clone();
                Some(copy.take(RECORDED_REPLY_LIMIT))
            }
            _ => None,
        };
        self.faults.commit_record(
            record.take(),
            written.as_deref().filter(|_| !plan.hang),
            true,
        );
        for out in std::mem::take(&mut plan.before) {
            self.write(out, &Chunking::Whole, None).await;
        }
        if plan.hang {
            // Stuck in the command for good: nothing more is read or answered until the
            // process is killed. Buffered output still goes out, as a blocking call would
            // not hold it back.
            self.writer.flush_group(&mut self.link).await;
            return std::future::pending().await;
        }
        if let Some(count) = plan.coalesce {
            self.writer.open_group(count);
        }
        match reply {
            Some(reply) => {
                if let Some(bytes) = reply.as_single_buffer() {
                    self.faults.wrote_reply(bytes);
                }
                let copy = plan.duplicate.then(|| reply.clone());
                // A reply already waits for the next one: this is it, so two swapped
                // replies trade places instead of both waiting.
                if plan.swap && plan.cut.is_none() && !self.writer.holds_swapped() {
                    self.writer.hold(reply);
                    if let Some(copy) = copy {
                        self.writer.hold(copy);
                    }
                } else {
                    self.write(reply, &plan.chunking, plan.cut).await;
                    if plan.cut.is_some() {
                        return died(&plan, None);
                    }
                    if let Some(copy) = copy {
                        self.write(copy, &plan.chunking, None).await;
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
        for out in std::mem::take(&mut plan.after) {
            self.write(out, &Chunking::Whole, None).await;
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
