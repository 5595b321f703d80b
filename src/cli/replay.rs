//! `qga-harness replay`: turns the agent side of a transcript into a scenario file.

use std::path::PathBuf;

use crate::channel::Replay;

/// Writes the agent side a mock recorded in a transcript (its profile, transport, version,
/// lists, seed, state and the fault rules loaded at start) as a scenario file, so that a
/// failure seen once can be rerun: add the client's steps, or serve it with
/// `qga-harness mock --scenario FILE`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A transcript written by `qga-harness mock --transcript`.
    #[arg(value_name = "TRANSCRIPT")]
    transcript: PathBuf,

    /// The scenario file to write.
    #[arg(long, value_name = "SCENARIO")]
    out: PathBuf,
}

pub fn run(args: ReplayArgs) -> i32 {
    let replay = match Replay::from_transcript(&args.transcript) {
        Ok(replay) => replay,
        Err(e) => {
            eprintln!("qga-harness replay: {e}");
            return 2;
        }
    };
    if replay.runtime_changes > 0 {
        eprintln!(
            "qga-harness replay: note: {} rule change(s) made over the control socket are not part of the scenario",
            replay.runtime_changes
        );
    }
    let scenario = replay.scenario(&args.transcript);
    let mut text = match serde_json::to_string_pretty(&scenario) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("qga-harness replay: cannot write the scenario: {e}");
            return 2;
        }
    };
    text.push('\n');
    if let Err(e) = std::fs::write(&args.out, text) {
        eprintln!(
            "qga-harness replay: cannot write {}: {e}",
            args.out.display()
        );
        return 2;
    }
    0
}
