//! `qga-harness schema`: prints the JSON Schema of a scenario or profile file.

/// Prints the JSON Schema of a scenario or profile file.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub fn run(args: SchemaArgs) -> i32 {
    let _ = args;
    todo!()
}
