//! The real qemu-ga inside a guest, its life driven through the control port.

use std::time::{Duration, Instant};

use qga_harness::client::{BlockingClient, Client, Error, Stage};
use qga_harness::internals::qemu::GuestAgentKind;

use crate::support;

/// The real agent is killed while a command is in its port (it was SIGSTOPped, so the
/// command cannot complete): the reference client returns a typed timeout within its
/// deadline, and once the agent is back it answers the next call, with no stale reply
/// taken for it.
#[test]
fn real_agent_killed_mid_command_gives_a_typed_error_and_the_client_recovers() {
    let mut guest = support::boot(GuestAgentKind::Real);
    let socket = guest.agent_socket().to_owned();
    let timeout = Duration::from_secs(3);
    let mut client = BlockingClient::new(Client::builder(&socket).timeout(timeout)).unwrap();
    client
        .execute("guest-ping", None)
        .expect("the agent answers");

    guest.control().command("hang").expect("hang");
    let caller = std::thread::spawn(move || {
        let started = Instant::now();
        let result = client.execute("guest-get-osinfo", None);
        (client, result, started.elapsed())
    });
    // The command is in the port (the client wrote it); now the agent dies.
    std::thread::sleep(Duration::from_millis(500));
    guest.control().command("kill").expect("kill");
    let (mut client, result, elapsed) = caller.join().unwrap();
    match result {
        Err(Error::Timeout { stage, .. }) => assert_eq!(stage, Stage::Reply),
        other => panic!("expected a timeout while waiting for the reply, got {other:?}"),
    }
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "the call took {elapsed:?}, over its {timeout:?} deadline"
    );
    guest
        .control()
        .command("start")
        .expect("the agent restarts");
    let info = client
        .execute("guest-get-host-name", None)
        .expect("the client recovers after the restart");
    assert_eq!(info["host-name"], "qga-guest");
    client
        .execute("guest-ping", None)
        .expect("and stays in sync");
}
