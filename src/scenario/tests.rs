use std::path::Path;

use rstest::rstest;

use super::*;
use crate::fault::Action;

const GOOD: &str = r#"{
  "id": "sync.1",
  "title": "Agent silent at connect",
  "requirement": "The first sync must time out within the client's deadline.",
  "grounding": ["protocol.md §9 #1"],
  "tags": ["sync"],
  "agent": {
    "transport": "virtio-serial",
    "state": {"start_delay_ms": 5000, "parser_input": "{\"execute\":\"guest-ping\""},
    "faults": ["guest-ping@2:hang", {"when": {"command": "guest-sync*"}, "do": [{"action": "delay", "ms": 50}]}]
  },
  "steps": [
    {"execute": "guest-ping", "timeout_ms": 300,
     "expect": [{"client-error": {"class": "Timeout", "max_ms": 600}}],
     "non_strict": [{"client-error": {"class": "Any"}}]}
  ],
  "duties": ["sync-first", "total-deadline"]
}"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(text, Path::new("cases/sync-1.json"))
}

#[test]
fn a_good_scenario_loads() {
    let scenario = parse(GOOD).expect("valid scenario");
    assert_eq!(scenario.category(), "sync");
    assert_eq!(scenario.agent.state.start_delay_ms, Some(5000));
    assert!(scenario.agent.state.started);
    let rules = scenario.fault_rules();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].actions, vec![Action::Hang { block: true }]);
    assert_eq!(scenario.duties, vec![Duty::SyncFirst, Duty::TotalDeadline]);
    assert!(scenario.recommended.is_empty());
    assert!(!scenario.single_connection);
}

#[test]
fn recommended_duties_and_single_connection_load() {
    let text = GOOD.replace(
        r#""duties": ["sync-first", "total-deadline"]"#,
        r#""duties": ["sync-first"], "recommended": ["flush-before-sync"], "single_connection": true"#,
    );
    let scenario = parse(&text).expect("valid scenario");
    assert_eq!(scenario.recommended, vec![Duty::FlushBeforeSync]);
    assert!(scenario.single_connection);
}

#[test]
fn duty_names_match_the_file_format() {
    for duty in Duty::ALL {
        assert_eq!(
            serde_json::to_value(duty).expect("serialises"),
            serde_json::json!(duty.name())
        );
    }
}

#[rstest]
#[case::unknown_top_level_field(
    GOOD.replace("\"tags\"", "\"tag\""),
    "cases/sync-1.json:6:",
    "unknown field `tag`"
)]
#[case::suggestion(GOOD.replace("\"duties\"", "\"duty\""), "", "did you mean 'duties'")]
#[case::nested_path(
    GOOD.replace("\"start_delay_ms\"", "\"start_delay\""),
    "at `agent.state.start_delay`",
    "unknown field `start_delay`"
)]
#[case::wrong_type(GOOD.replace("300", "\"300\""), "at `steps[0].timeout_ms`", "expected u64")]
#[case::bad_fault_spec(
    GOOD.replace("guest-ping@2:hang", "guest-ping@2:hnag"),
    "at `agent.faults[0]`",
    "did you mean 'hang'"
)]
#[case::bad_fault_rule(
    GOOD.replace("\"ms\": 50", "\"msec\": 50"),
    "at `agent.faults[1]`",
    "unknown field `msec`"
)]
#[case::bad_id(GOOD.replace("sync.1", "Sync-1"), "at `id`", "not a case id")]
#[case::bad_duty(GOOD.replace("sync-first", "sync-frist"), "at `duties[0]`", "did you mean 'sync-first'")]
#[case::bad_outcome(GOOD.replace("client-error", "client-eror"), "at `steps[0].expect[0]`", "unknown variant")]
#[case::no_outcome(
    GOOD.replace(r#"[{"client-error": {"class": "Timeout", "max_ms": 600}}]"#, "[]"),
    "at `steps[0].expect`",
    "at least one acceptable outcome"
)]
#[case::duty_twice(
    GOOD.replace(r#""duties": ["sync-first", "total-deadline"]"#, r#""duties": ["sync-first", "total-deadline"], "recommended": ["sync-first"]"#),
    "at `recommended[0]`",
    "listed both"
)]
#[case::other_client_without_lines(
    with_other_client(r#"{"lines": [], "hold_ms": 200}"#),
    "cases/sync-1.json:18:3: at `other_client.lines`",
    "at least one line"
)]
#[case::other_client_held_for_no_time(
    with_other_client(r#"{"lines": ["{}"], "hold_ms": 0}"#),
    "cases/sync-1.json:18:3: at `other_client.hold_ms`",
    "at least 1 ms"
)]
#[case::other_client_line_with_a_line_break(
    with_other_client(r#"{"lines": ["{}", "{}\n{}"], "hold_ms": 200}"#),
    "cases/sync-1.json:18:3: at `other_client.lines[1]`",
    "its own string"
)]
#[case::other_client_unknown_field(
    with_other_client(r#"{"lines": ["{}"], "hold": 200}"#),
    "at `other_client.hold`",
    "unknown field `hold`"
)]
#[case::other_client_missing_hold(
    with_other_client(r#"{"lines": ["{}"]}"#),
    "at `other_client`",
    "missing field `hold_ms`"
)]
#[case::truncated(GOOD[..200].to_owned(), "cases/sync-1.json:", "EOF")]
#[case::trailing(format!("{GOOD} {{}}"), "", "one scenario")]
fn bad_scenarios_say_where_and_what(
    #[case] text: String,
    #[case] place: &str,
    #[case] message: &str,
) {
    let error = parse(&text).expect_err("invalid scenario").to_string();
    assert!(error.starts_with("cases/sync-1.json:"), "{error}");
    assert!(error.contains(place), "{error} does not contain {place}");
    assert!(
        error.contains(message),
        "{error} does not contain {message}"
    );
}

/// `GOOD` with an `other_client` member after its duties (on line 18, column 3).
fn with_other_client(other: &str) -> String {
    GOOD.replace(
        r#""duties": ["sync-first", "total-deadline"]"#,
        &format!("\"duties\": [\"sync-first\", \"total-deadline\"],\n  \"other_client\": {other}"),
    )
}

#[test]
fn another_client_held_by_the_harness_loads() {
    let text = with_other_client(
        r#"{"lines": ["{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1}}"], "hold_ms": 150}"#,
    );
    let scenario = parse(&text).expect("valid scenario");
    let other = scenario.other_client.expect("other client");
    assert_eq!(
        other.lines,
        vec![r#"{"execute":"guest-sync","arguments":{"id":1}}"#.to_owned()]
    );
    assert_eq!(other.hold_ms, 150);
}

#[test]
fn a_missing_file_names_its_path() {
    let error = Scenario::load(Path::new("/nonexistent/dir/case.json"))
        .expect_err("missing file")
        .to_string();
    assert!(error.contains("/nonexistent/dir/case.json"), "{error}");
}

#[test]
fn the_schema_describes_the_top_level_fields() {
    let schema = json_schema();
    let properties = schema["properties"].as_object().expect("properties");
    for field in ["id", "title", "requirement", "agent", "steps", "duties"] {
        assert!(
            properties.contains_key(field),
            "{field} missing from the schema"
        );
    }
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
}
