//! `Admin.WatchEvents`: the audit history's backlog, then live events,
//! each stream bounded in what it buffers and counted per caller.

use std::pin::Pin;
use std::sync::Arc;

use medic_proto::pb::v1 as pb;
use medic_proto::request as rq;
use medic_store::{Entry, HistoryQuery, Store};
use tokio::sync::{broadcast, watch};
use tokio_stream::Stream;
use tonic::Status;

use super::to_wire;
use crate::auth::{Operator, Peer};

/// Events one watch stream buffers for its reader (beside one page of
/// backlog read from the history): what a reader that does not read costs.
const WATCH_BUFFER: usize = 256;

/// History entries one backlog read takes.
const WATCH_PAGE: usize = 256;

/// Whom a watch stream counts against: an authenticated identity, or over
/// plaintext (where names are only claimed) the address.
pub(super) fn watcher_key(caller: &Operator, peer: &Peer) -> String {
    if caller.actor.starts_with("cert:") || caller.actor.starts_with("token:") {
        caller.actor.clone()
    } else {
        peer.addr
            .map_or_else(|| caller.actor.clone(), |a| format!("address:{}", a.ip()))
    }
}

/// Open `WatchEvents` streams, per caller and in total.
#[derive(Debug, Default)]
pub struct Watchers {
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Watchers {
    /// A slot for one more stream of `key`, or why not.
    pub(super) fn admit(
        self: &Arc<Self>,
        key: String,
        per_caller: usize,
        most: usize,
    ) -> Result<WatchSlot, Status> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = open.values().sum();
        let mine = open.get(&key).copied().unwrap_or(0);
        if mine >= per_caller {
            return Err(Status::resource_exhausted(format!(
                "{key} has {mine} WatchEvents streams open, the most one caller may; close one \
                 first"
            )));
        }
        if total >= most {
            return Err(Status::resource_exhausted(format!(
                "{total} WatchEvents streams are open, the most this coordinator serves; retry \
                 later"
            )));
        }
        *open.entry(key.clone()).or_default() += 1;
        Ok(WatchSlot {
            watchers: self.clone(),
            key,
            busy: None,
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum()
    }
}

/// One open stream; gives its place back when the stream's task ends.
#[derive(Debug)]
pub(super) struct WatchSlot {
    watchers: Arc<Watchers>,
    key: String,
    /// Holds the stream's connection busy while the stream lives.
    pub(super) busy: Option<crate::conn::StreamGuard>,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .watchers
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The `WatchEvents` stream: the backlog (read from the history a page at
/// a time, as the reader takes it), then live events (skipping ids already
/// sent), filtered. A watcher that falls behind the live events is told so
/// and the stream ends; it may reconnect with `after_id`. One that reads
/// nothing for `stall` while events wait is cut off.
pub(super) fn watch_stream<S: Store>(
    filter: rq::WatchFilter,
    store: Arc<crate::core::SharedStore<S>>,
    mut live: broadcast::Receiver<Entry>,
    mut draining: watch::Receiver<bool>,
    slot: WatchSlot,
    stall: std::time::Duration,
) -> Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send + 'static>> {
    use tokio::sync::mpsc::error::SendTimeoutError;
    use tokio_stream::StreamExt;

    let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
    let (end_tx, end_rx) = tokio::sync::oneshot::channel::<Status>();
    tokio::spawn(async move {
        let _slot = slot;
        let mut last_sent = filter.after_id.unwrap_or(0);
        // Sends one event; `Err` ends the stream, with the status to end it
        // with (none when the reader went away).
        let send = |tx: &tokio::sync::mpsc::Sender<_>, e: pb::Event, last: u64| {
            let tx = tx.clone();
            async move {
                match tx
                    .send_timeout(Ok(pb::WatchEventsResponse { event: Some(e) }), stall)
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(SendTimeoutError::Closed(_)) => Err(None),
                    Err(SendTimeoutError::Timeout(_)) => {
                        Err(Some(Status::resource_exhausted(format!(
                            "this watcher read nothing for {}s with {WATCH_BUFFER} events \
                             waiting and was cut off; reconnect with after_id = {last}",
                            stall.as_secs()
                        ))))
                    }
                }
            }
        };
        let ended = async {
            if filter.after_id.is_some() {
                loop {
                    let query = HistoryQuery {
                        cursor: Some(last_sent),
                        limit: WATCH_PAGE,
                        ..HistoryQuery::default()
                    };
                    let store = store.clone();
                    let page = crate::core::off_task(store.inline(), move || store.history(&query))
                        .await
                        .map_err(|e| Some(Status::internal(format!("history task failed: {e}"))))?
                        .map_err(|e| Some(Status::unavailable(e.to_string())))?;
                    let more = page.next_cursor;
                    for entry in page.entries {
                        let e = to_wire(entry);
                        let id = e.id;
                        if filter.matches(&e) {
                            send(&tx, e, last_sent).await?;
                        }
                        last_sent = id;
                    }
                    match more {
                        Some(cursor) => last_sent = last_sent.max(cursor),
                        None => break,
                    }
                }
            }
            loop {
                let next = tokio::select! {
                    r = live.recv() => r,
                    () = tx.closed() => return Err(None),
                    r = draining.wait_for(|d| *d) => {
                        drop(r);
                        return Err(Some(Status::unavailable(format!(
                            "the coordinator is shutting down; reconnect with after_id = \
                             {last_sent}"
                        ))));
                    }
                };
                match next {
                    Ok(entry) if entry.id > last_sent => {
                        let e = to_wire(entry);
                        let id = e.id;
                        if filter.matches(&e) {
                            send(&tx, e, last_sent).await?;
                        }
                        last_sent = id;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Err(Some(Status::data_loss(format!(
                            "this watcher fell {n} events behind and was dropped; reconnect \
                             with after_id = {last_sent} to resume from the history"
                        ))));
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(None),
                }
            }
        };
        let result: Result<(), Option<Status>> = ended.await;
        if let Err(Some(status)) = result {
            // Said after everything buffered, however full the buffer.
            let _ = end_tx.send(status);
        }
    });
    let tail = ending(end_rx);
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).chain(tail))
}

/// The status the stream's task ended with, as a last item (none if it
/// ended because the reader left).
fn ending(
    end: tokio::sync::oneshot::Receiver<Status>,
) -> impl Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send + 'static {
    use tokio_stream::StreamExt;
    tokio_stream::once(end)
        .then(|end| async move { end.await.ok() })
        .filter_map(|status| status.map(Err))
}
