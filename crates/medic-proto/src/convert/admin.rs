//! The operator API's types: scopes, pauses, quarantines, breakers, status,
//! hosts, explanations.

use medic_policy::{
    ActionStatus, Approval, ApprovalState, BreakerCause, BreakerScope, BreakerTrip, Explanation,
    HalfOpen, HostView, InvalidInput, Override, OverrideLimit, Pause, Quarantine, QuarantineCause,
    Scope, Status,
};

use super::{
    action_from_wire, enum_conversions, host_id, labels, non_empty, optional_msg, optional_time,
    permit_id, positive_duration, repeated, required_action, required_enum, required_msg,
    required_time, to_duration, to_timestamp, wire_action, wire_enum,
};
use crate::pb::v1 as pb;

// === Enums ===

enum_conversions!(QuarantineCause, pb::QuarantineCause, "cause", {
    Manual <=> Manual,
    AttemptBudget <=> AttemptBudget,
    PermitExpired <=> PermitExpired,
    GaveUp <=> GaveUp,
});

enum_conversions!(BreakerCause, pb::BreakerCause, "cause", {
    UnhealthyFraction <=> UnhealthyFraction,
    FailureFraction <=> FailureFraction,
    LivenessDrop <=> LivenessDrop,
    ProbeFailed <=> ProbeFailed,
});

// === impl Scope ===

impl From<Scope> for pb::Scope {
    fn from(s: Scope) -> Self {
        Self {
            selector: s.selector,
            action: s.action.map_or(0, wire_action),
            action_name: s.action.map_or_else(String::new, |a| a.as_str().to_owned()),
        }
    }
}

impl TryFrom<pb::Scope> for Scope {
    type Error = InvalidInput;

    fn try_from(s: pb::Scope) -> Result<Self, InvalidInput> {
        Ok(Self {
            selector: labels("selector", s.selector)?,
            action: action_from_wire("action", s.action, &s.action_name)?,
        })
    }
}

/// A scope field whose absence means the whole fleet.
pub(crate) fn scope_or_fleet(field: &str, s: Option<pb::Scope>) -> Result<Scope, InvalidInput> {
    Ok(optional_msg(field, s)?.unwrap_or_default())
}

// === impl Pause ===

impl From<Pause> for pb::Pause {
    fn from(p: Pause) -> Self {
        Self {
            pause_id: p.id,
            scope: Some(p.scope.into()),
            actor: p.actor,
            reason: p.reason,
            since: Some(to_timestamp(p.since)),
            until: p.until.map(to_timestamp),
        }
    }
}

impl TryFrom<pb::Pause> for Pause {
    type Error = InvalidInput;

    fn try_from(p: pb::Pause) -> Result<Self, InvalidInput> {
        if p.pause_id == 0 {
            return Err(InvalidInput::new("pause_id", "must be set"));
        }
        Ok(Self {
            id: p.pause_id,
            scope: scope_or_fleet("scope", p.scope)?,
            actor: p.actor,
            reason: p.reason,
            since: required_time("since", p.since)?,
            until: optional_time("until", p.until)?,
        })
    }
}

// === impl Override ===

enum_conversions!(OverrideLimit, pb::OverrideLimit, "limit", {
    MaxInFlight <=> MaxInFlight,
    RateCount <=> RateCount,
});

impl From<Override> for pb::Override {
    fn from(o: Override) -> Self {
        Self {
            override_id: o.id,
            action: wire_action(o.action),
            action_name: o.action.as_str().to_owned(),
            limit: wire_enum::<pb::OverrideLimit, _>(o.limit),
            value: o.value,
            actor: o.actor,
            reason: o.reason,
            since: Some(to_timestamp(o.since)),
            until: Some(to_timestamp(o.until)),
        }
    }
}

impl TryFrom<pb::Override> for Override {
    type Error = InvalidInput;

    fn try_from(o: pb::Override) -> Result<Self, InvalidInput> {
        if o.override_id == 0 {
            return Err(InvalidInput::new("override_id", "must be set"));
        }
        Ok(Self {
            id: o.override_id,
            action: required_action("action", o.action, &o.action_name)?,
            limit: required_enum::<pb::OverrideLimit, _>("limit", o.limit)?,
            value: o.value,
            actor: o.actor,
            reason: o.reason,
            since: required_time("since", o.since)?,
            until: required_time("until", o.until)?,
        })
    }
}

// === impl Approval ===

enum_conversions!(ApprovalState, pb::ApprovalState, "state", {
    Pending <=> Pending,
    Approved <=> Approved,
    Rejected <=> Rejected,
    Expired <=> Expired,
    Withdrawn <=> Withdrawn,
    Used <=> Used,
});

impl From<Approval> for pb::Approval {
    fn from(a: Approval) -> Self {
        Self {
            approval_id: a.id,
            request_id: a.request_id.as_str().to_owned(),
            host_id: a.host.as_str().to_owned(),
            action: wire_action(a.action),
            action_name: a.action.as_str().to_owned(),
            job: a.job,
            reason: a.reason,
            dry_run: a.dry_run,
            why: a.why,
            requested_at: Some(to_timestamp(a.requested_at)),
            expires_at: Some(to_timestamp(a.expires_at)),
            state: wire_enum::<pb::ApprovalState, _>(a.state),
            actor: a.actor,
            decision: a.decision,
            decided_at: a.decided_at.map(to_timestamp),
            permit_id: a.permit.map(|p| p.as_str().to_owned()).unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::Approval> for Approval {
    type Error = InvalidInput;

    fn try_from(a: pb::Approval) -> Result<Self, InvalidInput> {
        if a.approval_id == 0 {
            return Err(InvalidInput::new("approval_id", "must be set"));
        }
        Ok(Self {
            id: a.approval_id,
            request_id: super::agent::request_id("request_id", a.request_id)?,
            host: host_id("host_id", a.host_id)?,
            action: required_action("action", a.action, &a.action_name)?,
            job: a.job,
            reason: a.reason,
            dry_run: a.dry_run,
            why: a.why,
            requested_at: required_time("requested_at", a.requested_at)?,
            expires_at: required_time("expires_at", a.expires_at)?,
            state: required_enum::<pb::ApprovalState, _>("state", a.state)?,
            actor: a.actor,
            decision: a.decision,
            decided_at: optional_time("decided_at", a.decided_at)?,
            permit: if a.permit_id.is_empty() {
                None
            } else {
                Some(permit_id("permit_id", a.permit_id)?)
            },
        })
    }
}

// === impl Quarantine ===

impl From<Quarantine> for pb::Quarantine {
    fn from(q: Quarantine) -> Self {
        Self {
            host_id: q.host.as_str().to_owned(),
            cause: wire_enum::<pb::QuarantineCause, _>(q.cause),
            actor: q.actor,
            reason: q.reason,
            since: Some(to_timestamp(q.since)),
        }
    }
}

impl TryFrom<pb::Quarantine> for Quarantine {
    type Error = InvalidInput;

    fn try_from(q: pb::Quarantine) -> Result<Self, InvalidInput> {
        Ok(Self {
            host: host_id("host_id", q.host_id)?,
            cause: required_enum::<pb::QuarantineCause, _>("cause", q.cause)?,
            actor: q.actor,
            reason: q.reason,
            since: required_time("since", q.since)?,
        })
    }
}

// === impl BreakerScope ===

impl From<BreakerScope> for pb::BreakerScope {
    fn from(s: BreakerScope) -> Self {
        use pb::breaker_scope::{Domain, Fleet, Kind};
        let kind = match s {
            BreakerScope::Fleet => Kind::Fleet(Fleet {}),
            BreakerScope::Domain { label, value } => Kind::Domain(Domain { label, value }),
        };
        Self { kind: Some(kind) }
    }
}

impl TryFrom<pb::BreakerScope> for BreakerScope {
    type Error = InvalidInput;

    fn try_from(s: pb::BreakerScope) -> Result<Self, InvalidInput> {
        use pb::breaker_scope::Kind;
        match s.kind {
            None => Err(InvalidInput::new("kind", "must be set (fleet or domain)")),
            Some(Kind::Fleet(_)) => Ok(BreakerScope::Fleet),
            Some(Kind::Domain(d)) => Ok(BreakerScope::Domain {
                label: non_empty("domain.label", d.label)?,
                value: non_empty("domain.value", d.value)?,
            }),
        }
    }
}

// === impl BreakerTrip ===

impl From<BreakerTrip> for pb::BreakerTrip {
    fn from(t: BreakerTrip) -> Self {
        Self {
            scope: Some(t.scope.into()),
            cause: wire_enum::<pb::BreakerCause, _>(t.cause),
            since: Some(to_timestamp(t.since)),
            detail: t.detail,
            half_open: t.half_open.map(|h| pb::HalfOpen {
                since: Some(to_timestamp(h.since)),
                actor: h.actor,
                reason: h.reason,
                successes: h.successes,
            }),
        }
    }
}

impl TryFrom<pb::BreakerTrip> for BreakerTrip {
    type Error = InvalidInput;

    fn try_from(t: pb::BreakerTrip) -> Result<Self, InvalidInput> {
        Ok(Self {
            scope: required_msg("scope", t.scope)?,
            cause: required_enum::<pb::BreakerCause, _>("cause", t.cause)?,
            since: required_time("since", t.since)?,
            detail: t.detail,
            half_open: t
                .half_open
                .map(|h| {
                    Ok::<_, InvalidInput>(HalfOpen {
                        since: required_time("half_open.since", h.since)?,
                        actor: h.actor,
                        reason: h.reason,
                        successes: h.successes,
                    })
                })
                .transpose()?,
        })
    }
}

// === impl Status ===

impl From<Status> for pb::Status {
    fn from(s: Status) -> Self {
        Self {
            dry_run: s.dry_run,
            warming_up_until: s.warming_up_until.map(to_timestamp),
            known_hosts: s.known_hosts,
            live_hosts: s.live_hosts,
            unhealthy_hosts: s.unhealthy_hosts,
            silent_hosts: s.silent_hosts,
            quarantined_hosts: s.quarantined_hosts,
            min_fleet_size: s.min_fleet_size,
            pauses: s.pauses.into_iter().map(Into::into).collect(),
            overrides: s.overrides.into_iter().map(Into::into).collect(),
            approvals: s.approvals.into_iter().map(Into::into).collect(),
            breakers: s.breakers.into_iter().map(Into::into).collect(),
            actions: s.actions.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::Status> for Status {
    type Error = InvalidInput;

    fn try_from(s: pb::Status) -> Result<Self, InvalidInput> {
        Ok(Self {
            dry_run: s.dry_run,
            warming_up_until: optional_time("warming_up_until", s.warming_up_until)?,
            known_hosts: s.known_hosts,
            live_hosts: s.live_hosts,
            unhealthy_hosts: s.unhealthy_hosts,
            silent_hosts: s.silent_hosts,
            quarantined_hosts: s.quarantined_hosts,
            min_fleet_size: s.min_fleet_size,
            pauses: repeated("pauses", s.pauses)?,
            overrides: repeated("overrides", s.overrides)?,
            approvals: repeated("approvals", s.approvals)?,
            breakers: repeated("breakers", s.breakers)?,
            actions: repeated("actions", s.actions)?,
        })
    }
}

impl From<ActionStatus> for pb::ActionStatus {
    fn from(a: ActionStatus) -> Self {
        Self {
            action: wire_action(a.action),
            action_name: a.action.as_str().to_owned(),
            active: a.active,
            effective_cap: a.effective_cap,
            rate_limit: a.rate_limit,
            rate_per: Some(to_duration(a.rate_per)),
            rate_used: a.rate_used,
            rate_next_at: a.rate_next_at.map(to_timestamp),
            in_window: a.in_window,
            dry_run: a.dry_run,
        }
    }
}

impl TryFrom<pb::ActionStatus> for ActionStatus {
    type Error = InvalidInput;

    fn try_from(a: pb::ActionStatus) -> Result<Self, InvalidInput> {
        Ok(Self {
            action: required_action("action", a.action, &a.action_name)?,
            active: a.active,
            effective_cap: a.effective_cap,
            rate_limit: a.rate_limit,
            rate_per: positive_duration("rate_per", a.rate_per)?,
            rate_used: a.rate_used,
            rate_next_at: optional_time("rate_next_at", a.rate_next_at)?,
            in_window: a.in_window,
            dry_run: a.dry_run,
        })
    }
}

// === impl HostView ===

impl From<HostView> for pb::Host {
    fn from(h: HostView) -> Self {
        Self {
            host_id: h.host.as_str().to_owned(),
            labels: h.labels,
            agent_version: h.agent_version,
            live: h.live,
            unhealthy: h.unhealthy,
            silent_since: h.silent_since.map(to_timestamp),
            state_error: h.state_error.unwrap_or_default(),
            last_heartbeat: h.last_heartbeat.map(to_timestamp),
            problems: h.problems.into_iter().map(Into::into).collect(),
            active_permit_id: h
                .active_permit
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            quarantine: h.quarantine.map(Into::into),
        }
    }
}

impl TryFrom<pb::Host> for HostView {
    type Error = InvalidInput;

    fn try_from(h: pb::Host) -> Result<Self, InvalidInput> {
        let active_permit = if h.active_permit_id.is_empty() {
            None
        } else {
            Some(permit_id("active_permit_id", h.active_permit_id)?)
        };
        Ok(Self {
            host: host_id("host_id", h.host_id)?,
            labels: labels("labels", h.labels)?,
            agent_version: h.agent_version,
            live: h.live,
            unhealthy: h.unhealthy,
            silent_since: optional_time("silent_since", h.silent_since)?,
            state_error: Some(h.state_error).filter(|e| !e.is_empty()),
            last_heartbeat: optional_time("last_heartbeat", h.last_heartbeat)?,
            problems: repeated("problems", h.problems)?,
            active_permit,
            quarantine: optional_msg("quarantine", h.quarantine)?,
        })
    }
}

// === impl Explanation ===

impl From<Explanation> for pb::ExplainResponse {
    fn from(e: Explanation) -> Self {
        Self {
            host_id: e.host.as_str().to_owned(),
            action: wire_action(e.action),
            action_name: e.action.as_str().to_owned(),
            would_grant: e.would_grant(),
            denials: e.denials.into_iter().map(Into::into).collect(),
            notes: e.notes,
        }
    }
}

/// Field paths start with `response.`.
impl TryFrom<pb::ExplainResponse> for Explanation {
    type Error = InvalidInput;

    fn try_from(e: pb::ExplainResponse) -> Result<Self, InvalidInput> {
        let explanation = || -> Result<Self, InvalidInput> {
            let denials = repeated("denials", e.denials)?;
            if e.would_grant != denials.is_empty() {
                return Err(InvalidInput::new(
                    "would_grant",
                    format!(
                        "is {} but {} denials are listed; it must be true exactly when denials is empty",
                        e.would_grant,
                        denials.len()
                    ),
                ));
            }
            Ok(Self {
                host: host_id("host_id", e.host_id)?,
                action: required_action("action", e.action, &e.action_name)?,
                denials,
                notes: e.notes,
            })
        };
        explanation().map_err(|e| e.within("response"))
    }
}
