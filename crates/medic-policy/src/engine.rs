//! The engine: the fleet view, the rules, and the permit lifecycle.
//!
//! Every public method takes `now`. Methods that change durable state record
//! [`Event`]s; the caller drains them with [`Engine::take_events`] and makes
//! them durable (before replying, for grants: I6). Counts that rules need
//! (live hosts, unhealthy hosts, active permits, per group value) are kept
//! incrementally, so a decision never scans the fleet.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use humantime::format_duration;

use crate::config::{ActionLimits, PolicyConfig};
use crate::error::{PolicyError, ScopeSuffix};
use crate::rate::RateState;
use crate::state::DurableState;
use crate::types::later;
use crate::types::{
    Action, BreakerCause, BreakerScope, BreakerTrip, COORDINATOR_ACTOR, ClockMark, ClockStep,
    Decision, Denial, DenyReason, Event, FencingToken, Heartbeat, HeartbeatReply, HostId, Labels,
    Outcome, Pause, Permit, PermitId, PermitRef, PermitRequest, PermitState, Problem, Quarantine,
    QuarantineCause, Scope, Time, host_actor,
};
use crate::view::{ActionStatus, Explanation, HostView, Status};
use crate::window;

/// Live, unhealthy and active counts of the fleet or of one group value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    live: u32,
    unhealthy: u32,
    active: [u32; 2],
}

/// One configured group label (`rack`): its interned values and their counts.
#[derive(Debug, Default)]
struct GroupIndex {
    label: String,
    ids: HashMap<String, u32>,
    names: Vec<String>,
    counts: Vec<Counts>,
}

impl GroupIndex {
    fn intern(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.ids.insert(value.to_owned(), id);
        self.names.push(value.to_owned());
        self.counts.push(Counts::default());
        id
    }
}

/// Per host and action: what budgets remember.
#[derive(Debug, Default, Clone)]
struct HostActionHistory {
    last_end: Option<Time>,
    attempts: VecDeque<Time>,
}

#[derive(Debug)]
struct HostSlot {
    id: HostId,
    labels: Labels,
    /// Interned value per group label (index-aligned with `Engine::groups`).
    group_values: Vec<Option<u32>>,
    agent_version: String,
    last_heartbeat: Option<Time>,
    problems: Vec<Problem>,
    active_permit: Option<PermitId>,
    history: [HostActionHistory; 2],
    live: bool,
    unhealthy: bool,
    /// Whether the liveness heap holds an entry for this host (at most one:
    /// heartbeats do not push, the entry is re-armed when it comes due).
    liveness_queued: bool,
}

/// The decision engine. See the crate docs.
#[derive(Debug)]
pub struct Engine {
    config: PolicyConfig,
    started_at: Time,
    /// The latest `now` seen: time never runs backwards inside the engine,
    /// whatever the caller's wall clock does.
    clock: Time,
    durable: DurableState,

    hosts: Vec<HostSlot>,
    host_index: HashMap<HostId, usize>,
    groups: Vec<GroupIndex>,
    fleet: Counts,
    rate: [RateState; 2],
    /// Outcome samples for the failure breaker: (when, failed).
    outcomes: VecDeque<(Time, bool)>,
    outcomes_failed: u32,
    /// Request ids by permit, to answer about ended permits.
    permit_requests: HashMap<PermitId, crate::types::RequestId>,
    permit_expiry: BinaryHeap<Reverse<(Time, FencingToken)>>,
    liveness: BinaryHeap<Reverse<(Time, usize)>>,
    /// Since when each open breaker's condition has been clear.
    breaker_clear_since: HashMap<BreakerScope, Time>,
    events: Vec<Event>,
}

// === impl Engine: construction and configuration ===

impl Engine {
    /// A new engine with no history, started at `now` (warm-up begins).
    pub fn new(config: PolicyConfig, now: Time) -> Self {
        Self::restore(config, DurableState::default(), now)
    }

    /// An engine resuming from durable state after a restart at `now`.
    /// Warm-up begins again: liveness is not durable, so the fleet is unknown.
    pub fn restore(config: PolicyConfig, durable: DurableState, now: Time) -> Self {
        let mut e = Self {
            config,
            started_at: now,
            clock: now,
            durable,
            hosts: Vec::new(),
            host_index: HashMap::new(),
            groups: Vec::new(),
            fleet: Counts::default(),
            rate: Default::default(),
            outcomes: VecDeque::new(),
            outcomes_failed: 0,
            permit_requests: HashMap::new(),
            permit_expiry: BinaryHeap::new(),
            liveness: BinaryHeap::new(),
            breaker_clear_since: HashMap::new(),
            events: Vec::new(),
        };
        e.rebuild_indexes();
        e
    }

    /// The configuration in force.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The durable state, as the events emitted so far have shaped it.
    pub fn durable(&self) -> &DurableState {
        &self.durable
    }

    /// When this engine started (warm-up is measured from here).
    pub fn started_at(&self) -> Time {
        self.started_at
    }

    /// Swaps in a new, already validated configuration. Lowering a cap
    /// revokes nothing: it only blocks new grants until the count is under it
    /// (I10).
    pub fn set_config(&mut self, config: PolicyConfig, now: Time) {
        let now = self.observe(now);
        self.config = config;
        self.rebuild_indexes();
        self.advance(now);
    }

    /// Records a check of the wall clock. With a `step`, everything the
    /// engine remembers in wall time (permits and their expiries, pauses,
    /// quarantines, breakers, budgets' grant times, liveness, warm-up)
    /// moves with the clock: expiries, windows and silences stay judged on
    /// the time that actually passed. The coordinator detects steps by
    /// comparing the wall clock with the boot clock, live and across
    /// restarts; the engine only trusts what it is told.
    pub fn clock_checked(
        &mut self,
        step: Option<ClockStep>,
        detail: String,
        mark: ClockMark,
        now: Time,
    ) {
        if let Some(step) = step {
            self.started_at = step.shift(self.started_at);
            self.clock = step.shift(self.clock);
            for slot in &mut self.hosts {
                if let Some(hb) = &mut slot.last_heartbeat {
                    *hb = step.shift(*hb);
                }
                for p in &mut slot.problems {
                    p.since = step.shift(p.since);
                }
            }
            for t in self.breaker_clear_since.values_mut() {
                *t = step.shift(*t);
            }
        }
        let now = self.observe(now);
        self.emit(Event::ClockChecked {
            step,
            detail,
            mark,
            at: now,
        });
        if step.is_some() {
            self.rebuild_indexes();
        }
        self.advance(now);
    }

    /// Drains the events recorded since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Rebuilds every derived index from the durable state, the host slots
    /// and the configuration.
    fn rebuild_indexes(&mut self) {
        let now = self.clock;
        self.groups = self
            .config
            .group_labels()
            .into_iter()
            .map(|label| GroupIndex {
                label,
                ..GroupIndex::default()
            })
            .collect();
        self.fleet = Counts::default();
        self.permit_expiry.clear();
        self.liveness.clear();
        self.permit_requests = self
            .durable
            .requests
            .iter()
            .map(|(rid, p)| (p.id.clone(), rid.clone()))
            .collect();

        // Hosts known only through permits get a slot with the permit's labels.
        let holders: Vec<(HostId, Labels, PermitId)> = self
            .durable
            .permits
            .values()
            .map(|p| (p.host.clone(), p.labels.clone(), p.id.clone()))
            .collect();
        for (host, labels, _) in &holders {
            if !self.host_index.contains_key(host) {
                self.add_slot(host.clone(), labels.clone());
            }
        }
        for slot in &mut self.hosts {
            slot.live = false;
            slot.unhealthy = false;
            slot.liveness_queued = false;
            slot.active_permit = None;
            slot.history = Default::default();
        }
        for i in 0..self.hosts.len() {
            let values = self.intern_values(&self.hosts[i].labels.clone());
            self.hosts[i].group_values = values;
        }
        for (host, _, id) in holders {
            let i = self.host_index[&host];
            self.hosts[i].active_permit = Some(id);
        }
        let permits: Vec<Permit> = self.durable.permits.values().cloned().collect();
        for p in &permits {
            self.count_permit(p, 1);
            self.permit_expiry.push(Reverse((p.expires_at, p.token)));
        }

        // Budgets from the grant log.
        let mut per_action: [Vec<Time>; 2] = Default::default();
        for g in &self.durable.grants {
            per_action[g.action.index()].push(g.at);
            if let Some(&i) = self.host_index.get(&g.host) {
                let released = self.durable.released.get(&g.host).map(|r| r.0);
                if released.is_none_or(|r| g.seq > r) {
                    self.hosts[i].history[g.action.index()]
                        .attempts
                        .push_back(g.at);
                }
            }
        }
        self.rate = Action::ALL.map(|a| {
            RateState::rebuild(
                &self.config.limits(a).rate,
                std::mem::take(&mut per_action[a.index()]),
            )
        });
        self.outcomes.clear();
        self.outcomes_failed = 0;
        let ends: Vec<_> = self.durable.endings.clone();
        for e in ends {
            if let Some(&i) = self.host_index.get(&e.host) {
                self.hosts[i].history[e.action.index()].last_end = Some(e.at);
            }
            if e.seq > self.durable.breaker_reset_seq {
                self.record_outcome_sample(e.at, e.state);
            }
        }

        for i in 0..self.hosts.len() {
            self.arm_liveness(i);
            self.refresh(i, now);
        }
    }

    fn intern_values(&mut self, labels: &Labels) -> Vec<Option<u32>> {
        self.groups
            .iter_mut()
            .map(|g| labels.get(&g.label).map(|v| g.intern(v)))
            .collect()
    }

    fn add_slot(&mut self, id: HostId, labels: Labels) -> usize {
        let group_values = self.intern_values(&labels);
        let i = self.hosts.len();
        // A host met for the first time may already have history (grants
        // before a restart, before it heartbeated again).
        let mut history: [HostActionHistory; 2] = Default::default();
        let released = self.durable.released.get(&id).map(|r| r.0);
        for g in self.durable.grants.iter().filter(|g| g.host == id) {
            if released.is_none_or(|r| g.seq > r) {
                history[g.action.index()].attempts.push_back(g.at);
            }
        }
        for e in self.durable.endings.iter().filter(|e| e.host == id) {
            history[e.action.index()].last_end = Some(e.at);
        }
        self.hosts.push(HostSlot {
            id: id.clone(),
            labels,
            group_values,
            agent_version: String::new(),
            last_heartbeat: None,
            problems: Vec::new(),
            active_permit: None,
            history,
            live: false,
            unhealthy: false,
            liveness_queued: false,
        });
        self.host_index.insert(id, i);
        i
    }

    /// Queues the moment host `i` stops being live by silence, unless an
    /// entry is already queued (it re-arms itself when it comes due).
    fn arm_liveness(&mut self, i: usize) {
        let slot = &mut self.hosts[i];
        if slot.liveness_queued {
            return;
        }
        if let Some(hb) = slot.last_heartbeat {
            let deadline = later(hb, self.config.fleet.host_ttl);
            if deadline > self.clock {
                slot.liveness_queued = true;
                self.liveness.push(Reverse((deadline, i)));
            }
        }
    }

    /// Time never goes backwards inside the engine.
    fn observe(&mut self, now: Time) -> Time {
        if now > self.clock {
            self.clock = now;
        }
        self.clock
    }

    /// Applies an event to the durable state, and to the derived state that
    /// must forget with it, then records it for the store.
    fn emit(&mut self, event: Event) {
        self.durable.apply(&event);
        match &event {
            // Failure samples before a close of the fleet breaker stop
            // counting (a restored engine sees the same through `seq`).
            Event::BreakerClosed {
                scope: BreakerScope::Fleet,
                ..
            } => {
                self.outcomes.clear();
                self.outcomes_failed = 0;
            }
            // A released host's attempt budget starts afresh.
            Event::HostReleased { host, .. } => {
                if let Some(&i) = self.host_index.get(host) {
                    for h in &mut self.hosts[i].history {
                        h.attempts.clear();
                    }
                }
            }
            _ => {}
        }
        self.events.push(event);
    }
}

// === impl Engine: counts ===

impl Engine {
    /// Recomputes a host's live/unhealthy flags and moves the counts.
    fn refresh(&mut self, i: usize, now: Time) {
        let ttl = self.config.fleet.host_ttl;
        let slot = &self.hosts[i];
        let heard = slot
            .last_heartbeat
            .is_some_and(|hb| now.duration_since(hb).map_or(true, |age| age < ttl));
        let holds = slot.active_permit.is_some();
        let live = heard || holds;
        let unhealthy = live && (holds || !slot.problems.is_empty());
        if live == slot.live && unhealthy == slot.unhealthy {
            return;
        }
        let (old_live, old_unhealthy) = (slot.live, slot.unhealthy);
        let values = slot.group_values.clone();
        self.apply_flags(&values, old_live, old_unhealthy, -1);
        self.apply_flags(&values, live, unhealthy, 1);
        let slot = &mut self.hosts[i];
        slot.live = live;
        slot.unhealthy = unhealthy;
    }

    fn apply_flags(&mut self, values: &[Option<u32>], live: bool, unhealthy: bool, sign: i32) {
        let bump = |c: &mut Counts| {
            if live {
                c.live = c.live.saturating_add_signed(sign);
            }
            if unhealthy {
                c.unhealthy = c.unhealthy.saturating_add_signed(sign);
            }
        };
        bump(&mut self.fleet);
        for (g, v) in self.groups.iter_mut().zip(values) {
            if let Some(v) = v {
                bump(&mut g.counts[*v as usize]);
            }
        }
    }

    /// Adds (`sign = 1`) or removes (`-1`) a permit from the active counts,
    /// by the labels it was granted under.
    fn count_permit(&mut self, p: &Permit, sign: i32) {
        let a = p.action.index();
        self.fleet.active[a] = self.fleet.active[a].saturating_add_signed(sign);
        for g in &mut self.groups {
            if let Some(v) = p.labels.get(&g.label) {
                let id = g.intern(v) as usize;
                g.counts[id].active[a] = g.counts[id].active[a].saturating_add_signed(sign);
            }
        }
    }

    fn record_outcome_sample(&mut self, at: Time, state: PermitState) {
        let failed = match state {
            PermitState::Succeeded => false,
            PermitState::Failed | PermitState::Expired => true,
            _ => return,
        };
        self.outcomes.push_back((at, failed));
        if failed {
            self.outcomes_failed += 1;
        }
    }
}

// === impl Engine: time passing ===

impl Engine {
    /// Lets time pass to `now`: hosts go silent, permits and pauses expire,
    /// breakers open or close. Cheap; every call runs it first.
    fn advance(&mut self, now: Time) {
        while let Some(&Reverse((deadline, i))) = self.liveness.peek() {
            if deadline > now {
                break;
            }
            self.liveness.pop();
            self.hosts[i].liveness_queued = false;
            // Heartbeats since the entry was queued push the deadline out.
            self.arm_liveness(i);
            self.refresh(i, now);
        }

        while let Some(&Reverse((expires, token))) = self.permit_expiry.peek() {
            if expires > now {
                break;
            }
            self.permit_expiry.pop();
            let id = PermitId::for_token(token);
            let Some(p) = self.durable.permits.get(&id) else {
                continue;
            };
            if p.expires_at > now {
                continue; // renewed since; a newer heap entry exists
            }
            let (host, action, job) = (p.host.clone(), p.action, p.job.clone());
            let detail = format!(
                "no outcome before the permit expired at {}",
                crate::types::rfc3339(p.expires_at)
            );
            self.end_permit(&id, PermitState::Expired, COORDINATOR_ACTOR, &detail, now);
            if !self.durable.quarantines.contains_key(&host) {
                self.emit(Event::HostQuarantined(Quarantine {
                    host,
                    cause: QuarantineCause::PermitExpired,
                    actor: COORDINATOR_ACTOR.to_owned(),
                    reason: format!(
                        "{action} permit {id} for job {job:?} expired without an outcome: \
                         the host went away mid-remediation"
                    ),
                    since: now,
                }));
            }
        }

        if self
            .durable
            .pauses
            .values()
            .any(|p| p.until.is_some_and(|u| u <= now))
        {
            let expired: Vec<Pause> = self
                .durable
                .pauses
                .values()
                .filter(|p| p.until.is_some_and(|u| u <= now))
                .cloned()
                .collect();
            for pause in expired {
                self.emit(Event::Resumed {
                    pause,
                    actor: COORDINATOR_ACTOR.to_owned(),
                    reason: "pause expired".to_owned(),
                    at: now,
                });
            }
        }

        let window = self.config.breaker.window;
        while let Some(&(at, failed)) = self.outcomes.front() {
            if now.duration_since(at).is_ok_and(|d| d > window) {
                self.outcomes.pop_front();
                if failed {
                    self.outcomes_failed -= 1;
                }
            } else {
                break;
            }
        }
        self.evaluate_breaker(BreakerScope::Fleet, now);
    }

    /// Periodic housekeeping: everything `advance` does, plus every domain
    /// breaker and compaction of records no rule needs. The coordinator calls
    /// it on a timer (about once per second).
    pub fn tick(&mut self, now: Time) {
        let now = self.observe(now);
        self.advance(now);
        let domains: Vec<(usize, u32)> = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| self.config.breaker.domains.contains_key(&g.label))
            .flat_map(|(gi, g)| (0..g.names.len()).map(move |v| (gi, v as u32)))
            .collect();
        for (gi, v) in domains {
            let scope = BreakerScope::Domain {
                label: self.groups[gi].label.clone(),
                value: self.groups[gi].names[v as usize].clone(),
            };
            self.evaluate_breaker(scope, now);
        }
        // Breakers of domains that vanished from the config can still close.
        let stale: Vec<BreakerScope> = self
            .durable
            .breakers
            .keys()
            .filter(|s| match s {
                BreakerScope::Fleet => false,
                BreakerScope::Domain { label, .. } => {
                    !self.config.breaker.domains.contains_key(label)
                }
            })
            .cloned()
            .collect();
        for scope in stale {
            self.evaluate_breaker(scope, now);
        }
        self.durable.compact(&self.config, now);
        let prune = |h: &mut HostActionHistory, keep: Duration| {
            while h
                .attempts
                .front()
                .is_some_and(|&t| now.duration_since(t).is_ok_and(|d| d >= keep))
            {
                h.attempts.pop_front();
            }
        };
        let keeps = Action::ALL.map(|a| self.config.limits(a).host_budget.per);
        for slot in &mut self.hosts {
            for a in Action::ALL {
                prune(&mut slot.history[a.index()], keeps[a.index()]);
            }
        }
        for a in Action::ALL {
            self.rate[a.index()].prune(&self.config.limits(a).rate, now);
        }
        self.permit_requests
            .retain(|_, rid| self.durable.requests.contains_key(rid));
        self.forget_silent_hosts(now);
    }

    /// Drops the slots of hosts unheard of for `fleet.forget_hosts_after`
    /// that hold no permit and are not quarantined: made-up or retired
    /// host ids must not hold memory until a restart. Nothing durable is
    /// lost: a host that comes back gets its budgets from the grant
    /// records again.
    fn forget_silent_hosts(&mut self, now: Time) {
        let keep = self.config.fleet.forget_hosts_after;
        let quarantines = &self.durable.quarantines;
        let forgotten = |s: &HostSlot| {
            !s.live
                && s.active_permit.is_none()
                && !quarantines.contains_key(&s.id)
                && s.last_heartbeat
                    .is_none_or(|hb| now.duration_since(hb).is_ok_and(|d| d >= keep))
        };
        if !self.hosts.iter().any(forgotten) {
            return;
        }
        self.hosts.retain(|s| !forgotten(s));
        self.host_index = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        self.rebuild_indexes();
    }

    fn warming_up(&self, now: Time) -> Option<Duration> {
        let ends = later(self.started_at, self.config.fleet.warmup);
        ends.duration_since(now).ok().filter(|d| !d.is_zero())
    }

    /// Whether the breaker of `scope` should be open now, and why.
    fn breaker_condition(&self, scope: &BreakerScope, now: Time) -> Option<(BreakerCause, String)> {
        // Percentages over a fleet still being learned are guesses.
        let fleet_known =
            self.warming_up(now).is_none() && self.fleet.live >= self.config.fleet.min_fleet_size;
        match scope {
            BreakerScope::Fleet => {
                let b = &self.config.breaker;
                let c = self.fleet;
                if fleet_known && over(c.unhealthy, c.live, b.unhealthy_percent) {
                    return Some((
                        BreakerCause::UnhealthyFraction,
                        format!(
                            "{} of {} live hosts unhealthy ({:.1}% > unhealthy_percent {}%)",
                            c.unhealthy,
                            c.live,
                            pct(c.unhealthy, c.live),
                            b.unhealthy_percent
                        ),
                    ));
                }
                let n = u32::try_from(self.outcomes.len()).unwrap_or(u32::MAX);
                if n >= b.min_samples && over(self.outcomes_failed, n, b.failure_percent) {
                    return Some((
                        BreakerCause::FailureFraction,
                        format!(
                            "{} of the last {} remediations in {} failed or expired \
                             ({:.1}% > failure_percent {}%)",
                            self.outcomes_failed,
                            n,
                            format_duration(b.window),
                            pct(self.outcomes_failed, n),
                            b.failure_percent
                        ),
                    ));
                }
                None
            }
            BreakerScope::Domain { label, value } => {
                let d = self.config.breaker.domains.get(label)?;
                let g = self.groups.iter().find(|g| &g.label == label)?;
                let c = g.counts[*g.ids.get(value)? as usize];
                if fleet_known
                    && c.live >= d.min_hosts
                    && over(c.unhealthy, c.live, d.unhealthy_percent)
                {
                    Some((
                        BreakerCause::UnhealthyFraction,
                        format!(
                            "{} of {} live hosts in {label}={value} unhealthy \
                             ({:.1}% > unhealthy_percent {}%)",
                            c.unhealthy,
                            c.live,
                            pct(c.unhealthy, c.live),
                            d.unhealthy_percent
                        ),
                    ))
                } else {
                    None
                }
            }
        }
    }

    fn evaluate_breaker(&mut self, scope: BreakerScope, now: Time) {
        let cond = self.breaker_condition(&scope, now);
        if self.durable.breakers.contains_key(&scope) {
            if cond.is_some() {
                self.breaker_clear_since.remove(&scope);
                return;
            }
            let since = *self.breaker_clear_since.entry(scope.clone()).or_insert(now);
            if let Some(after) = self.config.breaker.auto_close_after
                && now.duration_since(since).is_ok_and(|d| d >= after)
            {
                self.breaker_clear_since.remove(&scope);
                self.emit(Event::BreakerClosed {
                    scope,
                    actor: COORDINATOR_ACTOR.to_owned(),
                    reason: format!("condition clear for {}", format_duration(after)),
                    at: now,
                });
            }
        } else if let Some((cause, detail)) = cond {
            self.emit(Event::BreakerOpened(BreakerTrip {
                scope,
                cause,
                since: now,
                detail,
            }));
        }
    }
}

fn over(part: u32, whole: u32, percent: f64) -> bool {
    whole > 0 && f64::from(part) * 100.0 > percent * f64::from(whole)
}

fn pct(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}

// === impl Engine: agent calls ===

impl Engine {
    /// Records a heartbeat: labels, problems, liveness. Quarantines a host
    /// whose agent says it needs a human.
    pub fn heartbeat(&mut self, hb: Heartbeat, now: Time) -> HeartbeatReply {
        let now = self.observe(now);
        self.advance(now);
        let i = match self.host_index.get(&hb.host) {
            Some(&i) => i,
            None => self.add_slot(hb.host.clone(), hb.labels.clone()),
        };
        if self.hosts[i].labels != hb.labels {
            let (live, unhealthy) = (self.hosts[i].live, self.hosts[i].unhealthy);
            let old = self.hosts[i].group_values.clone();
            self.apply_flags(&old, live, unhealthy, -1);
            let new = self.intern_values(&hb.labels);
            self.apply_flags(&new, live, unhealthy, 1);
            self.hosts[i].group_values = new;
            self.hosts[i].labels = hb.labels;
        }
        let slot = &mut self.hosts[i];
        slot.agent_version = hb.agent_version;
        slot.problems = hb.problems;
        slot.last_heartbeat = Some(now);
        self.arm_liveness(i);
        self.refresh(i, now);

        if let Some(why) = hb.needs_human
            && !self.durable.quarantines.contains_key(&hb.host)
        {
            self.emit(Event::HostQuarantined(Quarantine {
                host: hb.host.clone(),
                cause: QuarantineCause::GaveUp,
                actor: host_actor(&hb.host),
                reason: why,
                since: now,
            }));
        }

        let held_permit_state = hb.held_permit.map(|r| self.permit_state_for(&hb.host, &r));
        HeartbeatReply {
            heartbeat_interval: self.config.fleet.heartbeat_interval,
            held_permit_state,
            quarantine: self.durable.quarantines.get(&hb.host).cloned(),
            dry_run: self.config.dry_run,
        }
    }

    /// The state of a permit an agent says it holds. A permit the engine
    /// does not know (or that names another host or token) is reported as
    /// revoked: the coordinator does not vouch for it.
    fn permit_state_for(&self, host: &HostId, r: &PermitRef) -> PermitState {
        if let Some(p) = self.durable.permits.get(&r.id) {
            return if p.token == r.token && &p.host == host {
                PermitState::Active
            } else {
                PermitState::Revoked
            };
        }
        self.permit_requests
            .get(&r.id)
            .and_then(|rid| self.durable.requests.get(rid))
            .filter(|p| p.token == r.token && &p.host == host)
            .map_or(PermitState::Revoked, |p| p.state)
    }

    /// Decides a permit request: the first rule that refuses, or a grant.
    /// A retry of a granted request_id returns the same permit (I7).
    pub fn request_permit(
        &mut self,
        req: PermitRequest,
        now: Time,
    ) -> Result<Decision, PolicyError> {
        let now = self.observe(now);
        self.advance(now);

        if let Some(prev) = self.durable.requests.get(&req.request_id) {
            if prev.host != req.host || prev.action != req.action || prev.job != req.job {
                return Err(PolicyError::RequestIdConflict {
                    request_id: req.request_id,
                    previous: format!(
                        "{} of job {:?} on host {}",
                        prev.action, prev.job, prev.host
                    ),
                });
            }
            let permit = self
                .durable
                .permits
                .get(&prev.id)
                .cloned()
                .unwrap_or_else(|| prev.clone());
            return Ok(Decision::Granted {
                permit,
                replayed: true,
            });
        }

        let Some(&i) = self.host_index.get(&req.host) else {
            return Ok(Decision::Denied(self.unknown_host(&req.host)));
        };
        self.evaluate_domain_breakers(i, now);
        let mut denials = Vec::with_capacity(1);
        self.evaluate(Some(i), req.action, now, false, &mut denials);
        if let Some(denial) = denials.pop() {
            if denial.reason == DenyReason::AttemptBudgetExhausted {
                let b = self.config.limits(req.action).host_budget;
                self.emit(Event::HostQuarantined(Quarantine {
                    host: req.host.clone(),
                    cause: QuarantineCause::AttemptBudget,
                    actor: COORDINATOR_ACTOR.to_owned(),
                    reason: format!(
                        "asked for a {} after using all {} attempts allowed per {}: \
                         remediation is not helping this host",
                        req.action,
                        b.max_attempts,
                        format_duration(b.per)
                    ),
                    since: now,
                }));
            }
            return Ok(Decision::Denied(denial));
        }
        Ok(Decision::Granted {
            permit: self.grant(i, req, now),
            replayed: false,
        })
    }

    fn unknown_host(&self, host: &HostId) -> Denial {
        Denial {
            reason: DenyReason::UnknownHost,
            retry_after: Some(self.config.fleet.heartbeat_interval),
            message: format!(
                "host {host} has not sent a heartbeat; its labels and health are unknown. \
                 The agent must heartbeat before asking"
            ),
        }
    }

    fn evaluate_domain_breakers(&mut self, i: usize, now: Time) {
        if self.config.breaker.domains.is_empty() {
            return;
        }
        for gi in 0..self.groups.len() {
            let label = &self.groups[gi].label;
            if !self.config.breaker.domains.contains_key(label) {
                continue;
            }
            if let Some(v) = self.hosts[i].group_values[gi] {
                let scope = BreakerScope::Domain {
                    label: label.clone(),
                    value: self.groups[gi].names[v as usize].clone(),
                };
                self.evaluate_breaker(scope, now);
            }
        }
    }

    fn grant(&mut self, i: usize, req: PermitRequest, now: Time) -> Permit {
        let token = FencingToken(self.durable.last_token.0 + 1);
        let limits = self.config.limits(req.action);
        let ttl = limits.permit_ttl;
        let permit = Permit {
            id: PermitId::for_token(token),
            token,
            request_id: req.request_id,
            host: req.host,
            action: req.action,
            job: req.job,
            reason: req.reason,
            labels: self.hosts[i].labels.clone(),
            dry_run: self.config.dry_run,
            granted_at: now,
            expires_at: later(now, ttl),
            ttl,
            state: PermitState::Active,
        };
        let a = permit.action.index();
        self.rate[a].record(&self.config.limits(permit.action).rate, now);
        self.hosts[i].history[a].attempts.push_back(now);
        self.hosts[i].active_permit = Some(permit.id.clone());
        self.count_permit(&permit, 1);
        self.permit_expiry
            .push(Reverse((permit.expires_at, permit.token)));
        self.permit_requests
            .insert(permit.id.clone(), permit.request_id.clone());
        self.emit(Event::PermitGranted {
            permit: permit.clone(),
        });
        self.refresh(i, now);
        permit
    }

    /// Finds an active permit that `host` may act on with `r`.
    fn active_permit_of(&self, host: &HostId, r: &PermitRef) -> Result<&Permit, PolicyError> {
        let Some(p) = self.durable.permits.get(&r.id) else {
            let ended = self
                .permit_requests
                .get(&r.id)
                .and_then(|rid| self.durable.requests.get(rid));
            return Err(match ended {
                Some(p) if p.token != r.token => PolicyError::StaleToken {
                    id: r.id.clone(),
                    presented: r.token,
                    current: p.token,
                },
                Some(p) => PolicyError::PermitEnded {
                    id: r.id.clone(),
                    state: p.state,
                },
                None => PolicyError::UnknownPermit(r.id.clone()),
            });
        };
        if p.token != r.token {
            return Err(PolicyError::StaleToken {
                id: r.id.clone(),
                presented: r.token,
                current: p.token,
            });
        }
        if &p.host != host {
            return Err(PolicyError::WrongHost {
                id: r.id.clone(),
                holder: p.host.clone(),
                caller: host.clone(),
            });
        }
        Ok(p)
    }

    /// Extends an active permit by its TTL from `now`.
    pub fn renew(
        &mut self,
        host: &HostId,
        r: &PermitRef,
        now: Time,
    ) -> Result<Permit, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        let p = self.active_permit_of(host, r)?;
        let expires_at = later(now, p.ttl);
        let token = p.token;
        self.emit(Event::PermitRenewed {
            id: r.id.clone(),
            expires_at,
            at: now,
        });
        self.permit_expiry.push(Reverse((expires_at, token)));
        Ok(self.durable.permits[&r.id].clone())
    }

    /// Ends a permit with the agent's outcome. Reporting the same outcome
    /// again for an ended permit is accepted and changes nothing.
    pub fn report_outcome(
        &mut self,
        host: &HostId,
        r: &PermitRef,
        outcome: Outcome,
        detail: &str,
        now: Time,
    ) -> Result<Permit, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        match self.active_permit_of(host, r) {
            Ok(_) => {}
            Err(PolicyError::PermitEnded { state, .. }) if state == outcome.final_state() => {
                let rid = &self.permit_requests[&r.id];
                let p = &self.durable.requests[rid];
                if &p.host != host {
                    return Err(PolicyError::WrongHost {
                        id: r.id.clone(),
                        holder: p.host.clone(),
                        caller: host.clone(),
                    });
                }
                return Ok(p.clone());
            }
            Err(e) => return Err(e),
        }
        let actor = host_actor(host);
        Ok(self.end_permit(&r.id, outcome.final_state(), &actor, detail, now))
    }

    fn end_permit(
        &mut self,
        id: &PermitId,
        state: PermitState,
        actor: &str,
        detail: &str,
        now: Time,
    ) -> Permit {
        let Some(p) = self.durable.permits.get(id).cloned() else {
            unreachable!("end_permit is only called for active permits");
        };
        self.emit(Event::PermitEnded {
            id: id.clone(),
            host: p.host.clone(),
            action: p.action,
            state,
            actor: actor.to_owned(),
            detail: detail.to_owned(),
            at: now,
        });
        self.count_permit(&p, -1);
        self.record_outcome_sample(now, state);
        if let Some(&i) = self.host_index.get(&p.host) {
            let slot = &mut self.hosts[i];
            if slot.active_permit.as_ref() == Some(id) {
                slot.active_permit = None;
            }
            slot.history[p.action.index()].last_end = Some(now);
            self.refresh(i, now);
        }
        Permit { state, ..p }
    }
}

// === impl Engine: the rules ===

impl Engine {
    /// Evaluates the rules in order for host slot `i` (or an unknown host)
    /// and `action`, pushing denials. Stops at the first unless `all`.
    fn evaluate(
        &self,
        i: Option<usize>,
        action: Action,
        now: Time,
        all: bool,
        out: &mut Vec<Denial>,
    ) {
        macro_rules! rule {
            ($d:expr) => {
                if let Some(d) = $d {
                    out.push(d);
                    if !all {
                        return;
                    }
                }
            };
        }
        let cfg = &self.config;
        let limits = cfg.limits(action);
        let empty = Labels::new();
        let slot = i.map(|i| &self.hosts[i]);
        let labels = slot.map_or(&empty, |s| &s.labels);

        // Rule 9: warm-up and the fleet floor.
        rule!(self.warming_up(now).map(|left| Denial {
            reason: DenyReason::WarmingUp,
            retry_after: Some(left),
            message: format!(
                "the coordinator started {} ago and is still learning the fleet \
                 (warmup {}); no grants for another {}",
                format_duration(trunc(
                    now.duration_since(self.started_at).unwrap_or_default()
                )),
                format_duration(cfg.fleet.warmup),
                format_duration(trunc(left))
            ),
        }));
        rule!(
            (self.fleet.live < cfg.fleet.min_fleet_size).then(|| Denial {
                reason: DenyReason::FleetTooSmall,
                retry_after: Some(cfg.fleet.heartbeat_interval),
                message: format!(
                    "only {} hosts are live, fewer than fleet.min_fleet_size {}; \
                 percentages over so small a fleet are guesses",
                    self.fleet.live, cfg.fleet.min_fleet_size
                ),
            })
        );

        // Rule 1: pauses.
        let mut covering = self
            .durable
            .pauses
            .values()
            .filter(|p| p.scope.covers(action, labels))
            .peekable();
        if covering.peek().is_some() {
            let pauses: Vec<&Pause> = covering.collect();
            let retry_after = pauses
                .iter()
                .map(|p| p.until.map(|u| u.duration_since(now).unwrap_or_default()))
                .try_fold(Duration::ZERO, |acc, d| d.map(|d| acc.max(d)));
            let p = pauses[0];
            rule!(Some(Denial {
                reason: DenyReason::Paused,
                retry_after,
                message: format!(
                    "paused ({}) by {} since {}: {:?}{}{}",
                    p.scope,
                    p.actor,
                    crate::types::rfc3339(p.since),
                    p.reason,
                    match p.until {
                        Some(u) => format!(", until {}", crate::types::rfc3339(u)),
                        None => ", until resumed".to_owned(),
                    },
                    if pauses.len() > 1 {
                        format!(" (and {} more pauses)", pauses.len() - 1)
                    } else {
                        String::new()
                    }
                ),
            }));
        }

        // Rule 2: breakers. Every open breaker covering the host must close.
        let trips: Vec<&BreakerTrip> = self
            .durable
            .breakers
            .values()
            .filter(|t| t.scope.covers(labels))
            .collect();
        if !trips.is_empty() {
            let retry_after = cfg.breaker.auto_close_after.map(|after| {
                trips
                    .iter()
                    .map(|t| {
                        let clear = self.breaker_clear_since.get(&t.scope).copied();
                        let elapsed = clear.map_or(Duration::ZERO, |c| {
                            now.duration_since(c).unwrap_or_default()
                        });
                        after.saturating_sub(elapsed)
                    })
                    .max()
                    .unwrap_or_default()
            });
            let what: Vec<String> = trips
                .iter()
                .map(|t| {
                    format!(
                        "{} since {}: {}",
                        t.scope,
                        crate::types::rfc3339(t.since),
                        t.detail
                    )
                })
                .collect();
            rule!(Some(Denial {
                reason: DenyReason::BreakerOpen,
                retry_after,
                message: format!(
                    "circuit breaker open for {}. The problem looks systemic; {}",
                    what.join("; and for "),
                    match cfg.breaker.auto_close_after {
                        Some(a) => format!(
                            "a breaker closes by itself once clear for {}, or by medicctl breaker reset",
                            format_duration(a)
                        ),
                        None => "it closes by medicctl breaker reset".to_owned(),
                    }
                ),
            }));
        }

        let Some(slot) = slot else {
            return;
        };
        let host = &slot.id;

        // Rule 3: quarantine.
        if let Some(q) = self.durable.quarantines.get(host) {
            rule!(Some(Denial {
                reason: DenyReason::Quarantined,
                retry_after: None,
                message: format!(
                    "host {host} is quarantined ({}) by {} since {}: {}. \
                     A human must release it (medicctl unquarantine)",
                    q.cause.as_str(),
                    q.actor,
                    crate::types::rfc3339(q.since),
                    q.reason
                ),
            }));
        }

        // Rule 4: one permit per host.
        if let Some(pid) = &slot.active_permit {
            let p = &self.durable.permits[pid];
            rule!(Some(Denial {
                reason: DenyReason::HostBusy,
                retry_after: Some(p.expires_at.duration_since(now).unwrap_or_default()),
                message: format!(
                    "host {host} already holds permit {pid} ({} of job {:?}); one at a time",
                    p.action, p.job
                ),
            }));
        }

        // Rule 5: cooldown and the attempt budget.
        let h = &slot.history[action.index()];
        if let Some(end) = h.last_end {
            let since = now.duration_since(end).unwrap_or_default();
            if since < limits.cooldown {
                let left = limits.cooldown - since;
                rule!(Some(Denial {
                    reason: DenyReason::Cooldown,
                    retry_after: Some(left),
                    message: format!(
                        "host {host}'s last {action} permit ended {} ago; cooldown is {}, {} left",
                        format_duration(trunc(since)),
                        format_duration(limits.cooldown),
                        format_duration(trunc(left))
                    ),
                }));
            }
        }
        let b = limits.host_budget;
        // Counted, not collected: this runs on every decision.
        let recent = h
            .attempts
            .iter()
            .filter(|&&t| now.duration_since(t).map_or(true, |d| d < b.per))
            .count();
        if recent >= b.max_attempts as usize {
            rule!(Some(Denial {
                reason: DenyReason::AttemptBudgetExhausted,
                retry_after: None,
                message: format!(
                    "host {host} already had {} {action} permits in the last {} \
                     (host_budget.max_attempts {}); remediation is not helping, so the host \
                     is quarantined for a human",
                    recent,
                    format_duration(b.per),
                    b.max_attempts
                ),
            }));
        }

        // Rule 8: windows.
        if let Err(wait) = window::check(&limits.windows, limits.timezone, now) {
            rule!(Some(Denial {
                reason: DenyReason::OutsideWindow,
                retry_after: wait,
                message: format!(
                    "{action} is allowed only in its windows ({}); the next opens in {}",
                    limits.timezone,
                    wait.map_or_else(
                        || "never".to_owned(),
                        |w| format_duration(trunc(w)).to_string()
                    )
                ),
            }));
        }

        // Rule 6: concurrency caps, fleet-wide and per group value.
        let active = self.fleet.active[action.index()];
        let cap = limits.effective_cap(self.fleet.live);
        if active >= cap {
            rule!(Some(Denial {
                reason: DenyReason::ConcurrencyCap,
                // A disabled action stays disabled until the config changes.
                retry_after: (limits.max_in_flight > 0).then_some(cfg.fleet.heartbeat_interval),
                message: cap_message(action, active, cap, limits, self.fleet.live),
            }));
        }
        for (g, value) in self.groups.iter().zip(&slot.group_values) {
            let (Some(gcap), Some(v)) = (limits.groups.get(&g.label), value) else {
                continue;
            };
            let c = g.counts[*v as usize];
            let cap = gcap.cap(c.live);
            if c.active[action.index()] >= cap {
                rule!(Some(Denial {
                    reason: DenyReason::GroupCap,
                    retry_after: Some(cfg.fleet.heartbeat_interval),
                    message: format!(
                        "{} of {} {action} permits active in {}={} ({} live hosts there); \
                         a slot frees when one ends",
                        c.active[action.index()],
                        cap,
                        g.label,
                        g.names[*v as usize],
                        c.live
                    ),
                }));
            }
        }

        // Rule 7: the rate budget.
        if let Err(wait) = self.rate[action.index()].check(&limits.rate, now) {
            let r = limits.rate;
            rule!(Some(Denial {
                reason: DenyReason::RateLimited,
                retry_after: Some(wait),
                message: format!(
                    "{action} rate budget spent: {} granted in the last {} \
                     (count {} per {} plus burst {}); next grant possible in {}",
                    self.rate[action.index()].used(&r, now),
                    format_duration(r.per),
                    r.count,
                    format_duration(r.per),
                    r.burst,
                    format_duration(trunc(wait))
                ),
            }));
        }
    }
}

/// Durations in messages: whole seconds are enough for humans.
/// A duration as messages print it: whole seconds, or milliseconds under
/// ten seconds (so that short warm-ups and retries never read "0s").
fn trunc(d: Duration) -> Duration {
    if d < Duration::from_secs(10) {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    } else {
        Duration::from_secs(d.as_secs())
    }
}

fn cap_message(action: Action, active: u32, cap: u32, limits: &ActionLimits, live: u32) -> String {
    if limits.max_in_flight == 0 {
        return format!("{action} is disabled (limits.{action}.max_in_flight = 0)");
    }
    let how = match limits.max_in_flight_percent {
        Some(p) => format!(
            "min(max_in_flight {}, {p}% of {live} live hosts, at least 1)",
            limits.max_in_flight
        ),
        None => format!("max_in_flight {}", limits.max_in_flight),
    };
    format!(
        "{active} of {cap} {action} permits active fleet-wide (cap = {how}); a slot frees when one ends"
    )
}

// === impl Engine: operator calls ===

impl Engine {
    /// Pauses grants in `scope` until resumed or until `until`.
    pub fn pause(
        &mut self,
        scope: Scope,
        actor: &str,
        reason: &str,
        until: Option<Time>,
        now: Time,
    ) -> Pause {
        let now = self.observe(now);
        self.advance(now);
        let pause = Pause {
            id: self.durable.last_pause_id + 1,
            scope,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            since: now,
            until,
        };
        self.emit(Event::Paused(pause.clone()));
        pause
    }

    /// Ends pauses: the one with `id`, or every pause with exactly `scope`.
    /// Returns the pauses ended.
    pub fn resume(
        &mut self,
        target: ResumeTarget,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Vec<Pause>, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        let ended: Vec<Pause> = match &target {
            ResumeTarget::Id(id) => self.durable.pauses.get(id).cloned().into_iter().collect(),
            ResumeTarget::Scope(s) => self
                .durable
                .pauses
                .values()
                .filter(|p| &p.scope == s)
                .cloned()
                .collect(),
            ResumeTarget::All => self.durable.pauses.values().cloned().collect(),
        };
        if ended.is_empty() {
            return Err(PolicyError::NoSuchPause(match target {
                ResumeTarget::Id(id) => format!("id {id}"),
                ResumeTarget::Scope(s) => format!("scope {s}"),
                ResumeTarget::All => "any scope (nothing is paused)".to_owned(),
            }));
        }
        for pause in &ended {
            self.emit(Event::Resumed {
                pause: pause.clone(),
                actor: actor.to_owned(),
                reason: reason.to_owned(),
                at: now,
            });
        }
        Ok(ended)
    }

    /// Quarantines a host by hand. Known or not: an operator may fence off a
    /// host before its agent ever reports.
    pub fn quarantine(
        &mut self,
        host: &HostId,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Quarantine, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        if self.durable.quarantines.contains_key(host) {
            return Err(PolicyError::AlreadyQuarantined(host.clone()));
        }
        let q = Quarantine {
            host: host.clone(),
            cause: QuarantineCause::Manual,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            since: now,
        };
        self.emit(Event::HostQuarantined(q.clone()));
        Ok(q)
    }

    /// Releases a host from quarantine; its attempt budget starts afresh.
    pub fn unquarantine(
        &mut self,
        host: &HostId,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Quarantine, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        let Some(q) = self.durable.quarantines.get(host).cloned() else {
            return Err(PolicyError::NotQuarantined(host.clone()));
        };
        self.emit(Event::HostReleased {
            host: host.clone(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            at: now,
        });
        Ok(q)
    }

    /// Revokes an active permit. The slot frees at once; the agent learns it
    /// on its next renewal or heartbeat and aborts before any irreversible
    /// step it has not begun.
    pub fn revoke(
        &mut self,
        id: &PermitId,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Permit, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        if !self.durable.permits.contains_key(id) {
            let ended = self
                .permit_requests
                .get(id)
                .and_then(|rid| self.durable.requests.get(rid));
            return Err(match ended {
                Some(p) => PolicyError::PermitEnded {
                    id: id.clone(),
                    state: p.state,
                },
                None => PolicyError::UnknownPermit(id.clone()),
            });
        }
        Ok(self.end_permit(id, PermitState::Revoked, actor, reason, now))
    }

    /// Closes open breakers: the one for `scope`, or all. Failure samples
    /// before the reset stop counting. If the unhealthy condition still
    /// holds, the breaker opens again at the next evaluation.
    pub fn reset_breaker(
        &mut self,
        scope: Option<&BreakerScope>,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Vec<BreakerTrip>, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        let closing: Vec<BreakerTrip> = self
            .durable
            .breakers
            .values()
            .filter(|t| scope.is_none_or(|s| &t.scope == s))
            .cloned()
            .collect();
        if closing.is_empty() {
            return Err(PolicyError::NoOpenBreaker(ScopeSuffix(
                scope.map(ToString::to_string),
            )));
        }
        for t in &closing {
            self.breaker_clear_since.remove(&t.scope);
            self.emit(Event::BreakerClosed {
                scope: t.scope.clone(),
                actor: actor.to_owned(),
                reason: reason.to_owned(),
                at: now,
            });
        }
        Ok(closing)
    }
}

/// Which pauses `Engine::resume` ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeTarget {
    /// The pause with this id.
    Id(u64),
    /// Every pause with exactly this scope.
    Scope(Scope),
    /// Every pause.
    All,
}

// === impl Engine: views ===

impl Engine {
    /// What would happen if `host` asked for `action` now: every rule that
    /// would deny, each with when it would clear. Asking records nothing;
    /// like every call, it lets time pass first, so permits and pauses that
    /// are due expire and breakers that are due open or close.
    pub fn explain(&mut self, host: &HostId, action: Action, now: Time) -> Explanation {
        let now = self.observe(now);
        self.advance(now);
        let i = self.host_index.get(host).copied();
        if let Some(i) = i {
            // As a request would: its failure domains' breakers are current.
            self.evaluate_domain_breakers(i, now);
        }
        let mut denials = Vec::new();
        if i.is_none() {
            denials.push(self.unknown_host(host));
        }
        self.evaluate(i, action, now, true, &mut denials);
        Explanation {
            host: host.clone(),
            action,
            denials,
        }
    }

    /// The coordinator's state at a glance.
    pub fn status(&mut self, now: Time) -> Status {
        let now = self.observe(now);
        self.advance(now);
        let actions = Action::ALL
            .iter()
            .map(|&a| {
                let l = self.config.limits(a);
                let r = &self.rate[a.index()];
                ActionStatus {
                    action: a,
                    active: self.fleet.active[a.index()],
                    effective_cap: l.effective_cap(self.fleet.live),
                    rate_limit: l.rate.limit(),
                    rate_per: l.rate.per,
                    rate_used: r.used(&l.rate, now),
                    rate_next_at: r.next_at(&l.rate, now),
                    in_window: window::check(&l.windows, l.timezone, now).is_ok(),
                }
            })
            .collect();
        Status {
            dry_run: self.config.dry_run,
            warming_up_until: self
                .warming_up(now)
                .map(|_| later(self.started_at, self.config.fleet.warmup)),
            known_hosts: u32::try_from(self.hosts.len()).unwrap_or(u32::MAX),
            live_hosts: self.fleet.live,
            unhealthy_hosts: self.fleet.unhealthy,
            quarantined_hosts: u32::try_from(self.durable.quarantines.len()).unwrap_or(u32::MAX),
            min_fleet_size: self.config.fleet.min_fleet_size,
            pauses: self.durable.pauses.values().cloned().collect(),
            breakers: self.durable.breakers.values().cloned().collect(),
            actions,
        }
    }

    /// Every known host (and every quarantined one), sorted by id.
    pub fn hosts(&mut self, now: Time) -> Vec<HostView> {
        let now = self.observe(now);
        self.advance(now);
        let mut out: Vec<HostView> = self
            .hosts
            .iter()
            .map(|s| HostView {
                host: s.id.clone(),
                labels: s.labels.clone(),
                agent_version: s.agent_version.clone(),
                live: s.live,
                unhealthy: s.unhealthy,
                last_heartbeat: s.last_heartbeat,
                problems: s.problems.clone(),
                active_permit: s.active_permit.clone(),
                quarantine: self.durable.quarantines.get(&s.id).cloned(),
            })
            .collect();
        for (host, q) in &self.durable.quarantines {
            if !self.host_index.contains_key(host) {
                out.push(HostView {
                    host: host.clone(),
                    labels: Labels::new(),
                    agent_version: String::new(),
                    live: false,
                    unhealthy: false,
                    last_heartbeat: None,
                    problems: Vec::new(),
                    active_permit: None,
                    quarantine: Some(q.clone()),
                });
            }
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    /// Active permits, in grant order.
    pub fn permits(&self) -> impl Iterator<Item = &Permit> {
        self.durable.permits.values()
    }

    /// Counts for invariant checks and metrics: (live, unhealthy, active per
    /// action).
    pub fn counts(&self) -> (u32, u32, [u32; 2]) {
        (self.fleet.live, self.fleet.unhealthy, self.fleet.active)
    }

    /// Active permits of `action` in each value of group label `label`.
    pub fn group_active(&self, label: &str, action: Action) -> Vec<(String, u32, u32)> {
        self.groups
            .iter()
            .filter(|g| g.label == label)
            .flat_map(|g| {
                g.names
                    .iter()
                    .zip(&g.counts)
                    .map(|(n, c)| (n.clone(), c.active[action.index()], c.live))
            })
            .collect()
    }
}
