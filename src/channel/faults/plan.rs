//! What the agent does for one event, compiled from the actions of the rules that fired.
//!
//! Actions take effect at fixed stages of handling a request, whatever their order in the
//! rule; within a stage they apply in the order given (so `return=5,garbage=crlf` is a
//! changed return with a `\r\n` ending):
//!
//! 1. `die-before-read`: the agent dies; the request is still in the channel.
//! 2. `delay`: the agent waits (all delays add up).
//! 3. `vm-exit`, then `die-after-read`: the request was read and is never answered.
//! 4. `close-client`: the client's connection is closed; the agent goes on.
//! 5. dispatch, unless an action replaces what the command does (`hang`, `no-reply`,
//!    `return`, `error`, `error-not-object`, `neither`, `oversize`, `nesting-bomb`): then
//!    the command has no effect on the guest.
//! 6. the reply: replacements and deformations in order.
//! 7. writing: what comes `before`, then `hang` (blocking: nothing more, ever), the reply
//!    (held by `swap`, gathered by `coalesce`, chunked by `drip` or `slice`, cut by
//!    `die-mid-reply`, which then kills the agent), its `duplicate`, what comes `after`.
//! 8. `stop-reading`, and `restart` (alone: the agent dies now, after its reply).
//!
//! Random parts (delays, made-up ids) are drawn when the rule fires, in this order, from
//! the mock's one seeded source.

use std::time::Duration;

use base64::Engine as _;

use crate::fault::{
    Action, Distribution, Garbage, Position, RawPosition, Restart, RuleId, SpuriousKind, WrongId,
};
use crate::transcript::FaultOutput;
use crate::wire::Value;

use super::out::Out;
use super::replies::{self, RequestInfo, SpuriousSource, SyncRequest};

/// How a reply's bytes are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Chunking {
    /// In one write (a large reply: in the channel's pieces).
    #[default]
    Whole,
    /// In writes of these sizes; the last size repeats.
    Sizes(Vec<usize>),
    /// `bytes` per write, one write every `interval`.
    Drip { bytes: usize, interval: Duration },
}

/// One step of building the reply, applied to what the previous steps left.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ReplyOp {
    /// The reply becomes this (nothing, for `no-reply`).
    Set(Option<Out>),
    HalfObject,
    Crlf,
    FfPrefix,
    WrongSyncId {
        kind: WrongId,
        other: u64,
    },
    ReturnAndError,
    ReplyToNoReply,
}

/// Output a rule adds beside the reply: its bytes, the rule, and what kind it is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Injected {
    pub(crate) out: Out,
    pub(crate) rule: RuleId,
    pub(crate) kind: FaultOutput,
}

fn spurious_kind(kind: SpuriousKind) -> FaultOutput {
    match kind {
        SpuriousKind::StaleSync => FaultOutput::SpuriousStaleSync,
        SpuriousKind::Duplicate => FaultOutput::SpuriousDuplicate,
        SpuriousKind::OtherCommand => FaultOutput::SpuriousOtherCommand,
        SpuriousKind::UnknownId => FaultOutput::SpuriousUnknownId,
        SpuriousKind::Event => FaultOutput::SpuriousEvent,
    }
}

/// Everything the agent does differently for one event.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    pub(crate) die_before_read: bool,
    pub(crate) delay: Duration,
    pub(crate) vm_exit: bool,
    pub(crate) die_after_read: bool,
    pub(crate) close_client: bool,
    /// False when an action replaces what the command does.
    pub(crate) dispatch: bool,
    pub(crate) ops: Vec<ReplyOp>,
    /// What goes before and after the reply, each with the rule that made it.
    pub(crate) before: Vec<Injected>,
    pub(crate) after: Vec<Injected>,
    /// Never answer, and handle nothing more.
    pub(crate) hang: bool,
    /// The rule that asked for a second copy of the reply.
    pub(crate) duplicate: Option<RuleId>,
    pub(crate) swap: bool,
    pub(crate) coalesce: Option<usize>,
    pub(crate) chunking: Chunking,
    /// Write only this many bytes of the reply, then die.
    pub(crate) cut: Option<usize>,
    pub(crate) restart: Option<Restart>,
    /// Stop reading input after this event: for this long, or for good.
    pub(crate) stop_reading: Option<Option<Duration>>,
    /// For a connect event: the connection that was accepted (what its output is for).
    pub(crate) conn: Option<u64>,
    /// The rules that fired, in order (a reply made for no request is the first one's).
    pub(crate) rules: Vec<RuleId>,
}

impl Plan {
    /// The agent's downtime after a death: what `restart` says, or for good.
    pub(crate) fn downtime(&self) -> Restart {
        self.restart.unwrap_or(Restart::Never)
    }

    /// Builds the reply from the dispatched one.
    pub(crate) fn shape_reply(
        &mut self,
        dispatched: Option<Out>,
        info: &RequestInfo,
    ) -> Option<Out> {
        let mut reply = dispatched;
        for op in std::mem::take(&mut self.ops) {
            reply = match op {
                ReplyOp::Set(out) => out,
                ReplyOp::HalfObject => Some(replies::half_object(reply, info)),
                ReplyOp::Crlf => reply.map(replies::crlf),
                ReplyOp::FfPrefix => reply.map(replies::ff_prefix),
                ReplyOp::WrongSyncId { kind, other } => {
                    reply.map(|r| replies::wrong_sync_id(kind, r, info, other))
                }
                ReplyOp::ReturnAndError => Some(replies::return_and_error(reply.as_ref(), info)),
                ReplyOp::ReplyToNoReply => match reply {
                    None => Some(replies::empty_return(info)),
                    some => some,
                },
            };
        }
        reply
    }
}

/// What compiling needs from the mock: its seeded source and what it remembers.
pub(crate) trait Draws {
    fn delay(&mut self, ms: u64, jitter_ms: u64, distribution: Distribution) -> Duration;
    fn number(&mut self) -> u64;
    fn earlier_sync(&self) -> Option<SyncRequest>;
    fn previous_reply(&self) -> Option<&[u8]>;
}

/// The bytes of a `raw` action; `None` when the rule gives none that decode.
pub(crate) fn raw_bytes(text: Option<&str>, base64: Option<&str>) -> Option<Vec<u8>> {
    match (text, base64) {
        (Some(text), None) => Some(text.as_bytes().to_vec()),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).ok(),
        _ => None,
    }
}

/// Compiles the actions of every rule that fired, in order, each with its rule's id.
pub(crate) fn compile<'a>(
    actions: impl IntoIterator<Item = (RuleId, &'a Action)>,
    info: &RequestInfo,
    draws: &mut impl Draws,
) -> Plan {
    let mut plan = Plan {
        dispatch: true,
        ..Plan::default()
    };
    for (rule, action) in actions {
        if plan.rules.last() != Some(&rule) {
            plan.rules.push(rule);
        }
        let injected = |out: Out, kind: FaultOutput| Injected { out, rule, kind };
        match action {
            Action::Delay {
                ms,
                jitter_ms,
                distribution,
            } => plan.delay += draws.delay(*ms, *jitter_ms, *distribution),
            Action::Hang { block: true } => {
                plan.hang = true;
                plan.dispatch = false;
            }
            Action::Hang { block: false } | Action::NoReply => {
                plan.ops.push(ReplyOp::Set(None));
                plan.dispatch = false;
            }
            Action::Drip { bytes, interval_ms } => {
                plan.chunking = Chunking::Drip {
                    bytes: (*bytes).max(1),
                    interval: Duration::from_millis(*interval_ms),
                }
            }
            Action::Slice { sizes } => {
                let sizes: Vec<usize> = sizes.iter().map(|s| (*s).max(1)).collect();
                plan.chunking = if sizes.is_empty() {
                    Chunking::Whole
                } else {
                    Chunking::Sizes(sizes)
                };
            }
            Action::Coalesce { count } => plan.coalesce = Some(*count),
            Action::DieBeforeRead => plan.die_before_read = true,
            Action::DieAfterRead => plan.die_after_read = true,
            Action::DieMidReply { bytes } => plan.cut = Some(*bytes),
            Action::Restart { after } => plan.restart = Some(*after),
            Action::VmExit => plan.vm_exit = true,
            Action::CloseClient => plan.close_client = true,
            Action::StopReading { ms } => {
                plan.stop_reading = Some(ms.map(Duration::from_millis));
            }
            Action::Spurious { kind, position } => {
                let draw = draws.number();
                let source = SpuriousSource {
                    earlier_sync: draws.earlier_sync(),
                    previous_reply: draws.previous_reply(),
                    draw,
                };
                let out = injected(
                    replies::spurious(*kind, info, &source),
                    spurious_kind(*kind),
                );
                match position {
                    Position::Before => plan.before.push(out),
                    Position::After => plan.after.push(out),
                }
            }
            Action::WrongSyncId { kind } => plan.ops.push(ReplyOp::WrongSyncId {
                kind: *kind,
                other: draws.number(),
            }),
            Action::Duplicate => plan.duplicate = Some(rule),
            Action::Swap => plan.swap = true,
            Action::Garbage { kind } => match kind {
                Garbage::Ff => plan
                    .before
                    .push(injected(replies::stray_ff(), FaultOutput::GarbageFf)),
                Garbage::HalfObject => plan.ops.push(ReplyOp::HalfObject),
                Garbage::Crlf => plan.ops.push(ReplyOp::Crlf),
                Garbage::FfPrefix => plan.ops.push(ReplyOp::FfPrefix),
                Garbage::Text | Garbage::InvalidUtf8 | Garbage::Nul => {
                    plan.ops
                        .push(ReplyOp::Set(replies::garbage_line(*kind, info)));
                }
            },
            Action::Oversize { mib, newline } => {
                plan.ops
                    .push(ReplyOp::Set(Some(replies::oversize(*mib, *newline, info))));
                plan.dispatch = false;
            }
            Action::Flood => {
                plan.ops.push(ReplyOp::Set(Some(replies::flood(info))));
                plan.dispatch = false;
            }
            Action::NestingBomb { depth } => {
                plan.ops
                    .push(ReplyOp::Set(Some(replies::nesting_bomb(*depth, info))));
                plan.dispatch = false;
            }
            Action::Return { value } => {
                plan.ops.push(ReplyOp::Set(Some(replies::return_value(
                    Value::from_serde(value),
                    info,
                ))));
                plan.dispatch = false;
            }
            Action::Error { class, desc } => {
                plan.ops
                    .push(ReplyOp::Set(Some(replies::error(class, desc, info))));
                plan.dispatch = false;
            }
            Action::ErrorNotObject { value } => {
                plan.ops.push(ReplyOp::Set(Some(replies::error_not_object(
                    Value::from_serde(value),
                    info,
                ))));
                plan.dispatch = false;
            }
            Action::ReturnAndError => plan.ops.push(ReplyOp::ReturnAndError),
            Action::Neither => {
                plan.ops.push(ReplyOp::Set(Some(replies::neither(info))));
                plan.dispatch = false;
            }
            Action::ReplyToNoReply => plan.ops.push(ReplyOp::ReplyToNoReply),
            Action::Raw {
                text,
                base64,
                position,
            } => {
                // Checked when the rule was added; a rule without decodable bytes writes
                // nothing.
                let bytes = raw_bytes(text.as_deref(), base64.as_deref()).unwrap_or_default();
                match position {
                    RawPosition::Replace => plan.ops.push(ReplyOp::Set(Some(Out::bytes(bytes)))),
                    RawPosition::Before => plan
                        .before
                        .push(injected(Out::bytes(bytes), FaultOutput::Raw)),
                    RawPosition::After => plan
                        .after
                        .push(injected(Out::bytes(bytes), FaultOutput::Raw)),
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::parse_spec;

    struct Fixed;

    impl Draws for Fixed {
        fn delay(&mut self, ms: u64, jitter_ms: u64, _: Distribution) -> Duration {
            Duration::from_millis(ms + jitter_ms / 2)
        }
        fn number(&mut self) -> u64 {
            7
        }
        fn earlier_sync(&self) -> Option<SyncRequest> {
            None
        }
        fn previous_reply(&self) -> Option<&[u8]> {
            None
        }
    }

    fn plan(spec: &str, info: &RequestInfo) -> Plan {
        let rule = parse_spec(spec).expect("spec");
        compile(rule.actions.iter().map(|a| (1, a)), info, &mut Fixed)
    }

    #[test]
    fn actions_land_in_their_stages() {
        let info = RequestInfo::default();
        let p = plan(
            "delay=10ms,delay=100ms..200ms,die-mid-reply=10,restart=500ms,stop-reading=1s",
            &info,
        );
        assert_eq!(p.delay, Duration::from_millis(160));
        assert_eq!(p.cut, Some(10));
        assert_eq!(p.downtime(), Restart::AfterMs(500));
        assert_eq!(p.stop_reading, Some(Some(Duration::from_secs(1))));
        assert!(p.dispatch);
        let alone = plan("die-after-read", &info);
        assert_eq!(alone.downtime(), Restart::Never);
        assert!(!plan("hang", &info).dispatch);
        assert!(plan("hang", &info).hang);
        assert!(!plan("error=A/b", &info).dispatch);
        assert!(plan("garbage=crlf", &info).dispatch);
    }

    #[test]
    fn reply_steps_apply_in_order() {
        let info = RequestInfo {
            id: Some(Value::Int(2)),
            ..RequestInfo::default()
        };
        let mut p = plan("return=5,garbage=crlf", &info);
        let reply = p.shape_reply(Some(Out::bytes(b"{\"return\": {}}\n".to_vec())), &info);
        assert_eq!(
            reply.map(Out::into_vec),
            Some(b"{\"return\": 5, \"id\": 2}\r\n".to_vec())
        );
        let mut silent = plan("reply-to-no-reply", &info);
        assert_eq!(
            silent.shape_reply(None, &info).map(Out::into_vec),
            Some(b"{\"return\": {}, \"id\": 2}\n".to_vec())
        );
        let mut none = plan("no-reply", &info);
        assert_eq!(
            none.shape_reply(Some(Out::bytes(b"x\n".to_vec())), &info),
            None
        );
    }

    #[test]
    fn raw_bytes_and_extras() {
        let info = RequestInfo::default();
        let p = plan(
            "raw='\\xff\\n',spurious=other-command/after,garbage=ff",
            &info,
        );
        assert_eq!(p.after.len(), 1);
        assert_eq!(p.before.len(), 1);
        assert_eq!(raw_bytes(Some("a"), None), Some(b"a".to_vec()));
        assert_eq!(raw_bytes(None, Some("/w==")), Some(vec![0xff]));
        assert_eq!(raw_bytes(None, Some("!")), None);
        assert_eq!(raw_bytes(Some("a"), Some("YQ==")), None);
    }
}
