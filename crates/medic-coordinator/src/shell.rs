//! The transport shell around whichever role the replica plays: one gRPC
//! server (both medic services, health, reflection) and one HTTP server
//! (`/metrics`, `/healthz`) bound once for the process's whole life.
//!
//! The medic services are [`Switch`]es: they answer as a follower until
//! the shell leads with a core, then are the real services. Nothing
//! is rebound or drained when leadership arrives, and a connection an agent
//! opened to a follower is served by the leader on its next call.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use medic_proto::pb::v1 as pb;
use medic_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::TransportSecurity;
use crate::core::{Core, Halt};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::server::{RunError, Transport};
use crate::service::{AdminService, AgentService, CallLayer, DirectAgents};
use crate::status_page::PageSource;

/// The medic services, by their generated names.
const MEDIC_SERVICES: [&str; 2] = [
    pb::remediation_server::SERVICE_NAME,
    pb::admin_server::SERVICE_NAME,
];

type Agents<S> = pb::remediation_server::RemediationServer<AgentService<S>>;
type Admins<S> = pb::admin_server::AdminServer<AdminService<S>>;

/// The servers a replica answers on, whatever its role.
pub(crate) struct Shell<S: Store> {
    health: HealthReporter,
    stop: watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: JoinHandle<std::io::Result<()>>,
    services: Services<S>,
    /// When the background tick last finished, for `/healthz`.
    pub(crate) ticked: Arc<Ticked>,
    /// Where gRPC and HTTP listen, for the log.
    pub(crate) grpc_addr: String,
    pub(crate) metrics_addr: String,
}

impl<S: Store + std::fmt::Debug> Shell<S> {
    /// Starts both servers on `listeners`: the medic services are
    /// `core`'s from the first call when it is given (the embedded store,
    /// loaded before its port serves), else they answer as a follower
    /// naming `leader` until [`Shell::lead`].
    pub(crate) async fn start(
        transport: Transport,
        live: &Arc<Live>,
        leader: watch::Receiver<Option<String>>,
        core: Option<&Arc<Core<S>>>,
    ) -> Result<Self, RunError> {
        let config = live.current();
        let metrics = live.metrics().clone();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", ServingStatus::Serving).await;
        for name in MEDIC_SERVICES {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        // Reflection in both versions: grpcurl and current tools speak v1;
        // grpcio-reflection's client and older tools only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(medic_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| RunError::Serve(format!("reflection: {e}")))?;
        let reflection = reflection()
            .build_v1()
            .map_err(|e| RunError::Serve(format!("reflection: {e}")))?;
        let (stop, stopped) = watch::channel(false);
        let (grpc_addr, metrics_addr) = match &transport {
            Transport::Network(l) => (address(&l.grpc), address(&l.metrics)),
            Transport::Memory(..) => ("in-memory".to_owned(), "none".to_owned()),
        };
        let direct = match &transport {
            Transport::Network(_) => None,
            Transport::Memory(_, direct) => Some(direct.clone()),
        };
        let follower_of = leader.clone();
        let services = Services {
            agents: Switch::new(leader.clone()),
            admins: Switch::new(leader),
            fatal: Arc::new(OnceLock::new()),
            page: Arc::new(OnceLock::new()),
            max_message: config.server.max_message_bytes,
            direct,
        };
        if let Some(core) = core {
            services.lead(core, &health).await;
        }

        let (grpc, metrics_listener) = {
            let live = live.clone();
            let current: crate::tls::CurrentTls = Arc::new(move || live.current().tls.clone());
            let (limits, open_files) = crate::conn::ConnLimits {
                total: config.server.max_connections,
                per_address: config.server.max_connections_per_address,
                // The default (5m) must not cut off agents told to
                // heartbeat less often (a fleet config may set a long
                // interval): never less than three heartbeats.
                idle: config
                    .server
                    .idle_timeout
                    .max(config.policy.fleet.heartbeat_interval.saturating_mul(3)),
            }
            .fitted_to_open_files();
            if let Some(open_files) = open_files {
                tracing::warn!(
                    configured = config.server.max_connections,
                    effective = limits.total,
                    open_files,
                    "server.max_connections lowered to fit the open-file limit (raise \
                     LimitNOFILE to serve more)"
                );
            }
            let (incoming, metrics_listener) = match transport {
                Transport::Network(listeners) => (
                    crate::tls::accept(
                        listeners.grpc,
                        current,
                        metrics.clone(),
                        stopped.clone(),
                        limits,
                    ),
                    Some(listeners.metrics),
                ),
                Transport::Memory(incoming, _) => (
                    crate::tls::accept_memory(
                        incoming,
                        metrics.clone(),
                        stopped.clone(),
                        limits.idle,
                    ),
                    None,
                ),
            };
            let mut stopped = stopped.clone();
            let grpc = tokio::spawn(
                tonic::transport::Server::builder()
                    .timeout(config.server.request_timeout)
                    .max_concurrent_streams(Some(256))
                    .http2_keepalive_interval(Some(Duration::from_secs(30)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                    .max_connection_age(crate::tls::MAX_CONNECTION_AGE)
                    .layer(crate::conn::ActivityLayer)
                    .layer(CallLayer::new(metrics.clone()))
                    .add_service(health_service)
                    .add_service(reflection)
                    .add_service(reflection_v1alpha)
                    .add_service(services.agents.clone())
                    .add_service(services.admins.clone())
                    .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    }),
            );
            (grpc, metrics_listener)
        };

        let ticked = Arc::new(Ticked::new(config.server.tick_interval));
        let http = {
            let mut stopped = stopped.clone();
            let app = axum::Router::new()
                .route("/metrics", get(metrics_handler))
                .route("/healthz", get(healthz_handler))
                .route("/status", get(status_handler))
                .with_state(HttpState {
                    metrics,
                    draining: stopped.clone(),
                    fatal: services.fatal.clone(),
                    ticked: ticked.clone(),
                    page: config.server.status_page.then(|| services.page.clone()),
                    rendered: Arc::default(),
                    leader: follower_of,
                });
            tokio::spawn(async move {
                // In memory there is no HTTP side: nothing scrapes a
                // simulated coordinator.
                let Some(listener) = metrics_listener else {
                    return Ok(());
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            })
        };
        if config.transport_security() == TransportSecurity::Insecure {
            tokio::spawn(insecure_warnings(stopped));
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        Ok(Self {
            health,
            stop,
            grpc,
            http,
            services,
            ticked,
            grpc_addr,
            metrics_addr,
        })
    }

    /// From now on the medic services are `core`'s, and report SERVING.
    pub(crate) async fn lead(&self, core: &Arc<Core<S>>) {
        self.services.lead(core, &self.health).await;
    }

    /// Drain: tell load balancers and probes first, then stop accepting
    /// and give in-flight calls the grace period.
    pub(crate) async fn stop(self, grace: Duration) {
        tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
        if let Some(direct) = &self.services.direct {
            direct.stop();
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in MEDIC_SERVICES {
            self.health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let _ = self.stop.send(true);
        let (mut grpc, mut http) = (self.grpc, self.http);
        match tokio::time::timeout(grace, &mut grpc).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "gRPC server error"),
            Ok(Err(e)) => tracing::error!(error = %e, "gRPC server task failed"),
            Err(_) => {
                tracing::warn!(
                    "in-flight calls did not finish within shutdown_grace ({}); stopping anyway",
                    humantime::format_duration(grace)
                );
                grpc.abort();
                let _ = grpc.await;
            }
        }
        if tokio::time::timeout(Duration::from_secs(1), &mut http)
            .await
            .is_err()
        {
            http.abort();
            let _ = http.await;
        }
    }
}

/// The medic services, follower or leader.
struct Services<S: Store> {
    agents: Switch<Agents<S>>,
    admins: Switch<Admins<S>>,
    /// The leading core's fatal flag, for `/healthz`.
    fatal: Arc<OnceLock<watch::Receiver<Option<Halt>>>>,
    /// The leading core, for the status page.
    page: Arc<OnceLock<Arc<dyn PageSource>>>,
    max_message: usize,
    /// In-process calls without a transport (in memory only).
    direct: Option<DirectAgents>,
}

impl<S: Store + std::fmt::Debug> Services<S> {
    async fn lead(&self, core: &Arc<Core<S>>, health: &HealthReporter) {
        let _ = self.fatal.set(core.failure());
        let _ = self
            .page
            .set(Arc::new(crate::status_page::CoreSource(core.clone())));
        if let Some(direct) = &self.direct {
            direct.lead(Arc::new(AgentService::new(core.clone())));
        }
        self.agents.lead(
            pb::remediation_server::RemediationServer::new(AgentService::new(core.clone()))
                .max_decoding_message_size(self.max_message),
        );
        self.admins.lead(
            pb::admin_server::AdminServer::new(AdminService::new(core.clone()))
                .max_decoding_message_size(self.max_message),
        );
        for name in MEDIC_SERVICES {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
    }
}

fn address(l: &tokio::net::TcpListener) -> String {
    l.local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string())
}

// === impl Switch ===

/// A gRPC service that answers as a follower until this replica leads,
/// then is the real service. There is no way back: a replica that loses
/// leadership refuses everything (the core's fatal flag) and its `run`
/// ends.
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

/// A follower's answer: UNAVAILABLE, naming the leader when it is known
/// (message and [`medic_proto::metadata::LEADER`] metadata).
pub fn follower_status(leader: Option<&str>) -> Status {
    match leader {
        Some(url) => {
            let mut status = Status::unavailable(format!(
                "this coordinator replica is a follower; the leader is {url} (agents that list \
                 it among their coordinators switch to it)"
            ));
            if let Ok(v) = url.parse() {
                status
                    .metadata_mut()
                    .insert(medic_proto::metadata::LEADER, v);
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
pub(crate) struct Ticked {
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

    pub(crate) fn done(&self) {
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

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    draining: watch::Receiver<bool>,
    /// The core's fatal flag, once there is a core (a follower has none).
    fatal: Arc<OnceLock<watch::Receiver<Option<Halt>>>>,
    ticked: Arc<Ticked>,
    /// The status page's source, once this replica leads; `None` when the
    /// page is turned off (`server.status_page = false`).
    page: Option<Arc<OnceLock<Arc<dyn PageSource>>>>,
    /// The last page rendered, and when: viewers within
    /// `status_page::REUSE` of it get it again, so however many browsers
    /// refresh, the engine is read for the page at most that often (the
    /// page is served without authentication, and reading every host
    /// takes the engine's lock).
    rendered: Arc<tokio::sync::Mutex<Option<(std::time::Instant, String)>>>,
    /// Who leads, for a follower's page.
    leader: watch::Receiver<Option<String>>,
}

/// `/status`: the read-only status page (`crate::status_page`).
async fn status_handler(State(s): State<HttpState>) -> axum::response::Response {
    let html = |code: StatusCode, body: String| {
        (
            code,
            [
                (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (axum::http::header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response()
    };
    let Some(page) = &s.page else {
        return (
            StatusCode::NOT_FOUND,
            "the status page is turned off (server.status_page = false)\n",
        )
            .into_response();
    };
    let Some(source) = page.get() else {
        let leader = s.leader.borrow().clone();
        return html(
            StatusCode::OK,
            crate::status_page::follower(leader.as_deref()),
        );
    };
    // One render at a time; those waiting meanwhile get its result.
    let mut rendered = s.rendered.lock().await;
    if let Some((at, page)) = rendered.as_ref()
        && at.elapsed() < crate::status_page::REUSE
    {
        return html(StatusCode::OK, page.clone());
    }
    match source.snapshot().await {
        Ok(snap) => {
            let page = crate::status_page::render(&snap);
            *rendered = Some((std::time::Instant::now(), page.clone()));
            html(StatusCode::OK, page)
        }
        Err(why) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "<!DOCTYPE html><p>the status is not available: {}</p>\n",
                why.replace('<', "&lt;")
            ),
        ),
    }
}

/// `/metrics` in the format the scraper's `Accept` asks for: OpenMetrics
/// or the classic text format (`medic_proto::exposition`).
async fn metrics_handler(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = medic_proto::exposition::Format::negotiate(accept);
    (
        [
            (axum::http::header::CONTENT_TYPE, format.content_type()),
            (axum::http::header::VARY, "Accept"),
        ],
        format.render(s.metrics.encode()),
    )
}

async fn healthz_handler(State(s): State<HttpState>) -> impl IntoResponse {
    if let Some(why) = s.fatal.get().and_then(|f| f.borrow().clone()) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("failing: {why}\n"));
    }
    if *s.draining.borrow() {
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
