//! The reference host client: a qemu-ga client that survives any guest.
//!
//! ```no_run
//! # async fn demo() -> qga_harness::client::Result<()> {
//! use std::time::Duration;
//! use qga_harness::client::{Client, Error, Exec, Capture};
//!
//! let mut agent = Client::builder("/run/qga.sock")
//!     .timeout(Duration::from_secs(3))
//!     .build();
//! agent.ping().await?;
//! let status = agent
//!     .exec_and_wait(&Exec::new("uname").arg("-r").capture(Capture::Separated), Duration::from_secs(10))
//!     .await?;
//! match agent.fsfreeze_freeze().await {
//!     Err(Error::Frozen(_)) => { /* already frozen */ }
//!     other => { other?; }
//! }
//! # let _ = status; Ok(())
//! # }
//! ```
//!
//! What it guarantees, whatever the guest sends:
//! - a call ends within its total deadline, with the true answer or a typed [`Error`];
//! - a reply is only taken for the request it answers (fresh random ids, a 0xFF +
//!   `guest-sync-delimited` handshake after connect and after any doubt);
//! - memory stays bounded (a configurable reply-line limit; bounded nesting);
//! - no failure is sticky: the next call resyncs or reconnects;
//! - no command is ever sent twice.
//!
//! Layout: `core` (connection, sync, matching, deadlines), `transport` (unix socket or
//! in-memory pipe), `frame` (bounded line and 0xFF framing), `reply` (reading a reply line), `request` (writing requests),
//! `commands` (typed helpers), `error`, `blocking`.

mod blocking;
mod commands;
mod core;
mod error;
mod frame;
pub(crate) mod mutation;
pub(crate) mod reply;
mod request;
mod transport;

pub use self::blocking::BlockingClient;
pub use self::commands::{
    Capture, CommandInfo, Exec, ExecStatus, FileRead, FileSeek, FileWrite, FsfreezeStatus,
    GuestInfo, IpAddress, NetworkInterface, NetworkStats, OsInfo, ShutdownMode, SuspendMode,
    Whence,
};
pub use self::core::{
    is_no_reply_command, Client, ClientBuilder, Stats, DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_NO_REPLY_GRACE, DEFAULT_TIMEOUT,
};
pub use self::error::{AgentError, Error, ProtocolError, Result, Stage};
pub use self::transport::{memory_channel, MemoryConnector, MemoryListener};
