//! Time passing: hosts go silent, permits and pauses expire, failure
//! samples age out, breakers open and close, and `tick`'s housekeeping
//! forgets what no rule needs any more.

use std::cmp::Reverse;
use std::time::Duration;

use super::{Engine, HostActionHistory, HostSlot};
use crate::types::{
    BreakerScope, COORDINATOR_ACTOR, Event, Override, Pause, PermitId, PermitState, Quarantine,
    QuarantineCause, Time, later,
};

// === impl Engine: time passing ===

impl Engine {
    /// Lets time pass to `now`: hosts go silent, permits and pauses expire,
    /// breakers open or close. Cheap; every call runs it first.
    pub(super) fn advance(&mut self, now: Time) {
        self.expire_silent_hosts(now);
        self.expire_permits(now);
        self.expire_pauses(now);
        self.expire_overrides(now);
        self.expire_approvals(now);
        self.failures.age(now, self.config.breaker.window);
        self.age_silences(now);
        self.evaluate_breaker(BreakerScope::Fleet, now);
    }

    /// Hosts unheard of for `host_ttl` stop being live, unless they hold a
    /// permit.
    fn expire_silent_hosts(&mut self, now: Time) {
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
    }

    /// Permits past their expiry end as expired, and their hosts are
    /// quarantined: the host went away mid-remediation (rule 3). A dry-run
    /// permit's host acted on nothing, and is not quarantined.
    fn expire_permits(&mut self, now: Time) {
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
            let (host, action, job, dry_run) = (p.host.clone(), p.action, p.job.clone(), p.dry_run);
            let detail = format!(
                "no outcome before the permit expired at {}",
                crate::types::rfc3339(p.expires_at)
            );
            self.end_permit(&id, PermitState::Expired, COORDINATOR_ACTOR, &detail, now);
            if !dry_run && !self.durable.quarantines.contains_key(&host) {
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
    }

    /// Pauses past their `until` end, as if resumed by the coordinator.
    fn expire_pauses(&mut self, now: Time) {
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
    }

    /// Overrides past their end stop by themselves.
    fn expire_overrides(&mut self, now: Time) {
        let expired: Vec<Override> = self
            .durable
            .overrides
            .values()
            .filter(|o| o.until <= now)
            .cloned()
            .collect();
        if expired.is_empty() {
            return;
        }
        for over in expired {
            self.emit(Event::OverrideEnded {
                over,
                actor: COORDINATOR_ACTOR.to_owned(),
                reason: "override expired".to_owned(),
                at: now,
            });
        }
        self.overrides_changed();
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
        let config = &self.config;
        for slot in &mut self.hosts {
            for (a, h) in slot.history.iter_mut() {
                prune(h, config.limits(a).host_budget.per);
            }
        }
        // A rate lowered by an override looks back further than the
        // configured one: keep what either may look at.
        let rates: Vec<(crate::types::Action, crate::config::Rate)> = self
            .durable
            .overrides
            .values()
            .map(|o| (o.action, self.limits_in_force(o.action).rate))
            .collect();
        let config = &self.config;
        for (a, rate) in self.rate.iter_mut() {
            let configured = config.limits(a).rate;
            let keep = rates
                .iter()
                .filter(|(oa, _)| *oa == a)
                .map(|(_, r)| *r)
                .fold(configured, |acc, r| {
                    if r.lookback() > acc.lookback() {
                        r
                    } else {
                        acc
                    }
                });
            rate.prune(&keep, now);
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
            !s.flags.live
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

    /// The time left in warm-up at `now`, if any (rule 9).
    pub(super) fn warming_up(&self, now: Time) -> Option<Duration> {
        let ends = later(self.started_at, self.config.fleet.warmup);
        ends.duration_since(now).ok().filter(|d| !d.is_zero())
    }
}
