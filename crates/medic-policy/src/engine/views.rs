//! Answers for operators and metrics: explain, status, hosts, permits,
//! counts. Asking records nothing; like every call, the ones that take
//! `now` let time pass first (permits and pauses that are due expire,
//! breakers that are due open or close).

use super::Engine;
use crate::types::{Action, HostId, Labels, PerAction, Permit, Time, later};
use crate::view::{ActionStatus, Explanation, HostView, Status};
use crate::window;

// === impl Engine: views ===

impl Engine {
    /// What would happen if `host` asked for `action` now: every rule that
    /// would deny, each with when it would clear. Asking records nothing;
    /// like every call, it lets time pass first, so permits and pauses that
    /// are due expire and breakers that are due open or close.
    pub fn explain(&mut self, host: &HostId, action: Action, now: Time) -> Explanation {
        self.explain_job(host, action, None, now)
    }

    /// [`Engine::explain`] for a request naming `job`: its job caps count
    /// too.
    pub fn explain_job(
        &mut self,
        host: &HostId,
        action: Action,
        job: Option<&str>,
        now: Time,
    ) -> Explanation {
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
        let dry_run = self.dry_run_for(action, false);
        self.evaluate(i, action, job, dry_run, now, true, &mut denials);
        let mut notes = match i {
            Some(i) => self.gate_notes(action, &self.hosts[i].labels, now),
            None => Vec::new(),
        };
        if let Some(why) = self.approval_needed(action, self.config.limits(action), now) {
            notes.push(format!(
                "a request would wait for a human's approval before its grant: {why}"
            ));
        }
        Explanation {
            host: host.clone(),
            action,
            denials,
            notes,
        }
    }

    /// The coordinator's state at a glance.
    pub fn status(&mut self, now: Time) -> Status {
        let now = self.observe(now);
        self.advance(now);
        let actions = self
            .config
            .actions()
            .map(|a| {
                let l = self.limits_in_force(a);
                let dry_run = self.dry_run_for(a, false);
                let r = self.rate.get(a, dry_run);
                ActionStatus {
                    action: a,
                    dry_run,
                    active: self.fleet.active[a],
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
            silent_hosts: self.silent_hosts(),
            quarantined_hosts: u32::try_from(self.durable.quarantines.len()).unwrap_or(u32::MAX),
            min_fleet_size: self.config.fleet.min_fleet_size,
            pauses: self.durable.pauses.values().cloned().collect(),
            overrides: self.durable.overrides.values().cloned().collect(),
            approvals: self.approvals(false).into_iter().cloned().collect(),
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
                live: s.flags.live,
                unhealthy: s.flags.unhealthy,
                silent_since: s.silent_since,
                state_error: s.state_error.clone(),
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
                    silent_since: None,
                    state_error: None,
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
    pub fn counts(&self) -> (u32, u32, PerAction<u32>) {
        (
            self.fleet.live,
            self.fleet.unhealthy,
            self.fleet.active.clone(),
        )
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
                    .map(|(n, c)| (n.clone(), c.active[action], c.live))
            })
            .collect()
    }
}
