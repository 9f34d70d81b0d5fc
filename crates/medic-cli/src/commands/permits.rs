//! `medicctl permits` and `medicctl revoke`: list permits, and end an
//! active one.

use std::time::SystemTime;

use medic_proto::pb::v1 as pb;

use super::page::{self, Page};
use super::{Ctx, action_filter};
use crate::cli::{PermitsArgs, RevokeArgs};
use crate::error::Error;
use crate::format::{self, Table, or_dash};
use crate::json;

/// Every state a permit can be in, for `--all-states`.
const ALL_STATES: [pb::PermitState; 7] = [
    pb::PermitState::Active,
    pb::PermitState::Succeeded,
    pb::PermitState::Failed,
    pb::PermitState::Aborted,
    pb::PermitState::DryRun,
    pb::PermitState::Expired,
    pb::PermitState::Revoked,
];

pub(super) async fn permits(ctx: &mut Ctx<'_>, a: PermitsArgs) -> Result<(), Error> {
    // No states: the server's default, active permits only.
    let states: Vec<i32> = if a.all_states {
        ALL_STATES.into_iter().map(Into::into).collect()
    } else {
        Vec::new()
    };
    let conn = &ctx.conn;
    let permits = page::all(|page_token, page_size| {
        let req = pb::ListPermitsRequest {
            host_id: a.host.clone().unwrap_or_default(),
            action: action_filter(a.action).0,
            action_name: action_filter(a.action).1,
            states: states.clone(),
            page_size,
            page_token,
        };
        conn.unary(req, |mut c, r| async move { c.list_permits(r).await })
    })
    .await?;
    if ctx.is_json() {
        return ctx.json(&json::Permits {
            permits: permits.iter().map(json::Permit::from).collect(),
        });
    }
    if permits.is_empty() {
        writeln!(
            ctx.out,
            "{}",
            if a.all_states {
                "no permits match"
            } else {
                "no active permits match"
            }
        )?;
        return Ok(());
    }
    permit_table(&permits, SystemTime::now()).write(ctx.out)?;
    Ok(())
}

/// Permits, one row each.
fn permit_table(permits: &[pb::Permit], now: SystemTime) -> Table {
    let mut t = Table::new(&[
        "PERMIT", "HOST", "ACTION", "JOB", "STATE", "GRANTED", "EXPIRES", "REASON",
    ]);
    for p in permits {
        let mut state = json::permit_state(p.state);
        if p.dry_run {
            state.push_str(" (dry run)");
        }
        t.row(vec![
            p.permit_id.clone(),
            p.host_id.clone(),
            json::action_name(p.action, &p.action_name),
            or_dash(&p.job),
            state,
            format::opt_time(p.granted_at.as_ref(), now, "-"),
            if p.state == i32::from(pb::PermitState::Active) {
                format::opt_time(p.expires_at.as_ref(), now, "-")
            } else {
                "-".to_owned()
            },
            p.reason.clone(),
        ]);
    }
    t
}

pub(super) async fn revoke(ctx: &mut Ctx<'_>, a: RevokeArgs) -> Result<(), Error> {
    let req = pb::RevokePermitRequest {
        permit_id: a.permit_id,
        reason: a.reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.revoke_permit(r).await })
        .await?;
    let p = r.permit.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Revoked {
            permit: json::Permit::from(&p),
        });
    }
    writeln!(
        ctx.out,
        "revoked {} ({} on {}); the agent aborts before any irreversible step",
        p.permit_id,
        json::action_name(p.action, &p.action_name),
        p.host_id
    )?;
    Ok(())
}

impl Page for pb::ListPermitsResponse {
    type Item = pb::Permit;

    fn into_page(self) -> (Vec<pb::Permit>, String) {
        (self.permits, self.next_page_token)
    }
}
