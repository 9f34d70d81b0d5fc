//! The gRPC services: `medic.v1.Remediation` for agents
//! ([`remediation`]) and `medic.v1.Admin` for operators ([`admin`], with
//! its event stream in [`watch`]).
//!
//! Every handler is decode → [`Core`] → encode. What all of them share
//! lives here once: who is calling (`peer_of`) and whether they may
//! (`refuse` for the refusals), the errors a call can end with
//! ([`ApiError`], turned into a `Status` in one place), and, as a layer
//! under every service, the method's name and its timing ([`call`]).
//! [`direct`] calls the agents' handlers in the same process, without the
//! transport (the simulator's fleet).

pub mod admin;
pub mod call;
pub mod direct;
pub mod remediation;
pub mod watch;

use medic_policy::{HostId, InvalidInput, PolicyError};
use medic_proto::error::{invalid_input_status, policy_error_status};
use medic_proto::pb::v1 as pb;
use medic_store::{Entry, Record, Store, StoreError};
use tonic::{Request, Status};

pub use admin::AdminService;
pub use call::{CallLayer, Method};
pub use direct::DirectAgents;
pub use remediation::AgentService;
pub use watch::Watchers;

use crate::auth::{Peer, Refusal};
use crate::core::{Core, CoreError};

/// Why a call failed; [`Status`] says it on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: INVALID_ARGUMENT naming the field.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The engine refused it: the status its kind maps to.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The coordinator cannot decide now (its store failed, it is
    /// stopping): UNAVAILABLE.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A read of the store failed: UNAVAILABLE.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Already a status: refusals, admission control, resource limits.
    #[error("{}", .0.message())]
    Status(#[from] Status),
}

impl From<std::convert::Infallible> for ApiError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Invalid(e) => invalid_input_status(&e),
            ApiError::Policy(e) => policy_error_status(&e),
            ApiError::Core(e) => Status::unavailable(e.to_string()),
            ApiError::Store(e) => Status::unavailable(e.to_string()),
            ApiError::Status(s) => s,
        }
    }
}

/// The method a request calls, as the [`CallLayer`] named it.
/// No allocation: a `Method` is shared, and the hot path only needs it
/// when a call is refused.
fn method<T>(req: &Request<T>) -> Method {
    req.extensions()
        .get::<Method>()
        .cloned()
        .unwrap_or_else(Method::unknown)
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
    call: &str,
    host: Option<&HostId>,
    peer: &Peer,
) -> Status {
    core.metrics().refused(service, refusal.code);
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

/// A stored entry as the wire's audit event.
pub fn to_wire(entry: Entry) -> pb::Event {
    match entry.record {
        Record::Policy(e) => pb::Event::from_policy(entry.id, e),
        Record::Denied {
            host,
            action,
            denial,
            count,
        } => pb::Event::denied(entry.id, entry.at, &host, action, denial, count),
        Record::AccessDenied {
            identity,
            call,
            host,
            peer,
            reason,
            count,
        } => pb::Event::access_denied(
            entry.id, entry.at, identity, call, host, peer, reason, count,
        ),
        Record::ConfigReloaded {
            actor,
            reason,
            errors,
        } => pb::Event::config_reloaded(
            entry.id,
            entry.at,
            actor,
            reason,
            errors
                .into_iter()
                .map(|e| pb::ConfigError {
                    key: e.path,
                    message: e.message,
                })
                .collect(),
        ),
    }
}
