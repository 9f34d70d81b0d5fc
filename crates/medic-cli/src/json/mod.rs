//! The `-o json` output: medicctl's own types, not the protocol's, so that
//! scripts see stable snake_case names whatever the wire does.
//!
//! Conventions, for every type here:
//! - times are RFC 3339 strings in UTC (`2026-11-26T17:42:01Z`, fractional
//!   seconds only when not whole); a time that is absent is `null`;
//! - spans are numbers of seconds (fractional when not whole), in fields
//!   named `*_seconds`;
//! - enum values are snake_case names without their protocol prefix
//!   (`reboot_host`, `paused`, `quarantine`); a value this medicctl does
//!   not know (a newer coordinator) reads `unknown(N)`;
//! - labels and selectors are objects of strings;
//! - lists are wrapped in an object (`{"hosts": [...]}`) so that fields can
//!   be added without breaking a script.
//!
//! Fields are only ever added, never renamed or removed.
//!
//! One file per command, named as in `commands/`, holds its output types
//! and the objects it is the home of (`pause`: [`Pause`], `permits`:
//! [`Permit`], ...); here, the helpers they share.

mod approvals;
mod breaker;
mod explain;
mod history;
mod hosts;
mod pause;
mod permits;
mod quarantine;
mod reload;
mod status;

use medic_proto::pb::v1 as pb;

pub use approvals::{Approval, Approvals, approval_state};
pub use breaker::{Breaker, BreakersClosed};
pub use explain::{Denial, Explain, ExplainAll};
pub use history::{Event, History, Payload};
pub use hosts::{Host, Hosts, Problem};
pub use pause::{Override, Pause, Paused, Resumed, Scope};
pub use permits::{Permit, Permits, Revoked};
pub use quarantine::{Quarantine, Quarantined, Released};
pub use reload::{ConfigError, Reload};
pub use status::{ActionStatus, ClockStep, HostCounts, Status};

use crate::format::{enum_name, std_duration, system_time};

// === Helpers ===

/// An optional wire time as RFC 3339.
pub fn time(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.map(|t| humantime::format_rfc3339(system_time(t)).to_string())
}

/// An optional wire span in seconds.
pub fn seconds(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| std_duration(d).as_secs_f64())
}

/// `Some(s)` unless `s` is empty.
fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// `restart_job`, `reboot_host`, a custom action's name; `None` for
/// neither an enum value nor a name. The name wins: it is what coordinators
/// that know custom actions fill in.
pub fn action(raw: i32, name: &str) -> Option<String> {
    if !name.is_empty() {
        return Some(name.to_owned());
    }
    match pb::Action::try_from(raw) {
        Ok(pb::Action::Unspecified) => None,
        a => Some(enum_name(a.ok().map(|a| a.as_str_name()), raw, "ACTION_")),
    }
}

/// Like [`action`], for a required action (`unknown(N)` when unreadable).
pub fn action_name(raw: i32, name: &str) -> String {
    action(raw, name).unwrap_or_else(|| format!("unknown({raw})"))
}

/// `max_in_flight` or `rate_count`.
pub fn override_limit(raw: i32) -> String {
    enum_name(
        pb::OverrideLimit::try_from(raw)
            .ok()
            .map(|l| l.as_str_name()),
        raw,
        "OVERRIDE_LIMIT_",
    )
}

/// `active`, `succeeded`, ... `revoked`.
pub fn permit_state(raw: i32) -> String {
    enum_name(
        pb::PermitState::try_from(raw).ok().map(|s| s.as_str_name()),
        raw,
        "PERMIT_STATE_",
    )
}

/// `paused`, `quarantined`, ... (a denial's rule).
pub fn deny_reason(raw: i32) -> String {
    enum_name(
        pb::DenyReason::try_from(raw).ok().map(|s| s.as_str_name()),
        raw,
        "DENY_REASON_",
    )
}

/// `grant`, `deny`, ... `renew`.
pub fn event_kind(raw: i32) -> String {
    enum_name(
        pb::EventKind::try_from(raw).ok().map(|s| s.as_str_name()),
        raw,
        "EVENT_KIND_",
    )
}

/// `mutual_tls`, `plaintext_loopback`, `insecure`.
pub fn transport_security(raw: i32) -> String {
    enum_name(
        pb::TransportSecurity::try_from(raw)
            .ok()
            .map(|s| s.as_str_name()),
        raw,
        "TRANSPORT_SECURITY_",
    )
}

/// `manual`, `attempt_budget`, `permit_expired`, `gave_up`.
pub fn quarantine_cause(raw: i32) -> String {
    enum_name(
        pb::QuarantineCause::try_from(raw)
            .ok()
            .map(|s| s.as_str_name()),
        raw,
        "QUARANTINE_CAUSE_",
    )
}

/// `unhealthy_fraction`, `failure_fraction`.
pub fn breaker_cause(raw: i32) -> String {
    enum_name(
        pb::BreakerCause::try_from(raw)
            .ok()
            .map(|s| s.as_str_name()),
        raw,
        "BREAKER_CAUSE_",
    )
}

/// `fleet`, or `LABEL=VALUE` for a failure domain: the syntax
/// `medicctl breaker reset --scope` takes.
pub fn breaker_scope(s: Option<&pb::BreakerScope>) -> String {
    use pb::breaker_scope::Kind;
    match s.and_then(|s| s.kind.as_ref()) {
        Some(Kind::Fleet(_)) => "fleet".to_owned(),
        Some(Kind::Domain(d)) => format!("{}={}", d.label, d.value),
        None => "unknown".to_owned(),
    }
}
