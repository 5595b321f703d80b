//! Unit tests of the simulated guest's command semantics.

use std::time::Duration;

use serde_json::{json, Value as Json};

use super::*;

fn guest() -> Guest {
    Guest::new(Profile::default_linux())
}

fn guest_with(edit: impl FnOnce(&mut Profile)) -> Guest {
    let mut profile = Profile::default_linux();
    edit(&mut profile);
    Guest::new(profile)
}

fn args(value: Json) -> Object {
    match Value::from_serde(&value) {
        Value::Object(o) => o,
        _ => Object::new(),
    }
}

/// Runs a command and returns its result as serde_json.
fn call(g: &mut Guest, command: &str, arguments: Json) -> Result<Json, String> {
    g.run(command, &args(arguments))
        .map(|v| v.to_serde())
        .map_err(|e| e.0)
}

fn ok(g: &mut Guest, command: &str, arguments: Json) -> Json {
    match call(g, command, arguments) {
        Ok(v) => v,
        Err(e) => panic!("{command} failed: {e}"),
    }
}

fn err(g: &mut Guest, command: &str, arguments: Json) -> String {
    match call(g, command, arguments) {
        Ok(v) => panic!("{command} succeeded: {v}"),
        Err(e) => e,
    }
}

fn keys(value: &Value) -> Vec<String> {
    value
        .as_object()
        .map(|o| o.keys().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn b64(text: &str) -> String {
    b64::encode(text.as_bytes())
}

// ---------------------------------------------------------------- read-only commands

#[test]
fn the_default_guest_is_the_measured_vm() {
    let mut g = guest();
    assert_eq!(g.profile().agent_version(), AgentVersion::V7_2_22);
    assert_eq!(
        ok(&mut g, "guest-get-host-name", json!({})),
        json!({"host-name": "vm"})
    );
    assert_eq!(
        ok(&mut g, "guest-get-timezone", json!({})),
        json!({"zone": "UTC", "offset": 0})
    );
    assert_eq!(
        ok(&mut g, "guest-get-vcpus", json!({})),
        json!([
            {"logical-id": 1, "online": true, "can-offline": true},
            {"logical-id": 0, "online": true, "can-offline": false}
        ])
    );
    let blocks = ok(&mut g, "guest-get-memory-blocks", json!({}));
    assert_eq!(blocks.as_array().map(Vec::len), Some(192));
    assert_eq!(
        blocks[0]["phys-index"], 188,
        "sysfs readdir order, not sorted"
    );
    assert_eq!(blocks[1]["phys-index"], 99);
    assert_eq!(
        ok(&mut g, "guest-get-memory-block-info", json!({})),
        json!({"size": 134217728})
    );
    let names: Vec<Json> = ok(&mut g, "guest-network-get-interfaces", json!({}))
        .as_array()
        .map(|a| a.iter().map(|i| i["name"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec![json!("lo"), json!("eth0")]);
    let fsinfo = ok(&mut g, "guest-get-fsinfo", json!({}));
    assert_eq!(fsinfo[0]["name"], "vda");
    assert_eq!(fsinfo[0]["type"], "ext4");
    assert_eq!(
        ok(&mut g, "guest-get-diskstats", json!({}))
            .as_array()
            .map(Vec::len),
        Some(10)
    );
    assert_eq!(ok(&mut g, "guest-get-users", json!({})), json!([]));
    assert_eq!(
        ok(&mut g, "guest-fsfreeze-status", json!({})),
        json!("thawed")
    );
}

#[test]
fn replies_insert_members_in_schema_order() {
    let mut g = guest();
    let osinfo = g
        .run("guest-get-osinfo", &Object::new())
        .unwrap_or(Value::Null);
    assert_eq!(
        keys(&osinfo),
        [
            "kernel-release",
            "kernel-version",
            "machine",
            "id",
            "name",
            "pretty-name",
            "version",
            "version-id"
        ]
    );
    let cpustats = g
        .run("guest-get-cpustats", &Object::new())
        .unwrap_or(Value::Null);
    let first = cpustats
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        keys(&first),
        [
            "type",
            "cpu",
            "user",
            "nice",
            "system",
            "idle",
            "iowait",
            "irq",
            "softirq",
            "steal",
            "guest",
            "guestnice"
        ]
    );
    let fsinfo = g
        .run("guest-get-fsinfo", &Object::new())
        .unwrap_or(Value::Null);
    let fs0 = fsinfo
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        keys(&fs0),
        [
            "name",
            "mountpoint",
            "type",
            "used-bytes",
            "total-bytes",
            "disk"
        ]
    );
}

#[test]
fn time_has_microsecond_granularity_and_follows_the_host_clock() {
    let mut g = guest();
    let ns = ok(&mut g, "guest-get-time", json!({}))
        .as_i64()
        .unwrap_or(0);
    assert_eq!(ns % 1000, 0);
    let host = host_now_us() * 1000;
    assert!((ns - host).abs() < 5_000_000_000, "{ns} vs {host}");
}

#[test]
fn fsinfo_reports_privileged_bytes_from_9_1() {
    let with = |version: &str| {
        guest_with(|p| {
            p.agent.version = version.parse().unwrap_or_default();
            p.fsinfo[0].total_bytes_privileged = Some(42);
        })
    };
    let old = ok(&mut with("7.2.22"), "guest-get-fsinfo", json!({}));
    assert!(old[0].get("total-bytes-privileged").is_none());
    let new = ok(&mut with("9.1.0"), "guest-get-fsinfo", json!({}));
    assert_eq!(new[0]["total-bytes-privileged"], 42);
}

#[test]
fn profile_errors_override_a_command() {
    let mut g = guest_with(|p| {
        p.errors
            .insert("guest-get-disks".into(), "failed to query udev".into());
    });
    assert_eq!(
        err(&mut g, "guest-get-disks", json!({})),
        "failed to query udev"
    );
}

#[test]
fn windows_only_commands_are_unsupported() {
    let mut g = guest();
    assert_eq!(
        err(&mut g, "guest-get-devices", json!({})),
        "this feature or command is not currently supported"
    );
}

// ---------------------------------------------------------------- files

#[test]
fn file_round_trip_matches_the_real_guest() {
    // The sequence measured on a real QEMU guest (qemu-guest.md §3).
    let mut g = guest();
    let h = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/tmp/qga-test.txt", "mode": "w+"}),
    );
    assert_eq!(h, json!(1000));
    assert_eq!(
        ok(
            &mut g,
            "guest-file-write",
            json!({"handle": 1000, "buf-b64": "aGVsbG8gZnJvbSBob3N0Cg=="})
        ),
        json!({"count": 16, "eof": false})
    );
    assert_eq!(
        ok(&mut g, "guest-file-flush", json!({"handle": 1000})),
        json!({})
    );
    assert_eq!(
        ok(
            &mut g,
            "guest-file-seek",
            json!({"handle": 1000, "offset": 0, "whence": "set"})
        ),
        json!({"position": 0, "eof": false})
    );
    assert_eq!(
        ok(
            &mut g,
            "guest-file-read",
            json!({"handle": 1000, "count": 4096})
        ),
        json!({"count": 16, "buf-b64": "aGVsbG8gZnJvbSBob3N0Cg==", "eof": true})
    );
    assert_eq!(
        ok(
            &mut g,
            "guest-file-read",
            json!({"handle": 1000, "count": 4096})
        ),
        json!({"count": 0, "buf-b64": "", "eof": true})
    );
    assert_eq!(
        ok(&mut g, "guest-file-close", json!({"handle": 1000})),
        json!({})
    );
    assert_eq!(
        err(&mut g, "guest-file-close", json!({"handle": 1000})),
        "handle '1000' has not been found"
    );
    assert_eq!(
        g.file_content("/tmp/qga-test.txt"),
        Some(b"hello from host\n".to_vec())
    );
}

#[test]
fn file_read_key_order_is_count_buf_eof() {
    let mut g = guest();
    let h = g
        .run("guest-file-open", &args(json!({"path": "/etc/hostname"})))
        .ok()
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let read = g
        .run("guest-file-read", &args(json!({"handle": h})))
        .unwrap_or(Value::Null);
    assert_eq!(keys(&read), ["count", "buf-b64", "eof"]);
    let seek = g
        .run(
            "guest-file-seek",
            &args(json!({"handle": h, "offset": 0, "whence": 0})),
        )
        .unwrap_or(Value::Null);
    assert_eq!(keys(&seek), ["position", "eof"]);
}

#[test]
fn eof_is_set_only_when_a_read_comes_up_short() {
    let mut g = guest();
    let h = ok(&mut g, "guest-file-open", json!({"path": "/etc/hostname"}));
    // "vm\n": exactly 3 bytes is not EOF yet; the next read is.
    assert_eq!(
        ok(&mut g, "guest-file-read", json!({"handle": h, "count": 3})),
        json!({"count": 3, "buf-b64": b64("vm\n"), "eof": false})
    );
    assert_eq!(
        ok(&mut g, "guest-file-read", json!({"handle": h, "count": 3})),
        json!({"count": 0, "buf-b64": "", "eof": true})
    );
    assert_eq!(
        ok(&mut g, "guest-file-read", json!({"handle": h, "count": 0})),
        json!({"count": 0, "buf-b64": "", "eof": false})
    );
}

#[rstest::rstest]
#[case::missing(
    "/nonexistent/x",
    "r",
    "failed to open file '/nonexistent/x' (mode: 'r'): No such file or directory"
)]
#[case::missing_parent(
    "/nonexistent/x",
    "w",
    "failed to open file '/nonexistent/x' (mode: 'w'): No such file or directory"
)]
#[case::not_found(
    "/tmp/none",
    "r+",
    "failed to open file '/tmp/none' (mode: 'r+'): No such file or directory"
)]
#[case::dir_for_writing("/tmp", "w", "failed to open file '/tmp' (mode: 'w'): Is a directory")]
#[case::file_as_dir(
    "/etc/hostname/x",
    "r",
    "failed to open file '/etc/hostname/x' (mode: 'r'): Not a directory"
)]
#[case::trailing_slash(
    "/etc/hostname/",
    "r",
    "failed to open file '/etc/hostname/' (mode: 'r'): Not a directory"
)]
#[case::bad_mode("/tmp/x", "rw", "invalid file open mode 'rw'")]
#[case::empty(
    "",
    "r",
    "failed to open file '' (mode: 'r'): No such file or directory"
)]
fn open_errors_have_qemus_texts(#[case] path: &str, #[case] mode: &str, #[case] text: &str) {
    let mut g = guest();
    assert_eq!(
        err(
            &mut g,
            "guest-file-open",
            json!({"path": path, "mode": mode})
        ),
        text
    );
}

#[test]
fn handles_count_up_from_1000_and_survive_a_restart_but_open_files_do_not() {
    let mut g = guest();
    assert_eq!(
        ok(&mut g, "guest-file-open", json!({"path": "/etc/hostname"})),
        json!(1000)
    );
    // A failed open does not use a handle.
    err(&mut g, "guest-file-open", json!({"path": "/nope"}));
    assert_eq!(
        ok(&mut g, "guest-file-open", json!({"path": "/etc/hostname"})),
        json!(1001)
    );
    ok(&mut g, "guest-file-close", json!({"handle": 1000}));
    assert_eq!(
        ok(&mut g, "guest-file-open", json!({"path": "/etc/hostname"})),
        json!(1002)
    );
    assert_eq!(g.open_handles(), vec![1001, 1002]);
    g.agent_restarted();
    assert!(g.open_handles().is_empty());
    assert_eq!(
        err(&mut g, "guest-file-read", json!({"handle": 1001})),
        "handle '1001' has not been found"
    );
    assert_eq!(
        ok(&mut g, "guest-file-open", json!({"path": "/etc/hostname"})),
        json!(1003)
    );
}

#[test]
fn open_handles_are_limited_like_file_descriptors() {
    let mut g = guest();
    for _ in 0..fs::MAX_OPEN {
        ok(&mut g, "guest-file-open", json!({"path": "/etc/hostname"}));
    }
    assert_eq!(
        err(&mut g, "guest-file-open", json!({"path": "/etc/hostname"})),
        "failed to open file '/etc/hostname' (mode: 'r'): Too many open files"
    );
    ok(&mut g, "guest-file-close", json!({"handle": 1000}));
    ok(&mut g, "guest-file-open", json!({"path": "/etc/hostname"}));
}

#[tokio::test(start_paused = true)]
async fn unreaped_processes_are_bounded() {
    let mut g = guest();
    for _ in 0..4096 {
        exec(&mut g, json!({"path": "true"}));
    }
    assert_eq!(
        err(&mut g, "guest-exec", json!({"path": "true"})),
        "Guest agent command failed, error was 'Failed to fork (Resource temporarily unavailable)'"
    );
    status(&mut g, 1200);
    exec(&mut g, json!({"path": "true"}));
}

#[test]
fn file_argument_errors_come_after_the_handle_lookup() {
    let mut g = guest();
    assert_eq!(
        err(
            &mut g,
            "guest-file-read",
            json!({"handle": 12345, "count": -1})
        ),
        "handle '12345' has not been found"
    );
    let h = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/tmp/f", "mode": "w+"}),
    );
    assert_eq!(
        err(&mut g, "guest-file-read", json!({"handle": h, "count": -1})),
        "value '-1' is invalid for argument count"
    );
    assert_eq!(
        err(
            &mut g,
            "guest-file-read",
            json!({"handle": h, "count": 48 * 1024 * 1024 + 1})
        ),
        "value '50331649' is invalid for argument count"
    );
    assert_eq!(
        err(
            &mut g,
            "guest-file-write",
            json!({"handle": h, "buf-b64": "aGk=", "count": 3})
        ),
        "value '3' is invalid for argument count"
    );
    assert_eq!(
        err(
            &mut g,
            "guest-file-write",
            json!({"handle": h, "buf-b64": "a b"})
        ),
        "Base64 data contains invalid characters"
    );
    assert_eq!(
        err(
            &mut g,
            "guest-file-seek",
            json!({"handle": h, "offset": 0, "whence": 3})
        ),
        "invalid whence code 3"
    );
    assert_eq!(
        err(
            &mut g,
            "guest-file-seek",
            json!({"handle": h, "offset": -1, "whence": "set"})
        ),
        "failed to seek file: Invalid argument"
    );
    // A partial count writes a prefix.
    assert_eq!(
        ok(
            &mut g,
            "guest-file-write",
            json!({"handle": h, "buf-b64": "aGk=", "count": 1})
        ),
        json!({"count": 1, "eof": false})
    );
    ok(&mut g, "guest-file-close", json!({"handle": h}));
    assert_eq!(g.file_content("/tmp/f"), Some(b"h".to_vec()));
}

#[test]
fn access_mode_errors() {
    let mut g = guest();
    let r = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/etc/hostname", "mode": "r"}),
    );
    assert_eq!(
        err(
            &mut g,
            "guest-file-write",
            json!({"handle": r, "buf-b64": "aGk="})
        ),
        "failed to write to file: Bad file descriptor"
    );
    let w = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/tmp/w", "mode": "w"}),
    );
    assert_eq!(
        err(&mut g, "guest-file-read", json!({"handle": w})),
        "failed to read file: Bad file descriptor"
    );
    let d = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/tmp", "mode": "r"}),
    );
    assert_eq!(
        err(&mut g, "guest-file-read", json!({"handle": d})),
        "failed to read file: Is a directory"
    );
}

#[test]
fn writes_reach_other_handles_only_after_a_flush() {
    let mut g = guest();
    let w = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/tmp/shared", "mode": "w"}),
    );
    let r = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/tmp/shared", "mode": "r"}),
    );
    ok(
        &mut g,
        "guest-file-write",
        json!({"handle": w, "buf-b64": b64("abc")}),
    );
    // glibc buffers a short first write: the reader sees nothing yet.
    assert_eq!(
        ok(&mut g, "guest-file-read", json!({"handle": r}))["count"],
        0
    );
    ok(&mut g, "guest-file-flush", json!({"handle": w}));
    assert_eq!(
        ok(&mut g, "guest-file-read", json!({"handle": r})),
        json!({"count": 3, "buf-b64": b64("abc"), "eof": true})
    );
    // A write of a whole buffer or more goes out at once, apart from the tail.
    let big = "x".repeat(5000);
    ok(
        &mut g,
        "guest-file-seek",
        json!({"handle": w, "offset": 0, "whence": "set"}),
    );
    ok(
        &mut g,
        "guest-file-write",
        json!({"handle": w, "buf-b64": b64(&big)}),
    );
    assert_eq!(g.file_content("/tmp/shared").map(|c| c.len()), Some(4096));
    // Unflushed data dies with the agent.
    g.agent_restarted();
    assert_eq!(g.file_content("/tmp/shared").map(|c| c.len()), Some(4096));
}

#[test]
fn append_mode_writes_at_the_end() {
    let mut g = guest();
    let a = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/etc/hostname", "mode": "a+"}),
    );
    ok(
        &mut g,
        "guest-file-write",
        json!({"handle": a, "buf-b64": b64("more\n")}),
    );
    assert_eq!(
        ok(
            &mut g,
            "guest-file-seek",
            json!({"handle": a, "offset": 0, "whence": "cur"})
        ),
        json!({"position": 8, "eof": false})
    );
    ok(
        &mut g,
        "guest-file-seek",
        json!({"handle": a, "offset": 0, "whence": "set"}),
    );
    ok(
        &mut g,
        "guest-file-write",
        json!({"handle": a, "buf-b64": b64("!")}),
    );
    ok(&mut g, "guest-file-close", json!({"handle": a}));
    assert_eq!(
        g.file_content("/etc/hostname"),
        Some(b"vm\nmore\n!".to_vec())
    );
    // "w" truncates.
    let w = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/etc/hostname", "mode": "wb"}),
    );
    ok(&mut g, "guest-file-close", json!({"handle": w}));
    assert_eq!(g.file_content("/etc/hostname"), Some(Vec::new()));
}

#[test]
fn devices_read_as_linux_devices_do() {
    let mut g = guest();
    let z = ok(&mut g, "guest-file-open", json!({"path": "/dev/zero"}));
    assert_eq!(
        ok(&mut g, "guest-file-read", json!({"handle": z, "count": 3})),
        json!({"count": 3, "buf-b64": "AAAA", "eof": false})
    );
    let n = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/dev/null", "mode": "r+"}),
    );
    assert_eq!(
        ok(
            &mut g,
            "guest-file-write",
            json!({"handle": n, "buf-b64": "aGk="})
        ),
        json!({"count": 2, "eof": false})
    );
    assert_eq!(
        ok(&mut g, "guest-file-read", json!({"handle": n})),
        json!({"count": 0, "buf-b64": "", "eof": true})
    );
}

#[test]
fn the_file_system_is_bounded() {
    let mut g = guest_with(|p| p.fs_capacity_bytes = 10_000);
    let h = ok(
        &mut g,
        "guest-file-open",
        json!({"path": "/tmp/big", "mode": "w"}),
    );
    let chunk = b64(&"y".repeat(8000));
    ok(
        &mut g,
        "guest-file-write",
        json!({"handle": h, "buf-b64": chunk}),
    );
    assert_eq!(
        err(
            &mut g,
            "guest-file-write",
            json!({"handle": h, "buf-b64": chunk})
        ),
        "failed to write to file: No space left on device"
    );
    // A seek far past the end cannot make the simulation allocate the gap.
    ok(
        &mut g,
        "guest-file-seek",
        json!({"handle": h, "offset": 1_i64 << 60, "whence": "set"}),
    );
    assert_eq!(
        err(
            &mut g,
            "guest-file-write",
            json!({"handle": h, "buf-b64": "aGk="})
        ),
        "failed to write to file: No space left on device"
    );
}

// ---------------------------------------------------------------- exec

fn exec(g: &mut Guest, arguments: Json) -> i64 {
    ok(g, "guest-exec", arguments)["pid"].as_i64().unwrap_or(-1)
}

fn status(g: &mut Guest, pid: i64) -> Json {
    ok(g, "guest-exec-status", json!({ "pid": pid }))
}

#[tokio::test(start_paused = true)]
async fn exec_echo_is_reaped_on_the_first_exited_status() {
    let mut g = guest();
    let pid = exec(
        &mut g,
        json!({"path": "/bin/echo", "arg": ["hi"], "capture-output": true}),
    );
    assert_eq!(pid, 1200);
    assert_eq!(
        status(&mut g, pid),
        json!({"exited": true, "exitcode": 0, "out-data": "aGkK", "out-truncated": false})
    );
    assert_eq!(
        err(&mut g, "guest-exec-status", json!({"pid": pid})),
        "Invalid parameter 'pid'"
    );
    let record = g
        .run("guest-exec", &args(json!({"path": "true"})))
        .unwrap_or(Value::Null);
    assert_eq!(keys(&record), ["pid"]);
}

#[tokio::test(start_paused = true)]
async fn exec_status_key_order_follows_the_schema() {
    let mut g = guest();
    let pid = exec(
        &mut g,
        json!({"path": "sh", "arg": ["-c", "echo out; echo err >&2; exit 1"], "capture-output": true}),
    );
    let st = g
        .run("guest-exec-status", &args(json!({ "pid": pid })))
        .unwrap_or(Value::Null);
    assert_eq!(
        keys(&st),
        [
            "exited",
            "exitcode",
            "out-data",
            "err-data",
            "out-truncated",
            "err-truncated"
        ]
    );
    assert_eq!(
        st.to_serde(),
        json!({"exited": true, "exitcode": 1, "out-data": "b3V0Cg==", "err-data": "ZXJyCg==",
               "out-truncated": false, "err-truncated": false})
    );
}

#[tokio::test(start_paused = true)]
async fn a_sleeping_process_has_not_exited_until_its_time_has_passed() {
    let mut g = guest();
    let pid = exec(&mut g, json!({"path": "/bin/sleep", "arg": ["2"]}));
    assert_eq!(status(&mut g, pid), json!({"exited": false}));
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert_eq!(status(&mut g, pid), json!({"exited": false}));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(status(&mut g, pid), json!({"exited": true, "exitcode": 0}));
}

#[rstest::rstest]
#[case::exit_code(json!(["-c", "exit 3"]), json!({"exited": true, "exitcode": 3}))]
#[case::killed(json!(["-c", "kill -9 $$"]), json!({"exited": true, "signal": 9}))]
#[case::false_then_or(json!(["-c", "false || exit 4"]), json!({"exited": true, "exitcode": 4}))]
#[case::and_chain(json!(["-c", "true && echo yes"]), json!({"exited": true, "exitcode": 0, "out-data": "eWVzCg==", "out-truncated": false}))]
#[case::status_var(json!(["-c", "false; echo $?"]), json!({"exited": true, "exitcode": 0, "out-data": "MQo=", "out-truncated": false}))]
#[case::not_found(json!(["-c", "nosuchcmd"]), json!({"exited": true, "exitcode": 127, "err-data": b64("sh: 1: nosuchcmd: not found\n"), "err-truncated": false}))]
#[case::unsupported(json!(["-c", "ls | wc -l"]), json!({"exited": true, "exitcode": 2, "err-data": b64("sh: the simulated guest's shell does not support pipelines (|)\n"), "err-truncated": false}))]
#[tokio::test(start_paused = true)]
async fn the_simulated_shell(#[case] arg: Json, #[case] want: Json) {
    let mut g = guest();
    let pid = exec(
        &mut g,
        json!({"path": "/bin/sh", "arg": arg, "capture-output": true}),
    );
    assert_eq!(status(&mut g, pid), want);
}

#[rstest::rstest]
#[case::both_to_null(">/dev/null 2>&1", "")]
#[case::dup_before_null("2>&1 >/dev/null", "err\n")]
#[case::stderr_to_stdout("2>&1", "out\nerr\n")]
#[tokio::test(start_paused = true)]
async fn shell_redirections_apply_left_to_right(#[case] redirect: &str, #[case] stdout: &str) {
    let mut g = guest_with(|p| {
        p.exec.processes.push(ScriptedProcess {
            path: "/usr/bin/both".into(),
            args: None,
            stdout: Some(ProcessOutput {
                text: Some("out\n".into()),
                base64: None,
                repeat: 1,
            }),
            stderr: Some(ProcessOutput {
                text: Some("err\n".into()),
                base64: None,
                repeat: 1,
            }),
            exit: Termination::Code(0),
            duration_ms: 0,
            runs_forever: false,
        })
    });
    let script = format!("both {redirect}");
    let pid = exec(
        &mut g,
        json!({"path": "sh", "arg": ["-c", script], "capture-output": true}),
    );
    let st = status(&mut g, pid);
    let out = st["out-data"]
        .as_str()
        .map(|d| b64::decode_strict(d).unwrap_or_default());
    assert_eq!(out.unwrap_or_default(), stdout.as_bytes());
}

#[tokio::test(start_paused = true)]
async fn a_script_that_runs_itself_never_ends_and_huge_sleeps_do_not_overflow() {
    let mut g = guest_with(|p| {
        p.files.insert(
            "/tmp/loop.sh".into(),
            FileContent::Text("sh /tmp/loop.sh\n".into()),
        );
    });
    let pid = exec(&mut g, json!({"path": "sh", "arg": ["/tmp/loop.sh"]}));
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(status(&mut g, pid), json!({"exited": false}));
    let script = "sleep 3000000000; ".repeat(200);
    let pid = exec(&mut g, json!({"path": "sh", "arg": ["-c", script]}));
    assert_eq!(status(&mut g, pid), json!({"exited": false}));
}

#[tokio::test(start_paused = true)]
async fn sh_reads_its_script_from_stdin_and_programs_follow_path() {
    let mut g = guest();
    let pid = exec(
        &mut g,
        json!({"path": "sh", "input-data": b64("A=1\necho \"$A $0\"\nexit 5\n"), "capture-output": true}),
    );
    assert_eq!(
        status(&mut g, pid),
        json!({"exited": true, "exitcode": 5, "out-data": b64("1 sh\n"), "out-truncated": false})
    );
    // With PATH set by the caller, bare names are searched there only.
    assert_eq!(
        err(&mut g, "guest-exec", json!({"path": "echo", "env": ["PATH=/opt"]})),
        "Guest agent command failed, error was 'Failed to execute child process \u{201C}echo\u{201D} (No such file or directory)'"
    );
}

#[tokio::test(start_paused = true)]
async fn cat_reads_stdin_and_simulated_files() {
    let mut g = guest();
    let pid = exec(
        &mut g,
        json!({"path": "/bin/cat", "input-data": "cGlwZWQK", "capture-output": true}),
    );
    assert_eq!(
        status(&mut g, pid),
        json!({"exited": true, "exitcode": 0, "out-data": "cGlwZWQK", "out-truncated": false})
    );
    let pid = exec(
        &mut g,
        json!({"path": "cat", "arg": ["/etc/hostname", "/nope"], "capture-output": true}),
    );
    assert_eq!(
        status(&mut g, pid),
        json!({"exited": true, "exitcode": 1, "out-data": b64("vm\n"),
               "err-data": b64("cat: /nope: No such file or directory\n"),
               "out-truncated": false, "err-truncated": false})
    );
}

#[tokio::test(start_paused = true)]
async fn spawn_failures_name_the_program() {
    let mut g = guest();
    assert_eq!(
        err(&mut g, "guest-exec", json!({"path": "/nonexistent"})),
        "Guest agent command failed, error was 'Failed to execute child process \u{201C}/nonexistent\u{201D} (No such file or directory)'"
    );
    assert_eq!(
        err(&mut g, "guest-exec", json!({"path": "/etc/hostname"})),
        "Guest agent command failed, error was 'Failed to execute child process \u{201C}/etc/hostname\u{201D} (Permission denied)'"
    );
    // A failed spawn uses no pid.
    assert_eq!(exec(&mut g, json!({"path": "true"})), 1200);
    assert_eq!(
        err(
            &mut g,
            "guest-exec",
            json!({"path": "true", "input-data": "!"})
        ),
        "Base64 data contains invalid characters"
    );
}

#[tokio::test(start_paused = true)]
async fn scripted_processes_and_truncation() {
    let mut g = guest_with(|p| {
        p.exec.processes.push(ScriptedProcess {
            path: "/usr/bin/flood".into(),
            args: None,
            stdout: Some(ProcessOutput {
                text: Some("0123456789abcdef".into()),
                base64: None,
                repeat: 2 * 1024 * 1024,
            }),
            stderr: Some(ProcessOutput {
                text: Some("warn\n".into()),
                base64: None,
                repeat: 1,
            }),
            exit: Termination::Signal(15),
            duration_ms: 500,
            runs_forever: false,
        });
    });
    let pid = exec(&mut g, json!({"path": "flood", "capture-output": true}));
    assert_eq!(status(&mut g, pid), json!({"exited": false}));
    tokio::time::advance(Duration::from_millis(500)).await;
    let st = status(&mut g, pid);
    assert_eq!(st["signal"], 15);
    assert_eq!(st["out-truncated"], true);
    assert_eq!(st["err-truncated"], false);
    let out = b64::decode_strict(st["out-data"].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(out.len(), exec::MAX_OUTPUT);
}

#[tokio::test(start_paused = true)]
async fn capture_modes_select_the_streams() {
    let mut g = guest_with(|p| p.agent.version = AgentVersion::new(8, 1, 0));
    let script = json!(["-c", "echo out; echo err >&2"]);
    let run = |g: &mut Guest, mode: Json| {
        let pid = exec(
            g,
            json!({"path": "sh", "arg": script, "capture-output": mode}),
        );
        status(g, pid)
    };
    assert_eq!(
        run(&mut g, json!("none")),
        json!({"exited": true, "exitcode": 0})
    );
    assert_eq!(run(&mut g, json!("stdout"))["out-data"], b64("out\n"));
    assert!(run(&mut g, json!("stdout")).get("err-data").is_none());
    assert_eq!(run(&mut g, json!("stderr"))["err-data"], b64("err\n"));
    assert_eq!(run(&mut g, json!("merged"))["out-data"], b64("out\nerr\n"));
    assert_eq!(
        run(&mut g, json!(false)),
        json!({"exited": true, "exitcode": 0})
    );
    // Before 8.1, capture-output is a bool only.
    let mut old = guest();
    assert_eq!(
        err(
            &mut old,
            "guest-exec",
            json!({"path": "true", "capture-output": "merged"})
        ),
        "Invalid parameter type for 'capture-output', expected: boolean"
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_pid_text_depends_on_the_version() {
    let mut g = guest_with(|p| p.agent.version = AgentVersion::new(8, 2, 0));
    assert_eq!(
        err(&mut g, "guest-exec-status", json!({"pid": 0})),
        "PID ld does not exist"
    );
    let mut g = guest_with(|p| p.agent.version = AgentVersion::new(8, 1, 3));
    assert_eq!(
        err(&mut g, "guest-exec-status", json!({"pid": 0})),
        "Invalid parameter 'pid'"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_forgets_exec_records_but_not_the_pid_counter() {
    let mut g = guest();
    let pid = exec(&mut g, json!({"path": "sleep", "arg": ["infinity"]}));
    assert_eq!(status(&mut g, pid), json!({"exited": false}));
    g.agent_restarted();
    assert_eq!(
        err(&mut g, "guest-exec-status", json!({"pid": pid})),
        "Invalid parameter 'pid'"
    );
    assert_eq!(exec(&mut g, json!({"path": "true"})), pid + 1);
}

// ---------------------------------------------------------------- fsfreeze, fstrim

#[test]
fn freeze_counts_filesystems_and_the_frozen_state_survives_a_restart() {
    let mut g = guest();
    assert_eq!(ok(&mut g, "guest-fsfreeze-freeze", json!({})), json!(1));
    assert!(g.is_frozen());
    assert_eq!(
        ok(&mut g, "guest-fsfreeze-status", json!({})),
        json!("frozen")
    );
    g.agent_restarted();
    assert!(g.is_frozen());
    assert_eq!(ok(&mut g, "guest-fsfreeze-thaw", json!({})), json!(1));
    assert!(!g.is_frozen());
    assert_eq!(ok(&mut g, "guest-fsfreeze-thaw", json!({})), json!(0));
}

#[test]
fn freezing_nothing_leaves_the_guest_thawed() {
    let mut g = guest_with(|p| p.fsinfo.clear());
    assert_eq!(ok(&mut g, "guest-fsfreeze-freeze", json!({})), json!(0));
    assert!(!g.is_frozen());
    let mut g = guest();
    assert_eq!(
        ok(
            &mut g,
            "guest-fsfreeze-freeze-list",
            json!({"mountpoints": ["/srv"]})
        ),
        json!(0)
    );
    assert!(!g.is_frozen());
    assert_eq!(
        ok(
            &mut g,
            "guest-fsfreeze-freeze-list",
            json!({"mountpoints": ["/"]})
        ),
        json!(1)
    );
    assert!(g.is_frozen());
}

#[test]
fn bind_mounts_and_unfreezable_filesystems_are_not_counted() {
    let mut g = guest_with(|p| {
        let mut bind = p.fsinfo[0].clone();
        bind.mountpoint = "/mnt".into();
        let mut vfat = p.fsinfo[0].clone();
        vfat.name = "vdb".into();
        vfat.mountpoint = "/boot/efi".into();
        vfat.freezable = false;
        p.fsinfo.extend([bind, vfat]);
    });
    assert_eq!(ok(&mut g, "guest-fsfreeze-freeze", json!({})), json!(1));
    assert_eq!(ok(&mut g, "guest-fsfreeze-thaw", json!({})), json!(1));
}

#[test]
fn freeze_hook_failures() {
    let hook = |freeze_status, thaw_status, present| {
        guest_with(move |p| {
            p.fsfreeze.hook = Some(FsfreezeHook {
                path: "/etc/qemu/fsfreeze-hook".into(),
                present,
                freeze_status,
                thaw_status,
            })
        })
    };
    let mut g = hook(3, 0, true);
    assert_eq!(
        err(&mut g, "guest-fsfreeze-freeze", json!({})),
        "fsfreeze hook has failed with status 3"
    );
    assert!(!g.is_frozen());
    let mut g = hook(0, 1, true);
    ok(&mut g, "guest-fsfreeze-freeze", json!({}));
    assert_eq!(
        err(&mut g, "guest-fsfreeze-thaw", json!({})),
        "fsfreeze hook has failed with status 1"
    );
    assert!(
        !g.is_frozen(),
        "thaw leaves the frozen state before running the hook"
    );
    let mut g = hook(0, 0, false);
    assert_eq!(
        err(&mut g, "guest-fsfreeze-freeze", json!({})),
        "can't access fsfreeze hook '/etc/qemu/fsfreeze-hook': No such file or directory"
    );
}

#[test]
fn a_guest_can_start_frozen() {
    let mut g = guest_with(|p| p.fsfreeze.frozen = true);
    assert!(g.is_frozen());
    assert_eq!(ok(&mut g, "guest-fsfreeze-thaw", json!({})), json!(1));
}

#[test]
fn fstrim_reports_each_filesystem() {
    let mut g = guest_with(|p| {
        let mut other = p.fsinfo[0].clone();
        other.mountpoint = "/data".into();
        other.trim = TrimOutcome::Error("trim not supported".into());
        p.fsinfo.push(other);
        p.fsinfo[0].trim = TrimOutcome::Trimmed(4096);
    });
    assert_eq!(
        ok(&mut g, "guest-fstrim", json!({"minimum": 512})),
        json!({"paths": [
            {"path": "/", "trimmed": 4096, "minimum": 512},
            {"path": "/data", "error": "trim not supported"}
        ]})
    );
}

// ---------------------------------------------------------------- power

#[rstest::rstest]
#[case(json!({}), "powerdown")]
#[case(json!({"mode": "powerdown"}), "powerdown")]
#[case(json!({"mode": "halt"}), "halt")]
#[case(json!({"mode": "reboot"}), "reboot")]
fn shutdown_sets_a_power_event(#[case] arguments: Json, #[case] mode: &str) {
    let mut g = guest();
    assert_eq!(ok(&mut g, "guest-shutdown", arguments), json!({}));
    assert_eq!(
        g.take_power_event(),
        Some(PowerEvent::Shutdown { mode: mode.into() })
    );
    assert_eq!(g.take_power_event(), None);
}

#[test]
fn shutdown_and_suspend_failures() {
    let mut g = guest_with(|p| {
        p.power.suspend_disk_error =
            Some("the requested suspend mode is not supported by the guest".into())
    });
    assert_eq!(
        err(&mut g, "guest-shutdown", json!({"mode": "off"})),
        "mode is invalid (valid values are: halt|powerdown|reboot"
    );
    assert_eq!(
        err(&mut g, "guest-suspend-disk", json!({})),
        "the requested suspend mode is not supported by the guest"
    );
    assert_eq!(g.take_power_event(), None);
    ok(&mut g, "guest-suspend-ram", json!({}));
    assert_eq!(
        g.take_power_event(),
        Some(PowerEvent::Suspend { kind: "ram".into() })
    );
    let mut g = guest_with(|p| {
        p.power.shutdown_error = Some("child process has failed to shutdown".into())
    });
    assert_eq!(
        err(&mut g, "guest-shutdown", json!({})),
        "child process has failed to shutdown"
    );
}

// ---------------------------------------------------------------- time

#[test]
fn set_time_moves_the_guest_clock() {
    let mut g = guest();
    let target: i64 = 2_000_000_000_123_456_789;
    ok(&mut g, "guest-set-time", json!({ "time": target }));
    let now = ok(&mut g, "guest-get-time", json!({}))
        .as_i64()
        .unwrap_or(0);
    assert!(
        now >= 2_000_000_000_123_456_000 && now < target + 5_000_000_000,
        "{now}"
    );
    // Without a time, the system clock is set from the RTC, which hwclock -w updated.
    ok(&mut g, "guest-set-time", json!({}));
    let again = ok(&mut g, "guest-get-time", json!({}))
        .as_i64()
        .unwrap_or(0);
    assert!(again >= now);
}

#[test]
fn set_time_from_the_rtc_restores_its_offset() {
    let mut g = guest_with(|p| p.clock.rtc_offset_ns = Some(-3_600_000_000_000));
    ok(&mut g, "guest-set-time", json!({}));
    let now = ok(&mut g, "guest-get-time", json!({}))
        .as_i64()
        .unwrap_or(0);
    let host = host_now_us() * 1000;
    assert!((host - 3_600_000_000_000 - now).abs() < 5_000_000_000);
}

#[rstest::rstest]
#[case::before_1970(-1_000_000_000, "Invalid time: Success")]
#[case::year_2070(3_155_760_000_000_000_000, "Invalid time: Success")]
#[case::negative_usec(-1000, "Failed to set time to guest: Invalid argument")]
// Measured on qemu-ga 7.2 in a real guest: the kernel refuses a wall time before boot
// (earlier than CLOCK_MONOTONIC), here the epoch itself and one second after it.
#[case::before_boot(-1, "Failed to set time to guest: Invalid argument")]
#[case::one_second_after_the_epoch(1_000_000_000, "Failed to set time to guest: Invalid argument")]
fn set_time_rejects_out_of_range_times(#[case] time: i64, #[case] text: &str) {
    let mut g = guest();
    assert_eq!(err(&mut g, "guest-set-time", json!({ "time": time })), text);
}

#[test]
fn set_time_needs_hwclock() {
    let mut g = guest_with(|p| p.clock.hwclock = Hwclock::Missing);
    assert_eq!(
        err(&mut g, "guest-set-time", json!({})),
        "this feature or command is not currently supported"
    );
    let mut g = guest_with(|p| p.clock.hwclock = Hwclock::Fails);
    assert_eq!(
        err(
            &mut g,
            "guest-set-time",
            json!({"time": 2_000_000_000_000_000_000_i64})
        ),
        "hwclock failed to set hardware clock to system time"
    );
}

#[test]
fn civil_year_boundaries() {
    assert_eq!(civil_year(0), 1970);
    assert_eq!(civil_year(-1), 1969);
    assert_eq!(civil_year(3_155_759_999), 2069);
    assert_eq!(civil_year(3_155_760_000), 2070);
}

// ---------------------------------------------------------------- vcpus, memory

#[test]
fn set_vcpus_processes_a_prefix() {
    let mut g = guest();
    assert_eq!(
        ok(
            &mut g,
            "guest-set-vcpus",
            json!({"vcpus": [{"logical-id": 1, "online": false}]})
        ),
        json!(1)
    );
    assert_eq!(ok(&mut g, "guest-get-vcpus", json!({}))[0]["online"], false);
    // cpu0 cannot go offline: an error when it is the first, a short count otherwise.
    assert_eq!(
        err(
            &mut g,
            "guest-set-vcpus",
            json!({"vcpus": [{"logical-id": 0, "online": false}]})
        ),
        "logical processor #0 can't be offlined"
    );
    assert_eq!(
        ok(
            &mut g,
            "guest-set-vcpus",
            json!({"vcpus": [
                {"logical-id": 1, "online": true},
                {"logical-id": 0, "online": false},
                {"logical-id": 1, "online": false}
            ]})
        ),
        json!(1)
    );
    assert_eq!(ok(&mut g, "guest-get-vcpus", json!({}))[0]["online"], true);
    assert_eq!(
        err(
            &mut g,
            "guest-set-vcpus",
            json!({"vcpus": [{"logical-id": 7, "online": true}]})
        ),
        "open(\"/sys/devices/system/cpu/cpu7/\"): No such file or directory"
    );
    assert_eq!(
        ok(&mut g, "guest-set-vcpus", json!({"vcpus": []})),
        json!(0)
    );
    // Re-onlining cpu0 is a no-op success.
    assert_eq!(
        ok(
            &mut g,
            "guest-set-vcpus",
            json!({"vcpus": [{"logical-id": 0, "online": true}]})
        ),
        json!(1)
    );
}

#[test]
fn set_memory_blocks_answers_per_block() {
    let mut g = guest_with(|p| p.memory_blocks[1].can_offline = Some(false));
    let reply = g
        .run(
            "guest-set-memory-blocks",
            &args(json!({"mem-blks": [
                {"phys-index": 188, "online": false},
                {"phys-index": 99, "online": false},
                {"phys-index": 5000, "online": true},
                {"phys-index": 121, "online": true}
            ]})),
        )
        .unwrap_or(Value::Null);
    assert_eq!(
        reply.to_serde(),
        json!([
            {"phys-index": 188, "response": "success"},
            {"phys-index": 99, "response": "operation-failed", "error-code": 16},
            {"phys-index": 5000, "response": "not-found", "error-code": 2},
            {"phys-index": 121, "response": "success"}
        ])
    );
    let first = reply
        .as_array()
        .and_then(|a| a.get(1))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(keys(&first), ["phys-index", "response", "error-code"]);
    assert_eq!(
        ok(&mut g, "guest-get-memory-blocks", json!({}))[0]["online"],
        false
    );
}

#[test]
fn a_guest_without_memory_sysfs() {
    let mut g = guest_with(|p| p.memory_blocks.clear());
    assert_eq!(ok(&mut g, "guest-get-memory-blocks", json!({})), json!([]));
    assert_eq!(
        err(&mut g, "guest-get-memory-block-info", json!({})),
        "open(\"/sys/devices/system/memory/\"): No such file or directory"
    );
    assert_eq!(
        ok(
            &mut g,
            "guest-set-memory-blocks",
            json!({"mem-blks": [{"phys-index": 1, "online": true}]})
        ),
        json!([{"phys-index": 1, "response": "operation-not-supported", "error-code": 2}])
    );
}

// ---------------------------------------------------------------- users, ssh

#[test]
fn ssh_keys_live_in_the_simulated_home() {
    let mut g = guest();
    assert_eq!(
        err(
            &mut g,
            "guest-ssh-get-authorized-keys",
            json!({"username": "no-such-user-qga-probe"})
        ),
        "failed to lookup user 'no-such-user-qga-probe': Success"
    );
    assert_eq!(
        err(&mut g, "guest-ssh-get-authorized-keys", json!({"username": "root"})),
        "failed to read '/root/.ssh/authorized_keys': Failed to open file \u{201C}/root/.ssh/authorized_keys\u{201D}: No such file or directory"
    );
    ok(
        &mut g,
        "guest-ssh-add-authorized-keys",
        json!({"username": "root", "keys": ["ssh-ed25519 AAA a", "ssh-rsa BBB b"]}),
    );
    ok(
        &mut g,
        "guest-ssh-add-authorized-keys",
        json!({"username": "root", "keys": ["ssh-rsa BBB b", "ssh-ed25519 CCC c"]}),
    );
    assert_eq!(
        g.file_content("/root/.ssh/authorized_keys"),
        Some(b"ssh-ed25519 AAA a\nssh-rsa BBB b\nssh-ed25519 CCC c".to_vec())
    );
    // qemu-ga lists them last first.
    assert_eq!(
        ok(
            &mut g,
            "guest-ssh-get-authorized-keys",
            json!({"username": "root"})
        ),
        json!({"keys": ["ssh-ed25519 CCC c", "ssh-rsa BBB b", "ssh-ed25519 AAA a"]})
    );
    ok(
        &mut g,
        "guest-ssh-remove-authorized-keys",
        json!({"username": "root", "keys": ["ssh-rsa BBB b"]}),
    );
    assert_eq!(
        ok(
            &mut g,
            "guest-ssh-get-authorized-keys",
            json!({"username": "root"})
        ),
        json!({"keys": ["ssh-ed25519 CCC c", "ssh-ed25519 AAA a"]})
    );
    ok(
        &mut g,
        "guest-ssh-add-authorized-keys",
        json!({"username": "root", "keys": ["k"], "reset": true}),
    );
    assert_eq!(
        g.file_content("/root/.ssh/authorized_keys"),
        Some(b"k".to_vec())
    );
    assert_eq!(
        err(
            &mut g,
            "guest-ssh-add-authorized-keys",
            json!({"username": "root", "keys": ["# c"]})
        ),
        "invalid OpenSSH public key: '# c'"
    );
    // nobody's home does not exist.
    assert_eq!(
        err(
            &mut g,
            "guest-ssh-add-authorized-keys",
            json!({"username": "nobody", "keys": ["k"]})
        ),
        "failed to create directory '/nonexistent/.ssh': No such file or directory"
    );
    assert_eq!(
        ok(
            &mut g,
            "guest-ssh-remove-authorized-keys",
            json!({"username": "nobody", "keys": ["k"]})
        ),
        json!({})
    );
}

#[test]
fn profile_keys_are_readable_as_files_and_over_ssh() {
    let mut g = guest_with(|p| {
        p.accounts[0].authorized_keys = Some(vec![
            "# comment".into(),
            "ssh-rsa A".into(),
            "  ".into(),
            "ssh-rsa B ".into(),
        ]);
    });
    assert_eq!(
        ok(
            &mut g,
            "guest-ssh-get-authorized-keys",
            json!({"username": "root"})
        ),
        json!({"keys": ["ssh-rsa B", "ssh-rsa A"]})
    );
}

#[rstest::rstest]
#[case::unknown_user("bob", "aGk=", "child process has failed to set user password")]
#[case::newline_in_password("root", "aGkKdGhlcmU=", "forbidden characters in raw password")]
#[case::colon_in_user("ro:ot", "aGk=", "forbidden characters in username")]
#[case::bad_base64("root", "***", "Base64 data contains invalid characters")]
fn set_user_password_errors(#[case] user: &str, #[case] password: &str, #[case] text: &str) {
    let mut g = guest();
    assert_eq!(
        err(
            &mut g,
            "guest-set-user-password",
            json!({"username": user, "password": password, "crypted": false})
        ),
        text
    );
}

#[test]
fn set_user_password_for_a_known_user() {
    let mut g = guest();
    assert_eq!(
        ok(
            &mut g,
            "guest-set-user-password",
            json!({"username": "root", "password": "aGk=", "crypted": true})
        ),
        json!({})
    );
    let mut g = guest_with(|p| p.chpasswd = false);
    assert_eq!(
        err(
            &mut g,
            "guest-set-user-password",
            json!({"username": "root", "password": "aGk=", "crypted": false})
        ),
        "cannot find 'passwd' program in PATH"
    );
}

// ---------------------------------------------------------------- profiles

#[test]
fn the_built_in_profile_round_trips() {
    let profile = Profile::default_linux();
    let text = profile.to_json_pretty();
    let back = Profile::from_json(&text, "round-trip");
    assert_eq!(back.ok(), Some(profile));
}

#[test]
fn a_partial_profile_takes_the_rest_from_the_default() {
    let p = Profile::from_json(
        r#"{"host-name": "web1", "agent": {"version": "8.2.0"}}"#,
        "p.json",
    );
    let p = p.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.host_name, "web1");
    assert_eq!(p.agent_version(), AgentVersion::new(8, 2, 0));
    assert_eq!(p.vcpus, Profile::default_linux().vcpus);
}

#[test]
fn bad_json_reports_line_and_column() {
    let e = Profile::from_json("{\n  \"host-name\": \"x\",\n  oops\n}", "p.json").err();
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(text, "p.json:3:3: key must be a string");
}

#[test]
fn unknown_fields_report_their_path() {
    let e = Profile::from_json(
        r#"{"fsinfo": [{"name": "vda", "mountpoint": "/", "type": "ext4", "disk": [], "colour": 1}]}"#,
        "p.json",
    )
    .err();
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.starts_with("p.json:1:"), "{text}");
    assert!(
        text.contains("unknown field `colour`, expected one of"),
        "{text}"
    );
    assert!(text.ends_with("(at fsinfo[0].colour)"), "{text}");
}

#[test]
fn wrong_types_report_what_is_expected() {
    let e = Profile::from_json(r#"{"memory-block-size": "big"}"#, "p.json").err();
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        text,
        "p.json:1:27: invalid type: string \"big\", expected u64 (at memory-block-size)"
    );
    let e = Profile::from_json(r#"{"agent": {"version": "seven"}}"#, "p.json").err();
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("invalid agent version 'seven'"), "{text}");
    assert!(text.ends_with("(at agent.version)"), "{text}");
}

#[test]
fn semantic_errors_name_the_value() {
    let e = Profile::from_json(r#"{"files": {"/x": {"base64": "!!"}}}"#, "p.json").err();
    assert_eq!(
        e.map(|e| e.to_string()).unwrap_or_default(),
        "p.json: files./x.base64: invalid base64"
    );
    let e = Profile::from_json(r#"{"files": {"rel/x": {"text": ""}}}"#, "p.json").err();
    assert_eq!(
        e.map(|e| e.to_string()).unwrap_or_default(),
        "p.json: files.rel/x: expected an absolute path, got 'rel/x'"
    );
    let e = Profile::from_json(
        r#"{"exec": {"processes": [{"path": "x", "stdout": {"text": "a", "base64": "YQ=="}}]}}"#,
        "p.json",
    )
    .err();
    assert_eq!(
        e.map(|e| e.to_string()).unwrap_or_default(),
        "p.json: exec.processes[0].stdout: give exactly one of `text` or `base64`"
    );
}

#[test]
fn inline_profiles_report_the_path_of_a_bad_value() {
    let ok = Profile::from_value(json!({"host-name": "inline"}), "case.json");
    assert_eq!(ok.map(|p| p.host_name).ok(), Some("inline".to_owned()));
    let e = Profile::from_value(
        json!({"vcpus": [{"logical-id": "x", "online": true}]}),
        "case.json",
    );
    assert_eq!(
        e.err().map(|e| e.to_string()).unwrap_or_default(),
        "case.json: vcpus[0].logical-id: invalid type: string \"x\", expected i64"
    );
}

#[test]
fn loading_a_missing_file_names_it() {
    let dir = tempfile::tempdir().ok();
    let path = dir
        .as_ref()
        .map(|d| d.path().join("none.json"))
        .unwrap_or_default();
    let e = Profile::load(&path).err();
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.starts_with("cannot read profile "), "{text}");
    assert!(text.contains("none.json"), "{text}");
}

#[test]
fn the_json_schema_describes_the_profile() {
    let schema = Profile::json_schema();
    let props = &schema["properties"];
    for key in ["agent", "host-name", "fsinfo", "exec", "files", "errors"] {
        assert!(props.get(key).is_some(), "schema lacks {key}");
    }
    assert_eq!(schema["additionalProperties"], json!(false));
    assert!(props["host-name"]["description"].as_str().is_some());
}

// ---------------------------------------------------------------- robustness

const COMMANDS: &[&str] = &[
    "guest-sync-delimited",
    "guest-sync",
    "guest-ping",
    "guest-get-time",
    "guest-set-time",
    "guest-info",
    "guest-shutdown",
    "guest-file-open",
    "guest-file-close",
    "guest-file-read",
    "guest-file-write",
    "guest-file-seek",
    "guest-file-flush",
    "guest-fsfreeze-status",
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fsfreeze-thaw",
    "guest-fstrim",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-network-get-interfaces",
    "guest-get-vcpus",
    "guest-set-vcpus",
    "guest-get-disks",
    "guest-get-fsinfo",
    "guest-set-user-password",
    "guest-get-memory-blocks",
    "guest-set-memory-blocks",
    "guest-get-memory-block-info",
    "guest-exec-status",
    "guest-exec",
    "guest-get-host-name",
    "guest-get-users",
    "guest-get-timezone",
    "guest-get-osinfo",
    "guest-get-devices",
    "guest-ssh-get-authorized-keys",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
    "guest-get-diskstats",
    "guest-get-cpustats",
    "guest-network-get-route",
    "guest-get-load",
    "no-such-command",
];

const PARAMS: &[&str] = &[
    "id",
    "time",
    "mode",
    "path",
    "handle",
    "count",
    "buf-b64",
    "offset",
    "whence",
    "mountpoints",
    "minimum",
    "vcpus",
    "username",
    "password",
    "crypted",
    "mem-blks",
    "pid",
    "arg",
    "env",
    "input-data",
    "capture-output",
    "keys",
    "reset",
];

fn candidates() -> Vec<Json> {
    vec![
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(1000),
        json!(1001),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!(""),
        json!("r"),
        json!("w+"),
        json!("a"),
        json!("/tmp/x"),
        json!("/dev/zero"),
        json!("/"),
        json!("sh"),
        json!("\u{0}"),
        json!("aGk="),
        json!("set"),
        json!("end"),
        json!("merged"),
        json!("root"),
        json!("../../.."),
        json!("x".repeat(5000)),
        json!([]),
        json!(["-c", "exit 1"]),
        json!(["/", "/tmp"]),
        json!([{"logical-id": 0, "online": false}]),
        json!([{"phys-index": 188, "online": false}]),
        json!([1, "a", null]),
        json!({}),
    ]
}

#[tokio::test(start_paused = true)]
async fn no_command_panics_on_any_arguments() {
    let values = candidates();
    let mut g = guest();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20_000 {
        let command = COMMANDS[(next() % COMMANDS.len() as u64) as usize];
        let mut object = Object::new();
        for param in PARAMS {
            if next() % 3 == 0 {
                let v = &values[(next() % values.len() as u64) as usize];
                object.insert(*param, Value::from_serde(v));
            }
        }
        let _ = g.run(command, &object);
        if round % 5000 == 0 {
            g.agent_restarted();
        }
    }
}
