//! The mock as a library, used as a Rust project's own tests would use it: a client under
//! test that speaks to the agent on a plain `UnixStream`, faults added and removed while
//! the mock runs, what the mock received, and expectations checked on drop.

use std::time::Duration;

use qga_harness::{Expectation, MockAgent, Received, Rule, Transport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A small client under test: syncs with guest-sync-delimited when `sync` is set, then
/// runs one command and returns its reply line (None when none came in time).
async fn client_under_test(
    socket: &std::path::Path,
    sync: bool,
    command: &str,
) -> std::io::Result<Option<String>> {
    let mut stream = BufReader::new(UnixStream::connect(socket).await?);
    if sync {
        stream
            .get_mut()
            .write_all(br#"{"execute":"guest-sync-delimited","arguments":{"id":77}}"#)
            .await?;
        let mut line = Vec::new();
        stream.read_until(b'\n', &mut line).await?;
        assert_eq!(line, b"\xff{\"return\": 77}\n");
    }
    let request = format!(r#"{{"execute":"{command}"}}"#);
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    match tokio::time::timeout(Duration::from_millis(300), stream.read_line(&mut reply)).await {
        Ok(read) => {
            read?;
            Ok(Some(reply))
        }
        Err(_) => Ok(None),
    }
}

#[tokio::test]
async fn start_binds_a_fresh_socket_in_a_temp_dir_it_removes() {
    let mock = MockAgent::start().await.expect("mock");
    let socket = mock.socket_path().to_owned();
    let dir = socket.parent().expect("dir").to_owned();
    assert!(socket.exists());
    let other = MockAgent::start().await.expect("second mock");
    assert_ne!(other.socket_path(), socket, "each mock has its own socket");

    drop(mock);

    assert!(!dir.exists(), "the temp dir goes with the mock");
}

#[tokio::test]
async fn received_pairs_each_request_with_the_reply_the_agent_wrote() {
    let mock = MockAgent::builder()
        .transport(Transport::UnixListen)
        .start()
        .await
        .expect("mock");

    let reply = client_under_test(mock.socket_path(), true, "guest-ping")
        .await
        .expect("client");

    assert_eq!(reply.as_deref(), Some("{\"return\": {}}\n"));
    let received = mock.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(received[0].command(), Some("guest-sync-delimited"));
    assert_eq!(
        received[0].arguments(),
        Some(&serde_json::json!({"id": 77}))
    );
    let sync_answer = received[0].answer.as_ref().expect("an answer");
    assert!(
        sync_answer.ff_prefix,
        "the delimited reply starts with 0xFF"
    );
    assert_eq!(sync_answer.value, Some(serde_json::json!({"return": 77})));
    assert_eq!(received[1].command(), Some("guest-ping"));
    assert_eq!(
        received[1].reply_json(),
        Some(&serde_json::json!({"return": {}}))
    );
    assert!(received.iter().all(|r| !r.faulted()));
}

#[tokio::test]
async fn a_fault_added_while_running_holds_until_its_guard_is_dropped() {
    let mock = MockAgent::start().await.expect("mock");
    let guard = mock
        .fault_scoped(Rule::on("guest-info").hang())
        .expect("a valid rule");

    let hung = client_under_test(mock.socket_path(), true, "guest-info")
        .await
        .expect("client");
    assert_eq!(hung, None, "the agent hangs in guest-info");
    let received = mock.received();
    let info = received.last().expect("a record");
    assert_eq!(info.command(), Some("guest-info"));
    assert!(info.answer.is_none(), "{info}");
    assert!(info.faulted());

    // The hung agent answers nothing more on this mock; a fresh one with the rule removed
    // answers again.
    drop(guard);
    assert!(
        mock.faults().list().is_empty(),
        "the guard removed its rule"
    );
    let fresh = MockAgent::start().await.expect("mock");
    let answered = client_under_test(fresh.socket_path(), true, "guest-info")
        .await
        .expect("client");
    assert!(answered.is_some_and(|r| r.starts_with("{\"return\": {")));
}

#[tokio::test]
async fn a_spec_rule_fires_on_the_nth_request_only() {
    let mock = MockAgent::builder()
        .fault("guest-ping@2:hang".parse::<Rule>().expect("spec"))
        .start()
        .await
        .expect("mock");

    let first = client_under_test(mock.socket_path(), false, "guest-ping").await;
    let second = client_under_test(mock.socket_path(), false, "guest-ping").await;

    assert_eq!(
        first.expect("client").as_deref(),
        Some("{\"return\": {}}\n")
    );
    assert_eq!(second.expect("client"), None);
    let received = mock.received();
    assert_eq!(
        received.iter().map(Received::faulted).collect::<Vec<_>>(),
        [false, true]
    );
}

#[tokio::test]
async fn expectations_met_by_a_correct_client_pass_on_drop() {
    let mock = MockAgent::start().await.expect("mock");
    mock.expect(Expectation::sync_delimited_before_first_command());
    mock.expect(Expectation::received("guest-ping", 1..=1));
    mock.expect(Expectation::never("guest-shutdown"));

    client_under_test(mock.socket_path(), true, "guest-ping")
        .await
        .expect("client");

    let verification = mock.verify();
    assert!(verification.is_met(), "{verification}");
    // Dropping the mock checks them again, and passes.
}

#[tokio::test]
async fn a_client_that_skips_the_sync_fails_the_expectation_with_a_report() {
    let mock = MockAgent::start().await.expect("mock");
    mock.expect(Expectation::sync_delimited_before_first_command());
    mock.expect(Expectation::received("guest-ping", 1..));

    // A broken client: no guest-sync-delimited before its command.
    client_under_test(mock.socket_path(), false, "guest-ping")
        .await
        .expect("client");

    let verification = mock.verify();
    assert!(!verification.is_met());
    let report = verification.to_string();
    assert!(
        report.starts_with("mock qemu-ga: 1 of 2 expectations not met\n"),
        "{report}"
    );
    assert!(
        report.contains(
            "NOT MET: guest-sync-delimited before the first command: no guest-sync-delimited was received; the first request was request 1 guest-ping"
        ),
        "{report}"
    );
    assert!(
        report.contains("met:     guest-ping received at least 1 times"),
        "{report}"
    );
    assert!(
        report.contains("request 1 {\"execute\":\"guest-ping\"} on conn 1 -> {\"return\": {}}"),
        "{report}"
    );
    // Verified here on purpose; the drop must not panic a second time in this test.
    std::mem::forget(mock);
}

#[tokio::test]
async fn thaw_after_every_freeze_catches_a_client_that_leaves_the_guest_frozen() {
    let mock = MockAgent::start().await.expect("mock");
    mock.expect(Expectation::thaw_after_every_freeze());

    client_under_test(mock.socket_path(), true, "guest-fsfreeze-freeze")
        .await
        .expect("client");
    let left_frozen = mock.verify();
    client_under_test(mock.socket_path(), true, "guest-fsfreeze-thaw")
        .await
        .expect("client");
    let thawed = mock.verify();

    assert!(!left_frozen.is_met());
    assert_eq!(
        left_frozen.failures().next().map(|(name, _)| name),
        Some("guest-fsfreeze-thaw after every freeze")
    );
    assert!(thawed.is_met(), "{thawed}");
}
