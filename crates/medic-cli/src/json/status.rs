//! `medicctl status`.

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{Breaker, Pause, action_name, seconds, time, transport_security};
use crate::format::step_direction;

/// `medicctl status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The coordinator's version.
    pub version: String,
    /// `enforce`, or `dry_run` (grants only tell agents to log).
    pub mode: String,
    /// How the gRPC port is protected: `mutual_tls`, `plaintext_loopback`,
    /// or `insecure` (plaintext on a non-loopback address).
    pub transport_security: String,
    /// Who the coordinator identified this call as.
    pub caller: String,
    /// `admin` or `read-only`.
    pub caller_role: String,
    /// The coordinator's clock when it answered.
    pub server_time: Option<String>,
    /// When the coordinator process started.
    pub started_at: Option<String>,
    /// When the configuration in force was loaded.
    pub config_loaded_at: Option<String>,
    /// The heartbeat interval agents keep.
    pub heartbeat_interval_seconds: Option<f64>,
    /// How long a host stays live without a heartbeat.
    pub host_ttl_seconds: Option<f64>,
    /// Whether the coordinator is still warming up (grants nothing).
    pub warming_up: bool,
    /// When warm-up ends; `null` when not warming up.
    pub warming_up_until: Option<String>,
    /// Host counts.
    pub hosts: HostCounts,
    /// Pauses in force.
    pub pauses: Vec<Pause>,
    /// Operators' overrides of limits in force.
    pub overrides: Vec<super::Override>,
    /// Approvals waiting for a human, or approved and waiting for their
    /// agent, newest first.
    pub approvals: Vec<super::Approval>,
    /// Open circuit breakers.
    pub breakers: Vec<Breaker>,
    /// Per action: slots and budget.
    pub actions: Vec<ActionStatus>,
    /// Wall-clock steps the coordinator found since it started.
    pub clock_steps: u64,
    /// The latest of them; `null`: none.
    pub last_clock_step: Option<ClockStep>,
}

/// A wall-clock step in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct ClockStep {
    /// `ahead` or `back`.
    pub direction: &'static str,
    /// How far, in seconds.
    pub seconds: Option<f64>,
    /// When it was found.
    pub at: Option<String>,
    /// How it was found.
    pub detail: String,
}

/// Host counts in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct HostCounts {
    /// Hosts known (heartbeated, or holding a permit).
    pub known: u32,
    /// Hosts live (heartbeat within the host TTL, or holding a permit).
    pub live: u32,
    /// Live hosts reporting a problem or holding a permit.
    pub unhealthy: u32,
    /// Hosts that were live and went silent (the breakers count them as
    /// unhealthy).
    pub silent: u32,
    /// Quarantined hosts.
    pub quarantined: u32,
    /// The fleet floor: below it nothing is granted.
    pub min_fleet_size: u32,
}

/// One action's slots and budget.
#[derive(Debug, Clone, Serialize)]
pub struct ActionStatus {
    /// `restart_job` or `reboot_host`.
    pub action: String,
    /// Active permits of this action.
    pub active: u32,
    /// The effective concurrency cap (0: the action is disabled).
    pub effective_cap: u32,
    /// Grants allowed per rate window (`count + burst`).
    pub rate_limit: u32,
    /// Grants made in the window ending now.
    pub rate_used: u32,
    /// `rate_limit - rate_used`, never negative.
    pub rate_left: u32,
    /// The rate window.
    pub rate_per_seconds: Option<f64>,
    /// When the rate budget next allows a grant; `null`: now.
    pub rate_next_at: Option<String>,
    /// Whether the action's time windows allow it now.
    pub in_window: bool,
    /// Whether its grants are dry runs (the mode, or the action's own).
    pub dry_run: bool,
}

impl From<&pb::GetStatusResponse> for Status {
    fn from(r: &pb::GetStatusResponse) -> Self {
        let s = r.status.clone().unwrap_or_default();
        Status {
            version: r.version.clone(),
            mode: if s.dry_run { "dry_run" } else { "enforce" }.to_owned(),
            transport_security: transport_security(r.transport_security),
            caller: r.caller.clone(),
            caller_role: r.caller_role.clone(),
            clock_steps: r.clock_steps,
            last_clock_step: r.last_clock_step.as_ref().map(|c| ClockStep {
                direction: step_direction(c.forward),
                seconds: seconds(c.by.as_ref()),
                at: time(c.at.as_ref()),
                detail: c.detail.clone(),
            }),
            server_time: time(r.server_time.as_ref()),
            started_at: time(r.started_at.as_ref()),
            config_loaded_at: time(r.config_loaded_at.as_ref()),
            heartbeat_interval_seconds: seconds(r.heartbeat_interval.as_ref()),
            host_ttl_seconds: seconds(r.host_ttl.as_ref()),
            warming_up: s.warming_up_until.is_some(),
            warming_up_until: time(s.warming_up_until.as_ref()),
            hosts: HostCounts {
                known: s.known_hosts,
                live: s.live_hosts,
                unhealthy: s.unhealthy_hosts,
                silent: s.silent_hosts,
                quarantined: s.quarantined_hosts,
                min_fleet_size: s.min_fleet_size,
            },
            pauses: s.pauses.iter().map(Pause::from).collect(),
            overrides: s.overrides.iter().map(super::Override::from).collect(),
            approvals: s.approvals.iter().map(super::Approval::from).collect(),
            breakers: s.breakers.iter().map(Breaker::from).collect(),
            actions: s
                .actions
                .iter()
                .map(|a| ActionStatus {
                    action: action_name(a.action, &a.action_name),
                    active: a.active,
                    effective_cap: a.effective_cap,
                    rate_limit: a.rate_limit,
                    rate_used: a.rate_used,
                    rate_left: a.rate_limit.saturating_sub(a.rate_used),
                    rate_per_seconds: seconds(a.rate_per.as_ref()),
                    rate_next_at: time(a.rate_next_at.as_ref()),
                    in_window: a.in_window,
                    dry_run: a.dry_run,
                })
                .collect(),
        }
    }
}
