//! A protocol-aware fault proxy between any host client and a real agent's socket.
//!
//! The proxy is the mock with its guest swapped for a real agent: the same channel (one
//! client at a time, the agent's life driven by faults and the control socket), the same
//! parser (qemu-ga's, so requests are found where the real agent finds them), the same
//! fault rules and their execution, the same transcript. Each complete request is
//! forwarded to the real agent and its reply line comes back through the fault plan, so a
//! fault keyed by command (`guest-get-osinfo:spurious=stale-sync`, `guest-ping@3:delay=2s`,
//! `guest-fsfreeze-freeze:die-mid-reply=10,restart=1s`) applies to a real agent in a real
//! VM. Input that does not parse is answered by the proxy's own qemu-ga 7.2 dispatcher
//! (byte-identical parse errors), so the real agent's parser only ever sees whole requests.
//!
//! ```text
//! client ──► proxy socket ──► parser ──► faults ──► forward ──► real agent socket
//!        ◄──                 ◄── reply writer (faults) ◄── one reply line ◄──
//! ```
//!
//! Ground truth is what the proxy can know: which request it forwarded and which line came
//! back for it (the transcript's `upstream` records). A real agent answers in order, one
//! line per reply; output it sends on its own (stale replies from an earlier client of a
//! QEMU chardev) is passed on as the reply of the request that was waiting.

mod upstream;

use std::path::PathBuf;

pub(crate) use upstream::Upstream;

use crate::{MockAgent, MockAgentBuilder};

/// A proxy in front of the real agent at `upstream` (its unix socket: qemu-ga's own with
/// `-m unix-listen`, or QEMU's chardev socket of a guest's virtio-serial port).
///
/// Everything else is set as on a mock: `fault`, `seed`, `control`, `transcript`,
/// `transport` (the proxy's own socket's semantics), `scenario_agent` (only its faults,
/// seed and transport matter; the real agent answers the rest).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use qga_harness::fault::parse_spec;
///
/// let proxy = qga_harness::proxy::builder("/run/qga-real.sock")
///     .fault(parse_spec("guest-get-osinfo:delay=2s")?)
///     .bind("/tmp/qga-proxy.sock")
///     .await?;
/// # drop(proxy);
/// # Ok(())
/// # }
/// ```
pub fn builder(upstream: impl Into<PathBuf>) -> MockAgentBuilder {
    MockAgent::builder().upstream(upstream.into())
}
