//! `qga-harness mock --fleet`: many agents in one process on real sockets, each with its
//! own identity, seeded shares of dead, slow and hostile agents, the control socket, the
//! summary, and the open-file limit message.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use qga_harness::fleet::{Condition, Shares};

const BINARY: &str = env!("CARGO_BIN_EXE_qga-harness");

struct Fleet {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn start(args: &[&str]) -> Fleet {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(BINARY)
            .arg("mock")
            .args(args)
            .arg("--dir")
            .arg(dir.path().join("vms"))
            .arg("--control")
            .arg(dir.path().join("control.sock"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        assert_eq!(line, "ready\n");
        Fleet { child, stdout, dir }
    }

    fn socket(&self, index: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("vms/vm-{index:05}.sock"))
    }

    fn control(&self, request: &str) -> serde_json::Value {
        let mut stream =
            UnixStream::connect(self.dir.path().join("control.sock")).expect("control");
        stream.write_all(request.as_bytes()).expect("write");
        stream.write_all(b"\n").expect("write");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("read");
        serde_json::from_str(&line).expect("JSON answer")
    }

    /// Stops the fleet; its per-agent summary lines and totals.
    fn stop(mut self) -> (Vec<serde_json::Value>, serde_json::Value) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("read");
        assert!(self.child.wait().expect("wait").success());
        let mut lines: Vec<serde_json::Value> = rest
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        let totals = lines.pop().expect("totals");
        (lines, totals)
    }
}

/// One request on a fresh connection; the reply line, or None within `wait`.
fn ask(socket: &Path, request: &str, wait: Duration) -> Option<String> {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(n) if n > 0 => Some(line),
        _ => None,
    }
}

#[test]
fn every_agent_has_its_own_socket_and_identity_and_the_summary_counts_what_it_served() {
    let fleet = Fleet::start(&["--fleet", "50"]);

    let mut names = std::collections::BTreeSet::new();
    let mut addresses = std::collections::BTreeSet::new();
    for index in 1..=50 {
        let socket = fleet.socket(index);
        let name = ask(
            &socket,
            r#"{"execute":"guest-get-host-name"}"#,
            Duration::from_secs(5),
        )
        .expect("an answer");
        let value: serde_json::Value = serde_json::from_str(&name).expect("JSON");
        assert_eq!(value["return"]["host-name"], format!("vm-{index:05}"));
        names.insert(name);
        let ifaces = ask(
            &socket,
            r#"{"execute":"guest-network-get-interfaces"}"#,
            Duration::from_secs(5),
        )
        .expect("an answer");
        addresses.insert(ifaces);
    }
    assert_eq!(names.len(), 50);
    assert_eq!(addresses.len(), 50, "interfaces differ per agent");
    let summary = fleet.control(r#"{"op":"summary"}"#);
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["totals"]["requests"], 100);

    let (agents, totals) = fleet.stop();

    assert_eq!(agents.len(), 50);
    assert!(agents.iter().all(|a| a["requests"] == 2), "{agents:?}");
    assert_eq!(totals["totals"]["agents"], 50);
    assert_eq!(totals["totals"]["healthy"], 50);
}

#[test]
fn shares_are_exact_and_seeded() {
    let shares = Shares {
        dead: 0.01,
        slow: 0.05,
        hostile: 0.001,
    };

    let a = shares.assign(10_000, 7);
    let b = shares.assign(10_000, 7);
    let c = shares.assign(10_000, 8);

    assert_eq!(a, b, "the same seed, the same places");
    assert_ne!(a, c);
    let count = |k| a.iter().filter(|&&c| c == k).count();
    assert_eq!(count(Condition::Dead), 100);
    assert_eq!(count(Condition::Slow), 500);
    assert_eq!(count(Condition::Hostile), 10);
    assert_eq!(count(Condition::Healthy), 9_390);
}

#[test]
fn dead_agents_do_not_answer_and_the_control_socket_revives_them() {
    let fleet = Fleet::start(&["--fleet", "50", "--dead", "10", "--seed", "3"]);
    let summary = fleet.control(r#"{"op":"summary"}"#);
    assert_eq!(summary["totals"]["dead"], 5);
    let dead: Vec<usize> = summary["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter(|a| a["condition"] == "dead")
        .map(|a| a["agent"].as_u64().expect("number") as usize)
        .collect();
    let healthy = (1..=50)
        .find(|i| !dead.contains(i))
        .expect("a healthy agent");
    let ping = r#"{"execute":"guest-ping"}"#;
    assert_eq!(
        ask(&fleet.socket(dead[0]), ping, Duration::from_millis(300)),
        None
    );
    assert!(ask(&fleet.socket(healthy), ping, Duration::from_secs(5)).is_some());

    let set = fleet.control(&format!(
        r#"{{"op":"set","agent":{},"condition":"healthy"}}"#,
        dead[0]
    ));
    assert_eq!(set, serde_json::json!({"ok": true}));
    let revived = ask(&fleet.socket(dead[0]), ping, Duration::from_secs(5));

    // virtio-serial: the ping written while the agent was dead is answered too.
    assert_eq!(revived.as_deref(), Some("{\"return\": {}}\n"));
    let bad = fleet.control(r#"{"op":"set","agent":51,"condition":"slow"}"#);
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["error"], "no agent 51: the fleet has agents 1 to 50");
    let (_, totals) = fleet.stop();
    assert_eq!(totals["totals"]["dead"], 4);
}

#[test]
fn a_slow_share_answers_late_after_a_shares_change() {
    let fleet = Fleet::start(&["--fleet", "20"]);
    let ping = r#"{"execute":"guest-ping"}"#;
    assert!(ask(&fleet.socket(1), ping, Duration::from_secs(5)).is_some());

    let changed = fleet.control(r#"{"op":"shares","slow":100,"seed":1}"#);
    assert_eq!(changed["ok"], true, "{changed}");
    assert_eq!(changed["totals"]["slow"], 20);
    let started = std::time::Instant::now();
    let reply = ask(&fleet.socket(1), ping, Duration::from_secs(5));

    assert_eq!(reply.as_deref(), Some("{\"return\": {}}\n"));
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "a slow agent answers 100-400 ms late"
    );
    fleet.stop();
}

#[test]
fn a_fleet_larger_than_the_hard_open_file_limit_says_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(BINARY);
    command
        .args(["mock", "--fleet", "2000", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit in the child before exec; async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 512,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let output = command.output().expect("run");

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("2256 open files are needed")
            && stderr.contains("may open only 512 (hard limit 512)")
            && stderr.contains("ulimit -Hn 2256")
            && stderr.contains("LimitNOFILE=2256"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "no socket made"
    );
}

#[tokio::test]
async fn shares_beyond_the_whole_fleet_are_refused_before_any_agent_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = qga_harness::fleet::FleetConfig {
        count: 3,
        dir: dir.path().join("vms"),
        transport: qga_harness::Transport::default(),
        shares: Shares {
            dead: 0.6,
            slow: 0.6,
            hostile: 0.0,
        },
        seed: 1,
        profile: None,
    };

    let e = qga_harness::fleet::Fleet::start(config)
        .await
        .expect_err("shares over 100% are refused");

    assert_eq!(
        e.to_string(),
        "fleet shares: the dead, slow and hostile shares add up to more than 100%"
    );
    assert!(!dir.path().join("vms").exists(), "no agent started");
}
