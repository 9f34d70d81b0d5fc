//! `medicctl breaker reset`, and the breakers other outputs show.

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{breaker_cause, breaker_scope, time};

/// An open circuit breaker.
#[derive(Debug, Clone, Serialize)]
pub struct Breaker {
    /// `fleet`, or `LABEL=VALUE` for a failure domain.
    pub scope: String,
    /// `unhealthy_fraction` or `failure_fraction`.
    pub cause: String,
    /// When it opened.
    pub since: Option<String>,
    /// The numbers that opened it.
    pub detail: String,
}

impl From<&pb::BreakerTrip> for Breaker {
    fn from(b: &pb::BreakerTrip) -> Self {
        Breaker {
            scope: breaker_scope(b.scope.as_ref()),
            cause: breaker_cause(b.cause),
            since: time(b.since.as_ref()),
            detail: b.detail.clone(),
        }
    }
}

/// `medicctl breaker reset`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakersClosed {
    /// The breakers that closed, each as it was while open.
    pub closed: Vec<Breaker>,
}
