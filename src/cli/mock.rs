//! `qga-harness mock`: runs a mock qemu-ga behind a unix socket.

/// Runs a mock qemu-ga behind a unix socket.
#[derive(Debug, clap::Args)]
pub struct MockArgs {}

pub fn run(args: MockArgs) -> i32 {
    let _ = args;
    todo!()
}
