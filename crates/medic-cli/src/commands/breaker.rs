//! `medicctl breaker reset`: move open circuit breakers to half-open.

use std::time::SystemTime;

use medic_proto::pb::v1 as pb;

use super::Ctx;
use super::show::breaker_table;
use crate::cli::BreakerResetArgs;
use crate::error::Error;
use crate::json;

pub(super) async fn reset(ctx: &mut Ctx<'_>, a: BreakerResetArgs) -> Result<(), Error> {
    let req = pb::ResetBreakerRequest {
        scope: a.scope.map(Into::into),
        reason: a.reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.reset_breaker(r).await })
        .await?;
    if ctx.is_json() {
        return ctx.json(&json::BreakersClosed {
            closed: r.closed.iter().map(json::Breaker::from).collect(),
        });
    }
    writeln!(
        ctx.out,
        "reset {} breaker(s) to half-open: probe permits go out a few at a time, one failure \
         opens a breaker again, and it closes once enough succeeded with its condition clear:",
        r.closed.len()
    )?;
    breaker_table(&r.closed, SystemTime::now()).write(ctx.out)?;
    Ok(())
}
