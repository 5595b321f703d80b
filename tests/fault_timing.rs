//! Timing faults as a client sees them: delay, hang, drip, slice, coalesce.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_delay_holds_up_the_reply_and_every_later_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping@1:delay=200ms"]).await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();

    let mut both = ping(1);
    both.extend(ping(2));
    client.send(&both).await;

    client.expect(&ping_reply(1)).await;
    assert_eq!(since(start), Duration::from_millis(200));
    client.expect(&ping_reply(2)).await;
    assert_eq!(
        since(start),
        Duration::from_millis(200),
        "the agent is single-threaded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_jittered_delay_stays_within_its_range() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping:delay=100ms..300ms"]).await;
    let mut client = Client::connect(mock.socket_path()).await;
    for id in 0..20 {
        let start = Instant::now();
        client.send(&ping(id)).await;
        client.expect(&ping_reply(id)).await;
        let took = since(start);
        assert!(
            (Duration::from_millis(100)..=Duration::from_millis(301)).contains(&took),
            "{took:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_blocking_hang_answers_nothing_more_until_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-fsfreeze-freeze:hang"]).await;
    let mut client = Client::connect(mock.socket_path()).await;

    client.send(&execute("guest-fsfreeze-freeze", 1)).await;
    client.expect_quiet().await;
    // Later requests queue behind the hung command, and the connection stays up.
    client.send(&ping(2)).await;
    client.expect_quiet().await;
    assert_eq!(mock.life().state(), qga_harness::AgentState::Running);

    // They were inside the guest, so they die with the agent; the next process answers
    // what comes after, on the same connection.
    mock.life().restart().await.expect("restart");
    client.send(&ping(3)).await;
    client.expect(&ping_reply(3)).await;
    // The hung command had no effect on the guest.
    client.send(&execute("guest-fsfreeze-status", 4)).await;
    client
        .expect(b"{\"return\": \"thawed\", \"id\": 4}\n")
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_nonblocking_hang_drops_only_its_own_reply() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-fsfreeze-freeze:hang=nonblocking"]).await;
    let mut client = Client::connect(mock.socket_path()).await;

    let mut both = execute("guest-fsfreeze-freeze", 1);
    both.extend(ping(2));
    client.send(&both).await;
    client.expect(&ping_reply(2)).await;
    client.expect_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_drip_writes_n_bytes_per_interval() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_with(&dir, &["guest-ping:drip=4/10ms"]).await;
    let mut client = Client::connect(mock.socket_path()).await;
    let start = Instant::now();

    client.send(&ping(1)).await;
    let expected = ping_reply(1);
    let mut got = Vec::new();
    let mut arrivals = Vec::new();
    while got.len() < expected.len() {
        match client.read_within(PATIENCE).await {
            Got::Bytes(b) => {
                arrivals.push((since(start), b.len()));
                got.extend(b);
            }
            other => panic!("{other:?} after {}", show(&got)),
        }
    }
    assert_eq!(show(&got), show(&expected));
    // 24 bytes: six writes of 4, 10 ms apart.
    let expected_arrivals: Vec<_> = (0..6).map(|i| (Duration::from_millis(10 * i), 4)).collect();
    assert_eq!(arrivals, expected_arrivals);
}

#[tokio::test(start_paused = true)]
async fn a_slice_writes_the_reply_in_the_given_sizes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let transcript = dir.path().join("transcript.jsonl");
    let mock = mock_with(&dir, &["guest-ping:slice=1+2+5"]).await;
    let mut client = Client::connect(mock.socket_path()).await;

    client.send(&ping(1)).await;
    client.expect(&ping_reply(1)).await;
    drop(client);
    mock.shutdown().await.expect("shutdown");

    let sizes: Vec<usize> = writes_out(&records(&transcript))
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(sizes, [1, 2, 5, 5, 5, 5, 1]);
}

#[tokio::test(start_paused = true)]
async fn coalesced_replies_arrive_in_one_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let transcript = dir.path().join("transcript.jsonl");
    let mock = mock_with(&dir, &["*:coalesce=2"]).await;
    let mut client = Client::connect(mock.socket_path()).await;

    // Two requests read together: their replies go out in one write.
    let mut both = ping(1);
    both.extend(ping(2));
    client.send(&both).await;
    let mut expected = ping_reply(1);
    expected.extend(ping_reply(2));
    client.expect(&expected).await;
    // A client that waits for each reply still gets it: an idle agent flushes.
    client.send(&ping(3)).await;
    client.expect(&ping_reply(3)).await;
    drop(client);
    mock.shutdown().await.expect("shutdown");

    let writes = writes_out(&records(&transcript));
    assert_eq!(writes, vec![expected, ping_reply(3)]);
}
