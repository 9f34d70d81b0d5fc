//! `medicctl pause` and `resume`, and the pauses other outputs show.

use std::collections::BTreeMap;

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{action, time};

/// What a pause covers.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    /// Hosts whose labels contain all of these; `{}`: every host.
    pub selector: BTreeMap<String, String>,
    /// Only this action; `null`: every action.
    pub action: Option<String>,
}

impl From<Option<&pb::Scope>> for Scope {
    fn from(s: Option<&pb::Scope>) -> Self {
        Scope {
            selector: s.map(|s| s.selector.clone()).unwrap_or_default(),
            action: s.and_then(|s| action(s.action, &s.action_name)),
        }
    }
}

/// An operator's temporary override of a limit.
#[derive(Debug, Clone, Serialize)]
pub struct Override {
    /// Its id, for `medicctl override end`.
    pub id: u64,
    /// The action whose limit it changes.
    pub action: String,
    /// `max_in_flight` or `rate_count`.
    pub limit: String,
    /// The value in force instead of the configured one.
    pub value: u32,
    /// Who set it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When it began.
    pub since: Option<String>,
    /// When it ends by itself.
    pub until: Option<String>,
}

impl From<&pb::Override> for Override {
    fn from(o: &pb::Override) -> Self {
        Override {
            id: o.override_id,
            action: super::action_name(o.action, &o.action_name),
            limit: super::override_limit(o.limit),
            value: o.value,
            actor: o.actor.clone(),
            reason: o.reason.clone(),
            since: time(o.since.as_ref()),
            until: time(o.until.as_ref()),
        }
    }
}

/// An operator's pause.
#[derive(Debug, Clone, Serialize)]
pub struct Pause {
    /// Its id, for `medicctl resume --id`.
    pub id: u64,
    /// What it covers.
    pub scope: Scope,
    /// Who paused.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// When it began.
    pub since: Option<String>,
    /// When it lapses by itself; `null`: until resumed.
    pub until: Option<String>,
}

impl From<&pb::Pause> for Pause {
    fn from(p: &pb::Pause) -> Self {
        Pause {
            id: p.pause_id,
            scope: Scope::from(p.scope.as_ref()),
            actor: p.actor.clone(),
            reason: p.reason.clone(),
            since: time(p.since.as_ref()),
            until: time(p.until.as_ref()),
        }
    }
}

/// `medicctl pause`.
#[derive(Debug, Clone, Serialize)]
pub struct Paused {
    /// The new pause.
    pub pause: Pause,
}

/// `medicctl resume`.
#[derive(Debug, Clone, Serialize)]
pub struct Resumed {
    /// The pauses that ended, each as it was.
    pub resumed: Vec<Pause>,
}
