//! The roles a replica plays, and how it moves between them:
//!
//! ```text
//!  embedded store ──────────────────────────────► Leading ──► stopped (exit 0)
//!  etcd ──► Following ──(elected: load, warm up)──► Leading ──► stopped (exit 0)
//!              │                                    ├──► lost its lease (exit 75)
//!              └──► stopped (exit 0)                └──► store failed (exit 1)
//! ```
//!
//! A follower answers every medic call UNAVAILABLE naming the leader
//! ([`crate::shell::Switch`]) and re-reads its configuration on SIGHUP. A
//! leader decides through its [`Core`] until told to stop, until its
//! [`Lease`] ends, or until a write fails; there is no way back to
//! following inside one process (systemd restarts it).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use medic_policy::ConfigError;
use medic_store::Store;
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::config::CoordinatorConfig;
use crate::core::Core;
use crate::live::Live;
use crate::server::{Control, RunError};
use crate::shell::Ticked;

/// A future that resolves, with the reason, when leadership is lost.
pub(crate) type Lost = Pin<Box<dyn Future<Output = String> + Send>>;

/// A leadership that can end: the etcd lease of replicated coordinators.
/// The embedded store leads for as long as the process runs, and has none.
pub(crate) trait Lease: Send {
    /// Resolves, with the reason, when this replica no longer leads.
    fn lost(&self) -> Lost;
    /// Hands the leadership over at once rather than after the lease's
    /// TTL (blocking, bounded). Called after every [`Lease::lost`] future
    /// is gone.
    fn resign(self: Box<Self>);
}

/// What an election gives: the store to decide with, and the lease that
/// makes this replica the leader.
pub(crate) struct Mandate<S> {
    pub(crate) store: S,
    pub(crate) lease: Option<Box<dyn Lease>>,
}

/// A future resolving once this replica is elected.
pub(crate) type Campaign<S> = Pin<Box<dyn Future<Output = Result<Mandate<S>, RunError>> + Send>>;

/// How this replica comes to lead.
pub(crate) enum Election<S> {
    /// The embedded store: it leads at once, and its port serves only once
    /// the state is loaded.
    Immediate(S),
    /// Replicated on etcd: it serves the port at once as a follower naming
    /// `leader`, until `campaign` elects it.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    Campaign {
        leader: watch::Receiver<Option<String>>,
        campaign: Campaign<S>,
    },
}

/// A follower, elected: its mandate, and the errors of a fleet config it
/// could not use when elected (it then decides with the last valid one it
/// read).
pub(crate) struct Elected<S> {
    pub(crate) mandate: Mandate<S>,
    pub(crate) errors: Vec<ConfigError>,
}

/// Follows until `campaign` elects this replica (`Some`) or it is told to
/// stop (`None`). SIGHUP re-reads the configuration meanwhile; once elected
/// it is read once more, so that the replica decides with the fleet config
/// as it is in etcd now, not as it was when it started following.
pub(crate) async fn follow<S>(
    live: &Live,
    clock: &dyn Clock,
    control: &mut mpsc::Receiver<Control>,
    mut campaign: Campaign<S>,
) -> Result<Option<Elected<S>>, RunError> {
    let mandate = loop {
        tokio::select! {
            r = &mut campaign => break r?,
            c = control.recv() => match c {
                Some(Control::Reload) => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    let _ = reread(live, clock, true).await;
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
                Some(Control::Shutdown) | None => return Ok(None),
            },
        }
    };
    let errors = match reread(live, clock, false).await {
        Ok(_) => Vec::new(),
        Err(errors) => {
            tracing::error!(
                summary = %live.current().summary(),
                "elected with the last valid configuration this replica read; fix the errors \
                 above and reload"
            );
            errors
        }
    };
    Ok(Some(Elected { mandate, errors }))
}

/// A follower's reload (SIGHUP), and the read once elected (counted in
/// `medic_config_reloads_total` only when it fails, as `reload` says): a
/// valid configuration is put in force; errors are logged and counted, and
/// the last valid one stays. A follower decides nothing, so there is
/// nothing to audit.
async fn reread(
    live: &Live,
    clock: &dyn Clock,
    reload: bool,
) -> Result<Arc<CoordinatorConfig>, Vec<ConfigError>> {
    let _one = live.reloading().await;
    match live.read().await {
        Ok(new) => {
            if reload {
                live.count_reload(true);
            }
            let new = Arc::new(new);
            live.install(new.clone(), clock.now());
            tracing::info!(summary = %new.summary(), "configuration read");
            Ok(new)
        }
        Err(errors) => {
            // Counted on election too: the replica decides with an older
            // configuration than etcd's.
            live.count_reload(false);
            for e in &errors {
                tracing::error!(error = %e, "configuration rejected; the last valid one stays");
            }
            Err(errors)
        }
    }
}

/// Loads the state (warm-up begins) for an elected replica; resigns if
/// that fails.
pub(crate) async fn start_core<S: Store + Debug>(
    mandate: Mandate<S>,
    live: &Arc<Live>,
    clock: Arc<dyn Clock>,
) -> Result<(Arc<Core<S>>, Option<Box<dyn Lease>>), RunError> {
    match Core::start(live.clone(), mandate.store, clock).await {
        Ok(core) => Ok((core, mandate.lease)),
        Err(err) => {
            if let Some(lease) = mandate.lease {
                let _ = tokio::task::spawn_blocking(move || lease.resign()).await;
            }
            Err(err.into())
        }
    }
}

/// Watches the lease of a leading core: when it ends, every decision is
/// refused at once (the core's fatal flag) and the reason is sent on the
/// returned channel, which [`lead`] turns into
/// [`RunError::LostLeadership`].
pub(crate) fn watch_lease<S: Store + Debug>(
    core: &Arc<Core<S>>,
    lease: &dyn Lease,
) -> (AbortOnDrop<()>, oneshot::Receiver<String>) {
    let (lost_tx, lost_rx) = oneshot::channel::<String>();
    let lost = lease.lost();
    let core = core.clone();
    let task = tokio::spawn(async move {
        let why = lost.await;
        core.metrics().leader.set(0);
        tracing::error!(reason = %why, "lost leadership: refusing every decision and stopping");
        // Before `fatal`: the loop that sees `fatal` looks here for why.
        let _ = lost_tx.send(why.clone());
        core.lost_leadership(why);
    });
    (AbortOnDrop(task), lost_rx)
}

/// Leads until told to stop (`Ok`), until the lease ends (`lost`), or
/// until the core fails. SIGHUP reloads through [`Core::reload`].
pub(crate) async fn lead<S: Store + Debug>(
    core: &Arc<Core<S>>,
    control: &mut mpsc::Receiver<Control>,
    mut lost: Option<oneshot::Receiver<String>>,
) -> Result<(), RunError> {
    // The core may have failed already (the election's audit write, or a
    // write queued before this loop began): `subscribe` would count that
    // as seen and wait for a later change that never comes, leaving a
    // leader that refuses everything and never steps down. So the current
    // value is looked at first.
    let mut fatal = core.failure();
    fatal.mark_changed();
    loop {
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Reload) => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    // A rejected config is logged and audited by `reload`.
                    if let Err(e) = core.reload("signal:SIGHUP", "SIGHUP").await {
                        tracing::error!(error = %e, "reload failed");
                    }
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
                Some(Control::Shutdown) | None => return Ok(()),
            },
            why = async {
                match lost.as_mut() {
                    Some(lost) => lost.await,
                    None => std::future::pending().await,
                }
            } => {
                match why {
                    Ok(why) => return Err(RunError::LostLeadership(why)),
                    // The watchdog ended without a word (it cannot, short
                    // of a panic): never poll a finished receiver again.
                    Err(_) => lost = None,
                }
            }
            r = fatal.changed() => {
                let why = fatal.borrow_and_update().clone();
                match (r, why) {
                    (_, Some(why)) => {
                        return Err(match lost.as_mut().map(oneshot::Receiver::try_recv) {
                            Some(Ok(lost)) => RunError::LostLeadership(lost),
                            _ if core.deposed() => RunError::LostLeadership(why.to_string()),
                            _ => RunError::StoreFailed(why),
                        });
                    }
                    (Err(_), None) => return Ok(()),
                    (Ok(()), None) => {}
                }
            }
        }
    }
}

/// Ticks the engine, compacts the history, trims the admission limiter.
pub(crate) async fn background<S: Store + Debug>(
    core: Arc<Core<S>>,
    tick: Duration,
    ticked: Arc<Ticked>,
) {
    ticked.done();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut upkeep = tokio::time::interval(Duration::from_secs(60));
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Biased: when both are due, the tick goes first, every time, so a
        // run on virtual time repeats itself exactly.
        tokio::select! {
            biased;
            _ = ticker.tick() => {
                if let Err(e) = core.tick().await {
                    tracing::error!(error = %e, "tick failed");
                    return;
                }
                ticked.done();
            }
            _ = upkeep.tick() => {
                core.live().admit().shrink();
                match core.compact().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "audit history compacted"),
                    Err(e) => tracing::warn!(error = %e, "audit history compaction failed"),
                }
            }
        }
    }
}

/// A task that ends with the future that owns it, so a `run` that is
/// dropped (aborted) leaves no ticking engine or leadership watchdog
/// behind.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Stops the task and waits until it has.
    pub(crate) async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
