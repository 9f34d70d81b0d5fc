//! `medicctl approvals`: requests waiting for a human; `medicctl approve`
//! and `medicctl reject`: a human's decision on one.

use std::time::SystemTime;

use medic_proto::pb::v1 as pb;

use super::Ctx;
use super::show::approval_table;
use crate::cli::{ApprovalsArgs, DecideArgs};
use crate::error::Error;
use crate::format::{self, system_time};
use crate::json;

pub(super) async fn list(ctx: &mut Ctx<'_>, a: ApprovalsArgs) -> Result<(), Error> {
    let req = pb::ListApprovalsRequest { all: a.all };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.list_approvals(r).await })
        .await?;
    if ctx.is_json() {
        return ctx.json(&json::Approvals {
            approvals: r.approvals.iter().map(json::Approval::from).collect(),
        });
    }
    if r.approvals.is_empty() {
        let none = if a.all {
            "no approvals (none requested recently)"
        } else {
            "no request is waiting for a human's approval"
        };
        writeln!(ctx.out, "{none}")?;
        return Ok(());
    }
    // Relative times on the coordinator's clock.
    let now = ctx
        .status_response()
        .await
        .ok()
        .and_then(|s| s.server_time)
        .as_ref()
        .map_or_else(SystemTime::now, system_time);
    approval_table(&r.approvals, now).write(ctx.out)?;
    if r.approvals
        .iter()
        .any(|a| a.state() == pb::ApprovalState::Pending)
    {
        writeln!(
            ctx.out,
            "\n`medicctl approve ID --reason ...` grants when every rule still passes; \
             `medicctl reject ID --reason ...` denies"
        )?;
    }
    Ok(())
}

pub(super) async fn decide(ctx: &mut Ctx<'_>, a: DecideArgs, approve: bool) -> Result<(), Error> {
    let req = pb::DecideApprovalRequest {
        approval_id: a.id,
        reason: a.reason,
    };
    let r = if approve {
        ctx.conn
            .unary(req, |mut c, r| async move { c.approve(r).await })
            .await?
    } else {
        ctx.conn
            .unary(req, |mut c, r| async move { c.reject(r).await })
            .await?
    };
    let approval = r.approval.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Approval::from(&approval));
    }
    let now = approval
        .decided_at
        .as_ref()
        .map_or_else(SystemTime::now, system_time);
    let until = format::opt_time(approval.expires_at.as_ref(), now, "-");
    let what = format!(
        "{} of job {} on {}",
        json::action_name(approval.action, &approval.action_name),
        approval.job,
        approval.host_id
    );
    if approve {
        writeln!(
            ctx.out,
            "approved {} ({what}): granted when its agent asks again, if every rule still \
             passes; unused, the approval expires {until}",
            approval.approval_id
        )?;
    } else {
        writeln!(
            ctx.out,
            "rejected {} ({what}): it and new requests for that host, action and job are \
             denied until {until}",
            approval.approval_id
        )?;
    }
    Ok(())
}
