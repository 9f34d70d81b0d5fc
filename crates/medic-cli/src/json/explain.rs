//! `medicctl explain`, and the denials other outputs show.

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{action_name, deny_reason, seconds};

/// `medicctl explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Explain {
    /// The host asked about.
    pub host_id: String,
    /// The action asked about.
    pub action: String,
    /// Whether a request would be granted now (exactly when `denials` is
    /// empty).
    pub would_grant: bool,
    /// Every rule that would deny, in rule order.
    pub denials: Vec<Denial>,
    /// What denies nothing but an operator should know (an alert gate that
    /// cannot be evaluated and lets requests through).
    pub notes: Vec<String>,
}

/// `medicctl explain HOST` without `--action`: every action's
/// [`Explain`], keyed by the action's name (`restart_job`, `reboot_host`).
pub type ExplainAll = std::collections::BTreeMap<String, Explain>;

/// One rule's refusal.
#[derive(Debug, Clone, Serialize)]
pub struct Denial {
    /// The rule: `warming_up`, `paused`, `breaker_open`, `quarantined`,
    /// `host_busy`, `cooldown`, `concurrency_cap`, `rate_limited`, ...
    pub reason: String,
    /// How long until it could clear by itself; `null`: it will not, a
    /// human must act (resume, release, reset).
    pub retry_after_seconds: Option<f64>,
    /// A sentence a human can act on.
    pub message: String,
}

impl From<&pb::Denial> for Denial {
    fn from(d: &pb::Denial) -> Self {
        Denial {
            reason: deny_reason(d.reason),
            retry_after_seconds: seconds(d.retry_after.as_ref()),
            message: d.message.clone(),
        }
    }
}

impl From<&pb::ExplainResponse> for Explain {
    fn from(e: &pb::ExplainResponse) -> Self {
        Explain {
            host_id: e.host_id.clone(),
            action: action_name(e.action, &e.action_name),
            would_grant: e.would_grant,
            denials: e.denials.iter().map(Denial::from).collect(),
            notes: e.notes.clone(),
        }
    }
}
