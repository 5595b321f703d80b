//! `qga-harness call`: sends one command to an agent with the reference client and prints
//! the reply.
//!
//! Output: the `return` value on success (exit 0); `{"error": {"class": C, "desc": D}}`
//! when the agent returned an error or the call failed, with the classes `Timeout`,
//! `Disconnected` and `Protocol` for client-side failures (exit 1). This is the oneshot
//! adapter form of the reference client.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::process::{check_socket_path, runtime, Threads};
use crate::client::{Client, Error};

/// Sends one command to an agent with the reference client and prints the reply.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints the command's return value as JSON (exit 0), or {\"error\": {\"class\": C, \"desc\": D}} \
(exit 1) when the agent returned an error or the call failed; client-side failures use the \
classes Timeout, Disconnected and Protocol. Exit 2: bad usage, bad JSON, or a socket path \
that cannot be an agent's socket.

Examples:
  qga-harness call --socket /run/qga.sock guest-ping
  qga-harness call --socket /run/qga.sock guest-exec-status '{\"pid\": 1234}'
  qga-harness call --socket /run/qga.sock --raw '{\"execute\": \"guest-info\"}'")]
pub struct CallArgs {
    /// The agent's unix socket.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Total time for the call (connect, sync and reply), in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    timeout_ms: u64,
    /// Send this JSON value as the whole request instead of COMMAND [ARGUMENTS_JSON]; an
    /// object without "id" gets a fresh one.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["command", "arguments"])]
    raw: Option<String>,
    /// The command to run, e.g. guest-ping.
    #[arg(required_unless_present = "raw")]
    command: Option<String>,
    /// The command's arguments: a JSON object.
    #[arg(value_name = "ARGUMENTS_JSON")]
    arguments: Option<String>,
}

/// What to send, checked before anything touches the socket.
enum Request {
    Command {
        name: String,
        arguments: Option<Value>,
    },
    Raw(Value),
}

pub fn run(args: CallArgs) -> i32 {
    let request = match parse_request(&args) {
        Ok(request) => request,
        Err(message) => {
            eprintln!("qga-harness call: {message}");
            return 2;
        }
    };
    if let Err(message) = check_socket(&args.socket) {
        eprintln!("qga-harness call: {message}");
        return 2;
    }
    let runtime = match runtime(Threads::One) {
        Ok(runtime) => runtime,
        Err(message) => {
            eprintln!("qga-harness call: {message}");
            return 2;
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut client = Client::builder(&args.socket).timeout(timeout).build();
    let result = runtime.block_on(async {
        match &request {
            Request::Command { name, arguments } => client.execute(name, arguments.as_ref()).await,
            Request::Raw(value) => client.execute_raw(value).await,
        }
    });
    match result {
        Ok(value) => {
            println!("{value}");
            0
        }
        Err(e) => {
            println!(
                "{}",
                json!({"error": {"class": e.class(), "desc": e.desc()}})
            );
            match &e {
                Error::Connect { source, .. } if is_path_problem(source) => {
                    eprintln!(
                        "qga-harness call: cannot use socket {}: {source}: check --socket",
                        args.socket.display()
                    );
                    return 2;
                }
                Error::Connect { source, .. } => {
                    // A socket nobody accepts on: the agent (or the VM) is not running.
                    eprintln!(
                        "qga-harness call: cannot connect to {}: {source} (is the agent running?)",
                        args.socket.display()
                    );
                }
                _ => eprintln!("qga-harness call: {}", e.desc()),
            }
            1
        }
    }
}

/// Connect errors that say the path is wrong rather than the agent absent.
fn is_path_problem(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{InvalidInput, NotADirectory, NotFound, PermissionDenied};
    matches!(
        e.kind(),
        NotFound | PermissionDenied | InvalidInput | NotADirectory
    )
}

fn parse_request(args: &CallArgs) -> Result<Request, String> {
    if let Some(raw) = &args.raw {
        let value =
            serde_json::from_str(raw).map_err(|e| format!("--raw is not valid JSON: {e}"))?;
        return Ok(Request::Raw(value));
    }
    let name = args
        .command
        .clone()
        .ok_or("missing COMMAND (or --raw JSON)")?;
    let arguments = match &args.arguments {
        None => None,
        Some(text) => {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| format!("ARGUMENTS_JSON is not valid JSON: {e}"))?;
            if !value.is_object() {
                return Err(format!(
                    "ARGUMENTS_JSON must be a JSON object, e.g. '{{\"id\": 1}}'; got {value}"
                ));
            }
            Some(value)
        }
    };
    Ok(Request::Command { name, arguments })
}

/// Rejects paths that cannot be an agent socket, with a message that says what to fix.
fn check_socket(path: &Path) -> Result<(), String> {
    check_socket_path(path)?;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("no socket at {shown}: check --socket (is the agent or the VM running?)")
        }
        _ => format!("cannot use socket {shown}: {e}"),
    })?;
    if !meta.file_type().is_socket() {
        return Err(format!("{shown} is not a unix socket: check --socket"));
    }
    Ok(())
}
