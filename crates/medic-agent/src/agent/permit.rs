//! The permit's life on the agent's side: asking for it (one request id
//! per attempt, retried after failures and denials), keeping it valid by
//! its own monotonic clock (I8), and reporting how the action ended.

use std::time::{Duration, SystemTime};

use medic_client::CallError;
use medic_policy::{Action, Decision, Outcome, PermitRef, PermitRequest, RequestId};
use medic_proto::request::{OutcomeReport, Renewal};
use tokio::time::Instant;

use crate::backoff::{Backoff, after_denial, cap_denial_wait};
use crate::coordinator::Coordinator;
use crate::effects::Host;
use crate::state::JobCounters;

use super::{Agent, Waiting};

/// A permit the agent holds, timed by its own monotonic clock.
#[derive(Clone, Debug)]
pub(super) struct Held {
    pub(super) permit: PermitRef,
    pub(super) action: Action,
    pub(super) job: String,
    pub(super) dry_run: bool,
    /// Why it was asked for (the evidence), for the commands run under it.
    pub(super) reason: String,
    pub(super) ttl: Duration,
    /// When it was received or last renewed (monotonic).
    pub(super) renewed: Instant,
    /// Set once the coordinator said the permit is no longer active
    /// (revoked, ended, expired): why. Nothing more is done under it, and
    /// no outcome is reported for it.
    pub(super) ended: Option<String>,
    /// Set once the first irreversible step began (the restart's signals,
    /// the reboot command): before it, an ended action is ABORTED with
    /// nothing done.
    pub(super) acted: bool,
}

impl Held {
    /// The instant after which no irreversible step may start.
    fn act_before(&self, margin: Duration) -> Instant {
        self.renewed + self.ttl.saturating_sub(margin)
    }
}

impl<H: Host, C: Coordinator> Agent<H, C> {
    pub(super) fn note_reachable(&mut self, ok: bool) {
        self.metrics.coordinator_reachable.set(i64::from(ok));
        if !ok {
            self.metrics.coordinator_errors.inc();
        }
        if ok {
            self.unreachable_said = None;
        }
        if self.reachable != Some(ok) {
            if ok {
                tracing::info!("coordinator reachable");
            } else {
                tracing::warn!(
                    "no coordinator reachable: taking no action until one answers (fail closed)"
                );
            }
            self.reachable = Some(ok);
        }
    }

    /// Accounts for a call that got no usable answer: unreachable (fail
    /// closed), refused, or a reply that cannot be used, which is an error
    /// for the operator (counted, logged with its cause), never ignored.
    pub(super) fn call_failed(&mut self, call: &str, e: &CallError) {
        if e.is_transient() {
            self.note_reachable(false);
            self.say_why_unreachable(call, e);
            return;
        }
        self.note_reachable(true);
        if let CallError::Malformed { .. } = e {
            self.metrics.malformed_replies.inc();
            tracing::error!(call, error = %e, "the coordinator's reply cannot be used; the call failed");
        }
    }

    /// Logs why no coordinator answered (a wrong CA, connection refused, a
    /// timeout each read differently) at warn: when the cause changes, and
    /// at most once a minute while it stays the same.
    fn say_why_unreachable(&mut self, call: &str, e: &CallError) {
        let now = self.clock.instant();
        let cause = e.to_string();
        if worth_saying(self.unreachable_said.as_ref(), now, &cause) {
            tracing::warn!(call, error = %cause, "no coordinator answered");
            self.unreachable_said = Some((now, cause));
        }
    }

    /// Asks for a permit to take `action` on job `i`, reusing the request
    /// id of an attempt that must be retried. `Some` when granted;
    /// otherwise it sets when to ask again.
    pub(super) async fn request_permit(
        &mut self,
        i: usize,
        action: Action,
        counters: &JobCounters,
    ) -> Option<Held> {
        let name = self.watched[i].config.name.clone();
        let request_id = match &self.attempt {
            Some((j, a, id)) if *j == name && *a == action => id.clone(),
            _ => {
                let id = format!(
                    "{}-{}-{}-{:x}",
                    self.config.host_id,
                    name,
                    self.clock
                        .now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis(),
                    crate::backoff::with_rng(|r| r.next_u32())
                );
                self.attempt = Some((name.clone(), action, id.clone()));
                id
            }
        };
        let (evidence, _) = self.watched[i]
            .health
            .stuck()
            .map(|(e, s)| (e.clone(), s))
            .unzip();
        let reason = evidence
            .map(|e| format!("{}: {}", e.detector, e.detail))
            .unwrap_or_default();
        let request = match RequestId::new(request_id) {
            Ok(request_id) => PermitRequest {
                // An agent in dry-run asks for a dry-run permit: it spends
                // no real budget and quarantines nothing.
                dry_run: self.config.dry_run,
                request_id,
                host: self.config.host_id.clone(),
                action,
                job: name.clone(),
                reason: format!(
                    "{reason} ({} failed restart(s), {} failed reboot(s))",
                    counters.failed_restarts, counters.failed_reboots
                ),
            },
            Err(e) => {
                tracing::error!(job = %name, %action, error = %e, "cannot make a permit request id");
                self.end_attempt();
                self.next_request = self.clock.instant() + self.backoff.fail();
                return None;
            }
        };
        let received = self.clock.instant();
        self.waiting = None;
        self.metrics.permit_requests.inc();
        let reply = self.coordinator.request_permit(request).await;
        match reply {
            Err(e) if e.is_transient() => {
                self.call_failed("request_permit", &e);
                let wait = self.backoff.fail();
                tracing::debug!(error = %e, wait = ?wait, "permit request failed; retrying later");
                self.next_request = self.clock.instant() + wait;
            }
            Err(e @ CallError::Malformed { .. }) => {
                // The coordinator may have granted a permit this agent
                // cannot use: it is not acted on, and the request is asked
                // again with the same id, so that a coordinator that
                // recovers replays its grant instead of making another.
                self.call_failed("request_permit", &e);
                tracing::error!(error = %e, job = %name, %action, "permit request failed: the coordinator's answer cannot be used");
                self.next_request = self.clock.instant() + self.backoff.fail();
            }
            Err(e) => {
                self.call_failed("request_permit", &e);
                tracing::error!(error = %e, job = %name, %action, "permit request refused");
                self.end_attempt();
                let wait = self.backoff.fail().max(e.retry_after().unwrap_or_default());
                self.next_request = self.clock.instant() + wait;
            }
            Ok(decision) => {
                self.note_reachable(true);
                self.backoff.reset();
                if !matches!(decision, Decision::Waiting(_)) {
                    self.end_attempt();
                }
                match decision {
                    Decision::Waiting(w) => {
                        // Not a denial: the same request id is asked again
                        // (the approval stands for it), at `retry_after`
                        // or when a heartbeat reply's wake-up value moves.
                        let wait = cap_denial_wait(w.retry_after, self.heartbeat_interval);
                        if self.approval_said != Some(w.approval) {
                            tracing::warn!(
                                job = %name, %action, approval = w.approval,
                                expires = %medic_policy::rfc3339(w.expires_at),
                                message = %w.message,
                                "waiting for a human's approval before acting"
                            );
                            self.approval_said = Some(w.approval);
                        } else {
                            tracing::debug!(job = %name, %action, approval = w.approval, "still waiting for a human's approval");
                        }
                        self.metrics.waiting_for_approval.set(1);
                        self.next_request = self.clock.instant() + wait;
                        self.waiting = Some(Waiting { wake: self.wake });
                    }
                    Decision::Denied(d) => {
                        // Never longer than a few heartbeats: the reason
                        // may end sooner than `retry_after` said, and a
                        // wake-up in a heartbeat reply ends it sooner still.
                        let wait = cap_denial_wait(
                            after_denial(d.retry_after, Duration::from_secs(60)),
                            self.heartbeat_interval,
                        );
                        self.metrics
                            .permit_denials
                            .get_or_create(&crate::metrics::ReasonLabel {
                                reason: d.reason.as_str().to_owned(),
                            })
                            .inc();
                        let retry_in =
                            humantime::format_duration(Duration::from_secs(wait.as_secs()));
                        if d.reason == medic_policy::DenyReason::UnknownAction {
                            // Not a passing state: the agent's ladder and the
                            // coordinator's [actions] disagree until a
                            // person changes one of them.
                            tracing::error!(
                                job = %name, %action, reason = %d.reason, denial = %d.message,
                                %retry_in,
                                "the coordinator does not know this action; fix the job's ladder or declare the action in the coordinator's [actions]"
                            );
                        } else {
                            tracing::info!(
                                job = %name, %action, reason = %d.reason, denial = %d.message,
                                %retry_in, "permit denied; leaving the job alone"
                            );
                        }
                        self.next_request = self.clock.instant() + wait;
                        self.waiting = Some(Waiting { wake: self.wake });
                    }
                    Decision::Granted { permit, .. } => {
                        let held = Held {
                            permit: PermitRef {
                                id: permit.id,
                                token: permit.token,
                            },
                            action,
                            job: name.clone(),
                            dry_run: permit.dry_run,
                            reason: reason.clone(),
                            ttl: permit.ttl,
                            renewed: received,
                            ended: None,
                            acted: false,
                        };
                        tracing::warn!(job = %name, %action, permit = %held.permit.id, "permit granted");
                        self.metrics.permits_granted.inc();
                        return Some(held);
                    }
                }
            }
        }
        None
    }

    /// The attempt in progress is over (answered, refused, or its job no
    /// longer stuck): the next request gets a new id, and no approval is
    /// waited on any more. Returns the approval that was, if one.
    pub(super) fn end_attempt(&mut self) -> Option<u64> {
        self.attempt = None;
        self.metrics.waiting_for_approval.set(0);
        self.approval_said.take()
    }

    /// Renews the held permit if a third of its TTL has passed. Returns
    /// false if it is no longer active (revoked, expired) or too close to
    /// expiry to start anything.
    pub(super) async fn keep_valid(&mut self, held: &mut Held) -> bool {
        self.renew_if(held, false).await
    }

    /// Right before an irreversible step: renews the permit whatever its
    /// age, so a revocation is seen before anything is done.
    pub(super) async fn confirm_valid(&mut self, held: &mut Held) -> bool {
        self.renew_if(held, true).await
    }

    pub(super) async fn renew_if(&mut self, held: &mut Held, always: bool) -> bool {
        if held.ended.is_some() {
            return false;
        }
        let now = self.clock.instant();
        if always || now.duration_since(held.renewed) >= held.ttl / 3 {
            let renewal = Renewal {
                host: self.config.host_id.clone(),
                permit: held.permit.clone(),
            };
            let sent = self.clock.instant();
            let reply = self.coordinator.renew_permit(renewal).await;
            match reply {
                Ok(p) => {
                    held.renewed = sent;
                    // A permit held from before the agent started learns
                    // its lifetime here.
                    if !p.ttl.is_zero() {
                        held.ttl = p.ttl;
                    }
                }
                // Said once, in the action's last line: nothing more is done
                // under it.
                Err(e @ CallError::Status { .. }) if !e.is_transient() => {
                    held.ended = Some(e.to_string());
                    return false;
                }
                // Unreachable, or a reply that cannot be used: whether the
                // renewal took is unknown, so it is not counted.
                Err(e) => {
                    self.call_failed("renew_permit", &e);
                    tracing::warn!(error = %e, "cannot renew the permit; it stays valid only until its own expiry");
                }
            }
        }
        self.clock.instant() < held.act_before(self.config.safety_margin)
    }

    /// Reports an outcome, retrying while no coordinator answers (up to a
    /// few minutes: past that the permit expires and the coordinator
    /// quarantines the host, which is the safe end).
    pub(super) async fn report(&mut self, held: &Held, outcome: Outcome, detail: &str) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let give_up = self.clock.instant() + Duration::from_secs(300);
        loop {
            let report = OutcomeReport {
                host: self.config.host_id.clone(),
                permit: held.permit.clone(),
                outcome,
                detail: detail.to_owned(),
            };
            let reply = self.coordinator.report_outcome(report).await;
            match reply {
                Ok(_) => return,
                Err(e) if e.is_transient() && self.clock.instant() < give_up => {
                    tracing::debug!(error = %e, "cannot report the outcome yet; retrying");
                    self.clock.sleep(backoff.fail()).await;
                }
                Err(e) if e.is_transient() => {
                    self.call_failed("report_outcome", &e);
                    tracing::error!(error = %e, permit = %held.permit.id, "could not report the outcome; the permit will expire");
                    return;
                }
                // The coordinator answered: recorded (a reply that cannot
                // be used is logged by `call_failed`) or refused.
                Err(e) => {
                    self.call_failed("report_outcome", &e);
                    tracing::warn!(permit = %held.permit.id, error = %e, "outcome not recorded");
                    return;
                }
            }
        }
    }
}

/// Whether a cause of unreachability is worth a warning: the first, a
/// different one, or the same one a minute after it was last said.
fn worth_saying(said: Option<&(Instant, String)>, now: Instant, cause: &str) -> bool {
    const EVERY: Duration = Duration::from_secs(60);
    said.is_none_or(|(at, last)| last != cause || now.duration_since(*at) >= EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_cause_is_said_when_new_or_changed_and_once_a_minute() {
        let t0 = Instant::now();
        let refused = "cannot reach the coordinator at http://c:7470: connection refused";
        assert!(worth_saying(None, t0, refused));
        let said = (t0, refused.to_owned());
        assert!(!worth_saying(
            Some(&said),
            t0 + Duration::from_secs(59),
            refused
        ));
        assert!(worth_saying(
            Some(&said),
            t0 + Duration::from_secs(60),
            refused
        ));
        assert!(worth_saying(
            Some(&said),
            t0 + Duration::from_secs(1),
            "tls: invalid peer certificate: UnknownIssuer"
        ));
    }
}
