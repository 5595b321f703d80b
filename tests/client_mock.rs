//! The reference client against the mock qemu-ga: the hostile situations the mock's
//! channel and life produce (a guest that is still booting, a hung, killed or restarted
//! agent, stale replies waiting in the channel, a previous client's partial request in the
//! parser, guest-shutdown taking the VM down), and the simulated guest behind the typed
//! helpers. The client must return the true answer or a typed error within its deadline,
//! and its next call must work.

use std::time::Duration;

use qga_harness::client::{Capture, Client, Error, Exec, FsfreezeStatus, Stage, Whence};
use qga_harness::{AgentState, MockAgent, Transport};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::time::Instant;

async fn mock() -> (MockAgent, tempfile::TempDir) {
    mock_with(MockAgent::builder()).await
}

async fn mock_with(builder: qga_harness::MockAgentBuilder) -> (MockAgent, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = builder.start_in(dir.path()).await.expect("start the mock");
    (mock, dir)
}

fn client(mock: &MockAgent) -> Client {
    Client::builder(mock.socket_path())
        .timeout(Duration::from_secs(3))
        .build()
}

async fn host_name(c: &mut Client) -> String {
    let ret = c
        .execute("guest-get-host-name", None)
        .await
        .expect("host name");
    ret["host-name"].as_str().expect("a string").to_owned()
}

#[tokio::test]
async fn calls_work_and_the_mock_echoes_ids() {
    let (mock, _dir) = mock().await;
    let mut c = client(&mock);
    c.ping().await.unwrap();
    assert_eq!(c.ids_echoed(), Some(true));
    let info = c.info().await.unwrap();
    assert!(info
        .supported_commands
        .iter()
        .any(|cmd| cmd.name == "guest-ping"));
    assert_eq!(
        c.execute("guest-sync", Some(&json!({"id": 5})))
            .await
            .unwrap(),
        json!(5)
    );
    assert!(matches!(
        c.execute("guest-nosuch", None).await.unwrap_err(),
        Error::CommandNotFound(_)
    ));
    // Our 0xFF before the sync made the agent complain once; the client dropped it.
    assert_eq!(c.stats().discarded_replies, 1);
}

#[tokio::test]
async fn a_guest_still_booting_times_out_and_its_late_sync_reply_is_dropped() {
    let (mock, _dir) = mock_with(MockAgent::builder().start_manually()).await;
    let mut c = client(&mock);
    let limit = Duration::from_millis(300);
    let e = c
        .execute_within("guest-ping", None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Sync,
                ..
            }
        ),
        "{e:?}"
    );
    // The agent comes up and answers what was buffered: our abandoned sync, late.
    mock.life().start().await.unwrap();
    assert!(!host_name(&mut c).await.is_empty());
    assert_eq!(c.stats().syncs, 1);
    assert!(c.stats().discarded_replies >= 2, "{:?}", c.stats());
}

#[tokio::test]
async fn a_call_made_while_the_guest_boots_is_answered_within_its_deadline() {
    let (mock, _dir) =
        mock_with(MockAgent::builder().start_delay(Duration::from_millis(300))).await;
    let mut c = client(&mock);
    let start = Instant::now();
    c.ping().await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn a_previous_clients_partial_request_does_not_swallow_ours() {
    let (mock, _dir) = mock().await;
    let life = mock.life();
    let sent = br#"{"execute":"guest-ping","arguments":{"x":"ab"#;
    {
        let mut previous = UnixStream::connect(mock.socket_path()).await.unwrap();
        previous.write_all(sent).await.unwrap();
        life.wait_channel(|s| s.bytes_in >= sent.len() as u64)
            .await
            .unwrap();
    }
    let mut c = client(&mock);
    assert_eq!(
        c.execute("guest-sync", Some(&json!({"id": 77})))
            .await
            .unwrap(),
        json!(77)
    );
}

#[tokio::test]
async fn a_stale_reply_waiting_in_the_channel_at_connect_is_dropped() {
    let (mock, _dir) = mock().await;
    let life = mock.life();
    // A previous client's command is read while the agent is hung; the client leaves;
    // the agent resumes and answers with nobody connected (qemu-guest.md §4 (c)).
    life.hang().await.unwrap();
    let request = br#"{"execute":"guest-get-osinfo","id":"unread"}"#;
    {
        let mut previous = UnixStream::connect(mock.socket_path()).await.unwrap();
        previous.write_all(request).await.unwrap();
        life.wait_channel(|s| s.bytes_in >= request.len() as u64)
            .await
            .unwrap();
    }
    life.wait_channel(|s| s.serving.is_none()).await.unwrap();
    life.resume().await.unwrap();
    let mut c = client(&mock);
    assert!(!host_name(&mut c).await.is_empty());
    // The complaint about our 0xFF, and the stale osinfo reply.
    assert_eq!(c.stats().discarded_replies, 2, "{:?}", c.stats());
    c.ping().await.unwrap();
}

#[tokio::test]
async fn a_hung_agent_times_out_and_its_late_reply_is_not_taken_for_the_next_answer() {
    let (mock, _dir) = mock().await;
    let life = mock.life();
    let mut c = client(&mock);
    c.ping().await.unwrap();
    life.hang().await.unwrap();
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    let e = c
        .execute_within("guest-get-osinfo", None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Reply,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(start.elapsed() < limit + Duration::from_millis(400));
    life.resume().await.unwrap();
    // The osinfo reply comes first, then the answer to the resync, then ours.
    assert!(!host_name(&mut c).await.is_empty());
    assert_eq!(c.stats().syncs, 2);
}

#[tokio::test]
async fn an_agent_killed_with_the_command_inside_loses_it_and_a_restart_recovers() {
    let (mock, _dir) = mock().await;
    let life = mock.life();
    let mut c = client(&mock);
    c.ping().await.unwrap();
    life.hang().await.unwrap();
    let e = c
        .execute_within("guest-get-osinfo", None, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    // Killed while holding the command: it is never answered.
    life.kill().await.unwrap();
    let e = c
        .execute_within("guest-ping", None, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Sync,
                ..
            }
        ),
        "{e:?}"
    );
    life.start().await.unwrap();
    assert!(!host_name(&mut c).await.is_empty());
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_session_is_survived() {
    let (mock, _dir) = mock().await;
    let life = mock.life();
    let mut c = client(&mock);
    c.ping().await.unwrap();
    life.restart_after(Duration::from_millis(200))
        .await
        .unwrap();
    // Sent while the agent is down, answered once it is back, within the deadline.
    assert!(!host_name(&mut c).await.is_empty());
    assert_eq!(life.state(), AgentState::Running);
}

#[tokio::test]
async fn a_unix_listen_agent_that_restarts_is_reconnected_within_the_deadline() {
    // qemu-ga's own socket goes away with the agent and comes back with the next one: the
    // client waits for it within the call's deadline instead of failing at once.
    let (mock, _dir) = mock_with(MockAgent::builder().transport(Transport::UnixListen)).await;
    let life = mock.life();
    let mut c = client(&mock);
    c.ping().await.unwrap();
    life.kill().await.unwrap();
    let restart = tokio::spawn({
        let life = life.clone();
        async move { life.restart_after(Duration::from_millis(200)).await }
    });
    assert!(!host_name(&mut c).await.is_empty());
    restart.await.unwrap().unwrap();
    assert_eq!(life.state(), AgentState::Running);
}

#[tokio::test]
async fn a_first_connect_to_a_missing_socket_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::builder(dir.path().join("nothing.sock"))
        .timeout(Duration::from_secs(5))
        .build();
    let started = Instant::now();
    let e = c.ping().await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn unix_listen_serves_one_client_at_a_time() {
    let (mock, _dir) = mock_with(MockAgent::builder().transport(Transport::UnixListen)).await;
    let mut first = client(&mock);
    first.ping().await.unwrap();
    let mut second = client(&mock);
    let e = second
        .execute_within("guest-ping", None, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    first.disconnect();
    second.ping().await.unwrap();
}

#[tokio::test]
async fn guest_shutdown_succeeds_and_the_vm_goes_away() {
    let (mut mock, _dir) = mock().await;
    let mut c = client(&mock);
    let start = Instant::now();
    c.shutdown(None).await.unwrap();
    // Proven by the agent answering the ping behind it, not by waiting.
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    mock.exited().await.unwrap();
    let e = c.ping().await.unwrap_err();
    assert!(
        matches!(e, Error::Connect { .. } | Error::Disconnected { .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_blocked_shutdown_is_an_error_not_a_success() {
    let (mock, _dir) = mock_with(MockAgent::builder().block_rpcs(["guest-shutdown"])).await;
    let mut c = client(&mock);
    let e = c.shutdown(None).await.unwrap_err();
    assert!(matches!(e, Error::CommandDisabled(_)), "{e:?}");
    c.ping().await.unwrap();
}

#[tokio::test]
async fn a_dead_agent_is_never_a_successful_shutdown() {
    let (mock, _dir) = mock().await;
    mock.life().stop().await.unwrap();
    let mut c = client(&mock);
    let e = c
        .execute_within("guest-shutdown", None, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Sync,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn frozen_filesystems_disable_commands_with_the_frozen_error() {
    let (mock, _dir) = mock().await;
    let mut c = client(&mock);
    let frozen = c.fsfreeze_freeze().await.unwrap();
    assert!(
        frozen > 0,
        "the default Linux guest has filesystems to freeze"
    );
    assert_eq!(c.fsfreeze_status().await.unwrap(), FsfreezeStatus::Frozen);
    let e = c.file_open("/etc/hostname", None).await.unwrap_err();
    assert!(matches!(e, Error::Frozen(_)), "{e:?}");
    let e = c.exec(&Exec::new("/bin/true")).await.unwrap_err();
    assert!(matches!(e, Error::Frozen(_)), "{e:?}");
    let e = c.fsfreeze_freeze().await.unwrap_err();
    assert!(matches!(e, Error::Frozen(_)), "{e:?}");
    let e = c.shutdown(None).await.unwrap_err();
    assert!(matches!(e, Error::Frozen(_)), "{e:?}");
    assert_eq!(c.fsfreeze_thaw().await.unwrap(), frozen);
    assert_eq!(c.fsfreeze_status().await.unwrap(), FsfreezeStatus::Thawed);
}

#[tokio::test]
async fn exec_runs_in_the_simulated_guest_and_its_output_is_decoded() {
    let (mock, _dir) = mock().await;
    let mut c = client(&mock);
    let exec = Exec::new("/bin/sh")
        .args(["-c", "echo out; echo err >&2; exit 3"])
        .capture(Capture::Separated);
    let status = c
        .exec_and_wait(&exec, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(status.exited);
    assert_eq!(status.exit_code, Some(3));
    assert_eq!(status.stdout, b"out\n");
    assert_eq!(status.stderr, b"err\n");
    let exec = Exec::new("/bin/cat")
        .input(b"piped\n".to_vec())
        .capture(Capture::Separated);
    let status = c
        .exec_and_wait(&exec, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status.stdout, b"piped\n");
}

#[tokio::test]
async fn files_round_trip_through_the_simulated_guest() {
    let (mock, _dir) = mock().await;
    let mut c = client(&mock);
    let handle = c.file_open("/tmp/qga-test.txt", Some("w+")).await.unwrap();
    assert!(handle >= 1000);
    let data: Vec<u8> = (0..=255u8).collect();
    assert_eq!(c.file_write(handle, &data).await.unwrap().count, 256);
    c.file_flush(handle).await.unwrap();
    assert_eq!(
        c.file_seek(handle, 0, Whence::Set).await.unwrap().position,
        0
    );
    let read = c.file_read(handle, 4096).await.unwrap();
    assert_eq!(read.data, data);
    c.file_close(handle).await.unwrap();
    let e = c.file_close(handle).await.unwrap_err();
    assert!(matches!(e, Error::Agent(_)), "{e:?}");
    assert_eq!(e.desc(), format!("handle '{handle}' has not been found"));
}

#[tokio::test]
async fn typed_helpers_read_the_mock_guest() {
    let (mock, _dir) = mock().await;
    let mut c = client(&mock);
    let os = c.osinfo().await.unwrap();
    assert!(os.kernel_release.is_some());
    let ifaces = c.network_interfaces().await.unwrap();
    assert!(ifaces.iter().any(|i| i.name == "lo"));
}
