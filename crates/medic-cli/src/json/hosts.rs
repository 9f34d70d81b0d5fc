//! `medicctl hosts`.

use std::collections::BTreeMap;

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{Quarantine, non_empty, time};

/// `medicctl hosts`.
#[derive(Debug, Clone, Serialize)]
pub struct Hosts {
    /// The hosts, ordered by host id.
    pub hosts: Vec<Host>,
}

/// One host as the coordinator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// The host.
    pub host_id: String,
    /// Its labels as last reported.
    pub labels: BTreeMap<String, String>,
    /// Its agent's version; `null` when not reported.
    pub agent_version: Option<String>,
    /// Whether it counts as live.
    pub live: bool,
    /// Whether it counts as unhealthy (a problem, or a permit in flight).
    pub unhealthy: bool,
    /// Its last heartbeat; `null`: known only through a permit.
    pub last_heartbeat: Option<String>,
    /// Its reported problems.
    pub problems: Vec<Problem>,
    /// Its active permit's id; `null`: none.
    pub active_permit_id: Option<String>,
    /// Its quarantine; `null`: not quarantined.
    pub quarantine: Option<Quarantine>,
    /// Since when it has been silent (was live, stopped heartbeating);
    /// `null`: live, or not seen live since the coordinator started.
    pub silent_since: Option<String>,
    /// Why its agent cannot use its state file (it takes no action);
    /// `null`: the state file is fine.
    pub state_error: Option<String>,
}

/// A job's confirmed stuck condition.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The job.
    pub job: String,
    /// The detector that fired.
    pub detector: String,
    /// Since when (the agent's clock).
    pub since: Option<String>,
    /// Evidence.
    pub detail: String,
}

impl From<&pb::Host> for Host {
    fn from(h: &pb::Host) -> Self {
        Host {
            host_id: h.host_id.clone(),
            labels: h.labels.clone(),
            agent_version: non_empty(&h.agent_version),
            live: h.live,
            unhealthy: h.unhealthy,
            last_heartbeat: time(h.last_heartbeat.as_ref()),
            problems: h
                .problems
                .iter()
                .map(|p| Problem {
                    job: p.job.clone(),
                    detector: p.detector.clone(),
                    since: time(p.since.as_ref()),
                    detail: p.detail.clone(),
                })
                .collect(),
            active_permit_id: non_empty(&h.active_permit_id),
            quarantine: h.quarantine.as_ref().map(Quarantine::from),
            silent_since: time(h.silent_since.as_ref()),
            state_error: non_empty(&h.state_error),
        }
    }
}
