//! The fault proxy in front of the real qemu-ga (unix-listen, every state-changing command
//! blocked): faults keyed by command reach a client from the real agent, the real agent's
//! own replies pass through untouched, rules change at run time through the control socket,
//! and a missing upstream is a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::process::{qga_harness, run_to_exit, wait_for_file, Running};
use qga_harness::client::Client;
use qga_harness::fault::parse_spec;
use qga_harness::internals::real_agent::RealAgent;
use qga_harness::MockAgent;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn real_agent() -> RealAgent {
    RealAgent::start(&[]).expect("start qemu-ga")
}

async fn proxy(agent: &RealAgent, dir: &Path, faults: &[&str]) -> MockAgent {
    let mut builder = qga_harness::proxy::builder(agent.socket())
        .transcript(dir.join("proxy.jsonl"))
        .seed(5);
    for spec in faults {
        builder = builder.fault(parse_spec(spec).expect("spec"));
    }
    builder.bind(dir.join("proxy.sock")).await.expect("proxy")
}

fn client(socket: &Path) -> Client {
    Client::builder(socket)
        .timeout(Duration::from_secs(5))
        .build()
}

/// What the real agent says without the proxy.
async fn direct(agent: &RealAgent, command: &str) -> Value {
    client(agent.socket())
        .execute(command, None)
        .await
        .expect("direct call")
}

fn transcript(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("proxy.jsonl"))
        .expect("transcript")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[tokio::test]
async fn a_delay_keyed_by_command_holds_up_the_real_agents_reply() {
    let agent = real_agent();
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = direct(&agent, "guest-get-osinfo").await;
    let proxy = proxy(&agent, dir.path(), &["guest-get-osinfo:delay=600ms"]).await;
    let mut c = client(proxy.socket_path());

    let started = Instant::now();
    c.execute("guest-ping", None).await.expect("ping");
    let ping_took = started.elapsed();
    let started = Instant::now();
    let osinfo = c.execute("guest-get-osinfo", None).await.expect("osinfo");
    let osinfo_took = started.elapsed();

    assert_eq!(osinfo, expected, "the real agent's answer, unchanged");
    assert!(osinfo_took >= Duration::from_millis(600), "{osinfo_took:?}");
    assert!(ping_took < Duration::from_millis(600), "{ping_took:?}");
    proxy.shutdown().await.expect("shutdown");
    let records = transcript(dir.path());
    assert!(
        records.iter().any(|r| r["event"] == "upstream"
            && r["dir"] == "from-agent"
            && r["text"]
                .as_str()
                .is_some_and(|t| t.contains("kernel-release"))),
        "the real agent's reply is recorded"
    );
    assert!(records
        .iter()
        .any(|r| r["event"] == "fault" && r["command"] == "guest-get-osinfo"));
}

#[tokio::test]
async fn a_spurious_reply_keyed_by_command_reaches_the_client_and_the_reference_client_skips_it() {
    let agent = real_agent();
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = direct(&agent, "guest-get-osinfo").await;
    let proxy = proxy(
        &agent,
        dir.path(),
        &["guest-get-osinfo:spurious=other-command"],
    )
    .await;

    // A naive client that takes the first line after its request gets the spurious one.
    let mut naive = tokio::net::UnixStream::connect(proxy.socket_path())
        .await
        .expect("connect");
    naive
        .write_all(b"{\"execute\":\"guest-get-osinfo\"}")
        .await
        .expect("write");
    let mut lines = BufReader::new(naive).lines();
    let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("a line");
    assert_eq!(first, "{\"return\": {}}", "the made-up reply comes first");
    let second = lines.next_line().await.expect("read").expect("a line");
    assert!(
        second.contains("kernel-release"),
        "then the real one: {second}"
    );
    drop(lines);

    // The reference client sends an id and takes only the reply that carries it.
    let osinfo = client(proxy.socket_path())
        .execute("guest-get-osinfo", None)
        .await
        .expect("osinfo");
    assert_eq!(osinfo, expected);
}

#[tokio::test]
async fn an_error_keyed_by_command_replaces_the_reply_and_other_commands_pass() {
    let agent = real_agent();
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = direct(&agent, "guest-get-host-name").await;
    let proxy = proxy(
        &agent,
        dir.path(),
        &["guest-get-osinfo#1:error=GenericError/'made up by the proxy'"],
    )
    .await;
    let mut c = client(proxy.socket_path());
    match c.execute("guest-get-osinfo", None).await {
        Err(e) => {
            let agent = e.agent_error().expect("an agent error");
            assert_eq!(agent.class, "GenericError");
            assert_eq!(agent.desc, "made up by the proxy");
        }
        Ok(v) => panic!("expected the fault's error, got {v}"),
    }
    // The rule fired once; the real agent answers the next ask.
    assert!(c.execute("guest-get-osinfo", None).await.is_ok());
    assert_eq!(
        c.execute("guest-get-host-name", None)
            .await
            .expect("host name"),
        expected
    );
}

#[tokio::test]
async fn a_blocked_command_of_the_real_agent_answers_through_the_proxy_with_its_own_error() {
    let agent = real_agent();
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = proxy(&agent, dir.path(), &[]).await;
    // guest-shutdown sends no reply when it succeeds; blocked, the real agent's error comes
    // back within the proxy's grace and is the answer.
    match client(proxy.socket_path())
        .execute("guest-shutdown", None)
        .await
    {
        Err(e) => assert!(e.agent_error().is_some(), "{e:?}"),
        Ok(v) => panic!("expected the real agent's error, got {v}"),
    }
}

fn qga(args: &[&str]) -> std::process::Output {
    run_to_exit(qga_harness().args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn the_command_line_proxy_takes_rules_at_run_time_through_ctl() {
    let agent = real_agent();
    let dir = tempfile::tempdir().expect("tempdir");
    let listen: PathBuf = dir.path().join("p.sock");
    let control = dir.path().join("c.sock");
    let mut proxy = Running::start(
        qga_harness()
            .args(["proxy", "--listen", s(&listen), "--upstream"])
            .arg(agent.socket())
            .args(["--control", s(&control), "--seed", "3"]),
        &listen,
    );
    wait_for_file(&control, &mut proxy.child);
    let ok = qga(&["call", "--socket", s(&listen), "guest-get-osinfo"]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let added = qga(&[
        "ctl",
        "--control",
        s(&control),
        "add",
        "guest-get-osinfo:error=GenericError/'through ctl'",
    ]);
    assert_eq!(added.status.code(), Some(0), "{added:?}");
    let failed = qga(&["call", "--socket", s(&listen), "guest-get-osinfo"]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(String::from_utf8_lossy(&failed.stdout).contains("through ctl"));
    let ping = qga(&["call", "--socket", s(&listen), "guest-ping"]);
    assert_eq!(ping.status.code(), Some(0), "{ping:?}");
}

#[test]
fn a_missing_upstream_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = dir.path().join("p.sock");
    let out = qga(&[
        "proxy",
        "--listen",
        s(&listen),
        "--upstream",
        s(&dir.path().join("nothing.sock")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--upstream") && err.contains("nothing.sock"),
        "{err}"
    );
    assert!(!listen.exists(), "nothing left behind");
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").expect("write");
    let out = qga(&["proxy", "--listen", s(&listen), "--upstream", s(&file)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a unix socket"));
}
