//! The agent's life inside the VM: when its process starts, freezes, dies and comes back,
//! what a guest shutdown or suspend does to it, and when the VM exits.
//!
//! A process is a future ([`process::run`]): running means polling it, hung means not
//! polling it, death means dropping it. The guest outlives every process.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::bind::{rebind_socket, remove_socket_file};
use super::intercept::Interceptor;
use super::life::{AgentState, LifeCommand, LifeError, LifeInbox, LifeReply, LifeRequest};
use super::listen::ListenLink;
use super::port::Port;
use super::process::{self, Exit, Link, ProcessParts, SharedGuest, StopSignal};
use super::status::StatusBoard;
use super::{AgentStart, PowerPolicy};
use crate::agent::AgentConfig;
use crate::fault::Restart;
use crate::guest::PowerEvent;
use crate::proxy::Upstream;
use crate::transcript::writer::{MaybeTranscript, Transcript};

/// How the VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEnd {
    /// The mock was shut down by its owner.
    Shutdown,
    /// The VM exited: a guest power-off (or a hibernation), or [`super::AgentLife::vm_exit`].
    VmExit,
}

/// The transport as the supervisor sees it: what opening and closing the agent's end means.
#[derive(Debug)]
pub(crate) enum Side {
    VirtioSerial {
        port: Arc<Port>,
    },
    /// The process owns the socket; `listener` is the one bound before the first start.
    UnixListen {
        path: Option<PathBuf>,
        listener: Option<UnixListener>,
    },
}

type ProcessFuture = Pin<Box<dyn Future<Output = Exit> + Send>>;

struct Process {
    future: ProcessFuture,
    stop: Arc<StopSignal>,
}

/// Timed changes of the agent's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The first start after the boot delay, or the start after a restart delay.
    Start,
    /// The guest's shutdown reaches the agent.
    PowerOff,
    /// The guest's suspend freezes the agent.
    Suspend,
    /// The suspended guest wakes up.
    Wake,
}

/// Everything the supervisor needs; built by [`super::serve`].
pub(crate) struct Supervisor {
    pub(crate) side: Side,
    pub(crate) guest: SharedGuest,
    pub(crate) config: AgentConfig,
    pub(crate) start: AgentStart,
    pub(crate) power: PowerPolicy,
    pub(crate) fresh_parser_per_connection: bool,
    pub(crate) life: LifeInbox,
    pub(crate) transcript: Option<Transcript>,
    pub(crate) status: StatusBoard,
    pub(crate) faults: Interceptor,
    /// What the first process finds in its parser.
    pub(crate) parser_input: Option<Vec<u8>>,
    /// What the first client of qemu-ga's own socket gets at once (unix-listen).
    pub(crate) first_output: Option<(Vec<u8>, super::origin::Parts)>,
    /// The real agent each process forwards to (a proxy).
    pub(crate) upstream: Option<PathBuf>,
}

struct Run {
    s: Supervisor,
    process: Option<Process>,
    state: AgentState,
    timer: Option<(Instant, Timer)>,
    vm_exit_at: Option<Instant>,
    /// Callers of `stop` waiting for the process to finish.
    stop_waiters: Vec<oneshot::Sender<LifeReply>>,
    power_tx: mpsc::UnboundedSender<PowerEvent>,
    power_rx: mpsc::UnboundedReceiver<PowerEvent>,
}

impl Supervisor {
    /// Runs the VM until it exits or `shutdown` completes.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()>) -> VmEnd {
        let (power_tx, power_rx) = mpsc::unbounded_channel();
        let mut run = Run {
            s: self,
            process: None,
            state: AgentState::NotStarted,
            timer: None,
            vm_exit_at: None,
            stop_waiters: Vec::new(),
            power_tx,
            power_rx,
        };
        run.begin();
        run.serve(shutdown).await
    }
}

/// Polls the process if there is one; never completes otherwise.
async fn poll_process(process: &mut Option<Process>) -> Exit {
    match process {
        Some(p) => p.future.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Run {
    fn set_state(&mut self, state: AgentState) {
        self.state = state;
        self.s.life.state.send_replace(state);
    }

    fn begin(&mut self) {
        match self.s.start {
            AgentStart::Now => {
                // A failed start is in the transcript and in the state.
                let _ = self.spawn();
            }
            AgentStart::After(delay) => {
                self.timer = Some((Instant::now() + delay, Timer::Start));
                self.close_unix_listen_socket();
                self.set_state(AgentState::NotStarted);
            }
            AgentStart::Manually => {
                self.close_unix_listen_socket();
                self.set_state(AgentState::NotStarted);
            }
        }
    }

    /// With unix-listen the socket is the agent's: it does not exist before the agent runs.
    fn close_unix_listen_socket(&mut self) {
        if let Side::UnixListen { path, listener } = &mut self.s.side {
            if listener.take().is_some() {
                if let Some(path) = path {
                    remove_socket_file(path);
                }
            }
        }
    }

    async fn serve(mut self, shutdown: impl Future<Output = ()>) -> VmEnd {
        tokio::pin!(shutdown);
        let mut commands_open = true;
        loop {
            let frozen = self.state != AgentState::Running;
            let timer_at = self.timer.map(|(at, _)| at);
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    self.s.transcript.event("shutdown", None);
                    return self.end(VmEnd::Shutdown);
                }
                request = self.s.life.commands.recv(), if commands_open => match request {
                    Some(request) => {
                        if let Some(end) = self.command(request) {
                            return self.end(end);
                        }
                    }
                    None => commands_open = false,
                },
                Some(event) = self.power_rx.recv() => self.power_event(event),
                () = sleep_until_opt(self.vm_exit_at) => {
                    self.s.transcript.event("vm-exit", Some("the guest powered off".into()));
                    return self.end(VmEnd::VmExit);
                }
                () = sleep_until_opt(timer_at) => self.fire_timer(),
                exit = poll_process(&mut self.process), if !frozen => {
                    if let Some(end) = self.process_exited(exit) {
                        return self.end(end);
                    }
                }
            }
        }
    }

    fn end(mut self, how: VmEnd) -> VmEnd {
        self.end_process("agent-killed", Some("the VM exited".into()));
        self.timer = None;
        self.set_state(AgentState::VmExited);
        // Dropping the waiters tells them the mock is gone.
        self.stop_waiters.clear();
        how
    }

    fn spawn(&mut self) -> Result<(), LifeError> {
        let link = match &mut self.s.side {
            Side::VirtioSerial { port } => {
                port.open();
                Link::Port(port.clone())
            }
            Side::UnixListen { path, listener } => {
                let listener = match (listener.take(), path.as_deref()) {
                    (Some(listener), _) => listener,
                    (None, Some(path)) => {
                        match rebind_socket(path).and_then(|l| {
                            UnixListener::from_std(l).map_err(|source| super::BindError::Io {
                                path: path.to_owned(),
                                source,
                            })
                        }) {
                            Ok(listener) => listener,
                            Err(e) => {
                                let reason = format!("{e}");
                                self.s
                                    .transcript
                                    .event("agent-failed", Some(reason.clone()));
                                self.set_state(AgentState::Dead);
                                return Err(LifeError::StartFailed { reason });
                            }
                        }
                    }
                    (None, None) => {
                        let reason =
                            "the socket has no path to bind again after the agent died".to_owned();
                        self.s
                            .transcript
                            .event("agent-failed", Some(reason.clone()));
                        self.set_state(AgentState::Dead);
                        return Err(LifeError::StartFailed { reason });
                    }
                };
                Link::Listen(ListenLink::new(
                    listener,
                    self.s.status.clone(),
                    self.s.fresh_parser_per_connection,
                    self.s.transcript.clone(),
                    self.s.faults.clone(),
                    self.s.first_output.take(),
                ))
            }
        };
        let stop = Arc::new(StopSignal::default());
        let parts = ProcessParts {
            guest: self.s.guest.clone(),
            config: self.s.config.clone(),
            link,
            stop: stop.clone(),
            power: self.power_tx.clone(),
            faults: self.s.faults.clone(),
            parser_input: self.s.parser_input.take(),
            upstream: self
                .s
                .upstream
                .clone()
                .map(|path| Upstream::new(path, self.s.transcript.clone())),
            status: self.s.status.clone(),
            transcript: self.s.transcript.clone(),
        };
        self.process = Some(Process {
            future: Box::pin(process::run(parts)),
            stop,
        });
        self.s.transcript.event("agent-started", None);
        self.set_state(AgentState::Running);
        Ok(())
    }

    /// The process ended by itself: stopped, or ended by a fault.
    fn process_exited(&mut self, exit: Exit) -> Option<VmEnd> {
        match exit {
            Exit::Stopped => {
                self.end_process("agent-stopped", None);
                self.set_state(AgentState::Dead);
                self.answer_stop_waiters();
                None
            }
            Exit::VmExited => {
                self.s.transcript.event("vm-exit", Some("fault".into()));
                Some(VmEnd::VmExit)
            }
            Exit::Died { unread, downtime } => {
                self.end_process_returning("agent-killed", Some("fault".into()), unread);
                self.answer_stop_waiters();
                match downtime {
                    Restart::Never => self.set_state(AgentState::Dead),
                    Restart::AfterMs(0) => {
                        // A failed start is in the transcript and in the state.
                        let _ = self.spawn();
                    }
                    Restart::AfterMs(ms) => {
                        self.s
                            .transcript
                            .event("agent-restarting", Some(format!("{ms} ms")));
                        self.set_state(AgentState::Restarting);
                        self.timer =
                            Some((Instant::now() + Duration::from_millis(ms), Timer::Start));
                    }
                }
                None
            }
        }
    }

    /// The process is gone: what it held dies, the guest learns its agent restarted.
    fn end_process(&mut self, event: &'static str, detail: Option<String>) {
        self.end_process_returning(event, detail, None);
    }

    /// As [`Run::end_process`]; with `unread` (bytes the process took but had not read,
    /// as the guest sees it) they go back to the channel, and nothing is lost.
    fn end_process_returning(
        &mut self,
        event: &'static str,
        detail: Option<String>,
        unread: Option<Vec<u8>>,
    ) {
        let Some(process) = self.process.take() else {
            return;
        };
        drop(process);
        if let Side::VirtioSerial { port } = &self.s.side {
            match unread {
                Some(unread) => port.close_returning(&unread),
                None => port.close(),
            }
        }
        self.s
            .guest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .agent_restarted();
        self.s.transcript.event(event, detail);
    }

    fn answer_stop_waiters(&mut self) {
        let state = self.state;
        for waiter in self.stop_waiters.drain(..) {
            let _ = waiter.send(Ok(state));
        }
    }

    fn kill(&mut self, detail: Option<String>) {
        self.end_process("agent-killed", detail);
        self.set_state(AgentState::Dead);
        self.answer_stop_waiters();
    }

    fn not_applicable(&self, command: LifeCommand) -> LifeReply {
        Err(LifeError::NotApplicable {
            command: command.to_string(),
            state: self.state,
        })
    }

    /// Applies a life command; returns how the VM ended when the command ended it.
    fn command(&mut self, request: LifeRequest) -> Option<VmEnd> {
        let LifeRequest { command, reply } = request;
        let outcome = match command {
            LifeCommand::BootFromNow => match (self.state, self.s.start, &self.timer) {
                (AgentState::NotStarted, AgentStart::After(delay), Some((_, Timer::Start))) => {
                    self.timer = Some((Instant::now() + delay, Timer::Start));
                    self.s.transcript.event(
                        "boot-from-now",
                        Some(format!(
                            "the agent starts {} ms from now",
                            delay.as_millis()
                        )),
                    );
                    Ok(self.state)
                }
                _ => self.not_applicable(command),
            },
            LifeCommand::Start => match self.state {
                AgentState::NotStarted | AgentState::Dead | AgentState::Restarting => {
                    self.timer = None;
                    self.spawn().map(|()| self.state)
                }
                _ => self.not_applicable(command),
            },
            LifeCommand::Stop => match self.state {
                AgentState::Running => {
                    if let Some(process) = &self.process {
                        process.stop.request();
                    }
                    // The process finishes what it read, then the waiter hears of it.
                    self.stop_waiters.push(reply);
                    return None;
                }
                AgentState::Hung | AgentState::Suspended => {
                    self.kill(Some("stopped while frozen".into()));
                    Ok(self.state)
                }
                _ => {
                    self.timer = None;
                    self.set_state(AgentState::Dead);
                    Ok(self.state)
                }
            },
            LifeCommand::Kill => {
                self.timer = None;
                self.kill(None);
                Ok(self.state)
            }
            LifeCommand::Hang => match self.state {
                AgentState::Running => {
                    self.s.transcript.event("agent-hung", None);
                    self.set_state(AgentState::Hung);
                    Ok(self.state)
                }
                AgentState::Hung => Ok(self.state),
                _ => self.not_applicable(command),
            },
            LifeCommand::Resume => match self.state {
                AgentState::Hung | AgentState::Suspended => {
                    if self.timer.is_some_and(|(_, t)| t == Timer::Wake) {
                        self.timer = None;
                    }
                    self.s.transcript.event("agent-resumed", None);
                    self.set_state(AgentState::Running);
                    Ok(self.state)
                }
                AgentState::Running => Ok(self.state),
                _ => self.not_applicable(command),
            },
            LifeCommand::Restart { after } => {
                self.timer = None;
                self.end_process("agent-killed", Some("restart".into()));
                self.answer_stop_waiters();
                if after.is_zero() {
                    self.spawn().map(|()| self.state)
                } else {
                    self.s.transcript.event(
                        "agent-restarting",
                        Some(format!("{} ms", after.as_millis())),
                    );
                    self.set_state(AgentState::Restarting);
                    self.timer = Some((Instant::now() + after, Timer::Start));
                    Ok(self.state)
                }
            }
            LifeCommand::VmExit => {
                self.s.transcript.event("vm-exit", Some("requested".into()));
                let _ = reply.send(Ok(AgentState::VmExited));
                return Some(VmEnd::VmExit);
            }
        };
        let _ = reply.send(outcome);
        None
    }

    fn power_event(&mut self, event: PowerEvent) {
        let now = Instant::now();
        let answer_until = now + self.s.power.answer_for;
        let (detail, timer) = match &event {
            PowerEvent::Shutdown { mode } => (format!("shutdown {mode}"), Timer::PowerOff),
            // Hibernation writes the guest's memory to disk and powers off.
            PowerEvent::Suspend { kind } if kind == "disk" => {
                ("suspend disk".to_owned(), Timer::PowerOff)
            }
            PowerEvent::Suspend { kind } => (format!("suspend {kind}"), Timer::Suspend),
        };
        self.s.transcript.event("power-event", Some(detail));
        self.timer = Some((answer_until, timer));
        if timer == Timer::PowerOff {
            self.vm_exit_at = Some(answer_until + self.s.power.silent_for);
        }
    }

    fn fire_timer(&mut self) {
        let Some((_, timer)) = self.timer.take() else {
            return;
        };
        match timer {
            Timer::Start => {
                // A failed start is in the transcript and in the state.
                let _ = self.spawn();
            }
            Timer::PowerOff => {
                self.end_process("agent-stopped", Some("the guest is shutting down".into()));
                self.set_state(AgentState::Dead);
                self.answer_stop_waiters();
            }
            Timer::Suspend => {
                if self.state == AgentState::Running || self.state == AgentState::Hung {
                    self.s.transcript.event("guest-suspended", None);
                    self.set_state(AgentState::Suspended);
                    if let Some(after) = self.s.power.wake_after {
                        self.timer = Some((Instant::now() + after, Timer::Wake));
                    }
                }
            }
            Timer::Wake => {
                if self.state == AgentState::Suspended {
                    self.s
                        .transcript
                        .event("agent-resumed", Some("woke up".into()));
                    self.set_state(AgentState::Running);
                }
            }
        }
    }
}

/// Default timings of a guest power-off, as measured on a real guest (qemu-guest.md §4(e)):
/// the agent answered for 0.54 s after guest-shutdown, the port was then silent for
/// 0.53 s before QEMU closed the socket.
pub(crate) const DEFAULT_ANSWER_FOR: Duration = Duration::from_millis(540);
pub(crate) const DEFAULT_SILENT_FOR: Duration = Duration::from_millis(530);
