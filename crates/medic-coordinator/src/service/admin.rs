//! `medic.v1.Admin`: the operators' calls (`WatchEvents` streams are in
//! [`super::watch`]).

use std::pin::Pin;
use std::sync::Arc;

use medic_policy::{PermitState, ResumeTarget};
use medic_proto::convert::{record_kind, to_duration, to_timestamp};
use medic_proto::metadata;
use medic_proto::pb::v1 as pb;
use medic_proto::request as rq;

use medic_store::{HistoryQuery, Store};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::watch::{Watchers, watch_stream, watcher_key};
use super::{ApiError, method, peer_of, refuse, to_wire};
use crate::auth::{Access, Credentials, Operator, authorize_operator};
use crate::config::TransportSecurity;
use crate::core::Core;

/// This build's version, reported by `GetStatus`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `medic.v1.Admin`.
#[derive(Debug)]
pub struct AdminService<S: Store> {
    core: Arc<Core<S>>,
    watchers: Arc<Watchers>,
}

impl<S: Store + std::fmt::Debug> AdminService<S> {
    /// The service over `core`.
    pub fn new(core: Arc<Core<S>>) -> Self {
        Self {
            core,
            watchers: Arc::default(),
        }
    }

    /// Who is calling (the audit actor), whether they may make this call,
    /// and admission control keyed by that identity.
    fn caller<T>(&self, req: &Request<T>, access: Access) -> Result<Operator, Status> {
        let peer = peer_of(&self.core, req);
        let call = method(req);
        let md = req.metadata();
        let creds = Credentials {
            authorization: md
                .get(metadata::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or("")),
            claimed: md.get(metadata::ACTOR).and_then(|v| v.to_str().ok()),
        };
        let config = self.core.config();
        let admit = self.core.live().admit();
        match authorize_operator(&peer, &config.auth, creds, call.as_str(), access) {
            Ok(op) => {
                admit.check(&op.actor)?;
                Ok(op)
            }
            Err(r) => {
                let status = refuse(&self.core, &r, "admin", call.as_str(), None, &peer);
                if r.code == tonic::Code::Unauthenticated {
                    // Guessing tokens spends the guessing address's own
                    // admission budget (authenticated callers have theirs).
                    let ip = peer.addr.map(|a| a.ip().to_string()).unwrap_or_default();
                    admit.check(&format!("unauthenticated@{ip}"))?;
                }
                Err(status)
            }
        }
    }

    /// What every operator call shares: who is calling and may they, then
    /// decode, then `f`.
    async fn handle<Req, Cmd, Out, Fut>(
        &self,
        req: Request<Req>,
        access: Access,
        f: impl FnOnce(Operator, Cmd) -> Fut,
    ) -> Result<Response<Out>, Status>
    where
        Cmd: TryFrom<Req>,
        ApiError: From<Cmd::Error>,
        Fut: Future<Output = Result<Out, ApiError>>,
    {
        let caller = self.caller(&req, access)?;
        let cmd = Cmd::try_from(req.into_inner()).map_err(ApiError::from)?;
        Ok(Response::new(f(caller, cmd).await?))
    }
}

impl<S: Store + std::fmt::Debug> AdminService<S> {
    /// Approve or Reject: a human's decision on a pending approval, made
    /// durable before the reply (read-only operators are refused).
    async fn decide(
        &self,
        req: Request<pb::DecideApprovalRequest>,
        approve: bool,
    ) -> Result<Response<pb::DecideApprovalResponse>, Status> {
        self.handle(
            req,
            Access::Write,
            |op, cmd: rq::DecideApprovalCommand| async move {
                let actor = op.actor;
                let a = self
                    .core
                    .apply(|e, now| e.decide_approval(cmd.id, approve, &actor, &cmd.reason, now))
                    .await??;
                tracing::warn!(
                    %actor, id = a.id, host = %a.host, action = %a.action, job = %a.job,
                    state = %a.state, reason = %cmd.reason, "approval decided"
                );
                Ok(pb::DecideApprovalResponse {
                    approval: Some(a.into()),
                })
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl<S: Store + std::fmt::Debug> pb::admin_server::Admin for AdminService<S> {
    async fn pause(
        &self,
        req: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseResponse>, Status> {
        self.handle(req, Access::Write, |op, cmd: rq::PauseCommand| async move {
            let actor = op.actor;
            let pause = self
                .core
                .apply(|e, now| {
                    let until = cmd.duration.map(|d| now + d);
                    e.pause(cmd.scope, &actor, &cmd.reason, until, now)
                })
                .await?;
            tracing::warn!(%actor, scope = %pause.scope, reason = %pause.reason, id = pause.id, "paused");
            Ok(pb::PauseResponse {
                pause: Some(pause.into()),
            })
        })
        .await
    }

    async fn set_override(
        &self,
        req: Request<pb::SetOverrideRequest>,
    ) -> Result<Response<pb::SetOverrideResponse>, Status> {
        self.handle(
            req,
            Access::Write,
            |op, cmd: rq::SetOverrideCommand| async move {
                let actor = op.actor;
                let over = self
                    .core
                    .apply(|e, now| {
                        e.set_override(
                            cmd.action,
                            cmd.limit,
                            cmd.value,
                            cmd.duration,
                            &actor,
                            &cmd.reason,
                            now,
                        )
                    })
                    .await??;
                tracing::warn!(
                    %actor, action = %over.action, limit = %over.limit, value = over.value,
                    until = %medic_policy::rfc3339(over.until), reason = %over.reason,
                    id = over.id, "limit overridden"
                );
                Ok(pb::SetOverrideResponse {
                    r#override: Some(over.into()),
                })
            },
        )
        .await
    }

    async fn end_override(
        &self,
        req: Request<pb::EndOverrideRequest>,
    ) -> Result<Response<pb::EndOverrideResponse>, Status> {
        self.handle(
            req,
            Access::Write,
            |op, cmd: rq::EndOverrideCommand| async move {
                let actor = op.actor;
                let over = self
                    .core
                    .apply(|e, now| e.end_override(cmd.id, &actor, &cmd.reason, now))
                    .await??;
                tracing::warn!(%actor, id = over.id, reason = %cmd.reason, "override ended");
                Ok(pb::EndOverrideResponse {
                    r#override: Some(over.into()),
                })
            },
        )
        .await
    }

    async fn list_approvals(
        &self,
        req: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        self.handle(req, Access::Read, |_, q: rq::ApprovalQuery| async move {
            let approvals = self.core.read(|e, _| {
                e.approvals(q.all)
                    .into_iter()
                    .cloned()
                    .map(Into::into)
                    .collect()
            })?;
            Ok(pb::ListApprovalsResponse { approvals })
        })
        .await
    }

    async fn approve(
        &self,
        req: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::DecideApprovalResponse>, Status> {
        self.decide(req, true).await
    }

    async fn reject(
        &self,
        req: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::DecideApprovalResponse>, Status> {
        self.decide(req, false).await
    }

    async fn resume(
        &self,
        req: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        self.handle(
            req,
            Access::Write,
            |op, cmd: rq::ResumeCommand| async move {
                let actor = op.actor;
                let target = match cmd.target {
                    rq::ResumeTarget::Id(id) => ResumeTarget::Id(id),
                    rq::ResumeTarget::Scope(s) => ResumeTarget::Scope(s),
                };
                let resumed = self
                    .core
                    .apply(|e, now| e.resume(target, &actor, &cmd.reason, now))
                    .await??;
                tracing::warn!(%actor, count = resumed.len(), reason = %cmd.reason, "resumed");
                Ok(pb::ResumeResponse {
                    resumed: resumed.into_iter().map(Into::into).collect(),
                })
            },
        )
        .await
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        self.handle(
            req,
            Access::Read,
            |caller, _: pb::GetStatusRequest| async move {
                let status = self.core.read(|e, now| e.status(now))?;
                self.core.metrics().set_status(&status);
                let cfg = self.core.config();
                let (clock_steps, last_step) = self.core.clock_steps();
                Ok(pb::GetStatusResponse {
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
                })
            },
        )
        .await
    }

    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        self.handle(req, Access::Read, |_, q: rq::HostQuery| async move {
            let hosts = self.core.read(|e, now| e.hosts(now))?;
            let matching = hosts
                .into_iter()
                .filter(|h| !q.unhealthy_only || h.unhealthy)
                .filter(|h| !q.quarantined_only || h.quarantine.is_some())
                .filter(|h| q.selector.iter().all(|(k, v)| h.labels.get(k) == Some(v)));
            let (hosts, next_page_token) = page(matching, &q.page, |h| h.host.as_str().to_owned());
            Ok(pb::ListHostsResponse {
                hosts,
                next_page_token,
            })
        })
        .await
    }

    async fn list_permits(
        &self,
        req: Request<pb::ListPermitsRequest>,
    ) -> Result<Response<pb::ListPermitsResponse>, Status> {
        self.handle(req, Access::Read, |_, q: rq::PermitQuery| async move {
            let states = if q.states.is_empty() {
                vec![PermitState::Active]
            } else {
                q.states.clone()
            };
            let mut permits = self.core.read(|e, _| {
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
            })?;
            permits.sort_by_key(|p| p.token);
            let matching = permits
                .into_iter()
                .filter(|p| states.contains(&p.state))
                .filter(|p| q.host.as_ref().is_none_or(|h| &p.host == h))
                .filter(|p| q.action.is_none_or(|a| p.action == a));
            let (permits, next_page_token) = page(matching, &q.page, |p| p.id.as_str().to_owned());
            Ok(pb::ListPermitsResponse {
                permits,
                next_page_token,
            })
        })
        .await
    }

    async fn revoke_permit(
        &self,
        req: Request<pb::RevokePermitRequest>,
    ) -> Result<Response<pb::RevokePermitResponse>, Status> {
        self.handle(req, Access::Write, |op, cmd: rq::RevokeCommand| async move {
            let actor = op.actor;
            let permit = self
                .core
                .apply(|e, now| e.revoke(&cmd.permit, &actor, &cmd.reason, now))
                .await??;
            tracing::warn!(%actor, permit = %permit.id, host = %permit.host, reason = %cmd.reason, "permit revoked");
            Ok(pb::RevokePermitResponse {
                permit: Some(permit.into()),
            })
        })
        .await
    }

    async fn quarantine(
        &self,
        req: Request<pb::QuarantineRequest>,
    ) -> Result<Response<pb::QuarantineResponse>, Status> {
        self.handle(
            req,
            Access::Write,
            |op, cmd: rq::QuarantineCommand| async move {
                let actor = op.actor;
                let q = self
                    .core
                    .apply(|e, now| e.quarantine(&cmd.host, &actor, &cmd.reason, now))
                    .await??;
                tracing::warn!(%actor, host = %q.host, reason = %q.reason, "host quarantined");
                Ok(pb::QuarantineResponse {
                    quarantine: Some(q.into()),
                })
            },
        )
        .await
    }

    async fn unquarantine(
        &self,
        req: Request<pb::UnquarantineRequest>,
    ) -> Result<Response<pb::UnquarantineResponse>, Status> {
        self.handle(req, Access::Write, |op, cmd: rq::ReleaseCommand| async move {
            let actor = op.actor;
            let q = self
                .core
                .apply(|e, now| e.unquarantine(&cmd.host, &actor, &cmd.reason, now))
                .await??;
            tracing::warn!(%actor, host = %q.host, reason = %cmd.reason, "host released from quarantine");
            Ok(pb::UnquarantineResponse {
                released: Some(q.into()),
            })
        })
        .await
    }

    async fn get_history(
        &self,
        req: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        self.handle(req, Access::Read, |_, q: rq::HistoryQuery| async move {
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
            let page = crate::core::off_task(store.inline(), move || store.history(&query))
                .await
                .map_err(|e| Status::internal(format!("history task failed: {e}")))??;
            Ok(pb::GetHistoryResponse {
                events: page.entries.into_iter().map(to_wire).collect(),
                next_page_token: page.next_cursor.map(|c| c.to_string()).unwrap_or_default(),
            })
        })
        .await
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        self.handle(req, Access::Read, |_, q: rq::ExplainQuery| async move {
            let explanation = self.core.read(|e, now| e.explain(&q.host, q.action, now))?;
            Ok(explanation.into())
        })
        .await
    }

    async fn reset_breaker(
        &self,
        req: Request<pb::ResetBreakerRequest>,
    ) -> Result<Response<pb::ResetBreakerResponse>, Status> {
        self.handle(
            req,
            Access::Write,
            |op, cmd: rq::ResetBreakerCommand| async move {
                let actor = op.actor;
                let closed = self
                    .core
                    .apply(|e, now| e.reset_breaker(cmd.scope.as_ref(), &actor, &cmd.reason, now))
                    .await??;
                tracing::warn!(%actor, count = closed.len(), reason = %cmd.reason, "breaker reset");
                Ok(pb::ResetBreakerResponse {
                    closed: closed.into_iter().map(Into::into).collect(),
                })
            },
        )
        .await
    }

    async fn reload_config(
        &self,
        req: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        self.handle(
            req,
            Access::Write,
            |op, cmd: rq::ReloadCommand| async move {
                Ok(match self.core.reload(&op.actor, &cmd.reason).await? {
                    Ok(_) => pb::ReloadConfigResponse {
                        applied: true,
                        errors: Vec::new(),
                    },
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
                })
            },
        )
        .await
    }

    type WatchEventsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send + 'static>>;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = self.caller(&req, Access::Read)?;
        let key = watcher_key(&caller, &peer_of(&self.core, &req));
        // An open stream keeps its connection from being closed as idle.
        let busy = req
            .extensions()
            .get::<crate::tls::ConnInfo>()
            .and_then(|i| i.activity().map(crate::conn::Activity::stream));
        let filter = rq::WatchFilter::try_from(req.into_inner()).map_err(ApiError::from)?;
        let config = self.core.config();
        let mut slot = self.watchers.admit(
            key,
            config.server.watch_streams_per_caller as usize,
            config.server.watch_streams as usize,
        )?;
        slot.busy = busy;
        let stall = config.server.watch_stall_timeout;
        // Subscribe before reading the backlog, so nothing falls between.
        let live = self.core.subscribe();
        let store = self.core.store().clone();
        let stream = watch_stream(filter, store, live, self.core.draining(), slot, stall);
        Ok(Response::new(stream))
    }
}

/// One page of `items` (already filtered and in key order) after the
/// page's token: at most its size, and the token of the next page (empty
/// on the last).
fn page<T, W: From<T>>(
    items: impl Iterator<Item = T>,
    page: &rq::Page,
    key: impl Fn(&T) -> String,
) -> (Vec<W>, String) {
    let size = page.size as usize;
    let mut out = Vec::with_capacity(size);
    let mut last = String::new();
    for item in items.filter(|i| page.token.as_deref().is_none_or(|t| key(i).as_str() > t)) {
        if out.len() == size {
            return (out, last);
        }
        last = key(&item);
        out.push(item.into());
    }
    (out, String::new())
}
