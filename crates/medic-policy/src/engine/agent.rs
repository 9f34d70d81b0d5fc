//! What agents call: heartbeats, permit requests, renewals and outcomes,
//! and the permit lifecycle behind them (grant, end).

use std::cmp::Reverse;

use humantime::format_duration;

use super::Engine;
use super::approvals::Step;
use crate::error::PolicyError;
use crate::types::{
    COORDINATOR_ACTOR, Decision, Denial, DenyReason, Event, FencingToken, Heartbeat,
    HeartbeatReply, HostId, Outcome, Permit, PermitId, PermitRef, PermitRequest, PermitState,
    Quarantine, QuarantineCause, Time, host_actor, later,
};

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
            let flags = self.hosts[i].flags;
            let old = self.hosts[i].group_values.clone();
            self.apply_flags(&old, flags, -1);
            let new = self.intern_values(&hb.labels);
            self.apply_flags(&new, flags, 1);
            self.hosts[i].group_values = new;
            self.hosts[i].labels = hb.labels;
        }
        let slot = &mut self.hosts[i];
        slot.agent_version = hb.agent_version;
        slot.state_error = hb.state_error;
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
            wake: self.wake(&hb.host),
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
        let dry_run = self.dry_run_for(req.action, req.dry_run);
        let mut denials = Vec::with_capacity(1);
        self.evaluate(
            Some(i),
            req.action,
            Some(&req.job),
            dry_run,
            now,
            false,
            &mut denials,
        );
        if let Some(denial) = denials.pop() {
            // A dry run only says what would happen: it quarantines nothing.
            if denial.reason == DenyReason::AttemptBudgetExhausted && !dry_run {
                let b = self.limits_in_force(req.action).host_budget;
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
        let approval = match self.approval_step(&req, dry_run, now)? {
            Step::Wait(w) => return Ok(Decision::Waiting(w)),
            Step::Grant(approval) => approval,
        };
        let host = req.host.clone();
        let permit = self.grant(i, req, now);
        if let Some(id) = approval {
            self.approval_used(id, &host, &permit.id, now);
        }
        Ok(Decision::Granted {
            permit,
            replayed: false,
        })
    }

    pub(super) fn unknown_host(&self, host: &HostId) -> Denial {
        Denial {
            reason: DenyReason::UnknownHost,
            retry_after: Some(self.config.fleet.heartbeat_interval),
            message: format!(
                "host {host} has not sent a heartbeat; its labels and health are unknown. \
                 The agent must heartbeat before asking"
            ),
        }
    }

    fn grant(&mut self, i: usize, req: PermitRequest, now: Time) -> Permit {
        let token = FencingToken(self.durable.last_token.0 + 1);
        let limits = self.limits_in_force(req.action).into_owned();
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
            dry_run: self.dry_run_for(req.action, req.dry_run),
            granted_at: now,
            expires_at: later(now, ttl),
            ttl,
            state: PermitState::Active,
        };
        let (a, dry) = (permit.action, permit.dry_run);
        self.rate.get_mut(a, dry).record(&limits.rate, now);
        self.hosts[i]
            .history
            .get_mut(a, dry)
            .attempts
            .push_back(now);
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
            Ok(p) => {
                // An outcome that does not fit the permit's mode would hide
                // a failure from the failure breaker (an enforce permit
                // ending DRY_RUN) or invent a verdict (a dry-run permit
                // ending SUCCEEDED or FAILED).
                let fits = match outcome {
                    Outcome::Aborted => true,
                    Outcome::DryRun => p.dry_run,
                    Outcome::Succeeded | Outcome::Failed => !p.dry_run,
                };
                if !fits {
                    return Err(PolicyError::OutcomeNotForMode {
                        id: r.id.clone(),
                        dry_run: p.dry_run,
                        mode: if p.dry_run { "dry-run" } else { "enforce" },
                        outcome: outcome.final_state().as_str(),
                    });
                }
            }
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

    pub(super) fn end_permit(
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
        // A dry-run permit did nothing: its end says nothing about
        // whether remediation works.
        if !p.dry_run {
            self.record_outcome_sample(now, &p.host, state, &p.labels);
            self.probe_ended(&p, state, now);
        }
        if let Some(&i) = self.host_index.get(&p.host) {
            let slot = &mut self.hosts[i];
            if slot.active_permit.as_ref() == Some(id) {
                slot.active_permit = None;
            }
            slot.history.get_mut(p.action, p.dry_run).last_end = Some(now);
            self.refresh(i, now);
        }
        Permit { state, ..p }
    }
}
