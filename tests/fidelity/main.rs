//! Fidelity: the mock and the real qemu-ga, given the same guest data and the same bytes,
//! write the same bytes back.
//!
//! The real agent runs read-only (the safe block list). The mock runs with a profile
//! captured from that same agent, so it has the same guest data, version and block list,
//! and on the same transport (qemu-ga's own unix-listen socket).

mod cases;
mod host_mock;
mod mask;
mod session;

use std::path::Path;

use cases::{Case, Compare};
use host_mock::HostMock;
use mask::{mask_digits, show};
use session::Session;

/// Runs every case against both sockets and returns one line per mismatch.
fn compare_agents(expected: &Path, actual: &Path, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let run = |socket: &Path| -> Result<Vec<u8>, String> {
            let mut session = Session::connect(socket).map_err(|e| format!("connect: {e}"))?;
            session.run(&case.chunks).map_err(|e| format!("run: {e}"))
        };
        match (run(expected), run(actual)) {
            (Ok(want), Ok(got)) => {
                let (want, got) = match case.compare {
                    Compare::Exact => (want, got),
                    Compare::Shape => (mask_digits(&want), mask_digits(&got)),
                };
                if want != got {
                    failures.push(format!(
                        "{}:\n  real: {}\n  mock: {}",
                        case.name,
                        show(&want),
                        show(&got)
                    ));
                }
            }
            (want, got) => failures.push(format!(
                "{}: real {:?} / mock {:?}",
                case.name,
                want.map(|w| show(&w)),
                got.map(|g| show(&g))
            )),
        }
    }
    failures
}

#[test]
fn the_case_list_is_large_enough() {
    let cases = cases::all();
    assert!(cases.len() >= 200, "only {} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
}

#[test]
fn two_real_agents_agree_so_the_cases_are_deterministic() {
    let first = qga_harness::internals::real_agent::RealAgent::start(&[]).expect("start qemu-ga");
    let second = qga_harness::internals::real_agent::RealAgent::start(&[]).expect("start qemu-ga");
    let failures = compare_agents(first.socket(), second.socket(), &cases::all());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_different_agent_is_caught() {
    // The harness must see a difference when there is one: a second agent that also blocks
    // guest-ping answers the ping cases differently.
    let first = qga_harness::internals::real_agent::RealAgent::start(&[]).expect("start qemu-ga");
    let second = qga_harness::internals::real_agent::RealAgent::start(&["guest-ping"])
        .expect("start qemu-ga");
    let cases: Vec<Case> = cases::all()
        .into_iter()
        .filter(|c| c.name.starts_with("id echo") || c.name == "read guest-ping")
        .collect();
    let failures = compare_agents(first.socket(), second.socket(), &cases);
    assert_eq!(failures.len(), cases.len(), "{}", failures.join("\n"));
}

/// A mock that emulates `real`: its profile is captured from it.
fn emulating_mock(real: &qga_harness::internals::real_agent::RealAgent) -> HostMock {
    let captured = qga_harness::guest::capture::capture(
        real.socket(),
        &qga_harness::guest::capture::CaptureOptions::default(),
    )
    .expect("capture the real agent");
    HostMock::start(
        qga_harness::MockAgent::builder()
            .profile(captured.profile)
            .transport(qga_harness::Transport::UnixListen),
    )
}

#[test]
fn the_mock_answers_every_case_byte_for_byte_like_the_real_agent() {
    let real = qga_harness::internals::real_agent::RealAgent::start(&[]).expect("start qemu-ga");
    let mock = emulating_mock(&real);
    let cases = cases::all();
    let failures = compare_agents(real.socket(), mock.socket(), &cases);
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
