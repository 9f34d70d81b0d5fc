//! `medicctl explain`: every rule that would deny a host an action now.

use std::time::SystemTime;

use medic_proto::pb::v1 as pb;

use super::Ctx;
use crate::cli::{ActionArg, ExplainArgs};
use crate::error::Error;
use crate::format::{self, Table};
use crate::json;

pub(super) async fn explain(ctx: &mut Ctx<'_>, a: ExplainArgs) -> Result<(), Error> {
    let Some(action) = a.action else {
        return explain_all(ctx, a.host).await;
    };
    let r = ask(ctx, &a.host, action).await?;
    if ctx.is_json() {
        return ctx.json(&json::Explain::from(&r));
    }
    print(ctx, &r)
}

/// Without `--action`: every action, one after the other (in JSON, one
/// object keyed by action). Every answer is fetched before anything is
/// printed, so a failed call prints nothing.
async fn explain_all(ctx: &mut Ctx<'_>, host: String) -> Result<(), Error> {
    let mut answers = Vec::new();
    for action in configured_actions(ctx).await? {
        answers.push(ask(ctx, &host, action).await?);
    }
    if ctx.is_json() {
        let all: json::ExplainAll = answers
            .iter()
            .map(|r| {
                (
                    json::action_name(r.action, &r.action_name),
                    json::Explain::from(r),
                )
            })
            .collect();
        return ctx.json(&all);
    }
    for (i, r) in answers.iter().enumerate() {
        if i > 0 {
            writeln!(ctx.out)?;
        }
        print(ctx, r)?;
    }
    Ok(())
}

/// The actions the coordinator is configured with, from its status: the
/// built-ins and its custom actions.
async fn configured_actions(ctx: &Ctx<'_>) -> Result<Vec<ActionArg>, Error> {
    let status = ctx.status_response().await?.status.unwrap_or_default();
    let mut out = Vec::new();
    for a in &status.actions {
        let name = json::action_name(a.action, &a.action_name);
        let parsed = crate::cli::parse_action(&name).map_err(|e| {
            Error::Failed(format!(
                "the coordinator listed an action medicctl cannot read: {e}"
            ))
        })?;
        out.push(parsed);
    }
    Ok(out)
}

/// One `Explain` call.
async fn ask(ctx: &Ctx<'_>, host: &str, action: ActionArg) -> Result<pb::ExplainResponse, Error> {
    let req = pb::ExplainRequest {
        host_id: host.to_owned(),
        action: action.wire().0,
        action_name: action.wire().1,
    };
    ctx.conn
        .unary(req, |mut c, r| async move { c.explain(r).await })
        .await
}

/// One answer for people: a verdict line, then the denials.
fn print(ctx: &mut Ctx<'_>, r: &pb::ExplainResponse) -> Result<(), Error> {
    let action = json::action_name(r.action, &r.action_name);
    if r.would_grant {
        writeln!(
            ctx.out,
            "{} would be granted {action} now: no rule denies it",
            r.host_id
        )?;
        print_notes(ctx, r)?;
        return Ok(());
    }
    let n = r.denials.len();
    writeln!(
        ctx.out,
        "{} would be denied {action} now: {n} rule{} {}",
        r.host_id,
        format::plural(n),
        if n == 1 { "denies" } else { "deny" }
    )?;
    denial_table(&r.denials, SystemTime::now()).write(ctx.out)?;
    print_notes(ctx, r)
}

/// Lines about what denies nothing but should be known (a gate that lets
/// requests through because it cannot be evaluated).
fn print_notes(ctx: &mut Ctx<'_>, r: &pb::ExplainResponse) -> Result<(), Error> {
    for note in &r.notes {
        writeln!(ctx.out, "note: {note}")?;
    }
    Ok(())
}

/// Denials, one row each, with when each clears.
fn denial_table(denials: &[pb::Denial], now: SystemTime) -> Table {
    let mut t = Table::new(&["RULE", "CLEARS", "WHY"]);
    for d in denials {
        let clears = match d.retry_after.as_ref().map(format::std_duration) {
            None => "when a human acts".to_owned(),
            Some(d) if d.is_zero() => "may have cleared".to_owned(),
            Some(d) => format!("in {} ({})", format::duration(d), format::absolute(now + d)),
        };
        t.row(vec![json::deny_reason(d.reason), clears, d.message.clone()]);
    }
    t
}
