//! `medicctl quarantine` and `medicctl unquarantine`: hold a host for a
//! human, and release it.

use std::time::SystemTime;

use medic_proto::pb::v1 as pb;

use super::Ctx;
use super::page;
use crate::cli::{HostReasonArgs, QuarantineArgs};
use crate::error::Error;
use crate::format;
use crate::json;

pub(super) async fn quarantine(ctx: &mut Ctx<'_>, a: QuarantineArgs) -> Result<(), Error> {
    let QuarantineArgs { target: a, force } = a;
    if !force && !known(ctx, &a.host).await? {
        return Err(Error::Failed(format!(
            "the coordinator at {} does not know host {:?} (it has never heartbeated): check \
             the id with `medicctl hosts`, or pass --force to quarantine it before its agent \
             first reports",
            ctx.conn.url(),
            a.host
        )));
    }
    let req = pb::QuarantineRequest {
        host_id: a.host,
        reason: a.reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.quarantine(r).await })
        .await?;
    let q = r.quarantine.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Quarantined {
            quarantine: json::Quarantine::from(&q),
        });
    }
    writeln!(
        ctx.out,
        "quarantined {}: it gets no permit until `medicctl unquarantine {} --reason ...`",
        q.host_id, q.host_id
    )?;
    Ok(())
}

/// Whether the coordinator lists `host` (`ListHosts`, every page).
async fn known(ctx: &Ctx<'_>, host: &str) -> Result<bool, Error> {
    let conn = &ctx.conn;
    let hosts = page::all(|page_token, page_size| {
        let req = pb::ListHostsRequest {
            page_size,
            page_token,
            ..Default::default()
        };
        conn.unary(req, |mut c, r| async move { c.list_hosts(r).await })
    })
    .await?;
    Ok(hosts.iter().any(|h| h.host_id == host))
}

pub(super) async fn unquarantine(ctx: &mut Ctx<'_>, a: HostReasonArgs) -> Result<(), Error> {
    let req = pb::UnquarantineRequest {
        host_id: a.host,
        reason: a.reason,
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.unquarantine(r).await })
        .await?;
    let q = r.released.unwrap_or_default();
    if ctx.is_json() {
        return ctx.json(&json::Released {
            released: json::Quarantine::from(&q),
        });
    }
    let now = SystemTime::now();
    writeln!(
        ctx.out,
        "released {} (quarantined {} by {}: {}); its attempt budget starts afresh",
        q.host_id,
        format::opt_time(q.since.as_ref(), now, "-"),
        q.actor,
        q.reason
    )?;
    Ok(())
}
