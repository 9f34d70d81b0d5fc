//! Read-only views of the engine for operators: status, hosts, explanations.

use std::time::Duration;

use crate::types::{
    Action, BreakerTrip, Denial, HostId, Labels, Pause, PermitId, Problem, Quarantine, Time,
};

/// The coordinator's state at a glance (`medicctl status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Whether grants are dry-run.
    pub dry_run: bool,
    /// While warming up: when warm-up ends.
    pub warming_up_until: Option<Time>,
    /// Hosts known (heartbeated, or holding a permit).
    pub known_hosts: u32,
    /// Hosts live now (heartbeat within `host_ttl`, or holding a permit).
    pub live_hosts: u32,
    /// Live hosts reporting a problem or holding a permit.
    pub unhealthy_hosts: u32,
    /// Hosts that were live and went silent, not yet heard from again or
    /// forgotten: the breakers count them as unhealthy.
    pub silent_hosts: u32,
    /// Quarantined hosts.
    pub quarantined_hosts: u32,
    /// The configured fleet floor.
    pub min_fleet_size: u32,
    /// Pauses in force.
    pub pauses: Vec<Pause>,
    /// Operators' overrides of limits in force.
    pub overrides: Vec<crate::types::Override>,
    /// Approvals waiting for a human, or approved and waiting for their
    /// agent, newest first.
    pub approvals: Vec<crate::types::Approval>,
    /// Tripped breakers: open, or half-open.
    pub breakers: Vec<BreakerTrip>,
    /// Per action: slots and budget.
    pub actions: Vec<ActionStatus>,
}

impl Status {
    /// The status of one action.
    pub fn action(&self, action: Action) -> Option<&ActionStatus> {
        self.actions.iter().find(|a| a.action == action)
    }
}

/// One action's slots and budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionStatus {
    /// The action.
    pub action: Action,
    /// Whether its grants are dry runs (the global mode or the action's
    /// own `dry_run`).
    pub dry_run: bool,
    /// Active permits.
    pub active: u32,
    /// `min(max_in_flight, max_in_flight_percent of live fleet)`, at least 1
    /// when a percentage applies (0 only if `max_in_flight = 0` disables it).
    pub effective_cap: u32,
    /// Grants allowed in any window of `rate_per` (`count + burst`).
    pub rate_limit: u32,
    /// The rate window.
    pub rate_per: Duration,
    /// Grants made in the window ending now.
    pub rate_used: u32,
    /// When the rate budget next allows a grant; `None`: now.
    pub rate_next_at: Option<Time>,
    /// Whether the action's time windows allow it now.
    pub in_window: bool,
}

/// One host as the coordinator sees it (`medicctl hosts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostView {
    /// The host.
    pub host: HostId,
    /// Its labels as last reported.
    pub labels: Labels,
    /// Its agent's version.
    pub agent_version: String,
    /// Whether it counts as live.
    pub live: bool,
    /// Whether it counts as unhealthy.
    pub unhealthy: bool,
    /// Since when it has been silent, if it was live and went silent (the
    /// breakers count it as unhealthy until it is heard from again).
    pub silent_since: Option<Time>,
    /// Set while its agent cannot use its state file (and takes no action):
    /// why, as the agent last said.
    pub state_error: Option<String>,
    /// Its last heartbeat (`None` if known only through a permit).
    pub last_heartbeat: Option<Time>,
    /// Its reported problems.
    pub problems: Vec<Problem>,
    /// Its active permit.
    pub active_permit: Option<PermitId>,
    /// Its quarantine, if any.
    pub quarantine: Option<Quarantine>,
}

/// What would happen if `host` asked for `action` now (`medicctl explain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The host asked about.
    pub host: HostId,
    /// The action asked about.
    pub action: Action,
    /// Every rule that would deny, in rule order, each with when it would
    /// clear. Empty: the request would be granted.
    pub denials: Vec<Denial>,
    /// What denies nothing but an operator should know: alert gates that
    /// cannot be evaluated and let requests through (`on_error = "open"`).
    pub notes: Vec<String>,
}

impl Explanation {
    /// Whether the request would be granted.
    pub fn would_grant(&self) -> bool {
        self.denials.is_empty()
    }
}
