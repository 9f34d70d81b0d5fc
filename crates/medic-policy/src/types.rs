//! Domain types: what the engine reasons about, what the store persists and
//! what the wire protocol carries (through `medic-proto`'s conversions).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// Wall-clock instants. The engine never reads a clock: every call takes `now`.
pub type Time = SystemTime;

/// A host's labels (`rack=r12`, `zone=use1-az2`): they define failure domains.
pub type Labels = BTreeMap<String, String>;

// === impl HostId ===

/// A host's identity: its certificate identity, usually its DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostId(String);

impl HostId {
    /// Longest accepted host id, in bytes (a DNS name's limit).
    pub const MAX_LEN: usize = 253;

    /// Validates a host id: non-empty, at most [`HostId::MAX_LEN`] bytes, and
    /// no whitespace or control characters (ids appear in logs and tables).
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidInput> {
        let id = id.into();
        validate_token("host_id", &id, Self::MAX_LEN)?;
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate_token(field: &'static str, value: &str, max: usize) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(InvalidInput::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidInput::new(
            field,
            format!("must not contain whitespace or control characters, got {value:?}"),
        ));
    }
    Ok(())
}

// === impl RequestId ===

/// The agent's idempotency key for one permit request. A retry of the same
/// attempt reuses it; a new attempt uses a new one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// Longest accepted request id, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates a request id (non-empty, bounded, printable).
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidInput> {
        let id = id.into();
        validate_token("request_id", &id, Self::MAX_LEN)?;
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl PermitId, FencingToken ===

/// A permit's name, derived from its fencing token (`p-000000000042`), so it is
/// unique for the coordinator's whole life and sorts in grant order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PermitId(String);

impl PermitId {
    /// The id the engine gives the permit carrying `token`.
    pub fn for_token(token: FencingToken) -> Self {
        Self(format!("p-{:012}", token.0))
    }

    /// Parses an id received from outside (an agent or an operator).
    pub fn parse(id: impl Into<String>) -> Result<Self, InvalidInput> {
        let id = id.into();
        validate_token("permit_id", &id, 64)?;
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PermitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Strictly increasing across the coordinator's whole life, restarts included
/// (I5). Anything acting on a permit presents it; a stale one changes nothing.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What an agent presents when it acts on a permit it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermitRef {
    /// The permit's id.
    pub id: PermitId,
    /// The fencing token the grant carried.
    pub token: FencingToken,
}

pub use crate::action::{Action, CustomAction, MAX_ACTION_NAME, MAX_WIRE_ACTIONS, PerAction};

// === Heartbeats ===

/// A confirmed stuck condition of one job, as the agent's detectors saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The job that is stuck.
    pub job: String,
    /// Which detector fired (`heartbeat_file`, `process`, `probe`, `systemd`).
    pub detector: String,
    /// When the detector first fired in the current streak.
    pub since: Time,
    /// Evidence for a human ("heartbeat file 12m old").
    pub detail: String,
}

/// One agent heartbeat: the coordinator's only source of liveness and health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The reporting host.
    pub host: HostId,
    /// The host's labels; they replace the previous set.
    pub labels: Labels,
    /// The agent's version, for `medicctl hosts`.
    pub agent_version: String,
    /// Current problems; empty means healthy.
    pub problems: Vec<Problem>,
    /// The permit the agent believes it holds, if any.
    pub held_permit: Option<PermitRef>,
    /// Set when the agent has climbed its whole ladder and stopped: the host
    /// needs a human. The text says why. The coordinator quarantines the host.
    pub needs_human: Option<String>,
    /// Set while the agent cannot use its state file: it takes no action
    /// until a person repairs or removes it. Shown in `medicctl hosts`.
    pub state_error: Option<String>,
}

/// What the coordinator tells an agent in reply to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// How often the agent must heartbeat. Liveness is judged against it.
    pub heartbeat_interval: Duration,
    /// The current state of the permit the agent said it holds: anything but
    /// `Active` tells the agent to stop acting on it.
    pub held_permit_state: Option<PermitState>,
    /// Set while the host is quarantined.
    pub quarantine: Option<Quarantine>,
    /// Whether the coordinator runs in dry-run mode.
    pub dry_run: bool,
    /// Changes when something happened that can turn a denial into a grant
    /// for this host (a pause ended, a breaker went half-open or closed, the
    /// configuration was reloaded, the host was released). Only a change
    /// means anything: an agent waiting on a denial asks again soon after.
    pub wake: u64,
}

// === Permits ===

/// An agent's request for a permit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermitRequest {
    /// Idempotency key (I7).
    pub request_id: RequestId,
    /// The requesting host.
    pub host: HostId,
    /// What it wants to do.
    pub action: Action,
    /// The job concerned (for a reboot: the job whose problem led to it).
    pub job: String,
    /// Why, for the audit history ("heartbeat file 12m old, 2 restarts failed").
    pub reason: String,
    /// Asks for a dry-run permit (the agent runs in dry-run): it authorises
    /// only logging what would be done, and spends no real budget. The
    /// coordinator in dry-run mode grants only dry-run permits anyway.
    pub dry_run: bool,
}

/// The state of a permit. Only `Active` authorises anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermitState {
    /// Granted and not yet ended: the host may act until `expires_at`.
    Active,
    /// The agent acted and the job was verified healthy.
    Succeeded,
    /// The agent acted and the problem remained.
    Failed,
    /// The agent stopped before acting (problem gone, permit about to expire).
    Aborted,
    /// A dry-run permit, completed without acting.
    DryRun,
    /// No outcome arrived before `expires_at`: the host is quarantined.
    Expired,
    /// An operator revoked it.
    Revoked,
}

impl PermitState {
    /// Whether the permit has ended.
    pub fn is_final(self) -> bool {
        self != PermitState::Active
    }

    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PermitState::Active => "active",
            PermitState::Succeeded => "succeeded",
            PermitState::Failed => "failed",
            PermitState::Aborted => "aborted",
            PermitState::DryRun => "dry_run",
            PermitState::Expired => "expired",
            PermitState::Revoked => "revoked",
        }
    }
}

impl fmt::Display for PermitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an agent reports at the end of a permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acted, and the job verified healthy.
    Succeeded,
    /// Acted, and the problem remained.
    Failed,
    /// Did not act.
    Aborted,
    /// Dry run: logged what it would have done.
    DryRun,
}

impl Outcome {
    /// The permit state this outcome ends a permit in.
    pub fn final_state(self) -> PermitState {
        match self {
            Outcome::Succeeded => PermitState::Succeeded,
            Outcome::Failed => PermitState::Failed,
            Outcome::Aborted => PermitState::Aborted,
            Outcome::DryRun => PermitState::DryRun,
        }
    }
}

/// A granted permit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permit {
    /// Unique id, derived from the token.
    pub id: PermitId,
    /// Fencing token, strictly increasing across grants.
    pub token: FencingToken,
    /// The request that obtained it.
    pub request_id: RequestId,
    /// The host allowed to act.
    pub host: HostId,
    /// The action allowed.
    pub action: Action,
    /// The job concerned.
    pub job: String,
    /// The agent's reason, kept for the audit history.
    pub reason: String,
    /// The host's labels at grant time: the permit counts against these
    /// groups' caps until it ends, even if the host's labels change.
    pub labels: Labels,
    /// Grants made in dry-run mode authorise logging only.
    pub dry_run: bool,
    /// When it was granted.
    pub granted_at: Time,
    /// When it lapses unless renewed or ended.
    pub expires_at: Time,
    /// How long each grant or renewal lasts.
    pub ttl: Duration,
    /// Current state.
    pub state: PermitState,
}

/// Why a request was denied. Machine-readable; each maps to one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The host has not sent a heartbeat: its labels and liveness are unknown.
    UnknownHost,
    /// Rule 9: the coordinator started recently and is still learning the fleet.
    WarmingUp,
    /// Rule 9: fewer than `min_fleet_size` hosts are live.
    FleetTooSmall,
    /// Rule 1: a pause covers this host or action.
    Paused,
    /// Rule 2: a circuit breaker covering this host is open.
    BreakerOpen,
    /// Rule 2: a half-open breaker covering this host has its probe
    /// permits out; the next is granted when one of them ends.
    BreakerHalfOpen,
    /// Rule 3: the host is quarantined.
    Quarantined,
    /// Rule 4: the host already holds an active permit.
    HostBusy,
    /// Rule 5: the host's last permit of this action ended too recently.
    Cooldown,
    /// Rule 5: the host used its attempt budget; it is now quarantined.
    AttemptBudgetExhausted,
    /// Rule 8: the action is outside its allowed windows.
    OutsideWindow,
    /// Rule 6: the fleet-wide cap of active permits for this action is reached.
    ConcurrencyCap,
    /// Rule 6: a failure domain's cap (rack, zone, ...) is reached.
    GroupCap,
    /// Rule 7: the action's rate budget is spent.
    RateLimited,
    /// The action is neither a built-in nor declared in the coordinator's
    /// `[actions]`.
    UnknownAction,
    /// Rule 6: the cap on one job's permits (fleet-wide or per failure
    /// domain) is reached.
    JobCap,
    /// An alert gate covering this host and action is closed: its query
    /// returns something, or it cannot be evaluated.
    GateClosed,
    /// A human rejected the approval this request waited for (or one for
    /// the same host, action and job, recently): it is not asked again
    /// until the rejection lapses.
    ApprovalRejected,
}

impl DenyReason {
    /// Every reason, in rule order.
    pub const ALL: [DenyReason; 18] = [
        DenyReason::UnknownAction,
        DenyReason::UnknownHost,
        DenyReason::WarmingUp,
        DenyReason::FleetTooSmall,
        DenyReason::Paused,
        DenyReason::BreakerOpen,
        DenyReason::BreakerHalfOpen,
        DenyReason::Quarantined,
        DenyReason::HostBusy,
        DenyReason::Cooldown,
        DenyReason::AttemptBudgetExhausted,
        DenyReason::OutsideWindow,
        DenyReason::ConcurrencyCap,
        DenyReason::GroupCap,
        DenyReason::JobCap,
        DenyReason::RateLimited,
        DenyReason::GateClosed,
        DenyReason::ApprovalRejected,
    ];

    /// The snake_case name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::UnknownHost => "unknown_host",
            DenyReason::WarmingUp => "warming_up",
            DenyReason::FleetTooSmall => "fleet_too_small",
            DenyReason::Paused => "paused",
            DenyReason::BreakerOpen => "breaker_open",
            DenyReason::BreakerHalfOpen => "breaker_half_open",
            DenyReason::Quarantined => "quarantined",
            DenyReason::HostBusy => "host_busy",
            DenyReason::Cooldown => "cooldown",
            DenyReason::AttemptBudgetExhausted => "attempt_budget_exhausted",
            DenyReason::OutsideWindow => "outside_window",
            DenyReason::ConcurrencyCap => "concurrency_cap",
            DenyReason::GroupCap => "group_cap",
            DenyReason::RateLimited => "rate_limited",
            DenyReason::UnknownAction => "unknown_action",
            DenyReason::JobCap => "job_cap",
            DenyReason::GateClosed => "gate_closed",
            DenyReason::ApprovalRejected => "approval_rejected",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// Which rule refused.
    pub reason: DenyReason,
    /// When asking again could succeed. `None`: not by itself; a human must
    /// act (resume, release, reset) first.
    pub retry_after: Option<Duration>,
    /// A sentence a human can act on.
    pub message: String,
}

/// The answer to a permit request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Granted. `replayed` is set when this answers a retry of a request that
    /// was already granted (I7): the same permit, no new slot or budget.
    Granted {
        /// The permit (on a replay: in its current state).
        permit: Permit,
        /// Whether this is a replay of an earlier grant.
        replayed: bool,
    },
    /// Denied by the first rule that refused, in rule order.
    Denied(Denial),
    /// Every rule passed, but the action needs a human's approval here:
    /// the request waits in the queue of pending approvals. Not an error:
    /// the agent asks again with the same request id.
    Waiting(Waiting),
}

impl Decision {
    /// The permit, if granted.
    pub fn permit(&self) -> Option<&Permit> {
        match self {
            Decision::Granted { permit, .. } => Some(permit),
            Decision::Denied(_) | Decision::Waiting(_) => None,
        }
    }

    /// The denial, if denied.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Decision::Granted { .. } | Decision::Waiting(_) => None,
            Decision::Denied(d) => Some(d),
        }
    }
}

/// The answer to a request that waits for a human's approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The pending approval (`medicctl approve ID`).
    pub approval: u64,
    /// When to ask again (with the same request id). A heartbeat reply's
    /// wake-up value changes as soon as the approval is decided.
    pub retry_after: Duration,
    /// Until when the approval waits for a human before it expires.
    pub expires_at: Time,
    /// A sentence for the agent's log: why a human must approve, and how.
    pub message: String,
}

// === Pauses, quarantines, breakers ===

/// What a pause (or a quarantine-like operator action) covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    /// Hosts whose labels contain all of these pairs. Empty: every host.
    pub selector: Labels,
    /// Only this action. `None`: every action.
    pub action: Option<Action>,
}

impl Scope {
    /// The whole fleet, every action.
    pub fn fleet() -> Self {
        Self::default()
    }

    /// Whether this scope covers `action` on a host with `labels`.
    pub fn covers(&self, action: Action, labels: &Labels) -> bool {
        self.action.is_none_or(|a| a == action)
            && self
                .selector
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|hv| hv == v))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.selector.is_empty() {
            f.write_str("fleet")?;
        } else {
            let mut first = true;
            for (k, v) in &self.selector {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{k}={v}")?;
            }
        }
        if let Some(a) = self.action {
            write!(f, " action={a}")?;
        }
        Ok(())
    }
}

/// An operator's pause. Pauses survive restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// Engine-assigned id, for `resume` by id.
    pub id: u64,
    /// What it covers.
    pub scope: Scope,
    /// Who paused.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: Time,
    /// When it lapses by itself. `None`: until resumed.
    pub until: Option<Time>,
}

/// How a host came to be quarantined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineCause {
    /// An operator quarantined it.
    Manual,
    /// It used `max_attempts` within `per` and asked again.
    AttemptBudget,
    /// A permit expired without an outcome: the host went away mid-remediation.
    PermitExpired,
    /// Its agent climbed the whole ladder and asked for a human.
    GaveUp,
}

impl QuarantineCause {
    /// The name used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineCause::Manual => "manual",
            QuarantineCause::AttemptBudget => "attempt_budget",
            QuarantineCause::PermitExpired => "permit_expired",
            QuarantineCause::GaveUp => "gave_up",
        }
    }
}

/// A host held for a human: it gets no permit until released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The host.
    pub host: HostId,
    /// How it got here.
    pub cause: QuarantineCause,
    /// Who quarantined it (an operator, or `coordinator`).
    pub actor: String,
    /// Why, in words.
    pub reason: String,
    /// Since when.
    pub since: Time,
}

/// What a circuit breaker covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BreakerScope {
    /// The whole fleet.
    Fleet,
    /// One value of one failure-domain label (`rack=r12`).
    Domain {
        /// The label key.
        label: String,
        /// The label value.
        value: String,
    },
}

impl BreakerScope {
    /// Whether this breaker covers a host with `labels`.
    pub fn covers(&self, labels: &Labels) -> bool {
        match self {
            BreakerScope::Fleet => true,
            BreakerScope::Domain { label, value } => labels.get(label) == Some(value),
        }
    }
}

impl fmt::Display for BreakerScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerScope::Fleet => f.write_str("fleet"),
            BreakerScope::Domain { label, value } => write!(f, "{label}={value}"),
        }
    }
}

/// What opened a breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerCause {
    /// Too large a share of live hosts is unhealthy.
    UnhealthyFraction,
    /// Too large a share of the recently remediated hosts failed or
    /// expired (each host counted once).
    FailureFraction,
    /// Too large a share of the hosts live a moment ago went silent at
    /// once: a partition, a dead rack or a mass crash, which medic cannot
    /// tell apart.
    LivenessDrop,
    /// A probe permit of a half-open breaker failed or expired: the cause
    /// is not fixed.
    ProbeFailed,
}

impl BreakerCause {
    /// Every cause.
    pub const ALL: [BreakerCause; 4] = [
        BreakerCause::UnhealthyFraction,
        BreakerCause::FailureFraction,
        BreakerCause::LivenessDrop,
        BreakerCause::ProbeFailed,
    ];

    /// The name used in messages, metrics and notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerCause::UnhealthyFraction => "unhealthy_fraction",
            BreakerCause::FailureFraction => "failure_fraction",
            BreakerCause::LivenessDrop => "liveness_drop",
            BreakerCause::ProbeFailed => "probe_failed",
        }
    }
}

impl fmt::Display for BreakerCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tripped breaker: open, or half-open on its way to closing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerTrip {
    /// What it covers.
    pub scope: BreakerScope,
    /// What opened it.
    pub cause: BreakerCause,
    /// When it opened.
    pub since: Time,
    /// The numbers that opened it, for a human.
    pub detail: String,
    /// Set once it went half-open: probe permits may be granted, a few at
    /// a time, and one failure opens it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open: Option<HalfOpen>,
}

impl BreakerTrip {
    /// Whether it denies every grant it covers (rather than letting probes
    /// through).
    pub fn is_open(&self) -> bool {
        self.half_open.is_none()
    }
}

/// A breaker's half-open step: the condition cleared, or an operator said
/// the cause is fixed. Probe permits go out a few at a time; each verified
/// success widens the budget, one failure opens the breaker again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfOpen {
    /// Since when.
    pub since: Time,
    /// Who moved it here (`coordinator` when its condition cleared).
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Permits covered by it that succeeded since.
    pub successes: u32,
}

// === Clock steps ===

/// Where the wall clock stood against the host's boot clock, which counts
/// time asleep and never steps: the two move apart only when the wall clock
/// is stepped. Two marks of the same boot measure the steps between them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockMark {
    /// The wall clock.
    pub wall: Time,
    /// Time since boot at the same instant (`CLOCK_BOOTTIME`).
    pub since_boot: Duration,
    /// The boot it was taken in; marks of different boots compare nothing.
    pub boot: String,
}

impl ClockMark {
    /// The wall-clock step between `self` and a later mark of the same
    /// boot; `None` for marks of different boots.
    pub fn step_to(&self, later: &ClockMark) -> Option<ClockStep> {
        if self.boot != later.boot {
            return None;
        }
        let wall = signed(later.wall.duration_since(self.wall));
        let elapsed = i128::try_from(later.since_boot.as_nanos()).unwrap_or(i128::MAX)
            - i128::try_from(self.since_boot.as_nanos()).unwrap_or(i128::MAX);
        Some(ClockStep::from_nanos(wall - elapsed))
    }
}

/// The nanoseconds from one wall time to another, signed.
fn signed(d: Result<Duration, std::time::SystemTimeError>) -> i128 {
    match d {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

/// A step of the wall clock: it jumped `by`, ahead or back, without that
/// time passing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockStep {
    /// Ahead (true) or back.
    pub forward: bool,
    /// How far.
    pub by: Duration,
}

impl ClockStep {
    /// The step of `nanos` signed nanoseconds (positive: ahead).
    pub fn from_nanos(nanos: i128) -> ClockStep {
        let by = u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX);
        ClockStep {
            forward: nanos >= 0,
            by: Duration::from_nanos(by),
        }
    }

    /// The step from what the wall clock should read (`expected`) to what
    /// it reads (`actual`).
    pub fn between(expected: Time, actual: Time) -> ClockStep {
        ClockStep::from_nanos(signed(actual.duration_since(expected)))
    }

    /// The step that undoes this one.
    pub fn inverse(self) -> ClockStep {
        ClockStep {
            forward: !self.forward,
            by: self.by,
        }
    }

    /// `t` moved with the clock, so that the time elapsed since (or left
    /// until) it is what it was before the step. Saturates at the epoch
    /// and at the latest time the store can hold.
    pub fn shift(self, t: Time) -> Time {
        if self.forward {
            t.checked_add(self.by).unwrap_or(t).min(latest_time())
        } else {
            t.checked_sub(self.by)
                .unwrap_or(Time::UNIX_EPOCH)
                .max(Time::UNIX_EPOCH)
        }
    }
}

impl fmt::Display for ClockStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // To the millisecond under 10 s, else to the nearest second: a
        // step read off two clocks is never exact.
        let by = if self.by < Duration::from_secs(10) {
            Duration::from_millis(u64::try_from(self.by.as_millis()).unwrap_or(u64::MAX))
        } else {
            Duration::from_secs(self.by.as_secs() + u64::from(self.by.subsec_millis() >= 500))
        };
        write!(
            f,
            "{} {}",
            if self.forward { "ahead" } else { "back" },
            humantime::format_duration(by)
        )
    }
}

/// The latest time medic records or prints: the end of year 9999 (RFC 3339
/// has four-digit years).
pub fn latest_time() -> Time {
    Time::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// `t + d`, never panicking: a sum past [`latest_time`] is taken as it
/// (a later time is the stricter one: a budget or expiry never loosens on
/// overflow), and no stored date passes what prints.
pub fn later(t: Time, d: Duration) -> Time {
    t.checked_add(d)
        .unwrap_or_else(latest_time)
        .min(latest_time().max(t))
}

/// `t` as RFC 3339 to the second, never panicking: times past
/// [`latest_time`] (which inputs are bounded to stay before) print as it,
/// times before the epoch as the epoch.
pub fn rfc3339(t: Time) -> String {
    humantime::format_rfc3339_seconds(t.clamp(Time::UNIX_EPOCH, latest_time())).to_string()
}

// === Events ===

/// How the audit history groups its records, for filters (the wire's
/// `medic.v1.EventKind`): the engine's events by [`Event::kind`], and the
/// coordinator's own records (sampled denials, config reloads, refused
/// calls) by theirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKind {
    /// A permit was granted.
    Grant,
    /// Sampled denials.
    Deny,
    /// A permit ended by outcome or expiry.
    Outcome,
    /// An operator revoked a permit.
    Admin,
    /// A breaker opened, went half-open or closed.
    Breaker,
    /// A host was quarantined or released.
    Quarantine,
    /// A pause began or ended.
    Pause,
    /// A config reload.
    Config,
    /// A permit was renewed.
    Renew,
    /// An authenticated caller was refused.
    Access,
    /// The wall clock was checked (at start-up) or found stepped.
    Clock,
    /// An operator's temporary override of a limit began or ended.
    Override,
    /// A request began to wait for a human's approval, or its approval was
    /// decided, expired, withdrawn or used.
    Approval,
    /// An alert gate closed or opened for a failure domain or the fleet.
    Gate,
}

// === Overrides ===

/// Which limit an [`Override`] changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideLimit {
    /// The action's fleet-wide cap: the override replaces
    /// `min(max_in_flight, max_in_flight_percent)` with its value.
    MaxInFlight,
    /// The action's rate budget's `count` per `per`.
    RateCount,
}

impl OverrideLimit {
    /// Both limits.
    pub const ALL: [OverrideLimit; 2] = [OverrideLimit::MaxInFlight, OverrideLimit::RateCount];

    /// The config key it overrides (`max_in_flight`, `rate_count`).
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideLimit::MaxInFlight => "max_in_flight",
            OverrideLimit::RateCount => "rate_count",
        }
    }
}

impl fmt::Display for OverrideLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's temporary change of one limit of one action: audited,
/// bounded in time, never past the configured ceiling
/// (`limits.<action>.override_ceiling`), and ended by itself at `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Its id, unique for the coordinator's whole life.
    pub id: u64,
    /// The action whose limit it changes.
    pub action: Action,
    /// Which limit.
    pub limit: OverrideLimit,
    /// The value in force instead of the configured one (held to the
    /// ceiling in force, which a reload may lower).
    pub value: u32,
    /// Who set it.
    pub actor: String,
    /// Why (required).
    pub reason: String,
    /// Since when.
    pub since: Time,
    /// When it ends by itself.
    pub until: Time,
}

// === Approvals ===

/// Where an [`Approval`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for a human, until `expires_at`.
    Pending,
    /// Approved: the agent's next ask with the same request id is granted
    /// if every rule still passes, until `expires_at`.
    Approved,
    /// Rejected by a human: the request, and new ones for the same host,
    /// action and job, are denied until `expires_at`.
    Rejected,
    /// No human decided in time, or an approval was not used in time.
    Expired,
    /// No longer needed: when the agent asked again, the action no longer
    /// needed an approval (fewer in flight, inside its windows).
    Withdrawn,
    /// Used by one grant (`permit`). An approval is used at most once.
    Used,
}

impl ApprovalState {
    /// The snake_case name used in output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Expired => "expired",
            ApprovalState::Withdrawn => "withdrawn",
            ApprovalState::Used => "used",
        }
    }

    /// Whether nothing more can happen to it.
    pub fn is_final(self) -> bool {
        !matches!(self, ApprovalState::Pending | ApprovalState::Approved)
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permit request waiting for (or decided by) a human: the durable queue
/// of pending approvals holds these. Every step is an [`Event`], audited
/// with who and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id, unique for the coordinator's whole life (`medicctl approve ID`).
    pub id: u64,
    /// The request it stands for: the agent asks again with this id.
    pub request_id: RequestId,
    /// The requesting host.
    pub host: HostId,
    /// The action asked for.
    pub action: Action,
    /// The job concerned.
    pub job: String,
    /// The agent's reason for the request.
    pub reason: String,
    /// Whether the permit would be a dry run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Why a human must approve (`always`, `4 in flight would pass 3`).
    pub why: String,
    /// When the request began to wait.
    pub requested_at: Time,
    /// Pending: when it expires undecided. Approved: when it expires
    /// unused. Rejected: until when the rejection holds.
    pub expires_at: Time,
    /// Where it stands.
    pub state: ApprovalState,
    /// Who approved or rejected it (or `coordinator` when it ended by
    /// itself); empty while pending.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub actor: String,
    /// Why, in the decider's words (or the coordinator's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub decision: String,
    /// When it was decided or ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    /// The permit that used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit: Option<PermitId>,
}

/// A durable change of the engine's state. Every mutation of durable state is
/// one of these; the store persists them atomically, and
/// [`crate::DurableState::apply`] rebuilds the state from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A permit was granted. Durable before the reply leaves (I6).
    PermitGranted {
        /// The new permit.
        permit: Permit,
    },
    /// A permit's expiry was pushed out.
    PermitRenewed {
        /// Which permit.
        id: PermitId,
        /// Its new expiry.
        expires_at: Time,
        /// When.
        at: Time,
    },
    /// A permit ended: outcome, expiry or revocation.
    PermitEnded {
        /// Which permit.
        id: PermitId,
        /// The host that held it.
        host: HostId,
        /// Its action.
        action: Action,
        /// The final state.
        state: PermitState,
        /// Who ended it (`host:<id>`, an operator, or `coordinator`).
        actor: String,
        /// Details (the agent's outcome text, the revocation reason).
        detail: String,
        /// When.
        at: Time,
    },
    /// A host was quarantined.
    HostQuarantined(Quarantine),
    /// A host was released from quarantine. Its attempt budget starts afresh.
    HostReleased {
        /// The host.
        host: HostId,
        /// Who released it.
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Time,
    },
    /// A pause began.
    Paused(Pause),
    /// A pause ended, by an operator or by its expiry.
    Resumed {
        /// The pause that ended.
        pause: Pause,
        /// Who resumed (`coordinator` when it expired).
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Time,
    },
    /// A breaker opened.
    BreakerOpened(BreakerTrip),
    /// The wall clock was checked against the boot clock: at start-up,
    /// and whenever it was found stepped. A step moves every recorded time
    /// with it, so that a jump of the clock is never taken for time passing
    /// (no mass expiry, no frozen budget).
    ClockChecked {
        /// The step found, if any.
        step: Option<ClockStep>,
        /// How it was found, for a human.
        detail: String,
        /// The mark later checks compare with.
        mark: ClockMark,
        /// When (after the step).
        at: Time,
    },
    /// An operator's override of a limit began.
    OverrideSet(Override),
    /// An override ended: by an operator, by its expiry, or replaced by a
    /// newer one of the same action and limit.
    OverrideEnded {
        /// The override that ended.
        over: Override,
        /// Who ended it (`coordinator` when it expired).
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Time,
    },
    /// A breaker went half-open: its condition had been clear for
    /// `auto_close_after`, or an operator reset it.
    BreakerHalfOpened {
        /// Which breaker.
        scope: BreakerScope,
        /// Who (`coordinator`, or the operator who reset it).
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Time,
    },
    /// A half-open breaker closed: enough probes succeeded and its
    /// condition is clear.
    BreakerClosed {
        /// Which breaker.
        scope: BreakerScope,
        /// Who closed it.
        actor: String,
        /// Why.
        reason: String,
        /// When.
        at: Time,
    },
    /// An alert gate began or stopped holding requests back for one failure
    /// domain (or the fleet): its query returned series, or it could not
    /// be evaluated and closes on error; or it returned nothing again. Not
    /// durable state: it is the audit trail of what the gates did (a gate
    /// starts closed after a restart until its first evaluation).
    GateChanged {
        /// The gate's name.
        gate: String,
        /// Its label, for a per-domain gate (`rack`).
        label: Option<String>,
        /// The label's value it changed for (`r12`); `None` for a
        /// fleet-wide gate.
        value: Option<String>,
        /// Closed (holding requests back) or open again.
        closed: bool,
        /// What the evaluation returned: the firing series, or the error.
        detail: String,
        /// When.
        at: Time,
    },
    /// A request began to wait for a human's approval (state pending).
    ApprovalRequested(Approval),
    /// A pending approval changed state: approved or rejected by a human,
    /// expired, withdrawn, or used by a grant; an approved one expired or
    /// was used.
    ApprovalChanged {
        /// Which approval.
        id: u64,
        /// Its host.
        host: HostId,
        /// Its new state.
        state: ApprovalState,
        /// Who (`coordinator` for expiries, withdrawals and uses).
        actor: String,
        /// Why, in the decider's words, or what the coordinator saw.
        reason: String,
        /// Approved: until when it may be used. Rejected: until when the
        /// rejection holds.
        expires_at: Option<Time>,
        /// Used: the permit granted.
        permit: Option<PermitId>,
        /// When.
        at: Time,
    },
}

impl Event {
    /// The kind the audit history files it under.
    pub fn kind(&self) -> RecordKind {
        match self {
            Event::PermitGranted { .. } => RecordKind::Grant,
            Event::PermitRenewed { .. } => RecordKind::Renew,
            Event::PermitEnded {
                state: PermitState::Revoked,
                ..
            } => RecordKind::Admin,
            Event::PermitEnded { .. } => RecordKind::Outcome,
            Event::HostQuarantined(_) | Event::HostReleased { .. } => RecordKind::Quarantine,
            Event::Paused(_) | Event::Resumed { .. } => RecordKind::Pause,
            Event::BreakerOpened(_)
            | Event::BreakerHalfOpened { .. }
            | Event::BreakerClosed { .. } => RecordKind::Breaker,
            Event::ClockChecked { .. } => RecordKind::Clock,
            Event::OverrideSet(_) | Event::OverrideEnded { .. } => RecordKind::Override,
            Event::ApprovalRequested(_) | Event::ApprovalChanged { .. } => RecordKind::Approval,
            Event::GateChanged { .. } => RecordKind::Gate,
        }
    }

    /// When the event happened.
    pub fn at(&self) -> Time {
        match self {
            Event::PermitGranted { permit } => permit.granted_at,
            Event::PermitRenewed { at, .. }
            | Event::PermitEnded { at, .. }
            | Event::HostReleased { at, .. }
            | Event::Resumed { at, .. }
            | Event::ClockChecked { at, .. }
            | Event::BreakerHalfOpened { at, .. }
            | Event::BreakerClosed { at, .. }
            | Event::OverrideEnded { at, .. }
            | Event::ApprovalChanged { at, .. }
            | Event::GateChanged { at, .. } => *at,
            Event::OverrideSet(o) => o.since,
            Event::ApprovalRequested(a) => a.requested_at,
            Event::HostQuarantined(q) => q.since,
            Event::Paused(p) => p.since,
            Event::BreakerOpened(t) => t.since,
        }
    }

    /// The host the event concerns, if one.
    pub fn host(&self) -> Option<&HostId> {
        match self {
            Event::PermitGranted { permit } => Some(&permit.host),
            Event::PermitEnded { host, .. } | Event::HostReleased { host, .. } => Some(host),
            Event::HostQuarantined(q) => Some(&q.host),
            Event::ApprovalRequested(a) => Some(&a.host),
            Event::ApprovalChanged { host, .. } => Some(host),
            Event::PermitRenewed { .. }
            | Event::Paused(_)
            | Event::Resumed { .. }
            | Event::BreakerOpened(_)
            | Event::ClockChecked { .. }
            | Event::BreakerHalfOpened { .. }
            | Event::BreakerClosed { .. }
            | Event::OverrideSet(_)
            | Event::OverrideEnded { .. }
            | Event::GateChanged { .. } => None,
        }
    }
}

/// The actor name the engine uses for its own decisions (expiries, breaker
/// trips, budget quarantines).
pub const COORDINATOR_ACTOR: &str = "coordinator";

/// The actor name for an agent acting for its host.
pub fn host_actor(host: &HostId) -> String {
    format!("host:{host}")
}
