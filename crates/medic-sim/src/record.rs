//! What a run leaves behind: time series for the charts and the summary,
//! and the hosts' own records of every action they took.

use std::time::SystemTime;

use medic_policy::Action;

/// One sample of a run, in scenario time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Scenario seconds since the start.
    pub t: f64,
    /// Hosts whose job is stuck or that are down rebooting.
    pub stuck: usize,
    /// Restarts in flight (medic: active restart permits).
    pub restarts_in_flight: usize,
    /// Reboots in flight (medic: active reboot permits; legacy: hosts
    /// rebooting).
    pub reboots_in_flight: usize,
    /// The coordinator's effective restart cap at the time (medic only).
    pub restart_cap: Option<u32>,
    /// The coordinator's effective reboot cap at the time (medic only).
    pub reboot_cap: Option<u32>,
    /// Restarts performed so far.
    pub restarts_total: usize,
    /// Reboots performed so far.
    pub reboots_total: usize,
    /// Open breakers (medic only; `None` while the coordinator is down).
    /// Half-open ones let probes through and are counted apart.
    pub breakers_open: Option<usize>,
    /// Half-open breakers (medic only; `None` while the coordinator is
    /// down).
    pub breakers_half_open: Option<usize>,
    /// Whether the coordinator answered (medic only).
    pub coordinator_up: bool,
}

/// One side of the comparison (medic, or the legacy script).
#[derive(Clone, Debug, Default)]
pub struct Side {
    /// `medic` or `legacy script`.
    pub name: String,
    /// Restarts performed.
    pub restarts: usize,
    /// Reboots performed.
    pub reboots: usize,
    /// Most restarts in flight at once.
    pub max_restarts_in_flight: usize,
    /// Most reboots in flight at once.
    pub max_reboots_in_flight: usize,
    /// Host-minutes with a stuck job (or down).
    pub stuck_host_minutes: f64,
    /// Longest a host stayed stuck, minutes.
    pub longest_stuck_minutes: f64,
    /// Hosts stuck at the end.
    pub left_stuck: usize,
    /// How long the longest of them had been stuck, minutes.
    pub left_stuck_minutes: f64,
    /// Samples over time.
    pub series: Vec<Sample>,
    /// The shared dependency on this side, in a scenario that has one.
    pub dependency: Option<crate::model::DependencyOutcome>,
}

impl Side {
    /// The dependency's figures, from `dependency` (this side's) and the
    /// stuck counts of the series, up to `end`.
    pub fn finish_dependency(
        &mut self,
        dependency: Option<&crate::model::SharedDependency>,
        end: f64,
    ) {
        if let Some(d) = dependency {
            let stuck: Vec<(f64, usize)> = self.series.iter().map(|s| (s.t, s.stuck)).collect();
            let mut d = d.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.dependency = Some(d.outcome(end, &stuck));
        }
    }

    /// Fills the maxima from the series.
    pub fn finish(&mut self) {
        self.max_restarts_in_flight = self
            .series
            .iter()
            .map(|s| s.restarts_in_flight)
            .max()
            .unwrap_or(0);
        self.max_reboots_in_flight = self
            .series
            .iter()
            .map(|s| s.reboots_in_flight)
            .max()
            .unwrap_or(0)
            .max(self.max_reboots_in_flight);
    }
}

/// An action a simulated host carried out, as the host saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionRecord {
    /// The host.
    pub host: String,
    /// What it did.
    pub action: Action,
    /// The job.
    pub job: String,
    /// The permit it acted under.
    pub permit_id: String,
    /// Its fencing token.
    pub token: u64,
    /// When (wall clock; the in-process coordinator shares it).
    pub at: SystemTime,
    /// Scenario seconds.
    pub t: f64,
    /// Whether the agent's last check before acting said "stuck" (I8: the
    /// problem is re-checked right before acting).
    pub rechecked_stuck: bool,
}
