//! Shared by the integration tests: request bytes, a plain socket client, the mock with
//! faults and its transcript, scripted hostile agents, the runner's clients and cases, and
//! the `qga-harness` binary as a process.
//!
//! Every wait has a generous deadline that only turns a hang into a failure with a
//! message; the tests synchronise on bytes, life states and channel status, never on time.

#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub mod hostile;
mod mock;
pub mod process;
pub mod runner;
mod socket;
mod wire;

use std::time::Duration;

pub use mock::*;
pub use socket::*;
pub use wire::*;

/// Slack allowed past a deadline in timing assertions: the machine may be loaded.
pub const SLACK: Duration = Duration::from_millis(400);
