//! The simulated fleet: which host's job is stuck when, and why. One
//! [`World`] is drawn from the scenario and a seed, and both the medic run
//! and the legacy baseline live through it: the same hosts fail at the
//! same moments, so their numbers compare.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::scenario::{Incident, Scenario, Span, host_labels, host_name};

/// What a host lives through, fixed before the run.
#[derive(Clone, Debug)]
pub struct HostPlan {
    /// Its name (`h00042`).
    pub name: String,
    /// Its labels (rack, zone).
    pub labels: medic_policy::Labels,
    /// When local faults arrive (scenario seconds).
    pub faults: Vec<f64>,
    /// Windows in which the job is stuck whatever is done (a dependency, a
    /// rack switch): start, end, cause.
    pub outages: Vec<(f64, f64, &'static str)>,
    /// Flapping: start, end, refail after.
    pub flapping: Option<(f64, f64, f64)>,
    /// Windows in which the host cannot reach the coordinator.
    pub partitioned: Vec<(f64, f64)>,
    /// Agent crashes: start, end, after-grant probability, back after,
    /// never-back probability.
    pub crash: Option<CrashPlan>,
}

/// When and how this host's agent may die.
#[derive(Clone, Copy, Debug)]
pub struct CrashPlan {
    /// Crashes happen from here...
    pub start: f64,
    /// ...to here (scenario seconds).
    pub end: f64,
    /// Probability of dying right after acting on a grant.
    pub after_grant: f64,
    /// How long the agent stays dead (scenario seconds).
    pub back_after: f64,
    /// Probability that a reboot never ends.
    pub never_back: f64,
}

impl HostPlan {
    /// Whether the host is cut off from the coordinator at `t`.
    pub fn partitioned_at(&self, t: f64) -> bool {
        self.partitioned.iter().any(|&(a, b)| t >= a && t < b)
    }

    /// Whether the host is ever cut off.
    pub fn ever_partitioned(&self) -> bool {
        !self.partitioned.is_empty()
    }
}

/// The fleet's plan.
#[derive(Clone, Debug)]
pub struct World {
    /// One plan per host.
    pub hosts: Vec<Arc<HostPlan>>,
    /// The seed it was drawn with.
    pub seed: u64,
}

impl World {
    /// Draws the fleet's failures and incidents from `scenario` and `seed`.
    pub fn build(scenario: &Scenario, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = scenario.fleet.hosts;
        let duration = scenario.duration.secs();
        let mut hosts: Vec<HostPlan> = (0..n)
            .map(|i| HostPlan {
                name: host_name(i),
                labels: host_labels(&scenario.fleet, i),
                faults: poisson(
                    &mut rng,
                    scenario.jobs.failure_rate_per_hour / 3600.0,
                    duration,
                ),
                outages: Vec::new(),
                flapping: None,
                partitioned: Vec::new(),
                crash: None,
            })
            .collect();
        let pick = |rng: &mut StdRng, count: usize| -> Vec<usize> {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(rng);
            idx.truncate(count.min(n));
            idx
        };
        let share_of = |share: f64| -> usize {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let c = (share * n as f64).round() as usize;
            c.max(1)
        };
        for inc in &scenario.incidents {
            match inc {
                Incident::Dependency {
                    at,
                    duration,
                    share,
                } => {
                    for i in pick(&mut rng, share_of(*share)) {
                        hosts[i].outages.push((
                            at.secs(),
                            at.secs() + duration.secs(),
                            "shared dependency down",
                        ));
                    }
                }
                Incident::Rack { at, duration, rack } => {
                    for h in hosts
                        .iter_mut()
                        .filter(|h| h.labels.get("rack") == Some(rack))
                    {
                        h.outages.push((
                            at.secs(),
                            at.secs() + duration.secs(),
                            "rack switch down",
                        ));
                    }
                }
                Incident::Flapping {
                    at,
                    duration,
                    hosts: count,
                    refail_after,
                } => {
                    for i in pick(&mut rng, *count) {
                        hosts[i].flapping =
                            Some((at.secs(), at.secs() + duration.secs(), refail_after.secs()));
                    }
                }
                Incident::Partition {
                    at,
                    duration,
                    share,
                } => {
                    for i in pick(&mut rng, share_of(*share)) {
                        hosts[i]
                            .partitioned
                            .push((at.secs(), at.secs() + duration.secs()));
                    }
                }
                Incident::AgentCrash {
                    at,
                    duration,
                    after_grant,
                    back_after,
                    never_back,
                } => {
                    for h in &mut hosts {
                        h.crash = Some(CrashPlan {
                            start: at.secs(),
                            end: at.secs() + duration.secs(),
                            after_grant: *after_grant,
                            back_after: back_after.secs(),
                            never_back: *never_back,
                        });
                    }
                }
                Incident::CoordinatorCrash { .. } | Incident::BreakerReset { .. } => {}
            }
        }
        Self {
            hosts: hosts.into_iter().map(Arc::new).collect(),
            seed,
        }
    }
}

/// Arrival times of a Poisson process of `rate` per second over `[0, end)`.
fn poisson(rng: &mut StdRng, rate: f64, end: f64) -> Vec<f64> {
    let mut out = Vec::new();
    if rate <= 0.0 {
        return out;
    }
    let mut t = 0.0;
    loop {
        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        t += -u.ln() / rate;
        if t >= end {
            return out;
        }
        out.push(t);
    }
}

/// A random duration from `span`, in scenario seconds.
pub fn draw(rng: &mut impl Rng, span: Span) -> f64 {
    let (a, b) = (span.min.secs(), span.max.secs());
    if b <= a { a } else { rng.random_range(a..=b) }
}

// === The job ===

/// One host's job as time passes: local faults come from the plan; a
/// restart or a reboot may clear them; outages clear only by themselves.
#[derive(Debug)]
pub struct JobModel {
    plan: Arc<HostPlan>,
    next_fault: usize,
    local: bool,
    refail_at: Option<f64>,
    flap_started: bool,
    rng: StdRng,
}

impl JobModel {
    /// The job of `plan`; `seed` drives whether remediations help.
    pub fn new(plan: Arc<HostPlan>, seed: u64) -> Self {
        Self {
            plan,
            next_fault: 0,
            local: false,
            refail_at: None,
            flap_started: false,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The host's plan.
    pub fn plan(&self) -> &Arc<HostPlan> {
        &self.plan
    }

    fn advance(&mut self, t: f64) {
        while self.next_fault < self.plan.faults.len() && self.plan.faults[self.next_fault] <= t {
            self.local = true;
            self.next_fault += 1;
        }
        if let Some((start, end, _)) = self.plan.flapping
            && !self.flap_started
            && t >= start
            && t < end
        {
            self.flap_started = true;
            self.local = true;
        }
        if let Some(r) = self.refail_at
            && r <= t
        {
            self.refail_at = None;
            self.local = true;
        }
    }

    /// Why the job is stuck at `t`, if it is.
    pub fn stuck(&mut self, t: f64) -> Option<&'static str> {
        self.advance(t);
        if let Some(&(_, _, why)) = self.plan.outages.iter().find(|&&(a, b, _)| t >= a && t < b) {
            return Some(why);
        }
        if self.local {
            return Some(if self.flap_started {
                "flapping job stuck again"
            } else {
                "job stuck (local fault)"
            });
        }
        None
    }

    /// A restart at `t`; clears a local fault with probability `p`.
    pub fn restart(&mut self, t: f64, p: f64) {
        self.advance(t);
        self.remediate(t, p);
    }

    /// A reboot ending at `t`; clears a local fault with probability `p`.
    pub fn reboot(&mut self, t: f64, p: f64) {
        self.advance(t);
        self.remediate(t, p);
    }

    fn remediate(&mut self, t: f64, p: f64) {
        if self.local && self.rng.random_bool(p.clamp(0.0, 1.0)) {
            self.local = false;
            if let Some((start, end, after)) = self.plan.flapping
                && t >= start
                && t < end
            {
                self.refail_at = Some(t + after);
            }
        }
    }

    /// A draw for the simulation's own coin flips (crashes, durations).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }
}

// === Stuck-time accounting, shared by both sides ===

/// Per-host stuck streaks from periodic samples.
#[derive(Debug, Default, Clone)]
pub struct StuckTracker {
    since: Vec<Option<f64>>,
    /// Host-seconds spent stuck.
    pub host_seconds: f64,
    /// The longest streak seen, seconds.
    pub longest: f64,
    last_t: Option<f64>,
}

impl StuckTracker {
    /// A tracker for `n` hosts.
    pub fn new(n: usize) -> Self {
        Self {
            since: vec![None; n],
            ..Self::default()
        }
    }

    /// Records that at `t` exactly the hosts with `stuck[i]` were stuck.
    pub fn sample(&mut self, t: f64, stuck: impl Iterator<Item = bool>) -> usize {
        let dt = self.last_t.map_or(0.0, |l| t - l);
        self.last_t = Some(t);
        let mut count = 0;
        for (i, s) in stuck.enumerate() {
            if i >= self.since.len() {
                break;
            }
            if s {
                count += 1;
                self.host_seconds += dt;
                let since = *self.since[i].get_or_insert(t);
                self.longest = self.longest.max(t - since);
            } else {
                self.since[i] = None;
            }
        }
        count
    }

    /// Hosts stuck at the last sample, with the longest current streak.
    pub fn left_stuck(&self) -> (usize, f64) {
        let t = self.last_t.unwrap_or(0.0);
        let stuck: Vec<f64> = self.since.iter().flatten().map(|s| t - s).collect();
        (stuck.len(), stuck.iter().copied().fold(0.0, f64::max))
    }
}
