//! A small POSIX-shell subset for the simulated `sh`, enough for the scripts host tools
//! commonly send through guest-exec (`sh -c "exit 3"`, `sh -c "echo out; echo err >&2;
//! exit 1"`, `sh -c 'kill -9 $$'`).
//!
//! Supported: command lists with `;`, newlines, `&&` and `||`; single and double quotes,
//! backslash escapes; `$$`, `$?`, `$#`, `$0`-`$9`, `$@`, `$*`, `$NAME`, `${NAME}` (with
//! field splitting when unquoted); `NAME=value` assignments; comments; the redirections
//! `>&2`, `1>&2`, `2>&1`, `>&1`, `>/dev/null`, `2>/dev/null`; the commands `exit`, `:`,
//! `true`, `false`, `echo` (dash's), `sleep`, `cat`, `kill` (of the shell itself), and any
//! program the guest has. Anything else (pipes, `if`, loops, globbing, command
//! substitution, other redirections, other builtins) makes the script fail with exit
//! status 2 and a message that says what the simulation does not support: never a
//! made-up result.

use std::collections::BTreeMap;

use super::exec::{self, Context, Ending};

/// Why a script cannot run here.
struct Unsupported(String);

/// A word as written: quoted and unquoted parts, to expand later.
#[derive(Clone, Debug, PartialEq)]
enum Part {
    /// Text that is taken literally.
    Literal(String),
    /// `$...` outside double quotes: expanded, then split into fields.
    Expansion(String),
    /// `$...` inside double quotes: expanded, not split.
    QuotedExpansion(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(Vec<Part>),
    /// `;` or a newline.
    Separator,
    And,
    Or,
    /// A redirection: the fd it changes, and where it now points (1, 2, or None for
    /// /dev/null).
    Redirect(u8, Option<u8>),
}

/// Shells nested deeper than this (a script that runs itself) are taken to run forever,
/// rather than recursing without end.
const MAX_DEPTH: u32 = 32;

/// Runs `sh` with its arguments.
pub(crate) fn run_sh(ctx: &mut Context<'_>, argv0: &str, args: &[String]) -> Ending {
    if ctx.depth >= MAX_DEPTH {
        return Ending::Never;
    }
    ctx.depth += 1;
    let ending = run_sh_inner(ctx, argv0, args);
    ctx.depth -= 1;
    ending
}

fn run_sh_inner(ctx: &mut Context<'_>, argv0: &str, args: &[String]) -> Ending {
    let (script, positional) = match args.first().map(String::as_str) {
        Some("-c") => match args.get(1) {
            Some(script) => (script.clone(), args[2..].to_vec()),
            None => {
                ctx.out.write(
                    2,
                    format!("{argv0}: 0: -c requires an argument\n").as_bytes(),
                );
                return Ending::Exited(2);
            }
        },
        Some(opt) if opt.starts_with('-') && opt != "-" => {
            return unsupported(ctx, &format!("the option {opt}"));
        }
        Some(file) => {
            let text = ctx
                .fs
                .resolve(file)
                .and_then(|r| ctx.fs.read_file(&r.path).map(<[u8]>::to_vec));
            match text {
                Ok(bytes) => (String::from_utf8_lossy(&bytes).into_owned(), args.to_vec()),
                Err(e) => {
                    let msg = format!("{argv0}: 0: cannot open {file}: {}\n", e.text());
                    ctx.out.write(2, msg.as_bytes());
                    return Ending::Exited(2);
                }
            }
        }
        None => {
            let input = std::mem::take(&mut ctx.stdin);
            (
                String::from_utf8_lossy(&input).into_owned(),
                vec![argv0.to_owned()],
            )
        }
    };
    let lines = match tokenize(&script) {
        Ok(tokens) => tokens,
        Err(Unsupported(what)) => return unsupported(ctx, &what),
    };
    let mut shell = Shell {
        name: positional
            .first()
            .cloned()
            .unwrap_or_else(|| argv0.to_owned()),
        args: positional.iter().skip(1).cloned().collect(),
        vars: BTreeMap::new(),
        status: 0,
    };
    match shell.run(ctx, &lines) {
        Ok(ending) => ending,
        Err(Unsupported(what)) => unsupported(ctx, &what),
    }
}

fn unsupported(ctx: &mut Context<'_>, what: &str) -> Ending {
    let msg = format!("sh: the simulated guest's shell does not support {what}\n");
    ctx.out.write(2, msg.as_bytes());
    Ending::Exited(2)
}

/// Splits a script into tokens, each with the line it starts on.
fn tokenize(script: &str) -> Result<Vec<(Token, usize)>, Unsupported> {
    let chars: Vec<char> = script.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let mut word: Vec<Part> = Vec::new();
    let mut in_word = false;
    let mut literal = String::new();

    fn flush_literal(word: &mut Vec<Part>, literal: &mut String) {
        if !literal.is_empty() {
            word.push(Part::Literal(std::mem::take(literal)));
        }
    }

    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | ';' | '&' | '|' | '>' | '<' | '(' | ')' => {
                // A word ends here; a redirection may use the word as its fd number.
                if matches!(c, '>' | '<') {
                    flush_literal(&mut word, &mut literal);
                    let fd_word = std::mem::take(&mut word);
                    let fd = match fd_word.as_slice() {
                        [] => None,
                        [Part::Literal(d)] if d == "1" || d == "2" => d.parse::<u8>().ok(),
                        other => {
                            // Not a fd number: the word stands on its own.
                            tokens.push((Token::Word(other.to_vec()), line));
                            None
                        }
                    };
                    in_word = false;
                    if c == '<' {
                        return Err(Unsupported("input redirection".into()));
                    }
                    i += 1;
                    let fd = fd.unwrap_or(1);
                    if chars.get(i) == Some(&'>') {
                        return Err(Unsupported("appending redirection (>>)".into()));
                    }
                    if chars.get(i) == Some(&'&') {
                        i += 1;
                        let target = chars.get(i).copied();
                        i += 1;
                        match target {
                            Some('1') => tokens.push((Token::Redirect(fd, Some(1)), line)),
                            Some('2') => tokens.push((Token::Redirect(fd, Some(2)), line)),
                            _ => return Err(Unsupported("this fd redirection".into())),
                        }
                    } else {
                        while chars.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
                            i += 1;
                        }
                        let start = i;
                        while chars
                            .get(i)
                            .is_some_and(|c| !c.is_whitespace() && !";&|".contains(*c))
                        {
                            i += 1;
                        }
                        let target: String = chars[start..i].iter().collect();
                        if target == "/dev/null" {
                            tokens.push((Token::Redirect(fd, None), line));
                        } else {
                            return Err(Unsupported(format!("redirection to '{target}'")));
                        }
                    }
                    continue;
                }
                flush_literal(&mut word, &mut literal);
                if in_word {
                    tokens.push((Token::Word(std::mem::take(&mut word)), line));
                    in_word = false;
                }
                match c {
                    '\n' | ';' => {
                        if chars.get(i + 1) == Some(&';') && c == ';' {
                            return Err(Unsupported("case statements".into()));
                        }
                        tokens.push((Token::Separator, line));
                        if c == '\n' {
                            line += 1;
                        }
                    }
                    '&' if chars.get(i + 1) == Some(&'&') => {
                        tokens.push((Token::And, line));
                        i += 1;
                    }
                    '|' if chars.get(i + 1) == Some(&'|') => {
                        tokens.push((Token::Or, line));
                        i += 1;
                    }
                    '&' => return Err(Unsupported("background jobs (&)".into())),
                    '|' => return Err(Unsupported("pipelines (|)".into())),
                    '(' | ')' => return Err(Unsupported("subshells".into())),
                    _ => {}
                }
                i += 1;
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\'' => {
                in_word = true;
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                if i == chars.len() {
                    return Err(Unsupported("an unterminated quote".into()));
                }
                literal.extend(&chars[start..i]);
                i += 1;
            }
            '"' => {
                in_word = true;
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(Unsupported("an unterminated quote".into())),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if chars.get(i + 1).is_some_and(|c| "$`\"\\\n".contains(*c)) => {
                            if chars[i + 1] != '\n' {
                                literal.push(chars[i + 1]);
                            }
                            i += 2;
                        }
                        Some('$') => {
                            let (name, next) = parameter(&chars, i)?;
                            i = next;
                            match name {
                                Some(name) => {
                                    flush_literal(&mut word, &mut literal);
                                    word.push(Part::QuotedExpansion(name));
                                }
                                None => literal.push('$'),
                            }
                        }
                        Some('`') => return Err(Unsupported("command substitution".into())),
                        Some(&c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            literal.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.get(i + 1) {
                    Some('\n') => line += 1,
                    Some(&c) => literal.push(c),
                    None => {}
                }
                i += 2;
            }
            '$' => {
                in_word = true;
                let (name, next) = parameter(&chars, i)?;
                i = next;
                match name {
                    Some(name) => {
                        flush_literal(&mut word, &mut literal);
                        word.push(Part::Expansion(name));
                    }
                    None => literal.push('$'),
                }
            }
            '`' => return Err(Unsupported("command substitution".into())),
            '*' | '?' | '[' => return Err(Unsupported("filename globbing".into())),
            '~' if !in_word => return Err(Unsupported("tilde expansion".into())),
            '{' | '}' if !in_word => return Err(Unsupported("command groups".into())),
            c => {
                in_word = true;
                literal.push(c);
                i += 1;
            }
        }
    }
    flush_literal(&mut word, &mut literal);
    if in_word {
        tokens.push((Token::Word(word), line));
    }
    Ok(tokens)
}

/// Reads the parameter after a `$` at `chars[i]`: its name (None for a lone `$`) and the
/// index after it.
fn parameter(chars: &[char], i: usize) -> Result<(Option<String>, usize), Unsupported> {
    let mut j = i + 1;
    match chars.get(j) {
        Some('(') => Err(Unsupported("command substitution".into())),
        Some('{') => {
            j += 1;
            let start = j;
            while chars
                .get(j)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                j += 1;
            }
            if chars.get(j) != Some(&'}') || j == start {
                return Err(Unsupported("this parameter expansion".into()));
            }
            Ok((Some(chars[start..j].iter().collect()), j + 1))
        }
        Some(&c) if "$?#@*".contains(c) || c.is_ascii_digit() => Ok((Some(c.to_string()), j + 1)),
        Some(&c) if c.is_ascii_alphabetic() || c == '_' => {
            let start = j;
            while chars
                .get(j)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                j += 1;
            }
            Ok((Some(chars[start..j].iter().collect()), j))
        }
        _ => Ok((None, j)),
    }
}

const RESERVED: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
    "function", "!",
];

const UNSUPPORTED_BUILTINS: &[&str] = &[
    "test", "[", "printf", "cd", "export", "read", "set", "shift", "eval", "exec", "trap", "wait",
    "unset", "local", "return", "type", "command", "pwd", ".", "source", "alias", "umask",
    "ulimit", "getopts", "readonly", "times", "hash", "break", "continue",
];

struct Shell {
    name: String,
    args: Vec<String>,
    vars: BTreeMap<String, String>,
    status: i32,
}

/// One simple command: words and redirections.
#[derive(Default)]
struct Simple {
    words: Vec<Vec<Part>>,
    redirects: Vec<(u8, Option<u8>)>,
    line: usize,
}

impl Shell {
    fn lookup(&self, ctx: &Context<'_>, name: &str) -> Vec<String> {
        match name {
            "$" => vec![ctx.pid.to_string()],
            "?" => vec![self.status.to_string()],
            "#" => vec![self.args.len().to_string()],
            "0" => vec![self.name.clone()],
            "@" | "*" => self.args.clone(),
            n if n.bytes().all(|b| b.is_ascii_digit()) => {
                let idx: usize = n.parse().unwrap_or(0);
                vec![self
                    .args
                    .get(idx.wrapping_sub(1))
                    .cloned()
                    .unwrap_or_default()]
            }
            n => vec![self
                .vars
                .get(n)
                .or_else(|| ctx.env.get(n))
                .cloned()
                .unwrap_or_default()],
        }
    }

    /// Expands a word into fields.
    fn expand(&self, ctx: &Context<'_>, word: &[Part]) -> Vec<String> {
        let mut fields: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut has_content = false;
        for part in word {
            match part {
                Part::Literal(s) => {
                    current.push_str(s);
                    has_content = true;
                }
                Part::QuotedExpansion(name) => {
                    current.push_str(&self.lookup(ctx, name).join(" "));
                    has_content = true;
                }
                Part::Expansion(name) => {
                    let value = self.lookup(ctx, name).join(" ");
                    let mut pieces = value.split([' ', '\t', '\n']).filter(|p| !p.is_empty());
                    if let Some(first) = pieces.next() {
                        current.push_str(first);
                        has_content = true;
                    }
                    for piece in pieces {
                        fields.push(std::mem::take(&mut current));
                        current.push_str(piece);
                    }
                }
            }
        }
        if has_content || !current.is_empty() {
            fields.push(current);
        }
        fields
    }

    fn run(
        &mut self,
        ctx: &mut Context<'_>,
        tokens: &[(Token, usize)],
    ) -> Result<Ending, Unsupported> {
        // Parse into and-or lists of simple commands.
        let mut lists: Vec<Vec<(Option<Token>, Simple)>> = vec![Vec::new()];
        let mut current = Simple::default();
        let mut connector: Option<Token> = None;
        let mut pending = false;
        for (token, line) in tokens {
            match token {
                Token::Word(w) => {
                    if current.words.is_empty() {
                        current.line = *line;
                    }
                    current.words.push(w.clone());
                    pending = true;
                }
                Token::Redirect(fd, to) => {
                    current.redirects.push((*fd, *to));
                    pending = true;
                }
                Token::And | Token::Or => {
                    if !pending {
                        return Err(Unsupported("an empty command before && or ||".into()));
                    }
                    if let Some(list) = lists.last_mut() {
                        list.push((connector.take(), std::mem::take(&mut current)));
                    }
                    connector = Some(token.clone());
                    pending = false;
                }
                Token::Separator => {
                    if pending {
                        if let Some(list) = lists.last_mut() {
                            list.push((connector.take(), std::mem::take(&mut current)));
                        }
                    } else if connector.is_some() {
                        // `a &&` followed by a newline continues on the next line.
                        continue;
                    }
                    pending = false;
                    lists.push(Vec::new());
                }
            }
        }
        if pending {
            if let Some(list) = lists.last_mut() {
                list.push((connector.take(), current));
            }
        } else if connector.is_some() {
            return Err(Unsupported("a script ending in && or ||".into()));
        }
        for list in &lists {
            for (conn, simple) in list {
                let skip = match conn {
                    Some(Token::And) => self.status != 0,
                    Some(Token::Or) => self.status == 0,
                    _ => false,
                };
                if skip {
                    continue;
                }
                if let Some(end) = self.run_simple(ctx, simple)? {
                    return Ok(end);
                }
            }
        }
        Ok(Ending::Exited(self.status))
    }

    /// Runs one command; returns the script's end when it ends the script.
    fn run_simple(
        &mut self,
        ctx: &mut Context<'_>,
        simple: &Simple,
    ) -> Result<Option<Ending>, Unsupported> {
        let mut words: Vec<String> = Vec::new();
        for w in &simple.words {
            words.extend(self.expand(ctx, w));
        }
        // Standalone assignments.
        if let Some(first) = words.first() {
            if let Some((name, _)) = first.split_once('=') {
                if is_name(name) {
                    if words.len() > 1 {
                        return Err(Unsupported("assignments before a command".into()));
                    }
                    let value = first[name.len() + 1..].to_owned();
                    self.vars.insert(name.to_owned(), value);
                    self.status = 0;
                    return Ok(None);
                }
            }
        }
        let Some(name) = words.first().cloned() else {
            self.status = 0;
            return Ok(None);
        };
        if RESERVED.contains(&name.as_str()) {
            return Err(Unsupported(format!("'{name}'")));
        }
        if UNSUPPORTED_BUILTINS.contains(&name.as_str()) {
            return Err(Unsupported(format!("the builtin '{name}'")));
        }
        let args = &words[1..];
        // Run with the command's output redirected: collect, then route.
        let saved = std::mem::take(&mut ctx.out);
        let result = self.dispatch(ctx, &name, args, simple.line);
        let produced = std::mem::replace(&mut ctx.out, saved);
        // Redirections apply left to right: `>/dev/null 2>&1` silences both.
        let mut table: [Option<u8>; 3] = [None, Some(1), Some(2)];
        for (from, target) in &simple.redirects {
            let to = target.and_then(|t| table[usize::from(t)]);
            table[usize::from(*from)] = to;
        }
        let route = |fd: u8| table[usize::from(fd)];
        // `merged` holds the writes in order, so route each chunk by its stream. The
        // chunks are not kept apart, so replay stdout then stderr unless routing
        // collapses them onto one fd, in which case the merged order is exact.
        let (to1, to2) = (route(1), route(2));
        if to1.is_some() && to1 == to2 {
            ctx.out.write(to1.unwrap_or(1), &produced.merged.data);
        } else {
            if let Some(fd) = to1 {
                ctx.out.write(fd, &produced.stdout.data);
            }
            if let Some(fd) = to2 {
                ctx.out.write(fd, &produced.stderr.data);
            }
        }
        let ending = result?;
        Ok(ending)
    }

    fn dispatch(
        &mut self,
        ctx: &mut Context<'_>,
        name: &str,
        args: &[String],
        line: usize,
    ) -> Result<Option<Ending>, Unsupported> {
        match name {
            "exit" => {
                let code = match args.first() {
                    None => self.status,
                    Some(a) => match a.parse::<i64>() {
                        Ok(n) if n >= 0 => (n & 0xff) as i32,
                        _ => {
                            let msg = format!("sh: {line}: exit: Illegal number: {a}\n");
                            ctx.out.write(2, msg.as_bytes());
                            return Ok(Some(Ending::Exited(2)));
                        }
                    },
                };
                Ok(Some(Ending::Exited(code)))
            }
            ":" | "true" => {
                self.status = 0;
                Ok(None)
            }
            "false" => {
                self.status = 1;
                Ok(None)
            }
            "echo" => {
                let text = exec::echo(args, true);
                ctx.out.write(1, &text);
                self.status = 0;
                Ok(None)
            }
            "kill" => self.kill(ctx, args),
            _ => self.external(ctx, name, args, line),
        }
    }

    fn kill(
        &mut self,
        ctx: &mut Context<'_>,
        args: &[String],
    ) -> Result<Option<Ending>, Unsupported> {
        let (signal, targets) = match args {
            [s, rest @ ..] if s == "-s" => match rest {
                [name, targets @ ..] => (signal_number(name), targets),
                [] => (None, rest),
            },
            [s, targets @ ..] if s.starts_with('-') => (signal_number(&s[1..]), targets),
            targets => (Some(15), targets),
        };
        let Some(signal) = signal else {
            return Err(Unsupported("this kill signal".into()));
        };
        if targets.len() != 1 || targets[0] != ctx.pid.to_string() {
            return Err(Unsupported(
                "kill of another process than the shell itself".into(),
            ));
        }
        if signal == 0 {
            self.status = 0;
            return Ok(None);
        }
        Ok(Some(Ending::Signaled(signal)))
    }

    fn external(
        &mut self,
        ctx: &mut Context<'_>,
        name: &str,
        args: &[String],
        line: usize,
    ) -> Result<Option<Ending>, Unsupported> {
        match exec::find_program(ctx, name, args) {
            Ok(program) => {
                let ending = exec::run_program(ctx, &program, name, args);
                match ending {
                    Ending::Exited(code) => {
                        self.status = code & 0xff;
                        Ok(None)
                    }
                    // The shell reports a child killed by a signal as 128 + signal.
                    Ending::Signaled(sig) => {
                        self.status = 128 + sig;
                        Ok(None)
                    }
                    Ending::Never => Ok(Some(Ending::Never)),
                }
            }
            Err(e) => {
                let (msg, code) = if e == super::fs::Errno::Acces {
                    (format!("sh: {line}: {name}: Permission denied\n"), 126)
                } else {
                    (format!("sh: {line}: {name}: not found\n"), 127)
                };
                ctx.out.write(2, msg.as_bytes());
                self.status = code;
                Ok(None)
            }
        }
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (0..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ABRT" => 6,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => return None,
    })
}
