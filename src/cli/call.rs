//! `qga-harness call`: sends one command to an agent with the reference client and prints the reply.

/// Sends one command to an agent with the reference client and prints the reply.
#[derive(Debug, clap::Args)]
pub struct CallArgs {}

pub fn run(args: CallArgs) -> i32 {
    let _ = args;
    todo!()
}
