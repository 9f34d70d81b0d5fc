//! The check round: every job's detectors once, its health streak moved,
//! and a heartbeat brought forward when the set of problems changed.

use std::time::{Duration, SystemTime};

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
    /// Whether its detectors were told to look for evidence of a fix by
    /// hand (the job gave up): from then on, only evidence newer than that
    /// clears its gave-up state.
    pub(super) fix_watched: bool,
}

impl<H: Host, C: Coordinator> Agent<H, C> {
    pub(super) async fn check_jobs(&mut self) {
        let now = self.clock.now();
        self.metrics.checks.inc();
        let mut healthy = Vec::new();
        for i in 0..self.watched.len() {
            let job = &mut self.watched[i];
            let verdict = self.host.check(&job.config, &mut job.detectors, now).await;
            let before = job.health.stuck().is_some();
            let was_starting = matches!(job.health, Health::Starting { .. });
            let starting = match &verdict {
                Verdict::Fired(_) => self.starting(i, now),
                Verdict::Healthy => None,
            };
            let job = &mut self.watched[i];
            job.health = match (verdict, starting) {
                (Verdict::Fired(evidence), Some(_)) => Health::Starting {
                    since: job.health.alarm_since().unwrap_or(now),
                    evidence,
                },
                (verdict, _) => job.health.observe(verdict, job.config.confirm, now),
            };
            match (&job.health, before) {
                (Health::Stuck { evidence, .. }, false) => tracing::warn!(
                    job = %job.config.name, detector = evidence.detector, detail = %evidence.detail,
                    "job is stuck"
                ),
                (Health::Starting { evidence, .. }, _) if !was_starting => tracing::info!(
                    job = %job.config.name, detector = evidence.detector, detail = %evidence.detail,
                    started_ago = %crate::detect::human(starting.unwrap_or_default()),
                    start_grace = %humantime::format_duration(job.config.start_grace),
                    "job is starting: its processes are within start_grace, so its detectors' alarms do not count yet"
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
        // A healthy job starts its dry-run ladder afresh too.
        for name in &healthy {
            self.dry_ladder.remove(name);
        }
        let fixed = self.fixed_by_hand(&healthy, now);
        self.clear_gave_up(&fixed);
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
        let starting = self
            .watched
            .iter()
            .filter(|j| matches!(j.health, Health::Starting { .. }))
            .count();
        self.metrics
            .jobs_starting
            .set(i64::try_from(starting).unwrap_or(i64::MAX));
    }

    /// How long ago job `i`'s processes started (the oldest, as its last
    /// check saw them), if the job is starting: that is less than its
    /// `start_grace`, and so is the alarm going on (a job that keeps
    /// starting, a crash loop, gets one grace per alarm, not one per
    /// start). Never during its probation: a relapse after medic's own fix
    /// is judged as such.
    pub(super) fn starting(&mut self, i: usize, now: SystemTime) -> Option<Duration> {
        let job = &self.watched[i];
        let grace = job.config.start_grace;
        if grace.is_zero() {
            return None;
        }
        if self.probation.is_some() && self.held.as_ref().is_some_and(|h| h.job == job.config.name)
        {
            return None;
        }
        let alarm = job.health.alarm_since().map_or(Duration::ZERO, |since| {
            now.duration_since(since).unwrap_or_default()
        });
        if alarm >= grace {
            return None;
        }
        let ago = self.host.started_ago(&job.config, &job.detectors)?;
        (ago < grace).then_some(ago)
    }

    /// Of the jobs found healthy, those that gave up and show evidence of
    /// a fix made after the agent began watching for one: a heartbeat file
    /// written since, processes started since, a probe passed since. A job
    /// merely not yet past a grace period (its process absent for less
    /// than `absent_grace`) is not fixed.
    fn fixed_by_hand(&mut self, healthy: &[String], now: std::time::SystemTime) -> Vec<String> {
        let Ok(state) = &self.state else {
            return Vec::new();
        };
        let mut fixed = Vec::new();
        for job in &mut self.watched {
            let gave_up = state
                .jobs
                .get(&job.config.name)
                .is_some_and(|c| c.gave_up.is_some());
            if !gave_up {
                job.fix_watched = false;
                continue;
            }
            if !job.fix_watched {
                job.detectors.mark_restart(now, now);
                job.fix_watched = true;
                continue;
            }
            if healthy.contains(&job.config.name)
                && self.host.fresh(&job.config, &job.detectors).is_ok()
            {
                fixed.push(job.config.name.clone());
            }
        }
        fixed
    }

    /// A job that gave up and is then seen fixed by a person has its
    /// gave-up state cleared and its ladder reset. The host's quarantine
    /// stays until a person releases it.
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
