//! The simulated fleet: which host's job is stuck when, and why. One
//! [`World`] is drawn from the scenario and a seed, and both the medic run
//! and the legacy baseline live through it: the same hosts fail at the
//! same moments, so their numbers compare.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::scenario::{DependencySpec, Incident, Scenario, Span, host_labels, host_name};

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
    /// A rolling deploy restarts its job: from, back at (scenario seconds).
    pub deploy: Option<(f64, f64)>,
    /// Whether its job uses the scenario's `[dependency]`.
    pub uses_dependency: bool,
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
    /// The scenario's dependency and the windows it is down for sure.
    pub dependency: Option<(DependencySpec, Vec<(f64, f64)>)>,
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
                faults: match scenario.jobs.failure_rate_per_hour_at_end {
                    None => poisson(
                        &mut rng,
                        scenario.jobs.failure_rate_per_hour / 3600.0,
                        duration,
                    ),
                    Some(at_end) => ramped_poisson(
                        &mut rng,
                        scenario.jobs.failure_rate_per_hour / 3600.0,
                        at_end / 3600.0,
                        duration,
                    ),
                },
                outages: Vec::new(),
                flapping: None,
                partitioned: Vec::new(),
                crash: None,
                deploy: None,
                uses_dependency: false,
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
                Incident::Zone { at, duration, zone } => {
                    for h in hosts
                        .iter_mut()
                        .filter(|h| h.labels.get("zone") == Some(zone))
                    {
                        h.outages
                            .push((at.secs(), at.secs() + duration.secs(), "zone down"));
                    }
                }
                Incident::Deploy {
                    at,
                    duration,
                    start_time,
                } => {
                    // One host after the other, in name order.
                    #[allow(clippy::cast_precision_loss)]
                    let gap = duration.secs() / n.max(1) as f64;
                    for (i, h) in hosts.iter_mut().enumerate() {
                        #[allow(clippy::cast_precision_loss)]
                        let from = at.secs() + gap * i as f64;
                        h.deploy = Some((from, from + draw(&mut rng, *start_time)));
                    }
                }
                Incident::Flapping {
                    at,
                    duration,
                    hosts: count,
                    refail_after,
                    zone,
                } => {
                    let chosen = match zone {
                        None => pick(&mut rng, *count),
                        Some(z) => {
                            let mut idx: Vec<usize> = (0..n)
                                .filter(|&i| hosts[i].labels.get("zone") == Some(z))
                                .collect();
                            idx.shuffle(&mut rng);
                            idx.truncate(*count);
                            idx
                        }
                    };
                    for i in chosen {
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
                Incident::CoordinatorCrash { .. }
                | Incident::BreakerReset { .. }
                | Incident::DependencyBlip { .. }
                | Incident::ClockStep { .. } => {}
            }
        }
        let dependency = scenario.dependency.as_ref().map(|spec| {
            for i in pick(&mut rng, share_of(spec.share)) {
                hosts[i].uses_dependency = true;
            }
            let blips = scenario
                .incidents
                .iter()
                .filter_map(|inc| match inc {
                    Incident::DependencyBlip { at, duration } => {
                        Some((at.secs(), at.secs() + duration.secs()))
                    }
                    _ => None,
                })
                .collect();
            (spec.clone(), blips)
        });
        Self {
            hosts: hosts.into_iter().map(Arc::new).collect(),
            seed,
            dependency,
        }
    }

    /// A fresh dependency for one side of the comparison (each side lives
    /// through its own), if the scenario has one.
    pub fn dependency(&self) -> Option<SharedDependency> {
        self.dependency.as_ref().map(|(spec, blips)| {
            let users: Vec<bool> = self.hosts.iter().map(|h| h.uses_dependency).collect();
            Arc::new(Mutex::new(Dependency::new(
                spec.clone(),
                blips.clone(),
                &users,
            )))
        })
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

/// Arrival times of a Poisson process whose rate climbs linearly from
/// `from` to `to` per second over `[0, end)` (thinning: draws at the higher
/// rate, keeps each with the rate of its time over that).
fn ramped_poisson(rng: &mut StdRng, from: f64, to: f64, end: f64) -> Vec<f64> {
    let top = from.max(to);
    poisson(rng, top, end)
        .into_iter()
        .filter(|&t| {
            let rate = from + (to - from) * (t / end);
            rng.random_bool((rate / top).clamp(0.0, 1.0))
        })
        .collect()
}

/// A random duration from `span`, in scenario seconds.
pub fn draw(rng: &mut impl Rng, span: Span) -> f64 {
    let (a, b) = (span.min.secs(), span.max.secs());
    if b <= a { a } else { rng.random_range(a..=b) }
}

// === The shared dependency ===

/// A [`Dependency`] one side of the comparison lives through.
pub type SharedDependency = Arc<Mutex<Dependency>>;

/// The scenario's `[dependency]` as time passes (see
/// [`DependencySpec`]): the demand of the jobs connected to it, whether it
/// is failing, and the stretches it failed. It moves in steps of one
/// scenario second, whenever someone asks about a later time; changes
/// reported for an earlier time than it has reached apply at its time.
#[derive(Debug)]
pub struct Dependency {
    spec: DependencySpec,
    blips: Vec<(f64, f64)>,
    users: Vec<bool>,
    connected: Vec<bool>,
    /// Per host: the end of its reconnect burst, in milliseconds, while it
    /// lasts.
    warm_until: Vec<Option<u64>>,
    /// Ends of bursts, soonest first (stale entries skipped).
    ends: BinaryHeap<Reverse<(u64, usize)>>,
    n_connected: usize,
    n_warming: usize,
    t: f64,
    overloaded: bool,
    calm_since: Option<f64>,
    down_since: Option<f64>,
    down: Vec<(f64, f64)>,
    peak_load: f64,
    series: Vec<DependencySample>,
}

/// The dependency at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DependencySample {
    /// Scenario seconds.
    pub t: f64,
    /// Requests per second asked of it.
    pub load: f64,
    /// Whether it was failing.
    pub failing: bool,
}

/// What the dependency lived through on one side, for the report.
#[derive(Clone, Debug, Default)]
pub struct DependencyOutcome {
    /// Its name.
    pub name: String,
    /// Its capacity (requests per second).
    pub capacity: f64,
    /// When it was failing: from, to (scenario seconds; the last one may
    /// end with the run).
    pub down: Vec<(f64, f64)>,
    /// Minutes it was failing.
    pub down_minutes: f64,
    /// The highest demand seen (requests per second).
    pub peak_load: f64,
    /// Samples every 10 scenario seconds.
    pub series: Vec<DependencySample>,
    /// When its first forced failure began (scenario seconds).
    pub incident_at: Option<f64>,
    /// Minutes from that start until the dependency was up and no host was
    /// stuck or down, for good; `None`: not within the run.
    pub full_recovery_minutes: Option<f64>,
}

/// Milliseconds of scenario time, for the burst heap.
fn millis(t: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = (t.max(0.0) * 1000.0).round() as u64;
    ms
}

impl Dependency {
    /// At time 0, every job that uses it connected and settled.
    pub fn new(spec: DependencySpec, blips: Vec<(f64, f64)>, users: &[bool]) -> Self {
        let n_connected = users.iter().filter(|u| **u).count();
        Self {
            spec,
            blips,
            users: users.to_vec(),
            connected: users.to_vec(),
            warm_until: vec![None; users.len()],
            ends: BinaryHeap::new(),
            n_connected,
            n_warming: 0,
            t: 0.0,
            overloaded: false,
            calm_since: None,
            down_since: None,
            down: Vec::new(),
            peak_load: 0.0,
            series: Vec::new(),
        }
    }

    /// Requests per second asked of it now.
    pub fn load(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let (c, w) = (self.n_connected as f64, self.n_warming as f64);
        self.spec.steady_load * (c - w) + self.spec.reconnect_load * w
    }

    fn forced(&self, t: f64) -> bool {
        self.blips.iter().any(|&(a, b)| t >= a && t < b)
    }

    fn end_burst(&mut self, i: usize) {
        if self.warm_until[i].take().is_some() {
            self.n_warming -= 1;
        }
    }

    /// Moves to `t`, one scenario second at a time.
    pub fn advance(&mut self, t: f64) {
        while self.t + 1.0 <= t {
            self.t += 1.0;
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.t;
        let now_ms = millis(now);
        while let Some(&Reverse((end, i))) = self.ends.peek() {
            if end > now_ms {
                break;
            }
            self.ends.pop();
            if self.warm_until[i] == Some(end) {
                self.end_burst(i);
            }
        }
        let load = self.load();
        self.peak_load = self.peak_load.max(load);
        if self.forced(now) || load > self.spec.capacity {
            self.overloaded = true;
            self.calm_since = None;
        } else if self.overloaded {
            let since = *self.calm_since.get_or_insert(now);
            if now - since >= self.spec.recover_after.secs() {
                self.overloaded = false;
                self.calm_since = None;
            }
        }
        match (self.overloaded, self.down_since) {
            (true, None) => self.down_since = Some(now),
            (false, Some(from)) => {
                self.down.push((from, now));
                self.down_since = None;
            }
            _ => {}
        }
        if self.series.last().is_none_or(|s| now - s.t >= 10.0) {
            self.series.push(DependencySample {
                t: now,
                load,
                failing: self.overloaded,
            });
        }
    }

    /// Whether it is failing at `t`.
    pub fn failing(&mut self, t: f64) -> bool {
        self.advance(t);
        self.overloaded
    }

    /// Host `i`'s job (re)connected at `t`: its burst begins.
    pub fn reconnect(&mut self, i: usize, t: f64) {
        if !self.users.get(i).copied().unwrap_or(false) {
            return;
        }
        self.advance(t);
        if !self.connected[i] {
            self.connected[i] = true;
            self.n_connected += 1;
        }
        let end = millis(t.max(self.t) + self.spec.reconnect_for.secs());
        if self.warm_until[i].is_none() {
            self.n_warming += 1;
        }
        self.warm_until[i] = Some(end);
        self.ends.push(Reverse((end, i)));
    }

    /// Host `i`'s job went away at `t` (its host went down).
    pub fn disconnect(&mut self, i: usize, t: f64) {
        if !self.users.get(i).copied().unwrap_or(false) {
            return;
        }
        self.advance(t);
        self.end_burst(i);
        if self.connected[i] {
            self.connected[i] = false;
            self.n_connected -= 1;
        }
    }

    /// What it lived through until `end`, with the side's samples of stuck
    /// hosts (`(t, stuck)`) for the time to full recovery.
    pub fn outcome(&mut self, end: f64, stuck: &[(f64, usize)]) -> DependencyOutcome {
        self.advance(end);
        let mut down = self.down.clone();
        if let Some(from) = self.down_since {
            down.push((from, end.max(from)));
        }
        let incident_at = self.blips.iter().map(|b| b.0).min_by(f64::total_cmp);
        let full_recovery_minutes = incident_at.and_then(|at| {
            full_recovery(at, &down, self.down_since.is_some(), stuck).map(|t| (t - at) / 60.0)
        });
        DependencyOutcome {
            name: self.spec.name.clone(),
            capacity: self.spec.capacity,
            down_minutes: down.iter().map(|(a, b)| b - a).sum::<f64>() / 60.0,
            down,
            peak_load: self.peak_load,
            series: self.series.clone(),
            incident_at,
            full_recovery_minutes,
        }
    }
}

/// The first time after `at` from which the dependency stays up and no host
/// is stuck or down until the end; `None` if that never happens.
fn full_recovery(
    at: f64,
    down: &[(f64, f64)],
    down_at_end: bool,
    stuck: &[(f64, usize)],
) -> Option<f64> {
    if down_at_end || stuck.last().is_none_or(|s| s.1 > 0) {
        return None;
    }
    let dependency_back = down.iter().map(|d| d.1).fold(at, f64::max);
    // The first sample of the last run of samples with nothing stuck.
    let last_bad = stuck.iter().rposition(|s| s.1 > 0);
    let hosts_back = match last_bad {
        Some(i) => stuck.get(i + 1).map_or(f64::INFINITY, |s| s.0),
        None => at,
    };
    let t = dependency_back.max(hosts_back).max(at);
    t.is_finite().then_some(t)
}

// === The job ===

/// One host's job as time passes: local faults come from the plan; a
/// restart or a reboot may clear them; outages clear only by themselves,
/// and so does a failing dependency, which the remediations themselves may
/// keep failing.
#[derive(Debug)]
pub struct JobModel {
    plan: Arc<HostPlan>,
    next_fault: usize,
    local: bool,
    refail_at: Option<f64>,
    flap_started: bool,
    deploy_started: bool,
    deploy_done: bool,
    /// When the job's process last started (a deploy, a restart, a boot),
    /// if it has since the run began.
    started: Option<f64>,
    dependency: Option<(SharedDependency, usize)>,
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
            deploy_started: false,
            deploy_done: false,
            started: None,
            dependency: None,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The same, as host `index` of the fleet, using `dependency` (one
    /// side's, from [`World::dependency`]) if the scenario has one.
    #[must_use]
    pub fn with_dependency(mut self, dependency: Option<&SharedDependency>, index: usize) -> Self {
        self.dependency = dependency.map(|d| (d.clone(), index));
        self
    }

    /// The host's plan.
    pub fn plan(&self) -> &Arc<HostPlan> {
        &self.plan
    }

    fn with_dep(&self, f: impl FnOnce(&mut Dependency, usize)) {
        if let Some((d, i)) = &self.dependency {
            let mut d = d.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut d, *i);
        }
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
        if let Some((from, back)) = self.plan.deploy {
            if !self.deploy_started && t >= from {
                self.deploy_started = true;
                self.started = Some(from);
                self.with_dep(|d, i| d.disconnect(i, from));
            }
            if !self.deploy_done && t >= back {
                self.deploy_done = true;
                self.with_dep(|d, i| d.reconnect(i, back));
            }
        }
    }

    /// When the job's process last started, as of `t` (what a process
    /// detector reads from /proc).
    pub fn started(&mut self, t: f64) -> Option<f64> {
        self.advance(t);
        self.started
    }

    /// Why the job is stuck at `t`, if it is.
    pub fn stuck(&mut self, t: f64) -> Option<&'static str> {
        self.advance(t);
        if let Some(&(_, _, why)) = self.plan.outages.iter().find(|&&(a, b, _)| t >= a && t < b) {
            return Some(why);
        }
        if let Some((from, back)) = self.plan.deploy
            && t >= from
            && t < back
        {
            return Some("deploy: job starting");
        }
        let mut failing = false;
        self.with_dep(|d, i| failing = d.users[i] && d.failing(t));
        if failing {
            return Some("shared dependency failing");
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

    /// A restart at `t`; clears a local fault with probability `p`. The job
    /// reconnects to the dependency.
    pub fn restart(&mut self, t: f64, p: f64) {
        self.advance(t);
        self.started = Some(t);
        self.with_dep(|d, i| d.reconnect(i, t));
        self.remediate(t, p);
    }

    /// A reboot ending at `t`; clears a local fault with probability `p`.
    /// The job reconnects to the dependency.
    pub fn reboot(&mut self, t: f64, p: f64) {
        self.advance(t);
        self.started = Some(t);
        self.with_dep(|d, i| d.reconnect(i, t));
        self.remediate(t, p);
    }

    /// The host goes down at `t` (a reboot begins): the job leaves the
    /// dependency.
    pub fn going_down(&mut self, t: f64) {
        self.advance(t);
        self.with_dep(|d, i| d.disconnect(i, t));
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
