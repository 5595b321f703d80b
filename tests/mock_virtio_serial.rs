//! virtio-serial: what a host client sees through QEMU's chardev socket while the agent
//! inside the guest starts late, hangs, dies and restarts (qemu-guest.md §4-§5).

mod common;

use std::time::Duration;

use common::*;
use qga_harness::{AgentState, MockAgent};
use tokio::time::Instant;

async fn mock_in(dir: &tempfile::TempDir) -> MockAgent {
    MockAgent::builder()
        .start_in(dir.path())
        .await
        .expect("start the mock")
}

#[tokio::test(start_paused = true)]
async fn commands_sent_before_the_agent_starts_are_answered_late_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .start_delay(Duration::from_secs(6))
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let started = Instant::now();

    // The socket accepts and takes bytes at once, long before the agent runs.
    let mut client = Client::connect(mock.socket_path()).await;
    let mut early = sync_delimited(1);
    early.extend(ping("early-ping"));
    client.send(&early).await;
    assert_eq!(mock.life().state(), AgentState::NotStarted);

    assert_eq!(client.line().await, sync_delimited_reply(1));
    assert_eq!(client.line().await, ping_reply("early-ping"));
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert_eq!(mock.life().state(), AgentState::Running);
}

#[tokio::test]
async fn host_writes_wait_in_the_kernel_buffer_until_the_agent_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .start_manually()
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let client = Client::connect(mock.socket_path()).await;

    // Write as much as the socket takes without blocking: nothing reads it yet.
    let requests: Vec<u8> = (0..20_000).flat_map(|i| ping(i.to_string())).collect();
    let mut written = 0;
    loop {
        client.stream().writable().await.expect("writable");
        match client.stream().try_write(&requests[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        (64 * 1024..1024 * 1024).contains(&written),
        "the kernel buffered {written} bytes"
    );
    assert_eq!(mock.life().channel_status().bytes_in, 0);

    // Every whole request is answered, in order, once the agent runs.
    mock.life().start().await.expect("start");
    let whole = requests[..written]
        .windows(2)
        .filter(|w| w == b"\"}")
        .count();
    let mut client = client;
    for i in 0..whole {
        assert_eq!(client.line().await, ping_reply(i.to_string()));
    }
}

#[tokio::test]
async fn agent_death_is_invisible_and_input_sent_while_dead_is_answered_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&sync(1)).await;
    assert_eq!(client.line().await, sync_reply(1));

    assert_eq!(life.kill().await.expect("kill"), AgentState::Dead);
    let mut while_dead = sync_delimited(201);
    while_dead.extend(ping("sent-while-dead"));
    client.send(&while_dead).await;
    life.restart().await.expect("restart");

    // No EOF and no bytes in between: the next bytes are the late answers.
    assert_eq!(client.line().await, sync_delimited_reply(201));
    assert_eq!(client.line().await, ping_reply("sent-while-dead"));
}

#[tokio::test]
async fn a_command_the_hung_agent_already_received_is_never_answered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;
    client.send(&sync(1)).await;
    assert_eq!(client.line().await, sync_reply(1));

    life.hang().await.expect("hang");
    let lost = ping("to-stopped-agent");
    let read_before = life.channel_status().bytes_in;
    client.send(&lost).await;
    // QEMU hands the bytes to the guest even while the agent is stopped.
    life.wait_channel(|s| s.bytes_in >= read_before + lost.len() as u64)
        .await
        .expect("the chardev read the command");
    life.kill().await.expect("kill");
    client.send(&ping("while-dead")).await;
    life.start().await.expect("start");

    assert_eq!(client.line().await, ping_reply("while-dead"));
}

#[tokio::test]
async fn a_hung_agent_answers_late_when_it_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;

    life.hang().await.expect("hang");
    let request = ping("late");
    client.send(&request).await;
    life.wait_channel(|s| s.bytes_in >= request.len() as u64)
        .await
        .expect("the chardev read the command");
    assert_eq!(life.channel_status().bytes_out, 0);
    life.resume().await.expect("resume");

    assert_eq!(client.line().await, ping_reply("late"));
}

#[tokio::test]
async fn a_restart_loses_the_partial_request_a_reconnect_keeps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;

    let head = br#"{"execute":"guest-sync-delimited","argu"#;
    client.send(head).await;
    life.wait_channel(|s| s.bytes_in >= head.len() as u64)
        .await
        .expect("read");
    life.restart().await.expect("restart");
    client.send(br#"ments":{"id":301}}"#).await;
    client.send(b"\xff").await;
    client.send(&sync_delimited(302)).await;

    // The new process parses the tail as fresh input: junk, never the reply to 301,
    // until 0xFF resynchronises it.
    let junk = client.skip_past(&sync_delimited_reply(302), 1 << 20).await;
    assert!(!junk.is_empty(), "the tail gave error lines");
    assert!(
        !junk.windows(16).any(|w| w == b"{\"return\": 301}\n"),
        "301 answered after a restart: {}",
        show(&junk)
    );
}

#[tokio::test]
async fn replies_to_a_client_that_left_go_to_the_next_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();

    life.hang().await.expect("hang");
    let mut first = Client::connect(mock.socket_path()).await;
    let request = ping("reply-while-host-away");
    first.send(&request).await;
    life.wait_channel(|s| s.bytes_in >= request.len() as u64)
        .await
        .expect("read");
    drop(first);
    life.wait_channel(|s| s.serving.is_none())
        .await
        .expect("the chardev dropped the client");
    life.resume().await.expect("resume");

    // The reply is waiting for whoever connects next, before it sends anything.
    let mut second = Client::connect(mock.socket_path()).await;
    assert_eq!(second.line().await, ping_reply("reply-while-host-away"));
}

#[tokio::test]
async fn a_gone_clients_buffered_commands_all_run_and_their_replies_go_stale() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();

    life.hang().await.expect("hang");
    let mut first = Client::connect(mock.socket_path()).await;
    let batch: Vec<u8> = (0..200).flat_map(sync).collect();
    first.send(&batch).await;
    drop(first);
    life.wait_channel(|s| s.accepted == 1 && s.serving.is_none())
        .await
        .expect("the chardev dropped the client");
    life.resume().await.expect("resume");

    let mut second = Client::connect(mock.socket_path()).await;
    for id in 0..200 {
        assert_eq!(second.line().await, sync_reply(id));
    }
    second.send(&sync(1000)).await;
    assert_eq!(second.line().await, sync_reply(1000));
}

#[tokio::test]
async fn a_half_close_is_a_full_disconnect_and_the_reply_goes_to_the_next_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;

    let mut first = Client::connect(mock.socket_path()).await;
    first.send(&ping("socat-1")).await;
    first.shutdown_write().await;
    assert_eq!(first.until_eof().await, b"", "EOF at once, no reply");

    let mut second = Client::connect(mock.socket_path()).await;
    assert_eq!(second.line().await, ping_reply("socat-1"));
}

#[tokio::test]
async fn a_client_that_leaves_while_the_agent_is_down_takes_its_bytes_with_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .start_manually()
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let life = mock.life();

    let mut first = Client::connect(mock.socket_path()).await;
    first.send(&ping("never-read")).await;
    life.wait_channel(|s| s.serving == Some(1))
        .await
        .expect("accepted");
    drop(first);
    // Nothing reads while the agent is down, but the hang-up is noticed.
    life.wait_channel(|s| s.serving.is_none())
        .await
        .expect("the chardev dropped the client");
    life.start().await.expect("start");

    let mut second = Client::connect(mock.socket_path()).await;
    second.send(&ping("fresh")).await;
    assert_eq!(second.line().await, ping_reply("fresh"));
    assert_eq!(life.channel_status().bytes_in, ping("fresh").len() as u64);
}

#[tokio::test]
async fn one_client_is_served_at_a_time_and_the_backlog_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();

    let mut a = Client::connect(mock.socket_path()).await;
    a.send(&sync(1)).await;
    assert_eq!(a.line().await, sync_reply(1));
    // Two more connects succeed at once (the listen backlog) but are not served.
    let mut b = Client::connect(mock.socket_path()).await;
    let mut c = Client::connect(mock.socket_path()).await;
    b.send(&sync(2)).await;
    c.send(&sync(3)).await;
    a.send(&sync(11)).await;
    assert_eq!(a.line().await, sync_reply(11));
    let status = life.channel_status();
    assert_eq!((status.accepted, status.serving), (1, Some(1)));
    assert_eq!(status.bytes_in, (sync(1).len() + sync(11).len()) as u64);

    drop(a);
    assert_eq!(b.line().await, sync_reply(2));
    assert_eq!(life.channel_status().serving, Some(2));
    drop(b);
    assert_eq!(c.line().await, sync_reply(3));
    assert_eq!(life.channel_status().serving, Some(3));
}

#[tokio::test]
async fn partial_input_from_a_gone_client_completes_with_the_next_clients_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();

    let mut first = Client::connect(mock.socket_path()).await;
    let head = br#"{"execute":"guest-sync","arguments":{"id":5}"#;
    first.send(head).await;
    life.wait_channel(|s| s.bytes_in >= head.len() as u64)
        .await
        .expect("read");
    drop(first);

    let mut second = Client::connect(mock.socket_path()).await;
    second.send(b"}").await;
    assert_eq!(second.line().await, sync_reply(5));
}

#[tokio::test]
async fn a_fresh_parser_per_connection_forgets_a_gone_clients_partial_input() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .fresh_parser_per_connection(true)
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let life = mock.life();

    let mut first = Client::connect(mock.socket_path()).await;
    let head = br#"{"execute":"guest-ping""#;
    first.send(head).await;
    life.wait_channel(|s| s.bytes_in >= head.len() as u64)
        .await
        .expect("read");
    drop(first);

    let mut second = Client::connect(mock.socket_path()).await;
    second.send(&sync(6)).await;
    assert_eq!(second.line().await, sync_reply(6));
}

#[tokio::test]
async fn the_socket_outlives_a_dead_agent_and_a_vm_exit_closes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mock = mock_in(&dir).await;
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;
    life.kill().await.expect("kill");
    // Still accepting: a second client queues as usual.
    let _queued = Client::connect(mock.socket_path()).await;

    life.vm_exit().await.expect("vm exit");
    assert_eq!(client.until_eof().await, b"");
    assert_eq!(
        mock.exited().await.expect("exit"),
        qga_harness::VmEnd::VmExit
    );
    assert!(!mock.socket_path().exists(), "QEMU removes the socket file");
    assert_eq!(life.state(), AgentState::VmExited);
}

#[tokio::test(start_paused = true)]
async fn a_kill_during_a_large_reply_leaves_a_cut_off_prefix_and_the_next_reply_follows_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir).await;
    let life = mock.life();
    let mut client = Client::connect(mock.socket_path()).await;

    // A 1 MB file in the guest, opened for reading.
    let data = "eHh4".repeat(1_000_000 / 3);
    client
        .send(br#"{"execute":"guest-file-open","arguments":{"path":"/tmp/big","mode":"w"}}"#)
        .await;
    assert_eq!(client.line().await, b"{\"return\": 1000}\n");
    client
        .send(
            format!(r#"{{"execute":"guest-file-write","arguments":{{"handle":1000,"buf-b64":"{data}"}}}}"#)
                .as_bytes(),
        )
        .await;
    assert_eq!(
        client.line().await,
        b"{\"return\": {\"count\": 999999, \"eof\": false}}\n"
    );
    client
        .send(br#"{"execute":"guest-file-close","arguments":{"handle":1000}}"#)
        .await;
    assert_eq!(client.line().await, b"{\"return\": {}}\n");
    client
        .send(br#"{"execute":"guest-file-open","arguments":{"path":"/tmp/big","mode":"r"}}"#)
        .await;
    assert_eq!(client.line().await, b"{\"return\": 1001}\n");

    // The client does not read while the agent writes the 1.3 MB reply: the agent blocks
    // part-way, and is killed there.
    client
        .send(br#"{"execute":"guest-file-read","arguments":{"handle":1001,"count":999999}}"#)
        .await;
    let written = life
        .wait_channel(|s| s.bytes_out > 0)
        .await
        .expect("status");
    let quiet = tokio::time::timeout(
        Duration::from_secs(3600),
        life.wait_channel(|s| s.bytes_out > written.bytes_out + (4 << 20)),
    )
    .await;
    assert!(quiet.is_err(), "the agent never blocked");
    life.kill().await.expect("kill");
    life.start().await.expect("start");
    client.send(&ping("after-truncated")).await;

    let prefix = client
        .skip_past(&ping_reply("after-truncated"), 4 << 20)
        .await;
    assert!(prefix.starts_with(b"{\"return\": {\"count\": 999999, \"buf-b64\": \"eHh4"));
    assert!(
        !prefix.contains(&b'\n'),
        "cut off: no newline, the next reply follows directly"
    );
    assert!(prefix.len() < 1_333_396, "{} bytes", prefix.len());
}
