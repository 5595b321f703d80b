//! `qga-harness session`: drives the reference client in session mode (JSON lines on stdin and stdout).

/// Drives the reference client in session mode (JSON lines on stdin and stdout).
#[derive(Debug, clap::Args)]
pub struct SessionArgs {}

pub fn run(args: SessionArgs) -> i32 {
    let _ = args;
    todo!()
}
