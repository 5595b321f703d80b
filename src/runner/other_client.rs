//! Another client on the agent's channel, held by the harness (a scenario's
//! `other_client`): connected before the client under test starts, it writes its lines at
//! once, keeps the connection for the time the case gives and hangs up without reading.
//!
//! A QEMU socket chardev serves one host connection at a time: the client under test
//! connects while this one is served (the kernel queues it; QEMU reads nothing from it),
//! is taken on when this one leaves, and receives whatever the agent writes after that,
//! the replies to this client's requests included. The mock's simulated channel does the
//! same, and so does a real guest behind `--target qemu` (the holder is one more connection
//! to the front).

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::scenario::OtherClient;
use crate::transcript::{Direction, Wire};

/// The held connection; it is closed at the end of its hold, or when released.
pub(crate) struct Holder {
    task: JoinHandle<()>,
    /// Bytes it wrote.
    written: u64,
}

impl Holder {
    /// Connects to `socket`, writes the lines and keeps the connection for `hold_ms`
    /// from the moment it connected.
    pub(crate) async fn connect(socket: &Path, other: &OtherClient) -> io::Result<Holder> {
        let mut stream = UnixStream::connect(socket).await?;
        let until = tokio::time::Instant::now() + Duration::from_millis(other.hold_ms);
        let mut bytes = Vec::new();
        for line in &other.lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        stream.write_all(&bytes).await?;
        let task = tokio::spawn(async move {
            // The hold is the behaviour under test (a client that keeps the channel for a
            // while), not a wait for something to happen.
            tokio::time::sleep_until(until).await;
            drop(stream);
        });
        Ok(Holder {
            task,
            written: bytes.len() as u64,
        })
    }

    /// Hangs up now if the hold has not ended yet (the case is over).
    pub(crate) fn release(self) -> u64 {
        self.task.abort();
        self.written
    }
}

/// Which connection of the transcript was the holder's: the first the channel accepted
/// (it connected before the client under test was started, and a listening socket hands
/// out connections in the order they came). Checked against what it sent: no more bytes
/// than the holder wrote.
pub(crate) fn held_connection(wire: &Wire, written: u64) -> Result<Option<u64>, String> {
    let Some(&first) = wire.connections.first() else {
        return Ok(None);
    };
    let sent: u64 = wire
        .writes
        .iter()
        .filter(|w| w.conn == first && w.dir == Direction::In)
        .map(|w| w.len)
        .sum();
    if sent > written {
        return Err(format!(
            "the first connection the agent accepted (connection {first}) sent {sent} bytes, more than the {written} the other client wrote: which connection was the harness's is not known"
        ));
    }
    Ok(Some(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(lines: &[&str]) -> Wire {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("transcript.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
        Wire::read(&path).expect("read")
    }

    const FIRST_SENDS_TEN: [&str; 4] = [
        r#"{"t_us":1,"conn":1,"event":"connected"}"#,
        r#"{"t_us":2,"conn":1,"dir":"in","at":0,"text":"123456789\n"}"#,
        r#"{"t_us":3,"conn":1,"event":"disconnected","detail":"eof"}"#,
        r#"{"t_us":4,"conn":2,"event":"connected"}"#,
    ];

    #[test]
    fn the_held_connection_is_the_first_accepted() {
        assert_eq!(held_connection(&wire(&FIRST_SENDS_TEN), 10), Ok(Some(1)));
        assert_eq!(held_connection(&wire(&FIRST_SENDS_TEN), 20), Ok(Some(1)));
    }

    #[test]
    fn a_first_connection_that_sent_more_than_the_holder_wrote_is_not_taken_for_it() {
        let error = held_connection(&wire(&FIRST_SENDS_TEN), 5).expect_err("not the holder's");
        assert!(error.contains("sent 10 bytes, more than the 5"), "{error}");
    }

    #[test]
    fn no_connection_no_holder() {
        assert_eq!(held_connection(&wire(&[]), 5), Ok(None));
    }
}
