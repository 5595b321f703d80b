//! `qga-harness run`: runs scenario cases against a host client and judges it.

/// Runs scenario cases against a host client and judges it.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

pub fn run(args: RunArgs) -> i32 {
    let _ = args;
    todo!()
}
