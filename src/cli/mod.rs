//! The command line: one subcommand per module, each a thin layer over the library.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "qga-harness", version, about = "A test harness for QEMU guest agent host clients")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {}

/// Runs the command line and returns the process exit code (0, 1 or 2; see the README).
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {}
}
