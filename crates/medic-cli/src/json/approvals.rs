//! `medicctl approvals`, `approve` and `reject`.

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{action_name, time};
use crate::format::enum_name;

/// A permit request waiting for (or decided by) a human.
#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    /// Its id, for `medicctl approve` and `medicctl reject`.
    pub id: u64,
    /// `pending`, `approved`, `rejected`, `expired`, `withdrawn` or `used`.
    pub state: String,
    /// The requesting host.
    pub host_id: String,
    /// The action asked for.
    pub action: String,
    /// The job concerned.
    pub job: String,
    /// The agent's reason for the request.
    pub reason: String,
    /// Why a human must approve.
    pub why: String,
    /// Whether the permit would be a dry run.
    pub dry_run: bool,
    /// The request it stands for.
    pub request_id: String,
    /// When it began to wait.
    pub requested_at: Option<String>,
    /// Pending: when it expires undecided; approved: unused; rejected:
    /// until when the rejection holds.
    pub expires_at: Option<String>,
    /// Who decided it (`coordinator` when it ended by itself); empty
    /// while pending.
    pub actor: String,
    /// Why, in the decider's words.
    pub decision: String,
    /// When it was decided or ended.
    pub decided_at: Option<String>,
    /// The permit granted with it, once used.
    pub permit_id: Option<String>,
}

impl From<&pb::Approval> for Approval {
    fn from(a: &pb::Approval) -> Self {
        Approval {
            id: a.approval_id,
            state: approval_state(a.state),
            host_id: a.host_id.clone(),
            action: action_name(a.action, &a.action_name),
            job: a.job.clone(),
            reason: a.reason.clone(),
            why: a.why.clone(),
            dry_run: a.dry_run,
            request_id: a.request_id.clone(),
            requested_at: time(a.requested_at.as_ref()),
            expires_at: time(a.expires_at.as_ref()),
            actor: a.actor.clone(),
            decision: a.decision.clone(),
            decided_at: time(a.decided_at.as_ref()),
            permit_id: (!a.permit_id.is_empty()).then(|| a.permit_id.clone()),
        }
    }
}

/// `medicctl approvals -o json`.
#[derive(Debug, Clone, Serialize)]
pub struct Approvals {
    /// Newest first.
    pub approvals: Vec<Approval>,
}

/// `pending`, `approved`, ... `used`.
pub fn approval_state(raw: i32) -> String {
    enum_name(
        pb::ApprovalState::try_from(raw)
            .ok()
            .map(|s| s.as_str_name()),
        raw,
        "APPROVAL_STATE_",
    )
}
