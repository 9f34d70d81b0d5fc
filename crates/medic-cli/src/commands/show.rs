//! What several commands print: a pause's scope in words, and the tables
//! of pauses and of breakers.

use std::time::SystemTime;

use medic_proto::pb::v1 as pb;

use crate::format::{self, Table, or_dash};
use crate::json;

/// `fleet`, or the selector (`rack=r12`), and `, reboot_host only` for an
/// action.
pub(super) fn scope_text(s: Option<&pb::Scope>) -> String {
    let mut text = match s {
        Some(s) if !s.selector.is_empty() => format::labels(&s.selector),
        _ => "fleet".to_owned(),
    };
    if let Some(a) = s.and_then(|s| json::action(s.action, &s.action_name)) {
        text.push_str(&format!(", {a} only"));
    }
    text
}

/// Pauses, one row each (`status`, `resume`).
pub(super) fn pause_table(pauses: &[pb::Pause], now: SystemTime) -> Table {
    let mut t = Table::new(&["ID", "SCOPE", "BY", "SINCE", "UNTIL", "REASON"]);
    for p in pauses {
        t.row(vec![
            p.pause_id.to_string(),
            scope_text(p.scope.as_ref()),
            or_dash(&p.actor),
            format::opt_time(p.since.as_ref(), now, "-"),
            format::opt_time(p.until.as_ref(), now, "until resumed"),
            p.reason.clone(),
        ]);
    }
    t
}

/// Overrides, one row each (`status`, `override end`).
pub(super) fn override_table(overrides: &[pb::Override], now: SystemTime) -> Table {
    let mut t = Table::new(&["ID", "ACTION", "LIMIT", "VALUE", "BY", "UNTIL", "REASON"]);
    for o in overrides {
        t.row(vec![
            o.override_id.to_string(),
            json::action_name(o.action, &o.action_name),
            json::override_limit(o.limit),
            o.value.to_string(),
            or_dash(&o.actor),
            format::opt_time(o.until.as_ref(), now, "-"),
            o.reason.clone(),
        ]);
    }
    t
}

/// Approvals, one row each (`approvals`, `status`).
pub(super) fn approval_table(approvals: &[pb::Approval], now: SystemTime) -> Table {
    let mut t = Table::new(&[
        "ID",
        "STATE",
        "HOST",
        "ACTION",
        "JOB",
        "ASKED",
        "EXPIRES",
        "WHY",
        "DECIDED BY",
    ]);
    for a in approvals {
        let action = json::action_name(a.action, &a.action_name);
        t.row(vec![
            a.approval_id.to_string(),
            json::approval_state(a.state),
            a.host_id.clone(),
            if a.dry_run {
                format!("{action} (dry run)")
            } else {
                action
            },
            a.job.clone(),
            format::opt_time(a.requested_at.as_ref(), now, "-"),
            format::opt_time(a.expires_at.as_ref(), now, "-"),
            a.why.clone(),
            if a.actor.is_empty() {
                "-".to_owned()
            } else {
                format!("{}: {}", a.actor, a.decision)
            },
        ]);
    }
    t
}

/// Breakers, one row each (`status`, `breaker reset`).
pub(super) fn breaker_table(breakers: &[pb::BreakerTrip], now: SystemTime) -> Table {
    let mut t = Table::new(&["SCOPE", "STATE", "CAUSE", "SINCE", "WHY"]);
    for b in breakers {
        t.row(vec![
            json::breaker_scope(b.scope.as_ref()),
            match &b.half_open {
                None => "open".to_owned(),
                Some(h) => format!("half-open ({} ok)", h.successes),
            },
            json::breaker_cause(b.cause),
            format::opt_time(b.since.as_ref(), now, "-"),
            b.detail.clone(),
        ]);
    }
    t
}
