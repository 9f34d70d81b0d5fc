//! `medicctl pause` and `medicctl resume`: stop grants within a scope, and
//! end such stops.

use std::time::SystemTime;

use medic_proto::convert::to_duration;
use medic_proto::pb::v1 as pb;

use super::show::{pause_table, scope_text};
use super::{Ctx, scope};
use crate::cli::{PauseArgs, ResumeArgs};
use crate::error::Error;
use crate::format::{self, system_time};
use crate::json;

pub(super) async fn pause(ctx: &mut Ctx<'_>, a: PauseArgs) -> Result<(), Error> {
    let req = pb::PauseRequest {
        scope: Some(scope(&a.selector, a.action)),
        reason: a.reason,
        duration: a.duration.map(to_duration),
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.pause(r).await })
        .await?;
    let p = r.pause.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Paused {
            pause: json::Pause::from(&p),
        });
    }
    let now = p.since.as_ref().map_or_else(SystemTime::now, system_time);
    writeln!(
        ctx.out,
        "paused {} (pause {}), {}",
        scope_text(p.scope.as_ref()),
        p.pause_id,
        match p.until.as_ref() {
            Some(u) => format!("until {}", format::time(system_time(u), now)),
            None => "until resumed".to_owned(),
        }
    )?;
    writeln!(
        ctx.out,
        "permits already granted stay valid: `medicctl permits`, `medicctl revoke`"
    )?;
    Ok(())
}

pub(super) async fn resume(ctx: &mut Ctx<'_>, a: ResumeArgs) -> Result<(), Error> {
    let targets = resume_targets(ctx, &a).await?;
    let mut resumed = Vec::new();
    for target in targets {
        let req = pb::ResumeRequest {
            target: Some(target),
            reason: a.reason.clone(),
        };
        match ctx
            .conn
            .unary(req, |mut c, r| async move { c.resume(r).await })
            .await
        {
            Ok(r) => resumed.extend(r.resumed),
            // With --all, a pause that lapsed since we listed it is no error.
            Err(Error::Rpc {
                code: "NOT_FOUND", ..
            }) if a.all => {}
            Err(e) => return Err(e),
        }
    }
    if ctx.is_json() {
        return ctx.json(&json::Resumed {
            resumed: resumed.iter().map(json::Pause::from).collect(),
        });
    }
    writeln!(ctx.out, "resumed {} pause(s):", resumed.len())?;
    pause_table(&resumed, SystemTime::now()).write(ctx.out)?;
    Ok(())
}

/// What to resume: every pause in force (`--all`), one by id, or the
/// pauses of exactly one scope.
async fn resume_targets(
    ctx: &Ctx<'_>,
    a: &ResumeArgs,
) -> Result<Vec<pb::resume_request::Target>, Error> {
    use pb::resume_request::Target;
    if a.all {
        let s = ctx.status_response().await?.status.unwrap_or_default();
        if s.pauses.is_empty() {
            return Err(Error::Rpc {
                code: "NOT_FOUND",
                message: "no pause is in force".to_owned(),
            });
        }
        return Ok(s
            .pauses
            .iter()
            .map(|p| Target::PauseId(p.pause_id))
            .collect());
    }
    Ok(vec![match a.id {
        Some(id) => Target::PauseId(id),
        None => Target::Scope(scope(&a.selector, a.action)),
    }])
}
