//! `medic.v1.Remediation` called in the same process, without a transport:
//! the simulator's fleet on virtual time (`run_in_memory`) calls the very
//! handlers the gRPC server calls, with the same request and reply
//! messages, but without HTTP/2 framing or protobuf encoding. Ten
//! thousand simulated agents heartbeating every minute spend most of
//! their time in the transport otherwise.
//!
//! What a call meets is what a gRPC call meets from the handler on:
//! decoding to medic's types, the caller's identity (an in-process call
//! has no connection, so it is a plaintext peer, and a coordinator that
//! serves TLS refuses it as it refuses a client without a certificate),
//! admission control, the engine and the durable commit. What it skips is
//! the transport's: framing, encoding, the per-call layers (timing
//! metrics, connection activity) and the server's deadline, which the
//! caller keeps on its side.

use std::sync::{Arc, PoisonError, RwLock};

use medic_proto::pb::v1 as pb;
use pb::remediation_server::Remediation;
use tonic::{Request, Status};

use super::call::Method;

/// A handle on the agents' service of an in-process coordinator. Cheap to
/// clone; every clone calls the same coordinator. Until that coordinator
/// leads, every call is answered UNAVAILABLE, as a follower answers.
#[derive(Clone)]
pub struct DirectAgents {
    service: Arc<RwLock<Slot>>,
    /// The methods' names, made once (a [`Method`] is shared).
    methods: Arc<[Method; 4]>,
}

/// Where calls go.
enum Slot {
    /// Not leading yet: answered as a follower answers.
    Follower,
    /// The leader's service.
    Leading(Arc<dyn Remediation>),
    /// The coordinator stopped: the service (and the core and store it
    /// holds) is let go, so that the store can close.
    Stopped,
}

impl std::fmt::Debug for DirectAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.slot() {
            Slot::Follower => "follower",
            Slot::Leading(_) => "leading",
            Slot::Stopped => "stopped",
        };
        f.debug_struct("DirectAgents")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl Default for DirectAgents {
    fn default() -> Self {
        Self::new()
    }
}

const HEARTBEAT: usize = 0;
const REQUEST_PERMIT: usize = 1;
const RENEW_PERMIT: usize = 2;
const REPORT_OUTCOME: usize = 3;

impl DirectAgents {
    /// A handle to give `run_in_memory`; calls are answered once it leads.
    pub fn new() -> Self {
        Self {
            service: Arc::new(RwLock::new(Slot::Follower)),
            methods: Arc::new([
                Method::named("Remediation/Heartbeat"),
                Method::named("Remediation/RequestPermit"),
                Method::named("Remediation/RenewPermit"),
                Method::named("Remediation/ReportOutcome"),
            ]),
        }
    }

    /// From now on calls go to `service` (the leader's). Only the first
    /// call counts: a coordinator leads once in its life.
    pub(crate) fn lead(&self, service: Arc<dyn Remediation>) {
        let mut slot = self.service.write().unwrap_or_else(PoisonError::into_inner);
        if matches!(*slot, Slot::Follower) {
            *slot = Slot::Leading(service);
        }
    }

    /// The coordinator is stopping: new calls are refused UNAVAILABLE, and
    /// the service is let go (calls in flight keep it until they end).
    pub(crate) fn stop(&self) {
        *self.service.write().unwrap_or_else(PoisonError::into_inner) = Slot::Stopped;
    }

    fn slot(&self) -> std::sync::RwLockReadGuard<'_, Slot> {
        self.service.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request as the gRPC server hands it to a handler: the message,
    /// and the method's name (what refusals and logs cite).
    fn request<T>(&self, method: usize, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.extensions_mut().insert(self.methods[method].clone());
        req
    }

    fn service(&self) -> Result<Arc<dyn Remediation>, Status> {
        match &*self.slot() {
            Slot::Leading(s) => Ok(s.clone()),
            Slot::Follower => Err(crate::shell::follower_status(None)),
            Slot::Stopped => Err(Status::unavailable("the coordinator has stopped")),
        }
    }

    /// `Remediation/Heartbeat`.
    pub async fn heartbeat(
        &self,
        req: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, Status> {
        let req = self.request(HEARTBEAT, req);
        Ok(self.service()?.heartbeat(req).await?.into_inner())
    }

    /// `Remediation/RequestPermit`.
    pub async fn request_permit(
        &self,
        req: pb::RequestPermitRequest,
    ) -> Result<pb::RequestPermitResponse, Status> {
        let req = self.request(REQUEST_PERMIT, req);
        Ok(self.service()?.request_permit(req).await?.into_inner())
    }

    /// `Remediation/RenewPermit`.
    pub async fn renew_permit(
        &self,
        req: pb::RenewPermitRequest,
    ) -> Result<pb::RenewPermitResponse, Status> {
        let req = self.request(RENEW_PERMIT, req);
        Ok(self.service()?.renew_permit(req).await?.into_inner())
    }

    /// `Remediation/ReportOutcome`.
    pub async fn report_outcome(
        &self,
        req: pb::ReportOutcomeRequest,
    ) -> Result<pb::ReportOutcomeResponse, Status> {
        let req = self.request(REPORT_OUTCOME, req);
        Ok(self.service()?.report_outcome(req).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handle_answers_unavailable_until_its_coordinator_leads() {
        let direct = DirectAgents::new();
        let refused = direct
            .heartbeat(pb::HeartbeatRequest::default())
            .await
            .expect_err("no coordinator leads yet");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(
            refused.message().contains("follower"),
            "{}",
            refused.message()
        );
    }
}
