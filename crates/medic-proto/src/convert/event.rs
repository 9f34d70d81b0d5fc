//! Audit events: medic-policy's [`Event`]s, plus the two records only the
//! coordinator writes (sampled denials and config reloads).

use std::time::SystemTime;

use medic_policy::{
    Action, COORDINATOR_ACTOR, ClockMark, ClockStep, Denial, Event, HostId, InvalidInput,
    PermitState, RecordKind, host_actor,
};

use super::{
    host_id, non_empty, optional_time, permit_id, required, required_action, required_duration,
    required_enum, required_msg, required_time, to_duration, to_timestamp, wire_action, wire_enum,
};
use crate::pb::v1 as pb;
use pb::event::Payload;

// === impl EventKind ===

/// The kind a policy event is filed under ([`Event::kind`]).
impl From<&Event> for pb::EventKind {
    fn from(e: &Event) -> Self {
        e.kind().into()
    }
}

impl From<RecordKind> for pb::EventKind {
    fn from(k: RecordKind) -> Self {
        match k {
            RecordKind::Grant => Self::Grant,
            RecordKind::Deny => Self::Deny,
            RecordKind::Outcome => Self::Outcome,
            RecordKind::Admin => Self::Admin,
            RecordKind::Breaker => Self::Breaker,
            RecordKind::Quarantine => Self::Quarantine,
            RecordKind::Pause => Self::Pause,
            RecordKind::Config => Self::Config,
            RecordKind::Renew => Self::Renew,
            RecordKind::Access => Self::Access,
            RecordKind::Clock => Self::Clock,
            RecordKind::Override => Self::Override,
            RecordKind::Approval => Self::Approval,
            RecordKind::Gate => Self::Gate,
        }
    }
}

/// The history kind a filter names; `None` for UNSPECIFIED.
pub fn record_kind(k: pb::EventKind) -> Option<RecordKind> {
    Some(match k {
        pb::EventKind::Unspecified => return None,
        pb::EventKind::Grant => RecordKind::Grant,
        pb::EventKind::Deny => RecordKind::Deny,
        pb::EventKind::Outcome => RecordKind::Outcome,
        pb::EventKind::Admin => RecordKind::Admin,
        pb::EventKind::Breaker => RecordKind::Breaker,
        pb::EventKind::Quarantine => RecordKind::Quarantine,
        pb::EventKind::Pause => RecordKind::Pause,
        pb::EventKind::Config => RecordKind::Config,
        pb::EventKind::Renew => RecordKind::Renew,
        pb::EventKind::Access => RecordKind::Access,
        pb::EventKind::Clock => RecordKind::Clock,
        pb::EventKind::Override => RecordKind::Override,
        pb::EventKind::Approval => RecordKind::Approval,
        pb::EventKind::Gate => RecordKind::Gate,
    })
}

// === impl Event ===

impl pb::Event {
    /// The history entry `id` recording a policy event, with the envelope
    /// (time, kind, actor, host, reason) filled from the event.
    ///
    /// A renewal records neither actor nor host (the policy event does not
    /// carry them); the coordinator may fill them in.
    pub fn from_policy(id: u64, event: Event) -> Self {
        let kind = pb::EventKind::from(&event);
        let time = Some(to_timestamp(event.at()));
        let host_id = event
            .host()
            .map(|h| h.as_str().to_owned())
            .unwrap_or_default();
        let (actor, reason) = match &event {
            Event::PermitGranted { permit } => (host_actor(&permit.host), permit.reason.clone()),
            Event::PermitRenewed { .. } => (String::new(), String::new()),
            Event::PermitEnded { actor, detail, .. } => (actor.clone(), detail.clone()),
            Event::HostQuarantined(q) => (q.actor.clone(), q.reason.clone()),
            Event::Paused(p) => (p.actor.clone(), p.reason.clone()),
            Event::OverrideSet(o) => (o.actor.clone(), o.reason.clone()),
            Event::OverrideEnded { actor, reason, .. } => (actor.clone(), reason.clone()),
            Event::ApprovalRequested(a) => (host_actor(&a.host), a.why.clone()),
            Event::ApprovalChanged { actor, reason, .. } => (actor.clone(), reason.clone()),
            Event::GateChanged { detail, .. } => (COORDINATOR_ACTOR.to_owned(), detail.clone()),
            Event::HostReleased { actor, reason, .. }
            | Event::Resumed { actor, reason, .. }
            | Event::BreakerHalfOpened { actor, reason, .. }
            | Event::BreakerClosed { actor, reason, .. } => (actor.clone(), reason.clone()),
            Event::BreakerOpened(t) => (COORDINATOR_ACTOR.to_owned(), t.detail.clone()),
            Event::ClockChecked { step, detail, .. } => (
                COORDINATOR_ACTOR.to_owned(),
                match step {
                    Some(step) => format!("wall clock stepped {step}: {detail}"),
                    None => detail.clone(),
                },
            ),
        };
        Self {
            id,
            time,
            kind: kind.into(),
            actor,
            host_id,
            reason,
            payload: Some(event.into()),
        }
    }

    /// The history entry `id` sampling denials: `count` denials of `action`
    /// to `host` (this one included) since the previous sample, the last of
    /// which, at `at`, was `denial`.
    pub fn denied(
        id: u64,
        at: SystemTime,
        host: &HostId,
        action: Action,
        denial: Denial,
        count: u64,
    ) -> Self {
        Self {
            id,
            time: Some(to_timestamp(at)),
            kind: pb::EventKind::Deny.into(),
            actor: host_actor(host),
            host_id: host.as_str().to_owned(),
            reason: denial.message.clone(),
            payload: Some(Payload::Denied(pb::event::Denied {
                host_id: host.as_str().to_owned(),
                action: wire_action(action),
                action_name: action.as_str().to_owned(),
                denial: Some(denial.into()),
                count,
            })),
        }
    }

    /// The history entry `id` recording `count` refusals of `call` to an
    /// authenticated `identity`, the latest at `at`.
    #[allow(clippy::too_many_arguments)]
    pub fn access_denied(
        id: u64,
        at: SystemTime,
        identity: String,
        call: String,
        host: Option<HostId>,
        peer: String,
        reason: String,
        count: u64,
    ) -> Self {
        let host_id = host.map(|h| h.as_str().to_owned()).unwrap_or_default();
        Self {
            id,
            time: Some(to_timestamp(at)),
            kind: pb::EventKind::Access.into(),
            actor: identity.clone(),
            host_id: host_id.clone(),
            reason,
            payload: Some(Payload::AccessDenied(pb::event::AccessDenied {
                identity,
                call,
                host_id,
                peer,
                count,
            })),
        }
    }

    /// The history entry `id` recording a configuration reload at `at`,
    /// asked for by `actor` for `reason`. It applied exactly when `errors` is
    /// empty.
    pub fn config_reloaded(
        id: u64,
        at: SystemTime,
        actor: String,
        reason: String,
        errors: Vec<pb::ConfigError>,
    ) -> Self {
        Self {
            id,
            time: Some(to_timestamp(at)),
            kind: pb::EventKind::Config.into(),
            actor,
            host_id: String::new(),
            reason,
            payload: Some(Payload::ConfigReloaded(pb::event::ConfigReloaded {
                ok: errors.is_empty(),
                errors,
            })),
        }
    }
}

impl From<Event> for Payload {
    fn from(e: Event) -> Self {
        use pb::event as w;
        match e {
            Event::PermitGranted { permit } => Payload::PermitGranted(w::PermitGranted {
                permit: Some(permit.into()),
            }),
            Event::PermitRenewed { id, expires_at, at } => {
                Payload::PermitRenewed(w::PermitRenewed {
                    permit_id: id.as_str().to_owned(),
                    expires_at: Some(to_timestamp(expires_at)),
                    at: Some(to_timestamp(at)),
                })
            }
            Event::PermitEnded {
                id,
                host,
                action,
                state,
                actor,
                detail,
                at,
            } => Payload::PermitEnded(w::PermitEnded {
                permit_id: id.as_str().to_owned(),
                host_id: host.as_str().to_owned(),
                action: wire_action(action),
                action_name: action.as_str().to_owned(),
                state: wire_enum::<pb::PermitState, _>(state),
                actor,
                detail,
                at: Some(to_timestamp(at)),
            }),
            Event::HostQuarantined(q) => Payload::HostQuarantined(q.into()),
            Event::HostReleased {
                host,
                actor,
                reason,
                at,
            } => Payload::HostReleased(w::HostReleased {
                host_id: host.as_str().to_owned(),
                actor,
                reason,
                at: Some(to_timestamp(at)),
            }),
            Event::Paused(p) => Payload::Paused(p.into()),
            Event::Resumed {
                pause,
                actor,
                reason,
                at,
            } => Payload::Resumed(w::Resumed {
                pause: Some(pause.into()),
                actor,
                reason,
                at: Some(to_timestamp(at)),
            }),
            Event::BreakerOpened(t) => Payload::BreakerOpened(t.into()),
            Event::OverrideSet(o) => Payload::OverrideSet(o.into()),
            Event::ApprovalRequested(a) => Payload::ApprovalRequested(a.into()),
            Event::GateChanged {
                gate,
                label,
                value,
                closed,
                detail,
                at,
            } => Payload::GateChanged(w::GateChanged {
                gate,
                label: label.unwrap_or_default(),
                value: value.unwrap_or_default(),
                closed,
                detail,
                at: Some(to_timestamp(at)),
            }),
            Event::ApprovalChanged {
                id,
                host,
                state,
                actor,
                reason,
                expires_at,
                permit,
                at,
            } => Payload::ApprovalChanged(w::ApprovalChanged {
                approval_id: id,
                host_id: host.as_str().to_owned(),
                state: wire_enum::<pb::ApprovalState, _>(state),
                actor,
                reason,
                expires_at: expires_at.map(to_timestamp),
                permit_id: permit.map(|p| p.as_str().to_owned()).unwrap_or_default(),
                at: Some(to_timestamp(at)),
            }),
            Event::OverrideEnded {
                over,
                actor,
                reason,
                at,
            } => Payload::OverrideEnded(w::OverrideEnded {
                r#override: Some(over.into()),
                actor,
                reason,
                at: Some(to_timestamp(at)),
            }),
            Event::BreakerHalfOpened {
                scope,
                actor,
                reason,
                at,
            } => Payload::BreakerHalfOpened(w::BreakerHalfOpened {
                scope: Some(scope.into()),
                actor,
                reason,
                at: Some(to_timestamp(at)),
            }),
            Event::BreakerClosed {
                scope,
                actor,
                reason,
                at,
            } => Payload::BreakerClosed(w::BreakerClosed {
                scope: Some(scope.into()),
                actor,
                reason,
                at: Some(to_timestamp(at)),
            }),
            Event::ClockChecked {
                step,
                detail,
                mark,
                at,
            } => Payload::ClockChecked(w::ClockChecked {
                step: step.map(|s| w::ClockStep {
                    forward: s.forward,
                    by: Some(to_duration(s.by)),
                }),
                detail,
                mark_wall: Some(to_timestamp(mark.wall)),
                mark_since_boot: Some(to_duration(mark.since_boot)),
                mark_boot: mark.boot,
                at: Some(to_timestamp(at)),
            }),
        }
    }
}

/// Fails for the payloads that are not policy events (`denied`,
/// `config_reloaded`, `access_denied`). Field paths start with the payload's name
/// (`permit_granted.permit.ttl`).
impl TryFrom<Payload> for Event {
    type Error = InvalidInput;

    fn try_from(p: Payload) -> Result<Self, InvalidInput> {
        let (name, result) = match p {
            Payload::PermitGranted(g) => (
                "permit_granted",
                required_msg("permit", g.permit).map(|permit| Event::PermitGranted { permit }),
            ),
            Payload::PermitRenewed(r) => ("permit_renewed", permit_renewed(r)),
            Payload::PermitEnded(e) => ("permit_ended", permit_ended(e)),
            Payload::HostQuarantined(q) => {
                ("host_quarantined", q.try_into().map(Event::HostQuarantined))
            }
            Payload::HostReleased(r) => ("host_released", host_released(r)),
            Payload::Paused(p) => ("paused", p.try_into().map(Event::Paused)),
            Payload::Resumed(r) => ("resumed", resumed(r)),
            Payload::BreakerOpened(t) => ("breaker_opened", t.try_into().map(Event::BreakerOpened)),
            Payload::BreakerClosed(c) => ("breaker_closed", breaker_closed(c)),
            Payload::BreakerHalfOpened(h) => ("breaker_half_opened", breaker_half_opened(h)),
            Payload::ClockChecked(c) => ("clock_checked", clock_checked(c)),
            Payload::OverrideSet(o) => ("override_set", o.try_into().map(Event::OverrideSet)),
            Payload::OverrideEnded(e) => ("override_ended", override_ended(e)),
            Payload::ApprovalRequested(a) => (
                "approval_requested",
                a.try_into().map(Event::ApprovalRequested),
            ),
            Payload::ApprovalChanged(c) => ("approval_changed", approval_changed(c)),
            Payload::GateChanged(g) => ("gate_changed", gate_changed(g)),
            Payload::Denied(_) => return Err(not_a_policy_event("denied")),
            Payload::ConfigReloaded(_) => return Err(not_a_policy_event("config_reloaded")),
            Payload::AccessDenied(_) => return Err(not_a_policy_event("access_denied")),
        };
        result.map_err(|e| e.within(name))
    }
}

/// Converts the payload; the envelope (a summary of the payload) is not read.
impl TryFrom<pb::Event> for Event {
    type Error = InvalidInput;

    fn try_from(e: pb::Event) -> Result<Self, InvalidInput> {
        Event::try_from(required("payload", e.payload)?)
    }
}

fn not_a_policy_event(name: &str) -> InvalidInput {
    InvalidInput::new(name, "is a coordinator record, not a decision-engine event")
}

fn permit_renewed(r: pb::event::PermitRenewed) -> Result<Event, InvalidInput> {
    Ok(Event::PermitRenewed {
        id: permit_id("permit_id", r.permit_id)?,
        expires_at: required_time("expires_at", r.expires_at)?,
        at: required_time("at", r.at)?,
    })
}

fn permit_ended(e: pb::event::PermitEnded) -> Result<Event, InvalidInput> {
    let state: PermitState = required_enum::<pb::PermitState, _>("state", e.state)?;
    if !state.is_final() {
        return Err(InvalidInput::new(
            "state",
            "must be a final state, got active",
        ));
    }
    Ok(Event::PermitEnded {
        id: permit_id("permit_id", e.permit_id)?,
        host: host_id("host_id", e.host_id)?,
        action: required_action("action", e.action, &e.action_name)?,
        state,
        actor: e.actor,
        detail: e.detail,
        at: required_time("at", e.at)?,
    })
}

fn host_released(r: pb::event::HostReleased) -> Result<Event, InvalidInput> {
    Ok(Event::HostReleased {
        host: host_id("host_id", r.host_id)?,
        actor: r.actor,
        reason: r.reason,
        at: required_time("at", r.at)?,
    })
}

fn resumed(r: pb::event::Resumed) -> Result<Event, InvalidInput> {
    Ok(Event::Resumed {
        pause: required_msg("pause", r.pause)?,
        actor: r.actor,
        reason: r.reason,
        at: required_time("at", r.at)?,
    })
}

fn gate_changed(g: pb::event::GateChanged) -> Result<Event, InvalidInput> {
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok(Event::GateChanged {
        gate: non_empty("gate", g.gate)?,
        label: some(g.label),
        value: some(g.value),
        closed: g.closed,
        detail: g.detail,
        at: required_time("at", g.at)?,
    })
}

fn approval_changed(c: pb::event::ApprovalChanged) -> Result<Event, InvalidInput> {
    if c.approval_id == 0 {
        return Err(InvalidInput::new("approval_id", "must be set"));
    }
    Ok(Event::ApprovalChanged {
        id: c.approval_id,
        host: host_id("host_id", c.host_id)?,
        state: required_enum::<pb::ApprovalState, _>("state", c.state)?,
        actor: c.actor,
        reason: c.reason,
        expires_at: optional_time("expires_at", c.expires_at)?,
        permit: if c.permit_id.is_empty() {
            None
        } else {
            Some(permit_id("permit_id", c.permit_id)?)
        },
        at: required_time("at", c.at)?,
    })
}

fn override_ended(e: pb::event::OverrideEnded) -> Result<Event, InvalidInput> {
    Ok(Event::OverrideEnded {
        over: required_msg("override", e.r#override)?,
        actor: e.actor,
        reason: e.reason,
        at: required_time("at", e.at)?,
    })
}

fn breaker_closed(c: pb::event::BreakerClosed) -> Result<Event, InvalidInput> {
    Ok(Event::BreakerClosed {
        scope: required_msg("scope", c.scope)?,
        actor: c.actor,
        reason: c.reason,
        at: required_time("at", c.at)?,
    })
}

fn breaker_half_opened(h: pb::event::BreakerHalfOpened) -> Result<Event, InvalidInput> {
    Ok(Event::BreakerHalfOpened {
        scope: required_msg("scope", h.scope)?,
        actor: h.actor,
        reason: h.reason,
        at: required_time("at", h.at)?,
    })
}

fn clock_checked(c: pb::event::ClockChecked) -> Result<Event, InvalidInput> {
    let step = match c.step {
        None => None,
        Some(s) => Some(ClockStep {
            forward: s.forward,
            by: required_duration("step.by", s.by)?,
        }),
    };
    Ok(Event::ClockChecked {
        step,
        detail: c.detail,
        mark: ClockMark {
            wall: required_time("mark_wall", c.mark_wall)?,
            since_boot: required_duration("mark_since_boot", c.mark_since_boot)?,
            boot: c.mark_boot,
        },
        at: required_time("at", c.at)?,
    })
}
