//! A job's hooks, run under the action's permit: `pre` before the action
//! (a non-zero exit or a timeout vetoes it), `post` after a verified fix
//! or an action not taken. The agent renews the permit and heartbeats
//! while a hook runs.

use std::time::Duration;

use crate::coordinator::Coordinator;
use crate::effects::{CommandError, CommandReport, CommandRun, Hook, Host};

use super::Agent;
use super::permit::Held;

impl<H: Host, C: Coordinator> Agent<H, C> {
    /// Runs job `i`'s `which` hook under `held`, if the job has one: `None`
    /// without one. Logged with its exit status and output, and counted.
    pub(super) async fn run_hook(
        &mut self,
        i: usize,
        which: Hook,
        held: &mut Held,
    ) -> Option<Result<CommandReport, CommandError>> {
        let job = &self.watched[i].config;
        let hook = match which {
            Hook::Pre => job.pre.clone(),
            Hook::Post => job.post.clone(),
        }?;
        let ctx = self.context(held);
        tracing::info!(
            job = %ctx.job, action = %ctx.action, permit = %ctx.permit.id, hook = %which,
            command = ?hook.command, "running the {which} hook"
        );
        let running = self.host.hook(&self.watched[i].config, which, &hook, &ctx);
        let result = self.while_running(held, running).await;
        let outcome = match &result {
            Ok(report) => {
                tracing::info!(
                    job = %ctx.job, permit = %ctx.permit.id, hook = %which,
                    command_status = %report.status, command_output = %report.output,
                    "the {which} hook finished"
                );
                "ok"
            }
            Err(e) => {
                tracing::warn!(
                    job = %ctx.job, permit = %ctx.permit.id, hook = %which,
                    command_status = %e.status(), command_output = %e.output(),
                    "the {which} hook failed"
                );
                match e {
                    CommandError::Spawn { .. } => "not_started",
                    CommandError::Timeout { .. } => "timeout",
                    CommandError::Exit { .. } => "failed",
                }
            }
        };
        self.metrics
            .hooks
            .get_or_create(&crate::metrics::HookLabels {
                hook: which.as_str().to_owned(),
                result: outcome.to_owned(),
            })
            .inc();
        Some(result)
    }

    /// Waits for a command started under `held` (a hook, a custom
    /// action's), renewing the permit and heartbeating meanwhile, as
    /// between checks. A revocation is seen here; the command still runs
    /// to its end (a half-done drain helps nobody), and nothing is done
    /// after it.
    pub(super) async fn while_running<E>(
        &mut self,
        held: &mut Held,
        mut running: CommandRun<E>,
    ) -> Result<CommandReport, E> {
        let step = self.config.check_interval.min(Duration::from_secs(1));
        loop {
            tokio::select! {
                r = &mut running => return r,
                () = self.clock.sleep(step) => {
                    self.keep_valid(held).await;
                    if self.clock.instant() >= self.next_heartbeat {
                        self.heartbeat().await;
                    }
                }
            }
        }
    }
}
