//! unix-listen: qemu-ga's own socket (`-m unix-listen`), owned by the agent process.
//!
//! The process accepts one client at a time and only when it has none (the others wait in
//! the listen backlog). It reads the client until EOF, handling everything read before it
//! looks again, so a client that half-closes still gets its replies and then EOF; a client
//! that went away still has its buffered commands run, and their replies fail with EPIPE.
//! The socket dies with the process.

use std::io;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};

use super::intercept::Interceptor;
use super::origin::Parts;
use super::process::{Input, ReadBuffer, StopSignal};
use super::status::StatusBoard;
use crate::transcript::writer::{Direction, MaybeTranscript, Transcript};

/// A pause after a failed accept (out of file descriptors, say), so a persistent failure
/// does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    number: u64,
    /// Bytes read from and written to it so far (the transcript's offsets).
    read_at: u64,
    written_at: u64,
    /// A write to it failed: the client has gone, though the agent has not read its EOF
    /// yet (qemu-ga reads on, and each reply meets the same error).
    write_failed: bool,
}

/// The listening socket and the client being served.
#[derive(Debug)]
pub(crate) struct ListenLink {
    listener: UnixListener,
    client: Option<Client>,
    /// Connection numbers go on across agent restarts.
    status: StatusBoard,
    fresh_parser_per_connection: bool,
    transcript: Option<Transcript>,
    faults: Interceptor,
    /// Bytes for the first client, written as soon as it is accepted (a scenario's stale
    /// output; qemu-ga's own socket has no buffer of its own to keep them in).
    first_output: Option<(Vec<u8>, Parts)>,
}

impl ListenLink {
    pub(crate) fn new(
        listener: UnixListener,
        status: StatusBoard,
        fresh_parser_per_connection: bool,
        transcript: Option<Transcript>,
        faults: Interceptor,
        first_output: Option<(Vec<u8>, Parts)>,
    ) -> Self {
        Self {
            listener,
            client: None,
            status,
            fresh_parser_per_connection,
            transcript,
            faults,
            first_output,
        }
    }

    /// Closes the current client's connection (a fault); the agent goes on.
    pub(crate) fn close_client(&mut self) {
        self.disconnect("closed by a fault".into());
    }

    fn disconnect(&mut self, detail: String) {
        if let Some(client) = self.client.take() {
            self.faults.disconnected();
            self.status.disconnected();
            self.transcript
                .conn_event(client.number, "disconnected", Some(detail));
        }
    }

    pub(crate) async fn read(&mut self, buf: &mut ReadBuffer, stop: &StopSignal) -> Input {
        loop {
            let Some(client) = &mut self.client else {
                let accepted = tokio::select! {
                    biased;
                    () = stop.requested() => return Input::Stop,
                    accepted = self.listener.accept() => accepted,
                };
                match accepted {
                    Ok((stream, _)) => {
                        let number = self.status.connected();
                        self.transcript.conn_event(number, "connected", None);
                        self.client = Some(Client {
                            stream,
                            number,
                            read_at: 0,
                            written_at: 0,
                            write_failed: false,
                        });
                        if let Some((bytes, parts)) = self.first_output.take() {
                            self.write(&bytes, &parts).await;
                        }
                        // After the write: a connect plan makes the process stop reading
                        // to carry it out, which must not cut the write short.
                        self.faults.connected(number);
                        if self.fresh_parser_per_connection {
                            return Input::NewConnection;
                        }
                    }
                    Err(e) => {
                        self.transcript.event("accept-failed", Some(e.to_string()));
                        tokio::time::sleep(ACCEPT_RETRY).await;
                    }
                }
                continue;
            };
            // The buffer is held while a client is connected (and released by the process
            // between its reads).
            let buf = buf.get();
            let read = tokio::select! {
                biased;
                () = stop.requested() => return Input::Stop,
                read = client.stream.read(buf) => read,
            };
            match read {
                Ok(0) => self.disconnect("eof".into()),
                Ok(n) => {
                    self.status.read(n);
                    let at = client.read_at;
                    self.transcript
                        .bytes(client.number, Direction::In, at, &buf[..n]);
                    client.read_at += n as u64;
                    return Input::Bytes {
                        n,
                        conn: client.number,
                        at,
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.disconnect(e.to_string()),
            }
        }
    }

    /// True while client `conn` is the one connected and can still be written to: an
    /// endless reply written for it stops once a write has failed (it would otherwise go
    /// on failing, write after write, and the agent would never read again).
    pub(crate) fn serves(&self, conn: u64) -> bool {
        self.client
            .as_ref()
            .is_some_and(|c| c.number == conn && !c.write_failed)
    }

    /// Writes one reply to the client, waiting while its socket is full. A failed write
    /// (the client went away) drops the rest of the reply, and the agent goes on: as
    /// qemu-ga, it keeps the connection until it reads its end, so the gone client's
    /// queued commands still run and each reply meets the same failure.
    pub(crate) async fn write(&mut self, reply: &[u8], parts: &Parts) {
        if self.write_to_client(reply, parts).await.is_err() {
            if let Some(client) = &mut self.client {
                client.write_failed = true;
            }
        }
    }

    /// [`ListenLink::write`] until its first failure.
    async fn write_to_client(&mut self, reply: &[u8], parts: &Parts) -> io::Result<()> {
        let Some(client) = &mut self.client else {
            return Ok(());
        };
        let mut at = 0;
        while at < reply.len() {
            let begun = tokio::time::Instant::now();
            match client.stream.try_write(&reply[at..]) {
                Ok(n) => {
                    self.status.wrote(n);
                    let stream_at = client.written_at;
                    self.transcript.bytes_written(
                        begun,
                        client.number,
                        stream_at,
                        &reply[at..at + n],
                    );
                    parts.record(
                        self.transcript.as_ref(),
                        client.number,
                        stream_at,
                        at..at + n,
                    );
                    client.written_at += n as u64;
                    at += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = client.stream.writable().await {
                        self.transcript.conn_event(
                            client.number,
                            "write-failed",
                            Some(e.to_string()),
                        );
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.transcript
                        .conn_event(client.number, "write-failed", Some(e.to_string()));
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl Drop for ListenLink {
    /// The process ended: the kernel closes its sockets, the client sees EOF.
    fn drop(&mut self) {
        self.disconnect("agent-died".into());
    }
}
