//! A fleet of mock guests in one process: N agents, one socket each (`DIR/vm-00001.sock`,
//! ...), each with its own identity (host name, interface addresses), a seeded share of
//! them dead, slow or hostile, a control socket to change that at run time, and a summary
//! of what each agent served.
//!
//! Built for load-testing a management plane that polls thousands of guests: the agents
//! share one runtime and one copy of the guest profile's bulk, so 10,000 of them fit in
//! well under 200 MiB.

mod control;
mod limits;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::channel::{AgentState, FaultControl, Transport};
use crate::fault::Rule;
use crate::guest::{Identity, Profile};
use crate::mock::{MockAgent, MockAgentBuilder, MockError};

pub(crate) use limits::{raise_open_file_limit, OpenFileLimit};

/// What a fleet agent suffers from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// Answers as the real agent does.
    #[default]
    Healthy,
    /// The agent is not running: the socket accepts and buffers, nothing is answered.
    Dead,
    /// Every request is answered 100-400 ms late.
    Slow,
    /// Wrong sync ids, stale replies and spurious output.
    Hostile,
}

/// The fault rule of a slow agent.
pub(crate) const SLOW_RULE: &str = "*:delay=100ms..400ms";
/// The fault rules of a hostile agent.
pub(crate) const HOSTILE_RULES: &[&str] = &[
    "guest-sync*~0.5:wrong-sync-id=off-by-one",
    "*~0.2:spurious=stale-sync",
];

impl Condition {
    fn rules(self) -> Vec<Rule> {
        let specs: &[&str] = match self {
            Condition::Healthy | Condition::Dead => &[],
            Condition::Slow => &[SLOW_RULE],
            Condition::Hostile => HOSTILE_RULES,
        };
        specs
            .iter()
            .map(|spec| spec.parse().expect("the built-in rules parse"))
            .collect()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Condition::Healthy => "healthy",
            Condition::Dead => "dead",
            Condition::Slow => "slow",
            Condition::Hostile => "hostile",
        })
    }
}

impl FromStr for Condition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "healthy" => Ok(Condition::Healthy),
            "dead" => Ok(Condition::Dead),
            "slow" => Ok(Condition::Slow),
            "hostile" => Ok(Condition::Hostile),
            _ => Err(format!(
                "unknown condition '{s}': expected healthy, dead, slow or hostile"
            )),
        }
    }
}

/// Which share of the fleet is dead, slow and hostile (fractions of 1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Shares {
    pub dead: f64,
    pub slow: f64,
    pub hostile: f64,
}

impl Shares {
    /// Checks that each share is in [0, 1] and that they add up to at most 1.
    pub fn check(&self) -> Result<(), String> {
        for (name, share) in [
            ("dead", self.dead),
            ("slow", self.slow),
            ("hostile", self.hostile),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!(
                    "the {name} share must be between 0% and 100%, not {}%",
                    share * 100.0
                ));
            }
        }
        if self.dead + self.slow + self.hostile > 1.0 + 1e-9 {
            return Err("the dead, slow and hostile shares add up to more than 100%".into());
        }
        Ok(())
    }

    /// The condition of each of `count` agents: exactly `round(share × count)` of each, at
    /// places drawn from `seed`.
    #[must_use]
    pub fn assign(&self, count: usize, seed: u64) -> Vec<Condition> {
        let of = |share: f64| ((share * count as f64).round() as usize).min(count);
        let mut conditions = Vec::with_capacity(count);
        for (condition, n) in [
            (Condition::Dead, of(self.dead)),
            (Condition::Slow, of(self.slow)),
            (Condition::Hostile, of(self.hostile)),
        ] {
            let room = count - conditions.len();
            conditions.extend(std::iter::repeat_n(condition, n.min(room)));
        }
        conditions.resize(count, Condition::Healthy);
        conditions.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        conditions
    }
}

/// How to build a fleet.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub count: usize,
    pub dir: PathBuf,
    pub transport: Transport,
    pub shares: Shares,
    pub seed: u64,
    /// The profile every guest starts from (default: the built-in Linux guest); each gets
    /// its own host name and interface addresses.
    pub profile: Option<Profile>,
}

/// The socket of agent `index` (1-based) in `dir`.
#[must_use]
pub fn socket_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("vm-{index:05}.sock"))
}

/// Agent `index`'s identity: host name `vm-NNNNN`, and the base profile's interfaces with
/// their own MAC and addresses (IPv4 10.x.y.z and IPv6 fd00::k:n from the index) on every
/// interface but loopback.
#[must_use]
pub(crate) fn agent_identity(base: &Profile, index: usize) -> Identity {
    let mut network_interfaces = base.network_interfaces.clone();
    let n = index as u32;
    let [_, b, c, d] = n.to_be_bytes();
    for (k, iface) in network_interfaces
        .iter_mut()
        .filter(|i| i.name != "lo")
        .enumerate()
    {
        iface.hardware_address = Some(format!("52:54:{:02x}:{b:02x}:{c:02x}:{d:02x}", k));
        for address in iface.ip_addresses.iter_mut().flatten() {
            if address.ip_address.contains('.') {
                address.ip_address = format!("10.{}.{c}.{d}", (b as usize + k * 64) % 256);
            } else {
                address.ip_address = format!("fd00::{:x}:{n:x}", k);
            }
        }
    }
    Identity {
        host_name: format!("vm-{index:05}"),
        network_interfaces,
    }
}

/// One running agent of the fleet.
#[derive(Debug)]
struct Member {
    index: usize,
    condition: Condition,
    mock: MockAgent,
}

/// What one agent served, as the summary reports it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AgentSummary {
    pub agent: usize,
    pub socket: PathBuf,
    pub host_name: String,
    pub condition: Condition,
    pub state: String,
    /// Requests the agent handled.
    pub requests: u64,
}

/// The fleet's totals, by condition.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Totals {
    pub agents: usize,
    pub healthy: usize,
    pub dead: usize,
    pub slow: usize,
    pub hostile: usize,
    pub requests: u64,
}

/// A fleet of running mock agents; they shut down and their sockets go when it is dropped.
#[derive(Debug)]
pub struct Fleet {
    members: Vec<Member>,
    dir: PathBuf,
}

impl Fleet {
    /// Starts `config.count` agents on the current tokio runtime.
    pub async fn start(config: FleetConfig) -> Result<Fleet, MockError> {
        config.shares.check().map_err(MockError::FleetShares)?;
        let base = Arc::new(config.profile.unwrap_or_else(Profile::default_linux));
        let conditions = config.shares.assign(config.count, config.seed);
        let mut members = Vec::with_capacity(config.count);
        for (i, condition) in conditions.into_iter().enumerate() {
            let index = i + 1;
            let mut builder = MockAgent::builder()
                .shared_profile(base.clone(), agent_identity(&base, index))
                .transport(config.transport)
                .seed(config.seed ^ index as u64)
                .record_received(false)
                .faults(condition.rules());
            if condition == Condition::Dead {
                builder = builder.start_manually();
            }
            let mock = start_member(builder, &socket_path(&config.dir, index)).await?;
            members.push(Member {
                index,
                condition,
                mock,
            });
        }
        Ok(Fleet {
            members,
            dir: config.dir,
        })
    }

    /// The directory of the sockets.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many agents there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True for a fleet of none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Each agent's socket, in order.
    pub fn sockets(&self) -> impl Iterator<Item = &Path> {
        self.members.iter().map(|m| m.mock.socket_path())
    }

    /// Gives agent `index` (1-based) a new condition, at once.
    pub async fn set_condition(
        &mut self,
        index: usize,
        condition: Condition,
    ) -> Result<(), String> {
        let len = self.members.len();
        let member = self
            .members
            .get_mut(index.wrapping_sub(1))
            .ok_or_else(|| format!("no agent {index}: the fleet has agents 1 to {len}"))?;
        let faults: FaultControl = member.mock.faults();
        faults.clear();
        for rule in condition.rules() {
            faults.add(rule).map_err(|e| e.to_string())?;
        }
        let life = member.mock.life();
        let running = !matches!(
            life.state(),
            AgentState::Dead | AgentState::NotStarted | AgentState::VmExited
        );
        match (condition, running) {
            (Condition::Dead, true) => {
                life.kill().await.map_err(|e| e.to_string())?;
            }
            (Condition::Dead, false) => {}
            (_, false) => {
                life.start().await.map_err(|e| e.to_string())?;
            }
            (_, true) => {}
        }
        member.condition = condition;
        Ok(())
    }

    /// Reassigns every agent's condition by `shares`, seeded.
    pub async fn set_shares(&mut self, shares: Shares, seed: u64) -> Result<(), String> {
        shares.check()?;
        let conditions = shares.assign(self.members.len(), seed);
        for (i, condition) in conditions.into_iter().enumerate() {
            if self.members[i].condition != condition {
                self.set_condition(i + 1, condition).await?;
            }
        }
        Ok(())
    }

    /// Shuts every agent down and waits until its socket is closed and removed.
    pub async fn shutdown(&mut self) {
        for member in self.members.drain(..) {
            let _ = member.mock.shutdown().await;
        }
    }

    /// What each agent served so far.
    #[must_use]
    pub fn summary(&self) -> Vec<AgentSummary> {
        self.members
            .iter()
            .map(|m| AgentSummary {
                agent: m.index,
                socket: m.mock.socket_path().to_owned(),
                host_name: format!("vm-{:05}", m.index),
                condition: m.condition,
                state: m.mock.life().state().to_string(),
                requests: m.mock.faults().requests(),
            })
            .collect()
    }

    /// The totals by condition.
    #[must_use]
    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            agents: self.members.len(),
            ..Totals::default()
        };
        for m in &self.members {
            match m.condition {
                Condition::Healthy => totals.healthy += 1,
                Condition::Dead => totals.dead += 1,
                Condition::Slow => totals.slow += 1,
                Condition::Hostile => totals.hostile += 1,
            }
            totals.requests += m.mock.faults().requests();
        }
        totals
    }
}

async fn start_member(builder: MockAgentBuilder, path: &Path) -> Result<MockAgent, MockError> {
    builder.bind(path).await
}

pub(crate) use control::serve_control;
