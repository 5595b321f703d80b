//! Oracles of the file and spec loaders: on any text, no panic, and every error says
//! where: a scenario error names its file, a line and a column inside the text; a
//! profile error its origin and a line and column, or the path of the bad value; a
//! `--fault` spec error a column inside the spec. Each message says what was wrong.

use std::path::Path;

use crate::fault;
use crate::guest::{Profile, ProfileError};
use crate::scenario::{Scenario, ScenarioError};

/// The name scenario and profile texts are checked under.
const ORIGIN: &str = "fuzz-input.json";

/// True when `line:column` (both from 1) is inside `text` or just past its end. Columns
/// count bytes, as serde_json's positions and the loaders' own searches do: a line of
/// non-ASCII text has more columns than characters.
fn inside(text: &str, line: usize, column: usize) -> bool {
    let lines: Vec<&str> = text.split('\n').collect();
    line >= 1 && line <= lines.len() && column <= lines[line - 1].len() + 1
}

/// The oracle of the `scenario` target.
pub fn check_scenario(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Scenario::parse(&text, Path::new(ORIGIN)) {
        Ok(_) => {}
        Err(ScenarioError::Invalid(located)) => {
            assert_eq!(located.path, Path::new(ORIGIN));
            assert!(
                inside(&text, located.line, located.column.max(1)),
                "scenario error at {}:{} outside the text: {located}",
                located.line,
                located.column
            );
            assert!(!located.message.trim().is_empty(), "empty message");
        }
        // Reading a profile the scenario names, relative to the origin: located by path.
        Err(e @ ScenarioError::Read { .. }) => assert!(e.to_string().contains(ORIGIN)),
    }
}

/// The oracle of the `profile` target.
pub fn check_profile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Profile::from_json(&text, ORIGIN) {
        Ok(_) => {}
        Err(ProfileError::Parse {
            origin,
            line,
            column,
            message,
            ..
        }) => {
            assert_eq!(origin, ORIGIN);
            assert!(
                inside(&text, line, column.max(1)),
                "profile error at {line}:{column} outside the text: {message}"
            );
            assert!(!message.trim().is_empty(), "empty message");
        }
        Err(ProfileError::Invalid {
            origin,
            path,
            message,
        }) => {
            assert_eq!(origin, ORIGIN);
            assert!(
                !path.is_empty(),
                "invalid profile without a path: {message}"
            );
            assert!(!message.trim().is_empty(), "empty message at {path}");
        }
        Err(e @ ProfileError::Read { .. }) => panic!("a profile text read a file: {e}"),
    }
}

/// The oracle of the `fault_spec` target.
pub fn check_fault_spec(data: &[u8]) {
    let spec = String::from_utf8_lossy(data);
    if let Err(e) = fault::parse_spec(&spec) {
        assert!(
            e.at <= spec.len(),
            "error column {} past the spec's end: {e}",
            e.at
        );
        assert!(!e.message.trim().is_empty(), "empty message: {e}");
        // The message is printed with the spec: it must not panic on a column inside a
        // character.
        let _ = e.to_string();
    }
}
