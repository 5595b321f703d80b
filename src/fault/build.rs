//! Rules from a spec (`"guest-ping@3:hang".parse()`) or from a small builder.

use std::str::FromStr;
use std::time::Duration;

use super::rule::{Action, Distribution, EventKind, Rule, Trigger};
use super::spec::{self, SpecError};

impl FromStr for Rule {
    type Err = SpecError;

    /// Parses a `--fault` spec (or a JSON rule), as the command line and scenario files
    /// take them.
    ///
    /// ```
    /// use qga_harness::Rule;
    ///
    /// // Arrange
    /// let spec = "guest-ping@3:hang";
    ///
    /// // Act
    /// let rule: Rule = spec.parse()?;
    ///
    /// // Assert
    /// assert_eq!(rule, Rule::on("guest-ping").nth(3).hang().build());
    /// # Ok::<(), qga_harness::fault::SpecError>(())
    /// ```
    fn from_str(s: &str) -> Result<Rule, SpecError> {
        spec::parse(s)
    }
}

impl Rule {
    /// Starts a rule on requests for `command` (exact, or a glob with `*` and `?`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use qga_harness::Rule;
    ///
    /// // Arrange: every second guest-info is answered 200 ms late.
    /// let builder = Rule::on("guest-info").every(2).delay(Duration::from_millis(200));
    ///
    /// // Act
    /// let rule = builder.build();
    ///
    /// // Assert: the same rule as its spec.
    /// assert_eq!(rule, "guest-info%2:delay=200ms".parse()?);
    /// # Ok::<(), qga_harness::fault::SpecError>(())
    /// ```
    pub fn on(command: &str) -> RuleBuilder {
        RuleBuilder::new(Trigger {
            command: Some(command.to_owned()),
            ..Trigger::default()
        })
    }

    /// Starts a rule on every request.
    pub fn on_every_request() -> RuleBuilder {
        RuleBuilder::new(Trigger::default())
    }

    /// Starts a rule on each accepted client connection.
    pub fn on_connect() -> RuleBuilder {
        RuleBuilder::new(Trigger {
            event: EventKind::Connect,
            ..Trigger::default()
        })
    }

    /// Starts a rule on each start of the agent process.
    pub fn on_start() -> RuleBuilder {
        RuleBuilder::new(Trigger {
            event: EventKind::Start,
            ..Trigger::default()
        })
    }
}

/// Builds a [`Rule`]: a trigger, then one or more actions, in order.
#[must_use = "a RuleBuilder does nothing until it is built and given to a mock"]
#[derive(Clone, Debug)]
pub struct RuleBuilder {
    rule: Rule,
}

impl RuleBuilder {
    fn new(when: Trigger) -> RuleBuilder {
        RuleBuilder {
            rule: Rule {
                when,
                actions: Vec::new(),
            },
        }
    }

    /// Only the nth matching event (1-based).
    pub fn nth(mut self, n: u64) -> Self {
        self.rule.when.nth = Some(n);
        self
    }

    /// Only from the nth matching event on (1-based).
    pub fn from(mut self, n: u64) -> Self {
        self.rule.when.from = Some(n);
        self
    }

    /// Only every k-th matching event.
    pub fn every(mut self, k: u64) -> Self {
        self.rule.when.every = Some(k);
        self
    }

    /// Fires with this probability, drawn from the mock's seeded random source.
    pub fn probability(mut self, p: f64) -> Self {
        self.rule.when.probability = Some(p);
        self
    }

    /// Fires at most this many times.
    pub fn times(mut self, n: u64) -> Self {
        self.rule.when.times = Some(n);
        self
    }

    /// Adds an action.
    pub fn then(mut self, action: Action) -> Self {
        self.rule.actions.push(action);
        self
    }

    /// Adds a delay before the reply (whole milliseconds).
    pub fn delay(self, delay: Duration) -> Self {
        self.then(Action::Delay {
            ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            jitter_ms: 0,
            distribution: Distribution::Uniform,
        })
    }

    /// The agent hangs in the command, as qemu-ga in a stuck command: nothing later is
    /// answered until a restart.
    pub fn hang(self) -> Self {
        self.then(Action::Hang { block: true })
    }

    /// The agent dies after reading the request, which is never answered.
    pub fn die_after_read(self) -> Self {
        self.then(Action::DieAfterRead)
    }

    /// The current client connection is closed.
    pub fn close_client(self) -> Self {
        self.then(Action::CloseClient)
    }

    /// The rule.
    pub fn build(self) -> Rule {
        self.rule
    }
}

impl From<RuleBuilder> for Rule {
    fn from(builder: RuleBuilder) -> Rule {
        builder.rule
    }
}
