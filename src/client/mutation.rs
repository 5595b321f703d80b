//! Deliberate bugs of the reference client, one at a time, to measure the catalogue: a
//! case is worth having when a client with a known bug FAILs it. Reachable only through
//! `qga_harness::internals`, which is not the stable API; a client built normally has no
//! mutation.

/// One bug. Each is the smallest change to the reference client that makes it behave like
/// a real client's known mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Mutation {
    /// The sync is sent without the 0xFF that resets the agent's parser.
    NoFlush,
    /// Never syncs: the first command goes out on a fresh connection as is.
    NoSync,
    /// Any `return` reply read while syncing is taken as the sync reply, whatever its id.
    AnySyncId,
    /// The first reply line after the command is taken as its answer, whatever its id.
    FirstLine,
    /// The call's timeout is ignored: it waits as long as it takes.
    NoTimeout,
    /// Gives up after a twentieth of the timeout.
    InstantTimeout,
    /// A call that times out is reported as a success with `{}`.
    SilenceIsSuccess,
    /// A command with no answer by half its timeout is written again.
    RetryCommand,
    /// After a timeout the connection is reused without a sync.
    NoResyncAfterTimeout,
    /// An error reply without an id is taken as the answer to the pending command.
    TrustIdlessErrors,
    /// Sync ids count up from 1.
    SequentialSyncIds,
    /// Once a call fails on the client's side, every later call fails the same way.
    StickyFailure,
    /// A closed connection is never reopened.
    NoReconnect,
    /// A reply line that is not a JSON object (`42`, `[]`) is taken as the answer's value.
    NonObjectAnswer,
    /// The agent is assumed to echo ids: replies without an id are never an answer.
    AssumeIdEcho,
    /// A sync whose reply does not come is sent again with a fresh timeout, for ever.
    UnboundedSyncLoop,
    /// A no-reply command (guest-shutdown) is sent without a sync first and without a
    /// marker; silence means success.
    UncheckedNoReply,
    /// The connection closing while a command waits for its answer is a success `{}`.
    EofIsSuccess,
    /// Every agent error is reported as `GenericError` (its class is lost).
    FlattenErrorClass,
    /// The command's arguments are not sent.
    DropArguments,
    // Protocol-level mutants
    /// Sync ids are the current time in milliseconds (libvirt's `virTimeMillisNow()`).
    ClockSyncIds,
    /// A sync reply returning a number that is none of the client's own sync ids makes it
    /// start over: a new sync with a fresh timeout.
    ResyncOnWrongSyncId,
    /// Everything read up to the last 0xFF of the bytes in hand is skipped (Proxmox's
    /// `^.*\xff` match): a 0xFF behind the sync reply or the answer swallows it.
    GreedyLastFf,
    // Command-level mutants
    /// A `guest-exec-status` with `exited: false` is taken as the process's end: it is
    /// reported exited, with an exit code of 0 (a poller that stops at its first status).
    ExitedFalseIsFinal,
    /// The `signal` member of `guest-exec-status` is dropped (a status type without it).
    DropSignal,
    /// A true `out-truncated`/`err-truncated` is reported false: cut output is taken as
    /// whole.
    IgnoreTruncation,
    /// Members of the wrong type are coerced into a plausible status (`"yes"` is true,
    /// `"0"` is 0), as a lenient decoder does.
    CoerceTypes,
    /// Base64 is decoded leniently: characters outside the alphabet are skipped and
    /// padding is optional, so invalid data becomes other bytes.
    LenientBase64,
    /// `guest-file-read`'s `count` is trusted over the data: the buffer is cut or
    /// zero-padded to `count` bytes.
    TrustCount,
    /// An empty `guest-file-read` is taken as the end of the file, whatever `eof` says.
    EmptyReadIsEof,
    /// A no-reply command (guest-shutdown, guest-suspend-*) that was written and then met
    /// silence until the deadline is a success, even though the VM stayed up.
    NoReplySilenceIsSuccess,
    /// A slow status poll or file read (`*-status`, `*-read`) is written again at half
    /// its timeout: it is taken for an idempotent read.
    RetryReads,
    /// A no-reply command is reported done before it is written, and the write never
    /// happens (a fire-and-forget send whose buffer is never flushed).
    UnsentNoReply,
    /// A reply that names a member twice (`{"return": A, "return": B}`) is read as most
    /// JSON parsers read it: the last value wins, and the ambiguity goes unnoticed.
    LastDuplicateWins,
    /// Bytes above 0x7F in a reply are read as Latin-1 characters, one each (a decoder
    /// that assumes the agent's all-ASCII output), so raw UTF-8 becomes mojibake.
    Latin1Replies,
    /// Numbers are read as a lenient decoder reads them: an integer beyond 64 bits is
    /// rounded to a double, a number beyond the double range saturates, and a negative
    /// value of a member the schema types `uint64` wraps (C's `strtoull("-1")` is
    /// `ULLONG_MAX`).
    LossyNumbers,
    /// A reply line is buffered until its newline, however long it grows (no cap, as
    /// qapi-rs's codec): an endless reply takes memory until the call's timeout.
    UnboundedBuffer,
}

impl Mutation {
    /// Every mutation, in the order reports list them.
    pub const ALL: [Mutation; 37] = [
        Mutation::NoFlush,
        Mutation::NoSync,
        Mutation::AnySyncId,
        Mutation::FirstLine,
        Mutation::NoTimeout,
        Mutation::InstantTimeout,
        Mutation::SilenceIsSuccess,
        Mutation::RetryCommand,
        Mutation::NoResyncAfterTimeout,
        Mutation::TrustIdlessErrors,
        Mutation::SequentialSyncIds,
        Mutation::StickyFailure,
        Mutation::NoReconnect,
        Mutation::NonObjectAnswer,
        Mutation::AssumeIdEcho,
        Mutation::UnboundedSyncLoop,
        Mutation::UncheckedNoReply,
        Mutation::EofIsSuccess,
        Mutation::FlattenErrorClass,
        Mutation::DropArguments,
        // Protocol-level mutants
        Mutation::ClockSyncIds,
        Mutation::ResyncOnWrongSyncId,
        Mutation::GreedyLastFf,
        // Command-level mutants
        Mutation::ExitedFalseIsFinal,
        Mutation::DropSignal,
        Mutation::IgnoreTruncation,
        Mutation::CoerceTypes,
        Mutation::LenientBase64,
        Mutation::TrustCount,
        Mutation::EmptyReadIsEof,
        Mutation::NoReplySilenceIsSuccess,
        Mutation::RetryReads,
        Mutation::UnsentNoReply,
        Mutation::LastDuplicateWins,
        Mutation::Latin1Replies,
        Mutation::LossyNumbers,
        Mutation::UnboundedBuffer,
    ];

    /// The mutant's name in reports and the kill matrix.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::NoFlush => "no-flush",
            Mutation::NoSync => "no-sync",
            Mutation::AnySyncId => "any-sync-id",
            Mutation::FirstLine => "first-line",
            Mutation::NoTimeout => "no-timeout",
            Mutation::InstantTimeout => "instant-timeout",
            Mutation::SilenceIsSuccess => "silence-is-success",
            Mutation::RetryCommand => "retry-command",
            Mutation::NoResyncAfterTimeout => "no-resync-after-timeout",
            Mutation::TrustIdlessErrors => "trust-idless-errors",
            Mutation::SequentialSyncIds => "sequential-sync-ids",
            Mutation::StickyFailure => "sticky-failure",
            Mutation::NoReconnect => "no-reconnect",
            Mutation::NonObjectAnswer => "non-object-answer",
            Mutation::AssumeIdEcho => "assume-id-echo",
            Mutation::UnboundedSyncLoop => "unbounded-sync-loop",
            Mutation::UncheckedNoReply => "unchecked-no-reply",
            Mutation::EofIsSuccess => "eof-is-success",
            Mutation::FlattenErrorClass => "flatten-error-class",
            Mutation::DropArguments => "drop-arguments",
            Mutation::ClockSyncIds => "clock-sync-ids",
            Mutation::ResyncOnWrongSyncId => "resync-on-wrong-sync-id",
            Mutation::GreedyLastFf => "greedy-last-ff",
            Mutation::ExitedFalseIsFinal => "exited-false-is-final",
            Mutation::DropSignal => "drop-signal",
            Mutation::IgnoreTruncation => "ignore-truncation",
            Mutation::CoerceTypes => "coerce-types",
            Mutation::LenientBase64 => "lenient-base64",
            Mutation::TrustCount => "trust-count",
            Mutation::EmptyReadIsEof => "empty-read-is-eof",
            Mutation::NoReplySilenceIsSuccess => "no-reply-silence-is-success",
            Mutation::RetryReads => "retry-reads",
            Mutation::UnsentNoReply => "unsent-no-reply",
            Mutation::LastDuplicateWins => "last-duplicate-wins",
            Mutation::Latin1Replies => "latin1-replies",
            Mutation::LossyNumbers => "lossy-numbers",
            Mutation::UnboundedBuffer => "unbounded-buffer",
        }
    }

    /// The mutation named `name`.
    pub fn parse(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The case category its bug belongs to: at least one case of it must FAIL the mutant.
    pub fn category(self) -> &'static str {
        match self {
            Mutation::NoFlush
            | Mutation::NoSync
            | Mutation::AnySyncId
            | Mutation::SequentialSyncIds
            | Mutation::UnboundedSyncLoop
            | Mutation::ClockSyncIds
            | Mutation::ResyncOnWrongSyncId
            | Mutation::GreedyLastFf => "sync",
            Mutation::NoTimeout
            | Mutation::InstantTimeout
            | Mutation::RetryCommand
            | Mutation::NoResyncAfterTimeout
            | Mutation::RetryReads => "timeout",
            Mutation::SilenceIsSuccess
            | Mutation::UncheckedNoReply
            | Mutation::NoReplySilenceIsSuccess
            | Mutation::UnsentNoReply => "noreply",
            Mutation::FirstLine
            | Mutation::TrustIdlessErrors
            | Mutation::NonObjectAnswer
            | Mutation::LastDuplicateWins
            | Mutation::Latin1Replies
            | Mutation::LossyNumbers
            | Mutation::UnboundedBuffer => "hostile",
            Mutation::StickyFailure | Mutation::NoReconnect | Mutation::EofIsSuccess => "lifecycle",
            Mutation::AssumeIdEcho => "version",
            Mutation::FlattenErrorClass
            | Mutation::DropArguments
            | Mutation::ExitedFalseIsFinal
            | Mutation::DropSignal
            | Mutation::IgnoreTruncation
            | Mutation::CoerceTypes
            | Mutation::LenientBase64
            | Mutation::TrustCount
            | Mutation::EmptyReadIsEof => "commands",
        }
    }

    /// The bug, in plain words.
    pub fn describe(self) -> &'static str {
        match self {
            Mutation::NoFlush => "syncs without the 0xFF that resets the agent's parser",
            Mutation::NoSync => "never syncs",
            Mutation::AnySyncId => "takes any return read while syncing as the sync reply",
            Mutation::FirstLine => "takes the first reply line as the answer, whatever its id",
            Mutation::NoTimeout => "ignores the timeout",
            Mutation::InstantTimeout => "gives up after a twentieth of the timeout",
            Mutation::SilenceIsSuccess => "reports a timeout as a success",
            Mutation::RetryCommand => "writes a command again when its answer is slow",
            Mutation::NoResyncAfterTimeout => {
                "reuses the connection after a timeout without a sync"
            }
            Mutation::TrustIdlessErrors => "takes an error without an id as the answer",
            Mutation::SequentialSyncIds => "counts sync ids up from 1",
            Mutation::StickyFailure => "fails every call after the first client-side failure",
            Mutation::NoReconnect => "never reopens a closed connection",
            Mutation::NonObjectAnswer => "takes a non-object line as the answer's value",
            Mutation::AssumeIdEcho => "assumes the agent echoes ids",
            Mutation::UnboundedSyncLoop => {
                "resends an unanswered sync with a fresh timeout, for ever"
            }
            Mutation::UncheckedNoReply => "sends guest-shutdown unsynced; silence is success",
            Mutation::EofIsSuccess => "takes a closed connection for a success",
            Mutation::FlattenErrorClass => "reports every agent error as GenericError",
            Mutation::DropArguments => "sends commands without their arguments",
            Mutation::ClockSyncIds => "uses the clock in milliseconds as the sync id",
            Mutation::ResyncOnWrongSyncId => {
                "starts a new sync with a fresh timeout on a sync reply of another id"
            }
            Mutation::GreedyLastFf => "skips everything read up to the last 0xFF",
            Mutation::ExitedFalseIsFinal => {
                "takes exec-status exited:false as the end (exited, exit code 0)"
            }
            Mutation::DropSignal => "drops the signal member of exec-status",
            Mutation::IgnoreTruncation => "reports truncated exec output as whole",
            Mutation::CoerceTypes => "coerces exec-status members of the wrong type",
            Mutation::LenientBase64 => "decodes base64 leniently (invalid characters skipped)",
            Mutation::TrustCount => "cuts or pads file-read data to its count",
            Mutation::EmptyReadIsEof => "takes an empty file-read as the end of the file",
            Mutation::NoReplySilenceIsSuccess => {
                "takes silence after a written no-reply command as success"
            }
            Mutation::RetryReads => "writes a slow status poll or file read again",
            Mutation::UnsentNoReply => "reports a no-reply command done without writing it",
            Mutation::LastDuplicateWins => "takes the last of a reply's duplicate members",
            Mutation::Latin1Replies => "reads reply bytes above 0x7F as Latin-1",
            Mutation::LossyNumbers => {
                "rounds, saturates or wraps numbers no agent writes instead of failing"
            }
            Mutation::UnboundedBuffer => "buffers a reply line without a cap",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut names: Vec<_> = Mutation::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Mutation::ALL.len());
        for m in Mutation::ALL {
            assert_eq!(Mutation::parse(m.name()), Some(m));
        }
    }
}
