//! Validated forms of the requests that have no medic-policy type of their
//! own: renewals and outcomes (agent API), and every operator request.
//!
//! Each converts from its wire request with [`TryFrom`], naming a bad field
//! by its path under `request.` (`request.reason: must not be empty`), so a
//! server can hand the error straight back to the caller. The agent's
//! requests also convert back with [`From`], for the agent's client.
//!
//! Every conversion holds its request to [`limits`](crate::limits): label
//! counts, text and list lengths (`request.reason: must be at most 1024
//! bytes, got 5000`).
//!
//! The actor of an operator request is never part of it: the coordinator
//! takes it from the caller's identity.

use std::time::{Duration, SystemTime};

use medic_policy::{
    Action, BreakerScope, FencingToken, HostId, InvalidInput, Labels, Outcome, PermitId, PermitRef,
    PermitState, Scope,
};

use crate::convert::{
    bounded, bounded_labels, bounded_scope_or_fleet, check_count, check_labels, check_len,
    from_duration, indexed, optional_msg, optional_time, permit_id, required_enum, required_text,
    wire_enum,
};
use crate::limits::{
    MAX_FILTER_VALUES, MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_OUTCOME_DETAIL_LEN,
    MAX_PAGE_TOKEN_LEN, MAX_REASON_LEN, check_visible, request_host_id,
};
use crate::pb::v1 as pb;

/// Page size used when a request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page served; larger requests are lowered to it.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Runs a validation and nests its errors under `request.`.
fn request<T>(f: impl FnOnce() -> Result<T, InvalidInput>) -> Result<T, InvalidInput> {
    f().map_err(|e| e.within("request"))
}

/// An optional host filter: empty means every host.
fn host_filter(field: &str, value: String) -> Result<Option<HostId>, InvalidInput> {
    if value.is_empty() {
        return Ok(None);
    }
    request_host_id(field, value).map(Some)
}

/// An operator's reason: required, at most [`MAX_REASON_LEN`] bytes.
fn reason(value: String) -> Result<String, InvalidInput> {
    required_text("reason", value, MAX_REASON_LEN)
}

/// A repeated filter of at most [`MAX_FILTER_VALUES`] entries.
fn check_filter<T>(field: &str, values: &[T]) -> Result<(), InvalidInput> {
    check_count(field, values.len(), MAX_FILTER_VALUES, "entries")
}

/// An optional action filter: `ACTION_UNSPECIFIED` means every action.
fn action_filter(field: &str, raw: i32, name: &str) -> Result<Option<Action>, InvalidInput> {
    crate::convert::action_from_wire(field, raw, name)
}

// === Page ===

/// One page's worth of a paged list call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// Items per page: the request's `page_size`, [`DEFAULT_PAGE_SIZE`] for
    /// 0, at most [`MAX_PAGE_SIZE`].
    pub size: u32,
    /// Where to continue: the previous reply's `next_page_token`. `None`:
    /// the first page. Opaque here; the server that issued it decodes it.
    pub token: Option<String>,
}

impl Page {
    /// The page of a request's `page_size` and `page_token` (at most
    /// [`MAX_PAGE_TOKEN_LEN`] bytes).
    fn new(size: u32, token: String) -> Result<Self, InvalidInput> {
        let token = bounded("page_token", token, MAX_PAGE_TOKEN_LEN)?;
        Ok(Self {
            size: match size {
                0 => DEFAULT_PAGE_SIZE,
                n => n.min(MAX_PAGE_SIZE),
            },
            token: (!token.is_empty()).then_some(token),
        })
    }
}

// === Agent requests ===

/// A validated `RenewPermitRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The host holding the permit (checked against the caller's identity).
    pub host: HostId,
    /// The permit and the token its grant carried.
    pub permit: PermitRef,
}

impl From<Renewal> for pb::RenewPermitRequest {
    fn from(r: Renewal) -> Self {
        Self {
            host_id: r.host.as_str().to_owned(),
            permit_id: r.permit.id.as_str().to_owned(),
            fencing_token: r.permit.token.0,
        }
    }
}

impl TryFrom<pb::RenewPermitRequest> for Renewal {
    type Error = InvalidInput;

    fn try_from(r: pb::RenewPermitRequest) -> Result<Self, InvalidInput> {
        request(|| {
            Ok(Self {
                host: request_host_id("host_id", r.host_id)?,
                permit: PermitRef {
                    id: permit_id("permit_id", r.permit_id)?,
                    token: FencingToken(r.fencing_token),
                },
            })
        })
    }
}

/// A validated `ReportOutcomeRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeReport {
    /// The host holding the permit (checked against the caller's identity).
    pub host: HostId,
    /// The permit and the token its grant carried.
    pub permit: PermitRef,
    /// What happened.
    pub outcome: Outcome,
    /// Evidence for a human; may be empty.
    pub detail: String,
}

impl From<OutcomeReport> for pb::ReportOutcomeRequest {
    fn from(r: OutcomeReport) -> Self {
        Self {
            host_id: r.host.as_str().to_owned(),
            permit_id: r.permit.id.as_str().to_owned(),
            fencing_token: r.permit.token.0,
            outcome: wire_enum::<pb::Outcome, _>(r.outcome),
            detail: r.detail,
        }
    }
}

impl TryFrom<pb::ReportOutcomeRequest> for OutcomeReport {
    type Error = InvalidInput;

    fn try_from(r: pb::ReportOutcomeRequest) -> Result<Self, InvalidInput> {
        request(|| {
            Ok(Self {
                host: request_host_id("host_id", r.host_id)?,
                permit: PermitRef {
                    id: permit_id("permit_id", r.permit_id)?,
                    token: FencingToken(r.fencing_token),
                },
                outcome: required_enum::<pb::Outcome, _>("outcome", r.outcome)?,
                detail: bounded("detail", r.detail, MAX_OUTCOME_DETAIL_LEN)?,
            })
        })
    }
}

// === SetOverride, EndOverride ===

/// A validated `SetOverrideRequest` (the ceiling and the action's being
/// declared are the engine's to check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetOverrideCommand {
    /// The action.
    pub action: Action,
    /// Which limit.
    pub limit: medic_policy::OverrideLimit,
    /// The value to put in force.
    pub value: u32,
    /// How long.
    pub duration: Duration,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::SetOverrideRequest> for SetOverrideCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::SetOverrideRequest) -> Result<Self, InvalidInput> {
        request(|| {
            let duration = from_duration(
                "duration",
                r.duration
                    .ok_or_else(|| InvalidInput::new("duration", "must be set"))?,
            )?;
            if duration.is_zero() || duration > medic_policy::MAX_OVERRIDE {
                return Err(InvalidInput::new(
                    "duration",
                    "must be positive and at most 7 days (a longer change belongs in the \
                     configuration)",
                ));
            }
            Ok(Self {
                action: crate::convert::required_action("action", r.action, &r.action_name)?,
                limit: required_enum::<pb::OverrideLimit, _>("limit", r.limit)?,
                value: r.value,
                duration,
                reason: reason(r.reason)?,
            })
        })
    }
}

/// A validated `EndOverrideRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndOverrideCommand {
    /// Which override.
    pub id: u64,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::EndOverrideRequest> for EndOverrideCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::EndOverrideRequest) -> Result<Self, InvalidInput> {
        request(|| {
            if r.override_id == 0 {
                return Err(InvalidInput::new("override_id", "must be set"));
            }
            Ok(Self {
                id: r.override_id,
                reason: reason(r.reason)?,
            })
        })
    }
}

// === ListApprovals, Approve, Reject ===

/// A validated `ListApprovalsRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalQuery {
    /// The decided and ended ones too.
    pub all: bool,
}

impl TryFrom<pb::ListApprovalsRequest> for ApprovalQuery {
    type Error = InvalidInput;

    fn try_from(r: pb::ListApprovalsRequest) -> Result<Self, InvalidInput> {
        Ok(Self { all: r.all })
    }
}

/// A validated `DecideApprovalRequest` (Approve or Reject).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecideApprovalCommand {
    /// Which approval.
    pub id: u64,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::DecideApprovalRequest> for DecideApprovalCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::DecideApprovalRequest) -> Result<Self, InvalidInput> {
        request(|| {
            if r.approval_id == 0 {
                return Err(InvalidInput::new("approval_id", "must be set"));
            }
            Ok(Self {
                id: r.approval_id,
                reason: reason(r.reason)?,
            })
        })
    }
}

// === Pause, Resume ===

/// A validated `PauseRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseCommand {
    /// What to pause (unset on the wire: the whole fleet).
    pub scope: Scope,
    /// Why.
    pub reason: String,
    /// How long, from when the coordinator receives it. `None`: until
    /// resumed.
    pub duration: Option<Duration>,
}

impl TryFrom<pb::PauseRequest> for PauseCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::PauseRequest) -> Result<Self, InvalidInput> {
        request(|| {
            let duration = r
                .duration
                .map(|d| from_duration("duration", d))
                .transpose()?;
            if duration.is_some_and(|d| d.is_zero()) {
                return Err(InvalidInput::new(
                    "duration",
                    "must be positive when set (leave it unset to pause until resumed)",
                ));
            }
            if duration.is_some_and(|d| d > crate::limits::MAX_PAUSE_DURATION) {
                return Err(InvalidInput::new(
                    "duration",
                    "must be at most 366 days (leave it unset to pause until resumed)",
                ));
            }
            Ok(Self {
                scope: bounded_scope_or_fleet("scope", r.scope)?,
                reason: reason(r.reason)?,
                duration,
            })
        })
    }
}

/// Which pauses a resume ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeTarget {
    /// The pause with this id.
    Id(u64),
    /// Every pause whose scope is exactly this one.
    Scope(Scope),
}

/// A validated `ResumeRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeCommand {
    /// Which pauses to end.
    pub target: ResumeTarget,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::ResumeRequest> for ResumeCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::ResumeRequest) -> Result<Self, InvalidInput> {
        use pb::resume_request::Target;
        request(|| {
            let target = match r.target {
                None => {
                    return Err(InvalidInput::new(
                        "target",
                        "must be set (pause_id or scope)",
                    ));
                }
                Some(Target::PauseId(0)) => {
                    return Err(InvalidInput::new("pause_id", "must not be 0"));
                }
                Some(Target::PauseId(id)) => ResumeTarget::Id(id),
                Some(Target::Scope(s)) => {
                    check_labels("scope.selector", &s.selector)?;
                    ResumeTarget::Scope(Scope::try_from(s).map_err(|e| e.within("scope"))?)
                }
            };
            Ok(Self {
                target,
                reason: reason(r.reason)?,
            })
        })
    }
}

// === RevokePermit, Quarantine, Unquarantine ===

/// A validated `RevokePermitRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeCommand {
    /// The permit to revoke.
    pub permit: PermitId,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::RevokePermitRequest> for RevokeCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::RevokePermitRequest) -> Result<Self, InvalidInput> {
        request(|| {
            Ok(Self {
                permit: permit_id("permit_id", r.permit_id)?,
                reason: reason(r.reason)?,
            })
        })
    }
}

/// A validated `QuarantineRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineCommand {
    /// The host to hold.
    pub host: HostId,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::QuarantineRequest> for QuarantineCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::QuarantineRequest) -> Result<Self, InvalidInput> {
        request(|| {
            Ok(Self {
                host: request_host_id("host_id", r.host_id)?,
                reason: reason(r.reason)?,
            })
        })
    }
}

/// A validated `UnquarantineRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseCommand {
    /// The host to release.
    pub host: HostId,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::UnquarantineRequest> for ReleaseCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::UnquarantineRequest) -> Result<Self, InvalidInput> {
        request(|| {
            Ok(Self {
                host: request_host_id("host_id", r.host_id)?,
                reason: reason(r.reason)?,
            })
        })
    }
}

// === ResetBreaker, ReloadConfig ===

/// A validated `ResetBreakerRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetBreakerCommand {
    /// The breaker to close. `None`: every open breaker.
    pub scope: Option<BreakerScope>,
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::ResetBreakerRequest> for ResetBreakerCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::ResetBreakerRequest) -> Result<Self, InvalidInput> {
        request(|| {
            if let Some(pb::BreakerScope {
                kind: Some(pb::breaker_scope::Kind::Domain(d)),
            }) = &r.scope
            {
                check_len("scope.domain.label", &d.label, MAX_LABEL_KEY_LEN)?;
                check_len("scope.domain.value", &d.value, MAX_LABEL_VALUE_LEN)?;
                check_visible("scope.domain.label", &d.label)?;
                check_visible("scope.domain.value", &d.value)?;
            }
            Ok(Self {
                scope: optional_msg("scope", r.scope)?,
                reason: reason(r.reason)?,
            })
        })
    }
}

/// A validated `ReloadConfigRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadCommand {
    /// Why.
    pub reason: String,
}

impl TryFrom<pb::ReloadConfigRequest> for ReloadCommand {
    type Error = InvalidInput;

    fn try_from(r: pb::ReloadConfigRequest) -> Result<Self, InvalidInput> {
        request(|| {
            Ok(Self {
                reason: reason(r.reason)?,
            })
        })
    }
}

// === Queries ===

/// A validated `ListHostsRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostQuery {
    /// Only hosts that count as unhealthy.
    pub unhealthy_only: bool,
    /// Only quarantined hosts.
    pub quarantined_only: bool,
    /// Only hosts whose labels contain all of these pairs.
    pub selector: Labels,
    /// The page.
    pub page: Page,
}

impl TryFrom<pb::ListHostsRequest> for HostQuery {
    type Error = InvalidInput;

    fn try_from(r: pb::ListHostsRequest) -> Result<Self, InvalidInput> {
        request(|| {
            Ok(Self {
                unhealthy_only: r.unhealthy_only,
                quarantined_only: r.quarantined_only,
                selector: bounded_labels("selector", r.selector)?,
                page: Page::new(r.page_size, r.page_token)?,
            })
        })
    }
}

/// A validated `ListPermitsRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermitQuery {
    /// Only this host's permits.
    pub host: Option<HostId>,
    /// Only this action's permits.
    pub action: Option<Action>,
    /// Only permits in these states; never empty (`[Active]` when the
    /// request lists none).
    pub states: Vec<PermitState>,
    /// The page.
    pub page: Page,
}

impl TryFrom<pb::ListPermitsRequest> for PermitQuery {
    type Error = InvalidInput;

    fn try_from(r: pb::ListPermitsRequest) -> Result<Self, InvalidInput> {
        request(|| {
            check_filter("states", &r.states)?;
            let mut states = r
                .states
                .into_iter()
                .enumerate()
                .map(|(i, s)| required_enum::<pb::PermitState, _>(&indexed("states", i), s))
                .collect::<Result<Vec<PermitState>, _>>()?;
            if states.is_empty() {
                states.push(PermitState::Active);
            }
            Ok(Self {
                host: host_filter("host_id", r.host_id)?,
                action: action_filter("action", r.action, &r.action_name)?,
                states,
                page: Page::new(r.page_size, r.page_token)?,
            })
        })
    }
}

/// A validated `GetHistoryRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only events at or after this time.
    pub since: Option<SystemTime>,
    /// Only events before this time.
    pub until: Option<SystemTime>,
    /// Only events about this host.
    pub host: Option<HostId>,
    /// Only events of these kinds; empty: every kind.
    pub kinds: Vec<pb::EventKind>,
    /// Only events about this action.
    pub action: Option<Action>,
    /// The page.
    pub page: Page,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

impl TryFrom<pb::GetHistoryRequest> for HistoryQuery {
    type Error = InvalidInput;

    fn try_from(r: pb::GetHistoryRequest) -> Result<Self, InvalidInput> {
        request(|| {
            let since = optional_time("since", r.since)?;
            let until = optional_time("until", r.until)?;
            if let (Some(s), Some(u)) = (since, until)
                && u < s
            {
                return Err(InvalidInput::new(
                    "until",
                    "must not be before request.since",
                ));
            }
            Ok(Self {
                since,
                until,
                host: host_filter("host_id", r.host_id)?,
                kinds: event_kinds("kinds", r.kinds)?,
                action: action_filter("action", r.action, &r.action_name)?,
                page: Page::new(r.page_size, r.page_token)?,
                newest_first: r.newest_first,
            })
        })
    }
}

/// A validated `ExplainRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExplainQuery {
    /// The host asked about.
    pub host: HostId,
    /// The action asked about.
    pub action: Action,
}

impl TryFrom<pb::ExplainRequest> for ExplainQuery {
    type Error = InvalidInput;

    fn try_from(r: pb::ExplainRequest) -> Result<Self, InvalidInput> {
        request(|| {
            Ok(Self {
                host: request_host_id("host_id", r.host_id)?,
                action: crate::convert::required_action("action", r.action, &r.action_name)?,
            })
        })
    }
}

/// A validated `WatchEventsRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchFilter {
    /// Only events of these kinds; empty: every kind.
    pub kinds: Vec<pb::EventKind>,
    /// Replay the history after this id before following live. `None`: only
    /// new events.
    pub after_id: Option<u64>,
}

impl WatchFilter {
    /// Whether `event` passes the kind filter.
    pub fn matches(&self, event: &pb::Event) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| i32::from(*k) == event.kind)
    }
}

impl TryFrom<pb::WatchEventsRequest> for WatchFilter {
    type Error = InvalidInput;

    fn try_from(r: pb::WatchEventsRequest) -> Result<Self, InvalidInput> {
        request(|| {
            Ok(Self {
                kinds: event_kinds("kinds", r.kinds)?,
                after_id: r.after_id,
            })
        })
    }
}

/// A kind filter: at most [`MAX_FILTER_VALUES`] entries, each a valid kind
/// other than `_UNSPECIFIED`.
fn event_kinds(field: &str, raw: Vec<i32>) -> Result<Vec<pb::EventKind>, InvalidInput> {
    check_filter(field, &raw)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, k)| match pb::EventKind::try_from(k) {
            Ok(pb::EventKind::Unspecified) => Err(InvalidInput::new(
                indexed(field, i),
                "must not be EVENT_KIND_UNSPECIFIED (send no kinds to mean every kind)",
            )),
            Ok(kind) => Ok(kind),
            Err(_) => Err(InvalidInput::new(
                indexed(field, i),
                format!("unknown value {k} (the peer may speak a newer medic.v1)"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use medic_policy::{BreakerScope, FencingToken, PermitId};

    use super::*;
    use crate::convert::{to_duration, to_timestamp};
    use crate::limits::MAX_LABELS;

    #[track_caller]
    fn assert_error<T: std::fmt::Debug>(result: Result<T, InvalidInput>, expected: &str) {
        match result {
            Ok(v) => panic!("expected error {expected:?}, got {v:?}"),
            Err(e) => assert_eq!(e.to_string(), expected),
        }
    }

    fn permit_ref() -> PermitRef {
        PermitRef {
            id: PermitId::for_token(FencingToken(42)),
            token: FencingToken(42),
        }
    }

    fn host() -> HostId {
        HostId::new("web-1.use1").expect("valid")
    }

    #[test]
    fn renewal_round_trips() {
        let renewal = Renewal {
            host: host(),
            permit: permit_ref(),
        };
        let wire = pb::RenewPermitRequest::from(renewal.clone());
        assert_eq!(Renewal::try_from(wire), Ok(renewal));
    }

    #[test]
    fn renewal_without_permit_id_names_the_field() {
        let wire = pb::RenewPermitRequest {
            host_id: "web-1.use1".to_owned(),
            permit_id: String::new(),
            fencing_token: 42,
        };
        assert_error(
            Renewal::try_from(wire),
            "request.permit_id: must not be empty",
        );
    }

    #[test]
    fn outcome_report_round_trips() {
        let report = OutcomeReport {
            host: host(),
            permit: permit_ref(),
            outcome: Outcome::Succeeded,
            detail: "job healthy 40s after restart".to_owned(),
        };
        let wire = pb::ReportOutcomeRequest::from(report.clone());
        assert_eq!(OutcomeReport::try_from(wire), Ok(report));
    }

    #[test]
    fn outcome_report_without_outcome_names_the_field() {
        let wire = pb::ReportOutcomeRequest {
            outcome: pb::Outcome::Unspecified.into(),
            ..OutcomeReport {
                host: host(),
                permit: permit_ref(),
                outcome: Outcome::Failed,
                detail: String::new(),
            }
            .into()
        };
        assert_error(
            OutcomeReport::try_from(wire),
            "request.outcome: must be set",
        );
    }

    #[test]
    fn pause_without_reason_names_the_field() {
        let wire = pb::PauseRequest {
            scope: None,
            reason: String::new(),
            duration: None,
        };
        assert_error(
            PauseCommand::try_from(wire),
            "request.reason: must not be empty",
        );
    }

    #[test]
    fn pause_without_scope_covers_the_whole_fleet_until_resumed() {
        let wire = pb::PauseRequest {
            scope: None,
            reason: "db-3 failover".to_owned(),
            duration: None,
        };
        let command = PauseCommand::try_from(wire).expect("valid");
        assert_eq!(command.scope, Scope::fleet());
        assert_eq!(command.duration, None);
    }

    #[test]
    fn pause_with_zero_duration_is_rejected() {
        let wire = pb::PauseRequest {
            scope: None,
            reason: "db-3 failover".to_owned(),
            duration: Some(prost_types::Duration::default()),
        };
        assert_error(
            PauseCommand::try_from(wire),
            "request.duration: must be positive when set (leave it unset to pause until resumed)",
        );
    }

    #[test]
    fn pause_for_longer_than_a_year_is_rejected_before_it_can_overflow_a_date() {
        // `medicctl pause --for 8000y` once saved a pause ending past year
        // 9999, which every later message then failed to print.
        let wire = pb::PauseRequest {
            scope: None,
            reason: "db-3 failover".to_owned(),
            duration: Some(to_duration(Duration::from_secs(8000 * 365 * 86_400))),
        };
        assert_error(
            PauseCommand::try_from(wire),
            "request.duration: must be at most 366 days (leave it unset to pause until resumed)",
        );
        let year = pb::PauseRequest {
            scope: None,
            reason: "long freeze".to_owned(),
            duration: Some(to_duration(crate::limits::MAX_PAUSE_DURATION)),
        };
        assert!(PauseCommand::try_from(year).is_ok());
    }

    #[test]
    fn pause_with_bad_selector_names_the_label() {
        let wire = pb::PauseRequest {
            scope: Some(pb::Scope {
                selector: [(String::new(), "r12".to_owned())].into(),
                action: 0,
                action_name: String::new(),
            }),
            reason: "x".to_owned(),
            duration: Some(to_duration(Duration::from_secs(7200))),
        };
        assert_error(
            PauseCommand::try_from(wire),
            "request.scope.selector[\"\"]: key must not be empty",
        );
    }

    #[test]
    fn resume_without_target_says_what_may_be_set() {
        let wire = pb::ResumeRequest {
            target: None,
            reason: "failover done".to_owned(),
        };
        assert_error(
            ResumeCommand::try_from(wire),
            "request.target: must be set (pause_id or scope)",
        );
    }

    #[test]
    fn resume_by_scope_keeps_the_scope() {
        let wire = pb::ResumeRequest {
            target: Some(pb::resume_request::Target::Scope(pb::Scope {
                selector: Default::default(),
                action: pb::Action::RebootHost.into(),
                action_name: String::new(),
            })),
            reason: "failover done".to_owned(),
        };
        let command = ResumeCommand::try_from(wire).expect("valid");
        assert_eq!(
            command.target,
            ResumeTarget::Scope(Scope {
                selector: Labels::new(),
                action: Some(Action::RebootHost),
            })
        );
    }

    #[test]
    fn revoke_without_reason_names_the_field() {
        let wire = pb::RevokePermitRequest {
            permit_id: "p-000000000042".to_owned(),
            reason: String::new(),
        };
        assert_error(
            RevokeCommand::try_from(wire),
            "request.reason: must not be empty",
        );
    }

    #[test]
    fn operator_requests_with_invisible_characters_in_an_identifier_name_the_field() {
        let hidden = "web-1\u{202E}";
        assert_error(
            QuarantineCommand::try_from(pb::QuarantineRequest {
                host_id: hidden.to_owned(),
                reason: "bad disk".to_owned(),
            }),
            "request.host_id: must not contain invisible characters (control or format \
             characters such as bidirectional overrides and zero-width spaces), got \
             \"web-1\\u{202e}\" (holds U+202E)",
        );
        for result in [
            ReleaseCommand::try_from(pb::UnquarantineRequest {
                host_id: hidden.to_owned(),
                reason: "fixed".to_owned(),
            })
            .map(|_| ()),
            ExplainQuery::try_from(pb::ExplainRequest {
                host_id: hidden.to_owned(),
                action: pb::Action::RestartJob.into(),
                action_name: String::new(),
            })
            .map(|_| ()),
            HostQuery::try_from(pb::ListHostsRequest {
                selector: [("rack".to_owned(), "r1\u{200B}".to_owned())].into(),
                ..Default::default()
            })
            .map(|_| ()),
            PauseCommand::try_from(pb::PauseRequest {
                scope: scope_with([("zo\u{2066}ne".to_owned(), "a".to_owned())].into()),
                reason: "x".to_owned(),
                ..Default::default()
            })
            .map(|_| ()),
            ResetBreakerCommand::try_from(pb::ResetBreakerRequest {
                scope: Some(pb::BreakerScope {
                    kind: Some(pb::breaker_scope::Kind::Domain(pb::breaker_scope::Domain {
                        label: "rack".to_owned(),
                        value: "r1\u{FEFF}".to_owned(),
                    })),
                }),
                reason: "x".to_owned(),
            })
            .map(|_| ()),
        ] {
            let e = result.expect_err("refused").to_string();
            assert!(e.contains("must not contain invisible characters"), "{e}");
        }
    }

    #[test]
    fn quarantine_and_release_need_a_host_and_a_reason() {
        let q = pb::QuarantineRequest {
            host_id: String::new(),
            reason: "bad disk".to_owned(),
        };
        assert_error(
            QuarantineCommand::try_from(q),
            "request.host_id: must not be empty",
        );
        let r = pb::UnquarantineRequest {
            host_id: "web-1.use1".to_owned(),
            reason: String::new(),
        };
        assert_error(
            ReleaseCommand::try_from(r),
            "request.reason: must not be empty",
        );
    }

    #[test]
    fn reset_breaker_without_scope_means_every_breaker() {
        let wire = pb::ResetBreakerRequest {
            scope: None,
            reason: "db-3 is back".to_owned(),
        };
        let command = ResetBreakerCommand::try_from(wire).expect("valid");
        assert_eq!(command.scope, None);

        let wire = pb::ResetBreakerRequest {
            scope: Some(BreakerScope::Fleet.into()),
            reason: "db-3 is back".to_owned(),
        };
        let command = ResetBreakerCommand::try_from(wire).expect("valid");
        assert_eq!(command.scope, Some(BreakerScope::Fleet));
    }

    #[test]
    fn reload_without_reason_names_the_field() {
        assert_error(
            ReloadCommand::try_from(pb::ReloadConfigRequest::default()),
            "request.reason: must not be empty",
        );
    }

    #[test]
    fn page_size_zero_means_the_default_and_large_sizes_are_lowered() {
        for (asked, served) in [(0, DEFAULT_PAGE_SIZE), (20, 20), (1_000_000, MAX_PAGE_SIZE)] {
            let wire = pb::ListHostsRequest {
                page_size: asked,
                ..Default::default()
            };
            let query = HostQuery::try_from(wire).expect("valid");
            assert_eq!(query.page.size, served);
            assert_eq!(query.page.token, None);
        }
    }

    #[test]
    fn permit_query_without_states_lists_active_permits() {
        let query = PermitQuery::try_from(pb::ListPermitsRequest::default()).expect("valid");
        assert_eq!(query.states, [PermitState::Active]);
        assert_eq!(query.host, None);
        assert_eq!(query.action, None);
    }

    #[test]
    fn permit_query_with_unspecified_state_names_its_index() {
        let wire = pb::ListPermitsRequest {
            states: vec![pb::PermitState::Expired.into(), 0],
            ..Default::default()
        };
        assert_error(
            PermitQuery::try_from(wire),
            "request.states[1]: must be set",
        );
    }

    #[test]
    fn history_query_with_until_before_since_names_both_fields() {
        let wire = pb::GetHistoryRequest {
            since: Some(to_timestamp(UNIX_EPOCH + Duration::from_secs(200))),
            until: Some(to_timestamp(UNIX_EPOCH + Duration::from_secs(100))),
            ..Default::default()
        };
        assert_error(
            HistoryQuery::try_from(wire),
            "request.until: must not be before request.since",
        );
    }

    #[test]
    fn history_query_with_unspecified_kind_names_its_index() {
        let wire = pb::GetHistoryRequest {
            kinds: vec![pb::EventKind::Grant.into(), 0],
            ..Default::default()
        };
        assert_error(
            HistoryQuery::try_from(wire),
            "request.kinds[1]: must not be EVENT_KIND_UNSPECIFIED (send no kinds to mean every kind)",
        );
    }

    #[test]
    fn history_query_keeps_its_filters() {
        let wire = pb::GetHistoryRequest {
            host_id: "web-1.use1".to_owned(),
            kinds: vec![pb::EventKind::Outcome.into()],
            action: pb::Action::RestartJob.into(),
            page_token: "opaque".to_owned(),
            newest_first: true,
            ..Default::default()
        };
        let query = HistoryQuery::try_from(wire).expect("valid");
        assert_eq!(query.host, Some(host()));
        assert_eq!(query.kinds, [pb::EventKind::Outcome]);
        assert_eq!(query.action, Some(Action::RestartJob));
        assert_eq!(query.page.token.as_deref(), Some("opaque"));
        assert!(query.newest_first);
    }

    #[test]
    fn explain_without_action_names_the_field() {
        let wire = pb::ExplainRequest {
            host_id: "web-1.use1".to_owned(),
            action: 0,
            action_name: String::new(),
        };
        assert_error(ExplainQuery::try_from(wire), "request.action: must be set");
    }

    #[test]
    fn watch_filter_passes_only_listed_kinds() {
        let filter = WatchFilter::try_from(pb::WatchEventsRequest {
            kinds: vec![pb::EventKind::Breaker.into()],
            after_id: Some(41),
        })
        .expect("valid");
        assert_eq!(filter.after_id, Some(41));
        let event = |kind: pb::EventKind| pb::Event {
            kind: kind.into(),
            ..Default::default()
        };
        assert!(filter.matches(&event(pb::EventKind::Breaker)));
        assert!(!filter.matches(&event(pb::EventKind::Grant)));

        let everything = WatchFilter::try_from(pb::WatchEventsRequest::default()).expect("valid");
        assert!(everything.matches(&event(pb::EventKind::Grant)));
    }

    // === Limits ===

    /// Asserts that `convert` accepts text of exactly `max` bytes and rejects
    /// `max + 1` bytes with `field: must be at most {max} bytes, got {max + 1}`.
    #[track_caller]
    fn assert_text_limit<T: std::fmt::Debug>(
        field: &str,
        max: usize,
        convert: impl Fn(String) -> Result<T, InvalidInput>,
    ) {
        if let Err(e) = convert("x".repeat(max)) {
            panic!("{field}: {max} bytes must be accepted, got {e}");
        }
        assert_error(
            convert("x".repeat(max + 1)),
            &format!("{field}: must be at most {max} bytes, got {}", max + 1),
        );
    }

    /// Asserts that `convert` accepts exactly `max` entries and rejects
    /// `max + 1` with `field: at most {max} {what}, got {max + 1}`.
    #[track_caller]
    fn assert_count_limit<T: std::fmt::Debug>(
        field: &str,
        max: usize,
        what: &str,
        convert: impl Fn(usize) -> Result<T, InvalidInput>,
    ) {
        if let Err(e) = convert(max) {
            panic!("{field}: {max} {what} must be accepted, got {e}");
        }
        assert_error(
            convert(max + 1),
            &format!("{field}: at most {max} {what}, got {}", max + 1),
        );
    }

    /// A selector of `n` pairs `k000=v`, `k001=v`, ...
    fn selector(n: usize) -> std::collections::BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("k{i:03}"), "v".to_owned()))
            .collect()
    }

    fn scope_with(selector: std::collections::BTreeMap<String, String>) -> Option<pb::Scope> {
        Some(pb::Scope {
            selector,
            action: 0,
            action_name: String::new(),
        })
    }

    #[test]
    fn outcome_report_with_too_long_detail_is_rejected_naming_the_field() {
        assert_text_limit("request.detail", MAX_OUTCOME_DETAIL_LEN, |detail| {
            OutcomeReport::try_from(pb::ReportOutcomeRequest {
                detail,
                ..OutcomeReport {
                    host: host(),
                    permit: permit_ref(),
                    outcome: Outcome::Failed,
                    detail: String::new(),
                }
                .into()
            })
        });
    }

    #[test]
    fn pause_with_too_long_reason_is_rejected_naming_the_field() {
        assert_text_limit("request.reason", MAX_REASON_LEN, |reason| {
            PauseCommand::try_from(pb::PauseRequest {
                scope: None,
                reason,
                duration: None,
            })
        });
    }

    #[test]
    fn every_operator_reason_longer_than_the_limit_is_rejected_naming_the_field() {
        let permit_id = || "p-000000000042".to_owned();
        let host_id = || "web-1.use1".to_owned();
        assert_text_limit("request.reason", MAX_REASON_LEN, |reason| {
            ResumeCommand::try_from(pb::ResumeRequest {
                target: Some(pb::resume_request::Target::PauseId(3)),
                reason,
            })
        });
        assert_text_limit("request.reason", MAX_REASON_LEN, |reason| {
            RevokeCommand::try_from(pb::RevokePermitRequest {
                permit_id: permit_id(),
                reason,
            })
        });
        assert_text_limit("request.reason", MAX_REASON_LEN, |reason| {
            QuarantineCommand::try_from(pb::QuarantineRequest {
                host_id: host_id(),
                reason,
            })
        });
        assert_text_limit("request.reason", MAX_REASON_LEN, |reason| {
            ReleaseCommand::try_from(pb::UnquarantineRequest {
                host_id: host_id(),
                reason,
            })
        });
        assert_text_limit("request.reason", MAX_REASON_LEN, |reason| {
            ResetBreakerCommand::try_from(pb::ResetBreakerRequest {
                scope: None,
                reason,
            })
        });
        assert_text_limit("request.reason", MAX_REASON_LEN, |reason| {
            ReloadCommand::try_from(pb::ReloadConfigRequest { reason })
        });
    }

    #[test]
    fn pause_with_too_many_selector_labels_is_rejected_naming_the_field() {
        assert_count_limit("request.scope.selector", MAX_LABELS, "labels", |n| {
            PauseCommand::try_from(pb::PauseRequest {
                scope: scope_with(selector(n)),
                reason: "db-3 failover".to_owned(),
                duration: None,
            })
        });
    }

    #[test]
    fn pause_selector_with_too_long_key_or_value_is_rejected_naming_the_field() {
        let pause = |key: String, value: String| {
            PauseCommand::try_from(pb::PauseRequest {
                scope: scope_with([(key, value)].into()),
                reason: "db-3 failover".to_owned(),
                duration: None,
            })
        };
        assert!(
            pause(
                "k".repeat(MAX_LABEL_KEY_LEN),
                "v".repeat(MAX_LABEL_VALUE_LEN)
            )
            .is_ok()
        );
        assert_error(
            pause("k".repeat(MAX_LABEL_KEY_LEN + 1), "v".to_owned()),
            &format!(
                "request.scope.selector: key {:?}... must be at most 128 bytes, got 129",
                "k".repeat(32)
            ),
        );
        assert_error(
            pause("zone".to_owned(), "v".repeat(MAX_LABEL_VALUE_LEN + 1)),
            "request.scope.selector[\"zone\"]: value must be at most 256 bytes, got 257",
        );
    }

    #[test]
    fn resume_by_scope_with_too_many_selector_labels_is_rejected_naming_the_field() {
        assert_count_limit("request.scope.selector", MAX_LABELS, "labels", |n| {
            ResumeCommand::try_from(pb::ResumeRequest {
                target: Some(pb::resume_request::Target::Scope(pb::Scope {
                    selector: selector(n),
                    action: 0,
                    action_name: String::new(),
                })),
                reason: "failover done".to_owned(),
            })
        });
    }

    #[test]
    fn host_query_with_too_many_selector_labels_is_rejected_naming_the_field() {
        assert_count_limit("request.selector", MAX_LABELS, "labels", |n| {
            HostQuery::try_from(pb::ListHostsRequest {
                selector: selector(n),
                ..Default::default()
            })
        });
    }

    #[test]
    fn reset_breaker_domain_with_too_long_label_or_value_is_rejected_naming_the_field() {
        let reset = |label: String, value: String| {
            ResetBreakerCommand::try_from(pb::ResetBreakerRequest {
                scope: Some(BreakerScope::Domain { label, value }.into()),
                reason: "db-3 is back".to_owned(),
            })
        };
        assert_text_limit("request.scope.domain.label", MAX_LABEL_KEY_LEN, |label| {
            reset(label, "r12".to_owned())
        });
        assert_text_limit("request.scope.domain.value", MAX_LABEL_VALUE_LEN, |value| {
            reset("rack".to_owned(), value)
        });
    }

    #[test]
    fn page_token_longer_than_the_limit_is_rejected_naming_the_field() {
        assert_text_limit("request.page_token", MAX_PAGE_TOKEN_LEN, |page_token| {
            HostQuery::try_from(pb::ListHostsRequest {
                page_token,
                ..Default::default()
            })
        });
        assert_text_limit("request.page_token", MAX_PAGE_TOKEN_LEN, |page_token| {
            PermitQuery::try_from(pb::ListPermitsRequest {
                page_token,
                ..Default::default()
            })
        });
        assert_text_limit("request.page_token", MAX_PAGE_TOKEN_LEN, |page_token| {
            HistoryQuery::try_from(pb::GetHistoryRequest {
                page_token,
                ..Default::default()
            })
        });
    }

    #[test]
    fn permit_query_with_too_many_states_is_rejected_naming_the_field() {
        assert_count_limit("request.states", MAX_FILTER_VALUES, "entries", |n| {
            PermitQuery::try_from(pb::ListPermitsRequest {
                states: vec![pb::PermitState::Expired.into(); n],
                ..Default::default()
            })
        });
    }

    #[test]
    fn history_query_with_too_many_kinds_is_rejected_naming_the_field() {
        assert_count_limit("request.kinds", MAX_FILTER_VALUES, "entries", |n| {
            HistoryQuery::try_from(pb::GetHistoryRequest {
                kinds: vec![pb::EventKind::Grant.into(); n],
                ..Default::default()
            })
        });
    }

    #[test]
    fn watch_filter_with_too_many_kinds_is_rejected_naming_the_field() {
        assert_count_limit("request.kinds", MAX_FILTER_VALUES, "entries", |n| {
            WatchFilter::try_from(pb::WatchEventsRequest {
                kinds: vec![pb::EventKind::Breaker.into(); n],
                after_id: None,
            })
        });
    }
}
