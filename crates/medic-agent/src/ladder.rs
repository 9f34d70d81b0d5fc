//! The remediation ladder of one job, as pure functions: whether it is
//! stuck (after `confirm` consecutive positive checks), what to ask for
//! next (restart, then reboot, then a human), and how an outcome moves it.

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

/// What to do for a stuck job, given its counters.
pub fn next_step(counters: &JobCounters, job: &JobConfig) -> Step {
    if let Some(why) = &counters.gave_up {
        return Step::GiveUp(why.clone());
    }
    if counters.failed_restarts < job.reboot_after_failed_restarts {
        return Step::Ask(Action::RestartJob);
    }
    if counters.failed_reboots < job.give_up_after_failed_reboots {
        return Step::Ask(Action::RebootHost);
    }
    Step::GiveUp(format!(
        "job {} is still stuck after {} failed restart(s) and {} failed reboot(s)",
        job.name, counters.failed_restarts, counters.failed_reboots
    ))
}

/// Moves the counters after an action's outcome. A success resets the
/// ladder; a failure climbs it; aborted and dry-run change nothing.
pub fn record(counters: &mut JobCounters, action: Action, outcome: Outcome) {
    match outcome {
        Outcome::Succeeded => *counters = JobCounters::default(),
        Outcome::Failed => match action {
            Action::RestartJob => counters.failed_restarts += 1,
            Action::RebootHost => counters.failed_reboots += 1,
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
