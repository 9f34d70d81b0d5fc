//! `medicctl override`: raise or lower one limit for a bounded time, and
//! `medicctl override end`: stop such an override early.

use std::time::SystemTime;

use medic_proto::convert::to_duration;
use medic_proto::pb::v1 as pb;

use super::Ctx;
use super::show::override_table;
use crate::cli::{OverrideArgs, OverrideCommand, OverrideEndArgs};
use crate::error::Error;
use crate::format::{self, system_time};
use crate::json;

pub(super) async fn run(ctx: &mut Ctx<'_>, a: OverrideArgs) -> Result<(), Error> {
    if let Some(OverrideCommand::End(e)) = a.command {
        return end(ctx, e).await;
    }
    // clap cannot require these only when no subcommand is given.
    let mut missing = Vec::new();
    if a.action.is_none() {
        missing.push("--action ACTION");
    }
    if a.max_in_flight.is_none() && a.rate_count.is_none() {
        missing.push("--max-in-flight N or --rate-count N");
    }
    if a.duration.is_none() {
        missing.push("--for DURATION");
    }
    if a.reason.is_none() {
        missing.push("--reason TEXT");
    }
    let (Some(action), Some(duration), Some(reason)) = (a.action, a.duration, a.reason) else {
        return Err(Error::Usage(format!(
            "an override needs {} (see medicctl override --help)",
            missing.join(", ")
        )));
    };
    let (limit, value) = match (a.max_in_flight, a.rate_count) {
        (Some(n), _) => (pb::OverrideLimit::MaxInFlight, n),
        (None, Some(n)) => (pb::OverrideLimit::RateCount, n),
        (None, None) => {
            return Err(Error::Usage(format!(
                "an override needs {} (see medicctl override --help)",
                missing.join(", ")
            )));
        }
    };
    let (action, action_name) = action.wire();
    let req = pb::SetOverrideRequest {
        action,
        action_name,
        limit: limit.into(),
        value,
        duration: Some(to_duration(duration)),
        reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.set_override(r).await })
        .await?;
    let o = r.r#override.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Override::from(&o));
    }
    let now = o.since.as_ref().map_or_else(SystemTime::now, system_time);
    writeln!(
        ctx.out,
        "override {}: {} {} = {} until {}",
        o.override_id,
        json::action_name(o.action, &o.action_name),
        json::override_limit(o.limit),
        o.value,
        format::opt_time(o.until.as_ref(), now, "-"),
    )?;
    writeln!(
        ctx.out,
        "it ends by itself then; `medicctl override end {}` ends it sooner",
        o.override_id
    )?;
    Ok(())
}

async fn end(ctx: &mut Ctx<'_>, a: OverrideEndArgs) -> Result<(), Error> {
    let req = pb::EndOverrideRequest {
        override_id: a.id,
        reason: a.reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.end_override(r).await })
        .await?;
    let o = r.r#override.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Override::from(&o));
    }
    writeln!(ctx.out, "ended override:")?;
    override_table(std::slice::from_ref(&o), SystemTime::now()).write(ctx.out)?;
    Ok(())
}
