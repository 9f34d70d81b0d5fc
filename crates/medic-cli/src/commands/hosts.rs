//! `medicctl hosts`: hosts as the coordinator sees them.

use std::time::SystemTime;

use medic_proto::pb::v1 as pb;

use super::page::{self, Page};
use super::{Ctx, selector};
use crate::cli::HostsArgs;
use crate::error::Error;
use crate::format::{self, Table, or_dash};
use crate::json;

pub(super) async fn hosts(ctx: &mut Ctx<'_>, a: HostsArgs) -> Result<(), Error> {
    let conn = &ctx.conn;
    let hosts = page::all(|page_token, page_size| {
        let req = pb::ListHostsRequest {
            unhealthy_only: a.unhealthy,
            quarantined_only: a.quarantined,
            selector: selector(&a.selector),
            page_size,
            page_token,
        };
        conn.unary(req, |mut c, r| async move { c.list_hosts(r).await })
    })
    .await?;
    if ctx.is_json() {
        return ctx.json(&json::Hosts {
            hosts: hosts.iter().map(json::Host::from).collect(),
        });
    }
    if hosts.is_empty() {
        writeln!(ctx.out, "no hosts match")?;
        return Ok(());
    }
    host_table(&hosts, SystemTime::now()).write(ctx.out)?;
    Ok(())
}

/// The HEALTH column: what stops the agent acting comes first.
fn health(h: &pb::Host) -> String {
    if !h.state_error.is_empty() {
        format!("AGENT STATE UNUSABLE: {}", h.state_error)
    } else if h.silent_since.is_some() {
        "silent".to_owned()
    } else if h.unhealthy {
        "unhealthy".to_owned()
    } else {
        "ok".to_owned()
    }
}

/// Hosts, one row each.
fn host_table(hosts: &[pb::Host], now: SystemTime) -> Table {
    let mut t = Table::new(&[
        "HOST",
        "LIVE",
        "HEALTH",
        "LABELS",
        "PERMIT",
        "LAST HEARTBEAT",
        "QUARANTINE",
        "PROBLEMS",
    ]);
    for h in hosts {
        t.row(vec![
            h.host_id.clone(),
            if h.live { "yes" } else { "no" }.to_owned(),
            health(h),
            format::labels(&h.labels),
            or_dash(&h.active_permit_id),
            format::opt_time(h.last_heartbeat.as_ref(), now, "never"),
            h.quarantine.as_ref().map_or_else(
                || "-".to_owned(),
                |q| {
                    format!(
                        "{} by {}: {}",
                        json::quarantine_cause(q.cause),
                        q.actor,
                        q.reason
                    )
                },
            ),
            if h.problems.is_empty() {
                "-".to_owned()
            } else {
                h.problems
                    .iter()
                    .map(|p| format!("{} ({}): {}", p.job, p.detector, p.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ]);
    }
    t
}

impl Page for pb::ListHostsResponse {
    type Item = pb::Host;

    fn into_page(self) -> (Vec<pb::Host>, String) {
        (self.hosts, self.next_page_token)
    }
}
