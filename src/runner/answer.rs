//! What a client answered for one step, in adapter-neutral form, and how an answer is
//! read from a oneshot client's output or a session client's line.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::scenario::ClientErrorClass;

/// A client-side failure class (the adapter contract's `Timeout`, `Disconnected`,
/// `Protocol`), or a failure the client did not classify (a oneshot client that exited
/// non-zero without an error object).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FailureClass {
    Timeout,
    Disconnected,
    Protocol,
    Unclassified,
}

impl FailureClass {
    pub(crate) fn from_class(class: &str) -> Option<FailureClass> {
        match class {
            "Timeout" => Some(FailureClass::Timeout),
            "Disconnected" => Some(FailureClass::Disconnected),
            "Protocol" => Some(FailureClass::Protocol),
            _ => None,
        }
    }

    /// Whether an expected class admits this failure. An unclassified failure counts as a
    /// timeout when it came no earlier than the step's timeout (a CLI that gave up at its
    /// deadline), and as `Any` always.
    pub fn satisfies(self, expected: ClientErrorClass, elapsed_ms: f64, timeout_ms: u64) -> bool {
        match (expected, self) {
            (ClientErrorClass::Any, _) => true,
            (ClientErrorClass::Timeout, FailureClass::Timeout) => true,
            (ClientErrorClass::Timeout, FailureClass::Unclassified) => {
                elapsed_ms >= timeout_ms as f64
            }
            (ClientErrorClass::Disconnected, FailureClass::Disconnected) => true,
            (ClientErrorClass::Protocol, FailureClass::Protocol) => true,
            _ => false,
        }
    }
}

/// Why a client gave no usable answer (it broke the adapter contract, crashed or hung).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokenKind {
    /// It did not answer within the step's timeout plus the runner's grace, and was killed.
    Hung,
    /// It exited (or closed its output) before answering.
    Exited,
    /// It crashed (ended by a signal the runner did not send).
    Crashed,
    /// Its output was not an answer (not JSON, the wrong id, an empty success).
    Malformed,
    /// The command was not found or not executable (exit 127 or 126).
    NotFound,
    /// It could not be started at all.
    Spawn,
}

/// What the client answered for a step.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Answer {
    /// A return value.
    Return { value: Value },
    /// An error the agent sent (its class kept).
    AgentError { class: String, desc: String },
    /// A failure of the client itself.
    ClientError { class: FailureClass, desc: String },
    /// No usable answer.
    Broken { why: BrokenKind, detail: String },
    /// The step did not run (an earlier step broke the client).
    NotRun { detail: String },
}

impl Answer {
    pub(crate) fn broken(why: BrokenKind, detail: impl Into<String>) -> Answer {
        Answer::Broken {
            why,
            detail: detail.into(),
        }
    }

    /// Reads a reply object (`{"return": V}` or `{"error": {"class": C, "desc": D}}`, with
    /// any `id`): the shared part of both adapter forms.
    fn from_reply(map: &Map<String, Value>) -> Option<Answer> {
        match (map.get("return"), map.get("error")) {
            (Some(value), None) => Some(Answer::Return {
                value: value.clone(),
            }),
            (None, Some(error)) => {
                let class = error
                    .get("class")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let desc = match error.get("desc") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None if error.is_object() => String::new(),
                    None => error.to_string(),
                };
                Some(match FailureClass::from_class(&class) {
                    Some(class) => Answer::ClientError { class, desc },
                    None => Answer::AgentError { class, desc },
                })
            }
            _ => None,
        }
    }

    /// Reads a session client's answer line for request `id`.
    pub fn from_session_line(line: &[u8], id: u64) -> Answer {
        let text = String::from_utf8_lossy(line);
        let Ok(value) = serde_json::from_slice::<Value>(line) else {
            return Answer::broken(
                BrokenKind::Malformed,
                format!("answered a line that is not JSON: {}", excerpt(&text)),
            );
        };
        let Value::Object(map) = value else {
            return Answer::broken(
                BrokenKind::Malformed,
                format!("answered a line that is not an object: {}", excerpt(&text)),
            );
        };
        match map.get("id") {
            Some(got) if got.as_u64() == Some(id) => {}
            Some(got) => {
                return Answer::broken(
                    BrokenKind::Malformed,
                    format!("answered id {got} to request {id}: {}", excerpt(&text)),
                )
            }
            None => {
                return Answer::broken(
                    BrokenKind::Malformed,
                    format!(
                        "answered without \"id\" (expected {id}): {}",
                        excerpt(&text)
                    ),
                )
            }
        }
        Answer::from_reply(&map).unwrap_or_else(|| {
            Answer::broken(
                BrokenKind::Malformed,
                format!(
                    "answered neither \"return\" nor an \"error\" alone: {}",
                    excerpt(&text)
                ),
            )
        })
    }

    /// Reads a oneshot client's result: its exit code and what it printed. Printing
    /// nothing is no answer, even for a command that has no reply (guest-shutdown): a
    /// success prints `{}`, so a client that got nothing at all and still exits 0 (the
    /// bare socat pipeline) is not taken for one that knows the command succeeded.
    pub fn from_oneshot(code: i32, stdout: &[u8], stderr: &[u8]) -> Answer {
        if code == 127 || code == 126 {
            let what = if code == 127 {
                "not found"
            } else {
                "not executable"
            };
            return Answer::broken(
                BrokenKind::NotFound,
                format!(
                    "the client command was {what} (exit {code}): {}",
                    excerpt(&String::from_utf8_lossy(stderr))
                ),
            );
        }
        let out = String::from_utf8_lossy(stdout);
        let printed = out.trim();
        let err = excerpt(String::from_utf8_lossy(stderr).trim());
        if printed.is_empty() {
            return if code != 0 {
                Answer::ClientError {
                    class: FailureClass::Unclassified,
                    desc: format!("exit {code}, nothing on stdout; stderr: {err}"),
                }
            } else {
                Answer::broken(
                    BrokenKind::Malformed,
                    format!(
                        "exited 0 and printed nothing (a success prints its reply, `{{}}` for a command with no reply); stderr: {err}"
                    ),
                )
            };
        }
        let parsed = serde_json::from_str::<Value>(printed);
        let Ok(value) = parsed else {
            return if code != 0 {
                Answer::ClientError {
                    class: FailureClass::Unclassified,
                    desc: format!("exit {code}; stdout: {}", excerpt(printed)),
                }
            } else {
                Answer::broken(
                    BrokenKind::Malformed,
                    format!(
                        "exited 0 and printed what is not JSON: {}",
                        excerpt(printed)
                    ),
                )
            };
        };
        if let Value::Object(map) = &value {
            let reply_keys = map
                .keys()
                .all(|k| matches!(k.as_str(), "return" | "error" | "id"));
            if reply_keys && (map.contains_key("return") || map.contains_key("error")) {
                if map.contains_key("return") && map.contains_key("error") {
                    return Answer::broken(
                        BrokenKind::Malformed,
                        format!(
                            "printed both \"return\" and \"error\": {}",
                            excerpt(printed)
                        ),
                    );
                }
                return match Answer::from_reply(map) {
                    Some(Answer::Return { .. }) if code != 0 => Answer::ClientError {
                        class: FailureClass::Unclassified,
                        desc: format!("exit {code} although it printed a return value"),
                    },
                    Some(answer) => answer,
                    None => Answer::broken(BrokenKind::Malformed, excerpt(printed)),
                };
            }
        }
        if code != 0 {
            return Answer::ClientError {
                class: FailureClass::Unclassified,
                desc: format!("exit {code}; stdout: {}", excerpt(printed)),
            };
        }
        Answer::Return { value }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Return { value } => write!(f, "return {}", excerpt(&value.to_string())),
            Answer::AgentError { class, desc } => {
                write!(f, "agent error {class}: {}", excerpt(desc))
            }
            Answer::ClientError { class, desc } => {
                write!(f, "client error {class:?}: {}", excerpt(desc))
            }
            Answer::Broken { why, detail } => {
                let what = match why {
                    BrokenKind::Hung => "no answer (hung)",
                    BrokenKind::Exited => "no answer (exited)",
                    BrokenKind::Crashed => "no answer (crashed)",
                    BrokenKind::Malformed => "no valid answer",
                    BrokenKind::NotFound => "client not runnable",
                    BrokenKind::Spawn => "client not started",
                };
                write!(f, "{what}: {detail}")
            }
            Answer::NotRun { detail } => write!(f, "not run: {detail}"),
        }
    }
}

fn excerpt(text: &str) -> String {
    crate::transcript::excerpt(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    #[rstest]
    #[case(0, "{\"return\": {}}\n", Answer::Return { value: json!({}) })]
    #[case(0, "{\"return\": 5, \"id\": 1}", Answer::Return { value: json!(5) })]
    #[case(0, "\"bare\"", Answer::Return { value: json!("bare") })]
    #[case(0, "{\"host-name\": \"vm\"}", Answer::Return { value: json!({"host-name": "vm"}) })]
    #[case(1, "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"x\"}}",
        Answer::AgentError { class: "CommandNotFound".into(), desc: "x".into() })]
    #[case(1, "{\"error\": {\"class\": \"Timeout\", \"desc\": \"t\"}}",
        Answer::ClientError { class: FailureClass::Timeout, desc: "t".into() })]
    fn oneshot_outputs(#[case] code: i32, #[case] stdout: &str, #[case] expected: Answer) {
        assert_eq!(Answer::from_oneshot(code, stdout.as_bytes(), b""), expected);
    }

    #[rstest]
    #[case(0, "", "Malformed")]
    #[case(0, "\n  \n", "Malformed")]
    #[case(0, "\u{ff}{\"return\": 1}", "Malformed")]
    #[case(0, "not json", "Malformed")]
    #[case(127, "", "NotFound")]
    #[case(2, "", "Unclassified")]
    #[case(2, "garbage", "Unclassified")]
    fn oneshot_failures(#[case] code: i32, #[case] stdout: &str, #[case] kind: &str) {
        let answer = Answer::from_oneshot(code, stdout.as_bytes(), b"boom");
        assert!(format!("{answer:?}").contains(kind), "{answer:?}");
    }

    /// A client that printed nothing and exited 0 did not report a success, not even for
    /// a command that has no reply: it may have got nothing at all.
    #[test]
    fn printing_nothing_is_no_success_even_for_a_no_reply_command() {
        let answer = Answer::from_oneshot(0, b"", b"");
        assert!(
            !matches!(answer, Answer::Return { .. }),
            "nothing printed taken as {answer:?}"
        );
        assert_eq!(
            Answer::from_oneshot(0, b"{}\n", b""),
            Answer::Return { value: json!({}) }
        );
    }

    #[rstest]
    #[case("{\"id\": 3, \"return\": [1]}", "Return")]
    #[case(
        "{\"id\": 3, \"error\": {\"class\": \"Disconnected\", \"desc\": \"eof\"}}",
        "Disconnected"
    )]
    #[case(
        "{\"id\": 3, \"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}",
        "AgentError"
    )]
    #[case("{\"id\": 2, \"return\": 1}", "answered id 2 to request 3")]
    #[case("{\"return\": 1}", "without \\\"id\\\"")]
    #[case("{\"id\": 3}", "neither")]
    #[case("[1]", "not an object")]
    #[case("oops", "not JSON")]
    fn session_lines(#[case] line: &str, #[case] shows: &str) {
        let answer = Answer::from_session_line(line.as_bytes(), 3);
        assert!(format!("{answer:?}").contains(shows), "{answer:?}");
    }

    #[test]
    fn an_unclassified_failure_is_a_timeout_only_after_the_timeout() {
        let u = FailureClass::Unclassified;
        assert!(u.satisfies(ClientErrorClass::Timeout, 310.0, 300));
        assert!(!u.satisfies(ClientErrorClass::Timeout, 10.0, 300));
        assert!(u.satisfies(ClientErrorClass::Any, 10.0, 300));
        assert!(!u.satisfies(ClientErrorClass::Protocol, 10.0, 300));
    }
}
