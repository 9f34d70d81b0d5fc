//! Human approvals (`[limits.<action>.approval]`): when a grant needs one,
//! the queue of pending approvals, and operators' decisions.
//!
//! A request that passes every rule but needs an approval waits: the engine
//! records an [`Approval`] (pending) and answers [`Decision::Waiting`]. The
//! agent asks again with the same request id. Once a human approved, that
//! ask is granted only if every rule still passes: the rules run before the
//! approval is looked at, so an approval never bypasses a cap, a budget, a
//! breaker or a gate. An approval is used by one grant at most; one that no
//! human decided in time, or that was approved but not used in time,
//! expires. A rejection denies the request, and new requests for the same
//! host, action and job, for as long as a pending approval would have
//! waited (`expire_after`): a human said no, and the agent does not ask
//! again at once.

use std::time::Duration;

use super::Engine;
use super::rules::trunc;
use crate::config::{ActionLimits, ApprovalRule};
use crate::error::{InvalidInput, PolicyError};
use crate::types::{
    Action, Approval, ApprovalState, COORDINATOR_ACTOR, Denial, DenyReason, Event, HostId,
    PermitId, PermitRequest, Time, Waiting, later, rfc3339,
};
use crate::window;

/// What the approval step makes of a request that passed every rule.
pub(super) enum Step {
    /// Grant it; `Some(id)` uses that approved approval.
    Grant(Option<u64>),
    /// It waits for a human.
    Wait(Waiting),
}

// === impl Engine: approvals on the request path ===

impl Engine {
    /// Why a grant of `action` now would need a human's approval under
    /// `limits`, or `None`.
    pub(super) fn approval_needed(
        &self,
        action: Action,
        limits: &ActionLimits,
        now: Time,
    ) -> Option<String> {
        let rule = limits.approval.as_ref()?;
        if rule.always {
            return Some(format!(
                "every {action} needs a human's approval (limits.{action}.approval.always)"
            ));
        }
        if let Some(n) = rule.above_in_flight {
            let after = self.fleet.active[action].saturating_add(1);
            if after > n {
                return Some(format!(
                    "{after} {action} permits in flight would pass \
                     limits.{action}.approval.above_in_flight = {n}"
                ));
            }
        }
        if rule.outside_windows && window::check(&limits.windows, limits.timezone, now).is_err() {
            return Some(format!(
                "{action} is outside its windows ({}), where it needs a human's approval \
                 (limits.{action}.approval.outside_windows)",
                limits.timezone
            ));
        }
        None
    }

    /// The pending or approved approval that stands for `request_id`.
    fn open_approval_for(&self, request_id: &crate::types::RequestId) -> Option<&Approval> {
        if self.durable.approvals.is_empty() {
            return None;
        }
        self.durable.approvals.values().rev().find(|a| {
            &a.request_id == request_id
                && matches!(a.state, ApprovalState::Pending | ApprovalState::Approved)
        })
    }

    /// For a request that passed every rule: grant it, or let it wait for
    /// a human. Records the approval's new state.
    pub(super) fn approval_step(
        &mut self,
        req: &PermitRequest,
        dry_run: bool,
        now: Time,
    ) -> Result<Step, PolicyError> {
        // Overrides change caps and rates, never approvals or windows: the
        // configured limits say when a human must approve.
        let limits = self.config.limits(req.action);
        if limits.approval.is_none() && self.durable.approvals.is_empty() {
            return Ok(Step::Grant(None));
        }
        let rule = limits.approval.unwrap_or(DEFAULT_RULE);
        let need = self.approval_needed(req.action, limits, now);
        let open = self.open_approval_for(&req.request_id).cloned();
        if let Some(a) = &open
            && (a.host != req.host || a.action != req.action || a.job != req.job)
        {
            return Err(PolicyError::RequestIdConflict {
                request_id: req.request_id.clone(),
                previous: format!(
                    "{} of job {:?} on host {} (approval {})",
                    a.action, a.job, a.host, a.id
                ),
            });
        }
        match (open, need) {
            (Some(a), _) if a.state == ApprovalState::Approved => Ok(Step::Grant(Some(a.id))),
            (Some(a), Some(_)) => Ok(Step::Wait(self.waiting(&a, now))),
            (Some(a), None) => {
                self.emit(Event::ApprovalChanged {
                    id: a.id,
                    host: a.host.clone(),
                    state: ApprovalState::Withdrawn,
                    actor: COORDINATOR_ACTOR.to_owned(),
                    reason: format!(
                        "no longer needed: {} no longer needs a human's approval here",
                        a.action
                    ),
                    expires_at: None,
                    permit: None,
                    at: now,
                });
                self.approvals_changed();
                Ok(Step::Grant(None))
            }
            (None, Some(why)) => {
                let a = Approval {
                    id: self.durable.last_approval_id + 1,
                    request_id: req.request_id.clone(),
                    host: req.host.clone(),
                    action: req.action,
                    job: req.job.clone(),
                    reason: req.reason.clone(),
                    dry_run,
                    why,
                    requested_at: now,
                    expires_at: later(now, rule.expire_after),
                    state: ApprovalState::Pending,
                    actor: String::new(),
                    decision: String::new(),
                    decided_at: None,
                    permit: None,
                };
                self.emit(Event::ApprovalRequested(a.clone()));
                self.approvals_changed();
                Ok(Step::Wait(self.waiting(&a, now)))
            }
            (None, None) => Ok(Step::Grant(None)),
        }
    }

    /// Records that approval `id` was used by `permit`.
    pub(super) fn approval_used(&mut self, id: u64, host: &HostId, permit: &PermitId, now: Time) {
        self.emit(Event::ApprovalChanged {
            id,
            host: host.clone(),
            state: ApprovalState::Used,
            actor: COORDINATOR_ACTOR.to_owned(),
            reason: format!("used by permit {permit}"),
            expires_at: None,
            permit: Some(permit.clone()),
            at: now,
        });
        self.approvals_changed();
    }

    /// The answer to a request waiting on `a`.
    fn waiting(&self, a: &Approval, now: Time) -> Waiting {
        let left = a.expires_at.duration_since(now).unwrap_or_default();
        Waiting {
            approval: a.id,
            retry_after: self
                .config
                .fleet
                .heartbeat_interval
                .min(left)
                .max(MIN_RETRY),
            expires_at: a.expires_at,
            message: format!(
                "waiting for a human to approve {} of job {:?} (approval {}, expires in {}): \
                 {}; `medicctl approve {}` or `medicctl reject {}`, with a reason",
                a.action,
                a.job,
                a.id,
                humantime::format_duration(trunc(left)),
                a.why,
                a.id,
                a.id
            ),
        }
    }

    /// The rejection that holds for `host`, `action` and `job`, as a
    /// denial; without a job (`explain`), one for any job of the host and
    /// action. Only actions with an approval rule are looked at: for the
    /// others the check costs nothing.
    pub(super) fn check_rejected(
        &self,
        host: &HostId,
        action: Action,
        job: Option<&str>,
        limits: &ActionLimits,
        now: Time,
    ) -> Option<Denial> {
        limits.approval?;
        let a = self.durable.approvals.values().rev().find(|a| {
            a.state == ApprovalState::Rejected
                && a.expires_at > now
                && &a.host == host
                && a.action == action
                && job.is_none_or(|j| a.job == j)
        })?;
        let job = &a.job;
        let left = a.expires_at.duration_since(now).unwrap_or_default();
        Some(Denial {
            reason: DenyReason::ApprovalRejected,
            retry_after: Some(left),
            message: format!(
                "{} rejected {action} of job {job:?} on {host} (approval {}) at {}: {:?}; \
                 not asked again for {}",
                a.actor,
                a.id,
                a.decided_at.map(rfc3339).unwrap_or_default(),
                a.decision,
                humantime::format_duration(trunc(left))
            ),
        })
    }
}

/// The shortest wait a waiting agent is told: it never spins.
const MIN_RETRY: Duration = Duration::from_secs(1);

/// The rule an approval falls back to when its action's rule was removed
/// by a reload while it was open.
const DEFAULT_RULE: ApprovalRule = ApprovalRule {
    always: true,
    above_in_flight: None,
    outside_windows: false,
    expire_after: ApprovalRule::DEFAULT_EXPIRE_AFTER,
    use_within: ApprovalRule::DEFAULT_USE_WITHIN,
};

// === impl Engine: operators' decisions and expiry ===

impl Engine {
    /// Approves (or rejects) pending approval `id`, for `actor`, who must
    /// say why. An approved request is granted when its agent asks again,
    /// if every rule still passes, within the action's `use_within`. A
    /// rejection denies it, and new requests for the same host, action and
    /// job, for the action's `expire_after`.
    pub fn decide_approval(
        &mut self,
        id: u64,
        approve: bool,
        actor: &str,
        reason: &str,
        now: Time,
    ) -> Result<Approval, PolicyError> {
        let now = self.observe(now);
        self.advance(now);
        if reason.trim().is_empty() {
            return Err(InvalidInput::new(
                "reason",
                "must say why: every approval and rejection is audited with its reason",
            )
            .into());
        }
        let a = self
            .durable
            .approvals
            .get(&id)
            .ok_or(PolicyError::NoSuchApproval(id))?;
        if a.state != ApprovalState::Pending {
            return Err(PolicyError::ApprovalNotPending {
                id,
                state: a.state,
                by: match (a.actor.as_str(), a.decided_at) {
                    ("", _) | (_, None) => String::new(),
                    (who, Some(at)) => format!(" by {who} at {}", rfc3339(at)),
                },
                reason: a.decision.clone(),
            });
        }
        let rule = self
            .config
            .limits(a.action)
            .approval
            .unwrap_or(DEFAULT_RULE);
        let (state, lasts) = if approve {
            (ApprovalState::Approved, rule.use_within)
        } else {
            (ApprovalState::Rejected, rule.expire_after)
        };
        let host = a.host.clone();
        self.emit(Event::ApprovalChanged {
            id,
            host: host.clone(),
            state,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            expires_at: Some(later(now, lasts)),
            permit: None,
            at: now,
        });
        self.approvals_changed();
        // The waiting agent hears of it at its next heartbeat.
        *self.host_wake.entry(host).or_default() += 1;
        Ok(self.durable.approvals[&id].clone())
    }

    /// Pending approvals no human decided in time, and approved ones no
    /// agent used in time, expire.
    pub(super) fn expire_approvals(&mut self, now: Time) {
        if self.approval_due.is_none_or(|due| due > now) {
            return;
        }
        let due: Vec<(u64, HostId, ApprovalState)> = self
            .durable
            .approvals
            .values()
            .filter(|a| {
                matches!(a.state, ApprovalState::Pending | ApprovalState::Approved)
                    && a.expires_at <= now
            })
            .map(|a| (a.id, a.host.clone(), a.state))
            .collect();
        for (id, host, was) in due {
            let reason = if was == ApprovalState::Pending {
                "no human decided before it expired"
            } else {
                "approved, but its agent did not ask again before the approval expired"
            };
            self.emit(Event::ApprovalChanged {
                id,
                host,
                state: ApprovalState::Expired,
                actor: COORDINATOR_ACTOR.to_owned(),
                reason: reason.to_owned(),
                expires_at: None,
                permit: None,
                at: now,
            });
        }
        self.approvals_changed();
    }

    /// After an approval changed: when the next one comes due.
    pub(super) fn approvals_changed(&mut self) {
        self.approval_due = self
            .durable
            .approvals
            .values()
            .filter(|a| matches!(a.state, ApprovalState::Pending | ApprovalState::Approved))
            .map(|a| a.expires_at)
            .min();
    }

    /// Approvals, newest first: pending and approved ones, and with `all`
    /// the recently decided or ended ones too.
    pub fn approvals(&self, all: bool) -> Vec<&Approval> {
        self.durable
            .approvals
            .values()
            .rev()
            .filter(|a| all || !a.state.is_final())
            .collect()
    }
}
