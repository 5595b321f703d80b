//! The command line: one subcommand per module, each a thin layer over the library.
//!
//! Exit codes: 0 success; 1 a verdict or a call failed; 2 bad usage, a bad file or an
//! environment problem, with a message that names the file or path and what to do.

use clap::{Parser, Subcommand};

mod call;
mod capture;
mod ctl;
mod fleet;
mod fuzz;
mod guest_agent;
mod mock;
mod process;
mod proxy;
mod replay;
mod report;
mod run;
mod schema;
mod session;

#[derive(Debug, Parser)]
#[command(
    name = "qga-harness",
    version,
    about = "A test harness for QEMU guest agent host clients"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Mock(mock::MockArgs),
    Proxy(proxy::ProxyArgs),
    Ctl(ctl::CtlArgs),
    Replay(replay::ReplayArgs),
    Call(call::CallArgs),
    Capture(capture::CaptureArgs),
    Session(session::SessionArgs),
    Run(run::RunArgs),
    Report(report::ReportArgs),
    Fuzz(fuzz::FuzzArgs),
    Schema(schema::SchemaArgs),
    #[command(hide = true)]
    GuestAgent(guest_agent::GuestAgentArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Mock(args) => mock::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Call(args) => call::run(args),
        Command::Capture(args) => capture::run(args),
        Command::Session(args) => session::run(args),
        Command::Run(args) => run::run(args),
        Command::Report(args) => report::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Schema(args) => schema::run(args),
        Command::GuestAgent(args) => guest_agent::run(args),
    }
}
