//! `run`: serves gRPC and metrics on already-bound listeners until told to
//! stop, so tests run the whole server in-process on port 0.

use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use medic_proto::pb::v1 as pb;
use medic_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic_health::ServingStatus;

use crate::clock::Clock;
use crate::config::{ConfigSource, CoordinatorConfig, FileSource, TransportSecurity};
use crate::core::Core;
use crate::metrics::Metrics;
use crate::service::{AdminService, Admit, AgentService};

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

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state store could not be opened or loaded.
    #[error(transparent)]
    Store(#[from] medic_store::StoreError),
    /// A commit failed while serving; the coordinator stopped.
    #[error("stopped because the state store failed: {0}")]
    StoreFailed(String),
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
    let elected = Box::pin(async move {
        Ok(Elected {
            store,
            lost: None,
            resign: None,
        })
    });
    serve(
        config,
        Arc::new(FileSource(config_path)),
        listeners,
        control,
        clock,
        Leadership {
            leader: watch::channel(None).0,
            follow: false,
            elected,
            observe: None,
        },
    )
    .await
}

/// A future that resolves, with the reason, when leadership is lost.
pub(crate) type Lost = Pin<Box<dyn Future<Output = String> + Send>>;

/// What an election yields: the store to decide with, and (replicated
/// coordinators only) the watchdog of the leadership and how to hand it
/// over on a clean shutdown.
pub(crate) struct Elected<S> {
    pub(crate) store: S,
    pub(crate) lost: Option<Lost>,
    pub(crate) resign: Option<Box<dyn FnOnce() + Send>>,
}

/// How this replica comes to decide. The embedded store decides at once;
/// a replica on etcd first follows, telling callers where the leader is.
pub(crate) struct Leadership<S> {
    /// The leader's advertised URL while this replica follows, if known.
    pub(crate) leader: watch::Sender<Option<String>>,
    /// Whether the port serves before the election (as a follower). The
    /// embedded store is elected at once, and its port serves only once
    /// the state is loaded, as before replication existed.
    pub(crate) follow: bool,
    /// Resolves once this replica leads.
    pub(crate) elected: Pin<Box<dyn Future<Output = Result<Elected<S>, RunError>> + Send>>,
    /// Started once the metrics exist, for as long as `serve` runs:
    /// replicas on etcd watch what etcd stores beside what they run.
    pub(crate) observe: Option<Observer>,
}

/// See [`Leadership::observe`].
pub(crate) type Observer = Box<dyn FnOnce(Arc<Metrics>) -> tokio::task::JoinHandle<()> + Send>;

/// The serving part of [`run`], also used by the replicated coordinator:
/// binds the services to the listener at once, answers as a follower until
/// `leadership` elects this replica, then starts the core (load, warm-up)
/// and decides until shut down or deposed.
pub(crate) async fn serve<S: Store + Debug>(
    config: CoordinatorConfig,
    source: Arc<dyn ConfigSource>,
    listeners: Listeners,
    mut control: mpsc::Receiver<Control>,
    clock: Arc<dyn Clock>,
    leadership: Leadership<S>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let grace = config.server.shutdown_grace;
    let tick_interval = config.server.tick_interval;
    let admit = Arc::new(Admit::new(config.server.admission));
    let (max_message, request_timeout) = (
        config.server.max_message_bytes,
        config.server.request_timeout,
    );
    let initial = Arc::new(config);
    metrics.dry_run.set(i64::from(initial.policy.dry_run));
    metrics
        .fleet_config_revision
        .set(initial.fleet_revision.unwrap_or(0));
    let security = initial.transport_security();
    metrics
        .insecure
        .set(i64::from(security == TransportSecurity::Insecure));
    set_cert_expiry(&metrics, &initial);
    let _observer = leadership
        .observe
        .map(|start| AbortOnDrop(start(metrics.clone())));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    for name in ["medic.v1.Remediation", "medic.v1.Admin"] {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(medic_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Serve(format!("reflection: {e}")))?;

    let mut elected = leadership.elected;
    let early = if leadership.follow {
        None
    } else {
        let e = (&mut elected).await;
        Some(start_core(e, &initial, source.clone(), &metrics, clock.clone()).await?)
    };
    let slot: Arc<OnceLock<Arc<Core<S>>>> = Arc::new(OnceLock::new());
    // The configuration while following: the file's at start, then each
    // SIGHUP's that is valid (new TLS certificates included); the elected
    // replica reads it afresh.
    let following = Arc::new(std::sync::Mutex::new(initial.clone()));
    let agents = Switch::new(leadership.leader.subscribe());
    let admins = Switch::new(leadership.leader.subscribe());
    let lead = |core: &Arc<Core<S>>| {
        agents.lead(
            pb::remediation_server::RemediationServer::new(AgentService::new(
                core.clone(),
                admit.clone(),
            ))
            .max_decoding_message_size(max_message),
        );
        admins.lead(
            pb::admin_server::AdminServer::new(AdminService::new(core.clone(), admit.clone()))
                .max_decoding_message_size(max_message),
        );
    };
    if let Some((core, ..)) = &early {
        let _ = slot.set(core.clone());
        lead(core);
        for name in ["medic.v1.Remediation", "medic.v1.Admin"] {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let grpc_addr = listeners.grpc.local_addr().ok();
    let metrics_addr = listeners.metrics.local_addr().ok();
    let grpc = {
        let mut stop = stop_rx.clone();
        let current: crate::tls::CurrentTls = {
            let (slot, following) = (slot.clone(), following.clone());
            Arc::new(move || {
                slot.get().map_or_else(
                    || lock(&following).tls.clone(),
                    |core| core.config().tls.clone(),
                )
            })
        };
        let (limits, open_files) = crate::conn::ConnLimits {
            total: initial.server.max_connections,
            per_address: initial.server.max_connections_per_address,
            // The default (5m) must not cut off agents told to heartbeat
            // less often (a fleet config may set a long interval): never
            // less than three heartbeats.
            idle: initial
                .server
                .idle_timeout
                .max(initial.policy.fleet.heartbeat_interval.saturating_mul(3)),
        }
        .fitted_to_open_files();
        if let Some(open_files) = open_files {
            tracing::warn!(
                configured = initial.server.max_connections,
                effective = limits.total,
                open_files,
                "server.max_connections lowered to fit the open-file limit (raise LimitNOFILE to \
                 serve more)"
            );
        }
        let incoming = crate::tls::accept(
            listeners.grpc,
            current,
            metrics.clone(),
            stop_rx.clone(),
            limits,
        );
        tonic::transport::Server::builder()
            .timeout(request_timeout)
            .max_concurrent_streams(Some(256))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_connection_age(crate::tls::MAX_CONNECTION_AGE)
            .layer(crate::conn::ActivityLayer)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(agents.clone())
            .add_service(admins.clone())
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
    };
    let grpc = tokio::spawn(grpc);

    let failing: Arc<OnceLock<watch::Receiver<Option<String>>>> = Arc::new(OnceLock::new());
    let ticked = Arc::new(Ticked::new(tick_interval));
    let http = {
        let mut stop = stop_rx.clone();
        let app = axum::Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(healthz_handler))
            .with_state(HttpState {
                metrics: metrics.clone(),
                healthy: stop_rx.clone(),
                fatal: failing.clone(),
                ticked: ticked.clone(),
            });
        tokio::spawn(async move {
            axum::serve(listeners.metrics, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    if security == TransportSecurity::Insecure {
        tokio::spawn(insecure_warnings(stop_rx.clone()));
    }
    let grpc_addr = grpc_addr.map_or_else(|| "?".to_owned(), |a| a.to_string());
    let metrics_addr = metrics_addr.map_or_else(|| "?".to_owned(), |a| a.to_string());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    // Follow until elected (the embedded store was elected above). An
    // elected replica records the configuration it decides with (I9).
    let mut election_errors = Vec::new();
    let (core, lost, resign) = match early {
        Some(started) => started,
        None => {
            let outcome = loop {
                tokio::select! {
                    r = &mut elected => break r,
                    c = control.recv() => match c {
                        Some(Control::Reload) => {
                            let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                            let _ = reload_following(&source, &following, &metrics, &admit, true).await;
                            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                        }
                        Some(Control::Shutdown) | None => break Err(RunError::Stopped),
                    },
                }
            };
            // Elected: decide with the fleet config as it is now in etcd,
            // not as it was when this replica started following.
            let config = match outcome {
                Ok(_) => match reload_following(&source, &following, &metrics, &admit, false).await
                {
                    Ok(new) => new,
                    Err(errors) => {
                        let kept = lock(&following).clone();
                        tracing::error!(
                            summary = %kept.summary(),
                            "elected with the last valid configuration this replica read; \
                             fix the errors above and reload"
                        );
                        election_errors = errors;
                        kept
                    }
                },
                Err(_) => initial.clone(),
            };
            match start_core(outcome, &config, source, &metrics, clock).await {
                Ok(started) => started,
                Err(RunError::Stopped) => {
                    stop_serving(&health, &stop_tx, grpc, http, grace).await;
                    tracing::info!("stopped");
                    return Ok(());
                }
                Err(err) => {
                    stop_serving(&health, &stop_tx, grpc, http, grace).await;
                    return Err(err);
                }
            }
        }
    };
    let _ = slot.set(core.clone());
    let _ = failing.set(core.fatal.subscribe());
    metrics.leader.set(1);
    if leadership.follow
        && let Err(e) = core.audit_election_config(election_errors).await
    {
        tracing::error!(error = %e, "could not record the configuration in force");
    }

    // Leadership lost: refuse every decision at once (the core's fatal
    // flag), then leave `run` so the process restarts as a follower.
    let (lost_tx, mut lost_rx) = tokio::sync::oneshot::channel::<String>();
    let watchdog = lost.map(|lost| {
        let core = core.clone();
        AbortOnDrop(tokio::spawn(async move {
            let why = lost.await;
            core.metrics.leader.set(0);
            tracing::error!(reason = %why, "lost leadership: refusing every decision and stopping");
            // Before `fatal`: the loop that sees `fatal` looks here for why.
            let _ = lost_tx.send(why.clone());
            core.fatal
                .send_replace(Some(format!("this replica lost its leadership ({why})")));
        }))
    });
    lead(&core);
    for name in ["medic.v1.Remediation", "medic.v1.Admin"] {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let background = AbortOnDrop(tokio::spawn(background(
        core.clone(),
        admit.clone(),
        tick_interval,
        ticked.clone(),
    )));
    tracing::info!(
        grpc = %grpc_addr,
        metrics = %metrics_addr,
        summary = %core.config().summary(),
        "medic coordinator serving; warming up for {}",
        humantime::format_duration(core.config().policy.fleet.warmup)
    );

    // The core may have failed already (the election's audit write above,
    // or a write queued before this loop began): `subscribe` would count
    // that as seen and wait for a later change that never comes, leaving a
    // leader that refuses everything and never steps down. So the current
    // value is looked at first.
    let mut fatal = core.fatal.subscribe();
    fatal.mark_changed();
    let mut lost_done = false;
    let outcome = loop {
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Reload) => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    match core.reload("signal:SIGHUP", "SIGHUP").await {
                        Ok(Ok(new)) => {
                            admit.update(new.server.admission);
                            set_cert_expiry(&metrics, &new);
                        }
                        Ok(Err(_)) => {} // logged and audited by reload
                        Err(e) => tracing::error!(error = %e, "reload failed"),
                    }
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
                Some(Control::Shutdown) | None => break Ok(()),
            },
            why = &mut lost_rx, if watchdog.is_some() && !lost_done => {
                match why {
                    Ok(why) => break Err(RunError::LostLeadership(why)),
                    // The watchdog ended without a word (it cannot, short
                    // of a panic): never poll a finished receiver again.
                    Err(_) => lost_done = true,
                }
            }
            r = fatal.changed() => {
                let why = fatal.borrow_and_update().clone();
                match (r, why) {
                    (_, Some(why)) => match lost_rx.try_recv() {
                        Ok(lost) => break Err(RunError::LostLeadership(lost)),
                        Err(_) if core.deposed() => break Err(RunError::LostLeadership(why)),
                        Err(_) => break Err(RunError::StoreFailed(why)),
                    },
                    (Err(_), None) => break Ok(()),
                    (Ok(()), None) => {}
                }
            }
        }
    };

    drop(background);
    // Long-lived streams (WatchEvents) end first, or the drain would wait
    // for them the whole grace period.
    core.draining.send_replace(true);
    stop_serving(&health, &stop_tx, grpc, http, grace).await;
    core.close().await;
    if let Some(mut w) = watchdog {
        w.0.abort();
        let _ = (&mut w.0).await;
    }
    drop(core);
    // Hand leadership over at once rather than after the lease's TTL,
    // also after losing it locally: etcd may have been electing a raft
    // leader, which refreshes every lease, and be back now. The attempt is
    // bounded by the lease's TTL; this replica refuses everything meanwhile.
    if let Some(resign) = resign {
        let _ = tokio::task::spawn_blocking(resign).await;
    }
    tracing::info!("stopped");
    outcome
}

/// What an election and a loaded core give `serve`.
type Started<S> = (Arc<Core<S>>, Option<Lost>, Option<Box<dyn FnOnce() + Send>>);

/// Loads the state (warm-up begins) once elected; resigns if that fails.
async fn start_core<S: Store + Debug>(
    elected: Result<Elected<S>, RunError>,
    config: &Arc<CoordinatorConfig>,
    source: Arc<dyn ConfigSource>,
    metrics: &Arc<Metrics>,
    clock: Arc<dyn Clock>,
) -> Result<Started<S>, RunError> {
    let e = elected?;
    match Core::start((**config).clone(), source, e.store, metrics.clone(), clock).await {
        Ok(core) => Ok((core, e.lost, e.resign)),
        Err(err) => {
            // The watchdog holds the leadership too: resigning gives the
            // lease up only once it is the last holder.
            drop(e.lost);
            if let Some(resign) = e.resign {
                let _ = tokio::task::spawn_blocking(resign).await;
            }
            Err(err.into())
        }
    }
}

/// Re-reads the configuration while following (SIGHUP, `reload`), and
/// once more when elected (counted in `medic_config_reloads_total` only
/// when it fails): a valid one that changes nothing restart-only replaces
/// `following`; errors are logged and counted, and the last valid one
/// stays. A follower decides nothing, so there is nothing to audit.
async fn reload_following(
    source: &Arc<dyn ConfigSource>,
    following: &Arc<std::sync::Mutex<Arc<CoordinatorConfig>>>,
    metrics: &Metrics,
    admit: &Admit,
    reload: bool,
) -> Result<Arc<CoordinatorConfig>, Vec<medic_policy::ConfigError>> {
    let loaded = crate::config::load_blocking(source).await;
    let current = lock(following).clone();
    let result = loaded.and_then(|new| match current.reload_errors(&new) {
        e if e.is_empty() => Ok(new),
        e => Err(e),
    });
    let label = |result: &str| crate::metrics::ResultLabel {
        result: result.to_owned(),
    };
    match result {
        Ok(new) => {
            if reload {
                metrics.config_reloads.get_or_create(&label("ok")).inc();
            }
            metrics
                .fleet_config_revision
                .set(new.fleet_revision.unwrap_or(0));
            metrics.dry_run.set(i64::from(new.policy.dry_run));
            admit.update(new.server.admission);
            set_cert_expiry(metrics, &new);
            tracing::info!(summary = %new.summary(), "configuration read");
            let new = Arc::new(new);
            *lock(following) = new.clone();
            Ok(new)
        }
        Err(errors) => {
            // Counted on election too: the replica decides with an older
            // configuration than etcd's.
            metrics.config_reloads.get_or_create(&label("error")).inc();
            for e in &errors {
                tracing::error!(error = %e, "configuration rejected; the last valid one stays");
            }
            Err(errors)
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A task that ends with the future that owns it, so a `run` that is
/// dropped (aborted) leaves no ticking engine or leadership watchdog
/// behind.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drain: tell load balancers and probes first, then stop accepting and
/// give in-flight calls the grace period.
async fn stop_serving(
    health: &tonic_health::server::HealthReporter,
    stop_tx: &watch::Sender<bool>,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    grace: Duration,
) {
    tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for name in ["", "medic.v1.Remediation", "medic.v1.Admin"] {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(grace, grpc).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server error"),
        Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
        Err(_) => tracing::warn!(
            "in-flight calls did not finish within shutdown_grace ({}); stopping anyway",
            humantime::format_duration(grace)
        ),
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
}

// === impl Switch ===

/// A gRPC service that answers as a follower until this replica leads,
/// then is the real service. Both phases share one listener and one
/// server: nothing is rebound or drained when leadership arrives, and a
/// connection an agent opened to a follower is served by the leader on
/// its next call. There is no way back: a replica that loses leadership
/// refuses everything (the core's fatal flag) and its `run` ends.
#[derive(Debug)]
pub struct Switch<T> {
    inner: Arc<OnceLock<T>>,
    leader: watch::Receiver<Option<String>>,
}

impl<T> Clone for Switch<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            leader: self.leader.clone(),
        }
    }
}

/// The metadata key naming the leader in a follower's UNAVAILABLE.
pub const LEADER_METADATA: &str = "medic-leader";

/// A follower's answer: UNAVAILABLE, naming the leader when it is known
/// (message and `medic-leader` metadata).
pub fn follower_status(leader: Option<&str>) -> Status {
    match leader {
        Some(url) => {
            let mut status = Status::unavailable(format!(
                "this coordinator replica is a follower; the leader is {url} (agents that list \
                 it among their coordinators switch to it)"
            ));
            if let Ok(v) = url.parse() {
                status.metadata_mut().insert(LEADER_METADATA, v);
            }
            status
        }
        None => Status::unavailable(
            "this coordinator replica is a follower and no leader is elected yet; retry shortly",
        ),
    }
}

impl<T> Switch<T> {
    fn new(leader: watch::Receiver<Option<String>>) -> Self {
        Self {
            inner: Arc::new(OnceLock::new()),
            leader,
        }
    }

    fn lead(&self, service: T) {
        let _ = self.inner.set(service);
    }
}

impl<T: tonic::server::NamedService> tonic::server::NamedService for Switch<T> {
    const NAME: &'static str = T::NAME;
}

impl<T> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for Switch<T>
where
    T: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    T::Future: Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // The generated servers are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        match self.inner.get() {
            Some(inner) => {
                let mut inner = inner.clone();
                Box::pin(async move { inner.call(req).await })
            }
            None => {
                let status = follower_status(self.leader.borrow().as_deref());
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Exports when the serving certificate expires (0 without TLS).
fn set_cert_expiry(metrics: &Metrics, config: &CoordinatorConfig) {
    let at = config.tls.as_ref().map_or(0, |t| {
        t.not_after
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    });
    metrics.tls_cert_expiry.set(at);
}

/// With `server.insecure = true`: a warning at start and every hour, so
/// nobody forgets the port is open to anyone who can reach it.
async fn insecure_warnings(mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => tracing::warn!(
                "INSECURE: gRPC is served in plaintext on a non-loopback address \
                 (server.insecure = true): anyone who can reach it can speak for any host and \
                 pause or reconfigure the fleet. Configure [tls] instead."
            ),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// When the background tick last finished, for `/healthz`: a tick that
/// stops finishing (a frozen disk under a commit, a hung store) leaves the
/// coordinator up but deciding on stale time, and is reported.
#[derive(Debug)]
struct Ticked {
    last: std::sync::Mutex<Option<std::time::Instant>>,
    /// Older than this, the tick is stuck.
    stuck_after: Duration,
}

impl Ticked {
    fn new(tick: Duration) -> Self {
        Self {
            last: std::sync::Mutex::new(None),
            stuck_after: tick.saturating_mul(10).max(Duration::from_secs(10)),
        }
    }

    fn done(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
    }

    /// How long since the last tick finished, when that is too long.
    fn stuck(&self) -> Option<Duration> {
        let last = *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.map(|l| l.elapsed())
            .filter(|age| *age > self.stuck_after)
    }
}

/// Ticks the engine, compacts the history, trims the admission limiter.
async fn background<S: Store + Debug>(
    core: Arc<Core<S>>,
    admit: Arc<Admit>,
    tick: Duration,
    ticked: Arc<Ticked>,
) {
    ticked.done();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut upkeep = tokio::time::interval(Duration::from_secs(60));
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = core.tick().await {
                    tracing::error!(error = %e, "tick failed");
                    return;
                }
                ticked.done();
            }
            _ = upkeep.tick() => {
                admit.shrink();
                match core.compact().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "audit history compacted"),
                    Err(e) => tracing::warn!(error = %e, "audit history compaction failed"),
                }
            }
        }
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    healthy: watch::Receiver<bool>,
    /// The core's fatal flag, once there is a core (a follower has none).
    fatal: Arc<OnceLock<watch::Receiver<Option<String>>>>,
    ticked: Arc<Ticked>,
}

async fn metrics_handler(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn healthz_handler(State(s): State<HttpState>) -> impl IntoResponse {
    if let Some(why) = s.fatal.get().and_then(|f| f.borrow().clone()) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("failing: {why}\n"));
    }
    if *s.healthy.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned());
    }
    if let Some(age) = s.ticked.stuck() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stuck: the last tick finished {}s ago (expiries and breakers are not being \
                 evaluated; a frozen disk or a hung store holds a commit)\n",
                age.as_secs()
            ),
        );
    }
    (StatusCode::OK, "ok\n".to_owned())
}
