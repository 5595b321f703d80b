//! Dispatch-level tests: the texts, classes and check order of qga-wire.md §2, §3, §5, §6,
//! the version differences, block and allow lists and the frozen state, at the level of
//! the answer object (the writer turns it into bytes).

use std::collections::HashMap;

use rstest::rstest;

use super::test_json::{object, parse};
use super::*;
use crate::real_agent::safe_block_list;

/// The measured guest-info reply of qemu-ga 7.2.22 with the safe block list (qga-wire.md §1).
const MEASURED_GUEST_INFO: &str = r#"{"return": {"version": "7.2.22", "supported_commands": [{"enabled": true, "name": "guest-get-cpustats", "success-response": true}, {"enabled": true, "name": "guest-get-diskstats", "success-response": true}, {"enabled": false, "name": "guest-ssh-remove-authorized-keys", "success-response": true}, {"enabled": false, "name": "guest-ssh-add-authorized-keys", "success-response": true}, {"enabled": true, "name": "guest-ssh-get-authorized-keys", "success-response": true}, {"enabled": false, "name": "guest-get-devices", "success-response": true}, {"enabled": true, "name": "guest-get-osinfo", "success-response": true}, {"enabled": true, "name": "guest-get-timezone", "success-response": true}, {"enabled": true, "name": "guest-get-users", "success-response": true}, {"enabled": true, "name": "guest-get-host-name", "success-response": true}, {"enabled": false, "name": "guest-exec", "success-response": true}, {"enabled": true, "name": "guest-exec-status", "success-response": true}, {"enabled": true, "name": "guest-get-memory-block-info", "success-response": true}, {"enabled": false, "name": "guest-set-memory-blocks", "success-response": true}, {"enabled": true, "name": "guest-get-memory-blocks", "success-response": true}, {"enabled": false, "name": "guest-set-user-password", "success-response": true}, {"enabled": true, "name": "guest-get-fsinfo", "success-response": true}, {"enabled": true, "name": "guest-get-disks", "success-response": true}, {"enabled": false, "name": "guest-set-vcpus", "success-response": true}, {"enabled": true, "name": "guest-get-vcpus", "success-response": true}, {"enabled": true, "name": "guest-network-get-interfaces", "success-response": true}, {"enabled": false, "name": "guest-suspend-hybrid", "success-response": false}, {"enabled": false, "name": "guest-suspend-ram", "success-response": false}, {"enabled": false, "name": "guest-suspend-disk", "success-response": false}, {"enabled": false, "name": "guest-fstrim", "success-response": true}, {"enabled": false, "name": "guest-fsfreeze-thaw", "success-response": true}, {"enabled": false, "name": "guest-fsfreeze-freeze-list", "success-response": true}, {"enabled": false, "name": "guest-fsfreeze-freeze", "success-response": true}, {"enabled": true, "name": "guest-fsfreeze-status", "success-response": true}, {"enabled": true, "name": "guest-file-flush", "success-response": true}, {"enabled": true, "name": "guest-file-seek", "success-response": true}, {"enabled": false, "name": "guest-file-write", "success-response": true}, {"enabled": true, "name": "guest-file-read", "success-response": true}, {"enabled": true, "name": "guest-file-close", "success-response": true}, {"enabled": false, "name": "guest-file-open", "success-response": true}, {"enabled": false, "name": "guest-shutdown", "success-response": false}, {"enabled": true, "name": "guest-info", "success-response": true}, {"enabled": false, "name": "guest-set-time", "success-response": true}, {"enabled": true, "name": "guest-get-time", "success-response": true}, {"enabled": true, "name": "guest-ping", "success-response": true}, {"enabled": true, "name": "guest-sync", "success-response": true}, {"enabled": true, "name": "guest-sync-delimited", "success-response": true}]}}"#;

/// A guest that records calls, answers from a table and freezes and thaws as told.
#[derive(Default)]
pub(super) struct FakeGuest {
    frozen: bool,
    calls: Vec<(String, Object)>,
    answers: HashMap<&'static str, Result<Value, GuestError>>,
}

impl FakeGuest {
    fn frozen() -> Self {
        FakeGuest {
            frozen: true,
            ..FakeGuest::default()
        }
    }

    fn answering(mut self, command: &'static str, answer: Result<Value, GuestError>) -> Self {
        self.answers.insert(command, answer);
        self
    }
}

impl GuestOps for FakeGuest {
    fn run(&mut self, command: &str, args: &Object) -> Result<Value, GuestError> {
        self.calls.push((command.to_owned(), args.clone()));
        if let Some(answer) = self.answers.get(command) {
            return answer.clone();
        }
        match command {
            "guest-fsfreeze-freeze" | "guest-fsfreeze-freeze-list" => {
                self.frozen = true;
                Ok(Value::Int(1))
            }
            "guest-fsfreeze-thaw" => {
                let was = self.frozen;
                self.frozen = false;
                Ok(Value::Int(i64::from(was)))
            }
            _ => Ok(Value::Object(Object::new())),
        }
    }

    fn is_frozen(&self) -> bool {
        self.frozen
    }
}

fn config(version: &str, block: &[&str]) -> AgentConfig {
    AgentConfig {
        version: version.parse().expect("version"),
        block_rpcs: block.iter().map(|s| (*s).to_owned()).collect(),
        allow_rpcs: None,
    }
}

fn safe_config() -> AgentConfig {
    config("7.2.22", &safe_block_list())
}

fn ask(dispatcher: &mut Dispatcher, guest: &mut FakeGuest, request: &str) -> Answer {
    dispatcher.answer(Parsed::Value(parse(request)), guest).0
}

fn ask_once(config: AgentConfig, request: &str) -> Answer {
    ask(
        &mut Dispatcher::new(config),
        &mut FakeGuest::default(),
        request,
    )
}

fn generic(desc: &str, id: Option<Value>) -> Answer {
    Answer::Error {
        class: ErrorClass::GenericError,
        desc: desc.to_owned(),
        id,
    }
}

fn not_found(desc: &str, id: Option<Value>) -> Answer {
    Answer::Error {
        class: ErrorClass::CommandNotFound,
        desc: desc.to_owned(),
        id,
    }
}

fn returns(value: Value, id: Option<Value>) -> Answer {
    Answer::Return {
        value,
        delimited: false,
        id,
    }
}

fn empty() -> Value {
    Value::Object(Object::new())
}

#[rstest]
#[case::lexer_error("JSON parse error, stray '\u{FFFD}'")]
#[case::limit("JSON token size limit exceeded")]
fn streamer_errors_are_generic_and_carry_no_id(#[case] desc: &str) {
    let mut dispatcher = Dispatcher::new(safe_config());
    let (answer, command) =
        dispatcher.answer(Parsed::Error(desc.to_owned()), &mut FakeGuest::default());
    assert_eq!(answer, generic(desc, None));
    assert_eq!(command, None);
}

/// qga-wire.md §5 and §6: the request-level checks, in QEMU's order.
#[rstest]
#[case::array(r#"[1,2]"#, "QMP input must be a JSON object")]
#[case::empty_array(r#"[]"#, "QMP input must be a JSON object")]
#[case::wrapped(r#"[{"execute":"guest-ping"}]"#, "QMP input must be a JSON object")]
#[case::string(r#""hello""#, "QMP input must be a JSON object")]
#[case::bool(r#"true"#, "QMP input must be a JSON object")]
#[case::null(r#"null"#, "QMP input must be a JSON object")]
#[case::number(r#"42"#, "QMP input must be a JSON object")]
#[case::empty_object(r#"{}"#, "QMP input lacks member 'execute'")]
#[case::only_arguments(r#"{"arguments":{}}"#, "QMP input lacks member 'execute'")]
#[case::execute_number(r#"{"execute": 1}"#, "QMP input member 'execute' must be a string")]
#[case::execute_null(r#"{"execute": null}"#, "QMP input member 'execute' must be a string")]
#[case::foo(
    r#"{"execute":"guest-ping","foo":1}"#,
    "QMP input member 'foo' is unexpected"
)]
#[case::foo_first(
    r#"{"foo":1,"execute":"guest-ping"}"#,
    "QMP input member 'foo' is unexpected"
)]
#[case::exec_oob(
    r#"{"exec-oob":"guest-ping"}"#,
    "QMP input member 'exec-oob' is unexpected"
)]
#[case::control(
    r#"{"execute":"guest-ping","control":{}}"#,
    "QMP input member 'control' is unexpected"
)]
#[case::capital_execute(
    r#"{"Execute":"guest-ping"}"#,
    "QMP input member 'Execute' is unexpected"
)]
#[case::execute_before_foo(
    r#"{"execute":1,"foo":2}"#,
    "QMP input member 'execute' must be a string"
)]
#[case::arguments_before_foo(
    r#"{"execute":"guest-ping","arguments":1,"foo":2}"#,
    "QMP input member 'arguments' must be an object"
)]
#[case::arguments_before_lookup(
    r#"{"execute":"guest-nope","arguments":1}"#,
    "QMP input member 'arguments' must be an object"
)]
#[case::arguments_array(
    r#"{"execute":"guest-ping","arguments":[]}"#,
    "QMP input member 'arguments' must be an object"
)]
#[case::arguments_null(
    r#"{"execute":"guest-ping","arguments":null}"#,
    "QMP input member 'arguments' must be an object"
)]
#[case::arguments_string(
    r#"{"execute":"guest-ping","arguments":"x"}"#,
    "QMP input member 'arguments' must be an object"
)]
#[case::sync_arguments_null(
    r#"{"execute":"guest-sync","arguments":null}"#,
    "QMP input member 'arguments' must be an object"
)]
#[case::ping_argument(
    r#"{"execute":"guest-ping","arguments":{"x":1}}"#,
    "Parameter 'x' is unexpected"
)]
fn request_checks(#[case] request: &str, #[case] desc: &str) {
    let answer = ask_once(safe_config(), request);
    assert_eq!(answer, generic(desc, None));
}

#[rstest]
#[case::unknown("guest-foo")]
#[case::case_sensitive("GUEST-PING")]
#[case::trailing_space("guest-ping ")]
#[case::empty("")]
#[case::nul_inside("guest-ping\u{0}x")]
fn unknown_commands_are_not_found(#[case] name: &str) {
    let request = Object::new().with("execute", Value::from(name));
    let answer = Dispatcher::new(safe_config())
        .answer(Parsed::Value(request.into()), &mut FakeGuest::default())
        .0;
    assert_eq!(
        answer,
        not_found(&format!("The command {name} has not been found"), None)
    );
}

#[rstest]
#[case::shutdown(r#"{"execute":"guest-shutdown"}"#, "guest-shutdown")]
#[case::exec_with_arguments(
    r#"{"execute":"guest-exec","arguments":{"path":"/bin/true"}}"#,
    "guest-exec"
)]
#[case::self_disabled(r#"{"execute":"guest-get-devices"}"#, "guest-get-devices")]
#[case::disabled_beats_bad_arguments(
    r#"{"execute":"guest-set-time","arguments":{"time":"x"}}"#,
    "guest-set-time"
)]
fn blocked_commands_are_disabled_without_reason(#[case] request: &str, #[case] name: &str) {
    let mut guest = FakeGuest::default();
    let answer = ask(&mut Dispatcher::new(safe_config()), &mut guest, request);
    assert_eq!(
        answer,
        not_found(&format!("Command {name} has been disabled"), None)
    );
    assert!(guest.calls.is_empty());
}

/// qga-wire.md §2: guest-sync accepts int64 only and echoes it canonically.
#[rstest]
#[case::zero("0", Some(0))]
#[case::one("1", Some(1))]
#[case::negative("-1", Some(-1))]
#[case::max("9223372036854775807", Some(i64::MAX))]
#[case::min("-9223372036854775808", Some(i64::MIN))]
#[case::negative_zero("-0", Some(0))]
#[case::above_max("9223372036854775808", None)]
#[case::u64_max("18446744073709551615", None)]
#[case::above_u64("18446744073709551616", None)]
#[case::below_min("-9223372036854775809", None)]
#[case::huge("99999999999999999999999999999", None)]
#[case::exponent("1e3", None)]
#[case::integral_float("1.0", None)]
#[case::float("1.5", None)]
#[case::string(r#""abc""#, None)]
#[case::numeric_string(r#""1""#, None)]
#[case::bool("true", None)]
#[case::null("null", None)]
#[case::array("[]", None)]
#[case::object("{}", None)]
fn guest_sync_ids(#[case] id: &str, #[case] echoed: Option<i64>) {
    for command in ["guest-sync", "guest-sync-delimited"] {
        let request = format!(r#"{{"execute":"{command}","arguments":{{"id":{id}}}}}"#);
        let answer = ask_once(safe_config(), &request);
        let expected = match echoed {
            Some(n) => Answer::Return {
                value: Value::Int(n),
                delimited: command == "guest-sync-delimited",
                id: None,
            },
            None => generic("Invalid parameter type for 'id', expected: integer", None),
        };
        assert_eq!(answer, expected, "{request}");
    }
}

#[rstest]
#[case::no_arguments(r#"{"execute":"guest-sync"}"#, "Parameter 'id' is missing")]
#[case::empty_arguments(
    r#"{"execute":"guest-sync","arguments":{}}"#,
    "Parameter 'id' is missing"
)]
#[case::delimited_missing(r#"{"execute":"guest-sync-delimited"}"#, "Parameter 'id' is missing")]
#[case::extra(
    r#"{"execute":"guest-sync","arguments":{"id":1,"x":2}}"#,
    "Parameter 'x' is unexpected"
)]
#[case::leftover_bar(
    r#"{"execute":"guest-sync","arguments":{"id":1,"foo":2,"bar":3}}"#,
    "Parameter 'bar' is unexpected"
)]
#[case::leftover_aa(
    r#"{"execute":"guest-sync","arguments":{"id":1,"zz":3,"aa":2}}"#,
    "Parameter 'aa' is unexpected"
)]
#[case::missing_before_leftover(
    r#"{"execute":"guest-sync","arguments":{"foo":2}}"#,
    "Parameter 'id' is missing"
)]
#[case::type_before_leftover(
    r#"{"execute":"guest-sync","arguments":{"id":"x","foo":1}}"#,
    "Invalid parameter type for 'id', expected: integer"
)]
#[case::capital_id(
    r#"{"execute":"guest-sync","arguments":{"ID":1}}"#,
    "Parameter 'id' is missing"
)]
#[case::nul_in_key(
    "{\"execute\":\"guest-sync\",\"arguments\":{\"id\\u0000x\":5}}",
    "Parameter 'id' is missing"
)]
#[case::bad_whence(
    r#"{"execute":"guest-file-seek","arguments":{"handle":1,"offset":0,"whence":"bogus"}}"#,
    "Parameter 'whence' does not accept value 'bogus'"
)]
#[case::username_type(
    r#"{"execute":"guest-ssh-get-authorized-keys","arguments":{"username":1}}"#,
    "Invalid parameter type for 'username', expected: string"
)]
fn argument_errors(#[case] request: &str, #[case] desc: &str) {
    let mut guest = FakeGuest::default();
    let answer = ask(&mut Dispatcher::new(safe_config()), &mut guest, request);
    assert_eq!(answer, generic(desc, None));
    assert!(
        guest.calls.is_empty(),
        "no command runs after a failed check"
    );
}

#[test]
fn arguments_may_come_before_execute() {
    let answer = ask_once(
        safe_config(),
        r#"{"arguments":{"id":5},"execute":"guest-sync"}"#,
    );
    assert_eq!(answer, returns(Value::Int(5), None));
}

#[test]
fn ping_answers_an_empty_object() {
    for request in [
        r#"{"execute":"guest-ping"}"#,
        r#"{"execute":"guest-ping","arguments":{}}"#,
    ] {
        assert_eq!(ask_once(safe_config(), request), returns(empty(), None));
    }
}

/// qga-wire.md §5: once the input is an object, every reply echoes the id, of any type.
#[rstest]
#[case::int("42")]
#[case::string(r#""abc""#)]
#[case::null("null")]
#[case::bool("true")]
#[case::empty_string(r#""""#)]
#[case::object(r#"{"b":1,"a":2}"#)]
#[case::array(r#"[1,"a",null]"#)]
#[case::float("1.5")]
#[case::u64("18446744073709551615")]
fn ids_of_every_type_are_echoed(#[case] id: &str) {
    let id_value = parse(id);
    let cases = [
        (
            format!(r#"{{"execute":"guest-ping","id":{id}}}"#),
            returns(empty(), Some(id_value.clone())),
        ),
        (
            format!(r#"{{"id":{id},"execute":"guest-sync","arguments":{{"id":7}}}}"#),
            returns(Value::Int(7), Some(id_value.clone())),
        ),
        (
            format!(r#"{{"id":{id}}}"#),
            generic("QMP input lacks member 'execute'", Some(id_value.clone())),
        ),
        (
            format!(r#"{{"id":{id},"foo":1}}"#),
            generic(
                "QMP input member 'foo' is unexpected",
                Some(id_value.clone()),
            ),
        ),
        (
            format!(r#"{{"execute":"guest-nope","id":{id}}}"#),
            not_found(
                "The command guest-nope has not been found",
                Some(id_value.clone()),
            ),
        ),
        (
            format!(r#"{{"execute":"guest-exec","id":{id}}}"#),
            not_found(
                "Command guest-exec has been disabled",
                Some(id_value.clone()),
            ),
        ),
        (
            format!(r#"{{"execute":"guest-sync","id":{id}}}"#),
            generic("Parameter 'id' is missing", Some(id_value.clone())),
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(ask_once(safe_config(), &request), expected, "{request}");
    }
}

#[test]
fn delimited_success_is_marked_and_keeps_the_id() {
    let answer = ask_once(
        safe_config(),
        r#"{"execute":"guest-sync-delimited","arguments":{"id":5},"id":"x"}"#,
    );
    assert_eq!(
        answer,
        Answer::Return {
            value: Value::Int(5),
            delimited: true,
            id: Some(Value::from("x")),
        }
    );
}

#[test]
fn guest_info_matches_the_measured_reply() {
    let answer = ask_once(safe_config(), r#"{"execute":"guest-info"}"#);
    let Answer::Return {
        value,
        id: None,
        delimited: false,
    } = answer
    else {
        panic!("guest-info failed: {answer:?}");
    };
    let measured = parse(MEASURED_GUEST_INFO);
    let expected = measured.as_object().and_then(|o| o.get("return")).cloned();
    // Key order is the writer's business; compare the content.
    assert_eq!(Some(value.to_serde()), expected.map(|v| v.to_serde()));
}

#[test]
fn guest_info_lists_commands_newest_first_with_member_order() {
    let answer = ask_once(config("10.0.0", &[]), r#"{"execute":"guest-info"}"#);
    let Answer::Return { value, .. } = answer else {
        panic!("guest-info failed");
    };
    let info = value.as_object().expect("object");
    assert_eq!(
        info.keys().collect::<Vec<_>>(),
        ["version", "supported_commands"]
    );
    assert_eq!(info.get("version").and_then(Value::as_str), Some("10.0.0"));
    let commands = info
        .get("supported_commands")
        .and_then(Value::as_array)
        .expect("list");
    let first = commands[0].as_object().expect("entry");
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        ["name", "enabled", "success-response"]
    );
    assert_eq!(
        first.get("name").and_then(Value::as_str),
        Some("guest-network-get-route")
    );
    let last = commands.last().and_then(Value::as_object).expect("entry");
    assert_eq!(
        last.get("name").and_then(Value::as_str),
        Some("guest-sync-delimited")
    );
}

#[rstest]
#[case::no_id_before_4_0("3.1.0", None)]
#[case::id_from_4_0("4.0.0", Some(Value::Int(3)))]
fn id_echo_starts_in_4_0(#[case] version: &str, #[case] id: Option<Value>) {
    let answer = ask_once(config(version, &[]), r#"{"execute":"guest-ping","id":3}"#);
    assert_eq!(answer, returns(empty(), id.clone()));
    let answer = ask_once(config(version, &[]), r#"{"execute":"guest-nope","id":3}"#);
    assert_eq!(
        answer,
        not_found("The command guest-nope has not been found", id)
    );
}

#[rstest]
#[case::generic_before_4_2(
    "4.1.0",
    ErrorClass::GenericError,
    "The command guest-ping has been disabled for this instance"
)]
#[case::not_found_from_4_2(
    "4.2.0",
    ErrorClass::CommandNotFound,
    "The command guest-ping has been disabled for this instance"
)]
#[case::old_text_until_6_0(
    "5.2.0",
    ErrorClass::CommandNotFound,
    "The command guest-ping has been disabled for this instance"
)]
#[case::new_text_from_6_0(
    "6.0.0",
    ErrorClass::CommandNotFound,
    "Command guest-ping has been disabled"
)]
#[case::seven_two(
    "7.2.22",
    ErrorClass::CommandNotFound,
    "Command guest-ping has been disabled"
)]
fn disabled_text_by_version(#[case] version: &str, #[case] class: ErrorClass, #[case] desc: &str) {
    let answer = ask_once(
        config(version, &["guest-ping"]),
        r#"{"execute":"guest-ping"}"#,
    );
    assert_eq!(
        answer,
        Answer::Error {
            class,
            desc: desc.to_owned(),
            id: None
        }
    );
}

#[rstest]
#[case::devices_disabled_in_7_2(
    "7.2.22",
    "guest-get-devices",
    Some("Command guest-get-devices has been disabled")
)]
#[case::devices_disabled_in_9_0(
    "9.0.0",
    "guest-get-devices",
    Some("Command guest-get-devices has been disabled")
)]
#[case::devices_gone_in_9_1(
    "9.1.0",
    "guest-get-devices",
    Some("The command guest-get-devices has not been found")
)]
#[case::route_missing_in_7_2(
    "7.2.22",
    "guest-network-get-route",
    Some("The command guest-network-get-route has not been found")
)]
#[case::route_in_9_1("9.1.0", "guest-network-get-route", None)]
#[case::load_missing_in_9_2(
    "9.2.0",
    "guest-get-load",
    Some("The command guest-get-load has not been found")
)]
#[case::load_in_10_0("10.0.0", "guest-get-load", None)]
#[case::cpustats_missing_in_7_0(
    "7.0.0",
    "guest-get-cpustats",
    Some("The command guest-get-cpustats has not been found")
)]
#[case::exec_missing_in_2_4(
    "2.4.0",
    "guest-exec",
    Some("The command guest-exec has not been found")
)]
fn commands_by_version(#[case] version: &str, #[case] name: &str, #[case] error: Option<&str>) {
    let mut guest = FakeGuest::default();
    let request = format!(r#"{{"execute":"{name}"}}"#);
    let answer = ask(
        &mut Dispatcher::new(config(version, &[])),
        &mut guest,
        &request,
    );
    match error {
        Some(desc) => assert_eq!(answer, not_found(desc, None)),
        None => {
            assert_eq!(answer, returns(empty(), None));
            assert_eq!(guest.calls.len(), 1);
        }
    }
}

#[test]
fn guest_commands_get_their_checked_arguments() {
    let mut guest = FakeGuest::default().answering("guest-file-read", Ok(parse(r#"{"count":0}"#)));
    let mut dispatcher = Dispatcher::new(safe_config());
    let answer = ask(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-file-read","arguments":{"handle":1000,"count":4},"id":1}"#,
    );
    assert_eq!(
        answer,
        returns(parse(r#"{"count":0}"#), Some(Value::Int(1)))
    );
    assert_eq!(
        guest.calls,
        vec![(
            "guest-file-read".to_owned(),
            object(r#"{"handle":1000,"count":4}"#)
        )]
    );
}

#[test]
fn guest_errors_are_generic_with_the_id() {
    let mut guest = FakeGuest::default().answering(
        "guest-file-close",
        Err(GuestError("handle '12345' has not been found".to_owned())),
    );
    let answer = ask(
        &mut Dispatcher::new(safe_config()),
        &mut guest,
        r#"{"execute":"guest-file-close","arguments":{"handle":12345},"id":"c"}"#,
    );
    assert_eq!(
        answer,
        generic("handle '12345' has not been found", Some(Value::from("c")))
    );
}

#[rstest]
#[case::shutdown(r#"{"execute":"guest-shutdown","id":1}"#)]
#[case::shutdown_mode(r#"{"execute":"guest-shutdown","arguments":{"mode":"halt"}}"#)]
#[case::suspend_disk(r#"{"execute":"guest-suspend-disk","id":"s"}"#)]
#[case::suspend_ram(r#"{"execute":"guest-suspend-ram"}"#)]
#[case::suspend_hybrid(r#"{"execute":"guest-suspend-hybrid"}"#)]
fn no_reply_commands_are_silent_on_success(#[case] request: &str) {
    let mut guest = FakeGuest::default();
    let answer = ask(
        &mut Dispatcher::new(config("7.2.22", &[])),
        &mut guest,
        request,
    );
    assert_eq!(answer, Answer::Silent);
    assert_eq!(guest.calls.len(), 1);
}

#[test]
fn no_reply_commands_report_failures() {
    let mut guest = FakeGuest::default().answering(
        "guest-shutdown",
        Err(GuestError(
            "child process has failed to shutdown".to_owned(),
        )),
    );
    let answer = ask(
        &mut Dispatcher::new(config("7.2.22", &[])),
        &mut guest,
        r#"{"execute":"guest-shutdown","id":9}"#,
    );
    assert_eq!(
        answer,
        generic("child process has failed to shutdown", Some(Value::Int(9)))
    );
}

#[test]
fn no_reply_argument_errors_are_reported() {
    let answer = ask_once(
        config("7.2.22", &[]),
        r#"{"execute":"guest-shutdown","arguments":{"mode":1}}"#,
    );
    assert_eq!(
        answer,
        generic("Invalid parameter type for 'mode', expected: string", None)
    );
}

fn frozen_error(name: &str) -> Answer {
    not_found(
        &format!("Command {name} has been disabled: the agent is in frozen state"),
        None,
    )
}

fn enabled_in_info(dispatcher: &mut Dispatcher, guest: &mut FakeGuest, name: &str) -> Option<bool> {
    let Answer::Return { value, .. } = ask(dispatcher, guest, r#"{"execute":"guest-info"}"#) else {
        return None;
    };
    value
        .as_object()?
        .get("supported_commands")?
        .as_array()?
        .iter()
        .filter_map(Value::as_object)
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))?
        .get("enabled")?
        .as_bool()
}

#[test]
fn a_dispatcher_over_a_frozen_guest_starts_frozen() {
    let mut guest = FakeGuest::frozen();
    let mut dispatcher = Dispatcher::new(config("7.2.22", &[]));
    for allowed in [
        r#"{"execute":"guest-ping"}"#,
        r#"{"execute":"guest-sync","arguments":{"id":1}}"#,
        r#"{"execute":"guest-sync-delimited","arguments":{"id":1}}"#,
        r#"{"execute":"guest-info"}"#,
        r#"{"execute":"guest-fsfreeze-status"}"#,
    ] {
        let answer = ask(&mut dispatcher, &mut guest, allowed);
        assert!(
            matches!(answer, Answer::Return { .. }),
            "{allowed}: {answer:?}"
        );
    }
    for name in [
        "guest-get-time",
        "guest-fsfreeze-freeze",
        "guest-shutdown",
        "guest-file-open",
        "guest-exec",
    ] {
        let answer = ask(
            &mut dispatcher,
            &mut guest,
            &format!(r#"{{"execute":"{name}"}}"#),
        );
        assert_eq!(answer, frozen_error(name));
    }
    assert_eq!(
        enabled_in_info(&mut dispatcher, &mut guest, "guest-get-time"),
        Some(false)
    );
    assert_eq!(
        enabled_in_info(&mut dispatcher, &mut guest, "guest-ping"),
        Some(true)
    );
    // guest-get-devices is blocked after the frozen pass at start: no reason.
    let answer = ask(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-get-devices"}"#,
    );
    assert_eq!(
        answer,
        not_found("Command guest-get-devices has been disabled", None)
    );
    // Thawing re-enables everything but the blocked.
    let answer = ask(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-thaw"}"#,
    );
    assert_eq!(answer, returns(Value::Int(1), None));
    let answer = ask(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-get-time"}"#,
    );
    assert_eq!(answer, returns(empty(), None));
    assert_eq!(
        enabled_in_info(&mut dispatcher, &mut guest, "guest-get-devices"),
        Some(false)
    );
}

#[test]
fn freeze_and_thaw_through_commands() {
    let mut guest = FakeGuest::default();
    let mut dispatcher = Dispatcher::new(config("7.2.22", &["guest-exec"]));
    let answer = ask(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-freeze"}"#,
    );
    assert_eq!(answer, returns(Value::Int(1), None));
    assert_eq!(
        ask(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-fsfreeze-freeze"}"#
        ),
        frozen_error("guest-fsfreeze-freeze")
    );
    // The freeze overwrote the reason of the blocked command...
    assert_eq!(
        ask(&mut dispatcher, &mut guest, r#"{"execute":"guest-exec"}"#),
        frozen_error("guest-exec")
    );
    assert_eq!(
        ask(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-fsfreeze-thaw"}"#
        ),
        returns(Value::Int(1), None)
    );
    // ...and thawing does not re-enable it, so the frozen reason stays behind.
    assert_eq!(
        ask(&mut dispatcher, &mut guest, r#"{"execute":"guest-exec"}"#),
        frozen_error("guest-exec")
    );
    assert_eq!(
        ask(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        returns(empty(), None)
    );
}

#[test]
fn a_freeze_of_nothing_still_leaves_frozen_reasons_behind() {
    // qemu-ga enters the frozen state, freezes nothing and leaves it again.
    let mut guest = FakeGuest::default().answering("guest-fsfreeze-freeze-list", Ok(Value::Int(0)));
    let mut dispatcher = Dispatcher::new(config("7.2.22", &["guest-exec"]));
    let answer = ask(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["/nowhere"]}}"#,
    );
    assert_eq!(answer, returns(Value::Int(0), None));
    assert_eq!(
        ask(&mut dispatcher, &mut guest, r#"{"execute":"guest-exec"}"#),
        frozen_error("guest-exec")
    );
    assert_eq!(
        ask(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        returns(empty(), None)
    );
}

#[test]
fn a_hook_failure_changes_nothing() {
    let mut guest = FakeGuest::default().answering(
        "guest-fsfreeze-freeze",
        Err(GuestError(
            "fsfreeze hook has failed with status 1".to_owned(),
        )),
    );
    let mut dispatcher = Dispatcher::new(config("7.2.22", &["guest-exec"]));
    let answer = ask(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-freeze"}"#,
    );
    assert_eq!(
        answer,
        generic("fsfreeze hook has failed with status 1", None)
    );
    assert_eq!(
        ask(&mut dispatcher, &mut guest, r#"{"execute":"guest-exec"}"#),
        not_found("Command guest-exec has been disabled", None)
    );
}

#[test]
fn from_9_1_every_disabled_command_is_not_allowed() {
    let mut guest = FakeGuest::default();
    let mut dispatcher = Dispatcher::new(config("9.1.0", &["guest-exec"]));
    let not_allowed = |name: &str| {
        not_found(
            &format!("Command {name} has been disabled: the command is not allowed"),
            None,
        )
    };
    assert_eq!(
        ask(&mut dispatcher, &mut guest, r#"{"execute":"guest-exec"}"#),
        not_allowed("guest-exec")
    );
    ask(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-freeze"}"#,
    );
    assert_eq!(
        ask(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        not_allowed("guest-get-time")
    );
    ask(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-thaw"}"#,
    );
    assert_eq!(
        ask(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        returns(empty(), None)
    );
}

#[test]
fn allow_list_disables_the_rest_with_a_reason() {
    let mut dispatcher = Dispatcher::new(AgentConfig {
        version: "8.1.0".parse().expect("version"),
        block_rpcs: Vec::new(),
        allow_rpcs: Some(vec!["guest-ping".to_owned(), "guest-info".to_owned()]),
    });
    let mut guest = FakeGuest::default();
    assert_eq!(
        ask(&mut dispatcher, &mut guest, r#"{"execute":"guest-ping"}"#),
        returns(empty(), None)
    );
    assert_eq!(
        ask(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        not_found(
            "Command guest-get-time has been disabled: the command is not allowed",
            None
        )
    );
}

#[test]
fn an_external_thaw_is_followed() {
    let mut guest = FakeGuest::frozen();
    let mut dispatcher = Dispatcher::new(config("7.2.22", &[]));
    assert_eq!(
        ask(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        frozen_error("guest-get-time")
    );
    guest.frozen = false;
    assert_eq!(
        ask(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        returns(empty(), None)
    );
}

#[test]
fn the_command_name_is_reported_for_transcripts() {
    let mut dispatcher = Dispatcher::new(safe_config());
    let mut guest = FakeGuest::default();
    let (_, command) = dispatcher.answer(
        Parsed::Value(parse(r#"{"execute":"guest-nope","foo":1}"#)),
        &mut guest,
    );
    assert_eq!(command.as_deref(), Some("guest-nope"));
    let (_, command) = dispatcher.answer(Parsed::Value(parse(r#"{"execute":1}"#)), &mut guest);
    assert_eq!(command, None);
}

#[rstest]
#[case::plain(config("7.2.22", &["guest-exec"]), Ok(()))]
#[case::allow_in_7_2(
    AgentConfig { allow_rpcs: Some(vec!["guest-ping".to_owned()]), ..config("7.2.22", &[]) },
    Err(ConfigError::AllowListUnsupported { version: AgentVersion::V7_2_22 })
)]
#[case::both_in_8_1(
    AgentConfig { allow_rpcs: Some(vec!["guest-ping".to_owned()]), ..config("8.1.0", &["guest-exec"]) },
    Err(ConfigError::BlockAndAllowList { version: AgentVersion::new(8, 1, 0) })
)]
#[case::both_in_9_1(
    AgentConfig { allow_rpcs: Some(vec!["guest-ping".to_owned()]), ..config("9.1.0", &["guest-exec"]) },
    Ok(())
)]
fn config_validation(#[case] config: AgentConfig, #[case] expected: Result<(), ConfigError>) {
    assert_eq!(config.validate(), expected);
}

fn reply_bytes(config: AgentConfig, request: &str) -> Option<Vec<u8>> {
    let mut dispatcher = Dispatcher::new(config);
    let (answer, _) = dispatcher.answer(Parsed::Value(parse(request)), &mut FakeGuest::default());
    answer.encode()
}

/// qga-wire.md §0.3, §2, §3: the reply lines, with the id where QDict order puts it.
#[rstest]
#[case::ping(r#"{"execute":"guest-ping"}"#, b"{\"return\": {}}\n".as_slice())]
#[case::ping_id(r#"{"execute":"guest-ping","id":7}"#, b"{\"return\": {}, \"id\": 7}\n".as_slice())]
#[case::error_id(
    r#"{"execute":"guest-nope","id":7}"#,
    b"{\"id\": 7, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command guest-nope has not been found\"}}\n".as_slice()
)]
#[case::error(
    r#"{"execute":"guest-sync"}"#,
    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'id' is missing\"}}\n".as_slice()
)]
#[case::delimited(
    r#"{"execute":"guest-sync-delimited","arguments":{"id":5}}"#,
    b"\xff{\"return\": 5}\n".as_slice()
)]
#[case::delimited_id(
    r#"{"execute":"guest-sync-delimited","arguments":{"id":5},"id":"x"}"#,
    b"\xff{\"return\": 5, \"id\": \"x\"}\n".as_slice()
)]
#[case::delimited_error_unmarked(
    r#"{"execute":"guest-sync-delimited","arguments":{"id":"a"}}"#,
    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid parameter type for 'id', expected: integer\"}}\n".as_slice()
)]
#[case::sync_negative_zero(
    r#"{"execute":"guest-sync","arguments":{"id":-0}}"#,
    b"{\"return\": 0}\n".as_slice()
)]
#[case::reordered_id(
    r#"{"execute":"guest-ping","id":{"b":1,"a":2,"c":{"z":0,"y":[]}}}"#,
    b"{\"return\": {}, \"id\": {\"a\": 2, \"b\": 1, \"c\": {\"y\": [], \"z\": 0}}}\n".as_slice()
)]
#[case::colliding_id(
    r#"{"execute":"guest-ping","id":{"aa":1,"aq":2}}"#,
    b"{\"return\": {}, \"id\": {\"aq\": 2, \"aa\": 1}}\n".as_slice()
)]
fn reply_lines(#[case] request: &str, #[case] expected: &[u8]) {
    assert_eq!(
        reply_bytes(safe_config(), request).as_deref(),
        Some(expected)
    );
}

#[test]
fn guest_info_bytes_are_the_measured_ones() {
    let reply = reply_bytes(safe_config(), r#"{"execute":"guest-info"}"#);
    let mut expected = MEASURED_GUEST_INFO.as_bytes().to_vec();
    expected.push(b'\n');
    assert_eq!(expected.len(), 3237);
    assert_eq!(reply, Some(expected));
}

#[test]
fn silent_commands_write_nothing_even_with_an_id() {
    let reply = reply_bytes(
        config("7.2.22", &[]),
        r#"{"execute":"guest-shutdown","id":1}"#,
    );
    assert_eq!(reply, None);
}

// Through the real simulated guest: the frozen state comes from fsfreeze on the guest and
// survives an agent restart.

fn real_guest() -> Guest {
    Guest::new(crate::guest::Profile::default_linux())
}

fn ask_real(dispatcher: &mut Dispatcher, guest: &mut Guest, request: &str) -> Answer {
    dispatcher.answer(Parsed::Value(parse(request)), guest).0
}

#[test]
fn real_guest_freeze_disables_and_thaw_reenables() {
    let mut guest = real_guest();
    let mut dispatcher = Dispatcher::new(config("7.2.22", &["guest-exec"]));
    let frozen = ask_real(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-freeze"}"#,
    );
    assert!(matches!(frozen, Answer::Return { value: Value::Int(n), .. } if n >= 1));
    assert!(guest.is_frozen());
    assert_eq!(
        ask_real(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-fsfreeze-status"}"#
        ),
        returns(Value::from("frozen"), None)
    );
    for name in [
        "guest-get-time",
        "guest-fsfreeze-freeze",
        "guest-file-open",
        "guest-shutdown",
        "guest-exec",
    ] {
        let request = format!(r#"{{"execute":"{name}"}}"#);
        assert_eq!(
            ask_real(&mut dispatcher, &mut guest, &request),
            frozen_error(name)
        );
    }
    let thawed = ask_real(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-thaw"}"#,
    );
    assert!(matches!(thawed, Answer::Return { value: Value::Int(n), .. } if n >= 1));
    assert!(!guest.is_frozen());
    assert!(matches!(
        ask_real(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        Answer::Return { .. }
    ));
    // The blocked command keeps the reason the freeze wrote.
    assert_eq!(
        ask_real(&mut dispatcher, &mut guest, r#"{"execute":"guest-exec"}"#),
        frozen_error("guest-exec")
    );
}

#[test]
fn real_guest_frozen_state_survives_an_agent_restart() {
    let mut guest = real_guest();
    let blocked = ["guest-exec"];
    let mut dispatcher = Dispatcher::new(config("7.2.22", &blocked));
    ask_real(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-freeze"}"#,
    );
    assert!(guest.is_frozen());

    // The qemu-ga process restarts: a new dispatcher over the same guest.
    guest.agent_restarted();
    let mut dispatcher = Dispatcher::new(config("7.2.22", &blocked));
    assert_eq!(
        ask_real(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        frozen_error("guest-get-time")
    );
    // At start the block list is applied after the frozen pass: no reason.
    assert_eq!(
        ask_real(&mut dispatcher, &mut guest, r#"{"execute":"guest-exec"}"#),
        not_found("Command guest-exec has been disabled", None)
    );
    assert_eq!(
        ask_real(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-ping","id":1}"#
        ),
        returns(empty(), Some(Value::Int(1)))
    );
    ask_real(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-thaw"}"#,
    );
    assert!(matches!(
        ask_real(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        Answer::Return { .. }
    ));
    assert_eq!(
        ask_real(&mut dispatcher, &mut guest, r#"{"execute":"guest-exec"}"#),
        not_found("Command guest-exec has been disabled", None)
    );
}

#[test]
fn real_guest_freeze_of_no_mountpoint_leaves_frozen_reasons() {
    let mut guest = real_guest();
    let mut dispatcher = Dispatcher::new(config("7.2.22", &["guest-exec"]));
    let answer = ask_real(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["/nowhere"]}}"#,
    );
    assert_eq!(answer, returns(Value::Int(0), None));
    assert!(!guest.is_frozen());
    assert_eq!(
        ask_real(&mut dispatcher, &mut guest, r#"{"execute":"guest-exec"}"#),
        frozen_error("guest-exec")
    );
    assert!(matches!(
        ask_real(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-get-time"}"#
        ),
        Answer::Return { .. }
    ));
}

#[test]
fn real_guest_shutdown_is_silent_and_powers_off() {
    let mut guest = real_guest();
    let mut dispatcher = Dispatcher::new(config("7.2.22", &[]));
    let answer = ask_real(
        &mut dispatcher,
        &mut guest,
        r#"{"execute":"guest-shutdown","arguments":{"mode":"reboot"},"id":4}"#,
    );
    assert_eq!(answer, Answer::Silent);
    assert_eq!(
        guest.take_power_event(),
        Some(crate::guest::PowerEvent::Shutdown {
            mode: "reboot".to_owned()
        })
    );
}

#[test]
fn real_guest_errors_carry_the_id() {
    let mut guest = real_guest();
    let mut dispatcher = Dispatcher::new(safe_config());
    assert_eq!(
        ask_real(
            &mut dispatcher,
            &mut guest,
            r#"{"execute":"guest-file-close","arguments":{"handle":12345},"id":[1]}"#
        ),
        generic("handle '12345' has not been found", Some(parse("[1]")))
    );
}
