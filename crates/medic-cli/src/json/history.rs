//! `medicctl history`, and each line of `watch -o json`.

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{
    Breaker, ConfigError, Denial, Pause, Permit, Quarantine, action_name, breaker_scope,
    event_kind, non_empty, permit_state, seconds, time,
};
use crate::format::step_direction;

/// `medicctl history`.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    /// The events, oldest first (newest first with `--newest-first`).
    pub events: Vec<Event>,
    /// Pass as `--page-token` to continue; `null`: nothing more.
    pub next_page_token: Option<String>,
}

/// One audit event (`history`, and each line of `watch -o json`).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Its position in the history: strictly increasing.
    pub id: u64,
    /// When it happened (the coordinator's clock).
    pub time: Option<String>,
    /// `grant`, `deny`, `outcome`, `admin`, `breaker`, `quarantine`,
    /// `pause`, `config` or `renew`.
    pub kind: String,
    /// Who caused it (an operator, `host:ID`, or `coordinator`); `null`
    /// when not recorded.
    pub actor: Option<String>,
    /// The host it concerns; `null`: no single host.
    pub host_id: Option<String>,
    /// Why, or what happened, in words.
    pub reason: String,
    /// The complete record; its `type` says which.
    pub payload: Payload,
}

/// An event's complete record, tagged by `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    /// A permit was granted.
    PermitGranted {
        /// The permit as granted.
        permit: Permit,
    },
    /// A permit's expiry was pushed out.
    PermitRenewed {
        /// Which permit.
        permit_id: String,
        /// Its new expiry.
        expires_at: Option<String>,
        /// When.
        at: Option<String>,
    },
    /// A permit ended: an outcome, an expiry, or a revocation.
    PermitEnded {
        /// Which permit.
        permit_id: String,
        /// The host that held it.
        host_id: String,
        /// Its action.
        action: String,
        /// Its final state.
        state: String,
        /// Who ended it.
        actor: String,
        /// The outcome text, or the revocation reason.
        detail: String,
        /// When.
        at: Option<String>,
    },
    /// A host was quarantined.
    HostQuarantined {
        /// The quarantine.
        quarantine: Quarantine,
    },
    /// A host was released.
    HostReleased {
        /// The host.
        host_id: String,
        /// Who released it.
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Option<String>,
    },
    /// A pause began.
    Paused {
        /// The pause.
        pause: Pause,
    },
    /// A pause ended.
    Resumed {
        /// The pause as it was.
        pause: Option<Pause>,
        /// Who resumed it (`coordinator` when it expired).
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Option<String>,
    },
    /// An operator's override of a limit began.
    OverrideSet {
        /// The override.
        r#override: super::Override,
    },
    /// An override ended.
    OverrideEnded {
        /// The override as it was.
        r#override: Option<super::Override>,
        /// Who ended it (`coordinator` when it expired).
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Option<String>,
    },
    /// A circuit breaker opened.
    BreakerOpened {
        /// The breaker.
        breaker: Breaker,
    },
    /// A circuit breaker went half-open.
    BreakerHalfOpened {
        /// `fleet` or `LABEL=VALUE`.
        scope: String,
        /// Who (`coordinator` when its condition cleared).
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Option<String>,
    },
    /// A circuit breaker closed.
    BreakerClosed {
        /// `fleet` or `LABEL=VALUE`.
        scope: String,
        /// Who closed it (`coordinator` for an automatic close).
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Option<String>,
    },
    /// A sample of denied requests.
    Denied {
        /// The host denied.
        host_id: String,
        /// What it asked for.
        action: String,
        /// The (last) denial.
        denial: Option<Denial>,
        /// How many denials this event stands for.
        count: u64,
    },
    /// A configuration reload was attempted.
    ConfigReloaded {
        /// Whether the new configuration is in force.
        ok: bool,
        /// Every error, when not.
        errors: Vec<ConfigError>,
    },
    /// An authenticated caller was refused (sampled).
    AccessDenied {
        /// Who (`cert:NAME`, `token:NAME`).
        identity: String,
        /// The call.
        call: String,
        /// The host a Remediation call named.
        host_id: Option<String>,
        /// The client's address.
        peer: String,
        /// Refusals this event stands for.
        count: u64,
    },
    /// The wall clock was checked, and perhaps found stepped.
    ClockChecked {
        /// `ahead` or `back`; absent without a step.
        step_direction: Option<&'static str>,
        /// How far it jumped, in seconds.
        step_seconds: Option<f64>,
        /// How it was found.
        detail: String,
        /// When.
        at: Option<String>,
    },
    /// A permit request began to wait for a human's approval.
    ApprovalRequested {
        /// The approval, as requested (pending).
        approval: super::Approval,
    },
    /// An approval changed state.
    ApprovalChanged {
        /// Which approval.
        approval_id: u64,
        /// Its host.
        host_id: String,
        /// `approved`, `rejected`, `expired`, `withdrawn` or `used`.
        state: String,
        /// Who (`coordinator` for expiries, withdrawals and uses).
        actor: String,
        /// Why.
        reason: String,
        /// Approved: until when it may be used; rejected: until when the
        /// rejection holds.
        expires_at: Option<String>,
        /// Used: the permit granted with it.
        permit_id: Option<String>,
        /// When.
        at: Option<String>,
    },
    /// An alert gate closed or opened for a failure domain or the fleet.
    GateChanged {
        /// The gate's name.
        gate: String,
        /// Its label (per-domain gates), or null.
        label: Option<String>,
        /// The label's value, or null for a fleet-wide gate.
        value: Option<String>,
        /// Closed (holding requests back) or open again.
        closed: bool,
        /// The firing series, or the error.
        detail: String,
        /// When.
        at: Option<String>,
    },
    /// A payload this medicctl does not know (a newer coordinator).
    Unknown,
}

impl From<&pb::Event> for Event {
    fn from(e: &pb::Event) -> Self {
        use pb::event::Payload as P;
        let payload = match &e.payload {
            Some(P::PermitGranted(g)) => match &g.permit {
                Some(p) => Payload::PermitGranted {
                    permit: Permit::from(p),
                },
                None => Payload::Unknown,
            },
            Some(P::PermitRenewed(r)) => Payload::PermitRenewed {
                permit_id: r.permit_id.clone(),
                expires_at: time(r.expires_at.as_ref()),
                at: time(r.at.as_ref()),
            },
            Some(P::PermitEnded(x)) => Payload::PermitEnded {
                permit_id: x.permit_id.clone(),
                host_id: x.host_id.clone(),
                action: action_name(x.action, &x.action_name),
                state: permit_state(x.state),
                actor: x.actor.clone(),
                detail: x.detail.clone(),
                at: time(x.at.as_ref()),
            },
            Some(P::HostQuarantined(q)) => Payload::HostQuarantined {
                quarantine: Quarantine::from(q),
            },
            Some(P::HostReleased(r)) => Payload::HostReleased {
                host_id: r.host_id.clone(),
                actor: r.actor.clone(),
                reason: r.reason.clone(),
                at: time(r.at.as_ref()),
            },
            Some(P::Paused(p)) => Payload::Paused {
                pause: Pause::from(p),
            },
            Some(P::Resumed(r)) => Payload::Resumed {
                pause: r.pause.as_ref().map(Pause::from),
                actor: r.actor.clone(),
                reason: r.reason.clone(),
                at: time(r.at.as_ref()),
            },
            Some(P::BreakerOpened(b)) => Payload::BreakerOpened {
                breaker: Breaker::from(b),
            },
            Some(P::GateChanged(g)) => Payload::GateChanged {
                gate: g.gate.clone(),
                label: (!g.label.is_empty()).then(|| g.label.clone()),
                value: (!g.value.is_empty()).then(|| g.value.clone()),
                closed: g.closed,
                detail: g.detail.clone(),
                at: time(g.at.as_ref()),
            },
            Some(P::ApprovalRequested(a)) => Payload::ApprovalRequested {
                approval: super::Approval::from(a),
            },
            Some(P::ApprovalChanged(c)) => Payload::ApprovalChanged {
                approval_id: c.approval_id,
                host_id: c.host_id.clone(),
                state: super::approval_state(c.state),
                actor: c.actor.clone(),
                reason: c.reason.clone(),
                expires_at: time(c.expires_at.as_ref()),
                permit_id: (!c.permit_id.is_empty()).then(|| c.permit_id.clone()),
                at: time(c.at.as_ref()),
            },
            Some(P::OverrideSet(o)) => Payload::OverrideSet {
                r#override: super::Override::from(o),
            },
            Some(P::OverrideEnded(x)) => Payload::OverrideEnded {
                r#override: x.r#override.as_ref().map(super::Override::from),
                actor: x.actor.clone(),
                reason: x.reason.clone(),
                at: time(x.at.as_ref()),
            },
            Some(P::BreakerHalfOpened(b)) => Payload::BreakerHalfOpened {
                scope: breaker_scope(b.scope.as_ref()),
                actor: b.actor.clone(),
                reason: b.reason.clone(),
                at: time(b.at.as_ref()),
            },
            Some(P::BreakerClosed(b)) => Payload::BreakerClosed {
                scope: breaker_scope(b.scope.as_ref()),
                actor: b.actor.clone(),
                reason: b.reason.clone(),
                at: time(b.at.as_ref()),
            },
            Some(P::Denied(d)) => Payload::Denied {
                host_id: d.host_id.clone(),
                action: action_name(d.action, &d.action_name),
                denial: d.denial.as_ref().map(Denial::from),
                count: d.count,
            },
            Some(P::ConfigReloaded(c)) => Payload::ConfigReloaded {
                ok: c.ok,
                errors: c.errors.iter().map(ConfigError::from).collect(),
            },
            Some(P::AccessDenied(a)) => Payload::AccessDenied {
                identity: a.identity.clone(),
                call: a.call.clone(),
                host_id: non_empty(&a.host_id),
                peer: a.peer.clone(),
                count: a.count,
            },
            Some(P::ClockChecked(c)) => Payload::ClockChecked {
                step_direction: c.step.as_ref().map(|s| step_direction(s.forward)),
                step_seconds: c.step.as_ref().and_then(|s| seconds(s.by.as_ref())),
                detail: c.detail.clone(),
                at: time(c.at.as_ref()),
            },
            None => Payload::Unknown,
        };
        Event {
            id: e.id,
            time: time(e.time.as_ref()),
            kind: event_kind(e.kind),
            actor: non_empty(&e.actor),
            host_id: non_empty(&e.host_id),
            reason: e.reason.clone(),
            payload,
        }
    }
}
