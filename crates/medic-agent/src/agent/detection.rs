//! The check round: every job's detectors once, its health streak moved,
//! and a heartbeat brought forward when the set of problems changed.

use crate::config::JobConfig;
use crate::coordinator::Coordinator;
use crate::detect::{JobDetectors, Verdict};
use crate::effects::Host;
use crate::ladder::Health;
use crate::state::JobCounters;

use super::Agent;

/// A job the agent watches: its configuration, its detectors (with their
/// memory) and what they have established so far.
pub(super) struct WatchedJob {
    pub(super) config: JobConfig,
    pub(super) detectors: JobDetectors,
    pub(super) health: Health,
}

impl<H: Host, C: Coordinator> Agent<H, C> {
    pub(super) async fn check_jobs(&mut self) {
        let now = self.clock.now();
        self.metrics.checks.inc();
        let mut healthy = Vec::new();
        for job in &mut self.watched {
            let verdict = self.host.check(&job.config, &mut job.detectors, now).await;
            let before = job.health.stuck().is_some();
            job.health = job.health.observe(verdict, job.config.confirm, now);
            match (&job.health, before) {
                (Health::Stuck { evidence, .. }, false) => tracing::warn!(
                    job = %job.config.name, detector = evidence.detector, detail = %evidence.detail,
                    "job is stuck"
                ),
                (Health::Healthy, true) => {
                    tracing::info!(job = %job.config.name, "job is healthy again");
                }
                _ => {}
            }
            if job.health == Health::Healthy {
                healthy.push(job.config.name.clone());
            }
        }
        self.clear_gave_up(&healthy);
        let now_stuck: Vec<bool> = self
            .watched
            .iter()
            .map(|j| j.health.stuck().is_some())
            .collect();
        if now_stuck != self.last_stuck {
            // The set of problems changed: tell the coordinator now.
            self.next_heartbeat = self.clock.instant();
            self.last_stuck = now_stuck;
        }
        let stuck = self
            .watched
            .iter()
            .filter(|j| j.health.stuck().is_some())
            .count();
        self.metrics
            .jobs_stuck
            .set(i64::try_from(stuck).unwrap_or(i64::MAX));
    }

    /// A job that gave up and is then seen healthy (fixed by a person) has
    /// its gave-up state cleared and its ladder reset. The host's
    /// quarantine stays until a person releases it.
    fn clear_gave_up(&mut self, healthy: &[String]) {
        let Ok(state) = &mut self.state else {
            return;
        };
        let mut changed = false;
        for name in healthy {
            if let Some(c) = state.jobs.get_mut(name)
                && c.gave_up.is_some()
            {
                tracing::info!(job = %name, "the job that gave up is healthy: its ladder starts afresh");
                *c = JobCounters::default();
                changed = true;
            }
        }
        if changed {
            self.save();
        }
    }

    /// Checks job `i` once, through the host.
    pub(super) async fn check_now(&mut self, i: usize) -> Verdict {
        let job = &mut self.watched[i];
        self.host
            .check(&job.config, &mut job.detectors, self.clock.now())
            .await
    }
}
