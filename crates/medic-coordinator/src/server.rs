//! `run`: serves gRPC and metrics on already-bound listeners until told to
//! stop, so tests run the whole server in-process on port 0.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
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
use tonic_health::ServingStatus;

use crate::clock::Clock;
use crate::config::{CoordinatorConfig, TransportSecurity};
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
    mut control: mpsc::Receiver<Control>,
    clock: Arc<dyn Clock>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let grace = config.server.shutdown_grace;
    let tick_interval = config.server.tick_interval;
    let admit = Arc::new(Admit::new(config.server.admission));
    let (max_message, request_timeout) = (
        config.server.max_message_bytes,
        config.server.request_timeout,
    );
    let core = Core::start(config, config_path, store, metrics.clone(), clock).await?;
    metrics.dry_run.set(i64::from(core.config().policy.dry_run));
    let security = core.config().transport_security();
    metrics
        .insecure
        .set(i64::from(security == TransportSecurity::Insecure));
    set_cert_expiry(&metrics, &core.config());

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["", "medic.v1.Remediation", "medic.v1.Admin"] {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(medic_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Serve(format!("reflection: {e}")))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let grpc_addr = listeners.grpc.local_addr().ok();
    let metrics_addr = listeners.metrics.local_addr().ok();
    let grpc = {
        let mut stop = stop_rx.clone();
        let current: crate::tls::CurrentTls = {
            let core = core.clone();
            Arc::new(move || core.config().tls.clone())
        };
        let incoming =
            crate::tls::accept(listeners.grpc, current, metrics.clone(), stop_rx.clone());
        tonic::transport::Server::builder()
            .timeout(request_timeout)
            .max_concurrent_streams(Some(256))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_connection_age(crate::tls::MAX_CONNECTION_AGE)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(
                pb::remediation_server::RemediationServer::new(AgentService::new(
                    core.clone(),
                    admit.clone(),
                ))
                .max_decoding_message_size(max_message),
            )
            .add_service(
                pb::admin_server::AdminServer::new(AdminService::new(core.clone(), admit.clone()))
                    .max_decoding_message_size(max_message),
            )
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
    };
    let grpc = tokio::spawn(grpc);

    let http = {
        let mut stop = stop_rx.clone();
        let app = axum::Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(healthz_handler))
            .with_state(HttpState {
                metrics: metrics.clone(),
                healthy: stop_rx.clone(),
                fatal: core.fatal.subscribe(),
            });
        tokio::spawn(async move {
            axum::serve(listeners.metrics, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };

    let background = tokio::spawn(background(core.clone(), admit.clone(), tick_interval));
    if security == TransportSecurity::Insecure {
        tokio::spawn(insecure_warnings(stop_rx.clone()));
    }

    tracing::info!(
        grpc = %grpc_addr.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        metrics = %metrics_addr.map_or_else(|| "?".to_owned(), |a| a.to_string()),
        summary = %core.config().summary(),
        "medic coordinator serving; warming up for {}",
        humantime::format_duration(core.config().policy.fleet.warmup)
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut fatal = core.fatal.subscribe();
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
            r = fatal.changed() => {
                let why = fatal.borrow_and_update().clone();
                match (r, why) {
                    (_, Some(why)) => break Err(RunError::StoreFailed(why)),
                    (Err(_), None) => break Ok(()),
                    (Ok(()), None) => {}
                }
            }
        }
    };

    // Drain: tell load balancers and probes first, then stop accepting.
    tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for name in ["", "medic.v1.Remediation", "medic.v1.Admin"] {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    core.draining.send_replace(true);
    let _ = stop_tx.send(true);
    background.abort();
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
    core.close().await;
    drop(core);
    tracing::info!("stopped");
    outcome
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

/// Ticks the engine, compacts the history, trims the admission limiter.
async fn background<S: Store + Debug>(core: Arc<Core<S>>, admit: Arc<Admit>, tick: Duration) {
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
    fatal: watch::Receiver<Option<String>>,
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
    if let Some(why) = s.fatal.borrow().clone() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("failing: {why}\n"));
    }
    if *s.healthy.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned());
    }
    (StatusCode::OK, "ok\n".to_owned())
}
