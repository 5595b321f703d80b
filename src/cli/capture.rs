//! `qga-harness capture`: asks a real agent every read-only command and writes a profile that emulates it.

/// Asks a real agent every read-only command and writes a profile that emulates it.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {}

pub fn run(args: CaptureArgs) -> i32 {
    let _ = args;
    todo!()
}
