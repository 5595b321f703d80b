//! The state the agent and its channel start in: one type for the library's builder, the
//! scenario files (`agent.state`), the command line and the channel that carries it out.

use std::time::Duration;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The state the agent and the channel are in when the client connects.
///
/// The scenario files spell it as the `agent.state` object; the builder's `start_delay`,
/// `start_manually`, `frozen`, `parser_input` and `pending_output` set its fields, and
/// `start_state` sets it whole.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use qga_harness::{MockAgent, StartState};
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// // Arrange: an agent not started yet, with a previous client's half request in its
/// // parser, as a scenario file's `agent.state` gives it.
/// let state: StartState = serde_json::from_str(
///     r#"{"started": false, "parser_input": "{\"execute\":\"guest-sync\",\"arguments\":{\"id\":5}"}"#,
/// )?;
/// assert_eq!(state.parser_input.as_deref(), Some(&br#"{"execute":"guest-sync","arguments":{"id":5}"#[..]));
/// let mock = MockAgent::builder().start_state(state).start().await?;
///
/// // Act: the agent starts, and the next client's first byte completes the request.
/// mock.life().start().await?;
/// let mut client = tokio::net::UnixStream::connect(mock.socket_path()).await?;
/// client.write_all(b"}").await?;
/// let mut reply = String::new();
/// BufReader::new(client).read_line(&mut reply).await?;
///
/// // Assert
/// assert_eq!(reply, "{\"return\": 5}\n");
/// # Ok(())
/// # }
/// ```
// The schema keeps the name and the description it had when the scenario model had a type
// of its own: `qga-harness schema scenario` gives the same schema as before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "AgentState",
    description = "The state the agent and the channel are in when the client connects."
)]
pub struct StartState {
    /// The agent starts this long after the socket exists (the guest is still booting).
    /// Under the scenario runner the delay counts from when the client begins its first
    /// step, so a client's own start-up time does not shorten it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_delay_ms: Option<u64>,
    /// False: the agent never starts by itself (installed but not running).
    #[serde(default = "yes")]
    pub started: bool,
    /// The previous agent instance exited with the filesystems frozen.
    #[serde(default)]
    pub frozen: bool,
    /// Bytes a previous client left in the agent's parser (e.g. half a request).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text_or_base64"
    )]
    #[schemars(with = "Option<Bytes>")]
    pub parser_input: Option<Vec<u8>>,
    /// Bytes waiting in the channel for the next client (stale replies of a previous one).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "text_or_base64"
    )]
    #[schemars(with = "Option<Bytes>")]
    pub pending_output: Option<Vec<u8>>,
}

impl Default for StartState {
    fn default() -> Self {
        Self {
            start_delay_ms: None,
            started: true,
            frozen: false,
            parser_input: None,
            pending_output: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// When the first agent process starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AgentStart {
    Now,
    /// After the guest's boot time.
    After(Duration),
    /// Only when [`super::AgentLife::start`] is called.
    Manually,
}

impl StartState {
    /// When the first agent process starts: a state that does not start by itself has no
    /// delay to wait.
    pub(crate) fn first_start(&self) -> AgentStart {
        match self.start_delay_ms {
            _ if !self.started => AgentStart::Manually,
            Some(ms) if ms > 0 => AgentStart::After(Duration::from_millis(ms)),
            _ => AgentStart::Now,
        }
    }

    /// The agent starts by itself, later than the socket exists.
    pub(crate) fn starts_late(&self) -> bool {
        matches!(self.first_start(), AgentStart::After(_))
    }

    /// Starts the agent `delay` after the socket exists (whole milliseconds, a part of one
    /// counting as one, so a short delay is not lost).
    pub(crate) fn set_start_delay(&mut self, delay: Duration) {
        let ms = delay.as_nanos().div_ceil(1_000_000);
        self.started = true;
        self.start_delay_ms = (ms > 0).then(|| u64::try_from(ms).unwrap_or(u64::MAX));
    }
}

/// Bytes in a scenario: UTF-8 text, or base64 for anything else.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum Bytes {
    Text(String),
    Base64 {
        /// Standard base64 of the bytes.
        base64: String,
    },
}

/// Reads and writes `Option<Vec<u8>>` as [`Bytes`]: text when the bytes are printable
/// UTF-8 (tab, LF and CR allowed), else base64; base64 that does not decode is refused
/// while the file is read, where the loader can say where.
mod text_or_base64 {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        bytes.as_deref().map(encode).serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<Bytes>::deserialize(deserializer)? {
            None => Ok(None),
            Some(Bytes::Text(text)) => Ok(Some(text.into_bytes())),
            Some(Bytes::Base64 { base64 }) => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("base64 does not decode: {e}"))),
        }
    }

    fn encode(bytes: &[u8]) -> Bytes {
        match std::str::from_utf8(bytes) {
            Ok(text)
                if !text
                    .chars()
                    .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) =>
            {
                Bytes::Text(text.to_owned())
            }
            _ => Bytes::Base64 {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }
}
