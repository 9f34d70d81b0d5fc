//! `medic.v1.Remediation`: the agents' calls.

use std::sync::Arc;

use medic_policy::{Decision, Heartbeat, HostId, PermitRequest};
use medic_proto::pb::v1 as pb;
use medic_proto::request as rq;
use medic_store::Store;
use tonic::{Request, Response, Status};

use super::{ApiError, method, peer_of, refuse};
use crate::auth::authorize_agent;
use crate::core::Core;

/// `medic.v1.Remediation`.
#[derive(Debug)]
pub struct AgentService<S: Store> {
    core: Arc<Core<S>>,
}

/// An agent's request, which speaks for one host.
trait ForHost {
    fn host(&self) -> &HostId;
}

impl ForHost for Heartbeat {
    fn host(&self) -> &HostId {
        &self.host
    }
}

impl ForHost for PermitRequest {
    fn host(&self) -> &HostId {
        &self.host
    }
}

impl ForHost for rq::Renewal {
    fn host(&self) -> &HostId {
        &self.host
    }
}

impl ForHost for rq::OutcomeReport {
    fn host(&self) -> &HostId {
        &self.host
    }
}

impl<S: Store + std::fmt::Debug> AgentService<S> {
    /// The service over `core`.
    pub fn new(core: Arc<Core<S>>) -> Self {
        Self { core }
    }

    /// What every agent call shares: decode, then may the caller speak for
    /// the request's host (identity binding), and now (admission control,
    /// keyed by the verified host)? Then `f`.
    async fn handle<Req, Cmd, Out, Fut>(
        &self,
        req: Request<Req>,
        f: impl FnOnce(Cmd) -> Fut,
    ) -> Result<Response<Out>, Status>
    where
        Cmd: TryFrom<Req> + ForHost,
        ApiError: From<Cmd::Error>,
        Fut: Future<Output = Result<Out, ApiError>>,
    {
        let peer = peer_of(&self.core, &req);
        let call = method(&req);
        let cmd = Cmd::try_from(req.into_inner()).map_err(ApiError::from)?;
        let config = self.core.config();
        match authorize_agent(&peer, &config.auth, cmd.host()) {
            Ok(()) => self.core.live().admit().check(cmd.host().as_str())?,
            Err(r) => {
                let host = Some(cmd.host());
                return Err(refuse(
                    &self.core,
                    &r,
                    "remediation",
                    call.as_str(),
                    host,
                    &peer,
                ));
            }
        }
        Ok(Response::new(f(cmd).await?))
    }
}

#[tonic::async_trait]
impl<S: Store + std::fmt::Debug> pb::remediation_server::Remediation for AgentService<S> {
    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.handle(req, |hb: Heartbeat| async {
            let reply = self.core.apply(|e, now| e.heartbeat(hb, now)).await?;
            Ok(reply.into())
        })
        .await
    }

    async fn request_permit(
        &self,
        req: Request<pb::RequestPermitRequest>,
    ) -> Result<Response<pb::RequestPermitResponse>, Status> {
        self.handle(req, |request: PermitRequest| async {
            let (host, action) = (request.host.clone(), request.action);
            let decision = self
                .core
                .apply(|e, now| e.request_permit(request, now))
                .await??;
            match &decision {
                Decision::Granted {
                    replayed: false,
                    permit,
                } => {
                    self.core.metrics().decision(action, "granted");
                    tracing::info!(
                        host = %host, %action, permit = %permit.id, token = permit.token.0,
                        dry_run = permit.dry_run, "permit granted"
                    );
                }
                Decision::Granted { replayed: true, .. } => {
                    self.core.metrics().decision(action, "replayed");
                }
                Decision::Denied(d) => {
                    self.core.metrics().decision(action, d.reason.as_str());
                    self.core.sample_denial(&host, action, d);
                }
                Decision::Waiting(w) => {
                    self.core.metrics().decision(action, "waiting_approval");
                    tracing::debug!(
                        host = %host, %action, approval = w.approval,
                        "permit request waits for a human's approval"
                    );
                }
            }
            Ok(decision.into())
        })
        .await
    }

    async fn renew_permit(
        &self,
        req: Request<pb::RenewPermitRequest>,
    ) -> Result<Response<pb::RenewPermitResponse>, Status> {
        self.handle(req, |renewal: rq::Renewal| async move {
            let permit = self
                .core
                .apply(|e, now| e.renew(&renewal.host, &renewal.permit, now))
                .await??;
            Ok(pb::RenewPermitResponse {
                permit: Some(permit.into()),
            })
        })
        .await
    }

    async fn report_outcome(
        &self,
        req: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        self.handle(req, |report: rq::OutcomeReport| async move {
            let permit = self
                .core
                .apply(|e, now| {
                    e.report_outcome(
                        &report.host,
                        &report.permit,
                        report.outcome,
                        &report.detail,
                        now,
                    )
                })
                .await??;
            tracing::info!(host = %report.host, permit = %permit.id, state = %permit.state, "outcome reported");
            Ok(pb::ReportOutcomeResponse {
                permit: Some(permit.into()),
            })
        })
        .await
    }
}
