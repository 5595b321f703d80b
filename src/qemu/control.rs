//! The control port: a second virtio-serial port (`org.qga-harness.control.0`) through which
//! the host drives what runs inside the guest. One command per line; one answer per line,
//! `ok ...` or `err ...`; `transcript` answers with the in-guest mock's transcript lines and
//! then `end`.
//!
//! Commands understood by both agents: `ping`, `status`, `kill` (SIGKILL; the supervisor
//! restarts it), `hang` (SIGSTOP), `resume` (SIGCONT), `stop` (SIGTERM, kept stopped),
//! `start`, `restart` (kill, then wait until the new agent has its port open),
//! `restart-delay S`, `poweroff`. The mock adds `load BASE64` (a case's agent side),
//! `transcript`, `start-delay S`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The longest a control command may take before the guest counts as gone.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a control command failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The guest's side answered with an error.
    #[error("the guest refused '{command}': {message}")]
    Refused { command: String, message: String },
    /// The port broke or timed out.
    #[error("the control port failed during '{command}': {source}")]
    Io {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The guest closed the port (the VM exited).
    #[error("the control port closed during '{command}' (the guest is gone)")]
    Closed { command: String },
}

/// A connected control port.
#[derive(Debug)]
pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    pub(crate) fn new(stream: UnixStream) -> std::io::Result<Self> {
        let writer = stream.try_clone()?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Reads one line, with `timeout`; `None` at EOF.
    pub(crate) fn read_line(&mut self, timeout: Duration) -> std::io::Result<Option<String>> {
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        // A line longer than this is not an answer of ours.
        let n = Read::take(&mut self.reader, 64 << 20).read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\n', '\r']).to_owned()))
    }

    /// Sends one command and returns what followed `ok`.
    pub fn command(&mut self, command: &str) -> Result<String, ControlError> {
        self.command_with_timeout(command, COMMAND_TIMEOUT)
    }

    /// [`Control::command`] with its own time bound.
    pub fn command_with_timeout(
        &mut self,
        command: &str,
        timeout: Duration,
    ) -> Result<String, ControlError> {
        let io = |source| ControlError::Io {
            command: short(command),
            source,
        };
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io)?;
        let line = self
            .read_line(timeout)
            .map_err(io)?
            .ok_or(ControlError::Closed {
                command: short(command),
            })?;
        if let Some(rest) = line.strip_prefix("ok") {
            Ok(rest.trim_start().to_owned())
        } else {
            Err(ControlError::Refused {
                command: short(command),
                message: line.strip_prefix("err").unwrap_or(&line).trim().to_owned(),
            })
        }
    }

    /// Sends `transcript` and collects the lines between its `ok transcript N` and `end`.
    pub fn transcript(&mut self) -> Result<Vec<String>, ControlError> {
        let command = "transcript";
        self.writer
            .write_all(b"transcript\n")
            .map_err(|source| ControlError::Io {
                command: command.into(),
                source,
            })?;
        let line = self.next_line(command)?;
        if line.starts_with("ok transcript") {
            return self.lines_to_end(command);
        }
        Err(ControlError::Refused {
            command: command.into(),
            message: line.strip_prefix("err").unwrap_or(&line).trim().to_owned(),
        })
    }

    /// The next line of an answer to `command`.
    fn next_line(&mut self, command: &str) -> Result<String, ControlError> {
        self.read_line(COMMAND_TIMEOUT)
            .map_err(|source| ControlError::Io {
                command: command.into(),
                source,
            })?
            .ok_or(ControlError::Closed {
                command: command.into(),
            })
    }

    /// The lines of a transcript, up to its `end`.
    fn lines_to_end(&mut self, command: &str) -> Result<Vec<String>, ControlError> {
        let mut lines = Vec::new();
        loop {
            let line = self.next_line(command)?;
            if line == "end" {
                return Ok(lines);
            }
            lines.push(line);
        }
    }
}

/// The end of a case run by the mock inside the guest.
#[derive(Debug)]
pub struct CaseEnd {
    /// The in-guest mock's transcript lines.
    pub transcript: Vec<String>,
    /// The case powered the VM off (the guest sent its transcript unasked, then went).
    pub vm_exit: bool,
}

impl Control {
    /// Shuts the in-guest mock down and fetches its transcript; when the case powered the
    /// VM off, takes the transcript the guest sent before it went.
    pub fn finish_case(&mut self) -> Result<CaseEnd, ControlError> {
        let command = "unload";
        // The guest may be gone already (its last words are still in the socket).
        let _ = self.writer.write_all(b"unload\ntranscript\n");
        loop {
            let line = self.next_line(command)?;
            let vm_exit = line == "vm-exit";
            if vm_exit || line.starts_with("ok transcript") {
                let transcript = self.lines_to_end(command)?;
                return Ok(CaseEnd {
                    transcript,
                    vm_exit,
                });
            }
            if let Some(message) = line.strip_prefix("err") {
                return Err(ControlError::Refused {
                    command: command.into(),
                    message: message.trim().to_owned(),
                });
            }
            // "ok unloaded ...": the transcript follows.
        }
    }
}

fn short(command: &str) -> String {
    command.chars().take(40).collect()
}
