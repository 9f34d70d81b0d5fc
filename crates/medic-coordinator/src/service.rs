//! The gRPC services: `medic.v1.Remediation` for agents and
//! `medic.v1.Admin` for operators. Handlers validate input (errors name the
//! field), pass admission control, call the engine through [`Core`], and map
//! domain errors to statuses in one place (`medic_proto::error`).

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use medic_policy::{Decision, Heartbeat, PermitRequest, PermitState, ResumeTarget};
use medic_proto::convert::{to_duration, to_timestamp};
use medic_proto::error::{invalid_input_status, policy_error_status};
use medic_proto::pb::v1 as pb;
use medic_proto::request as rq;
use medic_store::{HistoryQuery, RecordKind, Store};
use tokio::sync::{broadcast, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::{
    Access, Credentials, Operator, Peer, Refusal, authorize_agent, authorize_operator,
};
use crate::config::{Admission, TransportSecurity};
use crate::core::{Core, CoreError, to_wire};

/// This build's version, reported by `GetStatus`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn core_status(e: CoreError) -> Status {
    Status::unavailable(e.to_string())
}

// === Admission control ===

/// A keyed rate limiter on the caller's identity, so one broken agent (or
/// script) cannot starve the others.
#[derive(Debug)]
pub struct Admit {
    limiter: std::sync::Mutex<Arc<DefaultKeyedRateLimiter<String>>>,
    settings: std::sync::Mutex<Admission>,
}

impl Admit {
    /// A limiter with the configured rate.
    pub fn new(a: Admission) -> Self {
        Self {
            limiter: std::sync::Mutex::new(Arc::new(limiter(a))),
            settings: std::sync::Mutex::new(a),
        }
    }

    /// Applies new settings (after a reload); callers start afresh.
    pub fn update(&self, a: Admission) {
        let mut s = self
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *s != a {
            *s = a;
            *self
                .limiter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(limiter(a));
        }
    }

    /// `Ok` if `who` may call now, else RESOURCE_EXHAUSTED with a retry hint.
    pub fn check(&self, who: &str) -> Result<(), Status> {
        let limiter = self
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match limiter.check_key(&who.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut status = Status::resource_exhausted(format!(
                    "too many calls from {who}; retry in {} ms (per-caller admission control, \
                     server.admission in the coordinator's config)",
                    wait.as_millis().max(1)
                ));
                if let Ok(v) = wait.as_millis().max(1).to_string().parse() {
                    status.metadata_mut().insert("retry-after-ms", v);
                }
                Err(status)
            }
        }
    }

    /// Forgets callers that have been quiet (bounds the limiter's memory).
    pub fn shrink(&self) {
        let limiter = self
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

fn limiter(a: Admission) -> DefaultKeyedRateLimiter<String> {
    let per_second = NonZeroU32::new(a.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(a.burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
}

/// Who is calling: the connection's verdict (set per connection by the
/// accept loop, checked again after a reload or once the certificate has
/// expired). Without it, a coordinator serving TLS fails closed.
fn peer_of<S: Store + std::fmt::Debug, T>(core: &Core<S>, req: &Request<T>) -> Peer {
    let config = core.config();
    match req.extensions().get::<crate::tls::ConnInfo>() {
        Some(info) => info.peer(config.tls.as_deref(), std::time::SystemTime::now()),
        None if config.tls.is_some() => Peer {
            addr: req.remote_addr(),
            transport: crate::auth::Transport::Tls(crate::auth::ClientCert::None),
        },
        None => Peer::plaintext(req.remote_addr()),
    }
}

/// Counts, logs (the first per identity and call in each sampling
/// interval) and audits (PERMISSION_DENIED) a refused call.
fn refuse<S: Store + std::fmt::Debug>(
    core: &Core<S>,
    refusal: &Refusal,
    service: &'static str,
    call: &'static str,
    host: Option<&medic_policy::HostId>,
    peer: &Peer,
) -> Status {
    core.metrics.refused(service, refusal.code);
    let addr = peer.addr.map(|a| a.to_string()).unwrap_or_default();
    if core.sample_refusal(refusal, call, host, addr.clone()) {
        let host = host.map(|h| h.as_str()).unwrap_or("");
        if refusal.audited() {
            tracing::warn!(identity = %refusal.identity, peer = %addr, call, host, reason = %refusal.message, "call refused: permission denied");
        } else {
            tracing::info!(identity = %refusal.identity, peer = %addr, call, host, reason = %refusal.message, "call refused: unauthenticated");
        }
    }
    refusal.status()
}

// === Remediation (agents) ===

/// `medic.v1.Remediation`.
#[derive(Debug)]
pub struct AgentService<S: Store> {
    core: Arc<Core<S>>,
    admit: Arc<Admit>,
}

impl<S: Store + std::fmt::Debug> AgentService<S> {
    /// The service over `core`.
    pub fn new(core: Arc<Core<S>>, admit: Arc<Admit>) -> Self {
        Self { core, admit }
    }

    /// May `peer` speak for `host` (identity binding), and now (admission
    /// control, keyed by the verified host)?
    fn gate(
        &self,
        peer: &Peer,
        host: &medic_policy::HostId,
        call: &'static str,
    ) -> Result<(), Status> {
        let config = self.core.config();
        match authorize_agent(peer, &config.auth, host) {
            Ok(()) => self.admit.check(host.as_str()),
            Err(r) => Err(refuse(
                &self.core,
                &r,
                "remediation",
                call,
                Some(host),
                peer,
            )),
        }
    }

    fn timed<T>(
        &self,
        method: &'static str,
        started: Instant,
        r: Result<T, Status>,
    ) -> Result<T, Status> {
        self.core
            .metrics
            .rpc(method, started.elapsed().as_secs_f64());
        r
    }
}

#[tonic::async_trait]
impl<S: Store + std::fmt::Debug> pb::remediation_server::Remediation for AgentService<S> {
    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let peer = peer_of(&self.core, &req);
            let hb = Heartbeat::try_from(req.into_inner()).map_err(|e| invalid_input_status(&e))?;
            self.gate(&peer, &hb.host, "Remediation/Heartbeat")?;
            let reply = self
                .core
                .apply(|e, now| e.heartbeat(hb, now))
                .await
                .map_err(core_status)?;
            Ok(Response::new(reply.into()))
        }
        .await;
        self.timed("Heartbeat", started, r)
    }

    async fn request_permit(
        &self,
        req: Request<pb::RequestPermitRequest>,
    ) -> Result<Response<pb::RequestPermitResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let peer = peer_of(&self.core, &req);
            let request =
                PermitRequest::try_from(req.into_inner()).map_err(|e| invalid_input_status(&e))?;
            self.gate(&peer, &request.host, "Remediation/RequestPermit")?;
            let (host, action) = (request.host.clone(), request.action);
            let decision = self
                .core
                .apply(|e, now| e.request_permit(request, now))
                .await
                .map_err(core_status)?
                .map_err(|e| policy_error_status(&e))?;
            match &decision {
                Decision::Granted {
                    replayed: false,
                    permit,
                } => {
                    self.core.metrics.decision(action, "granted");
                    tracing::info!(
                        host = %host, %action, permit = %permit.id, token = permit.token.0,
                        dry_run = permit.dry_run, "permit granted"
                    );
                }
                Decision::Granted { replayed: true, .. } => {
                    self.core.metrics.decision(action, "replayed");
                }
                Decision::Denied(d) => {
                    self.core.metrics.decision(action, d.reason.as_str());
                    self.core.sample_denial(&host, action, d);
                }
            }
            Ok(Response::new(decision.into()))
        }
        .await;
        self.timed("RequestPermit", started, r)
    }

    async fn renew_permit(
        &self,
        req: Request<pb::RenewPermitRequest>,
    ) -> Result<Response<pb::RenewPermitResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let peer = peer_of(&self.core, &req);
            let renewal =
                rq::Renewal::try_from(req.into_inner()).map_err(|e| invalid_input_status(&e))?;
            self.gate(&peer, &renewal.host, "Remediation/RenewPermit")?;
            let permit = self
                .core
                .apply(|e, now| e.renew(&renewal.host, &renewal.permit, now))
                .await
                .map_err(core_status)?
                .map_err(|e| policy_error_status(&e))?;
            Ok(Response::new(pb::RenewPermitResponse {
                permit: Some(permit.into()),
            }))
        }
        .await;
        self.timed("RenewPermit", started, r)
    }

    async fn report_outcome(
        &self,
        req: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let peer = peer_of(&self.core, &req);
            let report =
                rq::OutcomeReport::try_from(req.into_inner()).map_err(|e| invalid_input_status(&e))?;
            self.gate(&peer, &report.host, "Remediation/ReportOutcome")?;
            let permit = self
                .core
                .apply(|e, now| {
                    e.report_outcome(&report.host, &report.permit, report.outcome, &report.detail, now)
                })
                .await
                .map_err(core_status)?
                .map_err(|e| policy_error_status(&e))?;
            tracing::info!(host = %report.host, permit = %permit.id, state = %permit.state, "outcome reported");
            Ok(Response::new(pb::ReportOutcomeResponse {
                permit: Some(permit.into()),
            }))
        }
        .await;
        self.timed("ReportOutcome", started, r)
    }
}

// === Admin (operators) ===

/// `medic.v1.Admin`.
#[derive(Debug)]
pub struct AdminService<S: Store> {
    core: Arc<Core<S>>,
    admit: Arc<Admit>,
    watchers: Arc<Watchers>,
}

impl<S: Store + std::fmt::Debug> AdminService<S> {
    /// The service over `core`.
    pub fn new(core: Arc<Core<S>>, admit: Arc<Admit>) -> Self {
        Self {
            core,
            admit,
            watchers: Arc::default(),
        }
    }

    /// Who is calling (the audit actor), whether they may make `call`, and
    /// admission control keyed by that identity.
    fn caller<T>(
        &self,
        req: &Request<T>,
        call: &'static str,
        access: Access,
    ) -> Result<Operator, Status> {
        let peer = peer_of(&self.core, req);
        let md = req.metadata();
        let creds = Credentials {
            authorization: md.get("authorization").map(|v| v.to_str().unwrap_or("")),
            claimed: md.get("medic-actor").and_then(|v| v.to_str().ok()),
        };
        let config = self.core.config();
        match authorize_operator(&peer, &config.auth, creds, call, access) {
            Ok(op) => {
                self.admit.check(&op.actor)?;
                Ok(op)
            }
            Err(r) => {
                let status = refuse(&self.core, &r, "admin", call, None, &peer);
                if r.code == tonic::Code::Unauthenticated {
                    // Guessing tokens spends the guessing address's own
                    // admission budget (authenticated callers have theirs).
                    let ip = peer.addr.map(|a| a.ip().to_string()).unwrap_or_default();
                    self.admit.check(&format!("unauthenticated@{ip}"))?;
                }
                Err(status)
            }
        }
    }

    fn done<T>(
        &self,
        method: &'static str,
        started: Instant,
        r: Result<T, Status>,
    ) -> Result<T, Status> {
        self.core
            .metrics
            .rpc(method, started.elapsed().as_secs_f64());
        r
    }
}

fn invalid(e: medic_policy::InvalidInput) -> Status {
    invalid_input_status(&e)
}

#[tonic::async_trait]
impl<S: Store + std::fmt::Debug> pb::admin_server::Admin for AdminService<S> {
    async fn pause(
        &self,
        req: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let actor = self.caller(&req, "Admin/Pause", Access::Write)?.actor;
            let cmd = rq::PauseCommand::try_from(req.into_inner()).map_err(invalid)?;
            let pause = self
                .core
                .apply(|e, now| {
                    let until = cmd.duration.map(|d| now + d);
                    e.pause(cmd.scope, &actor, &cmd.reason, until, now)
                })
                .await
                .map_err(core_status)?;
            tracing::warn!(%actor, scope = %pause.scope, reason = %pause.reason, id = pause.id, "paused");
            Ok(Response::new(pb::PauseResponse {
                pause: Some(pause.into()),
            }))
        }
        .await;
        self.done("Admin/Pause", started, r)
    }

    async fn resume(
        &self,
        req: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let actor = self.caller(&req, "Admin/Resume", Access::Write)?.actor;
            let cmd = rq::ResumeCommand::try_from(req.into_inner()).map_err(invalid)?;
            let target = match cmd.target {
                rq::ResumeTarget::Id(id) => ResumeTarget::Id(id),
                rq::ResumeTarget::Scope(s) => ResumeTarget::Scope(s),
            };
            let resumed = self
                .core
                .apply(|e, now| e.resume(target, &actor, &cmd.reason, now))
                .await
                .map_err(core_status)?
                .map_err(|e| policy_error_status(&e))?;
            tracing::warn!(%actor, count = resumed.len(), reason = %cmd.reason, "resumed");
            Ok(Response::new(pb::ResumeResponse {
                resumed: resumed.into_iter().map(Into::into).collect(),
            }))
        }
        .await;
        self.done("Admin/Resume", started, r)
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let caller = self.caller(&req, "Admin/GetStatus", Access::Read)?;
            let status = self
                .core
                .read(|e, now| e.status(now))
                .map_err(core_status)?;
            self.core.metrics.set_status(&status);
            let cfg = self.core.config();
            let (clock_steps, last_step) = self.core.clock_steps();
            Ok(Response::new(pb::GetStatusResponse {
                status: Some(status.into()),
                version: VERSION.to_owned(),
                started_at: Some(to_timestamp(self.core.started_at())),
                server_time: Some(to_timestamp(self.core.now())),
                config_loaded_at: Some(to_timestamp(self.core.config_loaded_at())),
                heartbeat_interval: Some(to_duration(cfg.policy.fleet.heartbeat_interval)),
                host_ttl: Some(to_duration(cfg.policy.fleet.host_ttl)),
                transport_security: match cfg.transport_security() {
                    TransportSecurity::MutualTls => pb::TransportSecurity::MutualTls,
                    TransportSecurity::PlaintextLoopback => {
                        pb::TransportSecurity::PlaintextLoopback
                    }
                    TransportSecurity::Insecure => pb::TransportSecurity::Insecure,
                }
                .into(),
                caller: caller.actor,
                caller_role: caller.role.as_str().to_owned(),
                clock_steps,
                last_clock_step: last_step.map(|(step, at, detail)| pb::ClockStepSeen {
                    forward: step.forward,
                    by: Some(to_duration(step.by)),
                    at: Some(to_timestamp(at)),
                    detail,
                }),
            }))
        }
        .await;
        self.done("Admin/GetStatus", started, r)
    }

    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        let started = Instant::now();
        let r = async {
            self.caller(&req, "Admin/ListHosts", Access::Read)?;
            let q = rq::HostQuery::try_from(req.into_inner()).map_err(invalid)?;
            let after = q.page.token.clone();
            let hosts = self.core.read(|e, now| e.hosts(now)).map_err(core_status)?;
            let size = q.page.size as usize;
            let mut page: Vec<pb::Host> = Vec::with_capacity(size);
            let mut next = String::new();
            for h in hosts
                .into_iter()
                .filter(|h| after.as_deref().is_none_or(|a| h.host.as_str() > a))
                .filter(|h| !q.unhealthy_only || h.unhealthy)
                .filter(|h| !q.quarantined_only || h.quarantine.is_some())
                .filter(|h| q.selector.iter().all(|(k, v)| h.labels.get(k) == Some(v)))
            {
                if page.len() == size {
                    next = page
                        .last()
                        .map(|h: &pb::Host| h.host_id.clone())
                        .unwrap_or_default();
                    break;
                }
                page.push(h.into());
            }
            Ok(Response::new(pb::ListHostsResponse {
                hosts: page,
                next_page_token: next,
            }))
        }
        .await;
        self.done("Admin/ListHosts", started, r)
    }

    async fn list_permits(
        &self,
        req: Request<pb::ListPermitsRequest>,
    ) -> Result<Response<pb::ListPermitsResponse>, Status> {
        let started = Instant::now();
        let r = async {
            self.caller(&req, "Admin/ListPermits", Access::Read)?;
            let q = rq::PermitQuery::try_from(req.into_inner()).map_err(invalid)?;
            let after = q.page.token.clone();
            let states = if q.states.is_empty() {
                vec![PermitState::Active]
            } else {
                q.states.clone()
            };
            let mut permits = self
                .core
                .read(|e, _| {
                    let mut all: Vec<medic_policy::Permit> = e.permits().cloned().collect();
                    if states.iter().any(|s| s.is_final()) {
                        all.extend(
                            e.durable()
                                .requests
                                .values()
                                .filter(|p| p.state.is_final())
                                .cloned(),
                        );
                    }
                    all
                })
                .map_err(core_status)?;
            permits.sort_by_key(|p| p.token);
            let size = q.page.size as usize;
            let mut page: Vec<pb::Permit> = Vec::with_capacity(size);
            let mut next = String::new();
            for p in permits
                .into_iter()
                .filter(|p| after.as_deref().is_none_or(|a| p.id.as_str() > a))
                .filter(|p| states.contains(&p.state))
                .filter(|p| q.host.as_ref().is_none_or(|h| &p.host == h))
                .filter(|p| q.action.is_none_or(|a| p.action == a))
            {
                if page.len() == size {
                    next = page
                        .last()
                        .map(|p: &pb::Permit| p.permit_id.clone())
                        .unwrap_or_default();
                    break;
                }
                page.push(p.into());
            }
            Ok(Response::new(pb::ListPermitsResponse {
                permits: page,
                next_page_token: next,
            }))
        }
        .await;
        self.done("Admin/ListPermits", started, r)
    }

    async fn revoke_permit(
        &self,
        req: Request<pb::RevokePermitRequest>,
    ) -> Result<Response<pb::RevokePermitResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let actor = self.caller(&req, "Admin/RevokePermit", Access::Write)?.actor;
            let cmd = rq::RevokeCommand::try_from(req.into_inner()).map_err(invalid)?;
            let permit = self
                .core
                .apply(|e, now| e.revoke(&cmd.permit, &actor, &cmd.reason, now))
                .await
                .map_err(core_status)?
                .map_err(|e| policy_error_status(&e))?;
            tracing::warn!(%actor, permit = %permit.id, host = %permit.host, reason = %cmd.reason, "permit revoked");
            Ok(Response::new(pb::RevokePermitResponse {
                permit: Some(permit.into()),
            }))
        }
        .await;
        self.done("Admin/RevokePermit", started, r)
    }

    async fn quarantine(
        &self,
        req: Request<pb::QuarantineRequest>,
    ) -> Result<Response<pb::QuarantineResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let actor = self.caller(&req, "Admin/Quarantine", Access::Write)?.actor;
            let cmd = rq::QuarantineCommand::try_from(req.into_inner()).map_err(invalid)?;
            let q = self
                .core
                .apply(|e, now| e.quarantine(&cmd.host, &actor, &cmd.reason, now))
                .await
                .map_err(core_status)?
                .map_err(|e| policy_error_status(&e))?;
            tracing::warn!(%actor, host = %q.host, reason = %q.reason, "host quarantined");
            Ok(Response::new(pb::QuarantineResponse {
                quarantine: Some(q.into()),
            }))
        }
        .await;
        self.done("Admin/Quarantine", started, r)
    }

    async fn unquarantine(
        &self,
        req: Request<pb::UnquarantineRequest>,
    ) -> Result<Response<pb::UnquarantineResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let actor = self.caller(&req, "Admin/Unquarantine", Access::Write)?.actor;
            let cmd = rq::ReleaseCommand::try_from(req.into_inner()).map_err(invalid)?;
            let q = self
                .core
                .apply(|e, now| e.unquarantine(&cmd.host, &actor, &cmd.reason, now))
                .await
                .map_err(core_status)?
                .map_err(|e| policy_error_status(&e))?;
            tracing::warn!(%actor, host = %q.host, reason = %cmd.reason, "host released from quarantine");
            Ok(Response::new(pb::UnquarantineResponse {
                released: Some(q.into()),
            }))
        }
        .await;
        self.done("Admin/Unquarantine", started, r)
    }

    async fn get_history(
        &self,
        req: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let started = Instant::now();
        let r = async {
            self.caller(&req, "Admin/GetHistory", Access::Read)?;
            let q = rq::HistoryQuery::try_from(req.into_inner()).map_err(invalid)?;
            let cursor = match q.page.token.as_deref() {
                None => None,
                Some(t) => Some(t.parse::<u64>().map_err(|_| {
                    Status::invalid_argument(format!(
                        "page_token: {t:?} is not a token this coordinator issued"
                    ))
                })?),
            };
            let query = HistoryQuery {
                since: q.since,
                until: q.until,
                host: q.host,
                kinds: q.kinds.iter().filter_map(|k| record_kind(*k)).collect(),
                action: q.action,
                cursor,
                limit: q.page.size as usize,
                newest_first: q.newest_first,
            };
            let store = self.core.store().clone();
            let page = tokio::task::spawn_blocking(move || store.history(&query))
                .await
                .map_err(|e| Status::internal(format!("history task failed: {e}")))?
                .map_err(|e| Status::unavailable(e.to_string()))?;
            Ok(Response::new(pb::GetHistoryResponse {
                events: page.entries.into_iter().map(to_wire).collect(),
                next_page_token: page.next_cursor.map(|c| c.to_string()).unwrap_or_default(),
            }))
        }
        .await;
        self.done("Admin/GetHistory", started, r)
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let started = Instant::now();
        let r = async {
            self.caller(&req, "Admin/Explain", Access::Read)?;
            let q = rq::ExplainQuery::try_from(req.into_inner()).map_err(invalid)?;
            let explanation = self
                .core
                .read(|e, now| e.explain(&q.host, q.action, now))
                .map_err(core_status)?;
            Ok(Response::new(explanation.into()))
        }
        .await;
        self.done("Admin/Explain", started, r)
    }

    async fn reset_breaker(
        &self,
        req: Request<pb::ResetBreakerRequest>,
    ) -> Result<Response<pb::ResetBreakerResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let actor = self
                .caller(&req, "Admin/ResetBreaker", Access::Write)?
                .actor;
            let cmd = rq::ResetBreakerCommand::try_from(req.into_inner()).map_err(invalid)?;
            let closed = self
                .core
                .apply(|e, now| e.reset_breaker(cmd.scope.as_ref(), &actor, &cmd.reason, now))
                .await
                .map_err(core_status)?
                .map_err(|e| policy_error_status(&e))?;
            tracing::warn!(%actor, count = closed.len(), reason = %cmd.reason, "breaker reset");
            Ok(Response::new(pb::ResetBreakerResponse {
                closed: closed.into_iter().map(Into::into).collect(),
            }))
        }
        .await;
        self.done("Admin/ResetBreaker", started, r)
    }

    async fn reload_config(
        &self,
        req: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        let started = Instant::now();
        let r = async {
            let actor = self
                .caller(&req, "Admin/ReloadConfig", Access::Write)?
                .actor;
            let cmd = rq::ReloadCommand::try_from(req.into_inner()).map_err(invalid)?;
            let result = self
                .core
                .reload(&actor, &cmd.reason)
                .await
                .map_err(core_status)?;
            Ok(Response::new(match result {
                Ok(new) => {
                    self.admit.update(new.server.admission);
                    pb::ReloadConfigResponse {
                        applied: true,
                        errors: Vec::new(),
                    }
                }
                Err(errors) => pb::ReloadConfigResponse {
                    applied: false,
                    errors: errors
                        .into_iter()
                        .map(|e| pb::ConfigError {
                            key: e.path,
                            message: e.message,
                        })
                        .collect(),
                },
            }))
        }
        .await;
        self.done("Admin/ReloadConfig", started, r)
    }

    type WatchEventsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send + 'static>>;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = self.caller(&req, "Admin/WatchEvents", Access::Read)?;
        let key = watcher_key(&caller, &peer_of(&self.core, &req));
        // An open stream keeps its connection from being closed as idle.
        let busy = req
            .extensions()
            .get::<crate::tls::ConnInfo>()
            .and_then(|i| i.activity().map(crate::conn::Activity::stream));
        let filter = rq::WatchFilter::try_from(req.into_inner()).map_err(invalid)?;
        let config = self.core.config();
        let mut slot = self.watchers.admit(
            key,
            config.server.watch_streams_per_caller as usize,
            config.server.watch_streams as usize,
        )?;
        slot.busy = busy;
        let stall = config.server.watch_stall_timeout;
        // Subscribe before reading the backlog, so nothing falls between.
        let live = self.core.events.subscribe();
        let store = self.core.store().clone();
        let stream = watch_stream(
            filter,
            store,
            live,
            self.core.draining.subscribe(),
            slot,
            stall,
        );
        Ok(Response::new(stream))
    }
}

/// Events one watch stream buffers for its reader (beside one page of
/// backlog read from the history): what a reader that does not read costs.
const WATCH_BUFFER: usize = 256;

/// History entries one backlog read takes.
const WATCH_PAGE: usize = 256;

/// Whom a watch stream counts against: an authenticated identity, or over
/// plaintext (where names are only claimed) the address.
fn watcher_key(caller: &Operator, peer: &Peer) -> String {
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
    fn admit(
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
struct WatchSlot {
    watchers: Arc<Watchers>,
    key: String,
    /// Holds the stream's connection busy while the stream lives.
    busy: Option<crate::conn::StreamGuard>,
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
fn watch_stream<S: Store>(
    filter: rq::WatchFilter,
    store: Arc<S>,
    mut live: broadcast::Receiver<pb::Event>,
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
                    let page = tokio::task::spawn_blocking(move || store.history(&query))
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
                    Ok(e) if e.id > last_sent => {
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

fn record_kind(k: pb::EventKind) -> Option<RecordKind> {
    Some(match k {
        pb::EventKind::Unspecified => return None,
        pb::EventKind::Grant => RecordKind::Grant,
        pb::EventKind::Deny => RecordKind::Deny,
        pb::EventKind::Outcome => RecordKind::Outcome,
        pb::EventKind::Admin => RecordKind::Admin,
        pb::EventKind::Breaker => RecordKind::Breaker,
        pb::EventKind::Quarantine => RecordKind::Quarantine,
        pb::EventKind::Pause => RecordKind::Pause,
        pb::EventKind::Config => RecordKind::Config,
        pb::EventKind::Renew => RecordKind::Renew,
        pb::EventKind::Access => RecordKind::Access,
        pb::EventKind::Clock => RecordKind::Clock,
    })
}
