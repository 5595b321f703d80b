//! What a rule's types cannot say: counts from 1, probabilities within 0 to 1, raw bytes
//! that decode, chunk sizes that make progress.

use base64::Engine as _;

use super::rule::{Action, EventKind, Rule};

impl Rule {
    /// Checks that the rule can be carried out; the error names the field and what is
    /// expected there.
    pub fn check(&self) -> Result<(), String> {
        let when = &self.when;
        for (name, value) in [
            ("nth", when.nth),
            ("from", when.from),
            ("every", when.every),
        ] {
            if value == Some(0) {
                return Err(format!(
                    "when.{name} must be at least 1 (events are counted from 1)"
                ));
            }
        }
        if let Some(p) = when.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("when.probability {p} is not between 0 and 1"));
            }
        }
        if when.command.is_some() && when.event != EventKind::Request {
            return Err(
                "when.command applies to requests only; remove it or set event to request".into(),
            );
        }
        for (i, action) in self.actions.iter().enumerate() {
            let problem = match action {
                Action::Raw { text, base64, .. } => match (text, base64) {
                    (Some(_), None) => None,
                    (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .err()
                        .map(|e| format!("base64 does not decode: {e}")),
                    (Some(_), Some(_)) => Some("give either text or base64, not both".into()),
                    (None, None) => Some("needs text or base64".into()),
                },
                Action::Drip { bytes: 0, .. } => {
                    Some("drip needs at least 1 byte per write".into())
                }
                Action::Slice { sizes } if sizes.is_empty() || sizes.contains(&0) => {
                    Some("slice needs sizes of at least 1 byte".into())
                }
                Action::Coalesce { count } if *count < 2 => {
                    Some("coalesce needs a count of at least 2".into())
                }
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(format!("do[{i}] ({}): {problem}", action.name()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_that_cannot_be_carried_out_are_refused() {
        let bad = |json: &str| {
            let rule: Rule = serde_json::from_str(json).expect("json");
            rule.check().expect_err(json)
        };
        assert!(bad(r#"{"do":[{"action":"raw"}]}"#).contains("needs text or base64"));
        assert!(bad(r#"{"do":[{"action":"raw","base64":"!!"}]}"#).contains("does not decode"));
        assert!(
            bad(r#"{"do":[{"action":"raw","text":"a","base64":"YQ=="}]}"#).contains("not both")
        );
        assert!(bad(r#"{"when":{"nth":0},"do":[]}"#).contains("at least 1"));
        assert!(bad(r#"{"when":{"probability":1.5},"do":[]}"#).contains("between 0 and 1"));
        assert!(bad(r#"{"do":[{"action":"slice","sizes":[]}]}"#).contains("slice"));
        assert!(bad(r#"{"do":[{"action":"drip","bytes":0,"interval_ms":1}]}"#).contains("drip"));
        assert!(bad(r#"{"do":[{"action":"coalesce","count":1}]}"#).contains("coalesce"));
        assert!(
            bad(r#"{"when":{"event":"connect","command":"x"},"do":[]}"#).contains("requests only")
        );
        assert!(super::super::parse_spec("guest-ping:raw=x")
            .expect("spec")
            .check()
            .is_ok());
    }
}
