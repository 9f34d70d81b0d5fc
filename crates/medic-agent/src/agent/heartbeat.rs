//! The heartbeat: the host's problems, its held permit and whether it
//! needs a human, sent every interval (and at once when problems change);
//! the coordinator's reply sets the interval.

use medic_policy::{Heartbeat, Problem};

use crate::coordinator::Coordinator;
use crate::effects::Host;

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
        let needs_human = match &self.state {
            Err(_) => None,
            Ok(s) => s.jobs.values().find_map(|c| c.gave_up.clone()),
        };
        let heartbeat = Heartbeat {
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
            }
            Err(e) => {
                self.call_failed("heartbeat", &e);
                tracing::debug!(error = %e, "heartbeat failed");
            }
        }
    }
}
