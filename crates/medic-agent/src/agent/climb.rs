//! Climbing a stuck job's ladder: the next rung (restart, reboot, or a
//! human), the action carried out under its permit with the problem
//! checked again first, verification, and a reboot finished after the
//! agent comes back.

use std::time::Duration;

use medic_policy::{Action, Outcome};

use crate::coordinator::Coordinator;
use crate::detect::Verdict;
use crate::effects::{ActionContext, Host};
use crate::ladder::{self, Health, Step};
use crate::state::Pending;

use super::Agent;
use super::permit::Held;

impl<H: Host, C: Coordinator> Agent<H, C> {
    /// If a job is stuck and nothing is in flight, climbs its ladder.
    pub(super) async fn maybe_act(&mut self) {
        if let Err(why) = &self.state {
            tracing::debug!(%why, "not acting: state file unusable");
            return;
        }
        let Some(i) = self.watched.iter().position(|j| {
            j.health.stuck().is_some() && self.ladder_of(&j.config.name).gave_up.is_none()
        }) else {
            self.attempt = None;
            return;
        };
        let name = self.watched[i].config.name.clone();
        let counters = self.ladder_of(&name);
        let action = match ladder::next_step(&counters, &self.watched[i].config) {
            Step::GiveUp(why) if self.dry_running() => {
                tracing::warn!(job = %name, %why, "DRY RUN: would give up and ask for a human (the host would be quarantined)");
                self.dry_ladder.entry(name).or_default().gave_up = Some(why);
                return;
            }
            Step::GiveUp(why) => {
                tracing::error!(job = %name, %why, "ladder exhausted: the host needs a human");
                if let Ok(state) = &mut self.state {
                    state.jobs.entry(name).or_default().gave_up = Some(why);
                }
                self.save();
                self.heartbeat().await; // tell the coordinator now
                return;
            }
            Step::Ask(a) => a,
        };
        let Some(held) = self.request_permit(i, action, &counters).await else {
            return;
        };
        self.held = Some(held.clone());
        let revoked = self.act(i, held).await;
        self.held = None;
        // After a revocation, not at once: an operator stopped it for a
        // reason, and the coordinator's cooldown counts from the revocation.
        self.next_request = if revoked {
            self.clock.instant() + self.heartbeat_interval
        } else {
            self.clock.instant()
        };
    }

    /// Carries out a granted action and reports its outcome. True when the
    /// coordinator ended the permit first (a revocation).
    pub(super) async fn act(&mut self, i: usize, mut held: Held) -> bool {
        let name = held.job.clone();
        self.activity.set(Some(format!(
            "{} of job {name:?} under permit {}",
            held.action, held.permit.id
        )));
        let (outcome, detail) = 'act: {
            if !self.keep_valid(&mut held).await {
                break 'act (
                    Outcome::Aborted,
                    "permit not valid long enough to act".to_owned(),
                );
            }
            // Right before acting: is the problem still there?
            if self.check_now(i).await == Verdict::Healthy {
                break 'act (
                    Outcome::Aborted,
                    "the job recovered before the action".to_owned(),
                );
            }
            if self.config.dry_run || held.dry_run {
                let would = self.would(i, held.action).await;
                tracing::warn!(job = %name, action = %held.action, "DRY RUN: would {would}");
                // DRY_RUN is only for dry-run permits; an ordinary permit
                // this agent did not act on ends ABORTED (the coordinator
                // refuses anything else).
                let outcome = if held.dry_run {
                    Outcome::DryRun
                } else {
                    Outcome::Aborted
                };
                break 'act (outcome, format!("dry run: would {would}"));
            }
            match held.action {
                Action::RestartJob => self.restart(i, &mut held).await,
                Action::RebootHost => self.reboot(i, &mut held).await,
            }
        };
        // The coordinator ended the permit itself: it takes no outcome.
        if held.ended.is_none() {
            self.report(&held, outcome, &detail).await;
        }
        self.count_action(held.action, outcome);
        // Nothing was done, so the job is still stuck: the dry-run ladder
        // climbs as a failure would, to preview the next rung.
        if outcome == Outcome::DryRun {
            ladder::record(
                self.dry_ladder.entry(name.clone()).or_default(),
                held.action,
                Outcome::Failed,
            );
        }
        if let Ok(state) = &mut self.state {
            ladder::record(
                state.jobs.entry(name.clone()).or_default(),
                held.action,
                outcome,
            );
            state.pending = None;
        }
        self.save();
        tracing::warn!(job = %name, action = %held.action, outcome = ?outcome, %detail, "action finished");
        if outcome == Outcome::Succeeded {
            self.watched[i].health = Health::Healthy;
        }
        self.activity.set(None);
        held.ended.is_some()
    }

    pub(super) fn count_action(&self, action: Action, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::DryRun => "dry_run",
        };
        self.metrics
            .actions
            .get_or_create(&crate::metrics::ActionLabels {
                action: action.as_str().to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Exactly what `action` on job `i` would do now: the processes and
    /// signals, the grace, the command (for a dry run's log and outcome).
    async fn would(&self, i: usize, action: Action) -> String {
        let job = &self.watched[i];
        match action {
            Action::RestartJob => {
                let r = &job.config.restart;
                let pids = job.detectors.pids().await;
                let signal = if pids.is_empty() {
                    "signal no process (none found)".to_owned()
                } else {
                    format!(
                        "send {} to pid(s) {pids:?} (their process groups), SIGKILL what is left after {}",
                        r.signal,
                        humantime::format_duration(r.grace)
                    )
                };
                let command = match &r.command {
                    Some(c) => format!(
                        ", then run {c:?} (timeout {})",
                        humantime::format_duration(r.command_timeout)
                    ),
                    None => String::new(),
                };
                format!(
                    "restart job {:?}: {signal}{command}, and verify within {}",
                    job.config.name,
                    humantime::format_duration(r.verify_timeout)
                )
            }
            Action::RebootHost => format!(
                "reboot the host for job {:?}: run {:?}",
                job.config.name, self.config.reboot_command
            ),
        }
    }

    /// What the action under `held` is for, for the commands it runs.
    fn context(&self, i: usize, held: &Held) -> ActionContext {
        ActionContext {
            job: held.job.clone(),
            action: held.action,
            permit: held.permit.clone(),
            reason: self.watched[i]
                .health
                .stuck()
                .map(|(e, _)| format!("{}: {}", e.detector, e.detail))
                .unwrap_or_default(),
            dry_run: held.dry_run,
        }
    }

    pub(super) async fn restart(&mut self, i: usize, held: &mut Held) -> (Outcome, String) {
        let verify_timeout = self.watched[i].config.restart.verify_timeout;
        if !self.confirm_valid(held).await {
            return (
                Outcome::Aborted,
                "permit revoked or about to expire before the restart".to_owned(),
            );
        }
        let ctx = self.context(i, held);
        // Evidence from before this instant does not verify the restart.
        let began = self.clock.now();
        let job = &mut self.watched[i];
        job.detectors.mark_restart(began);
        // The first irreversible step.
        let what = match self.host.restart(&job.config, &job.detectors, &ctx).await {
            Err(e) => {
                let cmd = e.command();
                tracing::warn!(
                    job = %ctx.job, permit = %ctx.permit.id, command_status = %cmd.status(),
                    command_output = %cmd.output(), "restart command failed"
                );
                return (Outcome::Failed, e.to_string());
            }
            Ok(Some(report)) => {
                tracing::info!(
                    job = %ctx.job, permit = %ctx.permit.id, command_status = %report.status,
                    command_output = %report.output, "restart command finished"
                );
                format!(
                    "restarted (restart command {}; output: {:?})",
                    report.status, report.output
                )
            }
            Ok(None) => "restarted".to_owned(),
        };
        self.verify(i, held, verify_timeout, &what, true).await
    }

    /// Waits until the job's detectors pass, renewing the permit and
    /// heartbeating meanwhile. With `fresh`, a pass counts only when every
    /// detector's evidence is newer than the restart
    /// ([`crate::detect::JobDetectors::mark_restart`]).
    pub(super) async fn verify(
        &mut self,
        i: usize,
        held: &mut Held,
        within: Duration,
        what: &str,
        fresh: bool,
    ) -> (Outcome, String) {
        let deadline = self.clock.instant() + within;
        let step = self.config.check_interval.min(Duration::from_secs(1));
        // The last pass on evidence from before the restart: why it did
        // not count.
        let mut stale = None;
        loop {
            let stuck = match self.check_now(i).await {
                Verdict::Healthy => {
                    let job = &self.watched[i];
                    match fresh.then(|| self.host.fresh(&job.config, &job.detectors)) {
                        None | Some(Ok(())) => {
                            return (
                                Outcome::Succeeded,
                                format!("{what}; the job verified healthy"),
                            );
                        }
                        Some(Err(why)) => {
                            stale = Some(why);
                            None
                        }
                    }
                }
                Verdict::Fired(e) => Some(e),
            };
            if self.clock.instant() >= deadline {
                let within = humantime::format_duration(within);
                let mut detail = match &stuck {
                    Some(e) => format!(
                        "{what}, but the job was still stuck after {within}: {}",
                        e.detail
                    ),
                    None => {
                        format!("{what}, but no evidence newer than the restart within {within}")
                    }
                };
                if let Some(why) = stale {
                    detail.push_str(&format!(
                        "; it passed only on evidence from before the restart: {why}"
                    ));
                }
                return (Outcome::Failed, detail);
            }
            // Revoked or ended meanwhile: verification stops. The action
            // is not counted as failed: nobody let it finish.
            if !self.keep_valid(held).await
                && let Some(why) = &held.ended
            {
                return (
                    Outcome::Aborted,
                    format!("{what}; the permit ended during verification ({why}); stopped"),
                );
            }
            if self.clock.instant() >= self.next_heartbeat {
                self.heartbeat().await;
            }
            self.clock.sleep(step).await;
        }
    }

    pub(super) async fn reboot(&mut self, i: usize, held: &mut Held) -> (Outcome, String) {
        if let Ok(state) = &mut self.state {
            state.pending = Some(Pending {
                permit: held.permit.clone(),
                action: Action::RebootHost,
                job: held.job.clone(),
                started_at: self.clock.now(),
            });
        }
        self.save();
        if self.state.is_err() {
            return (
                Outcome::Aborted,
                "cannot record the reboot in the state file".to_owned(),
            );
        }
        if !self.confirm_valid(held).await {
            return (
                Outcome::Aborted,
                "permit revoked or about to expire before the reboot".to_owned(),
            );
        }
        tracing::warn!(job = %held.job, permit = %held.permit.id, "rebooting the host");
        let cmd = self.config.reboot_command.clone();
        let ctx = self.context(i, held);
        match self.host.reboot(&cmd, &ctx).await {
            Err(e) => {
                let c = e.command();
                tracing::warn!(
                    job = %ctx.job, permit = %ctx.permit.id, command_status = %c.status(),
                    command_output = %c.output(), "reboot command failed"
                );
                (Outcome::Failed, e.to_string())
            }
            Ok(()) => {
                // `systemctl reboot` returns before the host goes down: give
                // it time. Still here afterwards means it did not reboot.
                self.clock.sleep(Duration::from_secs(120)).await;
                (
                    Outcome::Failed,
                    "the reboot command returned but the host did not reboot".to_owned(),
                )
            }
        }
    }

    /// After a restart (of the agent, or of the host), finishes an action
    /// recorded as pending: verifies the job and reports the outcome.
    pub(super) async fn finish_pending(&mut self) {
        let Some(p) = self.state.as_ref().ok().and_then(|s| s.pending.clone()) else {
            return;
        };
        tracing::warn!(job = %p.job, permit = %p.permit.id, "finishing the {} in progress before the agent stopped", p.action);
        let Some(i) = self.watched.iter().position(|j| j.config.name == p.job) else {
            self.report_pending(&p, Outcome::Aborted, "the job is no longer configured")
                .await;
            return;
        };
        let mut held = Held {
            permit: p.permit.clone(),
            action: p.action,
            job: p.job.clone(),
            dry_run: false,
            ttl: Duration::from_secs(u64::MAX / 4),
            renewed: self.clock.instant(),
            ended: None,
        };
        // Heartbeat first so the coordinator knows the host is back.
        self.heartbeat().await;
        let within = self.watched[i].config.restart.verify_timeout;
        let (outcome, detail) = self.verify(i, &mut held, within, "rebooted", false).await;
        self.report_pending(&p, outcome, &detail).await;
    }

    pub(super) async fn report_pending(&mut self, p: &Pending, outcome: Outcome, detail: &str) {
        let held = Held {
            permit: p.permit.clone(),
            action: p.action,
            job: p.job.clone(),
            dry_run: false,
            ttl: Duration::ZERO,
            renewed: self.clock.instant(),
            ended: None,
        };
        self.report(&held, outcome, detail).await;
        self.count_action(p.action, outcome);
        if let Ok(state) = &mut self.state {
            ladder::record(
                state.jobs.entry(p.job.clone()).or_default(),
                p.action,
                outcome,
            );
            state.pending = None;
        }
        self.save();
    }
}
