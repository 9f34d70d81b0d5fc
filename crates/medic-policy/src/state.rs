//! The durable part of the engine's state, and the one function that changes
//! it: [`DurableState::apply`]. The engine applies every event it emits
//! through it, and the store folds the same events into what it persists, so
//! a restarted engine ([`crate::Engine::restore`]) sees exactly what the old
//! one saw: no grant lost, no budget refilled (I6).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::PolicyConfig;
use crate::types::{
    Action, Approval, ApprovalState, BreakerScope, BreakerTrip, ClockMark, ClockStep, Event,
    FencingToken, HalfOpen, HostId, Labels, Override, Pause, Permit, PermitId, PermitState,
    Quarantine, RequestId, Time,
};

/// One grant, as the rate and attempt budgets remember it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// The event's sequence number ([`DurableState::seq`]).
    pub seq: u64,
    /// When.
    pub at: Time,
    /// To whom.
    pub host: HostId,
    /// For what.
    pub action: Action,
    /// A dry-run grant: it counts only against the dry-run budgets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// One permit's end, as cooldowns and the failure breaker remember it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRecord {
    /// The event's sequence number ([`DurableState::seq`]).
    pub seq: u64,
    /// When.
    pub at: Time,
    /// Whose.
    pub host: HostId,
    /// Which action.
    pub action: Action,
    /// How it ended.
    pub state: PermitState,
    /// A dry-run permit's end: it starts only the dry-run cooldown, and the
    /// failure breaker ignores it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The permit's labels (the host's, when it was granted): which
    /// failure domains the failure breaker files this end under. Empty in
    /// records written before they were kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

/// Everything the engine must not forget across a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// How many events have been applied. Records carry it, so "before" and
    /// "after" (a reset, a release) never depend on timestamps, which may
    /// be equal.
    pub seq: u64,
    /// The highest fencing token ever issued.
    pub last_token: FencingToken,
    /// The highest pause id ever issued.
    pub last_pause_id: u64,
    /// Active permits.
    pub permits: BTreeMap<PermitId, Permit>,
    /// Pauses in force.
    pub pauses: BTreeMap<u64, Pause>,
    /// Quarantined hosts.
    pub quarantines: BTreeMap<HostId, Quarantine>,
    /// Tripped breakers: open, or half-open.
    pub breakers: BTreeMap<BreakerScope, BreakerTrip>,
    /// Recent grants, oldest first (rate and attempt budgets).
    pub grants: Vec<GrantRecord>,
    /// Recent permit ends, oldest first (cooldowns, failure breaker).
    pub endings: Vec<EndRecord>,
    /// The event that last released each host from quarantine, and when:
    /// its attempt budget counts only grants after that event.
    pub released: BTreeMap<HostId, (u64, Time)>,
    /// When each failure-domain breaker last closed, within
    /// `breaker.window`: the failure breaker leaves out the samples of its
    /// hosts from before it (that domain's breaker judged them). A list,
    /// one entry per domain: JSON maps take only string keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_closes: Vec<(BreakerScope, Time)>,
    /// Granted requests by request_id, for idempotent retries (I7). The
    /// permit is as granted, with its state updated when it ends.
    pub requests: BTreeMap<RequestId, Permit>,
    /// The latest clock mark ([`Event::ClockChecked`]): what tells a
    /// wall-clock step across a restart from time passing.
    #[serde(default)]
    pub clock: Option<ClockMark>,
    /// The highest override id ever issued.
    #[serde(default)]
    pub last_override_id: u64,
    /// Operators' overrides in force, by id.
    #[serde(default)]
    pub overrides: BTreeMap<u64, Override>,
    /// The highest approval id ever issued.
    #[serde(default)]
    pub last_approval_id: u64,
    /// Approvals: pending and approved ones, and decided ones for a while
    /// (a rejection holds until its `expires_at`; the others are kept as
    /// long as granted requests are, for `medicctl approvals --all`).
    #[serde(default)]
    pub approvals: BTreeMap<u64, Approval>,
}

impl DurableState {
    /// Applies one event. Deterministic: the same events in the same order
    /// always give the same state.
    pub fn apply(&mut self, event: &Event) {
        self.seq += 1;
        let seq = self.seq;
        match event {
            Event::PermitGranted { permit } => {
                self.last_token = self.last_token.max(permit.token);
                self.grants.push(GrantRecord {
                    seq,
                    at: permit.granted_at,
                    host: permit.host.clone(),
                    action: permit.action,
                    dry_run: permit.dry_run,
                });
                self.requests
                    .insert(permit.request_id.clone(), permit.clone());
                self.permits.insert(permit.id.clone(), permit.clone());
            }
            Event::PermitRenewed { id, expires_at, .. } => {
                if let Some(p) = self.permits.get_mut(id) {
                    p.expires_at = *expires_at;
                    if let Some(r) = self.requests.get_mut(&p.request_id) {
                        r.expires_at = *expires_at;
                    }
                }
            }
            Event::PermitEnded {
                id,
                host,
                action,
                state,
                at,
                ..
            } => {
                let removed = self.permits.remove(id);
                let dry_run = removed.as_ref().is_some_and(|p| p.dry_run);
                let labels = removed
                    .as_ref()
                    .map(|p| p.labels.clone())
                    .unwrap_or_default();
                if let Some(p) = removed {
                    if let Some(r) = self.requests.get_mut(&p.request_id) {
                        r.state = *state;
                    }
                    // A success widens the probe budget of every half-open
                    // breaker that covers the permit.
                    if *state == PermitState::Succeeded {
                        for trip in self.breakers.values_mut() {
                            if let Some(h) = &mut trip.half_open
                                && trip.scope.covers(&p.labels)
                            {
                                h.successes = h.successes.saturating_add(1);
                            }
                        }
                    }
                }
                self.endings.push(EndRecord {
                    seq,
                    at: *at,
                    host: host.clone(),
                    action: *action,
                    state: *state,
                    dry_run,
                    labels,
                });
            }
            Event::HostQuarantined(q) => {
                self.quarantines.insert(q.host.clone(), q.clone());
            }
            Event::HostReleased { host, at, .. } => {
                self.quarantines.remove(host);
                self.released.insert(host.clone(), (seq, *at));
            }
            Event::Paused(p) => {
                self.last_pause_id = self.last_pause_id.max(p.id);
                self.pauses.insert(p.id, p.clone());
            }
            Event::Resumed { pause, .. } => {
                self.pauses.remove(&pause.id);
            }
            Event::BreakerOpened(trip) => {
                self.breakers.insert(trip.scope.clone(), trip.clone());
            }
            Event::OverrideSet(o) => {
                self.last_override_id = self.last_override_id.max(o.id);
                self.overrides.insert(o.id, o.clone());
            }
            Event::OverrideEnded { over, .. } => {
                self.overrides.remove(&over.id);
            }
            // The audit trail of the gates: nothing durable changes.
            Event::GateChanged { .. } => {}
            Event::ApprovalRequested(a) => {
                self.last_approval_id = self.last_approval_id.max(a.id);
                self.approvals.insert(a.id, a.clone());
            }
            Event::ApprovalChanged {
                id,
                state,
                actor,
                reason,
                expires_at,
                permit,
                at,
                ..
            } => {
                if let Some(a) = self.approvals.get_mut(id) {
                    a.state = *state;
                    a.actor.clone_from(actor);
                    a.decision.clone_from(reason);
                    a.decided_at = Some(*at);
                    if let Some(e) = expires_at {
                        a.expires_at = *e;
                    }
                    if permit.is_some() {
                        a.permit.clone_from(permit);
                    }
                }
            }
            Event::BreakerHalfOpened {
                scope,
                actor,
                reason,
                at,
            } => {
                if let Some(trip) = self.breakers.get_mut(scope) {
                    trip.half_open = Some(HalfOpen {
                        since: *at,
                        actor: actor.clone(),
                        reason: reason.clone(),
                        successes: 0,
                    });
                }
            }
            Event::BreakerClosed { scope, at, .. } => {
                self.breakers.remove(scope);
                if matches!(scope, BreakerScope::Domain { .. }) {
                    self.domain_closes.retain(|(s, _)| s != scope);
                    self.domain_closes.push((scope.clone(), *at));
                }
            }
            Event::ClockChecked { step, mark, .. } => {
                if let Some(step) = step {
                    self.shift(*step);
                }
                self.clock = Some(mark.clone());
            }
        }
    }

    /// Moves every recorded time with a clock step: what was 10 minutes
    /// ago, or 10 minutes ahead, still is.
    fn shift(&mut self, step: ClockStep) {
        let s = |t: &mut Time| *t = step.shift(*t);
        let permit = |p: &mut Permit| {
            s(&mut p.granted_at);
            s(&mut p.expires_at);
        };
        self.permits.values_mut().for_each(permit);
        self.requests.values_mut().for_each(permit);
        for p in self.pauses.values_mut() {
            s(&mut p.since);
            if let Some(u) = &mut p.until {
                s(u);
            }
        }
        self.quarantines.values_mut().for_each(|q| s(&mut q.since));
        for o in self.overrides.values_mut() {
            s(&mut o.since);
            s(&mut o.until);
        }
        for a in self.approvals.values_mut() {
            s(&mut a.requested_at);
            s(&mut a.expires_at);
            if let Some(d) = &mut a.decided_at {
                s(d);
            }
        }
        for b in self.breakers.values_mut() {
            s(&mut b.since);
            if let Some(h) = &mut b.half_open {
                s(&mut h.since);
            }
        }
        self.grants.iter_mut().for_each(|g| s(&mut g.at));
        self.endings.iter_mut().for_each(|e| s(&mut e.at));
        self.released.values_mut().for_each(|r| s(&mut r.1));
        self.domain_closes.iter_mut().for_each(|(_, t)| s(t));
    }

    /// The latest time at which something was recorded (not an expiry,
    /// which lies ahead): a wall clock behind it was stepped back.
    pub fn latest_recorded(&self) -> Option<Time> {
        let permits = self.permits.values().map(|p| p.granted_at);
        let pauses = self
            .pauses
            .values()
            .map(|p| p.since)
            .chain(self.overrides.values().map(|o| o.since));
        let quarantines = self.quarantines.values().map(|q| q.since).chain(
            self.approvals
                .values()
                .map(|a| a.decided_at.unwrap_or(a.requested_at)),
        );
        let breakers = self
            .breakers
            .values()
            .map(|b| b.half_open.as_ref().map_or(b.since, |h| h.since));
        let grants = self.grants.iter().map(|g| g.at);
        let endings = self.endings.iter().map(|e| e.at);
        let released = self.released.values().map(|r| r.1);
        let mark = self.clock.iter().map(|m| m.wall);
        permits
            .chain(pauses)
            .chain(quarantines)
            .chain(breakers)
            .chain(grants)
            .chain(endings)
            .chain(released)
            .chain(mark)
            .max()
    }

    /// Drops records that no rule can look at any more under `config` at
    /// `now`. Deterministic, so the store and the engine compact alike.
    pub fn compact(&mut self, config: &PolicyConfig, now: Time) {
        let older_than = |t: Time, keep: Duration| now.duration_since(t).is_ok_and(|d| d > keep);

        // An action the config no longer knows keeps its records under the
        // disabled action's limits, a day at most.
        let grant_keep = |a: Action| {
            let l = config.limits(a);
            l.rate.lookback().max(l.host_budget.per)
        };
        self.grants
            .retain(|g| !older_than(g.at, grant_keep(g.action)));

        let end_keep = |a: Action| config.limits(a).cooldown.max(config.breaker.window);
        self.endings
            .retain(|e| !older_than(e.at, end_keep(e.action)));
        // A close matters only to failure samples from before it.
        self.domain_closes
            .retain(|(_, at)| !older_than(*at, config.breaker.window));

        let budget_keep = config
            .limits
            .values()
            .chain(std::iter::once(&config.unknown_limits))
            .map(|l| l.host_budget.per)
            .max()
            .unwrap_or_default();
        self.released
            .retain(|_, &mut (_, at)| !older_than(at, budget_keep));

        let retention = config.idempotency_retention;
        self.requests
            .retain(|_, p| p.state == PermitState::Active || !older_than(p.granted_at, retention));

        // A decided approval is kept as long as granted requests are; a
        // rejection at least as long as it holds.
        self.approvals.retain(|_, a| match (a.state, a.decided_at) {
            (ApprovalState::Pending | ApprovalState::Approved, _) | (_, None) => true,
            (ApprovalState::Rejected, _) if a.expires_at > now => true,
            (_, Some(at)) => !older_than(at, retention),
        });
    }
}
