//! What a client said when a campaign's case caught it: the cause behind a kind.
//!
//! A campaign groups its findings by kind, so it writes one minimal scenario per kind,
//! not one per case. But one kind can hide several bugs: a client library that ends its
//! connection on an id-less error, on a non-JSON line and on invalid UTF-8 shows all
//! three as `needless-failure`. The cause is the client's own report of the failing step
//! (its failure class and message) or, for a broken client, what broke it, with the parts
//! that change from case to case taken out (numbers, quoted data, the step's command),
//! so that the same bug gives the same cause and a campaign can count each and keep one
//! case of each.

use super::campaign::failed_steps;
use crate::runner::{Answer, CaseResult};

/// Longest cause kept, in characters: enough to tell exceptions and messages apart.
const MAX_CAUSE_CHARS: usize = 160;

/// The cause behind `kind` in `result`, for the kinds where the client reported why it
/// failed or how it broke: `needless-failure` (the first failing step's client error),
/// `crash`, `exited`, `hang` and `malformed-answer` (the first broken step). `None` for a
/// duty or a wrong result, whose finding already names what went wrong.
pub fn cause(result: &CaseResult, kind: &str) -> Option<String> {
    let steps = &result.run.steps;
    match kind {
        "needless-failure" => failed_steps(result).find_map(|step| match &step.answer {
            Answer::ClientError { class, desc } => {
                Some(format!("{class:?}: {}", signature(desc, &step.execute)))
            }
            _ => None,
        }),
        "crash" | "exited" | "hang" | "malformed-answer" => {
            steps.iter().find_map(|step| match &step.answer {
                Answer::Broken { detail, .. } => Some(signature(detail, &step.execute)),
                _ => None,
            })
        }
        _ => None,
    }
}

/// `text` without what varies between cases of one bug: the step's command (as the
/// wire spells it and as a typed API does, `guest_info`) becomes `CMD`, a run of digits
/// `N`, and quoted data (a raw line, a number, a drawn desc) `…`; white space is
/// collapsed and the result cut to a bounded length. Quoted words stay: they are the
/// message (qapi's `error: "unknown QAPI response with ID None"`) or the keys of a reply
/// shown whole; of a message followed by data, its words (`quoted`).
pub fn signature(text: &str, command: &str) -> String {
    let text = text
        .replace(command, "CMD")
        .replace(&command.replace('-', "_"), "CMD");
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '0'..='9' => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                out.push('N');
            }
            '\'' | '"' | '‘' | '“' | '`' => {
                let close = match c {
                    '‘' => '’',
                    '“' => '”',
                    _ => c,
                };
                // The closing quote is the first one not escaped with a backslash. An
                // apostrophe in running text (`can't`) has none: keep it.
                let mut escaped = false;
                let Some(length) = chars.clone().position(|d| {
                    let closes = d == close && !escaped;
                    escaped = d == '\\' && !escaped;
                    closes
                }) else {
                    out.push(c);
                    continue;
                };
                let inner: String = chars.by_ref().take(length).collect();
                chars.next();
                out.push(c);
                out.push_str(&quoted(&inner));
                out.push(close);
            }
            c if c.is_whitespace() => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            c => out.push(c),
        }
    }
    let out = out.trim();
    match out.char_indices().nth(MAX_CAUSE_CHARS) {
        Some((cut, _)) => format!("{}…", &out[..cut]),
        None => out.to_owned(),
    }
}

/// Quoted text as a cause shows it: words (letters, spaces, `-`, `_`) whole; text that
/// starts with two words or more, those words and `…` (a message with data after it:
/// `unknown QAPI response with ID Some…`); anything else, data, as `…`.
fn quoted(inner: &str) -> String {
    let is_word = |d: char| d.is_alphabetic() || matches!(d, ' ' | '-' | '_');
    if inner.chars().all(is_word) {
        return inner.to_owned();
    }
    let lead = inner[..inner.find(|d: char| !is_word(d)).unwrap_or(0)].trim_end();
    if lead.split_whitespace().count() >= 2 {
        format!("{lead}…")
    } else {
        "…".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::signature;
    use rstest::rstest;

    #[rstest]
    // qemu.qmp through its adapter: a reply shown whole, its drawn desc is data.
    #[case(
        "call: ExecInterruptedError: Disconnected; cause: ServerParseError: Server sent a \
         message without an ID: {'error': {'class': 'GenericError', 'desc': 'foreign 12'}}",
        "guest-ping",
        "call: ExecInterruptedError: Disconnected; cause: ServerParseError: Server sent a \
         message without an ID: {'error': {'class': 'GenericError', 'desc': '…'}}"
    )]
    // qapi through its adapter: the typed command's name, and the message in quotes.
    #[case(
        "guest_info: QAPI stream disconnected (QAPI stream closed with error Custom { kind: \
         InvalidData, error: \"unknown QAPI response with ID None\" })",
        "guest-info",
        "CMD: QAPI stream disconnected (QAPI stream closed with error Custom { kind: \
         InvalidData, error: \"unknown QAPI response with ID None\" })"
    )]
    #[case(
        "guest_sync: QAPI stream disconnected (QAPI stream closed with error Custom { kind: \
         InvalidData, error: \"unknown QAPI response with ID Some(String(\\\"old\\\"))\" })",
        "guest-ping",
        "guest_sync: QAPI stream disconnected (QAPI stream closed with error Custom { kind: \
         InvalidData, error: \"unknown QAPI response with ID Some…\" })"
    )]
    #[case(
        "guest_get_host_name: no reply within 1200 ms",
        "guest-get-host-name",
        "CMD: no reply within N ms"
    )]
    #[case(
        "guest_file_read: invalid type: integer `42`, expected struct GuestFileRead",
        "guest-file-read",
        "CMD: invalid type: integer `…`, expected struct GuestFileRead"
    )]
    #[case(
        "exit status 1: can't read \"x\"",
        "guest-ping",
        "exit status N: can't read \"x\""
    )]
    #[case("  spaced\n\tout  ", "guest-ping", "spaced out")]
    fn varying_parts_are_taken_out(
        #[case] text: &str,
        #[case] command: &str,
        #[case] expected: &str,
    ) {
        assert_eq!(signature(text, command), expected);
    }

    #[test]
    fn one_bug_gives_one_cause_whatever_its_numbers_and_values() {
        let a = signature(
            "call: ExecInterruptedError; cause: DeserializationError: Failed to deserialize \
             QMP message.\n  raw bytes were: b'\\xff{\"return\": 1234}'",
            "guest-sync",
        );
        let b = signature(
            "call: ExecInterruptedError; cause: DeserializationError: Failed to deserialize \
             QMP message.\n  raw bytes were: b'garbage 99!'",
            "guest-ping",
        );
        assert_eq!(a, b);
    }

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary() {
        let text = "é".repeat(500);
        let cut = signature(&text, "guest-ping");
        assert_eq!(cut.chars().count(), super::MAX_CAUSE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
