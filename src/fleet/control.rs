//! The fleet's control socket: JSON lines, one request and one answer per line.
//!
//! - `{"op": "summary"}`: the totals and what each agent served.
//! - `{"op": "set", "agent": N, "condition": "healthy|dead|slow|hostile"}`: one agent.
//! - `{"op": "shares", "dead": PCT, "slow": PCT, "hostile": PCT, "seed": S}`: reassign all.
//!
//! Every answer has `"ok": true` or `"ok": false` with an `"error"` that says what was wrong.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use super::{Condition, Fleet, Shares};

/// The longest request line read.
const MAX_LINE: u64 = 64 * 1024;

/// Why the control socket stopped.
#[derive(Debug, thiserror::Error)]
#[error("the fleet's control socket failed")]
pub struct ControlError(#[source] pub std::io::Error);

/// Serves control clients on `listener`, one task each, until the task is dropped.
pub async fn serve_control(
    listener: UnixListener,
    fleet: Arc<Mutex<Fleet>>,
) -> Result<(), ControlError> {
    loop {
        let (stream, _) = listener.accept().await.map_err(ControlError)?;
        let fleet = fleet.clone();
        tokio::spawn(async move {
            let _ = serve_client(stream, fleet).await;
        });
    }
}

async fn serve_client(stream: UnixStream, fleet: Arc<Mutex<Fleet>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    loop {
        let mut line = String::new();
        let n = (&mut lines).take(MAX_LINE).read_line(&mut line).await?;
        if n == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let answer = if n as u64 >= MAX_LINE && !line.ends_with('\n') {
            failure(&format!("request longer than {MAX_LINE} bytes"))
        } else {
            handle(&line, &fleet).await
        };
        let mut text = answer.to_string();
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
}

fn failure(error: &str) -> Value {
    json!({"ok": false, "error": error})
}

async fn handle(line: &str, fleet: &Mutex<Fleet>) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(value) => value,
        Err(e) => return failure(&format!("not JSON: {e}")),
    };
    match request.get("op").and_then(Value::as_str) {
        Some("summary") => {
            let fleet = fleet.lock().await;
            json!({"ok": true, "totals": fleet.totals(), "agents": fleet.summary()})
        }
        Some("set") => {
            let Some(agent) = request.get("agent").and_then(Value::as_u64) else {
                return failure("'set' needs \"agent\": the agent's number, from 1");
            };
            let condition = match request.get("condition").and_then(Value::as_str) {
                Some(text) => match text.parse::<Condition>() {
                    Ok(condition) => condition,
                    Err(e) => return failure(&e),
                },
                None => {
                    return failure("'set' needs \"condition\": healthy, dead, slow or hostile")
                }
            };
            match fleet
                .lock()
                .await
                .set_condition(agent as usize, condition)
                .await
            {
                Ok(()) => json!({"ok": true}),
                Err(e) => failure(&e),
            }
        }
        Some("shares") => {
            let pct = |name: &str| request.get(name).and_then(Value::as_f64).unwrap_or(0.0) / 100.0;
            let shares = Shares {
                dead: pct("dead"),
                slow: pct("slow"),
                hostile: pct("hostile"),
            };
            let seed = request.get("seed").and_then(Value::as_u64).unwrap_or(0);
            let mut fleet = fleet.lock().await;
            match fleet.set_shares(shares, seed).await {
                Ok(()) => json!({"ok": true, "totals": fleet.totals()}),
                Err(e) => failure(&e),
            }
        }
        Some(other) => failure(&format!(
            "unknown op '{other}': expected summary, set or shares"
        )),
        None => failure("the request needs \"op\": summary, set or shares"),
    }
}
