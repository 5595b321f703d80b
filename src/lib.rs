//! qga-harness: a test harness for QEMU guest agent (qemu-ga) host clients.
//!
//! # Layout
//!
//! - [`wire`]: QEMU's JSON framing and qemu-ga's exact output bytes.
//! - [`agent`]: dispatch, checks and error texts of qemu-ga.
//! - [`fault`]: fault rules, the `--fault` syntax and the seeded engine.
//! - [`guest`]: the simulated guest (profiles, files, processes, fsfreeze, time).
//! - [`channel`]: virtio-serial and unix-listen socket semantics, the agent's life.
//! - [`client`]: the reference host client.
//! - [`scenario`]: scenario files, their strict loader and JSON Schema.
//! - [`runner`]: running cases against a host client, judging them.
//! - [`report`]: human, JUnit, JSON reports, artifacts and baselines.
//! - [`proxy`]: the fault proxy in front of a real agent's socket.
//! - [`fuzz`]: fuzzing campaigns against clients (`qga-harness fuzz`), and with the
//!   feature `fuzzing` the generators and oracles of the fuzz targets; not a stable API.
//! - [`internals`]: what the binary, the tests, the benches and measurement tools need
//!   beyond that (the command line, real QEMU guests, real libvirt, the real qemu-ga, the
//!   judge itself); not the stable API.
//! - [`MockAgent`]: the mock qemu-ga as a library (`mock.rs`).

pub mod agent;
mod blocking;
pub mod channel;
mod cli;
pub mod client;
mod expect;
pub mod fault;
pub mod fleet;
pub mod fuzz;
pub mod guest;
pub mod internals;
mod libvirt;
mod mock;
pub mod proxy;
mod qemu;
mod real_agent;
mod received;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod transcript;
pub mod wire;

pub use blocking::BlockingMockAgent;
pub use channel::{
    AgentLife, AgentState, ChannelStatus, FaultControl, LifeError, ListedRule, PowerPolicy,
    RuleError, StartState, Transport, VmEnd,
};
pub use expect::{Expectation, Verification};
pub use fault::{Rule, RuleBuilder};
pub use mock::{FaultGuard, MockAgent, MockAgentBuilder, MockError};
pub use received::Received;
