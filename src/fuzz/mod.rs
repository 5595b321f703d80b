//! The library side of fuzzing: input generators and oracles that the thin targets under
//! `fuzz/` call, and that the corpus regression tests replay on stable Rust.
//!
//! Each `check` function takes the raw bytes a fuzzer hands a target, turns them into a
//! structured case with `arbitrary`, runs the code under test and panics with a message
//! when an oracle is broken. Every function is deterministic in its input, so a crash
//! input replays exactly.
//!
//! - `wire`: the lexer/streamer (chunking does not matter, 0xFF recovery frames the
//!   values that follow as written, the writer's output reads back to the same bytes).
//! - `dispatch`: the agent's dispatch over arbitrary requests (one reply or none, as
//!   qemu-ga's rules say; every reply one well-formed line).
//! - `loaders`: the scenario, profile and `--fault` spec loaders (no panic; every error
//!   located).
//! - `client`: the reference client against a hostile in-memory agent whose every
//!   output is known (the true answer, or a foreign one), under tokio's paused clock.
//!
//! - [`campaign`]: `qga-harness fuzz`, hostile-guest campaigns against any client
//!   through the runner, ending in minimal scenario files (always built; the rest needs
//!   the `fuzzing` feature).
//!
//! Not a stable API: it exists for the fuzz targets, their regression tests and the
//! `fuzz` command.

pub mod campaign;
pub mod cause;
#[cfg(feature = "fuzzing")]
pub mod client;
#[cfg(feature = "fuzzing")]
pub mod dispatch;
#[cfg(feature = "fuzzing")]
pub mod gen;
#[cfg(feature = "fuzzing")]
pub mod loaders;
#[cfg(feature = "fuzzing")]
pub mod wire;

/// A target's oracle: panics when the input breaks an invariant.
#[cfg(feature = "fuzzing")]
pub type Oracle = fn(&[u8]);

/// The fuzz targets, by the name of their file under `fuzz/fuzz_targets/`, with their
/// oracle: what the corpus regression tests replay.
#[cfg(feature = "fuzzing")]
pub const TARGETS: &[(&str, Oracle)] = &[
    ("wire", wire::check),
    ("dispatch", dispatch::check),
    ("scenario", loaders::check_scenario),
    ("profile", loaders::check_profile),
    ("fault_spec", loaders::check_fault_spec),
    ("client", client::check),
];
