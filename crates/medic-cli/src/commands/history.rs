//! `medicctl history`: the audit history, page after page.

use std::time::{SystemTime, UNIX_EPOCH};

use medic_proto::convert::to_timestamp;
use medic_proto::pb::v1 as pb;

use super::page::{self, Page};
use super::summary::summary;
use super::{Ctx, action_filter, kinds};
use crate::cli::{HistoryArgs, When};
use crate::error::Error;
use crate::format::{self, Table, or_dash, system_time};
use crate::json;

pub(super) async fn history(ctx: &mut Ctx<'_>, a: HistoryArgs) -> Result<(), Error> {
    let server_now = server_now(ctx, &a).await?;
    let resolve = |w: When| match w {
        When::At(t) => t,
        When::Ago(d) => server_now.checked_sub(d).unwrap_or(UNIX_EPOCH),
    };
    let since = a.since.map(resolve).map(to_timestamp);
    let until = a.until.map(resolve).map(to_timestamp);
    let kinds = kinds(&a.kind);
    let page_size = a
        .page_size
        .unwrap_or(medic_proto::request::DEFAULT_PAGE_SIZE);

    let conn = &ctx.conn;
    let start = a.page_token.clone().unwrap_or_default();
    let (events, next) = page::collect(
        start,
        page_size,
        a.limit as usize,
        |page_token, page_size| {
            let req = pb::GetHistoryRequest {
                since,
                until,
                host_id: a.host.clone().unwrap_or_default(),
                kinds: kinds.clone(),
                action: action_filter(a.action).0,
                action_name: action_filter(a.action).1,
                page_size,
                page_token,
                newest_first: a.newest_first,
            };
            conn.unary(req, |mut c, r| async move { c.get_history(r).await })
        },
    )
    .await?;
    if ctx.is_json() {
        return ctx.json(&json::History {
            events: events.iter().map(json::Event::from).collect(),
            next_page_token: next,
        });
    }
    if events.is_empty() {
        writeln!(ctx.out, "no events match")?;
    } else {
        event_table(&events, SystemTime::now()).write(ctx.out)?;
    }
    if let Some(next) = next {
        writeln!(
            ctx.out,
            "\nmore events: repeat with --page-token {next} to continue"
        )?;
    }
    Ok(())
}

/// "Now" for `--since 1h`: a span back from now is counted on the
/// coordinator's clock, like the times it records. This machine's clock
/// when no span needs it.
async fn server_now(ctx: &Ctx<'_>, a: &HistoryArgs) -> Result<SystemTime, Error> {
    let needs_now = matches!(a.since, Some(When::Ago(_))) || matches!(a.until, Some(When::Ago(_)));
    if !needs_now {
        return Ok(SystemTime::now());
    }
    Ok(ctx
        .status_response()
        .await?
        .server_time
        .as_ref()
        .map_or_else(SystemTime::now, system_time))
}

/// Events, one row each.
fn event_table(events: &[pb::Event], now: SystemTime) -> Table {
    let mut t = Table::new(&["ID", "TIME", "KIND", "HOST", "ACTOR", "WHAT"]);
    for e in events {
        t.row(vec![
            e.id.to_string(),
            format::opt_time(e.time.as_ref(), now, "-"),
            json::event_kind(e.kind),
            or_dash(&e.host_id),
            or_dash(&e.actor),
            summary(e),
        ]);
    }
    t
}

impl Page for pb::GetHistoryResponse {
    type Item = pb::Event;

    fn into_page(self) -> (Vec<pb::Event>, String) {
        (self.events, self.next_page_token)
    }
}
