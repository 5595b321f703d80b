//! The old path of the shared test helpers: everything is in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

#[allow(unused_imports)] // a test binary uses a part
pub use common::*;
