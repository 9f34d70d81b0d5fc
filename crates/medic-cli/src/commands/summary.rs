//! One line saying what an audit event records (`history`, `watch`).

use medic_proto::pb::v1 as pb;

use super::show::scope_text;
use crate::format;
use crate::json;

/// One line saying what `e` records.
pub(super) fn summary(e: &pb::Event) -> String {
    use pb::event::Payload as P;
    let at = |t: Option<&prost_types::Timestamp>| format::opt_absolute(t, "-");
    match &e.payload {
        Some(P::PermitGranted(g)) => {
            let p = g.permit.clone().unwrap_or_default();
            with_reason(
                format!(
                    "granted {} {} for job {}{}",
                    json::action_name(p.action, &p.action_name),
                    p.permit_id,
                    p.job,
                    if p.dry_run { " (dry run)" } else { "" }
                ),
                &p.reason,
            )
        }
        Some(P::PermitRenewed(r)) => {
            format!(
                "renewed {} until {}",
                r.permit_id,
                at(r.expires_at.as_ref())
            )
        }
        Some(P::PermitEnded(x)) => with_reason(
            format!(
                "{} {} {}",
                json::action_name(x.action, &x.action_name),
                x.permit_id,
                json::permit_state(x.state)
            ),
            &x.detail,
        ),
        Some(P::HostQuarantined(q)) => with_reason(
            format!("quarantined ({})", json::quarantine_cause(q.cause)),
            &q.reason,
        ),
        Some(P::HostReleased(r)) => with_reason("released from quarantine".to_owned(), &r.reason),
        Some(P::Paused(p)) => with_reason(
            format!(
                "paused {} (pause {}){}",
                scope_text(p.scope.as_ref()),
                p.pause_id,
                p.until
                    .as_ref()
                    .map(|u| format!(" until {}", at(Some(u))))
                    .unwrap_or_default()
            ),
            &p.reason,
        ),
        Some(P::Resumed(r)) => {
            let p = r.pause.clone().unwrap_or_default();
            with_reason(
                format!(
                    "resumed {} (pause {})",
                    scope_text(p.scope.as_ref()),
                    p.pause_id
                ),
                &r.reason,
            )
        }
        Some(P::GateChanged(g)) => with_reason(
            format!(
                "gate {}{} {}",
                g.gate,
                if g.value.is_empty() {
                    String::new()
                } else {
                    format!(" for {}={}", g.label, g.value)
                },
                if g.closed { "closed" } else { "open" }
            ),
            &g.detail,
        ),
        Some(P::ApprovalRequested(a)) => with_reason(
            format!(
                "approval {} requested: {} of {} on {} ({})",
                a.approval_id,
                json::action_name(a.action, &a.action_name),
                a.job,
                a.host_id,
                a.why
            ),
            &a.reason,
        ),
        Some(P::ApprovalChanged(c)) => with_reason(
            match json::approval_state(c.state).as_str() {
                "used" => format!("approval {} used by permit {}", c.approval_id, c.permit_id),
                state => format!("approval {} {state}", c.approval_id),
            },
            &c.reason,
        ),
        Some(P::OverrideSet(o)) => with_reason(
            format!(
                "override {}: {} {} = {} until {}",
                o.override_id,
                json::action_name(o.action, &o.action_name),
                json::override_limit(o.limit),
                o.value,
                at(o.until.as_ref())
            ),
            &o.reason,
        ),
        Some(P::OverrideEnded(x)) => {
            let o = x.r#override.clone().unwrap_or_default();
            with_reason(
                format!(
                    "override {} ended ({} {})",
                    o.override_id,
                    json::action_name(o.action, &o.action_name),
                    json::override_limit(o.limit)
                ),
                &x.reason,
            )
        }
        Some(P::BreakerOpened(b)) => with_reason(
            format!(
                "breaker {} opened ({})",
                json::breaker_scope(b.scope.as_ref()),
                json::breaker_cause(b.cause)
            ),
            &b.detail,
        ),
        Some(P::BreakerHalfOpened(b)) => with_reason(
            format!(
                "breaker {} half-open",
                json::breaker_scope(b.scope.as_ref())
            ),
            &b.reason,
        ),
        Some(P::BreakerClosed(b)) => with_reason(
            format!("breaker {} closed", json::breaker_scope(b.scope.as_ref())),
            &b.reason,
        ),
        Some(P::ClockChecked(c)) => clock_checked(c),
        Some(P::Denied(d)) => denied(d),
        Some(P::AccessDenied(a)) => access_denied(a, &e.reason),
        Some(P::ConfigReloaded(c)) => config_reloaded(c, &e.reason),
        None => e.reason.clone(),
    }
}

/// `what: why`, or `what` when there is no why.
fn with_reason(what: String, why: &str) -> String {
    if why.is_empty() {
        what
    } else {
        format!("{what}: {why}")
    }
}

fn clock_checked(c: &pb::event::ClockChecked) -> String {
    match &c.step {
        Some(step) => with_reason(
            format!(
                "CLOCK STEPPED {} {}; recorded times moved with it",
                format::step_direction(step.forward),
                format::opt_duration(step.by.as_ref(), "?")
            ),
            &c.detail,
        ),
        None => with_reason("clock checked".to_owned(), &c.detail),
    }
}

fn denied(d: &pb::event::Denied) -> String {
    let denial = d.denial.clone().unwrap_or_default();
    with_reason(
        format!(
            "{} denied ({}){}",
            json::action_name(d.action, &d.action_name),
            json::deny_reason(denial.reason),
            if d.count > 1 {
                format!(" x{}", d.count)
            } else {
                String::new()
            }
        ),
        &denial.message,
    )
}

fn access_denied(a: &pb::event::AccessDenied, reason: &str) -> String {
    format!(
        "REFUSED {} to {}{}{}: {reason}",
        a.call,
        a.identity,
        if a.peer.is_empty() {
            String::new()
        } else {
            format!(" from {}", a.peer)
        },
        if a.count > 1 {
            format!(" ({} times)", a.count)
        } else {
            String::new()
        },
    )
}

fn config_reloaded(c: &pb::event::ConfigReloaded, reason: &str) -> String {
    if c.ok {
        return with_reason("config reloaded".to_owned(), reason);
    }
    format!(
        "config reload rejected: {}",
        c.errors
            .iter()
            .map(|e| if e.key.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.key, e.message)
            })
            .collect::<Vec<_>>()
            .join("; ")
    )
}
