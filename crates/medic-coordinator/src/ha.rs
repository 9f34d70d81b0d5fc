//! Replicated coordinators on etcd (`[store] kind = "etcd"`, issue 9).
//!
//! Every replica connects to etcd and binds its gRPC port at once. One of
//! them leads, through the leader key of `medic-store`'s [`Leader`] (its
//! value is the leader's `store.advertise` URL); the others follow.
//!
//! # Following
//!
//! A follower serves the port but decides nothing: every `Remediation` and
//! `Admin` call is answered UNAVAILABLE with the leader's URL in the
//! message and in the `medic-leader` metadata (agents switch to it when it
//! is one of their configured coordinators, and never otherwise); health
//! reports both services NOT_SERVING. A follower polls the leader key
//! (every `lease_ttl / 20`, 100 ms to 500 ms) to keep that URL current, and
//! campaigns as soon as the key is gone. Polling a key costs one etcd read;
//! a campaign costs a lease grant and a transaction, so it is tried only
//! when there is nobody to follow.
//!
//! # From follower to leader
//!
//! One listener and one gRPC server for the replica's whole life: the
//! services are switches ([`crate::shell::Switch`]) that answer as a
//! follower until the election, then are the real services over a core
//! started on the spot. So an agent whose connection landed on a follower
//! is served on its next call, with nothing rebound or drained. Once
//! elected the replica fences its store ([`EtcdStore::set_fence`]), loads
//! the state and warms up exactly as after a restart (ARCHITECTURE.md, rule 9),
//! then grants.
//!
//! There is no way back from leader to follower inside one process: a
//! watchdog follows [`Leader::valid_until`] (waking at that instant, and
//! at least every 100 ms to see a revocation) and when leadership ends it
//! marks the core failed, so every decision is refused from that moment,
//! and `run` returns [`RunError::LostLeadership`]; the binary exits with
//! [`EXIT_LOST_LEADERSHIP`] and systemd restarts it as a follower, whose
//! state is loaded afresh if it is elected again. The local belief ends
//! before etcd could expire the lease (see [`Leader`]), so the watchdog
//! usually refuses before another replica can lead; and should it be late
//! (a paused process), every write of the old leader is an etcd
//! transaction fenced on its leader key, which fails: no grant of a
//! deposed leader is ever returned, because grants are durable before they
//! are returned (I6).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medic_store::{EtcdStore, Leader, StoreError};
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config::{ConfigSource, CoordinatorConfig, EtcdSettings, StoreConfig};
use crate::fleet::{ReadError, ReplicatedSource};
use crate::metrics::Metrics;
use crate::role::{Election, Lease, Lost, Mandate};
use crate::server::{Listeners, serve};
use crate::{Control, RunError};

pub use crate::cli::EXIT_LOST_LEADERSHIP;

/// How often the watchdog looks at the leadership at least.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(100);

/// [`crate::run`] for `[store] kind = "etcd"`: connects to etcd, follows
/// until elected, then leads until shut down (`Ok`) or deposed
/// ([`RunError::LostLeadership`]).
pub async fn run_replicated(
    config: CoordinatorConfig,
    config_path: Option<PathBuf>,
    listeners: Listeners,
    control: mpsc::Receiver<Control>,
    clock: Arc<dyn Clock>,
) -> Result<(), RunError> {
    let StoreConfig::Etcd(settings) = config.store.clone() else {
        return Err(RunError::Config {
            path: "store.kind".to_owned(),
            message: "run_replicated needs kind = \"etcd\"".to_owned(),
        });
    };
    let etcd = crate::fleet::etcd_config(&settings).map_err(|message| RunError::Config {
        path: "store.tls".to_owned(),
        message,
    })?;
    // `connect` blocks on the store's own runtime: not on this one.
    let store = tokio::task::spawn_blocking(move || EtcdStore::connect(&etcd))
        .await
        .map_err(|e| StoreError::Backend(format!("connecting task failed: {e}")))??;
    let store = Arc::new(store);
    tracing::info!(
        location = %store.location().display(),
        advertise = %settings.advertise,
        "connected to etcd; following until elected"
    );
    // The fleet-wide part of the configuration is in etcd: read it now, so
    // that a replica that cannot use it says so at start.
    let source = Arc::new(ReplicatedSource {
        path: config_path,
        replica: config,
        store: store.clone(),
    });
    let read = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || source.read())
            .await
            .map_err(|e| StoreError::Backend(format!("config task failed: {e}")))?
    };
    let config = match read {
        Ok(c) => c,
        Err(ReadError::Store(e)) => return Err(e.into()),
        // The fleet config in etcd is shared: a replica that cannot use
        // it stops with a failure that systemd retries (exit 1), unlike an
        // error in its own file (exit 78), so that pushing a valid one is
        // enough to bring every replica back.
        Err(ReadError::Fleet(errors)) => {
            for e in &errors {
                tracing::error!("{e}");
            }
            return Err(RunError::Serve(format!(
                "the fleet config in etcd cannot be used ({} error(s) above); push a valid \
                 one (`medic-coordinator config check` validates it), and this replica starts \
                 when restarted",
                errors.len()
            )));
        }
        Err(ReadError::Replica(mut errors)) => {
            let first = errors.remove(0);
            for e in &errors {
                tracing::error!("{e}");
            }
            return Err(RunError::Config {
                path: first.path,
                message: first.message,
            });
        }
    };
    tracing::info!(summary = %config.summary(), "configuration read");
    let (leader, following) = watch::channel(None);
    let metrics = Arc::new(Metrics::new());
    // For as long as this replica runs, whatever its role.
    let _observer = crate::role::AbortOnDrop(tokio::spawn(stored_revision(
        store.clone(),
        metrics.clone(),
    )));
    let campaign = Box::pin(campaign(store, settings, leader));
    let source: Arc<dyn ConfigSource> = source;
    serve(
        config,
        source,
        crate::server::Transport::Network(listeners),
        control,
        clock,
        metrics,
        Election::Campaign {
            leader: following,
            campaign,
        },
    )
    .await
}

/// Keeps `medic_fleet_config_stored_revision` current, so that a push
/// nobody applied shows (and alerts) beside `medic_fleet_config_revision`.
async fn stored_revision(store: Arc<EtcdStore>, metrics: Arc<Metrics>) {
    loop {
        if let Ok(stored) = blocking(&store, |s| s.fleet_config()).await {
            metrics
                .fleet_config_stored_revision
                .set(stored.map_or(0, |(_, revision)| revision));
        }
        tokio::time::sleep(crate::metrics::FLEET_CONFIG_POLL).await;
    }
}

/// Follows (publishing the leader's URL to `leader`) until this replica is
/// elected; then fences the store and returns it with the watchdog.
async fn campaign(
    store: Arc<EtcdStore>,
    settings: EtcdSettings,
    leader: watch::Sender<Option<String>>,
) -> Result<Mandate<Arc<EtcdStore>>, RunError> {
    let poll =
        (settings.lease_ttl / 20).clamp(Duration::from_millis(100), Duration::from_millis(500));
    let mut last_error: Option<String> = None;
    loop {
        match blocking(&store, |s| s.leader_name()).await {
            Ok(Some(name)) => {
                // Our own name under a lease we no longer hold: this
                // replica's previous life, until its lease expires.
                let known = (name != settings.advertise).then_some(name);
                leader.send_if_modified(|l| {
                    if *l != known {
                        tracing::info!(leader = ?known, "following");
                        *l = known;
                        true
                    } else {
                        false
                    }
                });
                last_error = None;
            }
            Ok(None) => {
                leader.send_replace(None);
                let (advertise, ttl) = (settings.advertise.clone(), settings.lease_ttl);
                match blocking(&store, move |s| Leader::try_acquire(s, &advertise, ttl)).await {
                    Ok(Some(won)) => {
                        store.set_fence(Some(won.fence().clone()));
                        tracing::info!(
                            fence = won.fence().revision,
                            "elected leader; loading the state"
                        );
                        return Ok(Mandate {
                            store,
                            lease: Some(Box::new(EtcdLease {
                                leader: Arc::new(won),
                                ttl,
                            })),
                        });
                    }
                    Ok(None) => {}
                    Err(e) => note(&mut last_error, e),
                }
            }
            Err(e) => note(&mut last_error, e),
        }
        tokio::time::sleep(poll).await;
    }
}

/// Logs an etcd error when it differs from the last one (a follower cut
/// off from etcd would otherwise log ten times a second).
fn note(last: &mut Option<String>, e: StoreError) {
    let e = e.to_string();
    if last.as_deref() != Some(&e) {
        tracing::warn!(error = %e, "cannot follow the leadership in etcd; retrying");
        *last = Some(e);
    }
}

async fn blocking<T: Send + 'static>(
    store: &Arc<EtcdStore>,
    f: impl FnOnce(&EtcdStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| StoreError::Backend(format!("etcd task failed: {e}")))?
}

/// The leader key's lease, held while this replica leads.
struct EtcdLease {
    leader: Arc<Leader>,
    ttl: Duration,
}

impl Lease for EtcdLease {
    fn lost(&self) -> Lost {
        watchdog(self.leader.clone())
    }

    fn resign(self: Box<Self>) {
        // The watchdog has ended: this is the last reference unless a task
        // leaked one.
        if let Some(l) = Arc::into_inner(self.leader)
            && let Err(e) = l.resign_within(self.ttl)
        {
            tracing::warn!(error = %e, "could not resign; the lease expires on its own");
        }
    }
}

/// Resolves when `leader` no longer leads: at the instant its local
/// validity runs out, or within [`WATCHDOG_PERIOD`] of etcd saying the
/// lease is gone.
fn watchdog(leader: Arc<Leader>) -> Lost {
    Box::pin(async move {
        loop {
            let Some(until) = leader.valid_until() else {
                return "its lease is gone: etcd revoked or expired it, or no renewal was \
                        answered before the lease's local deadline"
                    .to_owned();
            };
            let now = Instant::now();
            if now >= until {
                return "its lease could not be renewed in time".to_owned();
            }
            tokio::time::sleep((until - now).min(WATCHDOG_PERIOD)).await;
        }
    })
}
