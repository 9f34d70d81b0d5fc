//! The heartbeat: the host's problems, its held permit and whether it
//! needs a human, sent every interval (and at once when problems change).
//! The coordinator's reply sets the interval, wakes an agent waiting on a
//! denial when things changed, and says whether the host is quarantined:
//! a host released by a person clears its jobs' gave-up state.

use medic_policy::{Heartbeat, Problem};

use crate::backoff::jitter;
use crate::coordinator::Coordinator;
use crate::effects::Host;
use crate::state::JobCounters;

use super::Agent;

impl<H: Host, C: Coordinator> Agent<H, C> {
    /// Sends a heartbeat; adopts the coordinator's interval; notices a held
    /// permit that is no longer active.
    pub(super) async fn heartbeat(&mut self) {
        let problems: Vec<Problem> = self
            .watched
            .iter()
            .filter_map(|j| {
                j.health.stuck().map(|(e, since)| Problem {
                    job: j.config.name.clone(),
                    detector: e.detector.to_owned(),
                    since,
                    detail: e.detail.clone(),
                })
            })
            .collect();
        // An unusable state file stops actions but is not, by itself, a
        // reason to quarantine the host: it is logged for the operator.
        // Once the coordinator has confirmed the quarantine, the agent
        // stops asking: asking again after a person released the host
        // would quarantine it again.
        let needs_human = match &self.state {
            Err(_) => None,
            Ok(s) => s
                .jobs
                .values()
                .filter(|c| !c.quarantined)
                .find_map(|c| c.gave_up.clone()),
        };
        let heartbeat = Heartbeat {
            // Shown in `medicctl hosts`: this agent acts on nothing until
            // a person repairs or removes its state file.
            state_error: self
                .state
                .as_ref()
                .err()
                .map(|e| within(e.to_string(), 1000)),
            host: self.config.host_id.clone(),
            labels: self.config.labels.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            problems,
            held_permit: self.held.as_ref().map(|h| h.permit.clone()),
            needs_human,
        };
        self.next_heartbeat = self.clock.instant() + self.heartbeat_interval;
        self.metrics.heartbeats.inc();
        let reply = self.coordinator.heartbeat(heartbeat).await;
        match reply {
            Ok(reply) => {
                self.note_reachable(true);
                self.coordinator_dry_run = reply.dry_run;
                // Within the bounds a config may set, whatever the
                // coordinator sends: `now + d` must not overflow.
                let d = reply.heartbeat_interval.clamp(
                    medic_policy::config::MIN_HEARTBEAT_INTERVAL,
                    medic_policy::config::MAX_HEARTBEAT_INTERVAL,
                );
                if d != self.heartbeat_interval {
                    tracing::info!(interval = %humantime::format_duration(d), "coordinator sets the heartbeat interval");
                    self.heartbeat_interval = d;
                    self.next_heartbeat = self.clock.instant() + d;
                }
                self.note_quarantine(reply.quarantine.is_some());
                self.note_wake(reply.wake);
            }
            Err(e) => {
                self.call_failed("heartbeat", &e);
                tracing::debug!(error = %e, "heartbeat failed");
            }
        }
    }

    /// A wake-up value other than the one seen when the agent was denied
    /// means something changed that can turn the denial into a grant: the
    /// agent asks again within a heartbeat interval (jittered, so a fleet
    /// woken together does not ask together; the caps decide who goes
    /// first).
    fn note_wake(&mut self, wake: u64) {
        self.wake = Some(wake);
        let Some(waiting) = &mut self.waiting else {
            return;
        };
        match waiting.wake {
            None => waiting.wake = Some(wake),
            Some(seen) if seen == wake => {}
            Some(_) => {
                self.waiting = None;
                let soon = self.clock.instant() + jitter(self.heartbeat_interval, 1.0);
                if soon < self.next_request {
                    tracing::info!(
                        retry_in = %humantime::format_duration(std::time::Duration::from_secs(
                            soon.saturating_duration_since(self.clock.instant()).as_secs()
                        )),
                        "woken: the coordinator says things changed (a pause ended, a breaker \
                         was reset or closed, the host was released or the policy reloaded); \
                         asking again"
                    );
                    self.next_request = soon;
                }
            }
        }
    }

    /// Follows the host's quarantine for jobs that gave up: confirmed (stop
    /// sending `needs_human`), then lifted, which only a person does: the
    /// job's gave-up state is cleared and its ladder starts afresh.
    fn note_quarantine(&mut self, quarantined: bool) {
        let Ok(state) = &mut self.state else {
            return;
        };
        let mut changed = false;
        for (name, c) in &mut state.jobs {
            if c.gave_up.is_none() {
                continue;
            }
            if quarantined && !c.quarantined {
                c.quarantined = true;
                changed = true;
            } else if !quarantined && c.quarantined {
                tracing::warn!(
                    job = %name,
                    "the host was released from quarantine: the job's gave-up state is \
                     cleared and its ladder starts afresh"
                );
                *c = JobCounters::default();
                changed = true;
            }
        }
        if changed {
            self.save();
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary: the
/// coordinator refuses longer fields, and a refused heartbeat would make
/// the host look dead.
fn within(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}
