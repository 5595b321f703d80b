//! The client proper: one connection, the sync handshake, id matching, deadlines.
//!
//! The rules, and the libvirt behaviour each one improves on (notes on
//! `src/hypervisor/qemu_agent.c`):
//! - A connection is synced before its first command and again after anything that may
//!   have left it out of step (timeout, garbage, oversize reply, reconnect, a call
//!   abandoned by its caller). A sync first sends 0xFF, which resets the agent's parser
//!   even if a previous client left half a request in it, then `guest-sync-delimited`
//!   with a random 63-bit id; every byte before the matching reply is dropped.
//!   (libvirt: plain `guest-sync`, a millisecond timestamp as id, no 0xFF.)
//! - Every command carries its own random top-level id and only the reply with that id
//!   answers it, so a late or spurious reply is never taken for the answer. (libvirt
//!   takes whatever reply comes next.) An agent that does not echo ids is detected from
//!   the sync reply and then gets a sync before every command instead.
//! - Every call has one total deadline covering connect, sync and reply; a drip of bytes
//!   cannot extend it. (libvirt's default is to block forever.)
//! - Nothing is sticky: a failed call leaves the client ready to resync or reconnect on
//!   the next one. (libvirt keeps `agentError` until the channel is reopened.)
//! - A command is never sent twice by the client.
//! - A no-reply command (guest-shutdown, guest-suspend-*) is sent only to an agent that
//!   just answered a sync, so a dead agent is a timeout, never a success. (Python's
//!   qemu_ga_client takes a timeout for a successful shutdown.)

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::time::{Instant, Sleep};

use super::error::{Error, ProtocolError, Result, Stage};
use super::frame::{Frame, FrameReader};
use super::mutation::Mutation;
use super::reply::{impossible_number, preview, saturate_numbers, NotAnObject, Reply};
use super::request::{push_command, push_sync, PARSER_RESET};
use super::transport::{MemoryConnector, Stream};

/// The default total time a call may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The default limit on one reply line: 48 MiB admits a `guest-exec-status` reply with
/// both captured streams at qemu-ga's 16 MiB cap (2 × 21.3 MiB of base64).
pub const DEFAULT_MAX_REPLY_BYTES: usize = 48 << 20;

/// How long a no-reply command (guest-shutdown, guest-suspend-*) waits for an error
/// before it counts as a success.
pub const DEFAULT_NO_REPLY_GRACE: Duration = Duration::from_secs(1);

/// Commands that send no reply when they succeed (`success-response: false` in
/// qemu-ga's schema, as the agent's command table has it).
pub fn is_no_reply_command(command: &str) -> bool {
    crate::agent::command_facts(command).is_some_and(|f| f.no_reply)
}

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientBuilder {
    socket: PathBuf,
    /// Connects in memory instead of to `socket`.
    memory: Option<MemoryConnector>,
    timeout: Duration,
    max_reply_bytes: usize,
    no_reply_grace: Duration,
    /// A deliberate bug, for measuring the catalogue (never set outside
    /// `qga_harness::internals`).
    mutation: Option<Mutation>,
    /// Seed of the request ids; `None`: from the operating system.
    id_seed: Option<u64>,
}

impl ClientBuilder {
    /// A client of the agent listening on the unix socket `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            memory: None,
            timeout: DEFAULT_TIMEOUT,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            no_reply_grace: DEFAULT_NO_REPLY_GRACE,
            mutation: None,
            id_seed: None,
        }
    }

    /// Gives the client one deliberate bug (see [`Mutation`]).
    pub(crate) fn mutation(mut self, mutation: Mutation) -> Self {
        self.mutation = Some(mutation);
        self
    }

    /// A client of an agent in this process, reached through `connector` (see
    /// [`crate::client::memory_channel`]): for tests and fuzzing, with no socket and,
    /// under tokio's paused clock, no real time.
    pub fn in_memory(connector: MemoryConnector) -> Self {
        let mut builder = Self::new("(in memory)");
        builder.memory = Some(connector);
        builder
    }

    /// Draws request ids from a generator seeded with `seed`, so a run against a
    /// simulated agent repeats exactly. Predictable ids let a guest forge a reply in
    /// advance: only for reproducible tests, never against a real guest.
    pub fn seeded_ids(mut self, seed: u64) -> Self {
        self.id_seed = Some(seed);
        self
    }

    /// The total time a call may take when the call does not give its own
    /// ([`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest reply line accepted ([`DEFAULT_MAX_REPLY_BYTES`]); a longer one is
    /// dropped without being buffered, the call fails with [`ProtocolError::TooLarge`] and the
    /// connection is closed (the rest of such a line may never end).
    pub fn max_reply_bytes(mut self, bytes: usize) -> Self {
        self.max_reply_bytes = bytes.max(1);
        self
    }

    /// How long a no-reply command waits for an error reply ([`DEFAULT_NO_REPLY_GRACE`]).
    pub fn no_reply_grace(mut self, grace: Duration) -> Self {
        self.no_reply_grace = grace;
        self
    }

    /// The client; it connects on its first call.
    pub fn build(self) -> Client {
        let mutation = self.mutation;
        let rng = match self.id_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Client {
            config: self,
            conn: None,
            timer: None,
            state: State {
                stats: Stats::default(),
                rng,
                scratch: Vec::with_capacity(256),
                mutation,
                sync_count: 0,
                sticky: None,
                own_sync_ids: Vec::new(),
                restart_sync: false,
                resync_skipped: false,
                peak_buffer: Arc::new(AtomicUsize::new(0)),
            },
        }
    }

    /// The client, connected and synced within the timeout.
    pub async fn connect(self) -> Result<Client> {
        let mut client = self.build();
        client.sync().await?;
        Ok(client)
    }
}

/// Counters of what the client did and dropped, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections opened.
    pub connects: u64,
    /// `guest-sync-delimited` handshakes completed.
    pub syncs: u64,
    /// Well-formed replies that answered nothing pending (stale, spurious, another id)
    /// and were dropped.
    pub discarded_replies: u64,
    /// Lines that were not JSON, over-long lines and fragments cut off by a 0xFF, dropped
    /// while syncing.
    pub discarded_garbage: u64,
}

/// A qemu-ga client over a unix socket. One call at a time (`&mut self`); share it behind
/// a mutex if needed.
#[derive(Debug)]
pub struct Client {
    config: ClientBuilder,
    conn: Option<Connection>,
    timer: Option<DeadlineTimer>,
    state: State,
}

/// One timer reused for every call's deadline. Moving a registered timer to a later
/// deadline is a single atomic store in tokio, where a fresh timer per call takes the
/// timer wheel's lock twice; on a warm connection that is a measurable share of a call.
#[derive(Debug)]
struct DeadlineTimer {
    /// Timers (and sockets) belong to the runtime that created them.
    runtime: tokio::runtime::Id,
    sleep: Pin<Box<Sleep>>,
}

#[derive(Debug)]
struct State {
    stats: Stats,
    rng: StdRng,
    /// Reused buffer for encoding requests.
    scratch: Vec<u8>,
    /// The deliberate bug, if any (see [`Mutation`]).
    mutation: Option<Mutation>,
    /// Syncs sent, for [`Mutation::SequentialSyncIds`].
    sync_count: u64,
    /// The first client-side failure's timeout flag, for [`Mutation::StickyFailure`].
    sticky: Option<bool>,
    /// Every sync id sent, for [`Mutation::ResyncOnWrongSyncId`].
    own_sync_ids: Vec<u64>,
    /// A sync asks to start over with a fresh timeout ([`Mutation::ResyncOnWrongSyncId`]).
    restart_sync: bool,
    /// The next command goes out without the sync a timeout calls for
    /// ([`Mutation::NoResyncAfterTimeout`]), even where the agent echoes no id.
    resync_skipped: bool,
    /// The most memory a connection's reply buffer ever held, over every connection.
    peak_buffer: Arc<AtomicUsize>,
}

impl State {
    /// An unpredictable positive 63-bit id: it fits qemu-ga's int64 `id` argument, and a
    /// guest cannot forge a reply to it in advance.
    fn fresh_id(&mut self) -> u64 {
        self.rng.random::<u64>() >> 1
    }

    /// The id of the next sync.
    fn sync_id(&mut self) -> u64 {
        self.sync_count += 1;
        if self.has(Mutation::SequentialSyncIds) {
            return self.sync_count;
        }
        if self.has(Mutation::ClockSyncIds) {
            return std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        self.fresh_id()
    }

    fn has(&self, mutation: Mutation) -> bool {
        self.mutation == Some(mutation)
    }
}

#[derive(Debug)]
struct Connection {
    stream: Stream,
    reader: FrameReader,
    /// The agent's parser is clean and the stream is aligned behind our latest sync.
    synced: bool,
    /// The agent echoed the top-level id of the latest sync.
    echoes_ids: bool,
    /// A sync has completed on this connection, so `echoes_ids` is known.
    handshaken: bool,
    /// Bytes of the current call have been written.
    wrote: bool,
    /// A no-reply command ended without an answer to it or its marker ping: replies
    /// may still be in flight.
    reply_pending: bool,
}

/// Which reply answers a request.
#[derive(Clone, Debug)]
pub(crate) enum Expect {
    /// The reply carrying this fresh id (or, from an agent that does not echo ids, the
    /// first reply after the sync).
    Id(Value),
    /// The same, for an id the caller chose: it is not unpredictable, so a sync first
    /// makes sure no stale reply that carries it is still on its way.
    GivenId(Value),
    /// The first reply after the sync: for requests that cannot carry an id.
    NextReply,
}

impl Expect {
    /// The id the answer carries, if any.
    fn id(&self) -> Option<&Value> {
        match self {
            Expect::Id(id) | Expect::GivenId(id) => Some(id),
            Expect::NextReply => None,
        }
    }
}

/// What a call does once it has a connection.
#[derive(Clone, Copy, Debug)]
enum Job<'a> {
    /// A handshake with a parser reset.
    Sync,
    /// A command, after a handshake if the connection needs one.
    Command {
        request: &'a [u8],
        expect: &'a Expect,
        no_reply: bool,
        /// Written again when its answer is slow (a mutant's bug).
        retry_when_slow: bool,
    },
}

impl Job<'_> {
    async fn run_on(
        self,
        conn: &mut Connection,
        state: &mut State,
        config: &ClientBuilder,
        stage: &StageCell,
        deadline: Instant,
    ) -> Result<Value> {
        let (request, expect, no_reply, retry_when_slow) = match self {
            Job::Sync => {
                if state.has(Mutation::NoSync) {
                    return Ok(Value::Null);
                }
                stage.set(Stage::Sync);
                return sync(conn, state).await.map(|()| Value::Null);
            }
            Job::Command {
                request,
                expect,
                no_reply,
                retry_when_slow,
            } => (request, expect, no_reply, retry_when_slow),
        };
        // An echoing agent on a synced connection needs no handshake: ids match replies.
        // Otherwise the command must be the next thing the agent answers after a sync.
        let unchecked_no_reply = no_reply && state.has(Mutation::UncheckedNoReply);
        let resync_skipped = std::mem::take(&mut state.resync_skipped);
        let needs_sync = (!conn.synced
            || !conn.echoes_ids
            || no_reply
            || matches!(expect, Expect::GivenId(_) | Expect::NextReply))
            && !state.has(Mutation::NoSync)
            && !unchecked_no_reply
            && !resync_skipped;
        if needs_sync {
            stage.set(Stage::Sync);
            sync(conn, state).await?;
        }
        stage.set(Stage::Reply);
        // Out of step until the answer is in: if this future is dropped half-way (a
        // caller's own timeout or select), the next call resyncs.
        conn.synced = false;
        let result = if no_reply {
            let grace_end = deadline_after(config.no_reply_grace).min(deadline);
            send_no_reply(conn, state, request, expect, grace_end).await
        } else if retry_when_slow {
            write(conn, request, Stage::Reply).await?;
            let half = Instant::now() + deadline.saturating_duration_since(Instant::now()) / 2;
            match tokio::time::timeout_at(half, await_reply(conn, state, expect, None)).await {
                Ok(result) => result,
                Err(_slow) => {
                    write(conn, request, Stage::Reply).await?;
                    await_reply(conn, state, expect, None).await
                }
            }
        } else {
            write(conn, request, Stage::Reply).await?;
            await_reply(conn, state, expect, None).await
        };
        conn.synced = match &result {
            Ok(_) => !conn.reply_pending,
            Err(e) => e.agent_error().is_some(),
        };
        result
    }
}

impl Client {
    /// A client with default settings; see [`ClientBuilder`].
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        ClientBuilder::new(socket).build()
    }

    /// The builder of a client.
    pub fn builder(socket: impl Into<PathBuf>) -> ClientBuilder {
        ClientBuilder::new(socket)
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    /// The default total time of a call.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// What the client did and dropped so far.
    pub fn stats(&self) -> Stats {
        self.state.stats
    }

    /// The most memory a reply buffer held at once, in bytes, over every connection: how
    /// the runner sees that this client's memory stayed bounded when it runs in the
    /// runner's own process (where the process's peak RSS says nothing about it).
    pub(crate) fn peak_buffer_bytes(&self) -> u64 {
        self.state.peak_buffer.load(Ordering::Relaxed) as u64
    }

    /// Whether the agent echoes request ids, as learned from the latest sync of the open
    /// connection; `None` before the first sync.
    pub fn ids_echoed(&self) -> Option<bool> {
        self.conn
            .as_ref()
            .filter(|c| c.handshaken)
            .map(|c| c.echoes_ids)
    }

    /// Closes the connection; the next call opens a new one.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Runs `command` with `arguments` (a JSON object, or `None`) and returns its
    /// `return` value, within the default timeout.
    ///
    /// For a no-reply command (see [`is_no_reply_command`]) the result is `{}` when the
    /// agent answers a `guest-ping` sent right behind it, or the connection closes; an
    /// agent that does not echo ids cannot be asked that way, and there the result is
    /// `{}` when no error reply comes within the grace period.
    pub async fn execute(&mut self, command: &str, arguments: Option<&Value>) -> Result<Value> {
        self.execute_within(command, arguments, self.config.timeout)
            .await
    }

    /// [`Client::execute`] with its own total timeout.
    pub async fn execute_within(
        &mut self,
        command: &str,
        arguments: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value> {
        if self.state.has(Mutation::UnsentNoReply) && is_no_reply_command(command) {
            return Ok(empty_object());
        }
        let id = self.state.fresh_id();
        let mut request = std::mem::take(&mut self.state.scratch);
        request.clear();
        let arguments = arguments.filter(|_| !self.state.has(Mutation::DropArguments));
        push_command(&mut request, command, arguments, id);
        let expect = Expect::Id(Value::from(id));
        let retry_when_slow = self.state.has(Mutation::RetryCommand)
            || (self.state.has(Mutation::RetryReads)
                && (command.ends_with("-status") || command.ends_with("-read")));
        let job = Job::Command {
            request: &request,
            expect: &expect,
            no_reply: is_no_reply_command(command),
            retry_when_slow,
        };
        let result = self.run(job, timeout).await;
        self.state.scratch = request;
        match result {
            Err(e) if self.state.has(Mutation::FlattenErrorClass) && e.agent_error().is_some() => {
                let desc = e.desc();
                Err(Error::Agent(super::error::AgentError {
                    class: "GenericError".to_owned(),
                    desc,
                }))
            }
            Ok(value) => match self.state.mutation {
                Some(Mutation::LossyNumbers) => Ok(super::commands::misread(
                    Mutation::LossyNumbers,
                    command,
                    value,
                )),
                mutation => {
                    super::commands::check_unsigned(command, &value)?;
                    Ok(match mutation {
                        Some(mutation) => super::commands::misread(mutation, command, value),
                        None => value,
                    })
                }
            },
            other => other,
        }
    }

    /// Sends any JSON value as the request and returns the answer's `return` value.
    ///
    /// An object gets a fresh top-level `id` unless it has one, in which case the reply
    /// echoing that id answers it. Anything else is sent as is, after a sync, and the
    /// first reply after the sync answers it (the agent's errors for non-objects carry
    /// no id).
    pub async fn execute_raw(&mut self, request: &Value) -> Result<Value> {
        self.execute_raw_within(request, self.config.timeout).await
    }

    /// [`Client::execute_raw`] with its own total timeout.
    pub async fn execute_raw_within(
        &mut self,
        request: &Value,
        timeout: Duration,
    ) -> Result<Value> {
        let mut no_reply = false;
        let (bytes, expect) = match request {
            Value::Object(members) => {
                no_reply = members
                    .get("execute")
                    .and_then(Value::as_str)
                    .is_some_and(is_no_reply_command);
                match members.get("id") {
                    Some(id) => (request.to_string(), Expect::GivenId(id.clone())),
                    None => {
                        let id = Value::from(self.state.fresh_id());
                        let mut members = members.clone();
                        members.insert("id".into(), id.clone());
                        (Value::Object(members).to_string(), Expect::Id(id))
                    }
                }
            }
            other => (other.to_string(), Expect::NextReply),
        };
        self.call(bytes.as_bytes(), &expect, no_reply, timeout)
            .await
    }

    /// Forces a `guest-sync-delimited` handshake (with the parser reset) now, connecting
    /// first if needed.
    pub async fn sync(&mut self) -> Result<()> {
        let timeout = self.config.timeout;
        self.run(Job::Sync, timeout).await.map(drop)
    }

    /// Sends `request` and waits for the reply `expect` names, all within `timeout`.
    pub(crate) async fn call(
        &mut self,
        request: &[u8],
        expect: &Expect,
        no_reply: bool,
        timeout: Duration,
    ) -> Result<Value> {
        let job = Job::Command {
            request,
            expect,
            no_reply,
            retry_when_slow: self.state.has(Mutation::RetryCommand),
        };
        self.run(job, timeout).await
    }

    /// Runs one job under one total deadline.
    async fn run(&mut self, job: Job<'_>, timeout: Duration) -> Result<Value> {
        if let Some(timed_out) = self
            .state
            .sticky
            .filter(|_| self.state.has(Mutation::StickyFailure))
        {
            return Err(if timed_out {
                Error::Timeout {
                    stage: Stage::Connect,
                    timeout,
                }
            } else {
                Error::disconnected(Stage::Connect, None)
            });
        }
        let limit = match self.state.mutation {
            Some(Mutation::NoTimeout) => Duration::from_secs(100 * 365 * 86_400),
            Some(Mutation::InstantTimeout) => timeout / 20,
            _ => timeout,
        };
        let mut deadline = deadline_after(limit);
        let stage = StageCell::new(Stage::Connect);
        let runtime = tokio::runtime::Handle::current().id();
        if self.timer.as_ref().is_some_and(|t| t.runtime != runtime) {
            // Moved to another runtime: the old runtime's timer and socket cannot be
            // driven from here.
            self.timer = None;
            self.conn = None;
        }
        let Client {
            config,
            conn,
            state,
            timer,
        } = self;
        let timer = timer.get_or_insert_with(|| DeadlineTimer {
            runtime,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        });
        timer.sleep.as_mut().reset(deadline);
        let outcome = loop {
            let work = async {
                let mut retried = false;
                loop {
                    stage.set(Stage::Connect);
                    let (open, reused) = ready_connection(config, conn, state).await?;
                    open.wrote = false;
                    open.reply_pending = false;
                    let result = job.run_on(open, state, config, &stage, deadline).await;
                    match result {
                        Err(Error::Disconnected { .. }) if reused && !open.wrote && !retried => {
                            // The agent closed the connection between calls and no byte of
                            // this call reached it: a new connection repeats nothing.
                            *conn = None;
                            retried = true;
                        }
                        other => return other,
                    }
                }
            };
            // The work goes first, so a reply already in hand wins over a deadline that
            // passed meanwhile.
            let outcome = tokio::select! {
                biased;
                result = work => Some(result),
                () = timer.sleep.as_mut() => None,
            };
            if outcome.is_none()
                && stage.get() == Stage::Sync
                && state.has(Mutation::UnboundedSyncLoop)
            {
                // The bug: a sync that got no answer starts over with a fresh timeout.
                deadline = deadline_after(limit);
                timer.sleep.as_mut().reset(deadline);
                continue;
            }
            if std::mem::take(&mut state.restart_sync) {
                // The bug: a sync reply of another id starts a new sync with a fresh
                // timeout.
                deadline = deadline_after(limit);
                timer.sleep.as_mut().reset(deadline);
                continue;
            }
            break outcome;
        };
        let no_reply = matches!(job, Job::Command { no_reply: true, .. });
        let result = self.settle(outcome, &stage, timeout, no_reply);
        if let Err(e) = &result {
            if e.agent_error().is_none() && self.state.sticky.is_none() {
                self.state.sticky = Some(matches!(e, Error::Timeout { .. }));
            }
        }
        result
    }

    /// Turns a call's outcome into its result and leaves the connection ready for the
    /// next call: dropped when it broke, marked for a resync when it may be out of step.
    fn settle(
        &mut self,
        outcome: Option<Result<Value>>,
        stage: &StageCell,
        timeout: Duration,
        no_reply: bool,
    ) -> Result<Value> {
        match outcome {
            Some(Err(e @ (Error::Disconnected { .. } | Error::Connect { .. }))) => {
                self.conn = None;
                Err(e)
            }
            Some(Err(e @ Error::Protocol(ProtocolError::TooLarge { .. }))) => {
                // The rest of a line too long to keep may never end (a guest flooding
                // the channel until its client leaves): hang up rather than read on.
                self.conn = None;
                Err(e)
            }
            Some(result) => result,
            None => {
                if let Some(conn) = self.conn.as_mut() {
                    conn.synced = self.state.has(Mutation::NoResyncAfterTimeout);
                    self.state.resync_skipped = conn.synced;
                }
                let written_no_reply = no_reply && stage.get() == Stage::Reply;
                if self.state.has(Mutation::SilenceIsSuccess)
                    || (written_no_reply && self.state.has(Mutation::NoReplySilenceIsSuccess))
                {
                    return Ok(empty_object());
                }
                // A no-reply command that got its grace period ended inside; one that
                // is still here could not even be written (an agent that stopped
                // reading), which is no success.
                Err(Error::Timeout {
                    stage: stage.get(),
                    timeout,
                })
            }
        }
    }
}

/// The stage a call is in, readable once its future is dropped by the deadline. An atomic
/// rather than a `Cell` so that a call's future is `Send` (it can be spawned on any
/// runtime thread).
#[derive(Debug)]
struct StageCell(AtomicU8);

impl StageCell {
    fn new(stage: Stage) -> StageCell {
        StageCell(AtomicU8::new(stage as u8))
    }

    fn set(&self, stage: Stage) {
        self.0.store(stage as u8, Ordering::Relaxed);
    }

    fn get(&self) -> Stage {
        match self.0.load(Ordering::Relaxed) {
            x if x == Stage::Connect as u8 => Stage::Connect,
            x if x == Stage::Sync as u8 => Stage::Sync,
            _ => Stage::Reply,
        }
    }
}

/// Now plus `timeout`, saturating: a timeout of years means no deadline worth having,
/// not a panic.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// The open connection (and true), or a new one when there is none or the agent closed
/// it. Only used before anything of the call was written, so reconnecting repeats
/// nothing.
async fn ready_connection<'a>(
    config: &ClientBuilder,
    slot: &'a mut Option<Connection>,
    state: &mut State,
) -> Result<(&'a mut Connection, bool)> {
    let reusable = match slot.take() {
        Some(mut conn) => match conn.reader.poll_open(&mut conn.stream) {
            Ok(true) => Some(conn),
            Ok(false) | Err(_) => None,
        },
        None => None,
    };
    let reused = reusable.is_some();
    let conn = match reusable {
        Some(conn) => conn,
        None if state.has(Mutation::NoReconnect) && state.stats.connects > 0 => {
            return Err(Error::disconnected(Stage::Connect, None));
        }
        None => {
            let stream = match &config.memory {
                Some(memory) => memory.connect().map_err(|source| Error::Connect {
                    path: config.socket.clone(),
                    source,
                })?,
                None => Stream::Unix(connect(&config.socket, state.stats.connects > 0).await?),
            };
            state.stats.connects += 1;
            Connection {
                stream,
                reader: FrameReader::new(if state.has(Mutation::UnboundedBuffer) {
                    usize::MAX
                } else {
                    config.max_reply_bytes
                })
                .measured(state.peak_buffer.clone()),
                synced: false,
                echoes_ids: false,
                handshaken: false,
                wrote: false,
                reply_pending: false,
            }
        }
    };
    Ok((slot.insert(conn), reused))
}

/// The longest pause between connect attempts to a busy agent.
const CONNECT_RETRY_MAX: Duration = Duration::from_millis(50);

/// Connects, waiting while the agent's listen backlog is full: a non-blocking connect
/// then fails at once with EAGAIN where a blocking one would wait (qemu-ga listens with
/// a backlog of 1 and serves one client at a time). When `reconnecting`, it also waits
/// while the socket refuses connections: qemu-ga's own socket (`-m unix-listen`) stays
/// behind, unserved, while the agent restarts. The call's deadline bounds the wait. A
/// first connect to a bad path, or a socket that is gone (QEMU exited), fails at once.
async fn connect(socket: &Path, reconnecting: bool) -> Result<UnixStream> {
    use std::io::ErrorKind;
    let mut pause = Duration::from_millis(1);
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            Err(e)
                if e.kind() == ErrorKind::WouldBlock
                    || (reconnecting && e.kind() == ErrorKind::ConnectionRefused) =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(CONNECT_RETRY_MAX);
            }
            Err(source) => {
                return Err(Error::Connect {
                    path: socket.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Writes all of `bytes`, noting in `conn.wrote` whether any reached the socket.
async fn write(conn: &mut Connection, mut bytes: &[u8], stage: Stage) -> Result<()> {
    while !bytes.is_empty() {
        match conn.stream.write(bytes).await {
            Ok(0) => {
                let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                return Err(Error::disconnected(stage, Some(e)));
            }
            Ok(n) => {
                conn.wrote = true;
                bytes = bytes.get(n..).unwrap_or_default();
            }
            Err(e) => return Err(Error::disconnected(stage, Some(e))),
        }
    }
    Ok(())
}

/// The handshake: 0xFF, `guest-sync-delimited` with a fresh id, then drop everything up
/// to the reply that returns exactly that id. The 0xFF goes before every sync: it is
/// needed whenever the agent's parser may hold a partial request, costs one error line
/// that is dropped with the rest, and syncs are rare on an echoing agent.
async fn sync(conn: &mut Connection, state: &mut State) -> Result<()> {
    conn.synced = false;
    let id = state.sync_id();
    if state.has(Mutation::ResyncOnWrongSyncId) {
        state.own_sync_ids.push(id);
    }
    let mut request = Vec::with_capacity(100);
    if !state.has(Mutation::NoFlush) {
        request.push(PARSER_RESET);
    }
    push_sync(&mut request, id);
    write(conn, &request, Stage::Sync).await?;
    let id_value = Value::from(id);
    loop {
        let frame = conn
            .reader
            .next(&mut conn.stream)
            .await
            .map_err(|e| Error::disconnected(Stage::Sync, Some(e)))?;
        let range = match frame {
            Frame::Line { range, .. } => range,
            Frame::Eof { .. } => return Err(Error::disconnected(Stage::Sync, None)),
            Frame::Oversize | Frame::Fragment(_) => {
                state.stats.discarded_garbage += 1;
                continue;
            }
        };
        let line = conn.reader.bytes(range);
        match Reply::parse(line) {
            Ok(Ok(reply)) if state.has(Mutation::AnySyncId) && reply.ret.is_some() => {
                conn.synced = true;
                conn.echoes_ids = reply.id.is_some();
                conn.handshaken = true;
                state.stats.syncs += 1;
                return Ok(());
            }
            Ok(Ok(_)) if greedy_skips(conn, state) => state.stats.discarded_replies += 1,
            Ok(Ok(reply))
                if state.has(Mutation::ResyncOnWrongSyncId)
                    && reply.ret.as_ref().is_some_and(Value::is_number)
                    && !state
                        .own_sync_ids
                        .iter()
                        .any(|&own| reply.returns_sync_id(own)) =>
            {
                state.restart_sync = true;
                return Err(Error::disconnected(Stage::Sync, None));
            }
            Ok(Ok(reply)) if reply.returns_sync_id(id) => {
                let echoes_ids = match &reply.id {
                    None => false,
                    Some(_) if reply.has_id(&id_value) => true,
                    // Our number under another id: not an answer to this request.
                    Some(_) => {
                        state.stats.discarded_replies += 1;
                        continue;
                    }
                };
                conn.synced = true;
                conn.echoes_ids = echoes_ids || state.has(Mutation::AssumeIdEcho);
                conn.handshaken = true;
                state.stats.syncs += 1;
                return Ok(());
            }
            Ok(Ok(reply)) if reply.error.is_some() && reply.has_id(&id_value) => {
                // The agent refused the handshake itself (disabled, unknown, ...): the
                // call fails, but not with an agent error, which would read as the
                // answer to a command the agent never received.
                let refused = reply.into_result(line).err();
                let (class, desc) = match refused.as_ref().and_then(Error::agent_error) {
                    Some(e) => (e.class.clone(), e.desc.clone()),
                    None => {
                        return Err(
                            refused.unwrap_or_else(|| Error::disconnected(Stage::Sync, None))
                        )
                    }
                };
                return Err(ProtocolError::SyncRefused { class, desc }.into());
            }
            Ok(_) => state.stats.discarded_replies += 1,
            Err(_) => state.stats.discarded_garbage += 1,
        }
    }
}

/// The answer as a decoder that reads each byte above 0x7F as a Latin-1 character sees
/// it ([`Mutation::Latin1Replies`]): only where the line has such bytes (an escaped
/// `\u00e9` is ASCII on the wire and decodes right either way).
fn latin1_misread(value: &Value, line: &[u8]) -> Value {
    if line.is_ascii() {
        return value.clone();
    }
    let latin1: String = line.iter().map(|&b| char::from(b)).collect();
    match serde_json::from_str::<Value>(&latin1) {
        Ok(misread) => misread
            .get("return")
            .cloned()
            .unwrap_or_else(|| value.clone()),
        Err(_) => value.clone(),
    }
}

/// Whether [`Mutation::GreedyLastFf`] loses the line just framed: a 0xFF in the bytes
/// already read behind it makes a parser that skips to the last 0xFF jump past it.
fn greedy_skips(conn: &Connection, state: &State) -> bool {
    state.has(Mutation::GreedyLastFf) && conn.reader.unframed().contains(&0xFF)
}

/// Reads until the reply that answers `expect`, dropping stale and spurious replies.
/// Anything unreadable fails the call (and the caller resyncs on the next one). With
/// `marker`, any reply carrying that id also ends the wait, as a success.
async fn await_reply(
    conn: &mut Connection,
    state: &mut State,
    expect: &Expect,
    marker: Option<u64>,
) -> Result<Value> {
    let marker_id = marker.map(Value::from);
    loop {
        let frame = conn
            .reader
            .next(&mut conn.stream)
            .await
            .map_err(|e| Error::disconnected(Stage::Reply, Some(e)))?;
        let range = match frame {
            Frame::Line { range, .. } => range,
            Frame::Eof { .. } if state.has(Mutation::EofIsSuccess) => return Ok(empty_object()),
            Frame::Eof { .. } => return Err(Error::disconnected(Stage::Reply, None)),
            Frame::Oversize => {
                return Err(ProtocolError::TooLarge {
                    limit: conn.reader.max_line(),
                }
                .into());
            }
            Frame::Fragment(range) => {
                return Err(ProtocolError::CutOff {
                    preview: preview(conn.reader.bytes(range)),
                }
                .into());
            }
        };
        let line = conn.reader.bytes(range);
        let saturated;
        let line = if state.has(Mutation::LossyNumbers) {
            saturated = saturate_numbers(line);
            &saturated[..]
        } else {
            line
        };
        let reply = match Reply::parse(line) {
            Ok(Ok(reply)) => reply,
            Ok(Err(NotAnObject))
                if conn.echoes_ids
                    && expect.id().is_some()
                    && !state.has(Mutation::NonObjectAnswer) =>
            {
                // It cannot carry our id, so it answers something else.
                state.stats.discarded_replies += 1;
                continue;
            }
            Ok(Err(NotAnObject)) if state.has(Mutation::NonObjectAnswer) => {
                return Ok(serde_json::from_slice(line).unwrap_or(Value::Null));
            }
            Ok(Err(NotAnObject)) => {
                return Err(ProtocolError::NotAnObject {
                    preview: preview(line),
                }
                .into());
            }
            Err(e) => {
                return Err(e.into());
            }
        };
        if let Some(marker) = &marker_id {
            if reply.has_id(marker) {
                return Ok(empty_object());
            }
        }
        let ours = match (expect.id(), &reply.id) {
            _ if state.has(Mutation::FirstLine) => true,
            (Some(want), Some(_)) => reply.has_id(want),
            (Some(_), None) => {
                !conn.echoes_ids
                    || (state.has(Mutation::TrustIdlessErrors) && reply.error.is_some())
            }
            (None, _) => true,
        };
        if !ours || greedy_skips(conn, state) {
            state.stats.discarded_replies += 1;
            continue;
        }
        let mut reply = reply;
        if state.has(Mutation::LastDuplicateWins) {
            reply.duplicate = None;
        }
        let mut result = reply.into_result(line);
        if result.is_ok() && !state.has(Mutation::LossyNumbers) {
            if let Some(number) = impossible_number(line) {
                result = Err(ProtocolError::ImpossibleNumber {
                    number,
                    preview: preview(line),
                }
                .into());
            }
        }
        if state.has(Mutation::Latin1Replies) {
            return result.map(|value| latin1_misread(&value, line));
        }
        return result;
    }
}

/// A no-reply command (the connection has just been synced, so the agent is alive).
/// To an echoing agent it goes out together with a `guest-ping` under its own id, whose
/// answer proves the agent got past the command without an error (it answers in
/// order). Success is that answer, any non-error answer, or the connection closing; an
/// error reply to the command is the command's error. Without a marker (an agent that
/// does not echo ids) silence until `grace_end` is also taken as success: nothing better
/// can be known.
async fn send_no_reply(
    conn: &mut Connection,
    state: &mut State,
    request: &[u8],
    expect: &Expect,
    grace_end: Instant,
) -> Result<Value> {
    let mut bytes = Vec::with_capacity(request.len() + 64);
    bytes.extend_from_slice(request);
    let marker = match expect.id() {
        Some(_) if conn.echoes_ids && !state.has(Mutation::UncheckedNoReply) => {
            let marker = state.fresh_id();
            push_command(&mut bytes, "guest-ping", None, marker);
            Some(marker)
        }
        // Without id echo a ping's answer could not be told from the command's own.
        _ => None,
    };
    write(conn, &bytes, Stage::Reply).await?;
    let waited = if marker.is_some() {
        // The marker's answer or the channel closing proves the agent got past the
        // command; silence proves nothing (a hung agent, a guest that ignored the
        // command while the VM stays up), so it runs into the call's deadline, a timeout.
        Ok(await_reply(conn, state, expect, marker).await)
    } else {
        tokio::time::timeout_at(grace_end, await_reply(conn, state, expect, marker)).await
    };
    match waited {
        Ok(Err(Error::Disconnected { .. })) => {
            // The channel closed after the command went out: the guest went down, the
            // expected end of a shutdown.
            Ok(empty_object())
        }
        // After an answer of the command itself (some agents send `{}`), the marker's
        // answer is dropped later by its id, like any stale reply.
        Ok(result) => result,
        Err(_elapsed) => {
            conn.reply_pending = true;
            Ok(empty_object())
        }
    }
}
