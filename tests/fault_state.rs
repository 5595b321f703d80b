//! The agent state a scenario sets up: a half request in the parser, stale replies in the
//! channel, the frozen marker, a late or manual start.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use qga_harness::channel::Replay;
use qga_harness::scenario::Scenario;
use qga_harness::{AgentState, MockAgent, StartState};
use tokio::time::Instant;

async fn mock_from(dir: &tempfile::TempDir, agent: &str) -> MockAgent {
    let text =
        format!(r#"{{"id": "state.1", "title": "t", "requirement": "r", "agent": {agent}}}"#);
    let scenario = Scenario::parse(&text, Path::new("state.json")).expect("scenario");
    MockAgent::builder()
        .scenario_agent(&scenario.agent, dir.path())
        .expect("agent side")
        .start_in(dir.path())
        .await
        .expect("start")
}

#[tokio::test(start_paused = true)]
async fn a_half_request_in_the_parser_swallows_the_first_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_from(
        &dir,
        r#"{"state": {"parser_input": "{\"execute\":\"guest-sync\",\"arguments\":{\"id\":5}"}}"#,
    )
    .await;
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(b"}").await;
    client.expect(b"{\"return\": 5}\n").await;
}

#[tokio::test(start_paused = true)]
async fn stale_output_reaches_the_first_client_before_anything_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_from(
        &dir,
        r#"{"state": {"pending_output": {"base64": "/3sicmV0dXJuIjogMX0K"}}}"#,
    )
    .await;
    let mut client = Client::connect(mock.socket_path()).await;
    client.expect(b"\xff{\"return\": 1}\n").await;
    client.send(&ping(2)).await;
    client.expect(&ping_reply(2)).await;
}

#[tokio::test(start_paused = true)]
async fn stale_output_on_unix_listen_goes_to_the_first_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_from(
        &dir,
        r#"{"transport": "unix-listen", "state": {"pending_output": "{\"return\": {}, \"id\": \"old\"}\n"}}"#,
    )
    .await;
    let mut client = Client::connect(mock.socket_path()).await;
    client.expect(b"{\"return\": {}, \"id\": \"old\"}\n").await;
}

#[tokio::test(start_paused = true)]
async fn a_frozen_guest_starts_an_agent_in_the_frozen_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_from(&dir, r#"{"state": {"frozen": true}}"#).await;
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&execute("guest-fsfreeze-status", 1)).await;
    client
        .expect(b"{\"return\": \"frozen\", \"id\": 1}\n")
        .await;
    client.send(&execute("guest-get-osinfo", 2)).await;
    let reply = client.until_quiet().await;
    let text = String::from_utf8(reply).expect("ascii");
    assert!(
        text.contains("has been disabled") && text.contains("frozen"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_start_and_a_manual_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_from(&dir, r#"{"state": {"start_delay_ms": 300}}"#).await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();
    client.send(&ping(1)).await;
    client.expect(&ping_reply(1)).await;
    assert_eq!(since(start), Duration::from_millis(300));

    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_from(&dir, r#"{"state": {"started": false}}"#).await;
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&ping(1)).await;
    client.expect_quiet().await;
    assert_eq!(mock.life().state(), AgentState::NotStarted);
    mock.life().start().await.expect("start");
    client.expect(&ping_reply(1)).await;
}

#[tokio::test(start_paused = true)]
async fn version_lists_and_seed_come_from_the_scenario() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_from(
        &dir,
        r#"{"version": "3.1.0", "block_rpcs": ["guest-get-osinfo"], "seed": 11}"#,
    )
    .await;
    assert_eq!(mock.faults().seed(), 11);
    let mut client = Client::connect(mock.socket_path()).await;
    // qemu-ga before 4.0 echoes no id.
    client.send(&ping(1)).await;
    client.expect(b"{\"return\": {}}\n").await;
    client.send(&execute("guest-get-osinfo", 2)).await;
    let text = String::from_utf8(client.until_quiet().await).expect("ascii");
    assert!(text.contains("has been disabled"), "{text}");
}

#[test]
fn bad_state_bytes_are_refused_where_the_file_gives_them() {
    let text = r#"{"id": "state.1", "title": "t", "requirement": "r",
                   "agent": {"state": {"parser_input": {"base64": "!!"}}}}"#;
    let e = Scenario::parse(text, Path::new("s.json")).expect_err("bad base64");
    let message = e.to_string();
    assert!(
        message.contains("s.json:2:")
            && message.contains("agent.state.parser_input")
            && message.contains("base64 does not decode"),
        "{message}"
    );
}

/// The state a scenario sets is the state the mock's builder holds and the channel
/// starts in: the transcript records that one value, and reading it back gives it again.
#[tokio::test]
async fn a_scenario_state_reaches_the_channel_and_its_record_unchanged() {
    let text = r#"{"id": "state.1", "title": "t", "requirement": "r",
                   "agent": {"state": {"start_delay_ms": 60000, "frozen": true,
                             "parser_input": "{\"execute\":",
                             "pending_output": {"base64": "/3sicmV0dXJuIjogMX0K"}}}}"#;
    let scenario = Scenario::parse(text, Path::new("state.json")).expect("scenario");
    let by_hand = StartState {
        start_delay_ms: Some(60_000),
        started: true,
        frozen: true,
        parser_input: Some(b"{\"execute\":".to_vec()),
        pending_output: Some(b"\xff{\"return\": 1}\n".to_vec()),
    };
    assert_eq!(scenario.agent.state, by_hand);

    // The builder's setters and the scenario give the mock the same state.
    let dir = tempfile::tempdir().expect("temp dir");
    let from_scenario = dir.path().join("scenario.jsonl");
    let from_setters = dir.path().join("setters.jsonl");
    let mock = MockAgent::builder()
        .scenario_agent(&scenario.agent, dir.path())
        .expect("agent side")
        .transcript(&from_scenario)
        .start_in(dir.path())
        .await
        .expect("start");
    assert_eq!(mock.life().state(), AgentState::NotStarted);
    mock.shutdown().await.expect("shutdown");
    let mock = MockAgent::builder()
        .start_delay(Duration::from_secs(60))
        .frozen(true)
        .parser_input(b"{\"execute\":".to_vec())
        .pending_output(b"\xff{\"return\": 1}\n".to_vec())
        .transcript(&from_setters)
        .start_in(dir.path())
        .await
        .expect("start");
    mock.shutdown().await.expect("shutdown");

    for transcript in [&from_scenario, &from_setters] {
        let replay = Replay::from_transcript(transcript).expect("replay");
        assert_eq!(replay.agent.state, by_hand, "{}", transcript.display());
    }
}

#[tokio::test(start_paused = true)]
async fn a_profile_file_relative_to_the_scenario_and_an_inline_profile() {
    let mut profile = serde_json::to_value(qga_harness::guest::Profile::default_linux())
        .expect("profile as JSON");
    profile["host-name"] = "from-file".into();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("profiles")).expect("mkdir");
    std::fs::write(dir.path().join("profiles/guest.json"), profile.to_string())
        .expect("write the profile");
    let text = r#"{"id": "state.1", "title": "t", "requirement": "r",
                   "agent": {"profile": "profiles/guest.json"}}"#;
    let scenario = Scenario::parse(text, &dir.path().join("case.json")).expect("scenario");
    let mock = MockAgent::builder()
        .scenario_agent(&scenario.agent, dir.path())
        .expect("agent side")
        .start_in(dir.path())
        .await
        .expect("start");
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&execute("guest-get-host-name", 1)).await;
    client
        .expect(b"{\"return\": {\"host-name\": \"from-file\"}, \"id\": 1}\n")
        .await;

    profile["host-name"] = "inline".into();
    let text = format!(
        r#"{{"id": "state.1", "title": "t", "requirement": "r", "agent": {{"profile": {profile}}}}}"#
    );
    let scenario = Scenario::parse(&text, Path::new("case.json")).expect("scenario");
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .scenario_agent(&scenario.agent, dir.path())
        .expect("agent side")
        .start_in(dir.path())
        .await
        .expect("start");
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&execute("guest-get-host-name", 1)).await;
    client
        .expect(b"{\"return\": {\"host-name\": \"inline\"}, \"id\": 1}\n")
        .await;

    let missing = r#"{"id": "state.1", "title": "t", "requirement": "r",
                      "agent": {"profile": "profiles/none.json"}}"#;
    let scenario = Scenario::parse(missing, Path::new("case.json")).expect("scenario");
    let e = MockAgent::builder()
        .scenario_agent(&scenario.agent, dir.path())
        .expect_err("no such profile");
    assert!(e.to_string().contains("none.json"), "{e}");
}
