//! Admission control: a keyed rate limiter on each caller's identity
//! (`server.admission`), so one broken agent or script cannot starve the
//! others. Reloads replace its settings ([`crate::live::Live::install`]).

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::Status;

use medic_proto::metadata::RETRY_AFTER_MS;

use crate::config::Admission;

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
                    status.metadata_mut().insert(RETRY_AFTER_MS, v);
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
