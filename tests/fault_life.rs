//! Life faults as a client sees them: deaths before reading, after reading and mid-reply,
//! restarts, VM exit, a closed connection, a stopped reader; and faults on connect and
//! start. On virtio-serial an agent's death is invisible: no EOF, later commands answered
//! late, a cut-off reply followed directly by the next one.

mod common;

use std::time::Duration;

use common::*;
use qga_harness::{AgentState, MockAgent, Transport, VmEnd};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_request_the_agent_died_before_reading_is_answered_by_the_next_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let transcript = dir.path().join("transcript.jsonl");
    let mock = mock_with(&dir, &["guest-ping@2:die-before-read,restart=50ms"]).await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();

    // Three requests read together: the agent dies before the second; it and the third
    // stay in the channel for the next agent.
    let mut three = ping(1);
    three.extend(ping(2));
    three.extend(ping(3));
    client.send(&three).await;
    client.expect(&ping_reply(1)).await;
    assert_eq!(since(start), Duration::ZERO);
    client.expect(&ping_reply(2)).await;
    client.expect(&ping_reply(3)).await;
    assert_eq!(since(start), Duration::from_millis(50));
    client.expect_quiet().await;
    drop(client);
    mock.shutdown().await.expect("shutdown");

    let events: Vec<String> = records(&transcript)
        .iter()
        .filter_map(|r| r.get("event").and_then(|e| e.as_str()).map(str::to_owned))
        // The agent's account of requests and outputs interleaves with life events as the
        // channel delivers them: only the life events' order is checked here.
        .filter(|e| e != "request" && e != "output")
        .collect();
    let died = events
        .iter()
        .position(|e| e == "agent-killed")
        .expect("killed");
    // The agent records that the request it died on was never read (its bytes are read
    // again, under a new number, by the next agent).
    assert_eq!(events[died - 1], "request-unread");
    assert_eq!(events[died - 2], "fault");
    assert_eq!(events[died + 1], "agent-restarting");
    assert_eq!(events[died + 2], "agent-started");
}

#[tokio::test(start_paused = true)]
async fn a_request_read_by_a_dying_agent_is_never_answered_and_later_ones_are_answered_late() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-get-osinfo#1:die-after-read,restart=200ms"]).await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();

    client.send(&execute("guest-get-osinfo", 1)).await;
    // No EOF, no bytes: death is invisible on virtio-serial.
    assert_eq!(
        client.read_within(Duration::from_millis(100)).await,
        Got::Quiet
    );
    assert_eq!(mock.life().state(), AgentState::Restarting);
    client.send(&ping(2)).await;
    client.expect(&ping_reply(2)).await;
    assert_eq!(since(start), Duration::from_millis(200));
    client.expect_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_reply_cut_mid_way_is_followed_directly_by_the_next_reply() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping@1:die-mid-reply=10,restart=500ms"]).await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();

    client.send(&ping(1)).await;
    client.expect(b"{\"return\":").await;
    client.send(&ping(2)).await;
    // The prefix has no newline; the next reply continues the stream after the restart.
    client.expect(&ping_reply(2)).await;
    assert_eq!(since(start), Duration::from_millis(500));
    client.expect_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn die_without_restart_leaves_the_agent_dead_until_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping#1:die-after-read"]).await;
    let mut client = Client::connect(mock.socket_path()).await;

    client.send(&ping(1)).await;
    mock.life().wait_for(AgentState::Dead).await.expect("dead");
    client.send(&ping(2)).await;
    client.expect_quiet().await;
    mock.life().start().await.expect("start");
    client.expect(&ping_reply(2)).await;
}

#[tokio::test(start_paused = true)]
async fn restart_alone_answers_then_restarts_losing_the_handles() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping#1:restart=100ms"]).await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();

    client
        .send(br#"{"execute":"guest-file-open","arguments":{"path":"/tmp/h","mode":"w+"},"id":1}"#)
        .await;
    client.expect(b"{\"return\": 1000, \"id\": 1}\n").await;
    client.send(&ping(2)).await;
    client.expect(&ping_reply(2)).await;
    client
        .send(br#"{"execute":"guest-file-read","arguments":{"handle":1000},"id":3}"#)
        .await;
    client
        .expect(b"{\"id\": 3, \"error\": {\"class\": \"GenericError\", \"desc\": \"handle '1000' has not been found\"}}\n")
        .await;
    assert_eq!(since(start), Duration::from_millis(100));
    // The handle counter persists across the restart.
    client
        .send(br#"{"execute":"guest-file-open","arguments":{"path":"/tmp/h","mode":"r"},"id":4}"#)
        .await;
    client.expect(b"{\"return\": 1001, \"id\": 4}\n").await;
}

#[tokio::test(start_paused = true)]
async fn vm_exit_closes_the_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mock = mock_with(&dir, &["guest-ping#1:vm-exit"]).await;
    let mut client = Client::connect(mock.socket_path()).await;

    client.send(&ping(1)).await;
    client.expect_eof().await;
    assert_eq!(mock.exited().await.expect("exited"), VmEnd::VmExit);
    assert!(!mock.socket_path().exists());
}

#[tokio::test(start_paused = true)]
async fn close_client_on_virtio_serial_sends_the_reply_to_the_next_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping#1:close-client"]).await;
    let mut first = Client::connect(mock.socket_path()).await;

    first.send(&ping(1)).await;
    first.expect_eof().await;
    // The agent lives on: its reply waits in the channel and is stale for the next client.
    let mut second = Client::connect(mock.socket_path()).await;
    second.expect(&ping_reply(1)).await;
    second.send(&ping(2)).await;
    second.expect(&ping_reply(2)).await;
}

#[tokio::test(start_paused = true)]
async fn close_client_on_unix_listen_loses_the_reply() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = builder_with(&["guest-ping#1:close-client"])
        .transport(Transport::UnixListen)
        .start_in(dir.path())
        .await
        .expect("start");
    let mut first = Client::connect(mock.socket_path()).await;

    first.send(&ping(1)).await;
    first.expect_eof().await;
    let mut second = Client::connect(mock.socket_path()).await;
    second.send(&ping(2)).await;
    second.expect(&ping_reply(2)).await;
}

#[tokio::test(start_paused = true)]
async fn an_agent_death_on_unix_listen_is_an_eof() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = builder_with(&["guest-ping#1:die-after-read,restart=100ms"])
        .transport(Transport::UnixListen)
        .start_in(dir.path())
        .await
        .expect("start");
    let mut first = Client::connect(mock.socket_path()).await;

    first.send(&ping(1)).await;
    first.expect_eof().await;
    mock.life()
        .wait_for(AgentState::Running)
        .await
        .expect("restarted");
    let mut second = Client::connect(mock.socket_path()).await;
    second.send(&ping(2)).await;
    second.expect(&ping_reply(2)).await;
}

#[tokio::test(start_paused = true)]
async fn stop_reading_holds_later_requests_for_its_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping#1:stop-reading=1s"]).await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();

    client.send(&ping(1)).await;
    client.expect(&ping_reply(1)).await;
    client.send(&ping(2)).await;
    client.expect(&ping_reply(2)).await;
    assert_eq!(since(start), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_stops_reading_for_good_applies_backpressure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping#1:stop-reading"]).await;
    let mut client = Client::connect(mock.socket_path()).await;

    client.send(&ping(1)).await;
    client.expect(&ping_reply(1)).await;
    // Write until the socket takes no more: the agent reads nothing, the guest's buffer
    // and the kernel's fill up, and the writer is held back.
    let flood: Vec<u8> = (2..100_000).flat_map(ping).collect();
    let mut written = 0;
    loop {
        let ready = tokio::time::timeout(QUIET, client.stream().writable()).await;
        if ready.is_err() {
            break;
        }
        match client.stream().try_write(&flood[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
        assert!(written < flood.len(), "the mock took everything");
    }
    let status = mock.life().channel_status();
    assert!(status.bytes_in < 2 << 20, "{status:?}");
    client.expect_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_connect_rule_writes_an_unsolicited_reply_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["connect:spurious=other-command"]).await;
    let mut client = Client::connect(mock.socket_path()).await;

    client.expect(b"{\"return\": {}}\n").await;
    client.send(&ping(1)).await;
    client.expect(&ping_reply(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_connect_rule_can_close_the_connection_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["connect#1:close-client"]).await;
    let mut first = Client::connect(mock.socket_path()).await;
    first.expect_eof().await;
    let mut second = Client::connect(mock.socket_path()).await;
    second.send(&ping(1)).await;
    second.expect(&ping_reply(1)).await;
}

#[tokio::test(start_paused = true)]
async fn start_rules_act_when_an_agent_process_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(
        &dir,
        &[
            "start@1:die-after-read,restart=100ms",
            "start@2:raw='hello\\n'",
        ],
    )
    .await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();

    // The first process dies as it starts; the second writes a line, then answers.
    client.send(&ping(1)).await;
    client.expect(b"hello\n").await;
    client.expect(&ping_reply(1)).await;
    assert_eq!(since(start), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn rules_added_at_run_time_apply_from_the_next_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .start_in(dir.path())
        .await
        .expect("start");
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&ping(1)).await;
    client.expect(&ping_reply(1)).await;

    let id = mock
        .faults()
        .add(qga_harness::fault::parse_spec("guest-ping:no-reply").expect("spec"))
        .expect("add");
    client.send(&ping(2)).await;
    client.expect_quiet().await;
    assert!(mock.faults().remove(id));
    client.send(&ping(3)).await;
    client.expect(&ping_reply(3)).await;
}
