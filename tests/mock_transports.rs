//! What both transports share: one client at a time with the rest in the backlog, one
//! parser per agent process rather than per connection, and backpressure on a client that
//! never reads.

mod common;

use std::time::Duration;

use common::*;
use qga_harness::{MockAgent, Transport};
use rstest::rstest;

async fn mock_in(dir: &tempfile::TempDir, transport: Transport) -> MockAgent {
    MockAgent::builder()
        .transport(transport)
        .start_in(dir.path())
        .await
        .expect("start the mock")
}

#[rstest]
#[case::virtio_serial(Transport::VirtioSerial)]
#[case::unix_listen(Transport::UnixListen)]
#[tokio::test]
async fn clients_are_served_one_at_a_time_in_connect_order(#[case] transport: Transport) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir, transport).await;
    let life = mock.life();

    let mut a = Client::connect(mock.socket_path()).await;
    a.send(&sync(1)).await;
    assert_eq!(a.line().await, sync_reply(1));
    let mut b = Client::connect(mock.socket_path()).await;
    let mut c = Client::connect(mock.socket_path()).await;
    b.send(&sync(2)).await;
    c.send(&sync(3)).await;
    a.send(&sync(11)).await;
    assert_eq!(a.line().await, sync_reply(11));
    assert_eq!(life.channel_status().serving, Some(1));

    drop(a);
    assert_eq!(b.line().await, sync_reply(2));
    drop(b);
    assert_eq!(c.line().await, sync_reply(3));
    assert_eq!(life.channel_status().serving, Some(3));
}

#[rstest]
#[case::virtio_serial(Transport::VirtioSerial)]
#[case::unix_listen(Transport::UnixListen)]
#[tokio::test]
async fn a_gone_clients_partial_request_is_completed_by_the_next_client(
    #[case] transport: Transport,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir, transport).await;
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

#[rstest]
#[case::virtio_serial(Transport::VirtioSerial)]
#[case::unix_listen(Transport::UnixListen)]
#[tokio::test]
async fn the_per_connection_parser_switch_drops_a_gone_clients_partial_request(
    #[case] transport: Transport,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .transport(transport)
        .fresh_parser_per_connection(true)
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let life = mock.life();

    let mut first = Client::connect(mock.socket_path()).await;
    let head = br#"{"execute":"guest-sync","arguments":{"id":5}"#;
    first.send(head).await;
    life.wait_channel(|s| s.bytes_in >= head.len() as u64)
        .await
        .expect("read");
    drop(first);

    let mut second = Client::connect(mock.socket_path()).await;
    second.send(&sync(6)).await;
    assert_eq!(second.line().await, sync_reply(6));
}

/// Waits until nothing in the runtime can make progress: with the clock paused, a long
/// timeout fires exactly when the runtime goes idle, which here means the mock stopped
/// taking bytes.
async fn write_until_held_back(client: &Client, pattern: &[u8]) -> usize {
    let chunk = pattern.repeat(1024);
    let mut sent = 0usize;
    loop {
        let ready =
            tokio::time::timeout(Duration::from_secs(3600), client.stream().writable()).await;
        if ready.is_err() {
            return sent;
        }
        let at = sent % pattern.len();
        match client.stream().try_write(&chunk[at..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
        assert!(
            sent < 64 << 20,
            "64 MiB taken from a client that never reads"
        );
    }
}

#[rstest]
#[case::virtio_serial(Transport::VirtioSerial)]
#[case::unix_listen(Transport::UnixListen)]
#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_is_held_back_and_then_gets_everything_in_order(
    #[case] transport: Transport,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = mock_in(&dir, transport).await;
    let client = Client::connect(mock.socket_path()).await;
    let request = ping("p");

    let sent = write_until_held_back(&client, &request).await;
    // The bound: the kernel's two socket buffers, the guest's 512 KiB of input and 128 KiB
    // of output, and one 4 KiB read.
    assert!(
        sent < 4 << 20,
        "{sent} bytes taken before the mock stopped reading"
    );
    assert!(sent > 128 << 10, "only {sent} bytes taken");
    let status = mock.life().channel_status();
    assert!(status.bytes_out < 1 << 20, "{status:?}");

    let mut client = client;
    for _ in 0..sent / request.len() {
        assert_eq!(client.line().await, ping_reply("p"));
    }
    // Still alive and answering: the cut-off request is completed by its tail.
    client.send(&request[sent % request.len()..]).await;
    assert_eq!(client.line().await, ping_reply("p"));
}
