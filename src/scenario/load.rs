//! Loading scenario files: strict (unknown fields are errors), with errors that name the
//! file, line, column and the field's path, and say what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use super::model::{FaultEntry, Scenario};
use crate::fault::{self, Rule};

/// Why a scenario file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read the scenario file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0)]
    Invalid(Box<Located>),
}

/// A problem at a place in a scenario file.
#[derive(Debug)]
pub struct Located {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The JSON path of the field, e.g. `agent.faults[2].when.nth` (empty for the top level).
    pub field: String,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "at `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

fn invalid(
    path: &Path,
    line: usize,
    column: usize,
    field: String,
    message: String,
) -> ScenarioError {
    ScenarioError::Invalid(Box::new(Located {
        path: path.to_owned(),
        line,
        column,
        field,
        message,
    }))
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    /// Parses and checks scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Scenario, ScenarioError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let scenario: Scenario =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                let field = e.path().to_string();
                let inner = e.into_inner();
                let field = if field == "." { String::new() } else { field };
                invalid(
                    origin,
                    inner.line(),
                    inner.column(),
                    field,
                    explain(&inner.to_string()),
                )
            })?;
        deserializer.end().map_err(|e| {
            invalid(
                origin,
                e.line(),
                e.column(),
                String::new(),
                "unexpected text after the scenario object; a file holds one scenario".into(),
            )
        })?;
        scenario.check(text, origin)?;
        Ok(scenario)
    }

    /// Checks what the types cannot say.
    fn check(&self, text: &str, origin: &Path) -> Result<(), ScenarioError> {
        let place = |field: &str, needle: &str| -> (usize, usize) { locate(text, needle, field) };
        let valid_id = self.id.split_once('.').is_some_and(|(category, number)| {
            !category.is_empty()
                && category
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !number.is_empty()
                && number
                    .split('.')
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
        if !valid_id {
            let (line, column) = place("id", "\"id\"");
            return Err(invalid(
                origin,
                line,
                column,
                "id".into(),
                format!(
                    "'{}' is not a case id: expected category.number, e.g. sync.3 (lower-case category, numbers separated by dots)",
                    self.id
                ),
            ));
        }
        for (i, entry) in self.agent.faults.iter().enumerate() {
            let (checked, needle) = match entry {
                FaultEntry::Spec(spec) => (
                    fault::parse_spec(spec)
                        .map_err(|e| e.to_string())
                        .and_then(|rule| rule.check()),
                    spec.as_str(),
                ),
                // A rule object has no text of its own to point at: its list is the place.
                FaultEntry::Rule(rule) => (rule.check(), "\"faults\""),
            };
            if let Err(message) = checked {
                let (line, column) = place("", needle);
                return Err(invalid(
                    origin,
                    line,
                    column,
                    format!("agent.faults[{i}]"),
                    message,
                ));
            }
        }
        for (i, duty) in self.recommended.iter().enumerate() {
            if self.duties.contains(duty) {
                let (line, column) = place("", "\"recommended\"");
                return Err(invalid(
                    origin,
                    line,
                    column,
                    format!("recommended[{i}]"),
                    format!(
                        "'{}' is listed both in \"duties\" (required) and in \"recommended\"; keep it in one of them",
                        duty.name()
                    ),
                ));
            }
        }
        if let Some(other) = &self.other_client {
            let (line, column) = place("", "\"other_client\"");
            let problem = if other.lines.is_empty() {
                Some((
                    "other_client.lines".to_owned(),
                    "the other client needs at least one line to write (a request whose reply comes after it left)".to_owned(),
                ))
            } else if other.hold_ms == 0 {
                Some((
                    "other_client.hold_ms".to_owned(),
                    "the other client must keep the channel for at least 1 ms; give hold_ms the time the client under test should find the channel taken".to_owned(),
                ))
            } else {
                other
                    .lines
                    .iter()
                    .position(|l| l.contains(['\n', '\r']))
                    .map(|i| {
                        (
                            format!("other_client.lines[{i}]"),
                            "a line holds a line break; each line is written with a newline after it, so give each line as its own string".to_owned(),
                        )
                    })
            };
            if let Some((field, message)) = problem {
                return Err(invalid(origin, line, column, field, message));
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            if step.expect.is_empty() && self.info.is_none() {
                let (line, column) = place("", "\"expect\"");
                return Err(invalid(
                    origin,
                    line,
                    column,
                    format!("steps[{i}].expect"),
                    "a step needs at least one acceptable outcome (or the case needs \"info\")"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// The agent's fault rules, with compact specs parsed.
    pub fn fault_rules(&self) -> Vec<Rule> {
        self.agent
            .faults
            .iter()
            .filter_map(|entry| match entry {
                FaultEntry::Rule(rule) => Some(rule.clone()),
                // Checked at load time; a spec that fails here was built in code, unchecked.
                FaultEntry::Spec(spec) => fault::parse_spec(spec).ok(),
            })
            .collect()
    }

    /// The case's category: the part of the id before the first dot.
    pub fn category(&self) -> &str {
        self.id.split('.').next().unwrap_or(&self.id)
    }
}

/// Best-effort line and column of the first occurrence of `needle`, for errors found after
/// parsing (serde no longer knows the place then).
fn locate(text: &str, needle: &str, _field: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap_or(0);
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

/// Adds a suggestion to serde's "unknown field" and "unknown variant" messages.
fn explain(message: &str) -> String {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let unknown_kind = ["unknown field", "unknown variant"]
        .into_iter()
        .find(|kind| message.starts_with(kind));
    match (unknown_kind, quoted.split_first()) {
        (Some(kind), Some((word, expected))) if !expected.is_empty() => {
            let suggestion = fault::spec::suggest(word, expected);
            let message = message.split(" at line ").next().unwrap_or(message);
            if kind == "unknown field" {
                format!("{message}{suggestion}; remove it or fix its name")
            } else {
                format!("{message}{suggestion}")
            }
        }
        _ => message
            .split(" at line ")
            .next()
            .unwrap_or(message)
            .to_owned(),
    }
}
