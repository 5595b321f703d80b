//! The reference client against the real qemu-ga (unix-listen, every state-changing
//! command blocked): the same calls give the same answers as bare requests, the typed
//! helpers read the real shapes, and the real agent's quirks (0xFF complaints, parser
//! state kept across clients, one client at a time) do not trip the client.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use qga_harness::client::{Client, Error, Exec, FsfreezeStatus, Stage};
use qga_harness::internals::real_agent::RealAgent;
use rstest::rstest;
use serde_json::{json, Value};

fn agent() -> RealAgent {
    RealAgent::start(&[]).expect("start qemu-ga")
}

fn client(agent: &RealAgent) -> Client {
    Client::builder(agent.socket())
        .timeout(Duration::from_secs(5))
        .build()
}

/// One request over a bare connection: reset the parser, sync, send, read one line.
fn bare_request(socket: &Path, request: &str) -> Value {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":424242}}")
        .expect("write");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.read_until(b'\n', &mut line).expect("read");
        if line.starts_with(b"\xff{\"return\": 424242}") {
            break;
        }
        assert!(!line.is_empty(), "EOF before the sync reply");
    }
    stream.write_all(request.as_bytes()).expect("write");
    line.clear();
    reader.read_until(b'\n', &mut line).expect("read");
    serde_json::from_slice(&line).expect("a JSON reply")
}

/// What the client's result looks like as a bare reply.
fn as_reply(result: Result<Value, Error>) -> Value {
    match result {
        Ok(ret) => json!({ "return": ret }),
        Err(e) => match e.agent_error() {
            Some(a) => json!({"error": {"class": a.class, "desc": a.desc}}),
            None => panic!("client-side failure: {e:?}"),
        },
    }
}

/// Interface counters move with any loopback traffic; everything else must match.
fn without_counters(mut reply: Value) -> Value {
    if let Some(list) = reply["return"].as_array_mut() {
        for iface in list {
            if let Some(obj) = iface.as_object_mut() {
                obj.remove("statistics");
            }
        }
    }
    reply
}

#[rstest]
#[case::info("guest-info", None)]
#[case::osinfo("guest-get-osinfo", None)]
#[case::interfaces("guest-network-get-interfaces", None)]
#[case::host_name("guest-get-host-name", None)]
#[case::timezone("guest-get-timezone", None)]
#[case::fsfreeze_status("guest-fsfreeze-status", None)]
#[case::vcpus("guest-get-vcpus", None)]
#[case::users("guest-get-users", None)]
#[case::memory_block_info("guest-get-memory-block-info", None)]
#[case::ping("guest-ping", None)]
#[case::sync("guest-sync", Some(json!({"id": 9223372036854775807_i64})))]
#[case::unknown("guest-nosuch", None)]
#[case::disabled("guest-exec", Some(json!({"path": "/bin/true"})))]
#[case::disabled_no_reply("guest-shutdown", None)]
#[case::unexpected_argument("guest-ping", Some(json!({"x": 1})))]
#[case::missing_argument("guest-sync", None)]
#[case::wrong_type("guest-sync", Some(json!({"id": "abc"})))]
#[case::unknown_handle("guest-file-read", Some(json!({"handle": 5})))]
#[case::unknown_pid("guest-exec-status", Some(json!({"pid": 999999})))]
#[tokio::test]
async fn the_client_answers_as_a_bare_request_does(
    #[case] command: &str,
    #[case] arguments: Option<Value>,
) {
    let agent = agent();
    let mut request = json!({ "execute": command });
    if let Some(args) = &arguments {
        request["arguments"] = args.clone();
    }
    let bare = without_counters(bare_request(agent.socket(), &request.to_string()));
    let mut c = client(&agent);
    let got = without_counters(as_reply(c.execute(command, arguments.as_ref()).await));
    assert_eq!(got, bare);
    // And again on the warm connection.
    let again = without_counters(as_reply(c.execute(command, arguments.as_ref()).await));
    assert_eq!(again, bare);
}

#[tokio::test]
async fn typed_helpers_read_the_real_shapes() {
    let agent = agent();
    let bare_info = bare_request(agent.socket(), r#"{"execute":"guest-info"}"#);
    let mut c = client(&agent);
    c.ping().await.unwrap();
    assert_eq!(c.ids_echoed(), Some(true));
    let info = c.info().await.unwrap();
    assert_eq!(info.version, bare_info["return"]["version"]);
    let enabled = |name: &str| {
        info.supported_commands
            .iter()
            .find(|cmd| cmd.name == name)
            .map(|cmd| cmd.enabled)
    };
    assert_eq!(enabled("guest-ping"), Some(true));
    assert_eq!(enabled("guest-exec"), Some(false));
    let shutdown = info
        .supported_commands
        .iter()
        .find(|cmd| cmd.name == "guest-shutdown")
        .unwrap();
    assert!(!shutdown.success_response);
    let os = c.osinfo().await.unwrap();
    assert!(os.kernel_release.is_some());
    let ifaces = c.network_interfaces().await.unwrap();
    assert!(ifaces.iter().any(|i| i.name == "lo"));
    assert_eq!(c.fsfreeze_status().await.unwrap(), FsfreezeStatus::Thawed);
}

#[tokio::test]
async fn blocked_commands_are_command_disabled_errors() {
    let agent = agent();
    let mut c = client(&agent);
    let e = c.exec(&Exec::new("/bin/true")).await.unwrap_err();
    assert!(matches!(e, Error::CommandDisabled(_)), "{e:?}");
    assert_eq!(e.desc(), "Command guest-exec has been disabled");
    let e = c.file_open("/etc/hostname", None).await.unwrap_err();
    assert!(matches!(e, Error::CommandDisabled(_)), "{e:?}");
    let e = c.fsfreeze_freeze().await.unwrap_err();
    assert!(matches!(e, Error::CommandDisabled(_)), "{e:?}");
    // A no-reply command that fails does reply, with the id: an error, not a success.
    let e = c.shutdown(None).await.unwrap_err();
    assert!(matches!(e, Error::CommandDisabled(_)), "{e:?}");
    let e = c.execute("guest-nosuch", None).await.unwrap_err();
    assert!(matches!(e, Error::CommandNotFound(_)), "{e:?}");
    c.ping().await.unwrap();
}

#[tokio::test]
async fn a_previous_clients_partial_request_does_not_swallow_ours() {
    let agent = agent();
    {
        // Leaves the agent's parser inside a string (qga-wire.md §8).
        let mut previous = UnixStream::connect(agent.socket()).unwrap();
        previous
            .write_all(br#"{"execute":"guest-ping","arguments":{"x":"ab"#)
            .unwrap();
    }
    let mut c = client(&agent);
    assert_eq!(
        c.execute("guest-sync", Some(&json!({"id": 77})))
            .await
            .unwrap(),
        json!(77)
    );
}

/// Polls a call once (it writes its request and starts waiting) and drops it, as a
/// caller's own `select!` or timeout would.
async fn abandon<F: std::future::Future>(call: F) {
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        let _ = call.as_mut().poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
}

#[tokio::test]
async fn a_late_reply_is_not_taken_for_the_next_answer() {
    let agent = agent();
    let mut c = client(&agent);
    c.ping().await.unwrap();
    // The request goes out; its reply comes after the caller gave up.
    abandon(c.execute("guest-info", None)).await;
    let host = c.execute("guest-get-host-name", None).await.unwrap();
    assert!(host.get("host-name").is_some(), "{host}");
    assert_eq!(
        c.stats().syncs,
        2,
        "an abandoned call makes the next one resync"
    );
}

/// A connection the agent is serving: it has answered a sync on it.
fn served_connection(socket: &Path) -> UnixStream {
    let mut holder = UnixStream::connect(socket).unwrap();
    holder
        .write_all(b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1}}")
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "{\"return\": 1}\n");
    holder
}

#[tokio::test]
async fn a_full_listen_backlog_is_waited_out_within_the_deadline() {
    let agent = agent();
    let served = served_connection(agent.socket());
    // Fill qemu-ga's listen backlog: a non-blocking connect then fails at once.
    let mut queued = Vec::new();
    loop {
        match tokio::net::UnixStream::connect(agent.socket()).await {
            Ok(s) => queued.push(s),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                break;
            }
        }
        assert!(queued.len() < 16, "the backlog never filled");
    }
    let mut c = client(&agent);
    let e = c
        .execute_within("guest-ping", None, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                stage: Stage::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    drop(served);
    drop(queued);
    c.ping().await.unwrap();
}

#[tokio::test]
async fn a_queued_connection_times_out_and_works_once_the_agent_is_free() {
    let agent = agent();
    // Another client holds the agent; ours waits in the listen backlog.
    let holder = served_connection(agent.socket());
    let mut c = client(&agent);
    let e = c
        .execute_within("guest-ping", None, Duration::from_millis(300))
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
    drop(holder);
    c.ping().await.unwrap();
}

#[tokio::test]
async fn raw_requests_reach_the_agent_as_written() {
    let agent = agent();
    let mut c = client(&agent);
    let e = c.execute_raw(&json!([1])).await.unwrap_err();
    assert_eq!(e.desc(), "QMP input must be a JSON object");
    let e = c
        .execute_raw(&json!({"exec": "guest-ping"}))
        .await
        .unwrap_err();
    assert_eq!(e.desc(), "QMP input member 'exec' is unexpected");
    let ret = c
        .execute_raw(&json!({"execute": "guest-sync", "arguments": {"id": 5}, "id": "mine"}))
        .await
        .unwrap();
    assert_eq!(ret, json!(5));
    let ret = c
        .execute_raw(&json!({"execute": "guest-sync", "arguments": {"id": 6}}))
        .await
        .unwrap();
    assert_eq!(ret, json!(6));
}

#[tokio::test]
async fn many_calls_with_timeouts_in_between_stay_in_step() {
    let agent = agent();
    let mut c = client(&agent);
    for n in 0..200_i64 {
        if n % 7 == 3 {
            // Give up on some calls at once; their replies arrive during the next call.
            abandon(c.execute("guest-get-osinfo", None)).await;
        }
        let ret = c
            .execute("guest-sync", Some(&json!({ "id": n })))
            .await
            .unwrap();
        assert_eq!(ret, json!(n));
    }
}
