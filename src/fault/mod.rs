//! Fault injection: rules (`when` → `do`), the compact `--fault` syntax, and the seeded
//! engine that decides which rules fire. The channel carries the actions out on the wire.

mod build;
mod check;
mod engine;
mod rule;
pub mod spec;

pub use build::RuleBuilder;
pub use engine::{glob_match, Context, FaultEngine, Fired, RuleId};
pub use rule::{
    Action, Distribution, EventKind, Garbage, Position, RawPosition, Restart, Rule, Since,
    SpuriousKind, Trigger, WrongId,
};
pub use spec::{parse as parse_spec, SpecError};
