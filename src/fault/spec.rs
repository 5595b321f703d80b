//! The compact `--fault` syntax.
//!
//! ```text
//! SPEC     := [TRIGGER ':'] ACTION (',' ACTION)*      (a SPEC starting with '{' is a JSON rule)
//! TRIGGER  := SUBJECT MODIFIER* ['[' OPTION (',' OPTION)* ']']
//! SUBJECT  := '*' | command name or glob (guest-ping, guest-fs*) | 'connect' | 'start'
//! MODIFIER := '@' N        the nth matching event only
//!           | '@' N '..'   from the nth on
//!           | '%' K        every k-th
//!           | '~' P        with probability P (0 to 1, seeded)
//!           | '#' N        at most N times
//! OPTION   := after=DURATION | before=DURATION | since=start|connect
//!           | bytes-in=N | bytes-out=N
//! ACTION   := NAME ['=' VALUE]                        (quote a VALUE with ' ' to use , or :)
//! DURATION := N[us|ms|s|m]                            (a bare N is milliseconds)
//! ```
//!
//! Examples: `guest-fsfreeze-freeze:hang`, `guest-ping@3:die-mid-reply=10,restart=500ms`,
//! `*~0.1:delay=50ms..250ms`, `connect:spurious=stale-sync`, `guest-sync*:wrong-sync-id=off-by-one`.

use std::fmt;

use super::rule::{
    Action, Distribution, EventKind, Garbage, Position, RawPosition, Restart, Rule, Since,
    SpuriousKind, Trigger, WrongId,
};

/// A `--fault` spec that does not parse: where, what was found, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub spec: String,
    /// Byte offset of the offending part.
    pub at: usize,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A column may fall inside a character (the parser counts bytes): show the rest
        // from the start of that character rather than panic.
        let mut at = self.at.min(self.spec.len());
        while !self.spec.is_char_boundary(at) {
            at -= 1;
        }
        let rest: String = self.spec[at..].chars().take(24).collect();
        write!(
            f,
            "fault spec '{}', column {} (at '{}'): {}",
            self.spec,
            self.at + 1,
            rest,
            self.message
        )
    }
}

/// Every action name the compact syntax knows, for suggestions.
pub const ACTION_NAMES: &[&str] = &[
    "delay",
    "hang",
    "drip",
    "slice",
    "coalesce",
    "die-before-read",
    "die-after-read",
    "die-mid-reply",
    "restart",
    "vm-exit",
    "close-client",
    "stop-reading",
    "spurious",
    "wrong-sync-id",
    "duplicate",
    "swap",
    "garbage",
    "oversize",
    "flood",
    "nesting-bomb",
    "return",
    "error",
    "error-not-object",
    "return-and-error",
    "neither",
    "reply-to-no-reply",
    "no-reply",
    "raw",
];

/// Parses one `--fault` spec.
pub fn parse(spec: &str) -> Result<Rule, SpecError> {
    let err = |at: usize, message: String| SpecError {
        spec: spec.to_owned(),
        at,
        message,
    };
    if spec.trim_start().starts_with('{') {
        return serde_json::from_str(spec).map_err(|e| {
            err(
                offset_of(spec, e.line(), e.column()),
                format!("invalid JSON rule: {e}"),
            )
        });
    }
    let (trigger, actions_at) = match split_trigger(spec) {
        Some(colon) => (parse_trigger(spec, &spec[..colon])?, colon + 1),
        None => (Trigger::default(), 0),
    };
    let mut actions = Vec::new();
    for (at, item) in split_top_level(spec, actions_at, ',') {
        if item.trim().is_empty() {
            return Err(err(
                at,
                "expected an action, e.g. 'hang' or 'delay=200ms'".into(),
            ));
        }
        actions.push(parse_action(spec, at, item)?);
    }
    Ok(Rule {
        when: trigger,
        actions,
    })
}

/// Offset of a 1-based line and column in `text`.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// The position of the ':' that ends the trigger: the first one outside quotes and
/// brackets, provided what comes before it has no '=' (which only actions have).
fn split_trigger(spec: &str) -> Option<usize> {
    let mut quoted = false;
    let mut depth = 0usize;
    for (i, c) in spec.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => depth = depth.saturating_sub(1),
            '=' if !quoted && depth == 0 => return None,
            ':' if !quoted && depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// Splits `spec[from..]` at `sep` outside quotes and brackets; yields (offset, piece).
fn split_top_level(spec: &str, from: usize, sep: char) -> Vec<(usize, &str)> {
    let mut pieces = Vec::new();
    let mut quoted = false;
    let mut depth = 0usize;
    let mut start = from;
    for (i, c) in spec[from..].char_indices() {
        let i = i + from;
        match c {
            '\'' => quoted = !quoted,
            '[' if !quoted => depth += 1,
            ']' if !quoted => depth = depth.saturating_sub(1),
            c if c == sep && !quoted && depth == 0 => {
                pieces.push((start, &spec[start..i]));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    pieces.push((start, &spec[start..]));
    pieces
}

fn parse_trigger(spec: &str, text: &str) -> Result<Trigger, SpecError> {
    let err = |at: usize, message: String| SpecError {
        spec: spec.to_owned(),
        at,
        message,
    };
    let mut trigger = Trigger::default();
    let (head, options) = match text.find('[') {
        Some(open) => {
            if !text.ends_with(']') {
                return Err(err(
                    text.len(),
                    "expected ']' to close the trigger options".into(),
                ));
            }
            (
                &text[..open],
                Some((open + 1, &text[open + 1..text.len() - 1])),
            )
        }
        None => (text, None),
    };
    let subject_end = head.find(['@', '%', '~', '#']).unwrap_or(head.len());
    let subject = &head[..subject_end];
    match subject {
        "" => {
            return Err(err(
                0,
                "expected a command name, a glob, '*', 'connect' or 'start' before the modifiers"
                    .into(),
            ))
        }
        "*" => {}
        "connect" => trigger.event = EventKind::Connect,
        "start" => trigger.event = EventKind::Start,
        name => {
            if let Some(bad) = name
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '?')))
            {
                return Err(err(
                    bad.0,
                    format!(
                        "unexpected '{}' in a command name (expected letters, digits, '-', '*' or '?', then @N, %K, ~P, #N or [options])",
                        bad.1
                    ),
                ));
            }
            trigger.command = Some(name.to_owned());
        }
    }
    let mut rest = &head[subject_end..];
    let mut at = subject_end;
    while let Some(sigil) = rest.chars().next() {
        let body_end = rest[1..]
            .find(['@', '%', '~', '#'])
            .map_or(rest.len(), |i| i + 1);
        let body = &rest[1..body_end];
        let number = |what: &str| -> Result<u64, SpecError> {
            body.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                err(
                    at + 1,
                    format!("expected a whole number ≥ 1 after '{sigil}' ({what})"),
                )
            })
        };
        match sigil {
            '@' => {
                if let Some(from) = body.strip_suffix("..") {
                    trigger.from = Some(from.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        err(at + 1, "expected a whole number ≥ 1 before '..' (from the nth matching event on)".into())
                    })?);
                } else {
                    trigger.nth = Some(number("the nth matching event")?);
                }
            }
            '%' => trigger.every = Some(number("every k-th matching event")?),
            '#' => trigger.times = Some(number("at most N times")?),
            '~' => {
                let p: f64 = body.parse().map_err(|_| {
                    err(
                        at + 1,
                        "expected a probability from 0 to 1 after '~', e.g. ~0.25".into(),
                    )
                })?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(err(
                        at + 1,
                        format!("probability {p} is not between 0 and 1"),
                    ));
                }
                trigger.probability = Some(p);
            }
            _ => unreachable!("the subject ends at a sigil"),
        }
        at += body_end;
        rest = &rest[body_end..];
    }
    if let Some((options_at, _)) = options {
        let inside = &text[..text.len() - 1];
        for (opt_at, option) in split_top_level(inside, options_at, ',') {
            let (key, value) = option.split_once('=').ok_or_else(|| {
                err(
                    opt_at,
                    "expected KEY=VALUE (after, before, since, bytes-in, bytes-out)".into(),
                )
            })?;
            let value_at = opt_at + key.len() + 1;
            match key {
                "after" => trigger.after_ms = Some(parse_duration_ms(spec, value_at, value)?),
                "before" => trigger.before_ms = Some(parse_duration_ms(spec, value_at, value)?),
                "since" => {
                    trigger.since = match value {
                        "start" => Since::Start,
                        "connect" => Since::Connect,
                        _ => return Err(err(value_at, "expected 'start' or 'connect'".into())),
                    }
                }
                "bytes-in" => trigger.after_bytes_in = Some(parse_count(spec, value_at, value)?),
                "bytes-out" => trigger.after_bytes_out = Some(parse_count(spec, value_at, value)?),
                other => {
                    return Err(err(
                        opt_at,
                        format!(
                            "unknown trigger option '{other}'{}; expected after, before, since, bytes-in or bytes-out",
                            suggest(other, &["after", "before", "since", "bytes-in", "bytes-out"])
                        ),
                    ))
                }
            }
        }
    }
    Ok(trigger)
}

fn parse_count(spec: &str, at: usize, text: &str) -> Result<u64, SpecError> {
    text.parse().map_err(|_| SpecError {
        spec: spec.to_owned(),
        at,
        message: format!("expected a whole number, found '{text}'"),
    })
}

/// `500ms`, `2s`, `1.5s`, `1m`, `250us` (rounded up to whole ms), or a bare number of ms.
pub fn parse_duration_ms(spec: &str, at: usize, text: &str) -> Result<u64, SpecError> {
    let err = || SpecError {
        spec: spec.to_owned(),
        at,
        message: format!("expected a duration such as 500ms, 2s or 1.5s, found '{text}'"),
    };
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.parse().map_err(|_| err())?;
    if !value.is_finite() || value < 0.0 {
        return Err(err());
    }
    let ms = (value * scale).ceil();
    if ms > u64::MAX as f64 / 2.0 {
        return Err(err());
    }
    Ok(ms as u64)
}

fn unquote(text: &str) -> &str {
    text.strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(text)
}

fn parse_action(spec: &str, at: usize, item: &str) -> Result<Action, SpecError> {
    let err = |at: usize, message: String| SpecError {
        spec: spec.to_owned(),
        at,
        message,
    };
    let (name, value) = match item.split_once('=') {
        Some((n, v)) => (n.trim(), Some(unquote(v))),
        None => (item.trim(), None),
    };
    let value_at = at + name.len() + 1;
    let need = |what: &str| -> Result<&str, SpecError> {
        value.ok_or_else(|| {
            err(
                at + name.len(),
                format!("'{name}' needs a value: {name}={what}"),
            )
        })
    };
    let none = || -> Result<(), SpecError> {
        match value {
            None => Ok(()),
            Some(_) => Err(err(value_at, format!("'{name}' takes no value"))),
        }
    };
    let choice = |text: &str, options: &[&str]| -> Result<usize, SpecError> {
        options.iter().position(|o| *o == text).ok_or_else(|| {
            err(
                value_at,
                format!(
                    "'{text}' is not one of {}{}",
                    options.join(", "),
                    suggest(text, options)
                ),
            )
        })
    };
    let json = |text: &str| -> Result<serde_json::Value, SpecError> {
        serde_json::from_str(text).map_err(|e| {
            err(
                value_at,
                format!("expected a JSON value ({e}); quote it with '...' if it holds , or :"),
            )
        })
    };
    Ok(match name {
        "delay" => {
            let text = need("500ms, 100ms..400ms, exp:50ms or 100ms+exp:50ms")?;
            parse_delay(spec, value_at, text)?
        }
        "hang" => match value {
            None | Some("blocking") => Action::Hang { block: true },
            Some("nonblocking") => Action::Hang { block: false },
            Some(_) => {
                return Err(err(
                    value_at,
                    "expected hang, hang=blocking or hang=nonblocking".into(),
                ))
            }
        },
        "drip" => {
            let text = need("BYTES/INTERVAL, e.g. 1/10ms")?;
            let (bytes, interval) = text
                .split_once('/')
                .ok_or_else(|| err(value_at, "expected BYTES/INTERVAL, e.g. 1/10ms".into()))?;
            let bytes = parse_count(spec, value_at, bytes)? as usize;
            if bytes == 0 {
                return Err(err(
                    value_at,
                    "drip needs at least 1 byte per interval".into(),
                ));
            }
            Action::Drip {
                bytes,
                interval_ms: parse_duration_ms(spec, value_at, interval)?,
            }
        }
        "slice" => {
            let text = need("SIZE+SIZE+..., e.g. 1+2+5")?;
            let sizes = text
                .split('+')
                .map(|s| parse_count(spec, value_at, s).map(|n| n as usize))
                .collect::<Result<Vec<_>, _>>()?;
            if sizes.contains(&0) {
                return Err(err(value_at, "slice sizes must be ≥ 1".into()));
            }
            Action::Slice { sizes }
        }
        "coalesce" => {
            let count = parse_count(spec, value_at, need("COUNT")?)? as usize;
            if count < 2 {
                return Err(err(value_at, "coalesce needs a count ≥ 2".into()));
            }
            Action::Coalesce { count }
        }
        "die-before-read" => {
            none()?;
            Action::DieBeforeRead
        }
        "die-after-read" => {
            none()?;
            Action::DieAfterRead
        }
        "die-mid-reply" => Action::DieMidReply {
            bytes: parse_count(spec, value_at, need("BYTES")?)? as usize,
        },
        "restart" => {
            let text = need("DURATION or never")?;
            Action::Restart {
                after: if text == "never" {
                    Restart::Never
                } else {
                    Restart::AfterMs(parse_duration_ms(spec, value_at, text)?)
                },
            }
        }
        "vm-exit" => {
            none()?;
            Action::VmExit
        }
        "close-client" => {
            none()?;
            Action::CloseClient
        }
        "stop-reading" => Action::StopReading {
            ms: value
                .map(|v| parse_duration_ms(spec, value_at, v))
                .transpose()?,
        },
        "spurious" => {
            let text = need("KIND[/after]")?;
            let (kind, position) = match text.split_once('/') {
                Some((k, "after")) => (k, Position::After),
                Some((k, "before")) => (k, Position::Before),
                Some(_) => {
                    return Err(err(
                        value_at,
                        "expected KIND, KIND/before or KIND/after".into(),
                    ))
                }
                None => (text, Position::Before),
            };
            let kinds = [
                "stale-sync",
                "duplicate",
                "other-command",
                "unknown-id",
                "event",
            ];
            let kind = [
                SpuriousKind::StaleSync,
                SpuriousKind::Duplicate,
                SpuriousKind::OtherCommand,
                SpuriousKind::UnknownId,
                SpuriousKind::Event,
            ][choice(kind, &kinds)?];
            Action::Spurious { kind, position }
        }
        "wrong-sync-id" => {
            let kinds = ["other", "string", "float", "off-by-one", "truncate32"];
            let kind = [
                WrongId::Other,
                WrongId::String,
                WrongId::Float,
                WrongId::OffByOne,
                WrongId::Truncate32,
            ][choice(need("KIND")?, &kinds)?];
            Action::WrongSyncId { kind }
        }
        "duplicate" => {
            none()?;
            Action::Duplicate
        }
        "swap" => {
            none()?;
            Action::Swap
        }
        "garbage" => {
            let kinds = [
                "text",
                "invalid-utf8",
                "nul",
                "ff",
                "half-object",
                "crlf",
                "ff-prefix",
            ];
            let kind = [
                Garbage::Text,
                Garbage::InvalidUtf8,
                Garbage::Nul,
                Garbage::Ff,
                Garbage::HalfObject,
                Garbage::Crlf,
                Garbage::FfPrefix,
            ][choice(need("KIND")?, &kinds)?];
            Action::Garbage { kind }
        }
        "oversize" => {
            let text = need("MIB[/no-newline]")?;
            let (mib, newline) = match text.split_once('/') {
                Some((m, "no-newline")) => (m, false),
                Some((m, "newline")) => (m, true),
                Some(_) => {
                    return Err(err(
                        value_at,
                        "expected MIB, MIB/newline or MIB/no-newline".into(),
                    ))
                }
                None => (text, true),
            };
            Action::Oversize {
                mib: parse_count(spec, value_at, mib)? as usize,
                newline,
            }
        }
        "flood" => {
            none()?;
            Action::Flood
        }
        "nesting-bomb" => Action::NestingBomb {
            depth: parse_count(spec, value_at, need("DEPTH")?)? as usize,
        },
        "return" => Action::Return {
            value: json(need("JSON")?)?,
        },
        "error" => {
            let text = need("CLASS/DESC")?;
            let (class, desc) = text.split_once('/').ok_or_else(|| {
                err(
                    value_at,
                    "expected CLASS/DESC, e.g. GenericError/'it broke'".into(),
                )
            })?;
            Action::Error {
                class: class.to_owned(),
                desc: unquote(desc).to_owned(),
            }
        }
        "error-not-object" => Action::ErrorNotObject {
            value: json(need("JSON")?)?,
        },
        "return-and-error" => {
            none()?;
            Action::ReturnAndError
        }
        "neither" => {
            none()?;
            Action::Neither
        }
        "reply-to-no-reply" => {
            none()?;
            Action::ReplyToNoReply
        }
        "no-reply" => {
            none()?;
            Action::NoReply
        }
        "raw" => {
            let text = need("TEXT (with \\n, \\r, \\xHH escapes)")?;
            Action::Raw {
                text: None,
                base64: Some(base64_of(&unescape(spec, value_at, text)?)),
                position: RawPosition::Replace,
            }
        }
        other => {
            return Err(err(
                at,
                format!(
                    "unknown action '{other}'{}; the actions are: {}",
                    suggest(other, ACTION_NAMES),
                    ACTION_NAMES.join(", ")
                ),
            ))
        }
    })
}

fn parse_delay(spec: &str, at: usize, text: &str) -> Result<Action, SpecError> {
    if let Some((min, max)) = text.split_once("..") {
        let min = parse_duration_ms(spec, at, min)?;
        let max = parse_duration_ms(spec, at, max)?;
        if max < min {
            return Err(SpecError {
                spec: spec.to_owned(),
                at,
                message: format!("the delay range {min}ms..{max}ms is empty"),
            });
        }
        return Ok(Action::Delay {
            ms: min,
            jitter_ms: max - min,
            distribution: Distribution::Uniform,
        });
    }
    let (fixed, exp) = match text.split_once("exp:") {
        Some((fixed, mean)) => (fixed.trim_end_matches('+'), Some(mean)),
        None => (text, None),
    };
    Ok(Action::Delay {
        ms: if fixed.is_empty() {
            0
        } else {
            parse_duration_ms(spec, at, fixed)?
        },
        jitter_ms: exp
            .map(|m| parse_duration_ms(spec, at, m))
            .transpose()?
            .unwrap_or(0),
        distribution: if exp.is_some() {
            Distribution::Exponential
        } else {
            Distribution::Uniform
        },
    })
}

fn unescape(spec: &str, at: usize, text: &str) -> Result<Vec<u8>, SpecError> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let bad = || SpecError {
            spec: spec.to_owned(),
            at: at + i,
            message: "expected an escape: \\n, \\r, \\t, \\\\, \\' or \\xHH".into(),
        };
        match bytes.get(i + 1) {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'\'') => out.push(b'\''),
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            _ => return Err(bad()),
        }
        i += 2;
    }
    Ok(out)
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// ", did you mean 'X'?" for the closest known name within a small edit distance.
pub fn suggest(word: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| {
            let shares_a_stem = word.get(..3).is_some_and(|stem| k.starts_with(stem));
            *d <= 2.max(k.len() / 3) || (shares_a_stem && *d <= k.len() / 2)
        })
        .min()
        .map(|(_, k)| format!(" (did you mean '{k}'?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            prev = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("guest-fsfreeze-freeze:hang", Some("guest-fsfreeze-freeze"), vec![Action::Hang { block: true }])]
    #[case("guest-ping@3:die-mid-reply=10,restart=500ms", Some("guest-ping"), vec![
        Action::DieMidReply { bytes: 10 },
        Action::Restart { after: Restart::AfterMs(500) },
    ])]
    #[case("hang", None, vec![Action::Hang { block: true }])]
    #[case("*:delay=1.5s", None, vec![Action::Delay { ms: 1500, jitter_ms: 0, distribution: Distribution::Uniform }])]
    #[case("guest-*:delay=100ms..400ms", Some("guest-*"), vec![Action::Delay { ms: 100, jitter_ms: 300, distribution: Distribution::Uniform }])]
    #[case("guest-ping:delay=10ms+exp:5ms", Some("guest-ping"), vec![Action::Delay { ms: 10, jitter_ms: 5, distribution: Distribution::Exponential }])]
    #[case("guest-info:drip=1/10ms", Some("guest-info"), vec![Action::Drip { bytes: 1, interval_ms: 10 }])]
    #[case("guest-info:slice=1+2+5", Some("guest-info"), vec![Action::Slice { sizes: vec![1, 2, 5] }])]
    #[case("guest-ping:error=GenericError/'it broke: badly'", Some("guest-ping"), vec![Action::Error { class: "GenericError".into(), desc: "it broke: badly".into() }])]
    #[case("guest-get-time:return='\"5\"'", Some("guest-get-time"), vec![Action::Return { value: serde_json::json!("5") }])]
    #[case("guest-sync:spurious=stale-sync/after", Some("guest-sync"), vec![Action::Spurious { kind: SpuriousKind::StaleSync, position: Position::After }])]
    #[case("guest-info:oversize=12/no-newline", Some("guest-info"), vec![Action::Oversize { mib: 12, newline: false }])]
    fn parses_compact_specs(
        #[case] spec: &str,
        #[case] command: Option<&str>,
        #[case] actions: Vec<Action>,
    ) {
        let rule = parse(spec).expect("valid spec");
        assert_eq!(rule.when.command.as_deref(), command);
        assert_eq!(rule.actions, actions);
    }

    #[test]
    fn parses_modifiers_and_options() {
        let rule = parse("guest-ping@2..%3~0.5#4[after=1s,since=connect,bytes-in=10]:no-reply")
            .expect("valid spec");
        assert_eq!(rule.when.from, Some(2));
        assert_eq!(rule.when.every, Some(3));
        assert_eq!(rule.when.probability, Some(0.5));
        assert_eq!(rule.when.times, Some(4));
        assert_eq!(rule.when.after_ms, Some(1000));
        assert_eq!(rule.when.since, Since::Connect);
        assert_eq!(rule.when.after_bytes_in, Some(10));
        let connect = parse("connect:spurious=stale-sync").expect("valid spec");
        assert_eq!(connect.when.event, EventKind::Connect);
    }

    #[test]
    fn raw_bytes_unescape() {
        let rule = parse("guest-ping:raw='\\xff{}\\r\\n'").expect("valid spec");
        let Action::Raw { base64, .. } = &rule.actions[0] else {
            panic!("not raw: {rule}");
        };
        assert_eq!(base64.as_deref(), Some(base64_of(b"\xff{}\r\n").as_str()));
    }

    #[test]
    fn json_rules_are_accepted() {
        let rule = parse(r#"{"when":{"command":"guest-ping","nth":2},"do":[{"action":"hang"}]}"#)
            .expect("valid rule");
        assert_eq!(rule.when.nth, Some(2));
        assert_eq!(rule.actions, vec![Action::Hang { block: true }]);
    }

    #[rstest]
    #[case("guest-ping:hnag", 11, "did you mean 'hang'")]
    #[case("guest-ping@x:hang", 11, "expected a whole number")]
    #[case("guest-ping~2:hang", 11, "not between 0 and 1")]
    #[case("guest-ping:delay=fast", 17, "expected a duration")]
    #[case("guest-ping:hang=5", 16, "expected hang")]
    #[case("guest-ping:garbage=junk", 19, "is not one of")]
    #[case("guest-ping:", 11, "expected an action")]
    #[case("guest ping:hang", 5, "unexpected ' '")]
    #[case("guest-ping[afterr=1s]:hang", 11, "did you mean 'after'")]
    #[case(r#"{"when":{"comand":"x"},"do":[]}"#, 16, "unknown field")]
    fn rejects_bad_specs_with_the_place(
        #[case] spec: &str,
        #[case] at: usize,
        #[case] message: &str,
    ) {
        let error = parse(spec).expect_err("invalid spec");
        assert!(
            error.to_string().contains(message),
            "{error} does not say {message}"
        );
        assert!(
            error.at.abs_diff(at) <= 2,
            "{error}: offset {} is not near {at}",
            error.at
        );
    }

    #[test]
    fn every_action_round_trips_through_json() {
        for name in ACTION_NAMES {
            let spec = match *name {
                "delay" => "delay=5ms".to_owned(),
                "drip" => "drip=1/1ms".to_owned(),
                "slice" => "slice=1".to_owned(),
                "coalesce" => "coalesce=2".to_owned(),
                "die-mid-reply" => "die-mid-reply=3".to_owned(),
                "restart" => "restart=never".to_owned(),
                "spurious" => "spurious=event".to_owned(),
                "wrong-sync-id" => "wrong-sync-id=float".to_owned(),
                "garbage" => "garbage=nul".to_owned(),
                "oversize" => "oversize=1".to_owned(),
                "nesting-bomb" => "nesting-bomb=3".to_owned(),
                "return" => "return=1".to_owned(),
                "error" => "error=A/b".to_owned(),
                "error-not-object" => "error-not-object='\"x\"'".to_owned(),
                "raw" => "raw=x".to_owned(),
                other => other.to_owned(),
            };
            let rule = parse(&spec).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rule.actions[0].name(), *name);
            let json = serde_json::to_string(&rule).expect("serialise");
            let back: Rule = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(back, rule, "{json}");
        }
    }
}
