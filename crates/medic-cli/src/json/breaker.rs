//! `medicctl breaker reset`, and the breakers other outputs show.

use medic_proto::pb::v1 as pb;
use serde::Serialize;

use super::{breaker_cause, breaker_scope, time};

/// A tripped circuit breaker: open, or half-open.
#[derive(Debug, Clone, Serialize)]
pub struct Breaker {
    /// `fleet`, or `LABEL=VALUE` for a failure domain.
    pub scope: String,
    /// `open` (no grants) or `half_open` (probe permits only).
    pub state: String,
    /// `unhealthy_fraction`, `failure_fraction`, `liveness_drop` or
    /// `probe_failed`.
    pub cause: String,
    /// When it opened.
    pub since: Option<String>,
    /// The numbers that opened it.
    pub detail: String,
    /// While half-open: since when, who, why, and the probes that
    /// succeeded.
    pub half_open: Option<HalfOpen>,
}

/// A breaker's half-open step.
#[derive(Debug, Clone, Serialize)]
pub struct HalfOpen {
    /// Since when.
    pub since: Option<String>,
    /// Who moved it there (`coordinator` when its condition cleared).
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Probe permits that succeeded since.
    pub successes: u32,
}

impl From<&pb::BreakerTrip> for Breaker {
    fn from(b: &pb::BreakerTrip) -> Self {
        Breaker {
            scope: breaker_scope(b.scope.as_ref()),
            state: if b.half_open.is_some() {
                "half_open"
            } else {
                "open"
            }
            .to_owned(),
            cause: breaker_cause(b.cause),
            since: time(b.since.as_ref()),
            detail: b.detail.clone(),
            half_open: b.half_open.as_ref().map(|h| HalfOpen {
                since: time(h.since.as_ref()),
                actor: h.actor.clone(),
                reason: h.reason.clone(),
                successes: h.successes,
            }),
        }
    }
}

/// `medicctl breaker reset`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakersClosed {
    /// The breakers reset, each as it was while open. A reset moves a
    /// breaker to half-open; only its probes close it.
    pub closed: Vec<Breaker>,
}
