//! Expectations on what a mock receives, checked against its [`Received`] records when the
//! mock is dropped (or on demand with `verify`), with a report of everything received.

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};

use crate::received::{Received, Records};

type Check = dyn Fn(&[Received]) -> Result<(), String> + Send + Sync;

/// Something the client under test must have done, judged from what the mock received.
///
/// ```
/// use qga_harness::{Expectation, Received};
///
/// // Arrange: an expectation of your own, next to the built-in ones.
/// let no_exec = Expectation::new("no guest-exec", |received: &[Received]| {
///     match received.iter().find(|r| r.command() == Some("guest-exec")) {
///         Some(r) => Err(format!("request {} was a guest-exec", r.number())),
///         None => Ok(()),
///     }
/// });
///
/// // Act
/// let verdict = no_exec.check(&[]);
///
/// // Assert
/// assert_eq!(no_exec.name(), "no guest-exec");
/// assert!(verdict.is_ok());
/// ```
#[derive(Clone)]
pub struct Expectation {
    name: String,
    check: Arc<Check>,
}

impl fmt::Debug for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expectation")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Expectation {
    /// An expectation named `name` (as the report shows it), met when `check` returns
    /// `Ok`; the error says what was received instead.
    pub fn new(
        name: impl Into<String>,
        check: impl Fn(&[Received]) -> Result<(), String> + Send + Sync + 'static,
    ) -> Expectation {
        Expectation {
            name: name.into(),
            check: Arc::new(check),
        }
    }

    /// The client sends guest-sync-delimited before its first other command, as the
    /// protocol asks of a client that (re)connects. What is not a command (a 0xFF flush
    /// byte, which the agent's parser reports as an error) does not count.
    #[must_use]
    pub fn sync_delimited_before_first_command() -> Expectation {
        Expectation::new(
            "guest-sync-delimited before the first command",
            |received: &[Received]| {
                // Bytes that are not a command (a 0xFF flush, a parse error) do not count.
                let first = received.iter().find(|r| {
                    r.command()
                        .is_some_and(|command| command != "guest-sync-delimited")
                });
                let sync = received
                    .iter()
                    .find(|r| r.command() == Some("guest-sync-delimited"));
                match (first, sync) {
                    (Some(first), None) => Err(format!(
                        "no guest-sync-delimited was received; the first request was request {} {}",
                        first.number(),
                        describe(first)
                    )),
                    (Some(first), Some(sync)) if first.number() < sync.number() => Err(format!(
                        "request {} {} came before the first guest-sync-delimited (request {})",
                        first.number(),
                        describe(first),
                        sync.number()
                    )),
                    _ => Ok(()),
                }
            },
        )
    }

    /// Every successful guest-fsfreeze-freeze or guest-fsfreeze-freeze-list is followed
    /// by a guest-fsfreeze-thaw: the client never leaves the guest frozen.
    #[must_use]
    pub fn thaw_after_every_freeze() -> Expectation {
        Expectation::new(
            "guest-fsfreeze-thaw after every freeze",
            |received: &[Received]| {
                let mut frozen_by: Option<&Received> = None;
                for r in received {
                    match r.command() {
                        Some("guest-fsfreeze-freeze" | "guest-fsfreeze-freeze-list")
                            if succeeded(r) =>
                        {
                            frozen_by.get_or_insert(r);
                        }
                        Some("guest-fsfreeze-thaw") => frozen_by = None,
                        _ => {}
                    }
                }
                match frozen_by {
                    Some(freeze) => Err(format!(
                        "request {} {} froze the guest and no guest-fsfreeze-thaw followed",
                        freeze.number(),
                        describe(freeze)
                    )),
                    None => Ok(()),
                }
            },
        )
    }

    /// `command` is received a number of times in `times` (`1..`, `2..=3`, `..1`...).
    #[must_use]
    pub fn received(command: &str, times: impl RangeBounds<u64>) -> Expectation {
        let range = (times.start_bound().cloned(), times.end_bound().cloned());
        let wanted = describe_range(range);
        let name = format!("{command} received {wanted}");
        let command = command.to_owned();
        Expectation::new(name, move |received: &[Received]| {
            let count = received
                .iter()
                .filter(|r| r.command() == Some(command.as_str()))
                .count() as u64;
            if range.contains(&count) {
                Ok(())
            } else {
                Err(format!("received {count} times"))
            }
        })
    }

    /// `command` is never received.
    #[must_use]
    pub fn never(command: &str) -> Expectation {
        let mut expectation = Expectation::received(command, ..1);
        expectation.name = format!("{command} never received");
        expectation
    }

    /// The name the report shows.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Judges `received`: `Ok` when met, else what was received instead.
    pub fn check(&self, received: &[Received]) -> Result<(), String> {
        (self.check)(received)
    }
}

fn succeeded(r: &Received) -> bool {
    r.succeeded()
}

fn describe(r: &Received) -> String {
    match r.command() {
        Some(command) => command.to_owned(),
        None => r.item.describe(),
    }
}

fn describe_range(range: (Bound<u64>, Bound<u64>)) -> String {
    let low = match range.0 {
        Bound::Included(n) => n,
        Bound::Excluded(n) => n.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let high = match range.1 {
        Bound::Included(n) => Some(n),
        Bound::Excluded(n) => Some(n.saturating_sub(1)),
        Bound::Unbounded => None,
    };
    match high {
        Some(high) if high == low => format!("exactly {low} times"),
        Some(high) if low == 0 => format!("at most {high} times"),
        Some(high) => format!("{low} to {high} times"),
        None => format!("at least {low} times"),
    }
}

/// The outcome of a mock's expectations, with everything it received.
///
/// Its `Display` is the report a failed verification panics with: each expectation, met
/// or not and why, then every request received with the reply it got.
#[derive(Clone, Debug)]
#[must_use]
pub struct Verification {
    outcomes: Vec<(String, Result<(), String>)>,
    received: Vec<Received>,
}

impl Verification {
    /// True when every expectation was met.
    #[must_use]
    pub fn is_met(&self) -> bool {
        self.outcomes.iter().all(|(_, outcome)| outcome.is_ok())
    }

    /// The names of the expectations not met, with why.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &str)> {
        self.outcomes
            .iter()
            .filter_map(|(name, outcome)| Some((name.as_str(), outcome.as_ref().err()?.as_str())))
    }

    /// What the mock received, in order.
    #[must_use]
    pub fn received(&self) -> &[Received] {
        &self.received
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        writeln!(
            f,
            "mock qemu-ga: {failed} of {} expectations not met",
            self.outcomes.len()
        )?;
        for (name, outcome) in &self.outcomes {
            match outcome {
                Ok(()) => writeln!(f, "  met:     {name}")?,
                Err(why) => writeln!(f, "  NOT MET: {name}: {why}")?,
            }
        }
        writeln!(f, "received ({} requests):", self.received.len())?;
        if self.received.is_empty() {
            writeln!(f, "  (nothing)")?;
        }
        for r in &self.received {
            writeln!(f, "  {r}")?;
        }
        Ok(())
    }
}

/// A mock's records and the expectations on them, shared by the async and blocking handles.
#[derive(Debug)]
pub(crate) struct Spy {
    records: Option<Arc<Records>>,
    expectations: Mutex<Vec<Expectation>>,
}

impl Spy {
    /// A spy on `records`; without records, nothing is received and expectations judge
    /// an empty list.
    pub(crate) fn new(records: Option<Arc<Records>>) -> Spy {
        Spy {
            records,
            expectations: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn expect(&self, expectation: Expectation) {
        self.expectations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(expectation);
    }

    pub(crate) fn records(&self) -> Option<Arc<Records>> {
        self.records.clone()
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.records
            .as_ref()
            .map(|records| records.read())
            .unwrap_or_default()
    }

    pub(crate) fn verify(&self) -> Verification {
        let received = self.received();
        let outcomes = self
            .expectations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|e| (e.name.clone(), e.check(&received)))
            .collect();
        Verification { outcomes, received }
    }

    /// Panics with the report when an expectation is not met; only reports when the thread
    /// is already panicking (a second panic would abort the test binary).
    pub(crate) fn check_on_drop(&self) {
        let has_expectations = !self
            .expectations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        if !has_expectations {
            return;
        }
        let verification = self.verify();
        if verification.is_met() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("{verification}");
        } else {
            panic!("{verification}");
        }
    }
}
