//! What the history says at each point of the replay: the permits granted,
//! active and ended, the requests they answered, the grant times per
//! action, the open breakers, the pauses and the quarantines. The state
//! only follows the events; the invariants in `invariants.rs` judge them.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use medic_policy::{
    Action, BreakerScope, ClockStep, Event, FencingToken, HostId, Labels, Pause, Permit, PermitId,
    RequestId,
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
    /// Grant times, per action (`Action::index`).
    pub(super) grants: [Vec<Stamp>; Action::ALL.len()],
    /// Each host's last end of a permit, per action (cooldowns count from it).
    pub(super) last_end: HashMap<(HostId, Action), Stamp>,
    /// Open breakers, and the entry that opened each.
    pub(super) breakers: BTreeMap<BreakerScope, EntryId>,
    /// Pauses in force, by pause id.
    pub(super) pauses: BTreeMap<u64, InForce>,
    /// Quarantined hosts, and the entry that quarantined each.
    pub(super) quarantined: HashMap<HostId, EntryId>,
}

impl Replay {
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

    /// The open breaker covering hosts with `labels`, if any.
    pub(super) fn breaker_over(&self, labels: &Labels) -> Option<(&BreakerScope, EntryId)> {
        self.breakers
            .iter()
            .find(|(scope, _)| scope.covers(labels))
            .map(|(scope, entry)| (scope, *entry))
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
                at,
                ..
            } => {
                let end = Stamp { at: *at, entry };
                self.ended.insert(id.clone(), end);
                self.active.remove(id);
                // Cooldown counts from any end: outcome, expiry or revocation.
                self.last_end.insert((host.clone(), *action), end);
            }
            Event::BreakerOpened(t) => {
                self.breakers.insert(t.scope.clone(), entry);
            }
            // Half-open: probes may be granted, no longer "open".
            Event::BreakerHalfOpened { scope, .. } | Event::BreakerClosed { scope, .. } => {
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
            Event::ClockChecked { step: None, .. } => {}
            Event::ClockChecked {
                step: Some(step), ..
            } => self.shift(*step),
        }
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
        self.grants[permit.action.index()].push(Stamp { at, entry });
        self.granted.insert(
            permit.id.clone(),
            Granted {
                permit: permit.clone(),
                entry,
            },
        );
    }

    /// A step moved every recorded time with the clock: so do the times
    /// this replay holds, or the windows after it would be judged across
    /// the jump.
    fn shift(&mut self, step: ClockStep) {
        let s = |t: &mut SystemTime| *t = step.shift(*t);
        for a in self.active.values_mut() {
            s(&mut a.expires_at);
        }
        for end in self.ended.values_mut().chain(self.last_end.values_mut()) {
            s(&mut end.at);
        }
        for grants in &mut self.grants {
            grants.iter_mut().for_each(|g| s(&mut g.at));
        }
        for p in self.pauses.values_mut() {
            if let Some(u) = &mut p.pause.until {
                s(u);
            }
        }
    }
}
