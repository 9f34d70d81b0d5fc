//! `medicctl breaker reset`: close open circuit breakers.

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
        "closed {} breaker(s); one whose condition still holds opens again at the next evaluation:",
        r.closed.len()
    )?;
    breaker_table(&r.closed, SystemTime::now()).write(ctx.out)?;
    Ok(())
}
