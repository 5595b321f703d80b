//! Scenario files: the model, the strict loader and the JSON Schema.

mod load;
mod model;
mod scale;

pub use load::{Located, ScenarioError};
pub use model::{
    AgentSetup, ClientErrorClass, ClientErrorOutcome, Duty, ErrorOutcome, FaultEntry, JsonType,
    OtherClient, Outcome, ProfileSource, Scenario, StartState, Step, Transport,
};
pub use scale::scale_time;

/// The JSON Schema of a scenario file, for editors and `qga-harness schema scenario`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Scenario)).unwrap_or_default()
}

#[cfg(test)]
mod tests;
