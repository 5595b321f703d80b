//! Shared support for the client tests.

#![allow(dead_code)]

pub mod hostile;

use std::time::Duration;

/// Slack allowed past a deadline in timing assertions: the machine may be loaded.
pub const SLACK: Duration = Duration::from_millis(400);
