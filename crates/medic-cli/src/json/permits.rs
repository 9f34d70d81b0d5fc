//! `medicctl permits` and `revoke`, and the permits other outputs show.

use std::collections::BTreeMap;

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{action_name, permit_state, seconds, time};

/// `medicctl permits`.
#[derive(Debug, Clone, Serialize)]
pub struct Permits {
    /// The permits, in grant order.
    pub permits: Vec<Permit>,
}

/// A permit.
#[derive(Debug, Clone, Serialize)]
pub struct Permit {
    /// `p-000000000042`.
    pub permit_id: String,
    /// Its fencing token.
    pub fencing_token: u64,
    /// The agent's idempotency key.
    pub request_id: String,
    /// The host allowed to act.
    pub host_id: String,
    /// `restart_job` or `reboot_host`.
    pub action: String,
    /// The job concerned.
    pub job: String,
    /// The agent's reason.
    pub reason: String,
    /// The host's labels at grant time.
    pub labels: BTreeMap<String, String>,
    /// Granted in dry-run mode.
    pub dry_run: bool,
    /// When it was granted.
    pub granted_at: Option<String>,
    /// When it lapses unless renewed or ended.
    pub expires_at: Option<String>,
    /// How long each grant or renewal lasts.
    pub ttl_seconds: Option<f64>,
    /// `active`, `succeeded`, `failed`, `aborted`, `dry_run`, `expired` or
    /// `revoked`.
    pub state: String,
}

impl From<&pb::Permit> for Permit {
    fn from(p: &pb::Permit) -> Self {
        Permit {
            permit_id: p.permit_id.clone(),
            fencing_token: p.fencing_token,
            request_id: p.request_id.clone(),
            host_id: p.host_id.clone(),
            action: action_name(p.action, &p.action_name),
            job: p.job.clone(),
            reason: p.reason.clone(),
            labels: p.labels.clone(),
            dry_run: p.dry_run,
            granted_at: time(p.granted_at.as_ref()),
            expires_at: time(p.expires_at.as_ref()),
            ttl_seconds: seconds(p.ttl.as_ref()),
            state: permit_state(p.state),
        }
    }
}

/// `medicctl revoke`.
#[derive(Debug, Clone, Serialize)]
pub struct Revoked {
    /// The permit, now `revoked`.
    pub permit: Permit,
}
