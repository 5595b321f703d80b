//! Hostile clients: random bytes, a 100 MiB flood with no braces, a client that never
//! reads. The mock must stay alive, keep its memory bounded, and answer the next client.
//!
//! The bound: the parser buffers at most one token of 64 MiB (QEMU's limit); the channel
//! holds at most 512 KiB of input and 128 KiB of output on top of the kernel's socket
//! buffers. The floods below peak at about 73 MiB (a debug build; 64 MiB of
//! it is the one token); the assertions allow 96 MiB, less than any flood.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::process::{mock_command, Running};
use common::*;
use qga_harness::{MockAgent, Transport};
use rand::{RngCore, SeedableRng};
use rstest::rstest;

const MEMORY_BOUND_KIB: u64 = 96 * 1024;

/// Reads until `marker` went by (bounded), so stale replies left by an earlier client
/// are skipped, then checks a plain round trip.
async fn next_client_is_answered(socket: &Path) {
    let mut client = Client::connect(socket).await;
    client.send(b"\xff").await;
    client.send(&sync_delimited(4242)).await;
    client
        .skip_past(&sync_delimited_reply(4242), 256 << 20)
        .await;
    client.send(&sync(4243)).await;
    assert_eq!(client.line().await, sync_reply(4243));
}

#[rstest]
#[tokio::test]
async fn random_bytes_leave_the_mock_answering_the_next_client(
    #[values(Transport::VirtioSerial, Transport::UnixListen)] transport: Transport,
    #[values(1, 2, 3, 4, 5, 6)] seed: u64,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mock = MockAgent::builder()
        .transport(transport)
        .start_in(dir.path())
        .await
        .expect("start the mock");
    let mut noise = vec![0u8; 256 << 10];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut noise);

    let client = Client::connect(mock.socket_path()).await;
    let (mut reader, mut writer) = client.into_stream().into_split();
    // Read the error replies while writing, as a real client would.
    let draining = tokio::spawn(async move {
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut reader, &mut sink).await
    });
    tokio::io::AsyncWriteExt::write_all(&mut writer, &noise)
        .await
        .expect("write the noise");
    drop(writer);
    draining.abort();
    let _ = draining.await;

    next_client_is_answered(mock.socket_path()).await;
}

/// `qga-harness mock` as a process, so its memory can be read from /proc.
struct MockProcess {
    server: Running,
}

impl MockProcess {
    fn start(socket: &Path) -> MockProcess {
        let mut command = mock_command(socket);
        command.stdout(Stdio::null()).stderr(Stdio::inherit());
        MockProcess {
            server: Running::start(&mut command, socket),
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.server.child.id()))
            .expect("status");
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("field")
    }

    fn assert_alive(&mut self) {
        assert!(
            self.server.child.try_wait().expect("wait").is_none(),
            "the mock died"
        );
    }
}

fn next_process_client_is_answered(socket: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(next_client_is_answered(socket));
}

#[rstest]
#[case::an_unterminated_string(b"\"", b'a')]
#[case::one_endless_keyword(b"", b'x')]
#[case::one_endless_number(b"", b'7')]
#[case::whitespace(b"", b' ')]
fn a_100_mib_flood_without_braces_keeps_memory_bounded(#[case] prefix: &[u8], #[case] fill: u8) {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    let mut mock = MockProcess::start(&socket);

    let stream = UnixStream::connect(&socket).expect("connect");
    let mut reader = stream.try_clone().expect("clone");
    let draining = std::thread::spawn(move || {
        let mut sink = std::io::sink();
        std::io::copy(&mut reader, &mut sink)
    });
    let mut writer = stream;
    writer.write_all(prefix).expect("write");
    let chunk = vec![fill; 1 << 20];
    for _ in 0..100 {
        writer.write_all(&chunk).expect("write the flood");
    }
    writer.shutdown(std::net::Shutdown::Both).expect("shutdown");
    let _ = draining.join().expect("reader");

    mock.assert_alive();
    let peak = mock.status_kib("VmHWM:");
    assert!(
        peak <= MEMORY_BOUND_KIB,
        "peak {peak} KiB after a 100 MiB flood"
    );
    next_process_client_is_answered(&socket);
}

#[test]
fn a_client_that_never_reads_is_held_back_with_bounded_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("qga.sock");
    let mut mock = MockProcess::start(&socket);

    let mut stream = UnixStream::connect(&socket).expect("connect");
    // No progress for a whole second means the mock stopped reading.
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let requests = ping("p").repeat(1024);
    let mut sent = 0usize;
    loop {
        match stream.write(&requests[sent % ping("p").len()..]) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write: {e}"),
        }
        assert!(
            sent < 64 << 20,
            "64 MiB taken from a client that never reads"
        );
    }
    assert!(
        sent < 8 << 20,
        "{sent} bytes taken before the mock held back"
    );
    mock.assert_alive();
    let peak = mock.status_kib("VmHWM:");
    assert!(peak <= 32 * 1024, "peak {peak} KiB");

    // What it did get answered is still there for it, in order.
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut first = vec![0u8; ping_reply("p").len()];
    stream.read_exact(&mut first).expect("read");
    assert_eq!(first, ping_reply("p"));
    drop(stream);
    next_process_client_is_answered(&socket);
}
