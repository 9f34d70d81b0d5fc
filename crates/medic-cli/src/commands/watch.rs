//! `medicctl watch`: the audit history live, until interrupted.

use medic_proto::pb::v1 as pb;

use super::summary::summary;
use super::{Ctx, kinds};
use crate::cli::WatchArgs;
use crate::error::Error;
use crate::format::{self, or_dash};
use crate::json;

pub(super) async fn watch(ctx: &mut Ctx<'_>, a: WatchArgs) -> Result<(), Error> {
    let kinds = kinds(&a.kind);
    let mut after = a.after_id;
    if !ctx.is_json() {
        writeln!(
            ctx.out,
            "{:<20}  {:>6}  {:<10}  {:<16}  {:<24}  WHAT",
            "TIME", "ID", "KIND", "HOST", "ACTOR"
        )?;
        ctx.out.flush()?;
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    'reconnect: loop {
        let mut admin = ctx.conn.admin().await?;
        let req = pb::WatchEventsRequest {
            kinds: kinds.clone(),
            after_id: after,
        };
        let opened = tokio::select! {
            r = tokio::time::timeout(ctx.conn.timeout(), admin.watch_events(req)) => r,
            _ = &mut interrupted => return Ok(()),
        };
        let mut stream = match opened {
            Err(_) => {
                return Err(Error::Timeout {
                    url: ctx.conn.url().to_owned(),
                    timeout: format::duration(ctx.conn.timeout()),
                });
            }
            Ok(Err(s)) => return Err(ctx.conn.status_error(&s)),
            Ok(Ok(r)) => r.into_inner(),
        };
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                _ = &mut interrupted => return Ok(()),
            };
            match next {
                Ok(Some(m)) => {
                    let Some(e) = m.event else { continue };
                    after = Some(e.id);
                    print_event(ctx, &e)?;
                }
                // The server ended the stream (it is shutting down, or this
                // watcher fell behind): resume where we left off when told
                // we lagged, otherwise report it.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::DataLoss | tonic::Code::ResourceExhausted
                    ) =>
                {
                    eprintln!(
                        "medicctl: {}; resuming after event {}",
                        s.message(),
                        after.map_or_else(|| "-".to_owned(), |a| a.to_string())
                    );
                    continue 'reconnect;
                }
                Err(s) => return Err(ctx.conn.status_error(&s)),
                Ok(None) => {
                    return Err(Error::Failed(format!(
                        "the coordinator at {} ended the event stream",
                        ctx.conn.url()
                    )));
                }
            }
        }
    }
}

/// One event as one line (one JSON object with `-o json`), flushed at once.
fn print_event(ctx: &mut Ctx<'_>, e: &pb::Event) -> Result<(), Error> {
    if ctx.is_json() {
        serde_json::to_writer(&mut *ctx.out, &json::Event::from(e))
            .map_err(std::io::Error::from)?;
        writeln!(ctx.out)?;
    } else {
        writeln!(
            ctx.out,
            "{:<20}  {:>6}  {:<10}  {:<16}  {:<24}  {}",
            format::opt_absolute(e.time.as_ref(), "-"),
            e.id,
            json::event_kind(e.kind),
            or_dash(&e.host_id),
            or_dash(&e.actor),
            summary(e)
        )?;
    }
    ctx.out.flush()?;
    Ok(())
}
