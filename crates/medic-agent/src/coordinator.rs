//! The permit service the agent calls, behind one seam: the configured
//! coordinators over gRPC ([`Coordinators`]), or a stand-in that answers in
//! memory, so that tests of the agent's own timing run on virtual time.

use std::future::Future;

use medic_client::{CallError, Client, Endpoints, Settings};
use medic_policy::{Decision, Heartbeat, HeartbeatReply, Permit, PermitRequest};
use medic_proto::request::{OutcomeReport, Renewal};

use crate::config::AgentConfig;

/// The agent's four calls. Each answers with medic's types or a
/// [`CallError`]; what an error means (transient or an answer) is
/// [`CallError::is_transient`]'s.
pub trait Coordinator: Send + 'static {
    /// Sends a heartbeat.
    fn heartbeat(
        &mut self,
        heartbeat: Heartbeat,
    ) -> impl Future<Output = Result<HeartbeatReply, CallError>> + Send;

    /// Asks for a permit.
    fn request_permit(
        &mut self,
        request: PermitRequest,
    ) -> impl Future<Output = Result<Decision, CallError>> + Send;

    /// Renews a held permit.
    fn renew_permit(
        &mut self,
        renewal: Renewal,
    ) -> impl Future<Output = Result<Permit, CallError>> + Send;

    /// Reports a permit's outcome.
    fn report_outcome(
        &mut self,
        report: OutcomeReport,
    ) -> impl Future<Output = Result<Permit, CallError>> + Send;

    /// The agent's configuration changed from `old` to `new` (a reload).
    /// A stand-in keeps answering as before.
    fn reconfigure(&mut self, old: &AgentConfig, new: &AgentConfig) {
        let _ = (old, new);
    }
}

/// The coordinators the configuration names, with its TLS and deadline.
#[derive(Debug)]
pub struct Coordinators {
    /// `None` only for a configuration that was not validated (its error
    /// is logged): then no coordinator is reachable and nothing is done.
    client: Option<Client>,
}

impl Coordinators {
    /// The coordinators `config` names; none (logged) when its settings
    /// cannot work, which a validated configuration rules out.
    pub fn new(config: &AgentConfig) -> Self {
        let settings = Endpoints::new(config.coordinators.iter().cloned()).map(|endpoints| {
            Settings::new(endpoints, config.request_timeout)
                .tls(config.tls.as_ref().map(crate::tls::AgentTls::client_tls))
        });
        let client = match settings.and_then(Client::new) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "cannot use the configured coordinators; taking no action");
                None
            }
        };
        Self { client }
    }

    /// A client made elsewhere (the simulator's, connected in memory).
    pub fn with_client(client: Client) -> Self {
        Self {
            client: Some(client),
        }
    }

    /// The client, or the error a configuration that was not validated
    /// left instead.
    fn client(&self) -> Result<&Client, CallError> {
        self.client.as_ref().ok_or(CallError::Unreachable {
            attempts: Vec::new(),
        })
    }
}

impl Coordinator for Coordinators {
    async fn heartbeat(&mut self, heartbeat: Heartbeat) -> Result<HeartbeatReply, CallError> {
        self.client()?.heartbeat(heartbeat).await
    }

    async fn request_permit(&mut self, request: PermitRequest) -> Result<Decision, CallError> {
        self.client()?.request_permit(request).await
    }

    async fn renew_permit(&mut self, renewal: Renewal) -> Result<Permit, CallError> {
        self.client()?.renew_permit(renewal).await
    }

    async fn report_outcome(&mut self, report: OutcomeReport) -> Result<Permit, CallError> {
        self.client()?.report_outcome(report).await
    }

    /// New endpoints, deadline or certificates (a rotation) take effect on
    /// a new connection.
    fn reconfigure(&mut self, old: &AgentConfig, new: &AgentConfig) {
        if new.coordinators != old.coordinators
            || new.request_timeout != old.request_timeout
            || new.tls != old.tls
        {
            *self = Coordinators::new(new);
        }
    }
}
