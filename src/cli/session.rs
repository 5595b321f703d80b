//! `qga-harness session`: drives the reference client in session mode.
//!
//! One JSON line per step on stdin, `{"id": N, "execute": "...", "arguments": {...},
//! "timeout_ms": T}`; one line per step on stdout, `{"id": N, "return": V}` or
//! `{"id": N, "error": {"class": C, "desc": D}}`. The agent's errors keep their class;
//! client-side failures use `Timeout`, `Disconnected` and `Protocol`, and so does a bad
//! step line (`Protocol`, naming what was wrong). A no-reply command that succeeds
//! answers `{"id": N, "return": {}}`. One client serves the whole session, so its
//! connection (and any late reply on it) carries over from step to step.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::process::{runtime, Threads};
use crate::client::Client;

/// The longest step line read; a longer one is answered with a Protocol error.
const MAX_STEP_LINE: usize = 64 << 20;

/// Drives the reference client in session mode (JSON lines on stdin and stdout).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Reads one step per line on stdin:
  {\"id\": N, \"execute\": \"guest-ping\", \"arguments\": {...}, \"timeout_ms\": T}
and answers each with one line on stdout:
  {\"id\": N, \"return\": V}   or   {\"id\": N, \"error\": {\"class\": C, \"desc\": D}}
The agent's errors keep their class; client-side failures and bad step lines use Timeout, \
Disconnected or Protocol. One connection serves the whole session. Ends at the end of stdin.")]
pub struct SessionArgs {
    /// The agent's unix socket.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// The total time of a step that gives no "timeout_ms", in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    timeout_ms: u64,
}

pub fn run(args: SessionArgs) -> i32 {
    let runtime = match runtime(Threads::One) {
        Ok(runtime) => runtime,
        Err(message) => {
            eprintln!("qga-harness session: {message}");
            return 2;
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: SessionArgs) -> i32 {
    let default_timeout = Duration::from_millis(args.timeout_ms);
    let mut client = Client::builder(&args.socket)
        .timeout(default_timeout)
        .build();
    let mut input = BufReader::new(tokio::io::stdin());
    let stdout = std::io::stdout();
    loop {
        let line = match read_line(&mut input, MAX_STEP_LINE).await {
            Ok(Line::Eof) => return 0,
            Ok(Line::TooLong) => protocol_error(
                &Value::Null,
                &format!("bad step line: longer than {MAX_STEP_LINE} bytes"),
            ),
            Ok(Line::Text(line)) if line.trim_ascii().is_empty() => continue,
            Ok(Line::Text(line)) => run_step(&mut client, &line, default_timeout).await,
            Err(e) => {
                eprintln!("qga-harness session: cannot read stdin: {e}");
                return 1;
            }
        };
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // Whoever drives the session has gone away.
            return 1;
        }
    }
}

/// One step line, run: the answer line (without newline).
async fn run_step(client: &mut Client, line: &[u8], default_timeout: Duration) -> String {
    let step = match Step::parse(line) {
        Ok(step) => step,
        Err((id, what)) => return protocol_error(&id, &format!("bad step line: {what}")),
    };
    let timeout = step.timeout.unwrap_or(default_timeout);
    let result = client
        .execute_within(&step.execute, step.arguments.as_ref(), timeout)
        .await;
    match result {
        Ok(value) => format!("{{\"id\":{},\"return\":{value}}}", step.id),
        Err(e) => error_line(&step.id, e.class(), &e.desc()),
    }
}

fn error_line(id: &Value, class: &str, desc: &str) -> String {
    format!(
        "{{\"id\":{id},\"error\":{}}}",
        json!({"class": class, "desc": desc})
    )
}

fn protocol_error(id: &Value, desc: &str) -> String {
    error_line(id, "Protocol", desc)
}

/// A checked step.
#[derive(Debug)]
struct Step {
    id: Value,
    execute: String,
    arguments: Option<Value>,
    timeout: Option<Duration>,
}

impl Step {
    /// The step, or its id (null when unknown) and what was wrong with it.
    fn parse(line: &[u8]) -> Result<Step, (Value, String)> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| (Value::Null, format!("not JSON ({e})")))?;
        let Value::Object(mut members) = value else {
            return Err((Value::Null, "not a JSON object".into()));
        };
        let id = members.remove("id").unwrap_or(Value::Null);
        let fail = |what: &str| Err((id.clone(), what.to_owned()));
        let execute = match members.remove("execute") {
            Some(Value::String(name)) => name,
            Some(_) => return fail("member 'execute' must be a string"),
            None => return fail("member 'execute' is missing"),
        };
        let arguments = match members.remove("arguments") {
            None | Some(Value::Null) => None,
            Some(args @ Value::Object(_)) => Some(args),
            Some(_) => return fail("member 'arguments' must be an object"),
        };
        let timeout = match members.remove("timeout_ms") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(ms) => Some(Duration::from_millis(ms)),
                None => return fail("member 'timeout_ms' must be a non-negative integer"),
            },
            Some(_) => return fail("member 'timeout_ms' must be a non-negative integer"),
        };
        Ok(Step {
            id,
            execute,
            arguments,
            timeout,
        })
    }
}

enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
}

/// Reads one line of at most `max` bytes; the rest of a longer one is skipped.
async fn read_line<R: AsyncBufRead + Unpin>(input: &mut R, max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = input.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Text(line),
            });
        }
        let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (chunk.len(), false),
        };
        let content = &chunk[..if done { used - 1 } else { used }];
        if !too_long {
            if line.len() + content.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(content);
            }
        }
        input.consume(used);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Text(line)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_step() {
        let step = Step::parse(
            br#"{"id": 3, "execute": "guest-sync", "arguments": {"id": 1}, "timeout_ms": 250}"#,
        )
        .unwrap();
        assert_eq!(step.id, json!(3));
        assert_eq!(step.execute, "guest-sync");
        assert_eq!(step.arguments, Some(json!({"id": 1})));
        assert_eq!(step.timeout, Some(Duration::from_millis(250)));
    }

    #[rstest::rstest]
    #[case(&b"nonsense"[..], "null", "not JSON")]
    #[case(&b"[1]"[..], "null", "not a JSON object")]
    #[case(&br#"{"id": 1}"#[..], "1", "'execute' is missing")]
    #[case(&br#"{"id": "a", "execute": 5}"#[..], "\"a\"", "'execute' must be a string")]
    #[case(&br#"{"id": 2, "execute": "x", "arguments": []}"#[..], "2", "'arguments' must be an object")]
    #[case(&br#"{"id": 2, "execute": "x", "timeout_ms": -1}"#[..], "2", "'timeout_ms'")]
    #[case(&br#"{"id": 2, "execute": "x", "timeout_ms": "5"}"#[..], "2", "'timeout_ms'")]
    fn names_what_is_wrong_with_a_bad_step(
        #[case] line: &[u8],
        #[case] id: &str,
        #[case] what: &str,
    ) {
        let (got_id, got_what) = Step::parse(line).unwrap_err();
        assert_eq!(got_id.to_string(), id);
        assert!(got_what.contains(what), "{got_what}");
    }

    #[tokio::test]
    async fn reads_lines_within_a_bound() {
        let input = b"short\nthis one is too long\nok\nlast".to_vec();
        let mut reader = BufReader::with_capacity(4, &input[..]);
        let mut got = Vec::new();
        loop {
            match read_line(&mut reader, 8).await.unwrap() {
                Line::Eof => break,
                Line::TooLong => got.push("<too long>".to_owned()),
                Line::Text(t) => got.push(String::from_utf8(t).unwrap()),
            }
        }
        assert_eq!(got, ["short", "<too long>", "ok", "last"]);
    }
}
