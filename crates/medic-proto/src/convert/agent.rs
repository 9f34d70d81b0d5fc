//! The agent API's types: heartbeats, permit requests, permits, decisions.

use medic_policy::{
    Decision, Denial, DenyReason, FencingToken, Heartbeat, HeartbeatReply, InvalidInput, Outcome,
    Permit, PermitRef, PermitRequest, PermitState, Problem, RequestId, Waiting,
};

use super::{
    bounded, bounded_labels, check_count, check_len, enum_conversions, host_id, indexed, labels,
    must_be_set, non_empty, optional_duration, optional_enum, optional_msg, permit_id,
    positive_duration, renamed, required_action, required_enum, required_msg, required_text,
    required_time, to_duration, to_timestamp, wire_action, wire_enum,
};
use crate::limits::{
    MAX_AGENT_VERSION_LEN, MAX_DETECTOR_LEN, MAX_JOB_LEN, MAX_PROBLEM_DETAIL_LEN, MAX_PROBLEMS,
    MAX_REASON_LEN, check_visible, request_host_id,
};
use crate::pb::v1 as pb;

// === Enums ===

enum_conversions!(PermitState, pb::PermitState, "state", {
    Active <=> Active,
    Succeeded <=> Succeeded,
    Failed <=> Failed,
    Aborted <=> Aborted,
    DryRun <=> DryRun,
    Expired <=> Expired,
    Revoked <=> Revoked,
});

enum_conversions!(Outcome, pb::Outcome, "outcome", {
    Succeeded <=> Succeeded,
    Failed <=> Failed,
    Aborted <=> Aborted,
    DryRun <=> DryRun,
});

enum_conversions!(DenyReason, pb::DenyReason, "reason", {
    UnknownHost <=> UnknownHost,
    WarmingUp <=> WarmingUp,
    FleetTooSmall <=> FleetTooSmall,
    Paused <=> Paused,
    BreakerOpen <=> BreakerOpen,
    BreakerHalfOpen <=> BreakerHalfOpen,
    Quarantined <=> Quarantined,
    HostBusy <=> HostBusy,
    Cooldown <=> Cooldown,
    AttemptBudgetExhausted <=> AttemptBudgetExhausted,
    OutsideWindow <=> OutsideWindow,
    ConcurrencyCap <=> ConcurrencyCap,
    GroupCap <=> GroupCap,
    RateLimited <=> RateLimited,
    UnknownAction <=> UnknownAction,
    JobCap <=> JobCap,
    GateClosed <=> GateClosed,
    ApprovalRejected <=> ApprovalRejected,
});

// === impl Problem ===

impl From<Problem> for pb::Problem {
    fn from(p: Problem) -> Self {
        Self {
            job: p.job,
            detector: p.detector,
            since: Some(to_timestamp(p.since)),
            detail: p.detail,
        }
    }
}

impl TryFrom<pb::Problem> for Problem {
    type Error = InvalidInput;

    fn try_from(p: pb::Problem) -> Result<Self, InvalidInput> {
        Ok(Self {
            job: non_empty("job", p.job)?,
            detector: non_empty("detector", p.detector)?,
            since: required_time("since", p.since)?,
            detail: p.detail,
        })
    }
}

/// A heartbeat's problems: at most [`MAX_PROBLEMS`], each one's text
/// bounded, errors nested under `field[i]`.
fn bounded_problems(field: &str, problems: Vec<pb::Problem>) -> Result<Vec<Problem>, InvalidInput> {
    check_count(field, problems.len(), MAX_PROBLEMS, "problems")?;
    problems
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let checked = || -> Result<Problem, InvalidInput> {
                check_len("job", &p.job, MAX_JOB_LEN)?;
                check_len("detector", &p.detector, MAX_DETECTOR_LEN)?;
                check_visible("job", &p.job)?;
                check_visible("detector", &p.detector)?;
                check_len("detail", &p.detail, MAX_PROBLEM_DETAIL_LEN)?;
                Problem::try_from(p)
            };
            checked().map_err(|e| e.within(&indexed(field, i)))
        })
        .collect::<Result<Vec<Problem>, InvalidInput>>()
        .and_then(|problems| once_each(field, problems))
}

/// A heartbeat reports each (job, detector) at most once (the proto says
/// so): a second report of one would count twice wherever problems are
/// counted.
fn once_each(field: &str, problems: Vec<Problem>) -> Result<Vec<Problem>, InvalidInput> {
    let mut seen = std::collections::HashMap::with_capacity(problems.len());
    for (i, p) in problems.iter().enumerate() {
        if let Some(first) = seen.insert((p.job.as_str(), p.detector.as_str()), i) {
            return Err(InvalidInput::new(
                indexed(field, i),
                format!(
                    "job {:?}, detector {:?} is reported already as {}; a heartbeat reports \
                     each (job, detector) at most once",
                    p.job,
                    p.detector,
                    indexed(field, first)
                ),
            ));
        }
    }
    Ok(problems)
}

// === impl PermitRef ===

impl From<PermitRef> for pb::PermitRef {
    fn from(r: PermitRef) -> Self {
        Self {
            permit_id: r.id.as_str().to_owned(),
            fencing_token: r.token.0,
        }
    }
}

impl TryFrom<pb::PermitRef> for PermitRef {
    type Error = InvalidInput;

    fn try_from(r: pb::PermitRef) -> Result<Self, InvalidInput> {
        Ok(Self {
            id: permit_id("permit_id", r.permit_id)?,
            token: FencingToken(r.fencing_token),
        })
    }
}

// === impl Heartbeat ===

impl From<Heartbeat> for pb::HeartbeatRequest {
    fn from(h: Heartbeat) -> Self {
        Self {
            host_id: h.host.as_str().to_owned(),
            labels: h.labels,
            agent_version: h.agent_version,
            problems: h.problems.into_iter().map(Into::into).collect(),
            held_permit: h.held_permit.map(Into::into),
            needs_human: h.needs_human,
            state_error: h.state_error,
        }
    }
}

/// Field paths start with `heartbeat.`. Holds the heartbeat to
/// [`limits`](crate::limits).
impl TryFrom<pb::HeartbeatRequest> for Heartbeat {
    type Error = InvalidInput;

    fn try_from(h: pb::HeartbeatRequest) -> Result<Self, InvalidInput> {
        let heartbeat = || -> Result<Self, InvalidInput> {
            Ok(Self {
                host: request_host_id("host_id", h.host_id)?,
                labels: bounded_labels("labels", h.labels)?,
                agent_version: bounded("agent_version", h.agent_version, MAX_AGENT_VERSION_LEN)?,
                problems: bounded_problems("problems", h.problems)?,
                held_permit: optional_msg("held_permit", h.held_permit)?,
                needs_human: h
                    .needs_human
                    .map(|text| bounded("needs_human", text, MAX_REASON_LEN))
                    .transpose()?,
                state_error: h
                    .state_error
                    .map(|text| bounded("state_error", text, MAX_REASON_LEN))
                    .transpose()?,
            })
        };
        heartbeat().map_err(|e| e.within("heartbeat"))
    }
}

// === impl HeartbeatReply ===

impl From<HeartbeatReply> for pb::HeartbeatResponse {
    fn from(r: HeartbeatReply) -> Self {
        Self {
            heartbeat_interval: Some(to_duration(r.heartbeat_interval)),
            held_permit_state: r
                .held_permit_state
                .map_or(0, wire_enum::<pb::PermitState, _>),
            quarantine: r.quarantine.map(Into::into),
            dry_run: r.dry_run,
            wake: r.wake,
        }
    }
}

/// Field paths start with `response.`.
impl TryFrom<pb::HeartbeatResponse> for HeartbeatReply {
    type Error = InvalidInput;

    fn try_from(r: pb::HeartbeatResponse) -> Result<Self, InvalidInput> {
        let reply = || -> Result<Self, InvalidInput> {
            Ok(Self {
                heartbeat_interval: positive_duration("heartbeat_interval", r.heartbeat_interval)?,
                held_permit_state: optional_enum::<pb::PermitState, _>(
                    "held_permit_state",
                    r.held_permit_state,
                )?,
                quarantine: optional_msg("quarantine", r.quarantine)?,
                dry_run: r.dry_run,
                wake: r.wake,
            })
        };
        reply().map_err(|e| e.within("response"))
    }
}

// === impl PermitRequest ===

impl From<PermitRequest> for pb::RequestPermitRequest {
    fn from(r: PermitRequest) -> Self {
        Self {
            request_id: r.request_id.as_str().to_owned(),
            host_id: r.host.as_str().to_owned(),
            action: wire_action(r.action),
            action_name: r.action.as_str().to_owned(),
            job: r.job,
            reason: r.reason,
            dry_run: r.dry_run,
        }
    }
}

/// Field paths start with `request.`. Holds the request to
/// [`limits`](crate::limits).
impl TryFrom<pb::RequestPermitRequest> for PermitRequest {
    type Error = InvalidInput;

    fn try_from(r: pb::RequestPermitRequest) -> Result<Self, InvalidInput> {
        let request = || -> Result<Self, InvalidInput> {
            Ok(Self {
                request_id: request_id("request_id", r.request_id).and_then(|id| {
                    check_visible("request_id", id.as_str())?;
                    Ok(id)
                })?,
                host: request_host_id("host_id", r.host_id)?,
                action: required_action("action", r.action, &r.action_name)?,
                job: required_text("job", r.job, MAX_JOB_LEN).and_then(|job| {
                    check_visible("job", &job)?;
                    Ok(job)
                })?,
                reason: required_text("reason", r.reason, MAX_REASON_LEN)?,
                dry_run: r.dry_run,
            })
        };
        request().map_err(|e| e.within("request"))
    }
}

pub(crate) fn request_id(field: &str, value: String) -> Result<RequestId, InvalidInput> {
    RequestId::new(value).map_err(|e| renamed(e, field))
}

// === impl Permit ===

impl From<Permit> for pb::Permit {
    fn from(p: Permit) -> Self {
        Self {
            permit_id: p.id.as_str().to_owned(),
            fencing_token: p.token.0,
            request_id: p.request_id.as_str().to_owned(),
            host_id: p.host.as_str().to_owned(),
            action: wire_action(p.action),
            action_name: p.action.as_str().to_owned(),
            job: p.job,
            reason: p.reason,
            labels: p.labels,
            dry_run: p.dry_run,
            granted_at: Some(to_timestamp(p.granted_at)),
            expires_at: Some(to_timestamp(p.expires_at)),
            ttl: Some(to_duration(p.ttl)),
            state: wire_enum::<pb::PermitState, _>(p.state),
        }
    }
}

impl TryFrom<pb::Permit> for Permit {
    type Error = InvalidInput;

    fn try_from(p: pb::Permit) -> Result<Self, InvalidInput> {
        Ok(Self {
            id: permit_id("permit_id", p.permit_id)?,
            token: FencingToken(p.fencing_token),
            request_id: request_id("request_id", p.request_id)?,
            host: host_id("host_id", p.host_id)?,
            action: required_action("action", p.action, &p.action_name)?,
            job: p.job,
            reason: p.reason,
            labels: labels("labels", p.labels)?,
            dry_run: p.dry_run,
            granted_at: required_time("granted_at", p.granted_at)?,
            expires_at: required_time("expires_at", p.expires_at)?,
            ttl: positive_duration("ttl", p.ttl)?,
            state: required_enum::<pb::PermitState, _>("state", p.state)?,
        })
    }
}

// === impl Denial ===

impl From<Denial> for pb::Denial {
    fn from(d: Denial) -> Self {
        Self {
            reason: wire_enum::<pb::DenyReason, _>(d.reason),
            retry_after: d.retry_after.map(to_duration),
            message: d.message,
        }
    }
}

impl TryFrom<pb::Denial> for Denial {
    type Error = InvalidInput;

    fn try_from(d: pb::Denial) -> Result<Self, InvalidInput> {
        Ok(Self {
            reason: required_enum::<pb::DenyReason, _>("reason", d.reason)?,
            retry_after: optional_duration("retry_after", d.retry_after)?,
            message: d.message,
        })
    }
}

// === impl Decision ===

impl From<Decision> for pb::RequestPermitResponse {
    fn from(d: Decision) -> Self {
        use pb::request_permit_response::Decision as Wire;
        let decision = match d {
            Decision::Granted { permit, replayed } => Wire::Granted(pb::Grant {
                permit: Some(permit.into()),
                replayed,
            }),
            Decision::Denied(denial) => Wire::Denied(denial.into()),
            Decision::Waiting(w) => Wire::Waiting(pb::Waiting {
                approval_id: w.approval,
                retry_after: Some(to_duration(w.retry_after)),
                expires_at: Some(to_timestamp(w.expires_at)),
                message: w.message,
            }),
        };
        Self {
            decision: Some(decision),
        }
    }
}

/// Field paths start with `response.`.
impl TryFrom<pb::RequestPermitResponse> for Decision {
    type Error = InvalidInput;

    fn try_from(r: pb::RequestPermitResponse) -> Result<Self, InvalidInput> {
        use pb::request_permit_response::Decision as Wire;
        let decision = || -> Result<Self, InvalidInput> {
            let decision = r.decision.ok_or_else(|| {
                InvalidInput::new("decision", "must be set (granted, denied or waiting)")
            })?;
            match decision {
                Wire::Granted(grant) => Ok(Decision::Granted {
                    permit: required_msg("permit", grant.permit)
                        .map_err(|e| e.within("granted"))?,
                    replayed: grant.replayed,
                }),
                Wire::Denied(denial) => Ok(Decision::Denied(
                    Denial::try_from(denial).map_err(|e| e.within("denied"))?,
                )),
                Wire::Waiting(w) => {
                    let waiting = || -> Result<Waiting, InvalidInput> {
                        if w.approval_id == 0 {
                            return Err(must_be_set("approval_id"));
                        }
                        Ok(Waiting {
                            approval: w.approval_id,
                            retry_after: optional_duration("retry_after", w.retry_after)?
                                .ok_or_else(|| must_be_set("retry_after"))?,
                            expires_at: required_time("expires_at", w.expires_at)?,
                            message: w.message,
                        })
                    };
                    Ok(Decision::Waiting(
                        waiting().map_err(|e| e.within("waiting"))?,
                    ))
                }
            }
        };
        decision().map_err(|e| e.within("response"))
    }
}
