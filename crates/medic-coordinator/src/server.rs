//! `run`: serves gRPC and metrics on already-bound listeners until told to
//! stop, so tests run the whole server in-process on port 0.
//!
//! `serve` is the replica's life in order: put the configuration in force
//! ([`Live`]), start the transport (`shell`), follow until elected or lead
//! at once (`role`), lead, then drain.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use medic_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config::{ConfigSource, CoordinatorConfig, FileSource};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::role::{self, Elected, Election, Mandate};
use crate::service::DirectAgents;
use crate::shell::Shell;

/// What the signal handler (or a test) asks of a running server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Re-read the config file (SIGHUP).
    Reload,
    /// Drain and stop (SIGTERM, SIGINT).
    Shutdown,
}

/// The listeners `run` serves on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC: both services, health, reflection.
    pub grpc: TcpListener,
    /// HTTP: `/metrics` and `/healthz`.
    pub metrics: TcpListener,
}

/// What `serve` takes connections from.
pub(crate) enum Transport {
    /// Bound sockets: production and most tests.
    Network(Listeners),
    /// Connections from clients in the same process
    /// (`medic_client::memory`), and calls with no connection at all
    /// ([`DirectAgents`]); no HTTP side.
    Memory(
        mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
        DirectAgents,
    ),
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state store could not be opened or loaded.
    #[error(transparent)]
    Store(#[from] medic_store::StoreError),
    /// A commit failed while serving; the coordinator stopped.
    #[error("stopped because the state store failed: {0}")]
    StoreFailed(crate::core::Halt),
    /// The gRPC or HTTP server failed.
    #[error("server: {0}")]
    Serve(String),
    /// This replica led and lost its leadership (its etcd lease could not
    /// be renewed in time, or was revoked). It refused every decision from
    /// that moment; restart it, and it follows (or campaigns) afresh.
    #[error(
        "lost leadership of the replicated coordinators: {0}; restart to follow the new leader"
    )]
    LostLeadership(String),
    /// The config asks for something this build or setting cannot do.
    #[error("{path}: {message}")]
    Config {
        /// The key path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Told to stop before it was elected (internal: `run` returns `Ok`).
    #[error("stopped before being elected")]
    Stopped,
}

/// Serves until `control` says `Shutdown` (or is closed): health goes
/// NOT_SERVING first, new connections stop, in-flight calls get
/// `server.shutdown_grace` to finish, and queued records are committed
/// before the store closes.
pub async fn run<S: Store + Debug>(
    config: CoordinatorConfig,
    config_path: Option<PathBuf>,
    store: S,
    listeners: Listeners,
    control: mpsc::Receiver<Control>,
    clock: Arc<dyn Clock>,
) -> Result<(), RunError> {
    serve(
        config,
        Arc::new(FileSource(config_path)),
        Transport::Network(listeners),
        control,
        clock,
        Arc::new(Metrics::new()),
        Election::Immediate(store),
    )
    .await
}

/// [`run`] on in-memory connections (`medic_client::memory::link`): the
/// same coordinator, with no socket and no HTTP side, so that a simulated
/// fleet in one process, on tokio's paused clock, makes no I/O whose
/// timing the kernel decides. `direct` answers agents' calls made with no
/// connection at all, once the coordinator leads.
pub async fn run_in_memory<S: Store + Debug>(
    config: CoordinatorConfig,
    store: S,
    incoming: mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
    direct: DirectAgents,
    control: mpsc::Receiver<Control>,
    clock: Arc<dyn Clock>,
) -> Result<(), RunError> {
    serve(
        config,
        Arc::new(FileSource(None)),
        Transport::Memory(incoming, direct),
        control,
        clock,
        Arc::new(Metrics::new()),
        Election::Immediate(store),
    )
    .await
}

/// The serving part of [`run`], also used by the replicated coordinator:
/// becomes leader as `election` says (following meanwhile), then decides
/// until shut down or deposed, then drains.
pub(crate) async fn serve<S: Store + Debug>(
    config: CoordinatorConfig,
    source: Arc<dyn ConfigSource>,
    listeners: Transport,
    mut control: mpsc::Receiver<Control>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    election: Election<S>,
) -> Result<(), RunError> {
    let grace = config.server.shutdown_grace;
    let live = Arc::new(Live::new(config, source, metrics, clock.now()));
    let (shell, core, lease, election_errors) = match election {
        Election::Immediate(store) => {
            let mandate = Mandate { store, lease: None };
            let (core, lease) = role::start_core(mandate, &live, clock).await?;
            let shell = Shell::start(listeners, &live, watch::channel(None).1, Some(&core)).await?;
            (shell, core, lease, None)
        }
        Election::Campaign { leader, campaign } => {
            let shell = Shell::start(listeners, &live, leader, None).await?;
            let started = match role::follow(&live, clock.as_ref(), &mut control, campaign).await {
                Ok(Some(Elected { mandate, errors })) => role::start_core(mandate, &live, clock)
                    .await
                    .map(|(core, lease)| (core, lease, errors)),
                Ok(None) => {
                    shell.stop(grace).await;
                    tracing::info!("stopped");
                    return Ok(());
                }
                Err(e) => Err(e),
            };
            match started {
                Ok((core, lease, errors)) => (shell, core, lease, Some(errors)),
                Err(e) => {
                    shell.stop(grace).await;
                    return Err(e);
                }
            }
        }
    };
    core.metrics().leader.set(1);
    let followed = election_errors.is_some();
    // An elected replica records the configuration it decides with (I9).
    if let Some(errors) = election_errors
        && let Err(e) = core.audit_election_config(errors).await
    {
        tracing::error!(error = %e, "could not record the configuration in force");
    }
    // Leadership lost: refuse every decision at once (the core's fatal
    // flag), then leave `serve` so the process restarts as a follower.
    let (watchdog, lost) = match &lease {
        Some(lease) => {
            let (watchdog, lost) = role::watch_lease(&core, lease.as_ref());
            (Some(watchdog), Some(lost))
        }
        None => (None, None),
    };
    if followed {
        shell.lead(&core).await;
    }
    let background = role::AbortOnDrop(tokio::spawn(role::background(
        core.clone(),
        core.config().server.tick_interval,
        shell.ticked.clone(),
    )));
    let gates = role::AbortOnDrop(tokio::spawn(crate::gates::run(
        core.clone(),
        Arc::new(crate::gates::Prometheus::new()),
    )));
    tracing::info!(
        grpc = %shell.grpc_addr,
        metrics = %shell.metrics_addr,
        summary = %core.config().summary(),
        "medic coordinator serving; warming up for {}",
        humantime::format_duration(core.config().policy.fleet.warmup)
    );

    let outcome = role::lead(&core, &mut control, lost).await;

    background.stop().await;
    gates.stop().await;
    // Long-lived streams (WatchEvents) end first, or the drain would wait
    // for them the whole grace period.
    core.drain();
    shell.stop(grace).await;
    core.close().await;
    if let Some(watchdog) = watchdog {
        watchdog.stop().await;
    }
    let store = core.store_watch();
    drop(core);
    // Hand leadership over at once rather than after the lease's TTL,
    // also after losing it locally: etcd may have been electing a raft
    // leader, which refreshes every lease, and be back now. The attempt is
    // bounded by the lease's TTL; this replica refuses everything meanwhile
    // (its writes are closed), so it need not wait for the store first.
    if let Some(lease) = lease {
        let _ = tokio::task::spawn_blocking(move || lease.resign()).await;
    }
    // The state directory's lock goes with the last holder of the store.
    // A caller that opens it again as soon as this returns (a replica
    // restarting as a follower, a test) must find it free.
    if !store.closed_within(grace).await {
        tracing::warn!(
            "the state store is still held {} after shutdown; its directory stays locked until that ends",
            humantime::format_duration(grace)
        );
    }
    tracing::info!("stopped");
    outcome
}
