//! unix-listen: qemu-ga's own socket, which lives and dies with the agent process
//! (qga-wire.md §8).

mod common;

use std::io::ErrorKind;

use common::*;
use qga_harness::{AgentState, MockAgent, Transport};

async fn mock_in(dir: &tempfile::TempDir) -> MockAgent {
    MockAgent::builder()
        .transport(Transport::UnixListen)
        .start_in(dir.path())
        .await
        .expect("start the mock")
}

#[tokio::test]
async fn a_half_closing_client_still_gets_its_replies_then_eof() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&sync(14)).await;
    client.shutdown_write().await;
    assert_eq!(client.until_eof().await, sync_reply(14));
}

#[tokio::test]
async fn a_gone_clients_commands_run_and_their_replies_are_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let transcript = dir.path().join("transcript.jsonl");
    let mock = MockAgent::builder()
        .transport(Transport::UnixListen)
        .transcript(&transcript)
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let life = mock.life();

    // Queued while the agent is frozen, then gone before it is even accepted.
    life.hang().await.expect("hang");
    let mut first = Client::connect(mock.socket_path()).await;
    let batch: Vec<u8> = (0..200).flat_map(sync).collect();
    first.send(&batch).await;
    drop(first);
    life.resume().await.expect("resume");

    // The next client sees nothing of it.
    let mut second = Client::connect(mock.socket_path()).await;
    second.send(&sync(13)).await;
    assert_eq!(second.line().await, sync_reply(13));
    assert_eq!(life.channel_status().accepted, 2);

    // Every one ran: each reply met a broken pipe, and the agent went on.
    drop(second);
    mock.shutdown().await.expect("shutdown");
    let lines = std::fs::read_to_string(&transcript).expect("transcript");
    let failed = lines
        .lines()
        .filter(|l| l.contains(r#""conn":1,"event":"write-failed""#))
        .count();
    assert_eq!(failed, 200, "{lines}");
}

#[tokio::test]
async fn the_socket_dies_with_the_agent_and_comes_back_with_the_next_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&sync(1)).await;
    assert_eq!(client.line().await, sync_reply(1));

    life.kill().await.expect("kill");
    assert_eq!(client.until_eof().await, b"", "the process's socket closed");
    // The file stays (qemu-ga does not unlink it) but nobody listens.
    assert!(mock.socket_path().exists());
    let refused = tokio::net::UnixStream::connect(mock.socket_path())
        .await
        .expect_err("nobody listens");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    life.start().await.expect("start");
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&sync(2)).await;
    assert_eq!(client.line().await, sync_reply(2));
}

#[tokio::test]
async fn before_the_agent_starts_there_is_no_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .transport(Transport::UnixListen)
        .start_manually()
        .start_in(dir.path())
        .await
        .expect("start the mock");
    assert!(!mock.socket_path().exists());
    assert_eq!(mock.life().state(), AgentState::NotStarted);

    mock.life().start().await.expect("start");
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&ping("first")).await;
    assert_eq!(client.line().await, ping_reply("first"));
}

#[tokio::test]
async fn a_partial_request_dies_with_the_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;
    let head = br#"{"execute":"guest-sync","arguments":{"id":5}"#;
    client.send(head).await;
    life.wait_channel(|s| s.bytes_in >= head.len() as u64)
        .await
        .expect("read");

    life.restart().await.expect("restart");
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&sync(6)).await;
    assert_eq!(client.line().await, sync_reply(6));
}
