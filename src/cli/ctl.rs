//! `qga-harness ctl`: a small client of a running mock's control socket.
//!
//! Exit codes: 0 the mock did it; 1 the mock refused it (no such rule, a life command
//! that does not apply now); 2 bad usage (a spec that does not parse), or the control
//! socket cannot be reached or answers nonsense.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fault;

/// Changes a running mock's faults or drives its agent's life, through the control socket
/// of `qga-harness mock --control PATH`; prints the mock's answer (one JSON line).
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The mock's control socket.
    #[arg(long, value_name = "PATH")]
    control: PathBuf,

    /// How long to wait for the answer (a stop waits until the agent finished what it read).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    timeout_ms: u64,

    #[command(subcommand)]
    op: CtlOp,
}

#[derive(Debug, clap::Subcommand)]
enum CtlOp {
    /// The rules, with their ids and how often each fired.
    List,
    /// Adds a rule: a compact --fault spec, or a JSON rule.
    Add {
        /// e.g. 'guest-ping@3:die-mid-reply=10,restart=500ms'
        spec: String,
    },
    /// Removes the rule with this id.
    Remove { id: u64 },
    /// Removes every rule.
    Clear,
    /// Starts the agent (not started yet, or dead).
    Start,
    /// Stops the agent as SIGTERM does: it finishes what it read, then exits.
    Stop,
    /// Kills the agent at once (SIGKILL).
    Kill,
    /// Freezes the agent where it is (SIGSTOP).
    Hang,
    /// Lets a hung agent or a suspended guest go on.
    Resume,
    /// Kills the agent and starts a new one, now or after MS milliseconds.
    Restart {
        #[arg(value_name = "MS")]
        after_ms: Option<u64>,
    },
    /// The VM exits: clients get EOF, the mock ends.
    VmExit,
    /// The agent's state, the seed, the rules, the channel's counters.
    Status,
}

fn request(op: &CtlOp) -> Result<Value, String> {
    let life = |action: &str| json!({"op": "life", "do": action});
    Ok(match op {
        CtlOp::List => json!({"op": "list"}),
        CtlOp::Add { spec } => {
            // Checked here first, so a typo is a usage error with its place.
            fault::parse_spec(spec).map_err(|e| e.to_string())?;
            json!({"op": "add", "spec": spec})
        }
        CtlOp::Remove { id } => json!({"op": "remove", "id": id}),
        CtlOp::Clear => json!({"op": "clear"}),
        CtlOp::Start => life("start"),
        CtlOp::Stop => life("stop"),
        CtlOp::Kill => life("kill"),
        CtlOp::Hang => life("hang"),
        CtlOp::Resume => life("resume"),
        CtlOp::Restart { after_ms } => match after_ms {
            Some(ms) => json!({"op": "life", "do": "restart", "after_ms": ms}),
            None => life("restart"),
        },
        CtlOp::VmExit => life("vm-exit"),
        CtlOp::Status => json!({"op": "status"}),
    })
}

fn exchange(args: &CtlArgs, request: &Value) -> Result<Value, String> {
    let path = args.control.display();
    let mut stream = UnixStream::connect(&args.control).map_err(|e| {
        format!("cannot connect to the control socket {path}: {e}; is `qga-harness mock --control {path}` running?")
    })?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("cannot set a timeout on {path}: {e}"))?;
    let mut line = request.to_string().into_bytes();
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("cannot write to {path}: {e}"))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| format!("no answer from {path} within {} ms: {e}", args.timeout_ms))?;
    if answer.is_empty() {
        return Err(format!("{path} closed the connection without an answer"));
    }
    serde_json::from_str(&answer)
        .map_err(|e| format!("{path} answered something that is not JSON: {e}"))
}

pub fn run(args: CtlArgs) -> i32 {
    let request = match request(&args.op) {
        Ok(request) => request,
        Err(message) => {
            eprintln!("qga-harness ctl: {message}");
            return 2;
        }
    };
    let answer = match exchange(&args, &request) {
        Ok(answer) => answer,
        Err(message) => {
            eprintln!("qga-harness ctl: {message}");
            return 2;
        }
    };
    match answer.get("ok") {
        Some(Value::Bool(true)) => {
            println!("{answer}");
            0
        }
        Some(Value::Bool(false)) => {
            let error = answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            eprintln!("qga-harness ctl: {error}");
            1
        }
        _ => {
            eprintln!("qga-harness ctl: the control socket answered without \"ok\": {answer}");
            2
        }
    }
}
