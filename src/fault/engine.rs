//! Deciding which rules fire, reproducibly.
//!
//! All randomness of a mock comes from one seeded source, drawn in a fixed order (rules in
//! the order they were added; a probability is drawn only once every other condition of
//! its rule holds), so the same seed and the same client bytes give the same faults.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::rule::{Action, Distribution, EventKind, Rule, Since};

/// What the agent knows when it asks which rules fire.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The request's command name (`""` when it has none); ignored for other events.
    pub command: &'a str,
    pub since_start: Duration,
    /// Time since the current client connected, if one is.
    pub since_connect: Option<Duration>,
    /// Bytes the agent has read and written so far, over all connections.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A rule that fired: its id and its actions.
#[derive(Clone, Debug, PartialEq)]
pub struct Fired {
    pub rule: RuleId,
    pub actions: Vec<Action>,
}

/// A rule's handle, for listing and removing it at run time.
pub type RuleId = u64;

#[derive(Debug)]
struct Armed {
    id: RuleId,
    rule: Rule,
    /// Events that matched the rule's kind and command.
    matched: u64,
    fired: u64,
}

/// The rules of one mock and its seeded random source.
#[derive(Debug)]
pub struct FaultEngine {
    seed: u64,
    rng: StdRng,
    next_id: RuleId,
    rules: Vec<Armed>,
    /// Request rules by exact command name: the common case stays a hash lookup however
    /// many rules are loaded.
    by_command: HashMap<String, Vec<usize>>,
    /// Per event kind, the rules not in the name index: requests with a glob or no
    /// command, and every connect and start rule.
    general: [Vec<usize>; 3],
}

impl FaultEngine {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: StdRng::seed_from_u64(seed),
            next_id: 1,
            rules: Vec::new(),
            by_command: HashMap::new(),
            general: Default::default(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds a rule; it takes part from the next event on.
    pub fn add(&mut self, rule: Rule) -> RuleId {
        let id = self.next_id;
        self.next_id += 1;
        self.rules.push(Armed {
            id,
            rule,
            matched: 0,
            fired: 0,
        });
        self.reindex();
        id
    }

    /// Removes a rule; false when there is none with that id.
    pub fn remove(&mut self, id: RuleId) -> bool {
        let before = self.rules.len();
        self.rules.retain(|armed| armed.id != id);
        self.reindex();
        self.rules.len() != before
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
        self.reindex();
    }

    /// The rules with their ids and how often each fired.
    pub fn list(&self) -> impl Iterator<Item = (RuleId, &Rule, u64)> {
        self.rules.iter().map(|a| (a.id, &a.rule, a.fired))
    }

    fn reindex(&mut self) {
        self.by_command.clear();
        for list in &mut self.general {
            list.clear();
        }
        for (at, armed) in self.rules.iter().enumerate() {
            match (&armed.rule.when.event, &armed.rule.when.command) {
                (EventKind::Request, Some(name)) if !is_glob(name) => {
                    self.by_command.entry(name.clone()).or_default().push(at)
                }
                (event, _) => self.general[slot(*event)].push(at),
            }
        }
    }

    /// False when no rule can fire for this event (none listens to it, or to this
    /// command): the caller can skip building a [`Context`].
    pub fn may_fire(&self, event: EventKind, command: &str) -> bool {
        !self.general[slot(event)].is_empty()
            || (event == EventKind::Request && self.by_command.contains_key(command))
    }

    /// The rules that fire for this event, in the order they were added.
    pub fn on_event(&mut self, event: EventKind, context: &Context<'_>) -> Vec<Fired> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        let FaultEngine {
            rules,
            by_command,
            general,
            rng,
            ..
        } = self;
        let general = &general[slot(event)];
        let exact: &[usize] = match event {
            EventKind::Request => by_command.get(context.command).map_or(&[], Vec::as_slice),
            _ => &[],
        };
        // Walk the two ordered index lists together, so rules are evaluated in insertion
        // order. A rule from the name index is known to name this command.
        let mut fired = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < exact.len() || j < general.len() {
            let named = j >= general.len() || (i < exact.len() && exact[i] < general[j]);
            let at = if named {
                i += 1;
                exact[i - 1]
            } else {
                j += 1;
                general[j - 1]
            };
            let armed = &mut rules[at];
            if fires(armed, event, context, named, rng) {
                fired.push(Fired {
                    rule: armed.id,
                    actions: armed.rule.actions.clone(),
                });
            }
        }
        fired
    }

    /// Draws a delay's length from the seeded source.
    pub fn draw_delay(&mut self, ms: u64, jitter_ms: u64, distribution: Distribution) -> Duration {
        let extra = if jitter_ms == 0 {
            0.0
        } else {
            match distribution {
                Distribution::Uniform => self.rng.random_range(0.0..=jitter_ms as f64),
                Distribution::Exponential => {
                    // Inverse transform sampling; capped so one draw cannot stall a run.
                    let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
                    (-u.ln() * jitter_ms as f64).min(10.0 * jitter_ms as f64)
                }
            }
        };
        Duration::from_millis(ms) + Duration::from_secs_f64(extra / 1000.0)
    }

    /// A random number for actions that need one (e.g. a made-up id), from the same source.
    pub fn draw_u64(&mut self) -> u64 {
        self.rng.random()
    }
}

fn fires(
    armed: &mut Armed,
    event: EventKind,
    context: &Context<'_>,
    named: bool,
    rng: &mut StdRng,
) -> bool {
    let when = &armed.rule.when;
    if when.event != event {
        return false;
    }
    if event == EventKind::Request && !named {
        if let Some(pattern) = &when.command {
            if !glob_match(pattern, context.command) {
                return false;
            }
        }
    }
    armed.matched += 1;
    let n = armed.matched;
    if when.nth.is_some_and(|nth| n != nth)
        || when.from.is_some_and(|from| n < from)
        || when.every.is_some_and(|k| !n.is_multiple_of(k))
    {
        return false;
    }
    let elapsed = match when.since {
        Since::Start => Some(context.since_start),
        Since::Connect => context.since_connect,
    };
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if let Some(after) = when.after_ms {
        if elapsed.is_none_or(|e| ms(e) < after) {
            return false;
        }
    }
    if let Some(before) = when.before_ms {
        if elapsed.is_none_or(|e| ms(e) >= before) {
            return false;
        }
    }
    if when.after_bytes_in.is_some_and(|b| context.bytes_in < b)
        || when.after_bytes_out.is_some_and(|b| context.bytes_out < b)
        || when.times.is_some_and(|t| armed.fired >= t)
    {
        return false;
    }
    if let Some(p) = when.probability {
        if rng.random::<f64>() >= p {
            return false;
        }
    }
    armed.fired += 1;
    true
}

/// The index of an event kind in per-kind lists.
fn slot(event: EventKind) -> usize {
    match event {
        EventKind::Request => 0,
        EventKind::Connect => 1,
        EventKind::Start => 2,
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Matches `*` (any run) and `?` (any one character), the whole text.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Command names are ASCII: then bytes are characters, and nothing is allocated (this
    // runs for every glob rule on every request).
    if pattern.is_ascii() && text.is_ascii() {
        return wildcard(pattern.as_bytes(), text.as_bytes());
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    wildcard(&p, &t)
}

/// The iterative wildcard match with one backtrack point.
fn wildcard<T: Copy + PartialEq + From<u8>>(p: &[T], t: &[T]) -> bool {
    let (star, any) = (T::from(b'*'), T::from(b'?'));
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == any || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == star {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((at, matched)) = backtrack {
            pi = at + 1;
            ti = matched + 1;
            backtrack = Some((at, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == star)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::spec::parse;
    use rstest::rstest;

    fn request(engine: &mut FaultEngine, command: &str) -> Vec<RuleId> {
        let context = Context {
            command,
            ..Context::default()
        };
        engine
            .on_event(EventKind::Request, &context)
            .into_iter()
            .map(|f| f.rule)
            .collect()
    }

    #[rstest]
    #[case("guest-*", "guest-ping", true)]
    #[case("guest-*", "guest", false)]
    #[case("*", "", true)]
    #[case("guest-?ing", "guest-ping", true)]
    #[case("guest-fs*-freeze*", "guest-fsfreeze-freeze-list", true)]
    #[case("guest-ping", "guest-ping ", false)]
    #[case("gäst-*", "gäst-ping", true)]
    #[case("g?st", "gäst", true)]
    #[case("*a*b", "xaxxb", true)]
    #[case("*a*b", "xaxxc", false)]
    fn globs(#[case] pattern: &str, #[case] text: &str, #[case] matches: bool) {
        assert_eq!(glob_match(pattern, text), matches);
    }

    #[test]
    fn nth_every_from_and_times_count_matching_requests_only() {
        let mut engine = FaultEngine::new(1);
        let nth = engine.add(parse("guest-ping@2:hang").expect("spec"));
        let every = engine.add(parse("guest-ping%2#2:no-reply").expect("spec"));
        let from = engine.add(parse("guest-sync@2..:duplicate").expect("spec"));
        let mut fired = Vec::new();
        for command in [
            "guest-ping",
            "guest-sync",
            "guest-ping",
            "guest-sync",
            "guest-ping",
            "guest-ping",
            "guest-sync",
            "guest-ping",
            "guest-ping",
        ] {
            fired.push(request(&mut engine, command));
        }
        assert_eq!(
            fired,
            vec![
                vec![],
                vec![],
                vec![nth, every],
                vec![from],
                vec![],
                vec![every],
                vec![from],
                vec![],
                vec![],
            ]
        );
    }

    #[test]
    fn probability_is_reproducible_from_the_seed() {
        let draw = |seed| {
            let mut engine = FaultEngine::new(seed);
            engine.add(parse("*~0.5:hang").expect("spec"));
            (0..200)
                .map(|_| !request(&mut engine, "guest-ping").is_empty())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let hits = draw(7).iter().filter(|&&h| h).count();
        assert!((60..140).contains(&hits), "{hits} of 200 at p=0.5");
    }

    #[test]
    fn time_and_byte_conditions() {
        let mut engine = FaultEngine::new(1);
        let id = engine.add(parse("*[after=100ms,before=200ms,bytes-in=10]:hang").expect("spec"));
        let at = |ms: u64, bytes_in: u64| Context {
            command: "guest-ping",
            since_start: Duration::from_millis(ms),
            bytes_in,
            ..Context::default()
        };
        let mut fire = |c: Context<'_>| !engine.on_event(EventKind::Request, &c).is_empty();
        assert!(!fire(at(50, 100)));
        assert!(fire(at(150, 100)));
        assert!(!fire(at(150, 5)));
        assert!(!fire(at(250, 100)));
        assert!(engine.remove(id));
        assert!(!engine.remove(id));
    }

    #[test]
    fn connect_rules_ignore_requests() {
        let mut engine = FaultEngine::new(1);
        let id = engine.add(parse("connect:spurious=stale-sync").expect("spec"));
        assert!(!engine.may_fire(EventKind::Request, "guest-ping"));
        assert!(engine.may_fire(EventKind::Connect, ""));
        assert!(request(&mut engine, "guest-ping").is_empty());
        let fired = engine.on_event(EventKind::Connect, &Context::default());
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].rule, id);
    }

    #[test]
    fn delays_stay_within_their_bounds() {
        let mut engine = FaultEngine::new(3);
        for _ in 0..1000 {
            let uniform = engine.draw_delay(10, 20, Distribution::Uniform);
            assert!((Duration::from_millis(10)..=Duration::from_millis(30)).contains(&uniform));
            let exp = engine.draw_delay(0, 5, Distribution::Exponential);
            assert!(exp <= Duration::from_millis(50));
        }
    }
}
