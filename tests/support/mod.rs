//! The old path of the client tests' helpers: everything is in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

#[allow(unused_imports)] // a test binary uses a part
pub use common::{hostile, SLACK};
