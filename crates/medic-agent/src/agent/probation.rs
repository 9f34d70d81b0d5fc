//! Probation: after a verified fix, the job must stay healthy for its
//! `probation` before the outcome is SUCCEEDED. The permit is held and
//! renewed meanwhile, so it keeps counting against the coordinator's caps;
//! the agent keeps checking every job and heartbeating. A relapse (the job
//! confirmed stuck again) ends the permit FAILED and the ladder climbs.
//! The probation is recorded in the state file, so an agent restarted
//! meanwhile resumes it.

use std::time::Duration;

use medic_policy::Outcome;
use tokio::time::Instant;

use crate::coordinator::Coordinator;
use crate::effects::Host;
use crate::ladder::Health;
use crate::state::{Pending, ProbationRecord};

use super::Agent;
use super::permit::Held;

/// A verified fix on probation (its permit is the agent's held one).
#[derive(Clone, Debug)]
pub(super) struct Probation {
    /// When it ends, if the job stays healthy.
    pub(super) until: Instant,
    /// When it began.
    pub(super) began: Instant,
    /// How long it is.
    pub(super) length: Duration,
    /// What was done and verified.
    pub(super) detail: String,
}

impl<H: Host, C: Coordinator> Agent<H, C> {
    /// Puts the fix under `held` (verified: `detail`) on probation for
    /// `length`, and records it in the state file.
    pub(super) fn begin_probation(&mut self, held: Held, length: Duration, detail: String) {
        let now = self.clock.now();
        if let Ok(state) = &mut self.state {
            state.pending = Some(Pending {
                permit: held.permit.clone(),
                action: held.action,
                job: held.job.clone(),
                started_at: now,
                reason: held.reason.clone(),
                probation: Some(ProbationRecord {
                    since: now,
                    detail: detail.clone(),
                }),
            });
        }
        self.save();
        // Verified healthy just now: a relapse is a new streak of `confirm`
        // positive checks from here.
        if let Some(job) = self.watched.iter_mut().find(|j| j.config.name == held.job) {
            job.health = Health::Healthy;
        }
        tracing::info!(
            job = %held.job, action = %held.action, permit = %held.permit.id, %detail,
            "verified; on probation for {} (the permit is held until then)",
            humantime::format_duration(length)
        );
        self.start_probation(held, length, length, detail);
    }

    /// Resumes a probation an earlier agent recorded: what is left of it by
    /// the wall clock, never more than the job's probation.
    pub(super) fn resume_probation(&mut self, i: usize, held: Held, record: ProbationRecord) {
        let length = self.watched[i].config.probation;
        let left = (record.since + length)
            .duration_since(self.clock.now())
            .unwrap_or_default()
            .min(length);
        tracing::warn!(
            job = %held.job, permit = %held.permit.id,
            "resuming the probation in progress before the agent stopped ({} left)",
            humantime::format_duration(Duration::from_secs(left.as_secs()))
        );
        // The job was verified healthy when the probation began.
        self.watched[i].health = Health::Healthy;
        self.start_probation(held, length, left, record.detail);
    }

    fn start_probation(&mut self, held: Held, length: Duration, left: Duration, detail: String) {
        let now = self.clock.instant();
        self.held = Some(held);
        self.probation = Some(Probation {
            until: now + left,
            began: now,
            length,
            detail,
        });
        self.metrics.on_probation.set(1);
        // Nothing is in flight a stop must wait for: a stopped agent's
        // successor resumes the probation.
        self.activity.set(None);
    }

    /// One round of probation, after the round's checks: a relapse ends it
    /// FAILED, a healthy job at its end SUCCEEDED; meanwhile the permit is
    /// renewed.
    pub(super) async fn tend_probation(&mut self) {
        let (Some(p), Some(mut held)) = (self.probation.clone(), self.held.clone()) else {
            self.probation = None;
            return;
        };
        let length = humantime::format_duration(p.length);
        let Some(i) = self.watched.iter().position(|j| j.config.name == held.job) else {
            let detail = format!(
                "{}; probation cut short: the job is no longer configured",
                p.detail
            );
            self.finish(&held, Outcome::Succeeded, &detail).await;
            return;
        };
        if let Some((e, _)) = self.watched[i].health.stuck() {
            let after = Duration::from_secs(self.clock.instant().duration_since(p.began).as_secs());
            let detail = format!(
                "{}, but the job relapsed {} into its {length} probation: {}: {}",
                p.detail,
                humantime::format_duration(after),
                e.detector,
                e.detail
            );
            // The permit may have ended meanwhile; a relapse still climbs.
            self.keep_valid(&mut held).await;
            self.finish(&held, Outcome::Failed, &detail).await;
            self.next_request = self.clock.instant();
            return;
        }
        self.keep_valid(&mut held).await;
        if let Some(why) = &held.ended {
            // Ended by the coordinator (a revocation): it takes no outcome;
            // the fix was verified, so the ladder starts afresh.
            let detail = format!("{}; the permit ended during probation ({why})", p.detail);
            self.finish(&held, Outcome::Succeeded, &detail).await;
            self.next_request = self.clock.instant() + self.heartbeat_interval;
            return;
        }
        self.held = Some(held.clone());
        // A job in the middle of a positive streak finishes it first.
        if self.clock.instant() >= p.until && self.watched[i].health == Health::Healthy {
            let detail = format!("{}; healthy through {length} of probation", p.detail);
            self.finish(&held, Outcome::Succeeded, &detail).await;
            self.next_request = self.clock.instant();
        }
    }
}
