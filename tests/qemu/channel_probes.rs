//! Probes of the simulated channel against the real one: the same host-side byte
//! sequences and agent life events go once through real QEMU's chardev and virtio-serial
//! to the real qemu-ga in a TCG guest (its life driven through the control port), and once
//! to the mock's simulated virtio-serial channel on the host (its life driven through
//! `AgentLife`). The bytes each host connection receives must be the same.
//!
//! Only `guest-sync` and `guest-sync-delimited` are sent: their replies hold nothing that
//! differs between two agents, so any difference is the channel's or the agent's life's.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use qga_harness::internals::qemu::{Guest, GuestAgentKind};
use qga_harness::{MockAgent, MockAgentBuilder};

use crate::host_mock::HostMock;
use crate::mask::show;
use crate::support;

/// How long a probe waits for lines it expects (a reply through TCG takes milliseconds;
/// an agent restart in the guest up to a second or two).
const EXPECT_WITHIN: Duration = Duration::from_secs(6);
/// How long silence must last to count as silence: time is the behaviour here.
const QUIET_FOR: Duration = Duration::from_millis(1500);

/// One host-side action of a probe. Connections are numbered from 0 in the order opened.
#[derive(Clone, Copy, Debug)]
enum Act {
    Connect,
    Write(usize, &'static [u8]),
    /// Closes the connection's writing half only.
    HalfClose(usize),
    Close(usize),
    /// An agent life event, by its control-port name (`hang`, `resume`, `stop`, `start`,
    /// `restart`).
    Life(&'static str),
    /// Reads until the connection has received this many lines in all, or until
    /// `EXPECT_WITHIN` passes.
    Lines(usize, usize),
    /// Reads whatever arrives for `QUIET_FOR`.
    Quiet(usize),
    /// Waits until the channel has taken every byte written so far, so that a life event
    /// that follows finds them in the guest, not still in the host socket.
    Settle,
    /// Waits until the channel has let go of its client (it serves none).
    Dropped,
}

use Act::*;

struct Probe {
    name: &'static str,
    acts: &'static [Act],
}

const PROBES: &[Probe] = &[
    Probe {
        name: "a sync is answered",
        acts: &[
            Connect,
            Write(
                0,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":1}}\n",
            ),
            Lines(0, 1),
        ],
    },
    Probe {
        // The agent is held while the client half-closes, so that its reply cannot race
        // the end of the client's input (QEMU takes a half-close for a hang-up, and an
        // agent quick enough answers before it reads it, through QEMU as on the mock).
        name: "a request followed by a half-close",
        acts: &[
            Connect,
            Life("hang"),
            Write(
                0,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":2}}\n",
            ),
            HalfClose(0),
            Dropped,
            Life("resume"),
            Quiet(0),
            Connect,
            Write(
                1,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":3}}\n",
            ),
            Lines(1, 1),
            Quiet(1),
        ],
    },
    Probe {
        name: "a second client waits until the first leaves",
        acts: &[
            Connect,
            Connect,
            Write(
                1,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":3}}\n",
            ),
            Write(
                0,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":4}}\n",
            ),
            Lines(0, 1),
            Quiet(1),
            Close(0),
            Lines(1, 1),
        ],
    },
    Probe {
        name: "a reply written after its client left goes to the next client",
        acts: &[
            Connect,
            Life("hang"),
            Write(
                0,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":5}}\n",
            ),
            Close(0),
            Life("resume"),
            Connect,
            Write(
                1,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":6}}\n",
            ),
            Lines(1, 2),
            Quiet(1),
        ],
    },
    Probe {
        name: "an agent restart is invisible to the connected client",
        acts: &[
            Connect,
            Write(
                0,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":7}}\n",
            ),
            Lines(0, 1),
            Life("restart"),
            Write(
                0,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":8}}\n",
            ),
            Lines(0, 2),
        ],
    },
    Probe {
        name: "a request written while the agent is down is answered once it starts",
        acts: &[
            Life("stop"),
            Connect,
            Write(
                0,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":9}}\n",
            ),
            Quiet(0),
            Life("start"),
            Lines(0, 1),
        ],
    },
    Probe {
        name: SHARED_PARSER,
        acts: &[
            Connect,
            Write(0, b"{\"execute\":\"guest-sync\","),
            Close(0),
            Connect,
            Write(1, b"\"arguments\":{\"id\":10}}\n"),
            Lines(1, 1),
            Quiet(1),
        ],
    },
    Probe {
        name: "a request in the port of a stopped agent that is then killed and restarted",
        acts: &[
            Connect,
            Life("hang"),
            Write(
                0,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":11}}\n",
            ),
            Settle,
            Life("restart"),
            Quiet(0),
            Write(
                0,
                b"{\"execute\":\"guest-sync\",\"arguments\":{\"id\":12}}\n",
            ),
            Lines(0, 1),
        ],
    },
    Probe {
        name: "a 0xFF flush and a delimited sync",
        acts: &[
            Connect,
            Write(0, b"{\"execute\":\"guest-sy"),
            Write(0, b"\xff"),
            Write(
                0,
                b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":13}}\n",
            ),
            Lines(0, 1),
            Quiet(0),
        ],
    },
];

const SHARED_PARSER: &str = "half a request left by one client is finished by the next";

/// Where a probe's actions go: a channel and the life of the agent behind it.
trait Side {
    fn socket(&self) -> &Path;
    fn life(&mut self, event: &str);
    /// Returns once the channel has read `written` bytes from the host in all.
    fn settle(&mut self, written: u64);
    /// Returns once the channel serves no client.
    fn dropped(&mut self);
}

struct RealGuest(Guest);

impl Side for RealGuest {
    fn socket(&self) -> &Path {
        self.0.agent_socket()
    }

    fn life(&mut self, event: &str) {
        // An `err` answer comes back as an error.
        self.0
            .control()
            .command(event)
            .unwrap_or_else(|e| panic!("control '{event}': {e}"));
    }

    fn settle(&mut self, _written: u64) {
        // Not observable from the host. QEMU reads the socket as soon as bytes arrive while
        // the guest has the port open, and a control command through the guest takes
        // milliseconds under TCG, so the bytes are in the guest first.
    }

    fn dropped(&mut self) {
        // Not observable either: QEMU reads a client's end of input at once, and the next
        // control command takes milliseconds.
    }
}

/// The mock on the host, on the simulated virtio-serial channel (its default).
struct SimulatedChannel(HostMock);

impl SimulatedChannel {
    fn start() -> SimulatedChannel {
        SimulatedChannel::with(MockAgent::builder())
    }

    fn with(builder: MockAgentBuilder) -> SimulatedChannel {
        SimulatedChannel(HostMock::start(builder))
    }
}

impl Side for SimulatedChannel {
    fn socket(&self) -> &Path {
        self.0.socket()
    }

    fn life(&mut self, event: &str) {
        let life = self.0.life();
        let outcome = self.0.block_on(async {
            match event {
                "hang" => life.hang().await,
                "resume" => life.resume().await,
                "stop" => life.stop().await,
                "start" => life.start().await,
                "restart" => life.restart().await,
                other => panic!("no life event '{other}'"),
            }
        });
        outcome.unwrap_or_else(|e| panic!("life '{event}': {e}"));
    }

    fn settle(&mut self, written: u64) {
        let life = self.0.life();
        let settled = self.0.block_on(async {
            tokio::time::timeout(
                EXPECT_WITHIN,
                life.wait_channel(|status| status.bytes_in >= written),
            )
            .await
        });
        assert!(
            matches!(settled, Ok(Ok(_))),
            "the simulated channel did not take the {written} bytes written"
        );
    }

    fn dropped(&mut self) {
        let life = self.0.life();
        let dropped = self.0.block_on(async {
            tokio::time::timeout(
                EXPECT_WITHIN,
                life.wait_channel(|status| status.serving.is_none()),
            )
            .await
        });
        assert!(
            matches!(dropped, Ok(Ok(_))),
            "the simulated channel did not let its client go"
        );
    }
}

/// Runs a probe's actions; returns what each connection received.
fn run_probe(side: &mut dyn Side, probe: &Probe) -> Vec<Vec<u8>> {
    let mut streams: Vec<Option<UnixStream>> = Vec::new();
    let mut received: Vec<Vec<u8>> = Vec::new();
    let mut written = 0u64;
    for act in probe.acts {
        match *act {
            Connect => {
                let stream = UnixStream::connect(side.socket()).expect("connect");
                streams.push(Some(stream));
                received.push(Vec::new());
            }
            Write(conn, bytes) => {
                open(&mut streams, conn).write_all(bytes).expect("write");
                written += bytes.len() as u64;
            }
            Settle => side.settle(written),
            Dropped => side.dropped(),
            HalfClose(conn) => open(&mut streams, conn)
                .shutdown(Shutdown::Write)
                .expect("half-close"),
            Close(conn) => streams[conn] = None,
            Life(event) => side.life(event),
            Lines(conn, lines) => {
                let deadline = Instant::now() + EXPECT_WITHIN;
                let stream = open(&mut streams, conn);
                while count_lines(&received[conn]) < lines && Instant::now() < deadline {
                    if !read_some(stream, &mut received[conn], deadline) {
                        break;
                    }
                }
            }
            Quiet(conn) => {
                let deadline = Instant::now() + QUIET_FOR;
                let stream = open(&mut streams, conn);
                while Instant::now() < deadline {
                    if !read_some(stream, &mut received[conn], deadline) {
                        break;
                    }
                }
            }
        }
    }
    received
}

fn open(streams: &mut [Option<UnixStream>], conn: usize) -> &mut UnixStream {
    streams[conn]
        .as_mut()
        .unwrap_or_else(|| panic!("connection {conn} is closed"))
}

fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Reads what arrives before `deadline` into `into`; false at end of stream.
fn read_some(stream: &mut UnixStream, into: &mut Vec<u8>, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return true;
    }
    stream.set_read_timeout(Some(left)).expect("read timeout");
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(0) => false,
        Ok(n) => {
            into.extend_from_slice(&buf[..n]);
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => true,
        Err(e) => panic!("read: {e}"),
    }
}

/// Brings the real guest back to a known channel between probes: the agent running and
/// fresh, and nothing left for the next connection (what an earlier probe left unread is
/// read up to the reply of a delimited sync of its own).
fn reset(guest: &mut RealGuest) {
    guest.life("resume");
    guest.life("restart");
    let mut stream = UnixStream::connect(guest.socket()).expect("connect");
    stream
        .write_all(b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":424242}}\n")
        .expect("write");
    let deadline = Instant::now() + EXPECT_WITHIN;
    let mut got = Vec::new();
    let end = b"{\"return\": 424242}\n";
    while !got.ends_with(end) && Instant::now() < deadline {
        if !read_some(&mut stream, &mut got, deadline) {
            break;
        }
    }
    assert!(
        got.ends_with(end),
        "the guest's channel did not drain: {}",
        show(&got)
    );
}

#[test]
fn the_simulated_channel_behaves_as_real_qemu_and_qemu_ga_do() {
    let mut guest = RealGuest(support::boot(GuestAgentKind::Real));
    let mut differences = Vec::new();
    for probe in PROBES {
        reset(&mut guest);
        let real = run_probe(&mut guest, probe);
        eprintln!(
            "probe '{}': real QEMU gave {:?}",
            probe.name,
            real.iter().map(|b| show(b)).collect::<Vec<_>>()
        );
        let mut simulated = SimulatedChannel::start();
        let mock = run_probe(&mut simulated, probe);
        // The probes tell a differing channel apart: a parser that starts afresh for each
        // connection (as some emulations have it) fails the shared-parser probe.
        if probe.name == SHARED_PARSER {
            let mut fresh =
                SimulatedChannel::with(MockAgent::builder().fresh_parser_per_connection(true));
            assert_ne!(
                run_probe(&mut fresh, probe),
                real,
                "the shared-parser probe does not tell a fresh parser per connection apart"
            );
        }
        // Silence can be the behaviour (a half-close ends the connection), but the
        // plumbing must carry a reply, or every probe would agree on nothing.
        if probe.name == PROBES[0].name {
            assert_eq!(
                real[0], b"{\"return\": 1}\n",
                "the real agent did not answer the first probe"
            );
        }
        if real != mock {
            let show_all = |conns: &[Vec<u8>]| {
                conns
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("conn {i}: {}", show(b)))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            differences.push(format!(
                "probe '{}':\n  real QEMU: {}\n  simulated: {}",
                probe.name,
                show_all(&real),
                show_all(&mock)
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "the simulated channel differs from the real one:\n{}",
        differences.join("\n")
    );
}
