//! The engine: the fleet view, the rules, and the permit lifecycle.
//!
//! Every public method takes `now`. Methods that change durable state record
//! [`Event`]s; the caller drains them with [`Engine::take_events`] and makes
//! them durable (before replying, for grants: I6). Counts that rules need
//! (live hosts, unhealthy hosts, active permits, per group value) are kept
//! incrementally, so a decision never scans the fleet.
//!
//! This file holds the engine's state and what every call shares (the
//! clock, events). The rest, one concern per file:
//!
//! - `index`: the derived counts and indexes (hosts, group values, budgets),
//!   rebuilt from durable state and then kept incrementally.
//! - `advance`: time passing: silences, expiries, housekeeping (`tick`).
//! - `breakers`: when a breaker opens, goes half-open and closes (rule 2).
//! - `gates`: alert gates: the readings fed in, and the gate rule.
//! - `samples`: the failure breaker's outcomes, counted by host.
//! - `silence`: hosts that went silent: the liveness-drop breaker's count.
//! - `agent`: what agents call: heartbeats, permit requests, renewals,
//!   outcomes.
//! - `rules`: the rules, one check each, and the order they run in.
//! - `operator`: what operators call: pauses, quarantines, revocations,
//!   breaker resets.
//! - `views`: answers for operators and metrics: explain, status, hosts,
//!   counts.

mod advance;
mod agent;
mod approvals;
mod breakers;
mod gates;
mod index;
mod operator;
mod rules;
mod samples;
mod silence;
mod views;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use std::borrow::Cow;

use crate::config::{ActionLimits, PolicyConfig};
use crate::gates::GateStates;
use crate::rate::RateState;
use crate::state::DurableState;
use crate::types::{
    Action, BreakerScope, ClockMark, ClockStep, Event, FencingToken, HostId, Labels, PerAction,
    PermitId, Problem, Time,
};

pub use operator::{MAX_OVERRIDE, ResumeTarget};

/// Live, unhealthy, silent and active counts of the fleet or of one group
/// value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    live: u32,
    unhealthy: u32,
    /// Hosts that were live and went silent, not yet heard from again or
    /// forgotten: unhealthy for the breakers, since silence is not health.
    silent: u32,
    active: PerAction<u32>,
}

impl Counts {
    /// Unhealthy hosts as the breakers count them: silent ones included.
    fn unhealthy_or_silent(&self) -> u32 {
        self.unhealthy.saturating_add(self.silent)
    }

    /// The hosts the breakers' unhealthy share is of: live and silent.
    fn live_or_silent(&self) -> u32 {
        self.live.saturating_add(self.silent)
    }

    /// Active permits of every action.
    fn active_total(&self) -> u32 {
        self.active.values().fold(0, |n, a| n.saturating_add(*a))
    }
}

/// A host's flags as the counts see them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flags {
    live: bool,
    unhealthy: bool,
    silent: bool,
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

/// Budgets are kept per lane: an action, in enforce or in dry-run. A
/// dry-run permit spends only the dry-run lane's budgets (rate, attempts,
/// cooldown), so previewing never uses up what real remediation needs.
#[derive(Debug, Clone)]
struct Lanes<T> {
    enforce: PerAction<T>,
    dry_run: PerAction<T>,
}

impl<T: Default> Default for Lanes<T> {
    fn default() -> Self {
        Self {
            enforce: PerAction::default(),
            dry_run: PerAction::default(),
        }
    }
}

impl<T: Default> Lanes<T> {
    /// The lane of `action` for permits granted with `dry_run`.
    fn get(&self, action: Action, dry_run: bool) -> &T {
        if dry_run {
            self.dry_run.get(action)
        } else {
            self.enforce.get(action)
        }
    }

    /// The lane of `action` for permits granted with `dry_run`, created
    /// empty when missing.
    fn get_mut(&mut self, action: Action, dry_run: bool) -> &mut T {
        if dry_run {
            self.dry_run.get_mut(action)
        } else {
            self.enforce.get_mut(action)
        }
    }

    /// Every lane in use, with the action whose budgets it keeps.
    fn iter_mut(&mut self) -> impl Iterator<Item = (Action, &mut T)> {
        self.enforce.iter_mut().chain(self.dry_run.iter_mut())
    }
}

/// Per host and lane: what budgets remember.
#[derive(Debug, Default, Clone)]
struct HostActionHistory {
    last_end: Option<Time>,
    attempts: VecDeque<Time>,
}

/// What the engine knows of one host: reported, derived and remembered.
#[derive(Debug)]
struct HostSlot {
    id: HostId,
    labels: Labels,
    /// Interned value per group label (index-aligned with `Engine::groups`).
    group_values: Vec<Option<u32>>,
    agent_version: String,
    /// Why the agent cannot use its state file, as it last said.
    state_error: Option<String>,
    last_heartbeat: Option<Time>,
    problems: Vec<Problem>,
    active_permit: Option<PermitId>,
    history: Lanes<HostActionHistory>,
    /// What the counts hold for this host.
    flags: Flags,
    /// Since when the host has been silent, if it was live and went silent
    /// (cleared when it is heard from again).
    silent_since: Option<Time>,
    /// Whether `Engine::silence` counts it as recently silent.
    recently_silent: bool,
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
    /// The rate budget per lane.
    rate: Lanes<RateState>,
    /// Outcome samples for the failure breaker, by host.
    failures: samples::FailureSamples,
    /// Hosts that went silent recently (the liveness-drop breaker).
    silence: silence::Silences,
    /// Request ids by permit, to answer about ended permits.
    permit_requests: HashMap<PermitId, crate::types::RequestId>,
    permit_expiry: BinaryHeap<Reverse<(Time, FencingToken)>>,
    liveness: BinaryHeap<Reverse<(Time, usize)>>,
    /// Since when each open breaker's condition has been clear.
    breaker_clear_since: HashMap<BreakerScope, Time>,
    /// The latest readings of the alert gates (not durable: they are
    /// evaluated again within an interval of a start).
    gates: GateStates,
    /// The gates, by name and label value (`None`: fleet-wide), whose
    /// closing the audit history recorded and whose opening it has not:
    /// what `Event::GateChanged` is emitted against. Not durable, like the
    /// readings.
    gates_closed: std::collections::BTreeSet<(String, Option<String>)>,
    /// Moves whenever something happens that can turn a denial into a grant
    /// for every host: a pause ends, a breaker goes half-open or closes, the
    /// configuration is reloaded. Heartbeat replies carry it (plus the
    /// host's own release) so that waiting agents ask again at once. Not
    /// durable: it starts from the engine's start time, so a restart or a
    /// failover changes it too, which agents take as a (harmless) wake-up.
    wake: u64,
    /// Wake-ups of single hosts (an approval of theirs was decided), added
    /// to the fleet's. Not durable, like `wake`.
    host_wake: HashMap<HostId, u64>,
    /// When the next pending or approved approval expires.
    approval_due: Option<Time>,
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
        let gates = GateStates {
            slots: vec![None; config.gates.len()],
        };
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
            failures: samples::FailureSamples::default(),
            silence: silence::Silences::default(),
            permit_requests: HashMap::new(),
            permit_expiry: BinaryHeap::new(),
            liveness: BinaryHeap::new(),
            breaker_clear_since: HashMap::new(),
            gates,
            gates_closed: std::collections::BTreeSet::new(),
            wake: now
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            host_wake: HashMap::new(),
            approval_due: None,
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
        self.gates = Self::carry_gate_states(&self.config.gates, &mut self.gates, &config.gates);
        self.config = config;
        self.forget_removed_gates(now);
        self.rebuild_indexes();
        self.wake = self.wake.wrapping_add(1);
        self.advance(now);
    }

    /// The limits of `action` in force: the configuration's, with the
    /// operators' overrides of it applied (held to its ceilings). Borrowed
    /// unless an override is in force: the deny path allocates nothing.
    pub(super) fn limits_in_force(&self, action: Action) -> Cow<'_, ActionLimits> {
        let base = self.config.limits(action);
        let mut overrides = self
            .durable
            .overrides
            .values()
            .filter(|o| o.action == action)
            .peekable();
        if overrides.peek().is_none() {
            return Cow::Borrowed(base);
        }
        let mut l = base.clone();
        for o in overrides {
            l.overridden(o.limit, o.value);
        }
        Cow::Owned(l)
    }

    /// Whether a grant of `action` would be a dry run: the global mode, the
    /// action's own `dry_run`, or the request asked for one.
    fn dry_run_for(&self, action: Action, asked: bool) -> bool {
        asked || self.config.dry_run || self.config.limits(action).dry_run
    }

    /// The wake-up value a heartbeat reply to `host` carries: the fleet's,
    /// plus the host's last release from quarantine and decisions on its
    /// approvals. Agents compare it with
    /// the value they saw when they were denied; any change means "ask
    /// again now".
    pub fn wake(&self, host: &HostId) -> u64 {
        let released = self.durable.released.get(host).map_or(0, |r| r.0);
        let decided = self.host_wake.get(host).copied().unwrap_or(0);
        self.wake.wrapping_add(released).wrapping_add(decided)
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
                if let Some(s) = &mut slot.silent_since {
                    *s = step.shift(*s);
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
            // A half-open fleet breaker opens again on a liveness drop
            // only for hosts that went silent after it went half-open.
            Event::BreakerHalfOpened {
                scope: BreakerScope::Fleet,
                ..
            } => {
                self.silence.mark_half_open();
                self.wake = self.wake.wrapping_add(1);
            }
            // What can turn denials into grants for everyone: agents
            // waiting on them are told at their next heartbeat.
            Event::BreakerHalfOpened { .. }
            | Event::BreakerClosed { .. }
            | Event::Resumed { .. } => self.wake = self.wake.wrapping_add(1),
            // A released host's attempt budget starts afresh.
            Event::HostReleased { host, .. } => {
                if let Some(&i) = self.host_index.get(host) {
                    for (_, h) in self.hosts[i].history.iter_mut() {
                        h.attempts.clear();
                    }
                }
            }
            _ => {}
        }
        self.events.push(event);
    }
}
