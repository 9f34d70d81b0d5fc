//! Climbing a stuck job's ladder: the next rung (restart, a custom
//! action, reboot, or a human), the action carried out under its permit with the problem
//! checked again first, verification, and a reboot finished after the
//! agent comes back.

use std::time::Duration;

use medic_policy::{Action, Outcome};

use crate::coordinator::Coordinator;
use crate::detect::Verdict;
use crate::effects::{ActionContext, Hook, Host};
use crate::ladder::{self, Health, Step};
use crate::state::Pending;

use super::Agent;
use super::permit::Held;

/// How an action under a permit ended, for when to ask again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// Done (whatever the outcome), or on probation.
    Done,
    /// The coordinator ended the permit (a revocation).
    Revoked,
    /// The pre hook vetoed it.
    Vetoed,
}

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
            if let Some(approval) = self.end_attempt() {
                tracing::info!(
                    approval,
                    "no job is stuck any more: no longer waiting for the approval (it expires unused)"
                );
            }
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
        let ended = self.act(i, held).await;
        self.next_request = self.clock.instant()
            + match ended {
                // Not at once: an operator stopped it for a reason, and the
                // coordinator's cooldown counts from the revocation.
                Ended::Revoked => self.heartbeat_interval,
                // The pre hook said "not now": ask again later and later
                // while it keeps saying so.
                Ended::Vetoed => self.vetoes.fail(),
                Ended::Done => Duration::ZERO,
            };
        if ended != Ended::Vetoed {
            self.vetoes.reset();
        }
    }

    /// Carries out a granted action: the pre hook, the action, its
    /// verification, the post hook; then probation, or the outcome
    /// reported.
    pub(super) async fn act(&mut self, i: usize, mut held: Held) -> Ended {
        let name = held.job.clone();
        self.held = Some(held.clone());
        self.activity.set(Some(format!(
            "{} of job {name:?} under permit {}",
            held.action, held.permit.id
        )));
        let mut pre_ran = false;
        let mut vetoed = false;
        let (outcome, mut detail) = 'act: {
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
            // Or did the job start again meanwhile (a deploy)?
            let now = self.clock.now();
            if let Some(ago) = self.starting(i, now) {
                break 'act (
                    Outcome::Aborted,
                    format!(
                        "the job's processes started {} before the action, within its \
                         start_grace ({}): left to start",
                        crate::detect::human(ago),
                        humantime::format_duration(self.watched[i].config.start_grace)
                    ),
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
            // The pre hook may veto: nothing is done then.
            match self.run_hook(i, Hook::Pre, &mut held).await {
                None => {}
                Some(Ok(_)) => pre_ran = true,
                Some(Err(e)) => {
                    vetoed = true;
                    break 'act (
                        Outcome::Aborted,
                        format!(
                            "the pre hook stopped the {}; nothing was done: {e}",
                            held.action
                        ),
                    );
                }
            }
            match held.action {
                Action::RestartJob => self.restart(i, &mut held).await,
                Action::RebootHost => self.reboot(&mut held).await,
                Action::Custom(_) => self.custom(i, &mut held).await,
            }
        };
        // The post hook undoes what the pre hook did once the job is fine:
        // after a verified fix, or when nothing irreversible was done. A
        // job left stuck keeps it (the next rung, or a human, takes over).
        let undo = outcome == Outcome::Aborted && pre_ran && !held.acted;
        if (outcome == Outcome::Succeeded || undo)
            && let Some(Err(e)) = self.run_hook(i, Hook::Post, &mut held).await
        {
            detail.push_str(&format!("; the post hook failed: {e}"));
        }
        if outcome == Outcome::Succeeded && held.ended.is_none() {
            let probation = self.watched[i].config.probation;
            if !probation.is_zero() {
                self.begin_probation(held, probation, detail);
                return Ended::Done;
            }
        }
        self.finish(&held, outcome, &detail).await;
        if held.ended.is_some() {
            Ended::Revoked
        } else if vetoed {
            Ended::Vetoed
        } else {
            Ended::Done
        }
    }

    /// Ends the action under `held`: reports `outcome` (unless the
    /// coordinator ended the permit itself), moves the ladder, clears the
    /// pending record, and logs the one line that says how it ended.
    pub(super) async fn finish(&mut self, held: &Held, outcome: Outcome, detail: &str) {
        let name = held.job.clone();
        // The coordinator ended the permit itself: it takes no outcome.
        if held.ended.is_none() {
            self.report(held, outcome, detail).await;
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
        tracing::warn!(job = %name, action = %held.action, permit = %held.permit.id, outcome = ?outcome, %detail, "action finished");
        if outcome == Outcome::Succeeded
            && let Some(job) = self.watched.iter_mut().find(|j| j.config.name == name)
        {
            job.health = Health::Healthy;
        }
        self.held = None;
        self.probation = None;
        self.metrics.on_probation.set(0);
        self.activity.set(None);
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

    /// Exactly what `action` on job `i` would do now: the hooks, the
    /// processes and signals, the grace, the command, verification and
    /// probation (for a dry run's log and outcome).
    async fn would(&self, i: usize, action: Action) -> String {
        let job = &self.watched[i];
        let hook = |which: Hook, h: &Option<crate::config::HookConfig>| {
            h.as_ref().map(|h| {
                format!(
                    "run the {which} hook {:?} (timeout {})",
                    h.command,
                    humantime::format_duration(h.timeout)
                )
            })
        };
        let act = match action {
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
            Action::Custom(_) => match job.config.step(action).and_then(|s| s.custom.as_ref()) {
                Some(c) => format!(
                    "{action} for job {:?}: run {:?} (timeout {}), and verify within {}",
                    job.config.name,
                    c.command,
                    humantime::format_duration(c.timeout),
                    humantime::format_duration(c.verify_timeout)
                ),
                None => format!(
                    "nothing: job {:?} has no {action} rung any more",
                    job.config.name
                ),
            },
        };
        let probation = (!job.config.probation.is_zero()).then(|| {
            format!(
                "hold the permit through {} of probation",
                humantime::format_duration(job.config.probation)
            )
        });
        [
            hook(Hook::Pre, &job.config.pre),
            Some(act),
            hook(Hook::Post, &job.config.post),
            probation,
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; then ")
    }

    /// What the action under `held` is for, for the commands it runs.
    pub(super) fn context(&self, held: &Held) -> ActionContext {
        ActionContext {
            job: held.job.clone(),
            action: held.action,
            permit: held.permit.clone(),
            reason: held.reason.clone(),
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
        let ctx = self.context(held);
        // Evidence from before this instant does not verify the restart.
        let began = self.clock.now();
        let job = &mut self.watched[i];
        job.detectors.mark_restart(began, began);
        // The first irreversible step.
        held.acted = true;
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

    /// A custom action: its rung's command under the permit, then the job
    /// verified on checks made after the command began
    /// ([`crate::detect::JobDetectors::mark_in_place`]). Its processes
    /// need not be new (the command may fix the job without restarting
    /// it), but each detector must have observed the job since: a heartbeat
    /// file not written since, a probe that has not passed since, or a
    /// detector that could not look fails it.
    pub(super) async fn custom(&mut self, i: usize, held: &mut Held) -> (Outcome, String) {
        let action = held.action;
        let Some(step) = self.watched[i]
            .config
            .step(action)
            .and_then(|s| s.custom.clone())
        else {
            // The ladder changed (a reload) between the request and now.
            return (
                Outcome::Aborted,
                format!("job {:?} has no {action} rung any more", held.job),
            );
        };
        if !self.confirm_valid(held).await {
            return (
                Outcome::Aborted,
                format!("permit revoked or about to expire before the {action}"),
            );
        }
        let ctx = self.context(held);
        // Evidence from before this instant does not verify the action.
        self.watched[i]
            .detectors
            .mark_in_place(action.as_str(), self.clock.now());
        held.acted = true;
        let running = self.host.custom(&self.watched[i].config, &step, &ctx);
        let what = match self.while_running(held, running).await {
            Err(e) => {
                let cmd = e.command();
                tracing::warn!(
                    job = %ctx.job, action = %action, permit = %ctx.permit.id,
                    command_status = %cmd.status(), command_output = %cmd.output(),
                    "custom action command failed"
                );
                return (Outcome::Failed, e.to_string());
            }
            Ok(report) => {
                tracing::info!(
                    job = %ctx.job, action = %action, permit = %ctx.permit.id,
                    command_status = %report.status, command_output = %report.output,
                    "custom action command finished"
                );
                format!(
                    "ran {action} (command {}; output: {:?})",
                    report.status, report.output
                )
            }
        };
        self.verify(i, held, step.verify_timeout, &what, true).await
    }

    /// Waits until the job's detectors pass, renewing the permit and
    /// heartbeating meanwhile. With `fresh`, a pass counts only when every
    /// detector's evidence is newer than the action
    /// ([`crate::detect::JobDetectors::mark_restart`],
    /// [`crate::detect::JobDetectors::mark_in_place`]).
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
                        format!("{what}, but no evidence newer than the action within {within}")
                    }
                };
                if let Some(why) = stale {
                    detail.push_str(&format!(
                        "; it passed only on evidence from before the action: {why}"
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

    pub(super) async fn reboot(&mut self, held: &mut Held) -> (Outcome, String) {
        if let Ok(state) = &mut self.state {
            state.pending = Some(Pending {
                permit: held.permit.clone(),
                action: Action::RebootHost,
                job: held.job.clone(),
                started_at: self.clock.now(),
                reason: held.reason.clone(),
                probation: None,
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
        held.acted = true;
        let cmd = self.config.reboot_command.clone();
        let ctx = self.context(held);
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
    /// recorded as pending: a reboot is verified on evidence newer than it
    /// and followed by the post hook and probation; a probation resumes
    /// where it stopped.
    pub(super) async fn finish_pending(&mut self) {
        let Some(p) = self.state.as_ref().ok().and_then(|s| s.pending.clone()) else {
            return;
        };
        let mut held = Held {
            permit: p.permit.clone(),
            action: p.action,
            job: p.job.clone(),
            dry_run: false,
            reason: p.reason.clone(),
            // Unknown until the first renewal says.
            ttl: Duration::ZERO,
            renewed: self.clock.instant(),
            ended: None,
            acted: true,
        };
        let Some(i) = self.watched.iter().position(|j| j.config.name == p.job) else {
            tracing::warn!(job = %p.job, permit = %p.permit.id, "the job of the {} in progress before the agent stopped is no longer configured", p.action);
            let outcome = if p.probation.is_some() {
                Outcome::Succeeded
            } else {
                Outcome::Aborted
            };
            self.finish(&held, outcome, "the job is no longer configured")
                .await;
            return;
        };
        self.held = Some(held.clone());
        if let Some(record) = p.probation {
            self.resume_probation(i, held, record);
            return;
        }
        tracing::warn!(job = %p.job, permit = %p.permit.id, "finishing the {} in progress before the agent stopped", p.action);
        // Only evidence newer than the reboot verifies it.
        let now = self.clock.now();
        self.watched[i].detectors.mark_restart(p.started_at, now);
        // Heartbeat first so the coordinator knows the host is back.
        self.heartbeat().await;
        let within = self.watched[i].config.restart.verify_timeout;
        let (outcome, mut detail) = self.verify(i, &mut held, within, "rebooted", true).await;
        if outcome == Outcome::Succeeded
            && let Some(Err(e)) = self.run_hook(i, Hook::Post, &mut held).await
        {
            detail.push_str(&format!("; the post hook failed: {e}"));
        }
        let probation = self.watched[i].config.probation;
        if outcome == Outcome::Succeeded && held.ended.is_none() && !probation.is_zero() {
            self.begin_probation(held, probation, detail);
            return;
        }
        self.finish(&held, outcome, &detail).await;
    }
}
