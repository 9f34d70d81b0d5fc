//! Errors of the engine's API. Denials are not errors (they are
//! [`crate::Decision::Denied`]); these are calls that make no sense in the
//! current state, and invalid input.

use std::fmt;

use crate::types::{FencingToken, HostId, PermitId, PermitState, RequestId};

/// Input from outside (wire, CLI) that fails validation. Names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidInput {
    /// The offending field's name or path (`request.host`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidInput {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, with its field nested under `parent` (`permit` +
    /// `id` = `permit.id`).
    pub fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

/// A call the engine refuses because of the state it is in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No permit with this id is known (never granted, or forgotten after the
    /// retention period).
    #[error("permit {0} is unknown")]
    UnknownPermit(PermitId),
    /// The caller presented a token that is not the permit's (I5).
    #[error("permit {id}: fencing token {presented} is stale (the permit carries {current})")]
    StaleToken {
        /// The permit.
        id: PermitId,
        /// What the caller presented.
        presented: FencingToken,
        /// The permit's token.
        current: FencingToken,
    },
    /// A host tried to act on another host's permit.
    #[error("permit {id} belongs to host {holder}, not {caller}")]
    WrongHost {
        /// The permit.
        id: PermitId,
        /// Its holder.
        holder: HostId,
        /// Who asked.
        caller: HostId,
    },
    /// The permit has ended and cannot be renewed or ended again.
    #[error("permit {id} has already ended ({state})")]
    PermitEnded {
        /// The permit.
        id: PermitId,
        /// Its final state.
        state: PermitState,
    },
    /// The outcome does not fit the permit's mode: only dry-run permits
    /// end DRY_RUN, and a dry-run permit acted on nothing, so it cannot
    /// have succeeded or failed.
    #[error(
        "permit {id} was granted in {mode} mode and cannot end {outcome}: {}",
        if *dry_run {
            "a dry-run permit authorises no action; report dry_run (or aborted)"
        } else {
            "report what the action did (succeeded, failed), or aborted if nothing was done"
        }
    )]
    OutcomeNotForMode {
        /// The permit.
        id: PermitId,
        /// Whether it was granted in dry-run mode.
        dry_run: bool,
        /// Its mode as the config names it (`enforce`, `dry-run`).
        mode: &'static str,
        /// The outcome reported.
        outcome: &'static str,
    },
    /// A reset named breakers that are already half-open: a reset moves an
    /// open breaker to half-open, and only its probes close it.
    #[error(
        "the breaker for {0} is already half-open: its probe permits are going out, and it \
         closes once enough of them succeeded with its condition clear"
    )]
    BreakerAlreadyHalfOpen(String),
    /// A request id was reused for a different request.
    #[error(
        "request_id {request_id} was already used for {previous}; use a new request_id for a new request"
    )]
    RequestIdConflict {
        /// The reused id.
        request_id: RequestId,
        /// What it was first used for.
        previous: String,
    },
    /// No pause with this id or scope is in force.
    #[error("no pause matches {0}")]
    NoSuchPause(String),
    /// The host is not quarantined.
    #[error("host {0} is not quarantined")]
    NotQuarantined(HostId),
    /// The host is already quarantined.
    #[error("host {0} is already quarantined")]
    AlreadyQuarantined(HostId),
    /// No breaker matching the scope is open.
    #[error("no breaker is open{0}")]
    NoOpenBreaker(ScopeSuffix),
    /// No override with this id is in force (it never was, it expired, or
    /// it was ended).
    #[error("no override {0} is in force (medicctl status lists those that are)")]
    NoSuchOverride(u64),
    /// No approval has this id (it never existed, or it was decided or
    /// ended so long ago that it was forgotten).
    #[error("no approval {0} is known (medicctl approvals --all lists the recent ones)")]
    NoSuchApproval(u64),
    /// The approval is no longer pending: someone decided it, or it
    /// expired, was withdrawn or was used. Deciding it again changes
    /// nothing.
    #[error("approval {id} is already {state}{by}: {reason}")]
    ApprovalNotPending {
        /// Which approval.
        id: u64,
        /// Where it stands.
        state: crate::types::ApprovalState,
        /// ` by <actor> at <time>`, or empty.
        by: String,
        /// The decider's or the coordinator's words.
        reason: String,
    },
    /// An override would pass the configured ceiling.
    #[error(
        "{limit} of {action} may be overridden up to {ceiling} \
         (limits.{action}.override_ceiling.{limit}), not {value}; raise the ceiling in the \
         configuration (reviewed, reloaded) to go higher"
    )]
    OverrideAboveCeiling {
        /// The action.
        action: crate::types::Action,
        /// The limit.
        limit: crate::types::OverrideLimit,
        /// The value asked for.
        value: u32,
        /// The ceiling in force.
        ceiling: u32,
    },
    /// Input failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
}

/// Renders an optional scope as ` for <scope>` in messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeSuffix(pub Option<String>);

impl fmt::Display for ScopeSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(s) => write!(f, " for {s}"),
            None => Ok(()),
        }
    }
}
