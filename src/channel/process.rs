//! One qemu-ga process: its parser, its dispatcher and its single-threaded loop.
//!
//! qemu-ga reads at most 4096 bytes at a time, feeds them to its one JSON parser, and
//! handles every finished item in order before it reads again, writing each reply in one
//! write (and blocking until it is written). The parser and the dispatcher belong to the
//! process: a new process starts with fresh ones. The guest outlives the process.
//!
//! Dropping the future returned by [`run`] is the process dying: what it read and did not
//! answer dies with it. Not polling it is the process being frozen.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, Notify};

use super::intercept::{Interceptor, ReplyAction, Request, RequestAction};
use super::listen::ListenLink;
use super::port::{Port, PortRead};
use crate::agent::{AgentConfig, Dispatcher};
use crate::guest::{Guest, PowerEvent};
use crate::wire::Streamer;

/// qemu-ga's read size (`QGA_READ_COUNT_DEFAULT`, qga/guest-agent-core.h).
pub(crate) const READ_SIZE: usize = 4096;

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
    pub(crate) interceptor: Box<dyn Interceptor>,
}

/// The process ran until a stop request: it exited cleanly.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stopped;

/// Runs one agent process until it is asked to stop.
pub(crate) async fn run(parts: ProcessParts) -> Stopped {
    let ProcessParts {
        guest,
        config,
        mut link,
        stop,
        power,
        mut interceptor,
    } = parts;
    let mut streamer = Streamer::new();
    let mut dispatcher = Dispatcher::new(config);
    let mut items = VecDeque::new();
    let mut buf = vec![0u8; READ_SIZE].into_boxed_slice();
    let mut sequence = 0u64;
    loop {
        if stop.is_requested() {
            return Stopped;
        }
        match link.read(&mut buf, &stop).await {
            Input::Bytes(n) => streamer.feed(&buf[..n], &mut |item| items.push_back(item)),
            Input::NewConnection => streamer.reset(),
            Input::Stop => return Stopped,
        }
        while let Some(item) = items.pop_front() {
            match interceptor.on_request(&Request::new(&item, sequence)) {
                RequestAction::Dispatch => {}
            }
            sequence += 1;
            let (dispatched, power_event) = {
                let mut guest = guest.lock().unwrap_or_else(PoisonError::into_inner);
                let dispatched = dispatcher.dispatch(item, &mut guest);
                (dispatched, guest.take_power_event())
            };
            if let Some(event) = power_event {
                // The supervisor outlives every process, so the send cannot fail while
                // anyone listens; if it did, nobody would care about the event.
                let _ = power.send(event);
            }
            if let Some(reply) = dispatched.reply {
                match interceptor.on_reply(dispatched.command.as_deref(), reply) {
                    ReplyAction::Write(bytes) => link.write(bytes).await,
                }
            }
        }
    }
}
