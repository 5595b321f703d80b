//! Client command templates: `{socket}`, `{request}`, `{execute}`, `{arguments}`,
//! `{timeout_ms}` and `{timeout_s}` are replaced by shell-quoted values, and the result runs
//! through `sh -c`.
//!
//! Only a brace pair around a lower-case name (`{name}`) is a placeholder, so shell and
//! awk braces (`${VAR}`, `{ print $1 }`, `{a,b}`) pass through; `{{` and `}}` write a literal
//! brace. A lower-case name that is not a placeholder is an error, so a typo such as
//! `{sokcet}` is caught before anything runs.

use std::fmt;

/// A value a template can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// The agent's unix socket path.
    Socket,
    /// The whole request, compact JSON: `{"execute": ..., "arguments": ...}`.
    Request,
    /// The command name.
    Execute,
    /// The arguments as a JSON object (`{}` when the step has none).
    Arguments,
    /// The step's timeout in milliseconds.
    TimeoutMs,
    /// The step's timeout in whole seconds, rounded up (at least 1).
    TimeoutS,
}

impl Placeholder {
    const ALL: [Placeholder; 6] = [
        Placeholder::Socket,
        Placeholder::Request,
        Placeholder::Execute,
        Placeholder::Arguments,
        Placeholder::TimeoutMs,
        Placeholder::TimeoutS,
    ];

    /// The placeholders of a oneshot template (one process per step).
    pub const ONESHOT: &'static [Placeholder] = &Self::ALL;
    /// The placeholders of a session template (one process per case).
    pub const SESSION: &'static [Placeholder] = &[Placeholder::Socket];

    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Socket => "socket",
            Placeholder::Request => "request",
            Placeholder::Execute => "execute",
            Placeholder::Arguments => "arguments",
            Placeholder::TimeoutMs => "timeout_ms",
            Placeholder::TimeoutS => "timeout_s",
        }
    }

    fn from_name(name: &str) -> Option<Placeholder> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Why a template was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{flag}: unknown placeholder {{{name}}} at byte {at}{suggestion}; the placeholders are {valid}")]
    Unknown {
        flag: &'static str,
        name: String,
        at: usize,
        suggestion: String,
        valid: String,
    },
    #[error("{flag}: placeholder {{{name}}} is not available here: {why}")]
    NotAvailable {
        flag: &'static str,
        name: String,
        why: String,
    },
    #[error("{flag}: the command is empty")]
    Empty { flag: &'static str },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A parsed command template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// The values of one rendering.
#[derive(Clone, Debug, Default)]
pub struct Values<'a> {
    pub socket: &'a str,
    pub request: &'a str,
    pub execute: &'a str,
    pub arguments: &'a str,
    pub timeout_ms: u64,
}

impl Template {
    /// Parses `source`; `flag` names the option in errors, `allowed` are the placeholders
    /// that make sense for it.
    pub fn parse(
        source: &str,
        flag: &'static str,
        allowed: &[Placeholder],
    ) -> Result<Template, TemplateError> {
        if source.trim().is_empty() {
            return Err(TemplateError::Empty { flag });
        }
        let bytes = source.as_bytes();
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &source[i..];
            if rest.starts_with("{{") || rest.starts_with("}}") {
                text.push_str(&rest[..1]);
                i += 2;
                continue;
            }
            if rest.starts_with("${") {
                // A shell parameter expansion: copy it to its closing brace.
                let end = rest.find('}').map_or(rest.len(), |e| e + 1);
                text.push_str(&rest[..end]);
                i += end;
                continue;
            }
            if bytes[i] == b'{' {
                let name_len = rest[1..]
                    .bytes()
                    .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
                    .count();
                if name_len > 0 && rest.as_bytes().get(1 + name_len) == Some(&b'}') {
                    let name = &rest[1..1 + name_len];
                    let placeholder = Placeholder::from_name(name).ok_or_else(|| {
                        let names: Vec<&str> = allowed.iter().map(|p| p.name()).collect();
                        TemplateError::Unknown {
                            flag,
                            name: name.to_owned(),
                            at: i,
                            suggestion: crate::fault::spec::suggest(name, &names),
                            valid: names
                                .iter()
                                .map(|n| format!("{{{n}}}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                        }
                    })?;
                    if !allowed.contains(&placeholder) {
                        return Err(TemplateError::NotAvailable {
                            flag,
                            name: name.to_owned(),
                            why: "a session client is started once per case, so only {socket} is known then; the steps arrive as JSON lines on its stdin".to_owned(),
                        });
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Value(placeholder));
                    i += name_len + 2;
                    continue;
                }
            }
            let c = rest.chars().next().unwrap_or_default();
            text.push(c);
            i += c.len_utf8().max(1);
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template uses a placeholder.
    pub fn uses(&self, placeholder: Placeholder) -> bool {
        self.parts.contains(&Part::Value(placeholder))
    }

    /// The command line with every placeholder replaced by its shell-quoted value.
    pub fn render(&self, values: &Values<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(p) => {
                    let value = match p {
                        Placeholder::Socket => values.socket.to_owned(),
                        Placeholder::Request => values.request.to_owned(),
                        Placeholder::Execute => values.execute.to_owned(),
                        Placeholder::Arguments => values.arguments.to_owned(),
                        Placeholder::TimeoutMs => values.timeout_ms.to_string(),
                        Placeholder::TimeoutS => {
                            values.timeout_ms.div_ceil(1000).max(1).to_string()
                        }
                    };
                    out.push_str(&shell_quote(&value));
                }
            }
        }
        out
    }

    /// The program the command runs first, when it is a plain word (for an early "not
    /// found" check); `None` when the command starts with shell syntax.
    pub fn program(&self) -> Option<&str> {
        let Part::Text(text) = self.parts.first()? else {
            return None;
        };
        let trimmed = text.trim_start();
        let word_end = trimmed
            .find(|c: char| c.is_whitespace())
            .unwrap_or(trimmed.len());
        let word = &trimmed[..word_end];
        // The word must end before a placeholder or be followed by whitespace.
        if word.len() == trimmed.len() && self.parts.len() > 1 {
            return None;
        }
        let plain = !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
            && !word.contains('=');
        plain.then_some(word)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Quotes a value for `sh` (plain words stay as they are), with `shlex`. A NUL byte
/// cannot be quoted, nor reach a command line at all: such a value is left as it is, and
/// starting the command fails with an error that names the NUL.
pub fn shell_quote(value: &str) -> String {
    shlex::try_quote(value).map_or_else(|_| value.to_owned(), std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn values() -> Values<'static> {
        Values {
            socket: "/tmp/a b/qga.sock",
            request: r#"{"execute":"guest-ping"}"#,
            execute: "guest-ping",
            arguments: "{}",
            timeout_ms: 1500,
        }
    }

    #[rstest]
    #[case(
        "call --socket {socket} {execute}",
        "call --socket '/tmp/a b/qga.sock' guest-ping"
    )]
    #[case("echo {request}", r#"echo '{"execute":"guest-ping"}'"#)]
    #[case("t {timeout_ms} {timeout_s}", "t 1500 2")]
    #[case("awk '{ print $1 }' ${HOME} {{x}}", "awk '{ print $1 }' ${HOME} {x}")]
    #[case("echo {a,b} {}", "echo {a,b} {}")]
    fn rendering(#[case] template: &str, #[case] expected: &str) {
        let t = Template::parse(template, "--client", Placeholder::ONESHOT).expect("parses");
        assert_eq!(t.render(&values()), expected);
    }

    #[test]
    fn quoting_survives_the_shell() {
        let tricky = "it's $(rm -rf /) `x` \"q\" \\ end";
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(tricky)))
            .output()
            .expect("sh runs");
        assert_eq!(output.stdout, tricky.as_bytes());
    }

    #[test]
    fn an_unknown_placeholder_is_named_with_a_suggestion() {
        let e = Template::parse("x {sokcet}", "--client", Placeholder::ONESHOT)
            .expect_err("rejected")
            .to_string();
        assert!(e.contains("unknown placeholder {sokcet}"), "{e}");
        assert!(e.contains("did you mean 'socket'"), "{e}");
        assert!(e.contains("{timeout_ms}"), "{e}");
    }

    #[test]
    fn a_session_template_only_knows_the_socket() {
        let e = Template::parse(
            "x {socket} {execute}",
            "--client-session",
            Placeholder::SESSION,
        )
        .expect_err("rejected")
        .to_string();
        assert!(e.contains("{execute} is not available"), "{e}");
        assert!(Template::parse("x {socket}", "--client-session", Placeholder::SESSION).is_ok());
    }

    #[rstest]
    #[case("socat -t 2 - UNIX-CONNECT:{socket}", Some("socat"))]
    #[case("  ./client.py {socket}", Some("./client.py"))]
    #[case("FOO=1 prog", None)]
    #[case("printf '%s' {request} | socat", Some("printf"))]
    #[case("{socket}", None)]
    #[case("(cd x && y)", None)]
    fn the_program_is_found_when_plain(#[case] template: &str, #[case] program: Option<&str>) {
        let t = Template::parse(template, "--client", Placeholder::ONESHOT).expect("parses");
        assert_eq!(t.program(), program);
    }
}
