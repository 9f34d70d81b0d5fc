//! `medicctl watch`: the audit history live, until interrupted.
//!
//! The stream is opened again whenever it ends for a reason that may pass
//! (the coordinator restarted or is unreachable for a while, this watcher
//! fell behind), after a backoff, from the last event printed: no event is
//! printed twice, none is lost. Only Ctrl-C, or an error that retrying
//! cannot fix (bad arguments, permission denied), ends it.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use medic_proto::pb::v1 as pb;

use super::summary::summary;
use super::{Ctx, kinds};
use crate::cli::WatchArgs;
use crate::error::Error;
use crate::format::{self, or_dash};
use crate::json;

/// The first wait before opening the stream again; it doubles after each
/// failed attempt, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub(super) async fn watch(ctx: &mut Ctx<'_>, a: WatchArgs) -> Result<(), Error> {
    let kinds = kinds(&a.kind);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Live only: start after the newest event now, so that a reconnection
    // knows where to resume.
    let mut after = match a.after_id {
        Some(id) => id,
        None => tokio::select! {
            r = newest_id(ctx) => r?,
            _ = &mut interrupted => return Ok(()),
        },
    };
    if !ctx.is_json() {
        writeln!(
            ctx.out,
            "{:<20}  {:>6}  {:<10}  {:<16}  {:<24}  WHAT",
            "TIME", "ID", "KIND", "HOST", "ACTOR"
        )?;
        ctx.out.flush()?;
    }
    let mut backoff = FIRST_BACKOFF;
    let mut lost = false;
    loop {
        let ended = tokio::select! {
            r = follow(ctx, &kinds, &mut after, &mut backoff, &mut lost) => r,
            _ = &mut interrupted => return Ok(()),
        };
        let why = match ended {
            Ok(why) => why,
            Err(e) if retryable(&e) => wording(&e.to_string()),
            Err(e) => return Err(e),
        };
        let wait = jitter(backoff);
        eprintln!(
            "medicctl: {why}; reconnecting to {} in {} (after event {after}, as --after-id \
             {after} would)",
            ctx.conn.url(),
            format::duration(wait)
        );
        lost = true;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = &mut interrupted => return Ok(()),
        }
    }
}

/// Opens the stream after `after` and prints what it sends, moving
/// `after` on; returns why it ended when the server ended it, `Err` when
/// the stream could not be opened or failed. A stream that opens resets
/// the backoff, and says so when it follows a lost one.
async fn follow(
    ctx: &mut Ctx<'_>,
    kinds: &[i32],
    after: &mut u64,
    backoff: &mut Duration,
    lost: &mut bool,
) -> Result<String, Error> {
    let mut admin = ctx.conn.admin().await?;
    let req = pb::WatchEventsRequest {
        kinds: kinds.to_vec(),
        after_id: Some(*after),
    };
    let mut stream = match tokio::time::timeout(ctx.conn.timeout(), admin.watch_events(req)).await {
        Err(_) => {
            return Err(Error::Timeout {
                url: ctx.conn.url(),
                timeout: format::duration(ctx.conn.timeout()),
            });
        }
        Ok(Err(s)) => return Err(ctx.conn.status_error(&s)),
        Ok(Ok(r)) => r.into_inner(),
    };
    *backoff = FIRST_BACKOFF;
    if std::mem::take(lost) {
        eprintln!(
            "medicctl: reconnected to {}; following after event {after}",
            ctx.conn.url()
        );
    }
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                let Some(e) = m.event else { continue };
                *after = e.id;
                print_event(ctx, &e)?;
            }
            Ok(None) => {
                return Ok(format!(
                    "the coordinator at {} ended the event stream",
                    ctx.conn.url()
                ));
            }
            Err(s) => return Err(ctx.conn.status_error(&s)),
        }
    }
}

/// The id of the newest event in the history (0 when it is empty).
async fn newest_id(ctx: &Ctx<'_>) -> Result<u64, Error> {
    let req = pb::GetHistoryRequest {
        page_size: 1,
        newest_first: true,
        ..Default::default()
    };
    let r = ctx
        .conn
        .unary(req, |mut c, r| async move { c.get_history(r).await })
        .await?;
    Ok(r.events.first().map_or(0, |e| e.id))
}

/// Whether trying again may help: the coordinator is unreachable, slow,
/// restarting, or dropped this watcher; not when it refused the request
/// (bad arguments, permission denied) or medicctl cannot write.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } | Error::Timeout { .. } => true,
        Error::Rpc { code, .. } => matches!(
            *code,
            "UNAVAILABLE"
                | "CANCELLED"
                | "DEADLINE_EXCEEDED"
                | "ABORTED"
                | "RESOURCE_EXHAUSTED"
                | "DATA_LOSS"
                | "UNKNOWN"
                | "INTERNAL"
        ),
        Error::Usage(_) | Error::Failed(_) | Error::Output(_) => false,
    }
}

/// The coordinator's reason in medicctl's words: it tells gRPC clients to
/// reconnect `with after_id = N`, which medicctl does by itself (and its
/// flag is `--after-id`).
fn wording(message: &str) -> String {
    let cut = ["; reconnect with after_id", "; reconnect\nwith after_id"]
        .iter()
        .find_map(|m| message.find(m))
        .unwrap_or(message.len());
    message[..cut].replace("after_id", "--after-id")
}

/// `d` with jitter: somewhere between half of it and all of it, so that
/// watchers cut off together do not come back together.
fn jitter(d: Duration) -> Duration {
    let r = RandomState::new().hash_one(std::time::Instant::now());
    // 0..=1000 thousandths of the second half.
    let frac = u32::try_from(r % 1001).unwrap_or(1000);
    d / 2 + d / 2 * frac / 1000
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_name_the_flag_not_the_field() {
        assert_eq!(
            wording(
                "the coordinator is shutting down; reconnect with after_id = \
                 42"
            ),
            "the coordinator is shutting down"
        );
        assert_eq!(
            wording(
                "this watcher fell 9 events behind and was dropped; reconnect with after_id = 4 to resume from the history"
            ),
            "this watcher fell 9 events behind and was dropped"
        );
        assert_eq!(wording("after_id 9 is too big"), "--after-id 9 is too big");
    }

    #[test]
    fn backoff_has_jitter_within_half_and_whole() {
        for _ in 0..100 {
            let j = jitter(MAX_BACKOFF);
            assert!(j >= MAX_BACKOFF / 2 && j <= MAX_BACKOFF, "{j:?}");
        }
    }
}
