//! `qga-harness schema`: prints the JSON Schema of a scenario, profile, report or baseline file.

use std::io::Write;

use crate::guest::Profile;

/// Which file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    /// A scenario file (`scenarios/**/*.json`).
    Scenario,
    /// A guest profile (`mock --profile`, a scenario's `agent.profile`).
    Profile,
    /// The JSON report (`run --json`, read by `report merge`, `report html`, `report matrix`).
    Report,
    /// A baseline of verdicts (`run --baseline`, `scenarios/baselines/*.json`).
    Baseline,
}

/// Prints the JSON Schema of a scenario or profile file, for editors.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// The file format whose schema to print.
    #[arg(value_enum)]
    pub kind: SchemaKind,
}

pub fn run(args: SchemaArgs) -> i32 {
    let schema = match args.kind {
        SchemaKind::Scenario => crate::scenario::json_schema(),
        SchemaKind::Profile => Profile::json_schema(),
        SchemaKind::Report => crate::report::Report::json_schema(),
        SchemaKind::Baseline => {
            serde_json::to_value(schemars::schema_for!(crate::report::Baseline)).unwrap_or_default()
        }
    };
    match serde_json::to_string_pretty(&schema) {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            0
        }
        Err(e) => {
            eprintln!("error: cannot print the schema: {e}");
            2
        }
    }
}
