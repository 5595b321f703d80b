//! A run-wide time scale: every timeout, delay and time bound of a case multiplied, so a
//! client whose timeouts are whole seconds (libvirt's `--timeout`, `qemuAgentCommand`) is
//! judged on what it does, not on the granularity of its clock. Lower bounds scale too, so
//! "answered no earlier than the agent's delay" keeps its meaning.

use super::model::{FaultEntry, Outcome, Scenario};
use crate::fault::{parse_spec, Action, Restart, SpecError};

/// Multiplies every time in `scenario` by `factor` (1 leaves it as it is). Compact fault
/// specs become JSON rules on the way.
pub fn scale_time(scenario: &mut Scenario, factor: u64) -> Result<(), SpecError> {
    if factor == 1 {
        return Ok(());
    }
    let x = |ms: u64| ms.saturating_mul(factor);
    for step in &mut scenario.steps {
        step.timeout_ms = x(step.timeout_ms);
        for outcome in step.expect.iter_mut().chain(step.non_strict.iter_mut()) {
            if let Outcome::ClientError(bounds) = outcome {
                bounds.min_ms = bounds.min_ms.map(x);
                bounds.max_ms = bounds.max_ms.map(x);
            }
        }
    }
    if let Some(other) = &mut scenario.other_client {
        other.hold_ms = x(other.hold_ms);
    }
    let state = &mut scenario.agent.state;
    state.start_delay_ms = state.start_delay_ms.map(x);
    for entry in &mut scenario.agent.faults {
        let mut rule = match entry {
            FaultEntry::Spec(spec) => parse_spec(spec)?,
            FaultEntry::Rule(rule) => rule.clone(),
        };
        rule.when.after_ms = rule.when.after_ms.map(x);
        rule.when.before_ms = rule.when.before_ms.map(x);
        for action in &mut rule.actions {
            match action {
                Action::Delay { ms, jitter_ms, .. } => {
                    *ms = x(*ms);
                    *jitter_ms = x(*jitter_ms);
                }
                Action::Drip { interval_ms, .. } => *interval_ms = x(*interval_ms),
                Action::Restart {
                    after: Restart::AfterMs(ms),
                } => *ms = x(*ms),
                Action::StopReading { ms: Some(ms) } => *ms = x(*ms),
                _ => {}
            }
        }
        *entry = FaultEntry::Rule(rule);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(json: serde_json::Value) -> Scenario {
        serde_json::from_value(json).expect("scenario")
    }

    #[test]
    fn every_time_of_a_case_is_multiplied() {
        let mut s = scenario(serde_json::json!({
            "id": "t.1", "title": "t", "requirement": "r",
            "other_client": {"lines": ["{}"], "hold_ms": 40},
            "agent": {"state": {"start_delay_ms": 100},
                      "faults": ["guest-ping:delay=200ms..300ms,restart=50ms",
                                 "*[after=1s]:drip=1/10ms,stop-reading=20ms"]},
            "steps": [{"execute": "guest-ping", "timeout_ms": 200,
                       "expect": [{"client-error": {"class": "Timeout", "min_ms": 150, "max_ms": 900}}]}]
        }));
        scale_time(&mut s, 5).expect("scale");
        assert_eq!(s.steps[0].timeout_ms, 1000);
        let Outcome::ClientError(bounds) = &s.steps[0].expect[0] else {
            panic!("outcome")
        };
        assert_eq!((bounds.min_ms, bounds.max_ms), (Some(750), Some(4500)));
        assert_eq!(s.agent.state.start_delay_ms, Some(500));
        assert_eq!(s.other_client.as_ref().map(|o| o.hold_ms), Some(200));
        let rules: Vec<_> = s
            .agent
            .faults
            .iter()
            .map(|f| match f {
                FaultEntry::Rule(r) => r.clone(),
                FaultEntry::Spec(_) => panic!("specs become rules"),
            })
            .collect();
        assert_eq!(
            rules[0].actions[0],
            Action::Delay {
                ms: 1000,
                jitter_ms: 500,
                distribution: Default::default()
            }
        );
        assert_eq!(
            rules[0].actions[1],
            Action::Restart {
                after: Restart::AfterMs(250)
            }
        );
        assert_eq!(rules[1].when.after_ms, Some(5000));
        assert_eq!(
            rules[1].actions[0],
            Action::Drip {
                bytes: 1,
                interval_ms: 50
            }
        );
        assert_eq!(rules[1].actions[1], Action::StopReading { ms: Some(100) });
    }

    #[test]
    fn a_scale_of_one_changes_nothing() {
        let json = serde_json::json!({"id": "t.1", "title": "t", "requirement": "r",
            "agent": {"faults": ["guest-ping:delay=2"]},
            "steps": [{"execute": "guest-ping", "timeout_ms": 200, "expect": []}]});
        let mut s = scenario(json.clone());
        scale_time(&mut s, 1).expect("scale");
        assert_eq!(s, scenario(json));
    }
}
