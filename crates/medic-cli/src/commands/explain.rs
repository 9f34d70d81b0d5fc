//! `medicctl explain`: every rule that would deny a host an action now.

use std::time::SystemTime;

use medic_proto::pb::v1 as pb;

use super::Ctx;
use crate::cli::ExplainArgs;
use crate::error::Error;
use crate::format::{self, Table};
use crate::json;

pub(super) async fn explain(ctx: &mut Ctx<'_>, a: ExplainArgs) -> Result<(), Error> {
    let req = pb::ExplainRequest {
        host_id: a.host,
        action: pb::Action::from(a.action).into(),
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.explain(r).await })
        .await?;
    if ctx.is_json() {
        return ctx.json(&json::Explain::from(&r));
    }
    let action = json::action_name(r.action);
    if r.would_grant {
        writeln!(
            ctx.out,
            "{} would be granted {action} now: no rule denies it",
            r.host_id
        )?;
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
