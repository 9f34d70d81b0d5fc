//! `medicctl quarantine` and `unquarantine`, and the quarantines other outputs show.

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{quarantine_cause, time};

/// A host held for a human.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantine {
    /// The host.
    pub host_id: String,
    /// `manual`, `attempt_budget`, `permit_expired` or `gave_up`.
    pub cause: String,
    /// Who quarantined it (an operator, or `coordinator`).
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: Option<String>,
}

impl From<&pb::Quarantine> for Quarantine {
    fn from(q: &pb::Quarantine) -> Self {
        Quarantine {
            host_id: q.host_id.clone(),
            cause: quarantine_cause(q.cause),
            actor: q.actor.clone(),
            reason: q.reason.clone(),
            since: time(q.since.as_ref()),
        }
    }
}

/// `medicctl quarantine`.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    /// The new quarantine.
    pub quarantine: Quarantine,
}

/// `medicctl unquarantine`.
#[derive(Debug, Clone, Serialize)]
pub struct Released {
    /// The quarantine that ended, as it was.
    pub released: Quarantine,
}
