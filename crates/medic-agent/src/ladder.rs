//! The remediation ladder of one job, as pure functions: whether it is
//! stuck (after `confirm` consecutive positive checks), what to ask for
//! next (the job's ladder: by default restart, then reboot; then a human),
//! and how an outcome moves it.

use std::time::SystemTime;

use medic_policy::{Action, Outcome};

use crate::config::JobConfig;
use crate::detect::{Evidence, Verdict};
use crate::state::JobCounters;

/// What the detectors have established about a job: its streak of checks
/// where a detector fired.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    /// The last check passed.
    Healthy,
    /// Positive checks so far, not yet `confirm` of them.
    Suspect {
        /// Consecutive positive checks.
        hits: u32,
        /// When the streak began.
        since: SystemTime,
        /// The latest evidence.
        evidence: Evidence,
    },
    /// The last check fired, but the job's processes started less than
    /// its `start_grace` ago, within the first `start_grace` of the alarm:
    /// starting, not stuck, and nothing counted.
    Starting {
        /// When the alarm began (its first positive check).
        since: SystemTime,
        /// What fired.
        evidence: Evidence,
    },
    /// Confirmed stuck.
    Stuck {
        /// When the streak began.
        since: SystemTime,
        /// The latest evidence.
        evidence: Evidence,
    },
}

impl Health {
    /// The job's health after a check.
    pub fn observe(&self, verdict: Verdict, confirm: u32, now: SystemTime) -> Health {
        match verdict {
            Verdict::Healthy => Health::Healthy,
            Verdict::Fired(evidence) => {
                let (hits, since) = match self {
                    Health::Healthy => (1, now),
                    // The alarm goes on: the grace it had counts against
                    // its `start_grace` (see `Health::alarm_since`).
                    Health::Starting { since, .. } => (1, *since),
                    Health::Suspect { hits, since, .. } => (hits + 1, *since),
                    Health::Stuck { since, .. } => (confirm, *since),
                };
                if hits >= confirm {
                    Health::Stuck { since, evidence }
                } else {
                    Health::Suspect {
                        hits,
                        since,
                        evidence,
                    }
                }
            }
        }
    }

    /// When the current alarm (a run of positive checks, starting ones
    /// included) began; `None` while healthy.
    pub fn alarm_since(&self) -> Option<SystemTime> {
        match self {
            Health::Healthy => None,
            Health::Suspect { since, .. }
            | Health::Starting { since, .. }
            | Health::Stuck { since, .. } => Some(*since),
        }
    }

    /// The evidence, while confirmed stuck.
    pub fn stuck(&self) -> Option<(&Evidence, SystemTime)> {
        match self {
            Health::Stuck { since, evidence } => Some((evidence, *since)),
            _ => None,
        }
    }
}

/// The rung to climb next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask for this action.
    Ask(Action),
    /// The ladder is exhausted: stop and ask for a human.
    GiveUp(String),
}

/// What to do for a stuck job, given its counters: the first rung of its
/// ladder with attempts left.
pub fn next_step(counters: &JobCounters, job: &JobConfig) -> Step {
    if let Some(why) = &counters.gave_up {
        return Step::GiveUp(why.clone());
    }
    if let Some(step) = job
        .ladder
        .iter()
        .find(|s| failures(counters, s.action) < s.attempts)
    {
        return Step::Ask(step.action);
    }
    let tried: Vec<String> = job
        .ladder
        .iter()
        .map(|s| {
            format!(
                "{} failed {}",
                failures(counters, s.action),
                plural(s.action)
            )
        })
        .collect();
    Step::GiveUp(if tried.is_empty() {
        format!("job {} is stuck and its ladder has no rungs", job.name)
    } else {
        format!("job {} is still stuck after {}", job.name, tried.join(", "))
    })
}

/// How an action is counted in messages (`restarts`, `drain_host attempts`).
fn plural(action: Action) -> String {
    match action {
        Action::RestartJob => "restart(s)".to_owned(),
        Action::RebootHost => "reboot(s)".to_owned(),
        Action::Custom(_) => format!("{action} attempt(s)"),
    }
}

/// Failed attempts of `action` since the job was last fixed.
pub fn failures(counters: &JobCounters, action: Action) -> u32 {
    match action {
        Action::RestartJob => counters.failed_restarts,
        Action::RebootHost => counters.failed_reboots,
        Action::Custom(_) => counters
            .failed_custom
            .get(action.as_str())
            .copied()
            .unwrap_or(0),
    }
}

/// Moves the counters after an action's outcome. A success resets the
/// ladder; a failure climbs it; aborted and dry-run change nothing.
pub fn record(counters: &mut JobCounters, action: Action, outcome: Outcome) {
    match outcome {
        Outcome::Succeeded => *counters = JobCounters::default(),
        Outcome::Failed => match action {
            Action::RestartJob => counters.failed_restarts += 1,
            Action::RebootHost => counters.failed_reboots += 1,
            Action::Custom(_) => {
                *counters
                    .failed_custom
                    .entry(action.as_str().to_owned())
                    .or_default() += 1;
            }
        },
        Outcome::Aborted | Outcome::DryRun => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobConfig {
        crate::config::AgentConfig::from_toml(
            "host_id = \"h\"\n[[jobs]]\nname = \"j\"\nrestart.command = [\"true\"]\n[jobs.heartbeat_file]\npath = \"/x\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .jobs
        .remove(0)
    }

    fn stuck() -> Verdict {
        Verdict::Fired(Evidence {
            detector: "heartbeat_file",
            detail: "old".into(),
        })
    }

    #[test]
    fn a_job_is_stuck_only_after_confirm_consecutive_positive_checks() {
        let t = SystemTime::UNIX_EPOCH;
        let s = Health::Healthy.observe(stuck(), 3, t);
        assert!(matches!(s, Health::Suspect { hits: 1, .. }));
        let s = s.observe(stuck(), 3, t);
        assert!(s.stuck().is_none());
        let s = s.observe(stuck(), 3, t);
        assert!(s.stuck().is_some());
        assert_eq!(s.observe(Verdict::Healthy, 3, t), Health::Healthy);
    }

    #[test]
    fn alarms_while_starting_count_nothing_and_a_streak_starts_afresh_after() {
        let t = SystemTime::UNIX_EPOCH;
        let starting = Health::Starting {
            since: t,
            evidence: Evidence {
                detector: "heartbeat_file",
                detail: "old".into(),
            },
        };
        assert!(starting.stuck().is_none());
        let s = starting.observe(stuck(), 2, t);
        assert!(matches!(s, Health::Suspect { hits: 1, .. }));
        assert!(s.observe(stuck(), 2, t).stuck().is_some());
    }

    #[test]
    fn one_healthy_check_resets_the_streak() {
        let t = SystemTime::UNIX_EPOCH;
        let s = Health::Healthy
            .observe(stuck(), 2, t)
            .observe(Verdict::Healthy, 2, t)
            .observe(stuck(), 2, t);
        assert!(s.stuck().is_none());
    }

    #[test]
    fn ladder_restarts_then_reboots_then_gives_up() {
        let j = job(); // 2 restarts, then 1 reboot
        let mut c = JobCounters::default();
        assert_eq!(next_step(&c, &j), Step::Ask(Action::RestartJob));
        record(&mut c, Action::RestartJob, Outcome::Failed);
        assert_eq!(next_step(&c, &j), Step::Ask(Action::RestartJob));
        record(&mut c, Action::RestartJob, Outcome::Failed);
        assert_eq!(next_step(&c, &j), Step::Ask(Action::RebootHost));
        record(&mut c, Action::RebootHost, Outcome::Aborted);
        assert_eq!(next_step(&c, &j), Step::Ask(Action::RebootHost));
        record(&mut c, Action::RebootHost, Outcome::Failed);
        assert!(matches!(next_step(&c, &j), Step::GiveUp(_)));
    }

    #[test]
    fn a_success_resets_the_ladder() {
        let j = job();
        let mut c = JobCounters {
            failed_restarts: 2,
            ..JobCounters::default()
        };
        record(&mut c, Action::RebootHost, Outcome::Succeeded);
        assert_eq!(next_step(&c, &j), Step::Ask(Action::RestartJob));
    }
}
