//! The mock inside a real guest (`qga-harness guest-agent`, started by the image's `/init`
//! for `qgah.agent=mock`): it serves the agent port device with the crate's mock and obeys
//! the control port.
//!
//! The control port carries one command per line and one answer per line, as with the
//! real agent (see `control.rs`), plus:
//!
//! - `load BASE64`: the next case's agent side, `{"seed": N, "agent": {...}}` (a scenario's
//!   `agent` part with the profile inline), base64 of its JSON. The previous mock is shut
//!   down first; the new one opens the port device and records a transcript from now.
//! - `begin`: the client began its first step (a delayed start counts from here).
//! - `unload`: shuts the mock down; its transcript is complete.
//! - `transcript`: `ok transcript N`, the N lines of the last mock's transcript, `end`.
//!
//! When a case powers the simulated VM off (guest-shutdown, a `vm-exit` fault), the real VM
//! powers off too, so the host sees what it would see; the transcript goes first, without
//! being asked, as `vm-exit`, its lines, `end`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::sync::oneshot;

use crate::channel::VmEnd;
use crate::scenario::AgentSetup;
use crate::{AgentLife, MockAgent};

/// Where the transcript is written (a tmpfs in the guest).
const TRANSCRIPT: &str = "/run/qgah-transcript.jsonl";
/// How long a mock may take to shut down.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before reading the control port again while no host is connected.
const NO_HOST_RETRY: Duration = Duration::from_millis(50);

/// What `load` carries.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct LoadCase {
    pub seed: u64,
    pub agent: AgentSetup,
}

/// The loaded mock.
struct Loaded {
    life: AgentLife,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<VmEnd, String>>,
}

/// Runs the mock inside the guest until the process is killed. Returns an exit code.
pub fn run_guest_agent(port: &Path, control: &Path) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("qga-harness guest-agent: cannot start the runtime: {e}");
            return 2;
        }
    };
    let device = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(control)
    {
        Ok(device) => device,
        Err(e) => {
            eprintln!(
                "qga-harness guest-agent: cannot open the control port {}: {e}",
                control.display()
            );
            return 2;
        }
    };
    let writer = match device.try_clone() {
        Ok(writer) => Arc::new(Mutex::new(writer)),
        Err(e) => {
            eprintln!("qga-harness guest-agent: {e}");
            return 2;
        }
    };
    let mut inside = Inside {
        runtime,
        port: port.to_owned(),
        loaded: None,
        writer,
    };
    inside.say("ready mock");
    let mut reader = BufReader::new(device);
    let mut line = String::new();
    loop {
        line.clear();
        match Read::take(&mut reader, 64 << 20).read_line(&mut line) {
            // No host on the control port: the driver reads 0 until one connects.
            Ok(0) | Err(_) => {
                std::thread::sleep(NO_HOST_RETRY);
                continue;
            }
            Ok(_) => {}
        }
        let command = line.trim_end_matches(['\n', '\r']);
        let (name, arg) = command.split_once(' ').unwrap_or((command, ""));
        let answer = inside.obey(name, arg);
        inside.say(&answer);
    }
}

struct Inside {
    runtime: tokio::runtime::Runtime,
    port: PathBuf,
    loaded: Option<Loaded>,
    writer: Arc<Mutex<std::fs::File>>,
}

impl Inside {
    fn say(&self, line: &str) {
        say(&self.writer, line);
    }

    fn obey(&mut self, name: &str, arg: &str) -> String {
        match name {
            "ping" => format!("ok pong {arg}"),
            "load" => match self.load(arg) {
                Ok(()) => "ok loaded".into(),
                Err(e) => format!("err {e}"),
            },
            "unload" => format!("ok unloaded {}", self.unload()),
            "transcript" => {
                let lines = read_transcript();
                let mut out = self.writer.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(out, "ok transcript {}", lines.len());
                for l in &lines {
                    let _ = writeln!(out, "{l}");
                }
                "end".into()
            }
            "status" => match &self.loaded {
                Some(loaded) if !loaded.task.is_finished() => {
                    format!("ok running {:?}", loaded.life.state()).to_lowercase()
                }
                _ => "ok down".into(),
            },
            "begin" | "kill" | "hang" | "resume" | "stop" | "start" | "restart" => {
                let Some(loaded) = &self.loaded else {
                    return "err no case is loaded".into();
                };
                let life = loaded.life.clone();
                let outcome = self.runtime.block_on(async move {
                    match name {
                        "begin" => life.boot_from_now().await,
                        "kill" => life.kill().await,
                        "hang" => life.hang().await,
                        "resume" => life.resume().await,
                        "stop" => life.stop().await,
                        "start" => life.start().await,
                        _ => life.restart().await,
                    }
                });
                match (name, outcome) {
                    (_, Ok(state)) => format!("ok {state:?}").to_lowercase(),
                    // Not applicable: the agent had started already.
                    ("begin", Err(_)) => "ok begun".into(),
                    (_, Err(e)) => format!("err {e}"),
                }
            }
            "poweroff" => {
                self.say("ok poweroff");
                power_off();
                "err power-off failed".into()
            }
            _ => format!("err unknown command '{name}'"),
        }
    }

    fn load(&mut self, arg: &str) -> Result<(), String> {
        self.unload();
        let json = base64::engine::general_purpose::STANDARD
            .decode(arg.trim())
            .map_err(|e| format!("load: not base64: {e}"))?;
        let case: LoadCase =
            serde_json::from_slice(&json).map_err(|e| format!("load: not a case: {e}"))?;
        let builder = MockAgent::builder()
            .seed(case.seed)
            .scenario_agent(&case.agent, Path::new("/"))
            .map_err(|e| format!("load: bad agent part: {e}"))?
            .transcript(TRANSCRIPT);
        let life = builder.life();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let port = self.port.clone();
        let writer = self.writer.clone();
        let task = self.runtime.spawn(async move {
            let end = builder
                .serve_port_device(&port, async move {
                    let _ = stopped.await;
                })
                .await
                .map_err(|e| e.to_string())?;
            if end == VmEnd::VmExit {
                // The simulated VM powered off: so does this one, once the host has the
                // transcript (it cannot ask for it afterwards).
                let lines = read_transcript();
                {
                    let mut out = writer.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(out, "vm-exit");
                    for l in &lines {
                        let _ = writeln!(out, "{l}");
                    }
                    let _ = writeln!(out, "end");
                    let _ = out.flush();
                }
                power_off();
            }
            Ok(end)
        });
        let serving = life.clone();
        let mut task = task;
        let started = self.runtime.block_on(async {
            tokio::time::timeout(UNLOAD_TIMEOUT, async {
                tokio::select! {
                    () = serving.serving() => Ok(()),
                    ended = &mut task => Err(match ended {
                        Ok(Err(e)) => format!("load: {e}"),
                        _ => "load: the mock ended before it served".to_owned(),
                    }),
                }
            })
            .await
        });
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                task.abort();
                return Err("load: the mock did not start serving".into());
            }
        }
        self.loaded = Some(Loaded {
            life,
            shutdown,
            task,
        });
        Ok(())
    }

    /// Shuts the loaded mock down; says how it ended.
    fn unload(&mut self) -> String {
        let Some(loaded) = self.loaded.take() else {
            return "none".into();
        };
        let _ = loaded.shutdown.send(());
        let task = loaded.task;
        match self
            .runtime
            .block_on(async { tokio::time::timeout(UNLOAD_TIMEOUT, task).await })
        {
            Ok(Ok(Ok(end))) => format!("{end:?}").to_lowercase(),
            Ok(Ok(Err(e))) => format!("failed: {e}"),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(_) => "timed-out".into(),
        }
    }
}

fn say(writer: &Mutex<std::fs::File>, line: &str) {
    let mut out = writer.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn read_transcript() -> Vec<String> {
    std::fs::read_to_string(TRANSCRIPT)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn power_off() {
    // SAFETY: sync and reboot take no pointers; powering off is what is wanted.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
