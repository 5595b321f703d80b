//! Fault injection: rules (`when` → `do`), the compact `--fault` syntax, and the seeded
//! engine that decides which rules fire. The channel carries the actions out on the wire.

mod build;
mod check;
pub(crate) mod engine;
mod rule;
pub(crate) mod spec;

pub use build::RuleBuilder;
pub use engine::RuleId;
pub(crate) use engine::{glob_match, Context, FaultEngine, Fired};
pub use rule::{
    Action, Distribution, EventKind, Garbage, Position, RawPosition, Restart, Rule, Since,
    SpuriousKind, Trigger, WrongId,
};
pub use spec::{parse as parse_spec, SpecError};
