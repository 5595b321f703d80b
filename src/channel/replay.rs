//! Turning a transcript back into the agent side of a scenario, so that a failure seen
//! once can be run again: the mock records its whole setup (profile, transport, version,
//! lists, seed, state, and the fault rules loaded at start) in the transcript's
//! `agent-setup` record, and the same seed with the same client bytes gives the same
//! agent bytes.
//!
//! Rules changed over the control socket while the mock ran are recorded too
//! (`rule-added`, `rule-removed`, `rules-cleared`) but are not part of the replay: their
//! timing relative to the client is not in the setup. [`Replay::runtime_changes`] counts
//! them so a caller can say so.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::scenario::{AgentSetup, Scenario};

/// The agent-setup record is the second line; a transcript without one in its first lines
/// was not written by a mock that records it.
const SETUP_WITHIN: usize = 16;

/// Why a transcript could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{}: cannot read the transcript", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{}: no agent-setup record in the first {SETUP_WITHIN} lines; replay needs a transcript written by `qga-harness mock --transcript`",
        path.display()
    )]
    NoSetup { path: PathBuf },
}

/// The agent side a transcript recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub agent: AgentSetup,
    /// Rules added, removed or cleared at run time, which the replay leaves out.
    pub runtime_changes: usize,
}

impl Replay {
    /// Reads the agent setup from a transcript file.
    pub fn from_transcript(path: &Path) -> Result<Replay, ReplayError> {
        let read_error = |source| ReplayError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut agent = None;
        let mut runtime_changes = 0;
        for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
            let line = line.map_err(read_error)?;
            let number = index + 1;
            if agent.is_none() {
                if number > SETUP_WITHIN {
                    return Err(ReplayError::NoSetup {
                        path: path.to_owned(),
                    });
                }
                agent = setup_of(&line).map_err(|message| ReplayError::Invalid {
                    path: path.to_owned(),
                    line: number,
                    message,
                })?;
                continue;
            }
            // A cheap look before any parsing: the transcript may hold gigabytes of bytes.
            const MARKERS: [&[u8]; 3] = [
                b"\"event\":\"rule-added\"",
                b"\"event\":\"rule-removed\"",
                b"\"event\":\"rules-cleared\"",
            ];
            if MARKERS
                .iter()
                .any(|m| line.windows(m.len()).any(|w| w == *m))
            {
                runtime_changes += 1;
            }
        }
        match agent {
            Some(agent) => Ok(Replay {
                agent,
                runtime_changes,
            }),
            None => Err(ReplayError::NoSetup {
                path: path.to_owned(),
            }),
        }
    }

    /// A scenario file with this agent side and no steps: the client side is the
    /// caller's to write.
    #[must_use]
    pub fn scenario(&self, transcript: &Path) -> Scenario {
        Scenario {
            id: "replay.1".into(),
            title: format!("The agent of {}", transcript.display()),
            requirement: "Replays the agent side recorded in a transcript; add the client's steps and what they must give.".into(),
            grounding: vec![format!("transcript {}", transcript.display())],
            tags: vec!["replay".into()],
            agent: self.agent.clone(),
            steps: Vec::new(),
            duties: Vec::new(),
            recommended: Vec::new(),
            single_connection: false,
            other_client: None,
            info: Some("recorded agent, no expectations yet".into()),
            no_mutant: None,
            timing_sensitive: None,
        }
    }
}

/// The agent setup of one transcript line, if it is the agent-setup record.
fn setup_of(line: &[u8]) -> Result<Option<AgentSetup>, String> {
    if !line
        .windows(b"\"agent-setup\"".len())
        .any(|w| w == b"\"agent-setup\"")
    {
        return Ok(None);
    }
    let record: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not a transcript line: {e}"))?;
    if record.get("event").and_then(serde_json::Value::as_str) != Some("agent-setup") {
        return Ok(None);
    }
    let agent = record
        .get("agent")
        .cloned()
        .ok_or("the agent-setup record has no \"agent\"")?;
    serde_json::from_value(agent).map(Some).map_err(|e| {
        format!("the agent-setup record's \"agent\" is not a scenario's agent side: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_and_runtime_changes_are_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"t_us\":0,\"event\":\"mock-started\",\"detail\":\"virtio-serial\"}\n",
                "{\"t_us\":0,\"event\":\"agent-setup\",\"agent\":{\"seed\":9,\"faults\":[{\"when\":{\"command\":\"guest-ping\"},\"do\":[{\"action\":\"hang\"}]}]},\"seed\":9}\n",
                "{\"t_us\":5,\"conn\":1,\"dir\":\"in\",\"text\":\"{}\"}\n",
                "{\"t_us\":9,\"event\":\"rule-added\",\"rule\":2}\n",
            ),
        )
        .expect("write");
        let replay = Replay::from_transcript(&path).expect("replay");
        assert_eq!(replay.agent.seed, Some(9));
        assert_eq!(replay.agent.faults.len(), 1);
        assert_eq!(replay.runtime_changes, 1);
        let scenario = replay.scenario(&path);
        assert_eq!(scenario.agent, replay.agent);
    }

    #[test]
    fn a_transcript_without_a_setup_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "{\"t_us\":0,\"event\":\"mock-started\"}\n").expect("write");
        let e = Replay::from_transcript(&path).expect_err("no setup");
        assert!(e.to_string().contains("no agent-setup record"), "{e}");
        std::fs::write(
            &path,
            "{\"t_us\":0,\"event\":\"agent-setup\",\"agent\":{\"sead\":1}}\n",
        )
        .expect("write");
        let e = Replay::from_transcript(&path).expect_err("bad setup");
        assert!(e.to_string().contains(":1: "), "{e}");
        assert!(e.to_string().contains("sead"), "{e}");
    }
}
