//! The derived counts and indexes: host slots, group values and their
//! counts, budgets' histories, expiry and liveness queues. Rebuilt from the
//! durable state and the configuration when either changes wholesale, then
//! moved incrementally by every call, so a decision never scans the fleet.

use std::cmp::Reverse;

use super::{Counts, Engine, Flags, GroupIndex, HostActionHistory, HostSlot, Lanes};
use crate::rate::RateState;
use crate::types::{HostId, Labels, Permit, PermitId, PermitState, Time, later};

// === impl Engine: rebuilding the indexes ===

impl Engine {
    /// Rebuilds every derived index from the durable state, the host slots
    /// and the configuration.
    pub(super) fn rebuild_indexes(&mut self) {
        let now = self.clock;
        // A rebuild can end a host's liveness (a shorter host_ttl): that
        // is going silent like any other.
        let was_live: Vec<bool> = self.hosts.iter().map(|s| s.flags.live).collect();
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
        self.reindex_hosts_and_permits();
        self.rebuild_budgets();
        self.replay_endings();
        for i in 0..self.hosts.len() {
            self.arm_liveness(i);
            self.refresh(i, now);
            let slot = &self.hosts[i];
            if was_live.get(i).copied().unwrap_or(false)
                && !slot.flags.live
                && slot.silent_since.is_none()
            {
                self.went_silent(i, now);
                self.refresh(i, now);
            }
        }
        self.rebuild_silences();
        self.approvals_changed();
    }

    /// Resets every host slot to what durable state says (group values,
    /// the permit it holds) and counts the active permits. Hosts known only
    /// through permits get a slot with the permit's labels.
    fn reindex_hosts_and_permits(&mut self) {
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
            slot.flags = Flags::default();
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
    }

    /// The rate budgets and each host's attempts, from the grant log: a
    /// restart does not refill them (rule 7).
    fn rebuild_budgets(&mut self) {
        for g in &self.durable.grants {
            if let Some(&i) = self.host_index.get(&g.host) {
                let released = self.durable.released.get(&g.host).map(|r| r.0);
                if released.is_none_or(|r| g.seq > r) {
                    self.hosts[i]
                        .history
                        .get_mut(g.action, g.dry_run)
                        .attempts
                        .push_back(g.at);
                }
            }
        }
        self.rebuild_rates();
    }

    /// The rate budgets alone, from the grant log under the rates in force
    /// (the configuration's, or an override's).
    pub(super) fn rebuild_rates(&mut self) {
        let mut per_lane: Lanes<Vec<Time>> = Lanes::default();
        for g in &self.durable.grants {
            per_lane.get_mut(g.action, g.dry_run).push(g.at);
        }
        let mut rate: Lanes<RateState> = Lanes::default();
        for (dry_run, lanes) in [
            (false, &mut per_lane.enforce),
            (true, &mut per_lane.dry_run),
        ] {
            for (a, times) in lanes.iter_mut() {
                *rate.get_mut(a, dry_run) =
                    RateState::rebuild(&self.limits_in_force(a).rate, std::mem::take(times));
            }
        }
        self.rate = rate;
    }

    /// Each host's last permit end (for cooldowns), and the failure
    /// breaker's samples, from the ended permits.
    fn replay_endings(&mut self) {
        self.failures.clear();
        let ends: Vec<_> = self.durable.endings.clone();
        for e in ends {
            if let Some(&i) = self.host_index.get(&e.host) {
                self.hosts[i].history.get_mut(e.action, e.dry_run).last_end = Some(e.at);
            }
            if !e.dry_run {
                self.record_outcome_sample(e.at, &e.host, e.state, &e.labels);
            }
        }
        self.failures.age(self.clock, self.config.breaker.window);
    }

    pub(super) fn intern_values(&mut self, labels: &Labels) -> Vec<Option<u32>> {
        self.groups
            .iter_mut()
            .map(|g| labels.get(&g.label).map(|v| g.intern(v)))
            .collect()
    }

    pub(super) fn add_slot(&mut self, id: HostId, labels: Labels) -> usize {
        let group_values = self.intern_values(&labels);
        let i = self.hosts.len();
        // A host met for the first time may already have history (grants
        // before a restart, before it heartbeated again).
        let mut history = Lanes::<HostActionHistory>::default();
        let released = self.durable.released.get(&id).map(|r| r.0);
        for g in self.durable.grants.iter().filter(|g| g.host == id) {
            if released.is_none_or(|r| g.seq > r) {
                history
                    .get_mut(g.action, g.dry_run)
                    .attempts
                    .push_back(g.at);
            }
        }
        for e in self.durable.endings.iter().filter(|e| e.host == id) {
            history.get_mut(e.action, e.dry_run).last_end = Some(e.at);
        }
        self.hosts.push(HostSlot {
            id: id.clone(),
            labels,
            group_values,
            agent_version: String::new(),
            state_error: None,
            last_heartbeat: None,
            problems: Vec::new(),
            active_permit: None,
            history,
            flags: Flags::default(),
            silent_since: None,
            recently_silent: false,
            liveness_queued: false,
        });
        self.host_index.insert(id, i);
        i
    }

    /// Queues the moment host `i` stops being live by silence, unless an
    /// entry is already queued (it re-arms itself when it comes due).
    pub(super) fn arm_liveness(&mut self, i: usize) {
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
}

// === impl Engine: counts ===

impl Engine {
    /// Recomputes a host's flags (live, unhealthy, silent) and moves the
    /// counts. A live host that stops being live goes silent.
    pub(super) fn refresh(&mut self, i: usize, now: Time) {
        let ttl = self.config.fleet.host_ttl;
        let slot = &self.hosts[i];
        let heard = slot
            .last_heartbeat
            .is_some_and(|hb| now.duration_since(hb).map_or(true, |age| age < ttl));
        let holds = slot.active_permit.is_some();
        let live = heard || holds;
        if live && slot.silent_since.is_some() {
            self.heard_again(i);
        } else if !live && slot.flags.live && slot.silent_since.is_none() {
            self.went_silent(i, now);
        }
        let slot = &self.hosts[i];
        let flags = Flags {
            live,
            unhealthy: live && (holds || !slot.problems.is_empty()),
            silent: !live && slot.silent_since.is_some(),
        };
        if flags == slot.flags {
            return;
        }
        let old = slot.flags;
        let values = slot.group_values.clone();
        self.apply_flags(&values, old, -1);
        self.apply_flags(&values, flags, 1);
        self.hosts[i].flags = flags;
    }

    pub(super) fn apply_flags(&mut self, values: &[Option<u32>], flags: Flags, sign: i32) {
        let bump = |c: &mut Counts| {
            if flags.live {
                c.live = c.live.saturating_add_signed(sign);
            }
            if flags.unhealthy {
                c.unhealthy = c.unhealthy.saturating_add_signed(sign);
            }
            if flags.silent {
                c.silent = c.silent.saturating_add_signed(sign);
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
    pub(super) fn count_permit(&mut self, p: &Permit, sign: i32) {
        let a = p.action;
        let n = &mut self.fleet.active[a];
        *n = n.saturating_add_signed(sign);
        for g in &mut self.groups {
            if let Some(v) = p.labels.get(&g.label) {
                let id = g.intern(v) as usize;
                let n = &mut g.counts[id].active[a];
                *n = n.saturating_add_signed(sign);
            }
        }
    }

    /// Counts an ended remediation for the failure breaker. Dry-run,
    /// aborted and revoked permits say nothing about whether remediation
    /// works, and count for nothing.
    pub(super) fn record_outcome_sample(
        &mut self,
        at: Time,
        host: &HostId,
        state: PermitState,
        labels: &Labels,
    ) {
        let failed = match state {
            PermitState::Succeeded => false,
            PermitState::Failed | PermitState::Expired => true,
            _ => return,
        };
        self.failures.record(at, host, failed, labels);
    }
}
