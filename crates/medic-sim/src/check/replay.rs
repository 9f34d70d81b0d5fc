//! What the history says at each point of the replay: the permits granted,
//! active and ended, the requests they answered, the grant times per
//! action, the open breakers, the pauses and the quarantines. The state
//! only follows the events; the invariants in `invariants.rs` judge them.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use medic_policy::{
    Action, BreakerCause, BreakerScope, ClockStep, Event, FencingToken, HostId, Labels, Pause,
    Permit, PermitId, PermitState, RequestId,
};

/// A history entry's id (`AuditEntry::id`).
pub(super) type EntryId = u64;

/// When something happened, and the history entry that recorded it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Stamp {
    pub(super) at: SystemTime,
    pub(super) entry: EntryId,
}

/// A permit that holds a slot: granted, not ended, not past its expiry.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) permit: Permit,
    /// Its latest expiry (renewals push it out).
    pub(super) expires_at: SystemTime,
    pub(super) entry: EntryId,
}

/// A grant the history holds, whatever became of the permit.
#[derive(Debug)]
pub(super) struct Granted {
    pub(super) permit: Permit,
    pub(super) entry: EntryId,
}

/// One renewal of a permit.
#[derive(Clone, Copy, Debug)]
pub(super) struct Renewal {
    pub(super) at: SystemTime,
    pub(super) expires_at: SystemTime,
}

/// The grant a request obtained.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) permit: PermitId,
    pub(super) entry: EntryId,
}

/// A pause in force, and the entry that began it.
#[derive(Debug)]
pub(super) struct InForce {
    pub(super) pause: Pause,
    pub(super) entry: EntryId,
}

/// A tripped breaker: open, or half-open with the successes it counted.
#[derive(Debug)]
pub(super) struct Tripped {
    /// What opened it (last).
    pub(super) cause: BreakerCause,
    /// The entry that opened it (last).
    pub(super) entry: EntryId,
    /// Set while half-open.
    pub(super) half_open: Option<HalfOpened>,
}

/// A breaker's half-open step, as the history shows it.
#[derive(Debug)]
pub(super) struct HalfOpened {
    /// The entry that moved it to half-open.
    pub(super) entry: EntryId,
    /// Succeeded permits it covers that ended since (as
    /// `DurableState::apply` counts them): each widens the probe budget.
    pub(super) successes: u32,
}

/// A permit that failed or expired under a half-open breaker: the history
/// must show that breaker opening again at the same time.
#[derive(Debug)]
pub(super) struct Reopen {
    pub(super) scope: BreakerScope,
    pub(super) at: SystemTime,
    /// The entry that ended the permit.
    pub(super) entry: EntryId,
}

/// A rate-count override and the span it was in force (from its set to
/// its `until` or its end, whichever came first; both ends included, the
/// lenient reading).
#[derive(Clone, Debug)]
pub(super) struct RateSpan {
    id: u64,
    pub(super) from: SystemTime,
    pub(super) to: SystemTime,
    pub(super) count: u32,
}

impl RateSpan {
    /// The count in force at `at`, if this override was.
    pub(super) fn at(&self, at: SystemTime) -> Option<u32> {
        (self.from <= at && at <= self.to).then_some(self.count)
    }
}

/// The replayed state, after the events seen so far.
#[derive(Debug, Default)]
pub(super) struct Replay {
    pub(super) active: BTreeMap<PermitId, Active>,
    /// Every grant, in grant order.
    pub(super) granted: BTreeMap<PermitId, Granted>,
    /// When each permit ended (the last end, for one ended twice).
    pub(super) ended: HashMap<PermitId, Stamp>,
    pub(super) renewals: HashMap<PermitId, Vec<Renewal>>,
    /// The latest grant's token.
    pub(super) last_token: Option<(FencingToken, EntryId)>,
    pub(super) requests: HashMap<(HostId, RequestId), Answer>,
    /// Grant times, per action.
    pub(super) grants: BTreeMap<Action, Vec<Stamp>>,
    /// Each host's last end of a permit, per action (cooldowns count from it).
    pub(super) last_end: HashMap<(HostId, Action), Stamp>,
    /// Tripped breakers (open or half-open).
    pub(super) breakers: BTreeMap<BreakerScope, Tripped>,
    /// Half-open breakers a failed or expired permit must open again,
    /// not yet seen opening.
    pub(super) reopen: Vec<Reopen>,
    /// Pauses in force, by pause id.
    pub(super) pauses: BTreeMap<u64, InForce>,
    /// Quarantined hosts, and the entry that quarantined each.
    pub(super) quarantined: HashMap<HostId, EntryId>,
    /// Operators' overrides of limits, by id, as set (each counts until
    /// its `until` or its end, whichever comes first).
    pub(super) overrides: BTreeMap<u64, medic_policy::Override>,
    /// Every override of a rate count, per action, with the span it was
    /// in force: the coordinator checks a grant against the count in force
    /// at its instant, and so does I2.
    pub(super) rate_overrides: BTreeMap<Action, Vec<RateSpan>>,
    /// The coordinator's clock steps so far, in order.
    pub(super) steps: Vec<ClockStep>,
    /// Approvals by id, as the history shows them.
    pub(super) approvals: BTreeMap<u64, Approval>,
    /// The approval each permit was granted with.
    pub(super) used: HashMap<PermitId, u64>,
    /// Alert gates the history says are closed, by name and label value
    /// (`None`: fleet-wide): their label and the entry that closed them.
    /// Forgotten at a coordinator start (its gates start closed until
    /// evaluated, unrecorded: stricter than any record).
    pub(super) gates_closed: BTreeMap<(String, Option<String>), (Option<String>, EntryId)>,
}

/// An approval, as the history shows it.
#[derive(Debug)]
pub(super) struct Approval {
    pub(super) state: medic_policy::ApprovalState,
    pub(super) request_id: RequestId,
    pub(super) host: HostId,
    /// Pending: when it expires undecided; approved: unused.
    pub(super) expires_at: SystemTime,
    /// The entry that moved it to its state.
    pub(super) entry: EntryId,
}

impl Replay {
    /// The limits of `action` in force at `at`: the configuration's, with
    /// the overrides set and not yet ended or expired by then. A grant past
    /// them breaks a cap; an override still applied after its end shows so.
    pub(super) fn limits_at(
        &self,
        policy: &medic_policy::PolicyConfig,
        action: Action,
        at: SystemTime,
    ) -> medic_policy::config::ActionLimits {
        let mut l = policy.limits(action).clone();
        for o in self
            .overrides
            .values()
            .filter(|o| o.action == action && o.since <= at && o.until > at)
        {
            l.overridden(o.limit, o.value);
        }
        l
    }

    /// Permits past their expiry at `at` no longer hold a slot, whether or
    /// not the tick that records it has run yet.
    pub(super) fn expire_before(&mut self, at: SystemTime) {
        self.active.retain(|_, a| a.expires_at > at);
    }

    /// The active permits of `action`.
    pub(super) fn active_of(&self, action: Action) -> impl Iterator<Item = &Active> {
        self.active
            .values()
            .filter(move |a| a.permit.action == action)
    }

    /// The open (not half-open) breaker covering hosts with `labels`, if
    /// any.
    pub(super) fn breaker_over(&self, labels: &Labels) -> Option<(&BreakerScope, &Tripped)> {
        self.breakers
            .iter()
            .find(|(scope, t)| t.half_open.is_none() && scope.covers(labels))
    }

    /// The half-open breakers covering hosts with `labels`.
    pub(super) fn half_open_over<'a>(
        &'a self,
        labels: &'a Labels,
    ) -> impl Iterator<Item = (&'a BreakerScope, &'a HalfOpened)> + 'a {
        self.breakers
            .iter()
            .filter(move |(scope, _)| scope.covers(labels))
            .filter_map(|(scope, t)| t.half_open.as_ref().map(|h| (scope, h)))
    }

    /// A gate the history says is closed over `action` on hosts with
    /// `labels`: its name, and the entry that closed it. A gate the
    /// configuration no longer names is taken to cover every action.
    pub(super) fn gate_over(
        &self,
        policy: &medic_policy::PolicyConfig,
        action: Action,
        labels: &Labels,
    ) -> Option<(String, EntryId)> {
        self.gates_closed
            .iter()
            .find(|((gate, value), (label, _))| {
                let covers = policy
                    .gates
                    .iter()
                    .find(|g| &g.name == gate)
                    .is_none_or(|g| g.covers(action.as_str()));
                let holds = match (value, label) {
                    (None, _) => true,
                    (Some(v), Some(l)) => labels.get(l) == Some(v),
                    (Some(_), None) => false,
                };
                covers && holds
            })
            .map(|((gate, value), (_, entry))| {
                let name = match value {
                    Some(v) => format!("{gate} for {v}"),
                    None => gate.clone(),
                };
                (name, *entry)
            })
    }

    /// The active permits on hosts `scope` covers.
    pub(super) fn active_in<'a>(
        &'a self,
        scope: &'a BreakerScope,
    ) -> impl Iterator<Item = &'a Active> + 'a {
        self.active
            .values()
            .filter(move |a| scope.covers(&a.permit.labels))
    }

    /// The pause in force at `at` over `action` on hosts with `labels`.
    pub(super) fn pause_over(
        &self,
        action: Action,
        labels: &Labels,
        at: SystemTime,
    ) -> Option<&InForce> {
        self.pauses.values().find(|p| {
            let p = &p.pause;
            p.scope.covers(action, labels) && p.since <= at && p.until.is_none_or(|u| at < u)
        })
    }

    /// A permit's latest expiry, counting the renewals made by `now`
    /// (`None`: every renewal).
    pub(super) fn expiry_as_of(&self, permit: &Permit, now: Option<SystemTime>) -> SystemTime {
        self.renewals
            .get(&permit.id)
            .into_iter()
            .flatten()
            .filter(|r| now.is_none_or(|now| r.at <= now))
            .map(|r| r.expires_at)
            .fold(permit.expires_at, SystemTime::max)
    }

    /// Follows one event, recorded by history entry `entry`.
    pub(super) fn apply(&mut self, event: &Event, entry: EntryId) {
        match event {
            Event::PermitGranted { permit } => self.grant(permit, entry),
            Event::PermitRenewed { id, expires_at, at } => {
                if let Some(a) = self.active.get_mut(id) {
                    a.expires_at = *expires_at;
                }
                self.renewals.entry(id.clone()).or_default().push(Renewal {
                    at: *at,
                    expires_at: *expires_at,
                });
            }
            Event::PermitEnded {
                id,
                host,
                action,
                state,
                at,
                ..
            } => {
                self.probe_ended(id, *state, *at, entry);
                let end = Stamp { at: *at, entry };
                self.ended.insert(id.clone(), end);
                self.active.remove(id);
                // Cooldown counts from any end: outcome, expiry or revocation.
                self.last_end.insert((host.clone(), *action), end);
            }
            Event::BreakerOpened(t) => {
                self.reopen.retain(|r| r.scope != t.scope);
                self.breakers.insert(
                    t.scope.clone(),
                    Tripped {
                        cause: t.cause,
                        entry,
                        half_open: None,
                    },
                );
            }
            // Half-open: probes may be granted, within the probe budget.
            // (Half-opening a half-open breaker starts its count afresh,
            // as `DurableState::apply` does.)
            Event::BreakerHalfOpened { scope, .. } => {
                if let Some(t) = self.breakers.get_mut(scope) {
                    t.half_open = Some(HalfOpened {
                        entry,
                        successes: 0,
                    });
                }
            }
            Event::BreakerClosed { scope, .. } => {
                self.breakers.remove(scope);
            }
            Event::HostQuarantined(q) => {
                self.quarantined.insert(q.host.clone(), entry);
            }
            Event::HostReleased { host, .. } => {
                self.quarantined.remove(host);
            }
            Event::Paused(p) => {
                self.pauses.insert(
                    p.id,
                    InForce {
                        pause: p.clone(),
                        entry,
                    },
                );
            }
            Event::Resumed { pause, .. } => {
                self.pauses.remove(&pause.id);
            }
            Event::OverrideSet(o) => {
                if o.limit == medic_policy::OverrideLimit::RateCount {
                    self.rate_overrides
                        .entry(o.action)
                        .or_default()
                        .push(RateSpan {
                            id: o.id,
                            from: o.since,
                            to: o.until,
                            count: o.value,
                        });
                }
                self.overrides.insert(o.id, o.clone());
            }
            Event::OverrideEnded { over, at, .. } => {
                self.overrides.remove(&over.id);
                for span in self.rate_overrides.values_mut().flatten() {
                    if span.id == over.id {
                        span.to = span.to.min(*at);
                    }
                }
            }
            Event::ClockChecked { step: None, .. } => {}
            Event::ClockChecked {
                step: Some(step), ..
            } => self.shift(*step),
            Event::GateChanged {
                gate,
                label,
                value,
                closed,
                ..
            } => {
                let key = (gate.clone(), value.clone());
                if *closed {
                    self.gates_closed.insert(key, (label.clone(), entry));
                } else {
                    self.gates_closed.remove(&key);
                }
            }
            Event::ApprovalRequested(a) => {
                self.approvals.insert(
                    a.id,
                    Approval {
                        state: a.state,
                        request_id: a.request_id.clone(),
                        host: a.host.clone(),
                        expires_at: a.expires_at,
                        entry,
                    },
                );
            }
            Event::ApprovalChanged {
                id,
                state,
                expires_at,
                permit,
                ..
            } => {
                if let Some(a) = self.approvals.get_mut(id) {
                    a.state = *state;
                    a.entry = entry;
                    if let Some(e) = expires_at {
                        a.expires_at = *e;
                    }
                }
                if let Some(p) = permit {
                    self.used.insert(p.clone(), *id);
                }
            }
        }
    }

    /// A permit that was not yet ended ends `state`: a success widens the
    /// budget of every half-open breaker covering it; a failure or expiry
    /// obliges each to open again.
    fn probe_ended(&mut self, id: &PermitId, state: PermitState, at: SystemTime, entry: EntryId) {
        if self.ended.contains_key(id) {
            return;
        }
        let Some(g) = self.granted.get(id) else {
            return;
        };
        let labels = &g.permit.labels;
        for (scope, t) in &mut self.breakers {
            let Some(h) = &mut t.half_open else { continue };
            if !scope.covers(labels) {
                continue;
            }
            match state {
                PermitState::Succeeded => h.successes = h.successes.saturating_add(1),
                PermitState::Failed | PermitState::Expired => self.reopen.push(Reopen {
                    scope: scope.clone(),
                    at,
                    entry,
                }),
                _ => {}
            }
        }
    }

    /// The reopenings owed by permits that ended before `at` (and so can
    /// no longer be recorded "at the same time"), removed from the state.
    pub(super) fn overdue_reopens(&mut self, at: Option<SystemTime>) -> Vec<Reopen> {
        let (overdue, keep) = std::mem::take(&mut self.reopen)
            .into_iter()
            .partition(|r| at.is_none_or(|at| r.at < at));
        self.reopen = keep;
        overdue
    }

    fn grant(&mut self, permit: &Permit, entry: EntryId) {
        let at = permit.granted_at;
        self.last_token = Some((permit.token, entry));
        self.requests.insert(
            (permit.host.clone(), permit.request_id.clone()),
            Answer {
                permit: permit.id.clone(),
                entry,
            },
        );
        self.active.insert(
            permit.id.clone(),
            Active {
                permit: permit.clone(),
                expires_at: permit.expires_at,
                entry,
            },
        );
        self.grants
            .entry(permit.action)
            .or_default()
            .push(Stamp { at, entry });
        self.granted.insert(
            permit.id.clone(),
            Granted {
                permit: permit.clone(),
                entry,
            },
        );
    }

    /// A time read on a clock that never stepped (a host's), in the frame of
    /// the coordinator's clock after every step seen: the frame every time
    /// this replay holds is in.
    pub(super) fn in_final_frame(&self, t: SystemTime) -> SystemTime {
        self.steps.iter().fold(t, |t, step| step.shift(t))
    }

    /// A step moved every recorded time with the clock: so do the times
    /// this replay holds, or the windows after it would be judged across
    /// the jump.
    fn shift(&mut self, step: ClockStep) {
        let s = |t: &mut SystemTime| *t = step.shift(*t);
        self.steps.push(step);
        for a in self.active.values_mut() {
            s(&mut a.expires_at);
        }
        for g in self.granted.values_mut() {
            s(&mut g.permit.granted_at);
            s(&mut g.permit.expires_at);
        }
        for end in self.ended.values_mut().chain(self.last_end.values_mut()) {
            s(&mut end.at);
        }
        for grants in self.grants.values_mut() {
            grants.iter_mut().for_each(|g| s(&mut g.at));
        }
        for o in self.overrides.values_mut() {
            s(&mut o.since);
            s(&mut o.until);
        }
        for span in self.rate_overrides.values_mut().flatten() {
            s(&mut span.from);
            s(&mut span.to);
        }
        for p in self.pauses.values_mut() {
            if let Some(u) = &mut p.pause.until {
                s(u);
            }
        }
        for r in &mut self.reopen {
            s(&mut r.at);
        }
        for a in self.approvals.values_mut() {
            s(&mut a.expires_at);
        }
    }
}
