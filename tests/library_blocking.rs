//! The mock in plain `#[test]` functions, through its blocking handle: no async runtime
//! in the test, the mock on a thread of its own.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};

use qga_harness::{Expectation, MockAgent, Rule};

fn sync_then(socket: &std::path::Path, command: &str) -> String {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .write_all(br#"{"execute":"guest-sync-delimited","arguments":{"id":9}}"#)
        .expect("write");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut sync = Vec::new();
    reader.read_until(b'\n', &mut sync).expect("read");
    assert_eq!(sync, b"\xff{\"return\": 9}\n");
    stream
        .write_all(format!(r#"{{"execute":"{command}"}}"#).as_bytes())
        .expect("write");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("read");
    reply
}

#[test]
fn a_blocking_mock_serves_a_synchronous_client() {
    let mock = MockAgent::builder().seed(3).start_blocking().expect("mock");
    mock.expect(Expectation::sync_delimited_before_first_command());

    let reply = sync_then(mock.socket_path(), "guest-get-host-name");

    assert!(
        reply.starts_with("{\"return\": {\"host-name\": "),
        "{reply}"
    );
    assert_eq!(mock.received().len(), 2);
}

#[test]
fn faults_change_while_the_blocking_mock_runs() {
    let mock = MockAgent::builder().start_blocking().expect("mock");
    let id = mock
        .faults()
        .add(
            Rule::on("guest-ping")
                .then(qga_harness::fault::Action::Error {
                    class: "GenericError".into(),
                    desc: "injected".into(),
                })
                .build(),
        )
        .expect("rule");

    let failed = sync_then(mock.socket_path(), "guest-ping");
    assert!(mock.faults().remove(id));
    let passed = sync_then(mock.socket_path(), "guest-ping");

    assert_eq!(
        failed,
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"injected\"}}\n"
    );
    assert_eq!(passed, "{\"return\": {}}\n");
}

#[test]
fn dropping_a_blocking_mock_with_an_unmet_expectation_panics_with_the_report() {
    let mock = MockAgent::builder().start_blocking().expect("mock");
    mock.expect(Expectation::received("guest-info", 1..));
    let socket = mock.socket_path().to_owned();
    sync_then(&socket, "guest-ping");

    let panic = catch_unwind(AssertUnwindSafe(move || drop(mock))).expect_err("must panic");

    let report = panic
        .downcast_ref::<String>()
        .cloned()
        .expect("a String panic payload");
    assert_eq!(
        report,
        "mock qemu-ga: 1 of 1 expectations not met\n\
         \x20 NOT MET: guest-info received at least 1 times: received 0 times\n\
         received (2 requests):\n\
         \x20 request 1 {\"arguments\":{\"id\":9},\"execute\":\"guest-sync-delimited\"} on conn 1 -> \\xFF{\"return\": 9}\n\
         \x20 request 2 {\"execute\":\"guest-ping\"} on conn 1 -> {\"return\": {}}\n"
    );
    assert!(
        !socket.exists(),
        "the mock shut down and removed its socket"
    );
}
